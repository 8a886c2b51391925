//! Q4_K, Q5_K and Q6_K through the frame (the micro-kernel of [`KQuant`]), for every x86
//! table.
//!
//! A super-block of 256 weights is cut into 8 sub-blocks of 32, one per activation block.
//! A sub-block is unpacked to 32 bytes `u` (`0..=15`, `0..=31`; Q6_K: the signed `q - 32`,
//! as `|w|` and the sign trick `|w| * sign(a, w)`), which meet the activations through
//! `vpmaddubsw` (pairs stay below `2 * 32 * 127 < 2^15`); `vpmaddwd` then multiplies the i16
//! pairs by the sub-block's integer scale (Q4_K/Q5_K: the 6-bit `sc_j`; Q6_K: the i8 scale
//! of each half of 16, in the low and high 128 bits), so the 8 i32 lanes sum to the exact
//! `isum` of the module docs of `kernels`. The lanes are converted to f32 and accumulated by
//! one FMA with `d * d_a`. The minimum terms of Q4_K/Q5_K, `-(dmin * m_j) * s_a`, are one
//! FMA per super-block: the 8 `dmin * m_j` in lanes against the 8 activation sums. Each
//! output sees the same operations in the same order whatever its tile, batch or thread
//! split.
//!
//! # Safety
//! As in `avx2/mod.rs`: AVX2, FMA and F16C, and the caller's slice-size preconditions.

#![allow(clippy::needless_range_loop)] // tiles index rows and tokens in lockstep

use std::arch::x86_64::*;

use super::super::super::scalar::{Q4_K_BYTES, Q5_K_BYTES, Q6_K_BYTES};
use super::super::super::BlockQ8A;
use super::frame::Micro;
use super::{f16_lane0, hsum_i32};

/// Dtype selectors of [`KQuant`].
pub(super) const Q4_K: u8 = 0;
pub(super) const Q5_K: u8 = 1;
pub(super) const Q6_K: u8 = 2;

/// Sub-blocks of 32 per super-block.
const SUBS: usize = 8;

/// The 8 six-bit scales and the 8 six-bit minimums packed in the 12 bytes at `p` (the
/// layout of `pipit_format::blocks::k_scale_min`), byte j of each u64 for sub-block j.
/// Bytes 0-3 hold the low 6 bits of scales 0-3, bytes 4-7 those of minimums 0-3; bytes 8-11
/// the low nibbles of scales 4-7 and the high nibbles of minimums 4-7, whose top 2 bits are
/// the top 2 bits of bytes 0-3 (scales) and 4-7 (minimums).
#[inline(always)]
unsafe fn scales_mins(p: *const u8) -> (u64, u64) {
    let word = |k: usize| u32::from_le_bytes(std::ptr::read_unaligned(p.add(4 * k).cast()));
    let (a, b, c) = (word(0), word(1), word(2));
    let sc_hi = (c & 0x0f0f_0f0f) | (((a >> 6) & 0x0303_0303) << 4);
    let m_hi = ((c >> 4) & 0x0f0f_0f0f) | (((b >> 6) & 0x0303_0303) << 4);
    let sc = u64::from(a & 0x3f3f_3f3f) | (u64::from(sc_hi) << 32);
    let m = u64::from(b & 0x3f3f_3f3f) | (u64::from(m_hi) << 32);
    (sc, m)
}

/// Sub-block `j` of one super-block, unpacked: the unsigned operand `u`, the signed weights
/// `w` whose signs the activations take (Q6_K only) and the i16 pair multipliers `sc`.
#[derive(Clone, Copy)]
struct Sub {
    u: __m256i,
    w: __m256i,
    sc: __m256i,
}

/// Sub-block `j` of the super-block at `p` of selector `K`, with its scales `sc` from
/// [`scales_mins`] (Q4_K/Q5_K; Q6_K reads its own).
#[inline(always)]
unsafe fn unpack<const K: u8>(p: *const u8, sc: u64, j: usize) -> Sub {
    let m15 = _mm256_set1_epi8(0x0f);
    let shift = |n: usize| _mm_cvtsi32_si128(n as i32);
    if K == Q6_K {
        // Values 128h..128h + 127: value 32k + l of the half has its low nibble in byte
        // 32 (k & 1) + l of the half's 64 bytes of `ql` (shifted by 4 (k / 2)), and its top
        // 2 bits in byte l of the half's 32 bytes of `qh` (shifted by 2k).
        let (h, k) = (j / 4, j % 4);
        let ql = _mm256_loadu_si256(p.add(64 * h + 32 * (k & 1)).cast());
        let low = _mm256_and_si256(_mm256_srl_epi16(ql, shift(4 * (k / 2))), m15);
        let qh = _mm256_loadu_si256(p.add(128 + 32 * h).cast());
        let high = _mm256_and_si256(_mm256_srl_epi16(qh, shift(2 * k)), _mm256_set1_epi8(3));
        let q = _mm256_or_si256(low, _mm256_slli_epi16::<4>(high));
        let w = _mm256_sub_epi8(q, _mm256_set1_epi8(32));
        let s = |i: usize| i16::from(*p.add(192 + i) as i8);
        let sc = _mm256_set_m128i(_mm_set1_epi16(s(2 * j + 1)), _mm_set1_epi16(s(2 * j)));
        return Sub {
            u: _mm256_abs_epi8(w),
            w,
            sc,
        };
    }
    // Q4_K/Q5_K: sub-blocks 2i and 2i + 1 are the low and high nibbles of bytes
    // 32i..32i + 31 of `qs`; Q5_K's fifth bit of value l of sub-block j is bit j of `qh[l]`.
    let qs = if K == Q5_K { 48 } else { 16 };
    let raw = _mm256_loadu_si256(p.add(qs + 32 * (j / 2)).cast());
    let mut u = _mm256_and_si256(_mm256_srl_epi16(raw, shift(4 * (j % 2))), m15);
    if K == Q5_K {
        let qh = _mm256_loadu_si256(p.add(16).cast());
        let bit = _mm256_and_si256(_mm256_srl_epi16(qh, shift(j)), _mm256_set1_epi8(1));
        u = _mm256_or_si256(u, _mm256_slli_epi16::<4>(bit));
    }
    Sub {
        u,
        w: _mm256_setzero_si256(),
        sc: _mm256_set1_epi16(((sc >> (8 * j)) & 0xff) as i16),
    }
}

/// The exact i32 lanes of one sub-block against the activation values `a` (lane sum: the
/// sub-block's `isum`).
#[inline(always)]
unsafe fn lanes<const K: u8>(s: &Sub, a: __m256i) -> __m256i {
    let a = if K == Q6_K {
        _mm256_sign_epi8(a, s.w)
    } else {
        a
    };
    _mm256_madd_epi16(_mm256_maddubs_epi16(s.u, a), s.sc)
}

/// The activation values of block `x`.
#[inline(always)]
unsafe fn act(x: *const BlockQ8A) -> __m256i {
    _mm256_loadu_si256((*x).qs.as_ptr().cast())
}

/// One token's activations for one super-block: its 8 activation blocks at `x`, and their
/// sums `s` in lanes 0-7 (Q4_K/Q5_K).
#[derive(Clone, Copy)]
pub(super) struct AK {
    x: *const BlockQ8A,
    s: __m256,
}

/// The super-block layouts: Q4_K, Q5_K or Q6_K by selector `K`.
pub(super) struct KQuant<const K: u8>;

impl<const K: u8> Micro for KQuant<K> {
    const BLOCK_BYTES: usize = match K {
        Q4_K => Q4_K_BYTES,
        Q5_K => Q5_K_BYTES,
        _ => Q6_K_BYTES,
    };
    const SUBS: usize = SUBS;
    type A = AK;
    #[inline(always)]
    unsafe fn load_a(x: *const BlockQ8A) -> AK {
        const _: () = assert!(size_of::<BlockQ8A>() == 40);
        let s = if K == Q6_K {
            _mm256_setzero_ps()
        } else {
            // `s` of block j is f32 number 10 j + 1 from `x`.
            let ix = _mm256_setr_epi32(1, 11, 21, 31, 41, 51, 61, 71);
            _mm256_i32gather_ps::<4>(x.cast(), ix)
        };
        AK { x, s }
    }
    #[inline(always)]
    unsafe fn block<const R: usize, const T: usize>(
        w: *const u8,
        rb: usize,
        a: &[AK; T],
        acc: &mut [[__m256; T]; R],
    ) {
        for r in 0..R {
            let p = w.add(r * rb);
            let d = _mm256_broadcastss_ps(f16_lane0(p.add(if K == Q6_K { 208 } else { 0 })));
            let mut sc = 0;
            if K != Q6_K {
                let (s, m) = scales_mins(p.add(4));
                sc = s;
                let dmin = _mm256_broadcastss_ps(f16_lane0(p.add(2)));
                let m = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(m as i64)));
                let dm = _mm256_mul_ps(dmin, m);
                for t in 0..T {
                    acc[r][t] = _mm256_fnmadd_ps(dm, a[t].s, acc[r][t]);
                }
            }
            for j in 0..SUBS {
                let s = unpack::<K>(p, sc, j);
                for t in 0..T {
                    let xj = a[t].x.add(j);
                    let i = _mm256_cvtepi32_ps(lanes::<K>(&s, act(xj)));
                    let scale = _mm256_mul_ps(d, _mm256_broadcast_ss(&(*xj).d));
                    acc[r][t] = _mm256_fmadd_ps(i, scale, acc[r][t]);
                }
            }
        }
    }
}

/// Per-sub-block exact sums of one row (test hook), with the micro-kernel's primitives.
#[inline(always)]
pub(super) unsafe fn isums<const K: u8>(w_row: &[u8], xq: &[BlockQ8A], out: &mut [i32]) {
    for b in 0..out.len() / SUBS {
        let p = w_row.as_ptr().add(b * <KQuant<K> as Micro>::BLOCK_BYTES);
        let sc = if K == Q6_K {
            0
        } else {
            scales_mins(p.add(4)).0
        };
        for j in 0..SUBS {
            let s = unpack::<K>(p, sc, j);
            out[b * SUBS + j] = hsum_i32(lanes::<K>(&s, act(xq.as_ptr().add(b * SUBS + j))));
        }
    }
}
