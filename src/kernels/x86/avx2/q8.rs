//! Q8_0 in the transposed quad layout of AVX2: 4 blocks per quad, each block in two i32
//! lanes of a product. The blocks past the last whole quad go in pairs, interleaved by
//! dword.
//!
//! # Safety
//! As in `avx2/mod.rs`.

use std::arch::x86_64::*;

use super::super::super::scalar::Q8_0_BYTES;
use super::super::super::BlockQ8A;
use super::super::Q8_0;
use super::frame::Layout;
use super::{dot_acc, transpose4, NO_VNNI};

/// Q8_0 blocks per quad of the transposed Q8_0 layout.
pub(super) const Q8_QUAD: usize = 4;

/// Four Q8_0 weight blocks of one row, transposed (see [`transpose4`]): `u` the unsigned
/// operand (`|w|`, or `w + 128` with VNNI), `w` the signed weights (for the sign trick), `d`
/// block i's scale in lanes i and 4 + i.
#[derive(Clone, Copy)]
pub(super) struct WQuad8 {
    u: [__m256i; 4],
    w: [__m256i; 4],
    d: __m256,
}

#[inline(always)]
pub(super) unsafe fn load_wq8<const VNNI: u8>(p: *const u8) -> WQuad8 {
    let bb = Q8_0_BYTES;
    let w = transpose4([
        _mm256_loadu_si256(p.add(2).cast()),
        _mm256_loadu_si256(p.add(bb + 2).cast()),
        _mm256_loadu_si256(p.add(2 * bb + 2).cast()),
        _mm256_loadu_si256(p.add(3 * bb + 2).cast()),
    ]);
    let mut u = [_mm256_setzero_si256(); 4];
    for k in 0..4 {
        u[k] = if VNNI != NO_VNNI {
            _mm256_xor_si256(w[k], _mm256_set1_epi8(-128))
        } else {
            _mm256_sign_epi8(w[k], w[k])
        };
    }
    // The four scales (the f16 at each block's start) into lanes i and 4 + i: dword loads and
    // in-register unpacks, once per row and quad.
    let ld = |i: usize| _mm_loadu_si32(p.add(i * bb));
    let h = _mm_unpacklo_epi32(
        _mm_unpacklo_epi16(ld(0), ld(1)),
        _mm_unpacklo_epi16(ld(2), ld(3)),
    );
    WQuad8 {
        u,
        w,
        d: _mm256_cvtph_ps(_mm_unpacklo_epi64(h, h)),
    }
}

/// Four activation blocks of one token, transposed like [`WQuad8`].
#[derive(Clone, Copy)]
pub(super) struct AQuad8 {
    a: [__m256i; 4],
    d: __m256,
    /// VNNI: minus 128 times each block's half-sums (removes the `w + 128` offset).
    init: __m256i,
}

#[inline(always)]
pub(super) unsafe fn load_aq8<const VNNI: u8>(x: *const BlockQ8A) -> AQuad8 {
    let b = [&*x, &*x.add(1), &*x.add(2), &*x.add(3)];
    let a = transpose4([
        _mm256_loadu_si256(b[0].qs.as_ptr().cast()),
        _mm256_loadu_si256(b[1].qs.as_ptr().cast()),
        _mm256_loadu_si256(b[2].qs.as_ptr().cast()),
        _mm256_loadu_si256(b[3].qs.as_ptr().cast()),
    ]);
    let init = if VNNI != NO_VNNI {
        let mut c = _mm256_setzero_si256();
        for &ak in &a {
            c = dot_acc::<VNNI>(c, _mm256_set1_epi8(-128), ak);
        }
        _mm256_sub_epi32(_mm256_setzero_si256(), c)
    } else {
        _mm256_setzero_si256()
    };
    AQuad8 {
        a,
        d: _mm256_setr_ps(
            b[0].d, b[1].d, b[2].d, b[3].d, b[0].d, b[1].d, b[2].d, b[3].d,
        ),
        init,
    }
}

/// Exact i32 lanes of one Q8_0 quad product: block i in lanes i and 4 + i.
#[inline(always)]
pub(super) unsafe fn isum_q8<const VNNI: u8>(w: &WQuad8, a: &AQuad8) -> __m256i {
    if VNNI != NO_VNNI {
        let mut i = a.init;
        for k in 0..4 {
            i = dot_acc::<VNNI>(i, w.u[k], a.a[k]);
        }
        return i;
    }
    // Without VNNI `init` is zero: start from the first product.
    let prod = |k: usize| {
        _mm256_madd_epi16(
            _mm256_maddubs_epi16(w.u[k], _mm256_sign_epi8(a.a[k], w.w[k])),
            _mm256_set1_epi16(1),
        )
    };
    _mm256_add_epi32(
        _mm256_add_epi32(prod(0), prod(1)),
        _mm256_add_epi32(prod(2), prod(3)),
    )
}

/// Q8_0 in quads of 4 ([`WQuad8`], [`AQuad8`]).
pub(super) struct Q8Quads;

impl<const VNNI: u8> Layout<Q8_0, VNNI> for Q8Quads {
    const BLOCKS: usize = Q8_QUAD;
    type Tail = Q8Pairs;
    type W = WQuad8;
    type A = AQuad8;
    #[inline(always)]
    unsafe fn load_w(p: *const u8) -> WQuad8 {
        load_wq8::<VNNI>(p)
    }
    #[inline(always)]
    unsafe fn load_a(x: *const BlockQ8A) -> AQuad8 {
        load_aq8::<VNNI>(x)
    }
    #[inline(always)]
    unsafe fn accumulate(w: &WQuad8, a: &AQuad8, acc: __m256) -> __m256 {
        let i = isum_q8::<VNNI>(w, a);
        _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), _mm256_mul_ps(w.d, a.d), acc)
    }
}

/// Two Q8_0 weight blocks of one row, interleaved by dword (`_mm256_unpack{lo,hi}_epi32`):
/// block 0 in the even i32 lanes, block 1 in the odd ones; `u`, `w` as in [`WQuad8`], `d`
/// the scales in the same lanes.
#[derive(Clone, Copy)]
pub(super) struct WPair8 {
    u: [__m256i; 2],
    w: [__m256i; 2],
    d: __m256,
}

#[inline(always)]
unsafe fn load_wp8<const VNNI: u8>(p: *const u8) -> WPair8 {
    let bb = Q8_0_BYTES;
    let (w0, w1) = (
        _mm256_loadu_si256(p.add(2).cast()),
        _mm256_loadu_si256(p.add(bb + 2).cast()),
    );
    let w = [_mm256_unpacklo_epi32(w0, w1), _mm256_unpackhi_epi32(w0, w1)];
    let u = w.map(|wk| {
        if VNNI != NO_VNNI {
            _mm256_xor_si256(wk, _mm256_set1_epi8(-128))
        } else {
            _mm256_sign_epi8(wk, wk)
        }
    });
    // The two f16 scales side by side in every dword.
    let h = _mm_unpacklo_epi16(_mm_loadu_si32(p), _mm_loadu_si32(p.add(bb)));
    WPair8 {
        u,
        w,
        d: _mm256_cvtph_ps(_mm_shuffle_epi32::<0>(h)),
    }
}

/// Two activation blocks of one token, interleaved like [`WPair8`].
#[derive(Clone, Copy)]
pub(super) struct APair8 {
    a: [__m256i; 2],
    d: __m256,
    /// VNNI: minus 128 times each lane's activations (removes the `w + 128` offset).
    init: __m256i,
}

#[inline(always)]
unsafe fn load_ap8<const VNNI: u8>(x: *const BlockQ8A) -> APair8 {
    let (b0, b1) = (&*x, &*x.add(1));
    let (a0, a1) = (
        _mm256_loadu_si256(b0.qs.as_ptr().cast()),
        _mm256_loadu_si256(b1.qs.as_ptr().cast()),
    );
    let a = [_mm256_unpacklo_epi32(a0, a1), _mm256_unpackhi_epi32(a0, a1)];
    let init = if VNNI != NO_VNNI {
        let (e, zero) = (_mm256_set1_epi8(-128), _mm256_setzero_si256());
        let c = dot_acc::<VNNI>(dot_acc::<VNNI>(zero, e, a[0]), e, a[1]);
        _mm256_sub_epi32(zero, c)
    } else {
        _mm256_setzero_si256()
    };
    APair8 {
        a,
        d: _mm256_setr_ps(b0.d, b1.d, b0.d, b1.d, b0.d, b1.d, b0.d, b1.d),
        init,
    }
}

/// Q8_0 two blocks at a time ([`WPair8`], [`APair8`]): the tail of [`Q8Quads`].
pub(super) struct Q8Pairs;

impl<const VNNI: u8> Layout<Q8_0, VNNI> for Q8Pairs {
    const BLOCKS: usize = 2;
    type Tail = Self;
    type W = WPair8;
    type A = APair8;
    #[inline(always)]
    unsafe fn load_w(p: *const u8) -> WPair8 {
        load_wp8::<VNNI>(p)
    }
    #[inline(always)]
    unsafe fn load_a(x: *const BlockQ8A) -> APair8 {
        load_ap8::<VNNI>(x)
    }
    #[inline(always)]
    unsafe fn accumulate(w: &WPair8, a: &APair8, acc: __m256) -> __m256 {
        let i = if VNNI != NO_VNNI {
            dot_acc::<VNNI>(dot_acc::<VNNI>(a.init, w.u[0], a.a[0]), w.u[1], a.a[1])
        } else {
            let prod = |k: usize| {
                _mm256_madd_epi16(
                    _mm256_maddubs_epi16(w.u[k], _mm256_sign_epi8(a.a[k], w.w[k])),
                    _mm256_set1_epi16(1),
                )
            };
            _mm256_add_epi32(prod(0), prod(1))
        };
        _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), _mm256_mul_ps(w.d, a.d), acc)
    }
}
