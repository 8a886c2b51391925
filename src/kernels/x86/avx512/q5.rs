//! Q5_0 and Q5_1 decode with AVX-512 BW; batches and rows the quad layout does not take
//! go to AVX2's `q5::matmul` with its BW form.
//!
//! AVX2's quads unpack 4 blocks into a lane order that lets 8 tokens share the work, which
//! a single token cannot repay: decode spent most of its time spreading the fifth bits.
//! Here two blocks fill one register in their natural order (block j's value i in byte i,
//! block j + 1 in the high half), so the 64 fifth bits are the two blocks' `qh` words as one
//! mask and a masked `vpaddb` sets them. The products (`vpmaddubsw` + `vpmaddwd`) give 8 i32
//! lanes of 4 values per block; adding them in the pattern of the quad layout gives the
//! quad's lanes exactly (integer sums), and from there the f32 steps are `Q5Quads`' own, and
//! the tail blocks' those of the single-block `Q5`: every output has the bits of AVX2's
//! quads, so decode still equals any batch. Thread CPU time of one token at 1536 x 576 on
//! Zen 5 (weights in L2): Q5_0 29.8 -> 26.9 us, Q5_1 35.7 -> 30.1 us.
//!
//! # Safety
//! As in the `avx512` module documentation: AVX-512 F/BW/VL, AVX2, FMA and F16C, and the
//! slice-size preconditions of `MatmulQ8aFn`.

use std::arch::x86_64::*;
use std::mem::MaybeUninit;
use std::ops::Range;

use super::super::super::{BlockQ8A, QK};
use super::super::avx2::arranged::{self, UNITS_MAX};
use super::super::avx2::frame::Micro;
use super::super::avx2::hsum;
use super::super::avx2::q5::{
    self as q5_avx2, block_dm, load_aq, steps, AQuad, Q5Quads, A5, Q5, QUAD,
};
use super::super::{drive_arranged, prefetch_rows, Ahead, Arranged, QOperands};

/// Blocks past the last whole quad, at most (`arranged::fits`).
const TAIL_MAX: usize = QUAD - 1;
/// Block pairs of the widest row this path takes.
const PAIRS_MAX: usize = (UNITS_MAX * QUAD + TAIL_MAX).div_ceil(2);

/// The exact i32 lanes of blocks `p0` and `p1` (rows of Q5_0, or Q5_1 when `ONE`) times
/// the activations `a` of the same two blocks side by side: lane `8b + l` holds block b's
/// values `4l..4l + 4` times theirs, as `vpmaddubsw` + `vpmaddwd` give them for one block
/// in natural order (AVX2's single-block `lanes`, without the initial lanes).
#[inline(always)]
unsafe fn block_lanes<const ONE: bool>(p0: *const u8, p1: *const u8, a: __m512i) -> __m512i {
    let (oh, oq) = if ONE { (4, 8) } else { (2, 6) };
    // Each block's 16 bytes of nibbles twice: low nibbles (values 0-15) from the first copy,
    // high nibbles (16-31) from the second.
    let qs = |p: *const u8| _mm256_broadcastsi128_si256(_mm_loadu_si128(p.add(oq).cast()));
    let twice = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(qs(p0)), qs(p1));
    let four = 0x0004_0004_0004_0004;
    let shift = _mm512_setr_epi64(0, 0, four, four, 0, 0, four, four);
    let nibbles = _mm512_and_si512(_mm512_srlv_epi16(twice, shift), _mm512_set1_epi8(0x0f));
    // Bit i of `qh` is value i's fifth bit: byte i of the block's half of the register.
    let qh = |p: *const u8| {
        u64::from(u32::from_le_bytes(std::ptr::read_unaligned(
            p.add(oh).cast(),
        )))
    };
    let bits = qh(p0) | qh(p1) << 32;
    // The nibbles are below 0x10, so adding the bit is or-ing it.
    let u = _mm512_mask_add_epi8(nibbles, bits, nibbles, _mm512_set1_epi8(0x10));
    // Pairs below 2 * 31 * 127 < 2^15: exact.
    _mm512_madd_epi16(_mm512_maddubs_epi16(u, a), _mm512_set1_epi16(1))
}

/// [`block_lanes`] of two blocks reduced to 4 lanes each: lanes 0-3 block `p0`'s, 4-7
/// `p1`'s, lane l the sum of the block's values `4l..4l + 4` and `16 + 4l..16 + 4l + 4`.
#[inline(always)]
unsafe fn pair_sums<const ONE: bool>(p0: *const u8, p1: *const u8, a: __m512i) -> __m256i {
    let s = block_lanes::<ONE>(p0, p1, a);
    let low = _mm512_shuffle_i64x2::<0b00_00_10_00>(s, s);
    let high = _mm512_shuffle_i64x2::<0b00_00_11_01>(s, s);
    _mm512_castsi512_si256(_mm512_add_epi32(low, high))
}

/// The f16 at the start of blocks `p`, `p + bb`, `p + 2 bb`, `p + 3 bb` (`d`), and the one
/// after it (Q5_1's `m`), as f32 in the quad layout's lane order (lane `4h + 2c + e`: block
/// `h + 2e`), as `avx2::q5` builds them.
#[inline(always)]
unsafe fn quad_dm(p: *const u8, bb: usize) -> (__m256, __m256) {
    let word = |j: usize| i32::from_le_bytes(std::ptr::read_unaligned(p.add(j * bb).cast()));
    // [d0, m0, d1, m1, d2, m2, d3, m3]
    let dm = _mm256_cvtph_ps(_mm_setr_epi32(word(0), word(1), word(2), word(3)));
    let d = _mm256_permutevar8x32_ps(dm, _mm256_setr_epi32(0, 4, 0, 4, 2, 6, 2, 6));
    let m = _mm256_permutevar8x32_ps(dm, _mm256_setr_epi32(1, 5, 1, 5, 3, 7, 3, 7));
    (d, m)
}

/// The matmul of `MatmulQ8aFn` for Q5_0 (`ONE = false`) or Q5_1: one token over rows the
/// quad layout takes as described above (through `drive_arranged`), the rest through AVX2's
/// `q5::matmul`.
#[inline(always)]
pub(super) unsafe fn matmul<const ONE: bool>(
    w: &[u8],
    cols: usize,
    rows: Range<usize>,
    xq: &[BlockQ8A],
    n_tok: usize,
    out: *mut f32,
    out_stride: usize,
) {
    let nb = cols / QK;
    if n_tok != 1 || !arranged::fits::<Q5Quads<ONE, true>>(nb) {
        return q5_avx2::matmul::<ONE, true>(w, cols, rows, xq, n_tok, out, out_stride);
    }
    let rb = nb * <Q5<ONE> as Micro>::BLOCK_BYTES;
    let l = Decode::<ONE>(QOperands::new(w, rb, nb, xq, out, out_stride));
    drive_arranged(l, rows, 1)
}

/// One token's Q5 decode over its operands.
#[derive(Clone, Copy)]
struct Decode<const ONE: bool>(QOperands);

/// The token's activations: blocks 2i and 2i + 1 side by side (a lone last block twice),
/// each quad's initial lanes, `d` and `s` as the quad layout has them, and the tail blocks'
/// as the single-block micro-kernel has them.
struct Token {
    a: [__m512i; PAIRS_MAX],
    aq: [MaybeUninit<AQuad>; UNITS_MAX],
    tail: [MaybeUninit<A5>; TAIL_MAX],
}

impl<const ONE: bool> Arranged for Decode<ONE> {
    type Tiles = Token;
    #[inline(always)]
    fn tiles(&self) -> Token {
        Token {
            // SAFETY: all-zero bits are a valid `__m512i` (the zero vector).
            a: unsafe { std::mem::zeroed() },
            aq: [const { MaybeUninit::uninit() }; UNITS_MAX],
            tail: [const { MaybeUninit::uninit() }; TAIL_MAX],
        }
    }
    #[inline(always)]
    fn tile_tokens(&self, _left: usize) -> usize {
        1
    }
    #[inline(always)]
    fn weights(&self) -> (*const u8, usize) {
        (self.0.w, self.0.rb)
    }
    #[inline(always)]
    fn ahead(&self) -> usize {
        prefetch_rows(self.weights().1, 1)
    }
    #[inline(always)]
    unsafe fn arrange(&self, tk: &mut Token, _t: usize, _tn: usize) {
        let (nb, x) = (self.0.n, self.0.x);
        let nq = nb / QUAD;
        for (i, ai) in tk.a.iter_mut().enumerate().take(nb.div_ceil(2)) {
            let qs = |b: usize| _mm256_loadu_si256((*x.add(b.min(nb - 1))).qs.as_ptr().cast());
            *ai = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(qs(2 * i)), qs(2 * i + 1));
        }
        for (q, aq_q) in tk.aq.iter_mut().enumerate().take(nq) {
            aq_q.write(load_aq::<ONE>(x.add(q * QUAD)));
        }
        for (k, t) in tk.tail.iter_mut().enumerate().take(nb - QUAD * nq) {
            t.write(<Q5<ONE> as Micro>::load_a(x.add(QUAD * nq + k)));
        }
    }
    #[inline(always)]
    unsafe fn rows(&self, tk: &Token, r: usize, _n: usize, _t: usize, _tn: usize, pf: &Ahead) {
        pf.row(r);
        let bb = <Q5<ONE> as Micro>::BLOCK_BYTES;
        let (nb, nq) = (self.0.n, self.0.n / QUAD);
        let n_tail = nb - QUAD * nq;
        let p = self.0.w.add(r * self.0.rb);
        let mut acc = _mm256_setzero_ps();
        // SAFETY (the reads of `aq` and `tail`): `arrange` wrote them for this row width.
        for q in 0..nq {
            let pq = p.add(q * QUAD * bb);
            let a01 = pair_sums::<ONE>(pq, pq.add(bb), tk.a[2 * q]);
            let a23 = pair_sums::<ONE>(pq.add(2 * bb), pq.add(3 * bb), tk.a[2 * q + 1]);
            // Lane 4h + 2c + e: block h + 2e's values 8k + 4c + n (k, n in 0..4), the
            // quad layout's lane.
            let lanes = _mm256_add_epi32(
                _mm256_unpacklo_epi32(a01, a23),
                _mm256_unpackhi_epi32(a01, a23),
            );
            let aq_q = tk.aq[q].assume_init_ref();
            let i = _mm256_add_epi32(aq_q.init, lanes);
            let (d, m) = quad_dm(pq, bb);
            acc = steps::<ONE>(i, d, aq_q.d, m, aq_q.s, acc);
        }
        // Tail blocks two at a time (a lone last one twice), then each one's steps, in order,
        // as `Q5::block` takes them.
        for k in (0..n_tail).step_by(2) {
            let b = QUAD * nq + k;
            let (p0, p1) = (p.add(b * bb), p.add((b + 1).min(nb - 1) * bb));
            let s = block_lanes::<ONE>(p0, p1, tk.a[b / 2]);
            let halves = [_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64::<1>(s)];
            for (j, &h) in halves.iter().enumerate().take(n_tail - k) {
                let t = tk.tail[k + j].assume_init_ref();
                let (d, m) = block_dm::<ONE>(p.add((b + j) * bb));
                acc = steps::<ONE>(_mm256_add_epi32(t.init, h), d, t.d, m, t.s, acc);
            }
        }
        *self.0.out.add(r) = hsum(acc);
    }
}
