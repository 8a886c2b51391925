//! Q8_0, Q4_0 and Q4_1 one block at a time: one block of 32 per 256-bit register. The
//! micro-kernel of rows wider than the transposed layouts take, and of their tail blocks.
//!
//! # Safety
//! As in `avx2/mod.rs`.

#![allow(clippy::needless_range_loop)] // tiles index rows and tokens in lockstep

use std::arch::x86_64::*;

use super::super::super::BlockQ8A;
use super::super::{block_bytes, Q4_0, Q4_1, Q8_0};
use super::frame::Micro;
use super::{dot_acc, f16_lane0, EVEX_VNNI, NO_VNNI, VEX_VNNI};

/// One weight block of one row.
#[derive(Clone, Copy)]
pub(super) struct WBlock {
    /// Unsigned bytes: `|w|` (Q8_0) or `w + 128` (Q8_0 with VNNI) or nibbles (Q4).
    u: __m256i,
    /// Q8_0: the signed weights (for the sign of the activations).
    w: __m256i,
    /// `d` in every lane.
    d: __m256,
    /// Q4_1: `m` in lane 0, zero elsewhere (one term per block, in the vector accumulator).
    m: __m256,
}

#[inline(always)]
pub(super) unsafe fn load_w<const DT: u8, const VNNI: u8>(p: *const u8) -> WBlock {
    let d = _mm256_broadcastss_ps(f16_lane0(p));
    match DT {
        Q8_0 => {
            let w = _mm256_loadu_si256(p.add(2).cast());
            // VNNI: `w + 128` (unsigned; the offset is removed by `ABlock::init`);
            // otherwise `|w|` for the sign trick.
            let u = if VNNI != NO_VNNI {
                _mm256_xor_si256(w, _mm256_set1_epi8(-128))
            } else {
                _mm256_sign_epi8(w, w)
            };
            WBlock {
                u,
                w,
                d,
                m: _mm256_setzero_ps(),
            }
        }
        _ => {
            let off = if DT == Q4_0 { 2 } else { 4 };
            let q = _mm_loadu_si128(p.add(off).cast());
            let lo = _mm_and_si128(q, _mm_set1_epi8(0x0f));
            let hi = _mm_and_si128(_mm_srli_epi16::<4>(q), _mm_set1_epi8(0x0f));
            let u = _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(lo), hi);
            let m = if DT == Q4_1 {
                _mm256_zextps128_ps256(f16_lane0(p.add(2)))
            } else {
                _mm256_setzero_ps()
            };
            WBlock {
                u,
                w: _mm256_setzero_si256(),
                d,
                m,
            }
        }
    }
}

/// One activation block of one token.
#[derive(Clone, Copy)]
pub(super) struct ABlock {
    a: __m256i,
    /// `d` and `s` in every lane.
    d: __m256,
    s: __m256,
    /// Initial i32 lanes: minus the weight offset times `a` (Q4_0: 8; Q8_0 with VNNI: 128),
    /// summed as in `isum_lanes`, so the result is exact.
    init: __m256i,
}

#[inline(always)]
pub(super) unsafe fn load_a<const DT: u8, const VNNI: u8>(x: *const BlockQ8A) -> ABlock {
    let x = &*x;
    let a = _mm256_loadu_si256(x.qs.as_ptr().cast());
    let zero = _mm256_setzero_si256();
    let init = match (DT, VNNI) {
        (Q4_0, _) => _mm256_sub_epi32(zero, dot_acc::<VNNI>(zero, _mm256_set1_epi8(8), a)),
        (Q8_0, VEX_VNNI | EVEX_VNNI) => {
            _mm256_sub_epi32(zero, dot_acc::<VNNI>(zero, _mm256_set1_epi8(-128), a))
        }
        _ => zero,
    };
    ABlock {
        a,
        d: _mm256_set1_ps(x.d),
        s: _mm256_set1_ps(x.s),
        init,
    }
}

/// Exact i32 lanes of one weight block times one activation block.
#[inline(always)]
pub(super) unsafe fn isum_lanes<const DT: u8, const VNNI: u8>(w: &WBlock, a: &ABlock) -> __m256i {
    if DT == Q8_0 && VNNI == NO_VNNI {
        dot_acc::<NO_VNNI>(_mm256_setzero_si256(), w.u, _mm256_sign_epi8(a.a, w.w))
    } else {
        dot_acc::<VNNI>(a.init, w.u, a.a)
    }
}

/// The per-block layout of dtype selector `DT`.
pub(super) struct Block32<const DT: u8, const VNNI: u8>;

impl<const DT: u8, const VNNI: u8> Micro for Block32<DT, VNNI> {
    const BLOCK_BYTES: usize = block_bytes(DT);
    const SUBS: usize = 1;
    type A = ABlock;
    #[inline(always)]
    unsafe fn load_a(x: *const BlockQ8A) -> ABlock {
        load_a::<DT, VNNI>(x)
    }
    #[inline(always)]
    unsafe fn block<const R: usize, const T: usize>(
        w: *const u8,
        rb: usize,
        a: &[ABlock; T],
        acc: &mut [[__m256; T]; R],
    ) {
        for r in 0..R {
            let wb = load_w::<DT, VNNI>(w.add(r * rb));
            for t in 0..T {
                acc[r][t] = Self::accumulate(&wb, &a[t], acc[r][t]);
            }
        }
    }
}

impl<const DT: u8, const VNNI: u8> Block32<DT, VNNI> {
    /// `acc` plus one weight block times one activation block, lane by lane.
    #[inline(always)]
    pub(super) unsafe fn accumulate(wb: &WBlock, a: &ABlock, acc: __m256) -> __m256 {
        let i = isum_lanes::<DT, VNNI>(wb, a);
        let acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), _mm256_mul_ps(wb.d, a.d), acc);
        if DT == Q4_1 {
            _mm256_fmadd_ps(wb.m, a.s, acc)
        } else {
            acc
        }
    }
}
