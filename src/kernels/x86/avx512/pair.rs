//! One or two 32-value blocks (Q8_0, Q4_0, Q4_1) in one 512-bit register: lanes 0-7 hold
//! block b, lanes 8-15 block b + 1. Every layout ends a row with these.
//! Safety: as in the `avx512` module documentation.

use std::arch::x86_64::*;

use super::super::super::BlockQ8A;
use super::super::{block_bytes, Q4_0, Q4_1, Q8_0};
use super::frame::{idx, Idx};

/// Word-permute indices. `[qs, qs, qs', qs']` for the nibbles of a pair (then shifted by
/// 0/4/0/4 per 128-bit lane; `qs'` comes from the second source, see `load_w`),
/// `[d x8, d' x8]` for scales, `m`/`m'` into lanes 0 and 8.
static Q4_0_NIB: Idx = Idx([
    1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, //
    32, 33, 34, 35, 36, 37, 38, 39, 32, 33, 34, 35, 36, 37, 38, 39,
]);
static Q4_1_NIB: Idx = Idx([
    2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5, 6, 7, 8, 9, //
    32, 33, 34, 35, 36, 37, 38, 39, 32, 33, 34, 35, 36, 37, 38, 39,
]);
static NIB_SHIFT: Idx = Idx([
    0, 0, 0, 0, 0, 0, 0, 0, 4, 4, 4, 4, 4, 4, 4, 4, //
    0, 0, 0, 0, 0, 0, 0, 0, 4, 4, 4, 4, 4, 4, 4, 4,
]);
static Q8_0_D: Idx = Idx([
    0, 0, 0, 0, 0, 0, 0, 0, 17, 17, 17, 17, 17, 17, 17, 17, //
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
]);
static Q4_0_D: Idx = Idx([
    0, 0, 0, 0, 0, 0, 0, 0, 9, 9, 9, 9, 9, 9, 9, 9, //
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
]);
static Q4_1_D: Idx = Idx([
    0, 0, 0, 0, 0, 0, 0, 0, 10, 10, 10, 10, 10, 10, 10, 10, //
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
]);
static Q4_1_M: Idx = Idx([
    1, 0, 0, 0, 0, 0, 0, 0, 11, 0, 0, 0, 0, 0, 0, 0, //
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
]);

/// Mask of the first `n` bytes.
#[inline(always)]
fn bytes_mask(n: usize) -> __mmask64 {
    if n >= 64 {
        !0
    } else {
        (1u64 << n) - 1
    }
}

/// One pair of weight blocks of one row, ready for the integer product.
#[derive(Clone, Copy)]
pub(super) struct WPair {
    /// Unsigned bytes: `w + 128` (Q8_0) or the nibbles (Q4).
    pub(super) u: __m512i,
    /// `[d x8, d' x8]`.
    pub(super) d: __m512,
    /// Q4_1: `[m, 0 x7, m', 0 x7]`.
    pub(super) m: __m512,
}

/// Loads the pair of blocks at `p` (the second only when `two`).
#[inline(always)]
pub(super) unsafe fn load_w<const DT: u8>(p: *const u8, two: bool) -> WPair {
    let bb = block_bytes(DT);
    let n = if two { 2 * bb } else { bb };
    match DT {
        Q8_0 => {
            let lo = _mm256_loadu_si256(p.add(2).cast());
            let hi = if two {
                _mm256_loadu_si256(p.add(2 + bb).cast())
            } else {
                _mm256_setzero_si256()
            };
            let w = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
            // A full pair is 68 bytes, so a plain 64-byte load stays inside it.
            let z = if two {
                _mm512_loadu_si512(p.cast())
            } else {
                _mm512_maskz_loadu_epi8(bytes_mask(n), p.cast())
            };
            let d = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(
                idx(&Q8_0_D),
                z,
            )));
            WPair {
                u: _mm512_xor_si512(w, _mm512_set1_epi8(-128)),
                d,
                m: _mm512_setzero_ps(),
            }
        }
        _ => {
            // A full pair (36 / 40 bytes): its first 32 bytes, and its last 16 as the second
            // permute source (index 32 + j = word j of those = the second block's nibbles).
            // Only a lone tail block needs a masked load.
            let (z, t) = if two {
                let t = _mm_loadu_si128(p.add(2 * bb - 16).cast());
                (
                    _mm512_zextsi256_si512(_mm256_loadu_si256(p.cast())),
                    _mm512_zextsi128_si512(t),
                )
            } else {
                (
                    _mm512_maskz_loadu_epi8(bytes_mask(n), p.cast()),
                    _mm512_setzero_si512(),
                )
            };
            let (nib, di) = if DT == Q4_0 {
                (&Q4_0_NIB, &Q4_0_D)
            } else {
                (&Q4_1_NIB, &Q4_1_D)
            };
            let q = _mm512_permutex2var_epi16(z, idx(nib), t);
            let q = _mm512_srlv_epi16(q, idx(&NIB_SHIFT));
            let u = _mm512_and_si512(q, _mm512_set1_epi8(0x0f));
            let d = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(idx(di), z)));
            let m = if DT == Q4_1 {
                let mi = _mm512_maskz_permutexvar_epi16(0x0101, idx(&Q4_1_M), z);
                _mm512_cvtph_ps(_mm512_castsi512_si256(mi))
            } else {
                _mm512_setzero_ps()
            };
            WPair { u, d, m }
        }
    }
}

/// `[lo x8, hi x8]` (AVX-512F only; `vinsertf32x8` would need DQ).
#[inline(always)]
unsafe fn halves(lo: f32, hi: f32) -> __m512 {
    let l = _mm512_castps_pd(_mm512_set1_ps(lo));
    _mm512_castpd_ps(_mm512_insertf64x4::<1>(
        l,
        _mm256_castps_pd(_mm256_set1_ps(hi)),
    ))
}

/// One pair of activation blocks of one token.
#[derive(Clone, Copy)]
pub(super) struct APair {
    pub(super) a: __m512i,
    /// `[d x8, d' x8]`.
    pub(super) d: __m512,
    /// Q4_1: `[s, 0 x7, s', 0 x7]`.
    pub(super) s: __m512,
    /// Initial i32 accumulator removing the weight offset (Q8_0, Q4_0).
    pub(super) init: __m512i,
}

#[inline(always)]
pub(super) unsafe fn load_a<const DT: u8>(x: *const BlockQ8A, two: bool) -> APair {
    let x0 = &*x;
    let lo = _mm256_loadu_si256(x0.qs.as_ptr().cast());
    let (hi, d1, s1) = if two {
        let x1 = &*x.add(1);
        (_mm256_loadu_si256(x1.qs.as_ptr().cast()), x1.d, x1.s)
    } else {
        (_mm256_setzero_si256(), 0.0, 0.0)
    };
    let a = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
    let d = halves(x0.d, d1);
    let s = if DT == Q4_1 {
        _mm512_maskz_mov_ps(0x0101, halves(x0.s, s1))
    } else {
        _mm512_setzero_ps()
    };
    let off = match DT {
        Q8_0 => Some(-128i8),
        Q4_0 => Some(8),
        _ => None,
    };
    let init = match off {
        Some(o) => _mm512_sub_epi32(
            _mm512_setzero_si512(),
            _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(o), a),
        ),
        None => _mm512_setzero_si512(),
    };
    APair { a, d, s, init }
}

/// Exact i32 lanes of one (row pair, token pair) product; block b in lanes 0-7, b+1 in 8-15.
#[inline(always)]
pub(super) unsafe fn isum_lanes<const DT: u8>(w: &WPair, a: &APair) -> __m512i {
    _mm512_dpbusd_epi32(a.init, w.u, a.a)
}
