//! Q5_0 and Q5_1 for every x86 table: by quads of 4 blocks for rows of 4 to 16 quads (plus up
//! to 3 single blocks), else one or two blocks per register through the frame (the
//! micro-kernels of [`Q5`] and [`Q5Pair`]).
//!
//! A block's 5-bit values `q` (a nibble of `qs` plus bit i of `qh` as `0x10`) are unsigned
//! bytes that meet the signed activations through `vpmaddubsw` + `vpmaddwd`: pairs stay
//! below `2 * 31 * 127 < 2^15`, so the 8 i32 lanes are exact. Q5_0's `-16` offset is removed
//! exactly by starting the lanes at `-16 * a` summed the same way, once per activation block
//! for all the rows of a tile; Q5_1's `m * s_a` enters one lane per block. The lanes are
//! converted to f32 and scaled by `d_w * d_a` once per register of products.
//!
//! The quad layout ([`WQuad`], [`AQuad`]) spreads 4 blocks over 4 registers, 2 i32 lanes
//! per block in each, so that their `vpmaddubsw` products add up vertically (4 per i16 lane,
//! below `4 * 2 * 31 * 127 < 2^15`) and one conversion and one FMA serve 128 weights. The
//! activations are arranged in that layout once per tile of up to 8 tokens for every row
//! (as the grouped Q4/Q8_0 path does), and each unpacked quad of weights serves up to 8
//! tokens; per output, the operations do not depend on the batch (measured with thread CPU
//! time at 2048 x 640: 30 -> 56 GMAC/s at 128 tokens, decode unchanged).
//!
//! # Safety
//! As in `avx2/mod.rs`: AVX2, FMA and F16C, and the caller's slice-size preconditions.

#![allow(clippy::needless_range_loop)] // tiles index rows and tokens in lockstep

use std::arch::x86_64::*;
use std::ops::Range;

use super::super::super::scalar::{Q5_0_BYTES, Q5_1_BYTES};
use super::super::super::{BlockQ8A, QK};
use super::arranged::{self, Unit};
use super::frame::{matmul_tiles, Micro};
use super::{f16_lane0, prefetch_rows};

/// The 32 bits of `bits` as bytes `0x10` (bit set) or 0, byte i for bit i.
#[inline(always)]
unsafe fn bits_to_0x10(bits: u32) -> __m256i {
    // Byte i takes byte i / 8 of `bits`, then tests bit i % 8 of it.
    let v = _mm256_set1_epi32(bits as i32);
    let spread = _mm256_shuffle_epi8(
        v,
        _mm256_setr_epi8(
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3,
            3, 3, 3,
        ),
    );
    let sel = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let hit = _mm256_cmpeq_epi8(_mm256_and_si256(spread, sel), sel);
    _mm256_and_si256(hit, _mm256_set1_epi8(0x10))
}

/// The 32 values of the block at `p` as unsigned bytes `0..=31`, value i in byte i.
#[inline(always)]
unsafe fn values<const ONE: bool>(p: *const u8) -> __m256i {
    let o = if ONE { 4 } else { 2 };
    let qh = u32::from_le_bytes(std::ptr::read_unaligned(p.add(o).cast::<[u8; 4]>()));
    let q = _mm_loadu_si128(p.add(o + 4).cast());
    let lo = _mm_and_si128(q, _mm_set1_epi8(0x0f));
    let hi = _mm_and_si128(_mm_srli_epi16::<4>(q), _mm_set1_epi8(0x0f));
    _mm256_or_si256(_mm256_set_m128i(hi, lo), bits_to_0x10(qh))
}

/// One activation block of one token: values, `d` and `s` in every lane, and the initial i32
/// lanes (Q5_0: minus 16 times the values, summed as the product is).
#[derive(Clone, Copy)]
pub(in crate::kernels::x86) struct A5 {
    a: __m256i,
    pub(in crate::kernels::x86) d: __m256,
    pub(in crate::kernels::x86) s: __m256,
    pub(in crate::kernels::x86) init: __m256i,
}

/// The block at `p`'s `d` in every lane, and Q5_1's `m` in lane 0 (zero elsewhere: the
/// minimum term enters once per block).
#[inline(always)]
pub(in crate::kernels::x86) unsafe fn block_dm<const ONE: bool>(p: *const u8) -> (__m256, __m256) {
    let d = _mm256_broadcastss_ps(f16_lane0(p));
    let m = if ONE {
        _mm256_zextps128_ps256(f16_lane0(p.add(2)))
    } else {
        _mm256_setzero_ps()
    };
    (d, m)
}

/// The exact i32 lanes of the block's values `u` times `a` (lane sum: the block's `isum`).
#[inline(always)]
unsafe fn lanes(u: __m256i, a: &A5) -> __m256i {
    let p = _mm256_maddubs_epi16(u, a.a);
    _mm256_add_epi32(a.init, _mm256_madd_epi16(p, _mm256_set1_epi16(1)))
}

/// The f32 steps of every Q5 layout (and of the AVX-512 decode), per register of exact i32
/// lanes `i`, initial lanes included: converted, scaled lane by lane by the weights' `d`
/// times the activations' `a_d`, and accumulated; then Q5_1's minimum term, `m * a_s`
/// (zero in the lanes that must not add it).
#[inline(always)]
pub(in crate::kernels::x86) unsafe fn steps<const ONE: bool>(
    i: __m256i,
    d: __m256,
    a_d: __m256,
    m: __m256,
    a_s: __m256,
    acc: __m256,
) -> __m256 {
    let acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), _mm256_mul_ps(d, a_d), acc);
    if ONE {
        _mm256_fmadd_ps(m, a_s, acc)
    } else {
        acc
    }
}

/// Q5_0 (`ONE = false`) or Q5_1 (`ONE = true`).
pub(in crate::kernels::x86) struct Q5<const ONE: bool>;

impl<const ONE: bool> Micro for Q5<ONE> {
    const BLOCK_BYTES: usize = if ONE { Q5_1_BYTES } else { Q5_0_BYTES };
    const SUBS: usize = 1;
    const BATCH_ROWS: usize = 4;
    type A = A5;
    #[inline(always)]
    unsafe fn load_a(x: *const BlockQ8A) -> A5 {
        let x = &*x;
        let a = _mm256_loadu_si256(x.qs.as_ptr().cast());
        let init = if ONE {
            _mm256_setzero_si256()
        } else {
            let p = _mm256_maddubs_epi16(_mm256_set1_epi8(16), a);
            _mm256_sub_epi32(
                _mm256_setzero_si256(),
                _mm256_madd_epi16(p, _mm256_set1_epi16(1)),
            )
        };
        A5 {
            a,
            d: _mm256_set1_ps(x.d),
            s: _mm256_set1_ps(x.s),
            init,
        }
    }
    #[inline(always)]
    unsafe fn block<const R: usize, const T: usize>(
        w: *const u8,
        rb: usize,
        a: &[A5; T],
        acc: &mut [[__m256; T]; R],
    ) {
        let ahead = prefetch_rows(rb, R) * rb;
        for r in 0..R {
            let p = w.add(r * rb);
            // The same block of a row further down (as in `kquant.rs`: decode would wait on
            // DRAM). Blocks are under 64 bytes, so every line holds a block start.
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(ahead).cast());
            let u = values::<ONE>(p);
            let (d, m) = block_dm::<ONE>(p);
            for t in 0..T {
                let at = &a[t];
                acc[r][t] = steps::<ONE>(lanes(u, at), d, at.d, m, at.s, acc[r][t]);
            }
        }
    }
}

/// Two blocks' i16 pair sums `p`, `q` (from `vpmaddubsw`) as exact i32 lanes: per 128 bits,
/// lanes 0 and 2 hold parts of the first block, 1 and 3 of the second. The i16 sums of 4
/// products in between stay below `4 * 31 * 127 < 2^15`.
#[inline(always)]
unsafe fn pair_lanes(p: __m256i, q: __m256i) -> __m256i {
    let four = _mm256_add_epi16(_mm256_unpacklo_epi32(p, q), _mm256_unpackhi_epi32(p, q));
    _mm256_madd_epi16(four, _mm256_set1_epi16(1))
}

/// One token's activations for two consecutive blocks: values, the initial i32 lanes (Q5_0:
/// minus 16 times the values, summed as the products are), `d` of the two blocks
/// alternating in the 8 lanes, and (Q5_1) their `s` in lanes 0 and 1.
#[derive(Clone, Copy)]
pub(super) struct A5Pair {
    a: [__m256i; 2],
    init: __m256i,
    d: __m256,
    s: __m256,
}

/// Q5_0 or Q5_1 two blocks at a time, for rows of an even number of blocks: the pair's i32
/// lanes are converted and scaled once (one FMA with `d_w * d_a` alternating per lane).
pub(super) struct Q5Pair<const ONE: bool>;

impl<const ONE: bool> Micro for Q5Pair<ONE> {
    const BLOCK_BYTES: usize = 2 * <Q5<ONE> as Micro>::BLOCK_BYTES;
    const SUBS: usize = 2;
    const BATCH_ROWS: usize = 4;
    type A = A5Pair;
    #[inline(always)]
    unsafe fn load_a(x: *const BlockQ8A) -> A5Pair {
        let (x0, x1) = (&*x, &*x.add(1));
        let a = [
            _mm256_loadu_si256(x0.qs.as_ptr().cast()),
            _mm256_loadu_si256(x1.qs.as_ptr().cast()),
        ];
        let init = if ONE {
            _mm256_setzero_si256()
        } else {
            let m16 = _mm256_set1_epi8(16);
            let m = pair_lanes(
                _mm256_maddubs_epi16(m16, a[0]),
                _mm256_maddubs_epi16(m16, a[1]),
            );
            _mm256_sub_epi32(_mm256_setzero_si256(), m)
        };
        let d = _mm256_setr_ps(x0.d, x1.d, x0.d, x1.d, x0.d, x1.d, x0.d, x1.d);
        let s = _mm256_setr_ps(x0.s, x1.s, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        A5Pair { a, init, d, s }
    }
    #[inline(always)]
    unsafe fn block<const R: usize, const T: usize>(
        w: *const u8,
        rb: usize,
        a: &[A5Pair; T],
        acc: &mut [[__m256; T]; R],
    ) {
        let bb = <Q5<ONE> as Micro>::BLOCK_BYTES;
        let f16s = |p: *const u8| u32::from(u16::from_le_bytes([*p, *p.add(1)]));
        let ahead = prefetch_rows(rb, R) * rb;
        for r in 0..R {
            let p = w.add(r * rb);
            // As in `Q5`: the same blocks of a row further down.
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(ahead).cast());
            let (u0, u1) = (values::<ONE>(p), values::<ONE>(p.add(bb)));
            // `d` of the two blocks alternating; Q5_1's `m` in lanes 0 and 1.
            let d2 = f16s(p) | f16s(p.add(bb)) << 16;
            let d = _mm256_cvtph_ps(_mm_set1_epi32(d2 as i32));
            let m2 = if ONE {
                f16s(p.add(2)) | f16s(p.add(bb + 2)) << 16
            } else {
                0
            };
            let m = _mm256_cvtph_ps(_mm_cvtsi32_si128(m2 as i32));
            for t in 0..T {
                let i = pair_lanes(
                    _mm256_maddubs_epi16(u0, a[t].a[0]),
                    _mm256_maddubs_epi16(u1, a[t].a[1]),
                );
                let i = _mm256_add_epi32(a[t].init, i);
                acc[r][t] = steps::<ONE>(i, d, a[t].d, m, a[t].s, acc[r][t]);
            }
        }
    }
}

/// Blocks per quad: the quad layout puts each of 4 blocks in 2 i32 lanes of every register.
pub(in crate::kernels::x86) const QUAD: usize = 4;

/// The dwords at `p`, `p + bb`, `p + 2 bb` and `p + 3 bb` in quad lane order: lane `4h + 2c + e`
/// holds the one of block `h + 2e`, as two halves (lanes 0-3, lanes 4-7).
#[inline(always)]
unsafe fn quad_dwords(p: *const u8, bb: usize) -> (__m128i, __m128i) {
    let ld = |j: usize| _mm_loadu_si32(p.add(j * bb));
    let (b02, b13) = (
        _mm_unpacklo_epi32(ld(0), ld(2)),
        _mm_unpacklo_epi32(ld(1), ld(3)),
    );
    (_mm_unpacklo_epi64(b02, b02), _mm_unpacklo_epi64(b13, b13))
}

/// The f16 halves of [`quad_dwords`] as f32 in lane order: the low halves, or the high
/// halves when `high`.
#[inline(always)]
unsafe fn quad_halves((lo, hi): (__m128i, __m128i), high: bool) -> __m256 {
    let h = if high {
        _mm_packus_epi32(_mm_srli_epi32::<16>(lo), _mm_srli_epi32::<16>(hi))
    } else {
        let mask = _mm_set1_epi32(0xffff);
        _mm_packus_epi32(_mm_and_si128(lo, mask), _mm_and_si128(hi, mask))
    };
    _mm256_cvtph_ps(h)
}

/// Four consecutive blocks of one row, unpacked in the quad layout: lane `4h + 2c + e` of
/// every register belongs to block `h + 2e`, and byte n of that lane of `u[k]` is the block's
/// value `8k + 4c + n` (`0..=31`); `d` (and Q5_1's `m`) of the lane's block.
#[derive(Clone, Copy)]
pub(in crate::kernels::x86) struct WQuad {
    u: [__m256i; 4],
    d: __m256,
    m: __m256,
}

/// With `BW` (AVX-512 BW + VL), the fifth bits are tested and added by mask (`vptestmb`,
/// masked `vpaddb`): the same bytes in two operations instead of four.
#[inline(always)]
unsafe fn load_wq<const ONE: bool, const BW: bool>(p: *const u8) -> WQuad {
    let bb = <Q5<ONE> as Micro>::BLOCK_BYTES;
    let (oh, oq) = if ONE { (4, 8) } else { (2, 6) };
    // Dword c of block h + 2e's `qs` in lane 4h + 2c + e (`lo`: dwords 0-1, `hi`: 2-3).
    let two =
        |j: usize| _mm256_loadu2_m128i(p.add((j + 1) * bb + oq).cast(), p.add(j * bb + oq).cast());
    let (b01, b23) = (two(0), two(2));
    let (lo, hi) = (
        _mm256_unpacklo_epi32(b01, b23),
        _mm256_unpackhi_epi32(b01, b23),
    );
    let m15 = _mm256_set1_epi8(0x0f);
    let nib = [
        _mm256_and_si256(lo, m15),
        _mm256_and_si256(hi, m15),
        _mm256_and_si256(_mm256_srli_epi16::<4>(lo), m15),
        _mm256_and_si256(_mm256_srli_epi16::<4>(hi), m15),
    ];
    // The fifth bit of value 8k + 4c + n is bit 4c + n of byte k of the block's `qh`: byte k
    // goes to the lane's 4 bytes, and byte n tests bit 4c + n.
    let (ql, qhh) = quad_dwords(p.add(oh), bb);
    let qh = _mm256_set_m128i(qhh, ql);
    let sel = _mm256_setr_epi32(
        0x0804_0201,
        0x0804_0201,
        0x8040_2010u32 as i32,
        0x8040_2010u32 as i32,
        0x0804_0201,
        0x0804_0201,
        0x8040_2010u32 as i32,
        0x8040_2010u32 as i32,
    );
    let mut u = nib;
    for (k, uk) in u.iter_mut().enumerate() {
        let b = k as i8;
        let spread = _mm256_shuffle_epi8(
            qh,
            _mm256_setr_epi8(
                b,
                b,
                b,
                b,
                b + 4,
                b + 4,
                b + 4,
                b + 4,
                b + 8,
                b + 8,
                b + 8,
                b + 8,
                b + 12,
                b + 12,
                b + 12,
                b + 12,
                b,
                b,
                b,
                b,
                b + 4,
                b + 4,
                b + 4,
                b + 4,
                b + 8,
                b + 8,
                b + 8,
                b + 8,
                b + 12,
                b + 12,
                b + 12,
                b + 12,
            ),
        );
        if BW {
            // The nibbles are below 0x10, so adding the bit is or-ing it.
            let hit = _mm256_test_epi8_mask(spread, sel);
            *uk = _mm256_mask_add_epi8(*uk, hit, *uk, _mm256_set1_epi8(0x10));
        } else {
            let hit = _mm256_cmpeq_epi8(_mm256_and_si256(spread, sel), sel);
            *uk = _mm256_or_si256(*uk, _mm256_and_si256(hit, _mm256_set1_epi8(0x10)));
        }
    }
    let dm = quad_dwords(p, bb);
    let d = quad_halves(dm, false);
    let m = if ONE {
        quad_halves(dm, true)
    } else {
        _mm256_setzero_ps()
    };
    WQuad { u, d, m }
}

/// One token's activations for a quad, in the layout of [`WQuad`]: byte n of lane
/// `4h + 2c + e` of `a[k]` is value `8k + 4c + n` of block `h + 2e`; the initial i32 lanes
/// (Q5_0: minus 16 times the values, summed as the products are); `d` of the lane's block,
/// and (Q5_1) `s` in the lanes with c = 0 only, so that each block's minimum term enters once.
#[derive(Clone, Copy)]
pub(in crate::kernels::x86) struct AQuad {
    a: [__m256i; 4],
    pub(in crate::kernels::x86) init: __m256i,
    pub(in crate::kernels::x86) d: __m256,
    pub(in crate::kernels::x86) s: __m256,
}

#[inline(always)]
pub(in crate::kernels::x86) unsafe fn load_aq<const ONE: bool>(x: *const BlockQ8A) -> AQuad {
    let b = |j: usize| &*x.add(j);
    let half = |j: usize, o: usize| b(j).qs.as_ptr().add(o);
    let two = |j: usize, o: usize| _mm256_loadu2_m128i(half(j + 1, o).cast(), half(j, o).cast());
    let (x01, x23) = (two(0, 0), two(2, 0));
    let (y01, y23) = (two(0, 16), two(2, 16));
    let a = [
        _mm256_unpacklo_epi32(x01, x23),
        _mm256_unpackhi_epi32(x01, x23),
        _mm256_unpacklo_epi32(y01, y23),
        _mm256_unpackhi_epi32(y01, y23),
    ];
    let init = if ONE {
        _mm256_setzero_si256()
    } else {
        // At most 4 * 2 * 16 * 127 per i16 lane: exact.
        let m16 = _mm256_set1_epi8(16);
        let mut c = _mm256_maddubs_epi16(m16, a[0]);
        for ak in &a[1..] {
            c = _mm256_add_epi16(c, _mm256_maddubs_epi16(m16, *ak));
        }
        _mm256_madd_epi16(c, _mm256_set1_epi16(-1))
    };
    let (d0, d1, d2, d3) = (b(0).d, b(1).d, b(2).d, b(3).d);
    let d = _mm256_setr_ps(d0, d2, d0, d2, d1, d3, d1, d3);
    let s = if ONE {
        _mm256_setr_ps(b(0).s, b(2).s, 0.0, 0.0, b(1).s, b(3).s, 0.0, 0.0)
    } else {
        _mm256_setzero_ps()
    };
    AQuad { a, init, d, s }
}

/// The exact i32 lanes of a quad of weights times one token's quad of activations: block
/// `h + 2e`'s `isum` is the sum of lanes `4h + e` and `4h + 2 + e`.
#[inline(always)]
unsafe fn isum_quad(w: &WQuad, a: &AQuad) -> __m256i {
    // Each `vpmaddubsw` lane is at most 2 * 31 * 127, so 4 of them sum exactly in i16.
    let mut s16 = _mm256_maddubs_epi16(w.u[0], a.a[0]);
    for k in 1..4 {
        s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(w.u[k], a.a[k]));
    }
    _mm256_add_epi32(a.init, _mm256_madd_epi16(s16, _mm256_set1_epi16(1)))
}

/// Q5_0 or Q5_1 (`ONE`) by quads ([`WQuad`], [`AQuad`]), through `arranged::matmul`.
pub(in crate::kernels::x86) struct Q5Quads<const ONE: bool, const BW: bool>;

impl<const ONE: bool, const BW: bool> Unit for Q5Quads<ONE, BW> {
    const SUBS: usize = QUAD;
    const BYTES: usize = QUAD * <Q5<ONE> as Micro>::BLOCK_BYTES;
    type W = WQuad;
    type A = AQuad;
    type Tail = Q5<ONE>;
    #[inline(always)]
    unsafe fn load_w(p: *const u8) -> WQuad {
        load_wq::<ONE, BW>(p)
    }
    #[inline(always)]
    unsafe fn load_a(x: *const BlockQ8A) -> AQuad {
        load_aq::<ONE>(x)
    }
    #[inline(always)]
    unsafe fn accumulate(w: &WQuad, a: &AQuad, acc: __m256) -> __m256 {
        steps::<ONE>(isum_quad(w, a), w.d, a.d, w.m, a.s, acc)
    }
}

/// The matmul of `MatmulQ8aFn` for Q5_0 (`ONE = false`) or Q5_1: by quads for the rows
/// `arranged` takes, else two blocks at a time when rows hold an even number of blocks,
/// else one (every row of a matrix takes the same path, so outputs do not depend on the
/// batch).
///
/// # Safety
/// As `MatmulQ8aFn`, on a CPU with AVX2, FMA and F16C.
#[inline(always)]
pub(in crate::kernels::x86) unsafe fn matmul<const ONE: bool, const BW: bool>(
    w: &[u8],
    cols: usize,
    rows: Range<usize>,
    xq: &[BlockQ8A],
    n_tok: usize,
    out: *mut f32,
    out_stride: usize,
) {
    let nb = cols / QK;
    if arranged::fits::<Q5Quads<ONE, BW>>(nb) {
        let (wp, xp) = (w.as_ptr(), xq.as_ptr());
        arranged::matmul::<Q5Quads<ONE, BW>>(wp, nb, rows, xp, n_tok, out, out_stride)
    } else if BW {
        // The other layouts have no BW form: the AVX2 entry, not a second copy of them.
        super::MATMUL_Q8A_Q5_AND_K[usize::from(ONE)](w, cols, rows, xq, n_tok, out, out_stride)
    } else if nb.is_multiple_of(2) {
        matmul_tiles::<Q5Pair<ONE>>(w, cols, rows, xq, n_tok, out, out_stride)
    } else {
        matmul_tiles::<Q5<ONE>>(w, cols, rows, xq, n_tok, out, out_stride)
    }
}

/// Per-block exact sums of one row (test hook), with the micro-kernels' primitives: quads
/// and single tail blocks, pairs, or single blocks, as [`matmul`] takes them.
#[inline(always)]
#[cfg(test)]
pub(super) unsafe fn isums<const ONE: bool>(w_row: &[u8], xq: &[BlockQ8A], out: &mut [i32]) {
    let bb = <Q5<ONE> as Micro>::BLOCK_BYTES;
    let nb = out.len();
    let mut b0 = 0;
    if arranged::fits::<Q5Quads<ONE, false>>(nb) {
        while b0 + QUAD <= nb {
            let wq = load_wq::<ONE, false>(w_row.as_ptr().add(b0 * bb));
            let aq = load_aq::<ONE>(xq.as_ptr().add(b0));
            let mut lanes = [0i32; 8];
            _mm256_storeu_si256(lanes.as_mut_ptr().cast(), isum_quad(&wq, &aq));
            for (j, o) in out[b0..b0 + QUAD].iter_mut().enumerate() {
                let (h, e) = (j % 2, j / 2);
                *o = lanes[4 * h + e] + lanes[4 * h + 2 + e];
            }
            b0 += QUAD;
        }
    } else if nb.is_multiple_of(2) {
        for (k, o) in out.chunks_exact_mut(2).enumerate() {
            let p = w_row.as_ptr().add(2 * k * bb);
            let a = <Q5Pair<ONE> as Micro>::load_a(xq.as_ptr().add(2 * k));
            let i = pair_lanes(
                _mm256_maddubs_epi16(values::<ONE>(p), a.a[0]),
                _mm256_maddubs_epi16(values::<ONE>(p.add(bb)), a.a[1]),
            );
            let mut lanes = [0i32; 8];
            _mm256_storeu_si256(lanes.as_mut_ptr().cast(), _mm256_add_epi32(a.init, i));
            o[0] = lanes[0] + lanes[2] + lanes[4] + lanes[6];
            o[1] = lanes[1] + lanes[3] + lanes[5] + lanes[7];
        }
        return;
    }
    for (b, o) in out.iter_mut().enumerate().skip(b0) {
        let u = values::<ONE>(w_row.as_ptr().add(b * bb));
        *o = super::hsum_i32(lanes(u, &<Q5<ONE> as Micro>::load_a(xq.as_ptr().add(b))));
    }
}
