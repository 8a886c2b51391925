//! AVX-512 (F, BW, VL) kernels, and the generic code the VNNI path instantiates.
//!
//! Integer dot products work on pairs of blocks: one 512-bit register holds two blocks of
//! 32 bytes (lanes 0-7: block b, lanes 8-15: block b+1). Weights are turned into unsigned
//! bytes `u` and the activations stay signed, so the product is `vpdpbusd` (VNNI) or
//! `vpmaddubsw` + `vpmaddwd` (BW); the offset this introduces (Q8_0: `u = w + 128`, Q4_0:
//! `u = nibble = w + 8`) is removed exactly by starting the i32 accumulator at
//! `-offset * a` summed the same way. Without VNNI, Q8_0 uses the sign trick instead
//! (`|w| * sign(a, w)`), because `(w + 128) * a` pairs would saturate `vpmaddubsw`.
//! Per pair, the i32 lanes are converted to f32, scaled by `d_w * d_a` and accumulated;
//! each output's 16 lanes are summed once at the end, in one fixed order ([`hsum`]).
//!
//! Q4 rows are cut into groups of 16 blocks (transposed so that lane L of the products is one
//! block), then quads, a pair and a single block; Q8_0 rows into octets (transposed so that
//! lane L holds half a block), then pairs and a single block; the same way for decode and
//! for every batch size. So an output's bits depend only on
//! its row and its token's activations, never on the batch, the tile or the thread split.
//!
//! # Safety
//! Every `unsafe fn` here requires AVX-512F/BW/VL (and AVX-512 VNNI when `VNNI = true`),
//! which the callers' `#[target_feature]` entry points guarantee, plus the slice-size
//! preconditions of the table types in `kernels/mod.rs`. Reads past a row's end use masked
//! loads, which never touch masked-out bytes.

use std::arch::x86_64::*;
use std::mem::MaybeUninit;
use std::ops::Range;

use super::super::scalar::{self, Q8_0_BYTES};
use super::super::{BlockQ8A, Kernels, QK};
use super::{block_bytes, drive, isums_entries, q8a_entries, FOperands, Tiler, Q4_0, Q4_1, Q8_0};

/// Word-permute indices. `[qs, qs, qs', qs']` for the nibbles of a pair (then shifted by
/// 0/4/0/4 per 128-bit lane; `qs'` comes from the second source, see `load_w`),
/// `[d x8, d' x8]` for scales, `m`/`m'` into lanes 0 and 8.
#[repr(align(64))]
struct Idx([u16; 32]);
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

#[inline(always)]
unsafe fn idx(i: &Idx) -> __m512i {
    _mm512_load_si512(i.0.as_ptr().cast())
}

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
struct WPair {
    /// Unsigned bytes (VNNI, or Q4 on BW), or `|w|` (Q8_0 on BW).
    u: __m512i,
    /// Q8_0 on BW: lanes where `w < 0`.
    neg: __mmask64,
    /// `[d x8, d' x8]`.
    d: __m512,
    /// Q4_1: `[m, 0 x7, m', 0 x7]`.
    m: __m512,
}

/// Loads the pair of blocks at `p` (the second only when `two`).
#[inline(always)]
unsafe fn load_w<const DT: u8, const VNNI: bool>(p: *const u8, two: bool) -> WPair {
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
            if VNNI {
                let u = _mm512_xor_si512(w, _mm512_set1_epi8(-128));
                WPair {
                    u,
                    neg: 0,
                    d,
                    m: _mm512_setzero_ps(),
                }
            } else {
                let neg = _mm512_movepi8_mask(w);
                WPair {
                    u: _mm512_abs_epi8(w),
                    neg,
                    d,
                    m: _mm512_setzero_ps(),
                }
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
            WPair { u, neg: 0, d, m }
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
struct APair {
    a: __m512i,
    /// `[d x8, d' x8]`.
    d: __m512,
    /// Q4_1: `[s, 0 x7, s', 0 x7]`.
    s: __m512,
    /// Initial i32 accumulator removing the weight offset (VNNI Q8_0, Q4_0).
    init: __m512i,
}

#[inline(always)]
unsafe fn load_a<const DT: u8, const VNNI: bool>(x: *const BlockQ8A, two: bool) -> APair {
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
    let off = match (DT, VNNI) {
        (Q8_0, true) => Some(-128i8),
        (Q4_0, _) => Some(8),
        _ => None,
    };
    let init = match off {
        Some(o) => _mm512_sub_epi32(
            _mm512_setzero_si512(),
            dpbusd::<VNNI>(_mm512_setzero_si512(), _mm512_set1_epi8(o), a),
        ),
        None => _mm512_setzero_si512(),
    };
    APair { a, d, s, init }
}

/// `acc + sum of 4 adjacent u8*i8 products` per i32 lane. Without VNNI the i16 pair sums must
/// not saturate: `|u| * |a|` pairs stay below 2^15 for the operands used here.
#[inline(always)]
unsafe fn dpbusd<const VNNI: bool>(acc: __m512i, u: __m512i, a: __m512i) -> __m512i {
    if VNNI {
        _mm512_dpbusd_epi32(acc, u, a)
    } else {
        let p16 = _mm512_maddubs_epi16(u, a);
        _mm512_add_epi32(acc, _mm512_madd_epi16(p16, _mm512_set1_epi16(1)))
    }
}

/// Exact i32 lanes of one (row pair, token pair) product; block b in lanes 0-7, b+1 in 8-15.
#[inline(always)]
unsafe fn isum_lanes<const DT: u8, const VNNI: bool>(w: &WPair, a: &APair) -> __m512i {
    if DT == Q8_0 && !VNNI {
        let sa = _mm512_mask_sub_epi8(a.a, w.neg, _mm512_setzero_si512(), a.a);
        dpbusd::<false>(_mm512_setzero_si512(), w.u, sa)
    } else {
        dpbusd::<VNNI>(a.init, w.u, a.a)
    }
}

/// Word indices for quads of Q4 blocks: the 4 x 16 nibble bytes (second source = the 16
/// bytes at `QUAD_TAIL_OFF`), and the scale / minimum of block k into lanes 4k..4k+3 / 4k.
static Q4_0_QUAD_NIB: Idx = Idx([
    1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, //
    19, 20, 21, 22, 23, 24, 25, 26, 32, 33, 34, 35, 36, 37, 38, 39,
]);
static Q4_1_QUAD_NIB: Idx = Idx([
    2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 14, 15, 16, 17, 18, 19, //
    22, 23, 24, 25, 26, 27, 28, 29, 32, 33, 34, 35, 36, 37, 38, 39,
]);
static Q4_0_QUAD_D: Idx = Idx([
    0, 0, 0, 0, 9, 9, 9, 9, 18, 18, 18, 18, 27, 27, 27, 27, //
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
]);
static Q4_1_QUAD_D: Idx = Idx([
    0, 0, 0, 0, 10, 10, 10, 10, 20, 20, 20, 20, 30, 30, 30, 30, //
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
]);
static Q4_1_QUAD_M: Idx = Idx([
    1, 0, 0, 0, 11, 0, 0, 0, 21, 0, 0, 0, 31, 0, 0, 0, //
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
]);
/// Lane k*4 (k = 0..3) of a 16-lane f32 vector built from 4 scalars in lanes 0..3.
#[repr(align(64))]
struct IdxD([u32; 16]);
static SPREAD4: IdxD = IdxD([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]);

/// Byte offset of the 16 bytes that complete a quad beyond its first 64 (word 32 onwards in
/// the permute indices above): Q4_0 quads are 72 bytes (words 28..35 at offset 56, so index
/// 32 + j is word 28 + j), Q4_1 quads 80 (words 32..39 at offset 64).
const fn quad_tail_off(dt: u8) -> usize {
    if dt == Q4_0 {
        56
    } else {
        64
    }
}

/// Four Q4 weight blocks of one row: `lo`/`hi` hold nibbles 0..15 / 16..31 of block k in
/// bytes 16k..16k+15, so a block's products land in i32 lanes 4k..4k+3.
#[derive(Clone, Copy)]
struct WQuad {
    lo: __m512i,
    hi: __m512i,
    d: __m512,
    m: __m512,
}

/// The quad at `p`: its first 64 bytes, and its 4 x 16 nibble bytes (block k's in bytes
/// 16k..16k + 15).
#[inline(always)]
unsafe fn quad_raw<const DT: u8>(p: *const u8) -> (__m512i, __m512i) {
    // Both loads lie inside the quad (72 or 80 bytes).
    let z0 = _mm512_loadu_si512(p.cast());
    let t = _mm512_castsi128_si512(_mm_loadu_si128(p.add(quad_tail_off(DT)).cast()));
    let nib = if DT == Q4_0 {
        &Q4_0_QUAD_NIB
    } else {
        &Q4_1_QUAD_NIB
    };
    (z0, _mm512_permutex2var_epi16(z0, idx(nib), t))
}

#[inline(always)]
unsafe fn load_w4<const DT: u8>(p: *const u8) -> WQuad {
    let (z0, q) = quad_raw::<DT>(p);
    let di = if DT == Q4_0 {
        &Q4_0_QUAD_D
    } else {
        &Q4_1_QUAD_D
    };
    let mask = _mm512_set1_epi8(0x0f);
    let lo = _mm512_and_si512(q, mask);
    let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(q), mask);
    let d = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(
        idx(di),
        z0,
    )));
    let m = if DT == Q4_1 {
        _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_maskz_permutexvar_epi16(
            0x1111,
            idx(&Q4_1_QUAD_M),
            z0,
        )))
    } else {
        _mm512_setzero_ps()
    };
    WQuad { lo, hi, d, m }
}

/// Four activation blocks of one token, arranged like [`WQuad`].
#[derive(Clone, Copy)]
struct AQuad {
    lo: __m512i,
    hi: __m512i,
    d: __m512,
    s: __m512,
    init: __m512i,
}

#[inline(always)]
unsafe fn load_a4<const DT: u8, const VNNI: bool>(x: *const BlockQ8A) -> AQuad {
    let (x0, x1, x2, x3) = (&*x, &*x.add(1), &*x.add(2), &*x.add(3));
    let y = [x0, x1, x2, x3].map(|b| b.qs.as_ptr());
    let u01 = _mm512_inserti64x4::<1>(
        _mm512_castsi256_si512(_mm256_loadu_si256(y[0].cast())),
        _mm256_loadu_si256(y[1].cast()),
    );
    let u23 = _mm512_inserti64x4::<1>(
        _mm512_castsi256_si512(_mm256_loadu_si256(y[2].cast())),
        _mm256_loadu_si256(y[3].cast()),
    );
    let lo = _mm512_shuffle_i64x2::<0b10_00_10_00>(u01, u23);
    let hi = _mm512_shuffle_i64x2::<0b11_01_11_01>(u01, u23);
    let dv = _mm_setr_ps(x0.d, x1.d, x2.d, x3.d);
    let d = _mm512_permutexvar_ps(
        _mm512_load_si512(SPREAD4.0.as_ptr().cast()),
        _mm512_castps128_ps512(dv),
    );
    let s = if DT == Q4_1 {
        let sv = _mm_setr_ps(x0.s, x1.s, x2.s, x3.s);
        _mm512_maskz_permutexvar_ps(
            0x1111,
            _mm512_load_si512(SPREAD4.0.as_ptr().cast()),
            _mm512_castps128_ps512(sv),
        )
    } else {
        _mm512_setzero_ps()
    };
    let init = if DT == Q4_0 {
        let e = _mm512_set1_epi8(8);
        let c = dpbusd::<VNNI>(dpbusd::<VNNI>(_mm512_setzero_si512(), e, lo), e, hi);
        _mm512_sub_epi32(_mm512_setzero_si512(), c)
    } else {
        _mm512_setzero_si512()
    };
    AQuad { lo, hi, d, s, init }
}

/// Exact i32 lanes of one quad product: block k in lanes 4k..4k+3.
#[inline(always)]
unsafe fn isum_lanes4<const VNNI: bool>(w: &WQuad, a: &AQuad) -> __m512i {
    dpbusd::<VNNI>(dpbusd::<VNNI>(a.init, w.lo, a.lo), w.hi, a.hi)
}

/// Four blocks (`b..b + 4`) of an `R` x `T` tile (Q4_0/Q4_1).
#[inline(always)]
unsafe fn step4<const DT: u8, const VNNI: bool, const R: usize, const T: usize>(
    w: *const u8,
    rb: usize,
    nb: usize,
    x: *const BlockQ8A,
    b: usize,
    acc: &mut [[__m512; T]; R],
) {
    let bb = block_bytes(DT);
    let z = _mm512_setzero_si512();
    let zf = _mm512_setzero_ps();
    let mut aq = [AQuad {
        lo: z,
        hi: z,
        d: zf,
        s: zf,
        init: z,
    }; T];
    for (t, a) in aq.iter_mut().enumerate() {
        *a = load_a4::<DT, VNNI>(x.add(t * nb + b));
    }
    for (r, acc_r) in acc.iter_mut().enumerate() {
        let wq = load_w4::<DT>(w.add(r * rb + b * bb));
        for (a, acc_rt) in aq.iter().zip(acc_r.iter_mut()) {
            let i = isum_lanes4::<VNNI>(&wq, a);
            *acc_rt = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), _mm512_mul_ps(wq.d, a.d), *acc_rt);
            if DT == Q4_1 {
                *acc_rt = _mm512_fmadd_ps(wq.m, a.s, *acc_rt);
            }
        }
    }
}

/// One pair of blocks (`b`, and `b + 1` when `two`) of an `R` x `T` tile.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn step<const DT: u8, const VNNI: bool, const R: usize, const T: usize>(
    w: *const u8,
    rb: usize,
    nb: usize,
    x: *const BlockQ8A,
    b: usize,
    two: bool,
    acc: &mut [[__m512; T]; R],
) {
    let bb = block_bytes(DT);
    let zero = APair {
        a: _mm512_setzero_si512(),
        d: _mm512_setzero_ps(),
        s: _mm512_setzero_ps(),
        init: _mm512_setzero_si512(),
    };
    let mut ap = [zero; T];
    for (t, a) in ap.iter_mut().enumerate() {
        *a = load_a::<DT, VNNI>(x.add(t * nb + b), two);
    }
    for (r, acc_r) in acc.iter_mut().enumerate() {
        let wp = load_w::<DT, VNNI>(w.add(r * rb + b * bb), two);
        for (a, acc_rt) in ap.iter().zip(acc_r.iter_mut()) {
            let i = isum_lanes::<DT, VNNI>(&wp, a);
            let scale = _mm512_mul_ps(wp.d, a.d);
            *acc_rt = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), scale, *acc_rt);
            if DT == Q4_1 {
                *acc_rt = _mm512_fmadd_ps(wp.m, a.s, *acc_rt);
            }
        }
    }
}

/// `R` rows x `T` tokens: `w` points at row 0 (rows `rb` bytes apart), `x` at token 0's
/// blocks (tokens `nb` blocks apart), `out` at (token 0, row 0).
#[inline(always)]
unsafe fn tile<const DT: u8, const VNNI: bool, const R: usize, const T: usize>(
    w: *const u8,
    rb: usize,
    nb: usize,
    x: *const BlockQ8A,
    out: *mut f32,
    out_stride: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); T]; R];
    let mut b = 0;
    if DT != Q8_0 {
        while b + 4 <= nb {
            step4::<DT, VNNI, R, T>(w, rb, nb, x, b, &mut acc);
            b += 4;
        }
    }
    while b + 2 <= nb {
        step::<DT, VNNI, R, T>(w, rb, nb, x, b, true, &mut acc);
        b += 2;
    }
    if b < nb {
        step::<DT, VNNI, R, T>(w, rb, nb, x, b, false, &mut acc);
    }
    for (r, acc_r) in acc.iter().enumerate() {
        for (t, acc_rt) in acc_r.iter().enumerate() {
            *out.add(t * out_stride + r) = hsum(*acc_rt);
        }
    }
}

/// Blocks per group of the transposed Q4 layout: i32 lane j of a product vector holds block j
/// of the group, so one float conversion and scale serve 16 blocks (instead of 4 in the quad
/// layout), and 8 integer products cover the group.
const GRP: usize = 16;
/// Widest rows the grouped path takes (4096 columns); wider rows take the quad path.
const GRP_MAX: usize = 8;
/// Tokens per tile of the grouped path: one row's decoded group meets this many tokens.
const GRP_TOK: usize = 8;

/// Word-permute indices that put the f16 at word `9b` (Q4_0) / `10b` (`10b + 1`: Q4_1's
/// minimum) of a quad's first 64 bytes into words `4b..4b + 3`; merged under the mask of
/// words `4b + i` for quad i, they give lane `4b + i` block `4i + b`'s value.
static Q4_0_GRP_D: Idx = Idx(grp_half_idx(9, 0));
static Q4_1_GRP_D: Idx = Idx(grp_half_idx(10, 0));
static Q4_1_GRP_M: Idx = Idx(grp_half_idx(10, 1));

const fn grp_half_idx(bw: u16, off: u16) -> [u16; 32] {
    let mut ix = [0; 32];
    let mut l = 0;
    while l < 16 {
        ix[l] = bw * (l / 4) as u16 + off;
        l += 1;
    }
    ix
}

/// 16 Q4 weight blocks of one row, transposed: `q[g]` lane L holds weight bytes (unsigned
/// nibbles) `4g..4g + 3` of block `4 * (L % 4) + L / 4` of the group, and `d`/`m` lane L that
/// block's scale / minimum. (That block order is what a 4 x 4 dword transpose of the four
/// quads gives with in-lane unpacks; the activations are arranged to match.)
#[derive(Clone, Copy)]
struct WGroup {
    q: [__m512i; 8],
    d: __m512,
    m: __m512,
}

/// The group's block that lane `l` holds (see [`WGroup`]).
const fn grp_block(l: usize) -> usize {
    4 * (l % 4) + l / 4
}

/// In each 128-bit lane, the 4 x 4 transpose of the dwords of `r`: dword i of lane h of
/// `out[k]` is dword k of lane h of `r[i]` (in-lane unpacks only).
#[inline(always)]
unsafe fn transpose4(r: [__m512i; 4]) -> [__m512i; 4] {
    let (u0, u1) = (
        _mm512_unpacklo_epi32(r[0], r[1]),
        _mm512_unpackhi_epi32(r[0], r[1]),
    );
    let (u2, u3) = (
        _mm512_unpacklo_epi32(r[2], r[3]),
        _mm512_unpackhi_epi32(r[2], r[3]),
    );
    [
        _mm512_unpacklo_epi64(u0, u2),
        _mm512_unpackhi_epi64(u0, u2),
        _mm512_unpacklo_epi64(u1, u3),
        _mm512_unpackhi_epi64(u1, u3),
    ]
}

/// The f16 of every block of a group that `ix` selects (see [`Q4_0_GRP_D`]), in lane order.
#[inline(always)]
unsafe fn grp_halves(quads: &[(__m512i, __m512i); 4], ix: &Idx) -> __m512 {
    let mut h = _mm512_setzero_si512();
    for (i, (z0, _)) in quads.iter().enumerate() {
        h = _mm512_mask_permutexvar_epi16(h, 0x1111 << i, idx(ix), *z0);
    }
    _mm512_cvtph_ps(_mm512_castsi512_si256(h))
}

#[inline(always)]
unsafe fn load_wg<const DT: u8>(p: *const u8) -> WGroup {
    let qb = 4 * block_bytes(DT);
    let quads = [
        quad_raw::<DT>(p),
        quad_raw::<DT>(p.add(qb)),
        quad_raw::<DT>(p.add(2 * qb)),
        quad_raw::<DT>(p.add(3 * qb)),
    ];
    // 128-bit lane b of quad i's nibbles is block 4i + b (dwords k = bytes 4k..4k + 3); the
    // unpacks transpose each lane's 4 x 4 dwords, so dwords[k] lane 4b + i = dword k of
    // block 4i + b.
    let dwords = transpose4([quads[0].1, quads[1].1, quads[2].1, quads[3].1]);
    let mask = _mm512_set1_epi8(0x0f);
    let mut q = [_mm512_setzero_si512(); 8];
    for (k, dk) in dwords.into_iter().enumerate() {
        q[k] = _mm512_and_si512(dk, mask);
        q[k + 4] = _mm512_and_si512(_mm512_srli_epi16::<4>(dk), mask);
    }
    let d = grp_halves(&quads, if DT == Q4_0 { &Q4_0_GRP_D } else { &Q4_1_GRP_D });
    let m = if DT == Q4_1 {
        grp_halves(&quads, &Q4_1_GRP_M)
    } else {
        _mm512_setzero_ps()
    };
    WGroup { q, d, m }
}

/// The block of each lane of a group, as i32 lanes (see [`grp_block`]).
static GRP_BLOCKS: IdxD = IdxD({
    let mut b = [0; 16];
    let mut l = 0;
    while l < 16 {
        b[l] = grp_block(l) as u32;
        l += 1;
    }
    b
});

/// 16 activation blocks of one token, transposed like [`WGroup`]; `init` removes the Q4_0
/// weight offset (`-8 * sum` of each block).
#[derive(Clone, Copy)]
struct AGroup {
    a: [__m512i; 8],
    d: __m512,
    s: __m512,
    init: __m512i,
}

#[inline(always)]
unsafe fn load_ag<const DT: u8, const VNNI: bool>(x: *const BlockQ8A) -> AGroup {
    const _: () = assert!(size_of::<BlockQ8A>() == 40);
    // Dword j * 10 + i of the 16 blocks is dword i of block j (d, s, then 8 dwords of qs);
    // lane L gathers block grp_block(L).
    let base = x.cast::<i32>();
    let j10 = _mm512_mullo_epi32(
        _mm512_load_si512(GRP_BLOCKS.0.as_ptr().cast()),
        _mm512_set1_epi32(10),
    );
    let mut a = [_mm512_setzero_si512(); 8];
    for (g, ag) in a.iter_mut().enumerate() {
        let ix = _mm512_add_epi32(j10, _mm512_set1_epi32(2 + g as i32));
        *ag = _mm512_i32gather_epi32::<4>(ix, base.cast());
    }
    let d = _mm512_castsi512_ps(_mm512_i32gather_epi32::<4>(j10, base.cast()));
    let s = if DT == Q4_1 {
        let ix = _mm512_add_epi32(j10, _mm512_set1_epi32(1));
        _mm512_castsi512_ps(_mm512_i32gather_epi32::<4>(ix, base.cast()))
    } else {
        _mm512_setzero_ps()
    };
    let init = if DT == Q4_0 {
        let e = _mm512_set1_epi8(8);
        let mut c = _mm512_setzero_si512();
        for &ag in &a {
            c = dpbusd::<VNNI>(c, e, ag);
        }
        _mm512_sub_epi32(_mm512_setzero_si512(), c)
    } else {
        _mm512_setzero_si512()
    };
    AGroup { a, d, s, init }
}

/// Exact i32 lanes of one group product: block `grp_block(L)` in lane L.
#[inline(always)]
unsafe fn isum_group<const VNNI: bool>(w: &WGroup, a: &AGroup) -> __m512i {
    if VNNI {
        let mut i = a.init;
        for g in 0..8 {
            i = dpbusd::<true>(i, w.q[g], a.a[g]);
        }
        return i;
    }
    // Each `vpmaddubsw` lane is a nibble (<= 15) times two activations (|a| <= 127), so at
    // most 3810 in magnitude: all 8 sum exactly in i16 (<= 30480), and one `vpmaddwd` widens.
    let mut s16 = _mm512_setzero_si512();
    for g in 0..8 {
        s16 = _mm512_add_epi16(s16, _mm512_maddubs_epi16(w.q[g], a.a[g]));
    }
    _mm512_add_epi32(a.init, _mm512_madd_epi16(s16, _mm512_set1_epi16(1)))
}

/// How a row of `nb` blocks splits: `ng` groups of 16, then `nq` (at most 3) quads, then a
/// pair and/or a single block.
#[derive(Clone, Copy)]
struct Shape {
    ng: usize,
    nq: usize,
    pair: bool,
    single: bool,
}

impl Shape {
    fn new(nb: usize) -> Shape {
        let ng = nb / GRP;
        let rest = nb - GRP * ng;
        Shape {
            ng,
            nq: rest / 4,
            pair: rest % 4 >= 2,
            single: rest % 2 == 1,
        }
    }
    /// First block of the tail quads.
    fn quads(self) -> usize {
        GRP * self.ng
    }
    /// First block of the tail pair.
    fn pairs(self) -> usize {
        GRP * self.ng + 4 * self.nq
    }
}

/// The arranged activations of one token tile, for a row [`Shape`]: token t's group g at
/// `g[t * ng + g]`, its tail quads at `q[t * 3..]`, its tail pair at `p[t * 2]` and single
/// block at `p[t * 2 + 1]`. Entries outside the shape stay uninitialized.
struct Tiles {
    g: [MaybeUninit<AGroup>; GRP_TOK * GRP_MAX],
    q: [MaybeUninit<AQuad>; GRP_TOK * 3],
    p: [MaybeUninit<APair>; GRP_TOK * 2],
}

/// One row (at `w`) against the first `T` tokens of `tl`, arranged for shape `sh`. Every
/// output's lanes see the same sequence of block products and are summed by [`hsum`]'s order,
/// whatever `T`.
#[inline(always)]
unsafe fn tile_grouped<const DT: u8, const VNNI: bool, const T: usize>(
    w: *const u8,
    sh: Shape,
    tl: &Tiles,
    out: *mut f32,
    out_stride: usize,
) {
    let bb = block_bytes(DT);
    let mut acc = [_mm512_setzero_ps(); T];
    // SAFETY (the `assume_init_ref`s below): `Q4Groups::arrange` wrote every entry of the
    // tile's first T tokens that shape `sh` uses, which are exactly the entries read here.
    for g in 0..sh.ng {
        let wg = load_wg::<DT>(w.add(GRP * g * bb));
        for (t, acc_t) in acc.iter_mut().enumerate() {
            let a = tl.g[t * sh.ng + g].assume_init_ref();
            let i = isum_group::<VNNI>(&wg, a);
            *acc_t = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), _mm512_mul_ps(wg.d, a.d), *acc_t);
            if DT == Q4_1 {
                *acc_t = _mm512_fmadd_ps(wg.m, a.s, *acc_t);
            }
        }
    }
    // Lanes are summed only at the end, so the tail blocks may use the other layouts.
    for qi in 0..sh.nq {
        let wq = load_w4::<DT>(w.add((sh.quads() + 4 * qi) * bb));
        for (t, acc_t) in acc.iter_mut().enumerate() {
            let a = tl.q[t * 3 + qi].assume_init_ref();
            let i = isum_lanes4::<VNNI>(&wq, a);
            *acc_t = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), _mm512_mul_ps(wq.d, a.d), *acc_t);
            if DT == Q4_1 {
                *acc_t = _mm512_fmadd_ps(wq.m, a.s, *acc_t);
            }
        }
    }
    let tail = [
        (sh.pair, true, 0, sh.pairs()),
        (sh.single, false, 1, sh.pairs() + 2 * usize::from(sh.pair)),
    ];
    for (used, two, k, b) in tail {
        if used {
            let wp = load_w::<DT, VNNI>(w.add(b * bb), two);
            for (t, acc_t) in acc.iter_mut().enumerate() {
                let a = tl.p[t * 2 + k].assume_init_ref();
                let i = isum_lanes::<DT, VNNI>(&wp, a);
                *acc_t = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), _mm512_mul_ps(wp.d, a.d), *acc_t);
                if DT == Q4_1 {
                    *acc_t = _mm512_fmadd_ps(wp.m, a.s, *acc_t);
                }
            }
        }
    }
    store_sums(&acc, out, out_stride);
}

/// The sum of the 16 lanes in one fixed order: halves (lanes i + 8), then quarters (i + 4),
/// then pairs (i + 2), then the last two. Every reduction of an output here uses this order
/// (or [`store_sums`]'s tree, which adds the same pairs), so results never depend on tiling.
#[inline(always)]
unsafe fn hsum(v: __m512) -> f32 {
    let h = _mm256_add_ps(
        _mm512_castps512_ps256(v),
        _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v))),
    );
    let q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h));
    let p = _mm_add_ps(q, _mm_movehl_ps(q, q));
    _mm_cvtss_f32(_mm_add_ss(p, _mm_movehdup_ps(p)))
}

/// `out[t * out_stride] = hsum(acc[t])`; eight accumulators are summed together by a
/// transposing tree (22 vector operations instead of 8 separate reductions) that adds the
/// same pairs of lanes in the same order as [`hsum`], so the bits are the same.
#[inline(always)]
unsafe fn store_sums<const T: usize>(acc: &[__m512; T], out: *mut f32, out_stride: usize) {
    if T != 8 {
        for (t, acc_t) in acc.iter().enumerate() {
            *out.add(t * out_stride) = hsum(*acc_t);
        }
        return;
    }
    // Halve twice by 128-bit chunks: w[k] chunk c holds 4 partial sums of acc[4k + c].
    let mut u = [_mm512_setzero_ps(); 4];
    for (i, ui) in u.iter_mut().enumerate() {
        let (a, b) = (acc[2 * i], acc[2 * i + 1]);
        *ui = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b01_00_01_00>(a, b),
            _mm512_shuffle_f32x4::<0b11_10_11_10>(a, b),
        );
    }
    let mut w = [_mm512_setzero_ps(); 2];
    for (k, wk) in w.iter_mut().enumerate() {
        let (a, b) = (u[2 * k], u[2 * k + 1]);
        *wk = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b10_00_10_00>(a, b),
            _mm512_shuffle_f32x4::<0b11_01_11_01>(a, b),
        );
    }
    // Within each chunk c: lane 0 = total of acc[c], lane 1 = total of acc[4 + c].
    let x = _mm512_add_ps(
        _mm512_unpacklo_ps(w[0], w[1]),
        _mm512_unpackhi_ps(w[0], w[1]),
    );
    let y = _mm512_add_ps(x, _mm512_permute_ps::<0b01_00_11_10>(x));
    let mut sums = [0.0f32; 16];
    _mm512_storeu_ps(sums.as_mut_ptr(), y);
    for c in 0..4 {
        *out.add(c * out_stride) = sums[4 * c];
        *out.add((c + 4) * out_stride) = sums[4 * c + 1];
    }
}

/// The operands of the row-tile path (rows wider than the grouped paths take), by tile:
/// row r's weights at `w + r * rb` (`nb` blocks), token t's blocks at `x + t * nb`, output
/// (t, r) at `out + t * out_stride + r`.
struct RowTiles<const DT: u8, const VNNI: bool> {
    w: *const u8,
    rb: usize,
    nb: usize,
    x: *const BlockQ8A,
    out: *mut f32,
    out_stride: usize,
}

impl<const DT: u8, const VNNI: bool> Tiler for RowTiles<DT, VNNI> {
    #[inline(always)]
    unsafe fn tile<const R: usize, const T: usize>(&self, r: usize, t: usize) {
        tile::<DT, VNNI, R, T>(
            self.w.add(r * self.rb),
            self.rb,
            self.nb,
            self.x.add(t * self.nb),
            self.out.add(t * self.out_stride + r),
            self.out_stride,
        )
    }
}

/// Blocks per octet of the transposed Q8_0 layout: four registers of two blocks each are
/// transposed by dwords with in-lane unpacks, so lane L holds half of block `oct_block(L)`
/// (dwords `4 * (L / 4 % 2) + k` of it in product k), and one conversion and scale serve 8
/// blocks instead of 2.
const OCT: usize = 8;
/// Widest Q8_0 rows the octet path takes (4096 columns).
const OCT_MAX: usize = 16;

const fn oct_block(l: usize) -> usize {
    2 * (l % 4) + l / 8
}

/// The dword of a block (`d`, `s`, then the 8 dwords of values) that lane L of octet product
/// `k` reads, plus `10 * oct_block(L)`: gather indices into an array of [`BlockQ8A`].
static OCT_ACT: [IdxD; 4] = [oct_act(0), oct_act(1), oct_act(2), oct_act(3)];
/// `10 * oct_block(L)` (the scale of lane L's block) and `34 * oct_block(L)` (byte offset of
/// a Q8_0 weight block).
static OCT_ACT_D: IdxD = oct_scaled(10);
static OCT_W_D: IdxD = oct_scaled(Q8_0_BYTES as u32);

const fn oct_act(k: u32) -> IdxD {
    let mut ix = [0; 16];
    let mut l = 0;
    while l < 16 {
        ix[l] = 10 * oct_block(l) as u32 + 2 + 4 * ((l as u32 / 4) % 2) + k;
        l += 1;
    }
    IdxD(ix)
}

const fn oct_scaled(m: u32) -> IdxD {
    let mut ix = [0; 16];
    let mut l = 0;
    while l < 16 {
        ix[l] = m * oct_block(l) as u32;
        l += 1;
    }
    IdxD(ix)
}

/// 8 Q8_0 weight blocks of one row, transposed (see [`OCT`]): `u[k]` the unsigned operand
/// (`w + 128` with VNNI, `|w|` without), `neg[k]` the bytes where `w < 0` (without VNNI),
/// `d` lane L's block scale.
#[derive(Clone, Copy)]
struct WOct {
    u: [__m512i; 4],
    neg: [__mmask64; 4],
    d: __m512,
}

#[inline(always)]
unsafe fn load_woct<const VNNI: bool>(p: *const u8) -> WOct {
    let bb = Q8_0_BYTES;
    let mut pz = [_mm512_setzero_si512(); 4];
    for (i, pi) in pz.iter_mut().enumerate() {
        let lo = _mm256_loadu_si256(p.add(2 * i * bb + 2).cast());
        let hi = _mm256_loadu_si256(p.add((2 * i + 1) * bb + 2).cast());
        *pi = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
    }
    let w = transpose4(pz);
    let mut u = [_mm512_setzero_si512(); 4];
    let mut neg = [0; 4];
    for k in 0..4 {
        if VNNI {
            u[k] = _mm512_xor_si512(w[k], _mm512_set1_epi8(-128));
        } else {
            neg[k] = _mm512_movepi8_mask(w[k]);
            u[k] = _mm512_abs_epi8(w[k]);
        }
    }
    // The dword at each block's start holds its f16 scale in the low half.
    let g = _mm512_i32gather_epi32::<1>(_mm512_load_si512(OCT_W_D.0.as_ptr().cast()), p.cast());
    let d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(g));
    WOct { u, neg, d }
}

/// 8 activation blocks of one token, transposed like [`WOct`]; `init` removes the VNNI
/// weight offset (`-128` times each lane's activation sum).
#[derive(Clone, Copy)]
struct AOct {
    a: [__m512i; 4],
    d: __m512,
    init: __m512i,
}

#[inline(always)]
unsafe fn load_aoct<const VNNI: bool>(x: *const BlockQ8A) -> AOct {
    let base = x.cast::<i32>();
    let mut a = [_mm512_setzero_si512(); 4];
    for (k, ak) in a.iter_mut().enumerate() {
        *ak = _mm512_i32gather_epi32::<4>(
            _mm512_load_si512(OCT_ACT[k].0.as_ptr().cast()),
            base.cast(),
        );
    }
    let d = _mm512_castsi512_ps(_mm512_i32gather_epi32::<4>(
        _mm512_load_si512(OCT_ACT_D.0.as_ptr().cast()),
        base.cast(),
    ));
    let init = if VNNI {
        let mut c = _mm512_setzero_si512();
        for &ak in &a {
            c = dpbusd::<true>(c, _mm512_set1_epi8(-128), ak);
        }
        _mm512_sub_epi32(_mm512_setzero_si512(), c)
    } else {
        _mm512_setzero_si512()
    };
    AOct { a, d, init }
}

/// Exact i32 lanes of one octet product: half of block `oct_block(L)` in lane L.
#[inline(always)]
unsafe fn isum_oct<const VNNI: bool>(w: &WOct, a: &AOct) -> __m512i {
    let mut i = a.init;
    for k in 0..4 {
        i = if VNNI {
            dpbusd::<true>(i, w.u[k], a.a[k])
        } else {
            let sa = _mm512_mask_sub_epi8(a.a[k], w.neg[k], _mm512_setzero_si512(), a.a[k]);
            dpbusd::<false>(i, w.u[k], sa)
        };
    }
    i
}

/// Arranged Q8_0 activations of one token tile: token t's octet o at `o[t * OCT_MAX + o]`,
/// its tail pairs at `p[t * 4 + k]` (the last may be a single block). Only the entries of
/// the tile's shape are written.
struct OctTiles {
    o: [MaybeUninit<AOct>; GRP_TOK * OCT_MAX],
    p: [MaybeUninit<APair>; GRP_TOK * 4],
}

/// One Q8_0 row against the first `T` tokens of `tl`.
#[inline(always)]
unsafe fn tile_q8_octets<const VNNI: bool, const T: usize>(
    w: *const u8,
    nb: usize,
    tl: &OctTiles,
    out: *mut f32,
    out_stride: usize,
) {
    let bb = Q8_0_BYTES;
    let no = nb / OCT;
    let mut acc = [_mm512_setzero_ps(); T];
    // SAFETY (the `assume_init_ref`s below): `Q8Octets::arrange` wrote the octets and tail
    // pairs of the tile's first T tokens for this row width, exactly the entries read here.
    for o in 0..no {
        let wo = load_woct::<VNNI>(w.add(OCT * o * bb));
        for (t, acc_t) in acc.iter_mut().enumerate() {
            let a = tl.o[t * OCT_MAX + o].assume_init_ref();
            let i = isum_oct::<VNNI>(&wo, a);
            *acc_t = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), _mm512_mul_ps(wo.d, a.d), *acc_t);
        }
    }
    // Lanes are summed only at the end, so the tail may use the pair layout.
    let mut b = OCT * no;
    let mut k = 0;
    while b < nb {
        let two = b + 1 < nb;
        let wp = load_w::<Q8_0, VNNI>(w.add(b * bb), two);
        for (t, acc_t) in acc.iter_mut().enumerate() {
            let a = tl.p[t * 4 + k].assume_init_ref();
            let i = isum_lanes::<Q8_0, VNNI>(&wp, a);
            *acc_t = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), _mm512_mul_ps(wp.d, a.d), *acc_t);
        }
        b += 2;
        k += 1;
    }
    store_sums(&acc, out, out_stride);
}

/// A transposed row layout of the tiled paths: how a token's activations are arranged for
/// it, and how one row meets a tile of arranged tokens.
trait Layout {
    /// Arranged activations of one tile of up to [`GRP_TOK`] tokens, left uninitialised
    /// except for what [`Layout::arrange`] writes.
    type Tiles;
    fn tiles() -> Self::Tiles;
    /// Arranges token `tt` of the tile, whose `nb` blocks start at `x`.
    unsafe fn arrange(tiles: &mut Self::Tiles, tt: usize, x: *const BlockQ8A, nb: usize);
    /// One row (at `w`, `nb` blocks) against the tile's first `T` tokens, all arranged.
    unsafe fn row<const T: usize>(
        w: *const u8,
        nb: usize,
        tiles: &Self::Tiles,
        out: *mut f32,
        out_stride: usize,
    );
}

/// Q4_0/Q4_1 in groups of 16, then quads, a pair and a single block.
struct Q4Groups<const DT: u8, const VNNI: bool>;
/// Q8_0 in octets, then pairs and a single block.
struct Q8Octets<const VNNI: bool>;

impl<const DT: u8, const VNNI: bool> Layout for Q4Groups<DT, VNNI> {
    type Tiles = Tiles;
    #[inline(always)]
    fn tiles() -> Tiles {
        Tiles {
            g: [const { MaybeUninit::uninit() }; GRP_TOK * GRP_MAX],
            q: [const { MaybeUninit::uninit() }; GRP_TOK * 3],
            p: [const { MaybeUninit::uninit() }; GRP_TOK * 2],
        }
    }
    #[inline(always)]
    unsafe fn arrange(tiles: &mut Tiles, tt: usize, xt: *const BlockQ8A, nb: usize) {
        let sh = Shape::new(nb);
        for gi in 0..sh.ng {
            tiles.g[tt * sh.ng + gi].write(load_ag::<DT, VNNI>(xt.add(GRP * gi)));
        }
        for qi in 0..sh.nq {
            tiles.q[tt * 3 + qi].write(load_a4::<DT, VNNI>(xt.add(sh.quads() + 4 * qi)));
        }
        if sh.pair {
            tiles.p[tt * 2].write(load_a::<DT, VNNI>(xt.add(sh.pairs()), true));
        }
        if sh.single {
            tiles.p[tt * 2 + 1].write(load_a::<DT, VNNI>(xt.add(nb - 1), false));
        }
    }
    #[inline(always)]
    unsafe fn row<const T: usize>(
        w: *const u8,
        nb: usize,
        tiles: &Tiles,
        out: *mut f32,
        out_stride: usize,
    ) {
        tile_grouped::<DT, VNNI, T>(w, Shape::new(nb), tiles, out, out_stride)
    }
}

impl<const VNNI: bool> Layout for Q8Octets<VNNI> {
    type Tiles = OctTiles;
    #[inline(always)]
    fn tiles() -> OctTiles {
        OctTiles {
            o: [const { MaybeUninit::uninit() }; GRP_TOK * OCT_MAX],
            p: [const { MaybeUninit::uninit() }; GRP_TOK * 4],
        }
    }
    #[inline(always)]
    unsafe fn arrange(tiles: &mut OctTiles, tt: usize, xt: *const BlockQ8A, nb: usize) {
        let no = nb / OCT;
        for oi in 0..no {
            tiles.o[tt * OCT_MAX + oi].write(load_aoct::<VNNI>(xt.add(OCT * oi)));
        }
        let mut b = OCT * no;
        let mut k = 0;
        while b < nb {
            let two = b + 1 < nb;
            tiles.p[tt * 4 + k].write(load_a::<Q8_0, VNNI>(xt.add(b), two));
            b += 2;
            k += 1;
        }
    }
    #[inline(always)]
    unsafe fn row<const T: usize>(
        w: *const u8,
        nb: usize,
        tiles: &OctTiles,
        out: *mut f32,
        out_stride: usize,
    ) {
        tile_q8_octets::<VNNI, T>(w, nb, tiles, out, out_stride)
    }
}

/// The matmul in layout `L`, decode and prefill alike (so an output's bits never depend on
/// the batch): activations are arranged once per tile of up to [`GRP_TOK`] tokens (8, 4, 2
/// or 1), then every row of `rows` meets the tile.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn matmul_tiled<L: Layout>(
    w: *const u8,
    rb: usize,
    nb: usize,
    rows: Range<usize>,
    x: *const BlockQ8A,
    n_tok: usize,
    out: *mut f32,
    out_stride: usize,
) {
    let mut tiles = L::tiles();
    let mut t = 0;
    while t < n_tok {
        let tn = match n_tok - t {
            8.. => 8,
            4..=7 => 4,
            2..=3 => 2,
            _ => 1,
        };
        for tt in 0..tn {
            L::arrange(&mut tiles, tt, x.add((t + tt) * nb), nb);
        }
        let ot = out.add(t * out_stride);
        for r in rows.clone() {
            let (wr, or) = (w.add(r * rb), ot.add(r));
            match tn {
                8 => L::row::<8>(wr, nb, &tiles, or, out_stride),
                4 => L::row::<4>(wr, nb, &tiles, or, out_stride),
                2 => L::row::<2>(wr, nb, &tiles, or, out_stride),
                _ => L::row::<1>(wr, nb, &tiles, or, out_stride),
            }
        }
        t += tn;
    }
}

/// The q8a matmul (see `MatmulQ8aFn`): rows of up to 4096 columns by the grouped (Q4) or
/// octet (Q8_0) path; wider rows by row tiles of 8 (decode) or 4, over tokens in tiles of 4.
#[inline(always)]
pub(super) unsafe fn matmul_q8a<const DT: u8, const VNNI: bool>(
    w: &[u8],
    cols: usize,
    rows: Range<usize>,
    xq: &[BlockQ8A],
    n_tok: usize,
    out: *mut f32,
    out_stride: usize,
) {
    let nb = cols / QK;
    let rb = nb * block_bytes(DT);
    let (w, x) = (w.as_ptr(), xq.as_ptr());
    if DT != Q8_0 && nb / GRP <= GRP_MAX {
        matmul_tiled::<Q4Groups<DT, VNNI>>(w, rb, nb, rows, x, n_tok, out, out_stride);
        return;
    }
    if DT == Q8_0 && nb / OCT <= OCT_MAX {
        matmul_tiled::<Q8Octets<VNNI>>(w, rb, nb, rows, x, n_tok, out, out_stride);
        return;
    }
    let tiles = RowTiles::<DT, VNNI> {
        w,
        rb,
        nb,
        x,
        out,
        out_stride,
    };
    if n_tok == 1 {
        // Decode: 8 rows share each activation load.
        drive::<_, 8, 1>(&tiles, rows, n_tok);
    } else {
        drive::<_, 4, 4>(&tiles, rows, n_tok);
    }
}

/// Per-block exact sums of one row (test hook), with the matmul's own primitives.
#[inline(always)]
pub(super) unsafe fn isums<const DT: u8, const VNNI: bool>(
    w_row: &[u8],
    xq: &[BlockQ8A],
    out: &mut [i32],
) {
    let nb = xq.len();
    let bb = block_bytes(DT);
    let mut b = 0;
    if DT == Q8_0 {
        while b + OCT <= nb {
            let wo = load_woct::<VNNI>(w_row.as_ptr().add(b * bb));
            let ao = load_aoct::<VNNI>(xq.as_ptr().add(b));
            let mut lanes = [0i32; 16];
            _mm512_storeu_si512(lanes.as_mut_ptr().cast(), isum_oct::<VNNI>(&wo, &ao));
            out[b..b + OCT].fill(0);
            for (l, v) in lanes.into_iter().enumerate() {
                out[b + oct_block(l)] += v;
            }
            b += OCT;
        }
    }
    if DT != Q8_0 {
        while b + GRP <= nb {
            let wg = load_wg::<DT>(w_row.as_ptr().add(b * bb));
            let ag = load_ag::<DT, VNNI>(xq.as_ptr().add(b));
            let mut lanes = [0i32; GRP];
            _mm512_storeu_si512(lanes.as_mut_ptr().cast(), isum_group::<VNNI>(&wg, &ag));
            for (l, v) in lanes.into_iter().enumerate() {
                out[b + grp_block(l)] = v;
            }
            b += GRP;
        }
        while b + 4 <= nb {
            let wq = load_w4::<DT>(w_row.as_ptr().add(b * bb));
            let aq = load_a4::<DT, VNNI>(xq.as_ptr().add(b));
            let i = isum_lanes4::<VNNI>(&wq, &aq);
            for k in 0..4 {
                out[b + k] = _mm512_mask_reduce_add_epi32(0xf << (4 * k), i);
            }
            b += 4;
        }
    }
    while b < nb {
        let two = b + 1 < nb;
        let wp = load_w::<DT, VNNI>(w_row.as_ptr().add(b * bb), two);
        let ap = load_a::<DT, VNNI>(xq.as_ptr().add(b), two);
        let i = isum_lanes::<DT, VNNI>(&wp, &ap);
        out[b] = _mm512_mask_reduce_add_epi32(0x00ff, i);
        if two {
            out[b + 1] = _mm512_mask_reduce_add_epi32(0xff00, i);
        }
        b += 2;
    }
}

/// Quantizes activations; bit-identical to the scalar rule (`vcvtps2dq` with embedded
/// round-to-nearest-even, independent of MXCSR).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(super) unsafe fn quantize_act(x: &[f32], out: &mut [BlockQ8A]) {
    let abs_mask = _mm512_set1_epi32(0x7fff_ffff);
    for (xb, o) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let v0 = _mm512_loadu_ps(xb.as_ptr());
        let v1 = _mm512_loadu_ps(xb.as_ptr().add(16));
        // Integer max of the magnitudes' bits: a NaN is the largest (scalar::abs_bits).
        let a0 = _mm512_and_si512(_mm512_castps_si512(v0), abs_mask);
        let a1 = _mm512_and_si512(_mm512_castps_si512(v1), abs_mask);
        let amax = f32::from_bits(_mm512_reduce_max_epi32(_mm512_max_epi32(a0, a1)) as u32);
        let (d, id) = scalar::act_scale(amax);
        if d.is_nan() {
            *o = scalar::NON_FINITE_BLOCK;
            continue;
        }
        let idv = _mm512_set1_ps(id);
        let q0 = _mm512_cvt_roundps_epi32::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(v0, idv),
        );
        let q1 = _mm512_cvt_roundps_epi32::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(v1, idv),
        );
        let sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
        _mm_storeu_si128(o.qs.as_mut_ptr().cast(), _mm512_cvtsepi32_epi8(q0));
        _mm_storeu_si128(o.qs.as_mut_ptr().add(16).cast(), _mm512_cvtsepi32_epi8(q1));
        o.d = d;
        o.s = d * sum as f32;
    }
}

/// Loads 16 weights (F32 or F16 bytes) at element `i`: all 16 when `FULL` (a plain load:
/// masked loads that cross a page are slow on some CPUs), else the lanes in `m`.
#[inline(always)]
unsafe fn load_wf<const F16: bool, const FULL: bool>(
    p: *const u8,
    i: usize,
    m: __mmask16,
) -> __m512 {
    match (F16, FULL) {
        (true, true) => _mm512_cvtph_ps(_mm256_loadu_si256(p.add(2 * i).cast())),
        (true, false) => _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p.add(2 * i).cast())),
        (false, true) => _mm512_loadu_ps(p.add(4 * i).cast()),
        (false, false) => _mm512_maskz_loadu_ps(m, p.add(4 * i).cast()),
    }
}

/// Columns `i..i + 16` (the lanes in `m` unless `FULL`) of an F32/F16 tile.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn f_chunk<const F16: bool, const FULL: bool, const R: usize, const T: usize>(
    w: *const u8,
    rb: usize,
    cols: usize,
    x: *const f32,
    i: usize,
    m: __mmask16,
    acc: &mut [[__m512; T]; R],
) {
    let mut xv = [_mm512_setzero_ps(); T];
    for (t, v) in xv.iter_mut().enumerate() {
        let p = x.add(t * cols + i);
        *v = if FULL {
            _mm512_loadu_ps(p)
        } else {
            _mm512_maskz_loadu_ps(m, p)
        };
    }
    for (r, acc_r) in acc.iter_mut().enumerate() {
        let wv = load_wf::<F16, FULL>(w.add(r * rb), i, m);
        for (v, acc_rt) in xv.iter().zip(acc_r.iter_mut()) {
            *acc_rt = _mm512_fmadd_ps(wv, *v, *acc_rt);
        }
    }
}

/// `R` rows x `T` tokens of an F32/F16-weight matmul with f32 activations.
#[inline(always)]
unsafe fn tile_f<const F16: bool, const R: usize, const T: usize>(
    w: *const u8,
    rb: usize,
    cols: usize,
    x: *const f32,
    out: *mut f32,
    out_stride: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); T]; R];
    let mut i = 0;
    while i + 16 <= cols {
        f_chunk::<F16, true, R, T>(w, rb, cols, x, i, !0, &mut acc);
        i += 16;
    }
    if i < cols {
        f_chunk::<F16, false, R, T>(w, rb, cols, x, i, (1u16 << (cols - i)) - 1, &mut acc);
    }
    for (r, acc_r) in acc.iter().enumerate() {
        for (t, acc_rt) in acc_r.iter().enumerate() {
            *out.add(t * out_stride + r) = hsum(*acc_rt);
        }
    }
}

#[inline(always)]
unsafe fn matmul_f<const F16: bool>(
    w: &[u8],
    cols: usize,
    rows: Range<usize>,
    x: &[f32],
    n_tok: usize,
    out: *mut f32,
    out_stride: usize,
) {
    let rb = cols * if F16 { 2 } else { 4 };
    let ops = FOperands::new(w, rb, cols, x, out, out_stride);
    drive::<_, 4, 4>(&FTile::<F16>(ops), rows, n_tok)
}

/// [`tile_f`] as a [`Tiler`].
struct FTile<const F16: bool>(FOperands);

impl<const F16: bool> Tiler for FTile<F16> {
    #[inline(always)]
    unsafe fn tile<const R: usize, const T: usize>(&self, r: usize, t: usize) {
        let (w, x, out) = self.0.at(r, t);
        tile_f::<F16, R, T>(w, self.0.rb, self.0.cols, x, out, self.0.out_stride)
    }
}

/// The f16 at `p` (unaligned) as f32.
#[inline(always)]
unsafe fn f16_at(p: *const u8) -> f32 {
    let bits = u16::from_le_bytes([*p, *p.add(1)]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
}

/// One quantized block dequantized to two 16-lane f32 vectors (elements 0..15, 16..31).
#[inline(always)]
unsafe fn deq_block<const DT: u8>(p: *const u8) -> (__m512, __m512) {
    let d = _mm512_set1_ps(f16_at(p));
    match DT {
        Q8_0 => {
            let q0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p.add(2).cast())));
            let q1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p.add(18).cast())));
            (_mm512_mul_ps(d, q0), _mm512_mul_ps(d, q1))
        }
        _ => {
            let q = _mm_loadu_si128(p.add(if DT == Q4_0 { 2 } else { 4 }).cast());
            let lo = _mm_and_si128(q, _mm_set1_epi8(0x0f));
            let hi = _mm_and_si128(_mm_srli_epi16::<4>(q), _mm_set1_epi8(0x0f));
            let q0 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(lo));
            let q1 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(hi));
            if DT == Q4_0 {
                let e = _mm512_set1_ps(8.0);
                (
                    _mm512_mul_ps(d, _mm512_sub_ps(q0, e)),
                    _mm512_mul_ps(d, _mm512_sub_ps(q1, e)),
                )
            } else {
                let m = _mm512_set1_ps(f16_at(p.add(2)));
                (_mm512_fmadd_ps(d, q0, m), _mm512_fmadd_ps(d, q1, m))
            }
        }
    }
}

/// `R` rows x `T` tokens of a quantized-weight matmul with f32 activations.
#[inline(always)]
unsafe fn tile_fq<const DT: u8, const R: usize, const T: usize>(
    w: *const u8,
    rb: usize,
    cols: usize,
    x: *const f32,
    out: *mut f32,
    out_stride: usize,
) {
    let bb = block_bytes(DT);
    let mut acc = [[_mm512_setzero_ps(); T]; R];
    for b in 0..cols / QK {
        let mut xv = [(_mm512_setzero_ps(), _mm512_setzero_ps()); T];
        for (t, v) in xv.iter_mut().enumerate() {
            let p = x.add(t * cols + b * QK);
            *v = (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)));
        }
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let (w0, w1) = deq_block::<DT>(w.add(r * rb + b * bb));
            for (v, acc_rt) in xv.iter().zip(acc_r.iter_mut()) {
                *acc_rt = _mm512_fmadd_ps(w1, v.1, _mm512_fmadd_ps(w0, v.0, *acc_rt));
            }
        }
    }
    for (r, acc_r) in acc.iter().enumerate() {
        for (t, acc_rt) in acc_r.iter().enumerate() {
            *out.add(t * out_stride + r) = hsum(*acc_rt);
        }
    }
}

#[inline(always)]
unsafe fn matmul_fq<const DT: u8>(
    w: &[u8],
    cols: usize,
    rows: Range<usize>,
    x: &[f32],
    n_tok: usize,
    out: *mut f32,
    out_stride: usize,
) {
    let rb = cols / QK * block_bytes(DT);
    let ops = FOperands::new(w, rb, cols, x, out, out_stride);
    drive::<_, 4, 4>(&FqTile::<DT>(ops), rows, n_tok)
}

/// [`tile_fq`] as a [`Tiler`].
struct FqTile<const DT: u8>(FOperands);

impl<const DT: u8> Tiler for FqTile<DT> {
    #[inline(always)]
    unsafe fn tile<const R: usize, const T: usize>(&self, r: usize, t: usize) {
        let (w, x, out) = self.0.at(r, t);
        tile_fq::<DT, R, T>(w, self.0.rb, self.0.cols, x, out, self.0.out_stride)
    }
}

/// Dequantizes one row; bit-identical to the scalar rule (`d * q`, `d * (q - 8)`, `d * q + m`
/// without FMA; exact conversions for F16).
#[inline(always)]
unsafe fn dequant_f16_row(w: &[u8], out: &mut [f32]) {
    let n = out.len();
    let (p, o) = (w.as_ptr(), out.as_mut_ptr());
    let mut i = 0;
    while i + 16 <= n {
        _mm512_storeu_ps(
            o.add(i),
            _mm512_cvtph_ps(_mm256_loadu_si256(p.add(2 * i).cast())),
        );
        i += 16;
    }
    if i < n {
        let m: __mmask16 = (1u16 << (n - i)) - 1;
        let v = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p.add(2 * i).cast()));
        _mm512_mask_storeu_ps(o.add(i), m, v);
    }
}

#[inline(always)]
unsafe fn dequant_f32_row(w: &[u8], out: &mut [f32]) {
    std::ptr::copy_nonoverlapping(w.as_ptr(), out.as_mut_ptr().cast::<u8>(), 4 * out.len());
}

#[inline(always)]
unsafe fn dequant_q<const DT: u8>(w: &[u8], out: &mut [f32]) {
    let bb = block_bytes(DT);
    for b in 0..out.len() / QK {
        let p = w.as_ptr().add(b * bb);
        let d = _mm512_set1_ps(f16_at(p));
        let (q0, q1) = match DT {
            Q8_0 => (
                _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p.add(2).cast()))),
                _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p.add(18).cast()))),
            ),
            _ => {
                let q = _mm_loadu_si128(p.add(if DT == Q4_0 { 2 } else { 4 }).cast());
                let lo = _mm_and_si128(q, _mm_set1_epi8(0x0f));
                let hi = _mm_and_si128(_mm_srli_epi16::<4>(q), _mm_set1_epi8(0x0f));
                (
                    _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(lo)),
                    _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(hi)),
                )
            }
        };
        let (v0, v1) = match DT {
            Q8_0 => (_mm512_mul_ps(d, q0), _mm512_mul_ps(d, q1)),
            Q4_0 => {
                let e = _mm512_set1_ps(8.0);
                (
                    _mm512_mul_ps(d, _mm512_sub_ps(q0, e)),
                    _mm512_mul_ps(d, _mm512_sub_ps(q1, e)),
                )
            }
            _ => {
                let m = _mm512_set1_ps(f16_at(p.add(2)));
                (
                    _mm512_add_ps(_mm512_mul_ps(d, q0), m),
                    _mm512_add_ps(_mm512_mul_ps(d, q1), m),
                )
            }
        };
        let o = out.as_mut_ptr().add(b * QK);
        _mm512_storeu_ps(o, v0);
        _mm512_storeu_ps(o.add(16), v1);
    }
}

entries! {
    "avx512f,avx512bw,avx512vl,avx2,fma,f16c";
    q8a matmul_q8a_q8_0 = matmul_q8a::<Q8_0, false>;
    q8a matmul_q8a_q4_0 = matmul_q8a::<Q4_0, false>;
    q8a matmul_q8a_q4_1 = matmul_q8a::<Q4_1, false>;
    isums isums_q8_0 = isums::<Q8_0, false>;
    isums isums_q4_0 = isums::<Q4_0, false>;
    isums isums_q4_1 = isums::<Q4_1, false>;
    f32 matmul_f32_f32 = matmul_f::<false>;
    f32 matmul_f32_f16 = matmul_f::<true>;
    f32 matmul_f32_q8_0 = matmul_fq::<Q8_0>;
    f32 matmul_f32_q4_0 = matmul_fq::<Q4_0>;
    f32 matmul_f32_q4_1 = matmul_fq::<Q4_1>;
    dequant dequant_f32 = dequant_f32_row;
    dequant dequant_f16 = dequant_f16_row;
    dequant dequant_q8_0 = dequant_q::<Q8_0>;
    dequant dequant_q4_0 = dequant_q::<Q4_0>;
    dequant dequant_q4_1 = dequant_q::<Q4_1>;
    glu glu_silu = scalar::glu::<false>;
    glu glu_gelu_tanh = scalar::glu::<true>;
    wsum wsum = scalar::wsum_rows;
}

/// The AVX-512 (F/BW/VL) table. The gated activations and the weighted sum are the scalar
/// reference's code, vectorized by the compiler: the same operations, so the same bits.
pub(super) static KERNELS: Kernels = Kernels {
    name: "avx512",
    quantize_act,
    matmul_q8a: q8a_entries([matmul_q8a_q8_0, matmul_q8a_q4_0, matmul_q8a_q4_1]),
    isums: isums_entries([isums_q8_0, isums_q4_0, isums_q4_1]),
    matmul_f32: scalar::with_head(
        [
            matmul_f32_f32,
            matmul_f32_f16,
            matmul_f32_q8_0,
            matmul_f32_q4_0,
            matmul_f32_q4_1,
        ],
        scalar::KERNELS.matmul_f32,
    ),
    dequant_row: scalar::with_head(
        [
            dequant_f32,
            dequant_f16,
            dequant_q8_0,
            dequant_q4_0,
            dequant_q4_1,
        ],
        scalar::KERNELS.dequant_row,
    ),
    glu: [glu_silu, glu_gelu_tanh],
    wsum,
};
