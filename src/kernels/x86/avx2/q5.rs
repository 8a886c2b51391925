//! Q5_0 and Q5_1 through the frame, one block of 32 per register (the micro-kernel of
//! [`Q5`]), for every x86 table.
//!
//! A block's 5-bit values `q` (a nibble of `qs` plus bit i of `qh` as `0x10`) are unsigned
//! bytes that meet the signed activations through `vpmaddubsw` + `vpmaddwd`: pairs stay
//! below `2 * 31 * 127 < 2^15`, so the 8 i32 lanes are exact. Q5_0's `-16` offset is removed
//! exactly by starting the lanes at `-16 * a` summed the same way, once per activation block
//! for all the rows of a tile; Q5_1's `m * s_a` enters lane 0. Per block, the lanes are
//! converted to f32 and scaled by `d_w * d_a`.
//!
//! # Safety
//! As in `avx2/mod.rs`: AVX2, FMA and F16C, and the caller's slice-size preconditions.

#![allow(clippy::needless_range_loop)] // tiles index rows and tokens in lockstep

use std::arch::x86_64::*;

use super::super::super::scalar::{Q5_0_BYTES, Q5_1_BYTES};
use std::ops::Range;

use super::super::super::{BlockQ8A, QK};
use super::frame::{matmul_tiles, Micro};
use super::{f16_lane0, hsum_i32};

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
pub(super) struct A5 {
    a: __m256i,
    d: __m256,
    s: __m256,
    init: __m256i,
}

/// The exact i32 lanes of the block's values `u` times `a` (lane sum: the block's `isum`).
#[inline(always)]
unsafe fn lanes(u: __m256i, a: &A5) -> __m256i {
    let p = _mm256_maddubs_epi16(u, a.a);
    _mm256_add_epi32(a.init, _mm256_madd_epi16(p, _mm256_set1_epi16(1)))
}

/// Q5_0 (`ONE = false`) or Q5_1 (`ONE = true`).
pub(super) struct Q5<const ONE: bool>;

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
        for r in 0..R {
            let p = w.add(r * rb);
            // The same block of the row one tile below (as in `kquant.rs`: decode would
            // wait on DRAM). Blocks are under 64 bytes, so every line holds a block start.
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(R * rb).cast());
            let u = values::<ONE>(p);
            let d = _mm256_broadcastss_ps(f16_lane0(p));
            for t in 0..T {
                let i = _mm256_cvtepi32_ps(lanes(u, &a[t]));
                acc[r][t] = _mm256_fmadd_ps(i, _mm256_mul_ps(d, a[t].d), acc[r][t]);
                if ONE {
                    let m = _mm256_zextps128_ps256(f16_lane0(p.add(2)));
                    acc[r][t] = _mm256_fmadd_ps(m, a[t].s, acc[r][t]);
                }
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
        for r in 0..R {
            let p = w.add(r * rb);
            // As in `Q5`: the same blocks of the row one tile below.
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(R * rb).cast());
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
                let i = _mm256_cvtepi32_ps(_mm256_add_epi32(a[t].init, i));
                acc[r][t] = _mm256_fmadd_ps(i, _mm256_mul_ps(d, a[t].d), acc[r][t]);
                if ONE {
                    acc[r][t] = _mm256_fmadd_ps(m, a[t].s, acc[r][t]);
                }
            }
        }
    }
}

/// The matmul of `MatmulQ8aFn` for Q5_0 (`ONE = false`) or Q5_1: two blocks at a time when
/// rows hold an even number of blocks (every row of a matrix takes the same path, so
/// outputs do not depend on the batch).
///
/// # Safety
/// As `MatmulQ8aFn`, on a CPU with AVX2, FMA and F16C.
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
    if (cols / QK).is_multiple_of(2) {
        matmul_tiles::<Q5Pair<ONE>>(w, cols, rows, xq, n_tok, out, out_stride)
    } else {
        matmul_tiles::<Q5<ONE>>(w, cols, rows, xq, n_tok, out, out_stride)
    }
}

/// Per-block exact sums of one row (test hook), with the micro-kernels' primitives: pairs
/// for an even number of blocks, single blocks otherwise.
#[inline(always)]
pub(super) unsafe fn isums<const ONE: bool>(w_row: &[u8], xq: &[BlockQ8A], out: &mut [i32]) {
    let bb = <Q5<ONE> as Micro>::BLOCK_BYTES;
    if out.len().is_multiple_of(2) {
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
    for (b, o) in out.iter_mut().enumerate() {
        let u = values::<ONE>(w_row.as_ptr().add(b * bb));
        *o = hsum_i32(lanes(u, &<Q5<ONE> as Micro>::load_a(xq.as_ptr().add(b))));
    }
}
