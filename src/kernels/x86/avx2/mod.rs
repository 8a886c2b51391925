//! AVX2 + FMA + F16C kernels, and the same with AVX-VNNI (`vpdpbusd` in VEX form, for CPUs
//! without AVX-512) as the `avxvnni` table. Files by layout:
//! - [`frame`]: the micro-kernel trait of the register tiles, and the transposed Q4/Q8_0
//!   layouts' form for the arranged tile loop;
//! - [`arranged`]: the Q5 quads and K-quant super-blocks in the arranged tile loop
//!   (activations arranged once per 8-token tile);
//! - [`block32`]: Q8_0/Q4_0/Q4_1 one block per register (wide rows, and group tails);
//! - [`q4`], [`q8`]: the transposed Q4 groups and Q8_0 quads (rows up to 4096 columns);
//! - [`q5`], [`kquant`]: Q5_0/Q5_1 and Q4_K/Q5_K/Q6_K (shared by every x86 table);
//! - [`float`]: activation quantization, f32-activation matmuls, dequantization.
//!
//! Integer products use `vpmaddubsw` (u8 x i8 -> i16 pairs) + `vpmaddwd` (-> i32 lanes).
//! Q8_0 uses the sign trick (`|w| * sign(a, w)`; `|w| <= 128`, `|a| <= 127`, so pairs stay
//! below 2^15); Q4 nibbles are already unsigned, and Q4_0's `-8` offset is removed exactly by
//! subtracting `8 * a` summed the same way. Per block, the 8 i32 lanes are converted to f32
//! and scaled by `d_w * d_a`; Q4_1's `m_w * s_a` is added in lane 0.
//!
//! # Safety
//! Every `unsafe fn` here requires AVX2, FMA and F16C, and AVX-VNNI when `VNNI = VEX_VNNI`
//! (AVX-512 VNNI + VL for `EVEX_VNNI`), guaranteed by the `#[target_feature]` entry points,
//! and the slice-size preconditions of the table types in `kernels/mod.rs`.

use std::arch::x86_64::*;
use std::ops::Range;

use super::super::{BlockQ8A, Kernels, QK};
use super::{block_bytes, prefetch, prefetch_rows, table, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K, Q8_0};

pub(in crate::kernels::x86) mod arranged;
mod block32;
mod float;
pub(in crate::kernels::x86) mod frame;
pub(in crate::kernels::x86) mod kquant;
mod q4;
pub(in crate::kernels::x86) mod q5;
mod q8;

#[cfg(test)]
use super::super::IsumsFn;
use super::super::MatmulQ8aFn;
use super::isums3;

/// Integer product selectors: `vpmaddubsw` + `vpmaddwd`; AVX-VNNI's VEX `vpdpbusd`; or the
/// same 256-bit `vpdpbusd` in its AVX-512 VNNI + VL (EVEX) encoding, which only the tests
/// use, to run the AVX-VNNI kernels' arithmetic on CPUs that have AVX-512 but not AVX-VNNI.
const NO_VNNI: u8 = 0;
const VEX_VNNI: u8 = 1;
const EVEX_VNNI: u8 = 2;

/// The f16 at `p` (unaligned) as f32.
#[inline(always)]
unsafe fn f16_at(p: *const u8) -> f32 {
    let bits = u16::from_le_bytes([*p, *p.add(1)]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
}

/// The f16 at `p` (unaligned) in lane 0 of an f32 vector, zero elsewhere.
#[inline(always)]
pub(in crate::kernels::x86) unsafe fn f16_lane0(p: *const u8) -> __m128 {
    let bits = u16::from_le_bytes([*p, *p.add(1)]);
    _mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits)))
}

/// `acc` + i32 lanes of `u * a` over groups of 4 bytes: `vpdpbusd` (AVX-VNNI) or
/// `vpmaddubsw` + `vpmaddwd`, whose i16 pairs cannot saturate for the operands used here.
#[inline(always)]
unsafe fn dot_acc<const VNNI: u8>(acc: __m256i, u: __m256i, a: __m256i) -> __m256i {
    if VNNI == VEX_VNNI {
        _mm256_dpbusd_avx_epi32(acc, u, a)
    } else if VNNI == EVEX_VNNI {
        _mm256_dpbusd_epi32(acc, u, a)
    } else {
        _mm256_add_epi32(
            acc,
            _mm256_madd_epi16(_mm256_maddubs_epi16(u, a), _mm256_set1_epi16(1)),
        )
    }
}

/// The sum of 8 f32 lanes, in one fixed order.
#[inline(always)]
pub(in crate::kernels::x86) unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// The sums of four vectors' 8 f32 lanes, as lanes 0..4, each in [`hsum`]'s order (so with
/// its bits), in half the operations of four [`hsum`]s.
#[inline(always)]
unsafe fn hsum4(v: [__m256; 4]) -> __m128 {
    // Lanes i and i + 4 of each vector: [v0 | v1] and [v2 | v3].
    let s01 = _mm256_add_ps(
        _mm256_permute2f128_ps::<0x20>(v[0], v[1]),
        _mm256_permute2f128_ps::<0x31>(v[0], v[1]),
    );
    let s23 = _mm256_add_ps(
        _mm256_permute2f128_ps::<0x20>(v[2], v[3]),
        _mm256_permute2f128_ps::<0x31>(v[2], v[3]),
    );
    // (s0 + s2, s1 + s3) of each: [v0, v2 | v1, v3].
    let q = _mm256_add_ps(
        _mm256_shuffle_ps::<0b01_00_01_00>(s01, s23),
        _mm256_shuffle_ps::<0b11_10_11_10>(s01, s23),
    );
    // (s0 + s2) + (s1 + s3) in lanes 0, 2, 4, 6, then gathered in order.
    let h = _mm256_add_ps(q, _mm256_shuffle_ps::<0b10_11_00_01>(q, q));
    _mm256_castps256_ps128(_mm256_permutevar8x32_ps(
        h,
        _mm256_setr_epi32(0, 4, 2, 6, 0, 0, 0, 0),
    ))
}

/// The sum of 8 i32 lanes.
#[inline(always)]
#[cfg(test)]
unsafe fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s)))
}

/// In each 128-bit half h, the 4 x 4 transpose of the dwords of `r` (in-lane unpacks only):
/// `out[k]` lane `4h + i` = dword `4h + k` of `r[i]`. For four Q8_0 blocks, each block spans
/// lanes i and 4 + i.
#[inline(always)]
unsafe fn transpose4(r: [__m256i; 4]) -> [__m256i; 4] {
    let (t0, t1) = (
        _mm256_unpacklo_epi32(r[0], r[1]),
        _mm256_unpackhi_epi32(r[0], r[1]),
    );
    let (t2, t3) = (
        _mm256_unpacklo_epi32(r[2], r[3]),
        _mm256_unpackhi_epi32(r[2], r[3]),
    );
    [
        _mm256_unpacklo_epi64(t0, t2),
        _mm256_unpackhi_epi64(t0, t2),
        _mm256_unpacklo_epi64(t1, t3),
        _mm256_unpackhi_epi64(t1, t3),
    ]
}

/// The q8a matmul of the 32-value types: the transposed layouts for rows up to 4096 columns
/// (Q4: up to 16 groups of 8 blocks; Q8_0: up to 32 quads), one block at a time beyond.
#[inline(always)]
unsafe fn matmul_q8a<const DT: u8, const VNNI: u8>(
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
    let (wp, xp) = (w.as_ptr(), xq.as_ptr());
    if DT != Q8_0 && nb / q4::GRP <= frame::GROUPS_MAX / 2 {
        frame::matmul_grouped::<q4::Q4Groups, DT, VNNI>(
            wp, rb, nb, rows, xp, n_tok, out, out_stride,
        );
    } else if DT == Q8_0 && nb / q8::Q8_QUAD <= frame::GROUPS_MAX {
        frame::matmul_grouped::<q8::Q8Quads, Q8_0, VNNI>(
            wp, rb, nb, rows, xp, n_tok, out, out_stride,
        );
    } else {
        frame::matmul_tiles::<block32::Block32<DT, VNNI>>(
            w, cols, rows, xq, n_tok, out, out_stride,
        );
    }
}

#[inline(always)]
#[cfg(test)]
unsafe fn isums<const DT: u8, const VNNI: u8>(w_row: &[u8], xq: &[BlockQ8A], out: &mut [i32]) {
    let bb = block_bytes(DT);
    let mut b0 = 0;
    if DT != Q8_0 {
        while b0 + q4::GRP <= out.len() {
            let wg = q4::load_wg::<DT>(w_row.as_ptr().add(b0 * bb));
            let ag = q4::load_ag::<DT, VNNI>(xq.as_ptr().add(b0));
            let mut lanes = [0i32; q4::GRP];
            _mm256_storeu_si256(
                lanes.as_mut_ptr().cast(),
                q4::isum_group::<DT, VNNI>(&wg, &ag),
            );
            for (l, v) in lanes.into_iter().enumerate() {
                out[b0 + q4::grp_block(l)] = v;
            }
            b0 += q4::GRP;
        }
    } else {
        while b0 + q8::Q8_QUAD <= out.len() {
            let wq = q8::load_wq8::<VNNI>(w_row.as_ptr().add(b0 * bb));
            let aq = q8::load_aq8::<VNNI>(xq.as_ptr().add(b0));
            let mut lanes = [0i32; 8];
            _mm256_storeu_si256(lanes.as_mut_ptr().cast(), q8::isum_q8::<VNNI>(&wq, &aq));
            for i in 0..q8::Q8_QUAD {
                out[b0 + i] = lanes[i] + lanes[4 + i];
            }
            b0 += q8::Q8_QUAD;
        }
    }
    for (b, o) in out.iter_mut().enumerate().skip(b0) {
        let i = block32::isum_lanes::<DT, VNNI>(
            &block32::load_w::<DT, VNNI>(w_row.as_ptr().add(b * bb)),
            &block32::load_a::<DT, VNNI>(xq.as_ptr().add(b)),
        );
        let s = _mm_add_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256::<1>(i));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        *o = _mm_cvtsi128_si32(s);
    }
}

entries! {
    "avx2,fma,f16c";
    q8a matmul_q8a_q8_0 = matmul_q8a::<Q8_0, NO_VNNI>;
    q8a matmul_q8a_q4_0 = matmul_q8a::<Q4_0, NO_VNNI>;
    q8a matmul_q8a_q4_1 = matmul_q8a::<Q4_1, NO_VNNI>;
    isums isums_q8_0 = isums::<Q8_0, NO_VNNI>;
    isums isums_q4_0 = isums::<Q4_0, NO_VNNI>;
    isums isums_q4_1 = isums::<Q4_1, NO_VNNI>;
}

float_entries!("avx2,fma,f16c", float);

entries! {
    "avx2,fma,f16c";
    q8a matmul_q8a_q5_0 = q5::matmul::<false, false>;
    q8a matmul_q8a_q5_1 = q5::matmul::<true, false>;
    q8a matmul_q8a_q4_k = kquant::matmul::<Q4_K>;
    q8a matmul_q8a_q5_k = kquant::matmul::<Q5_K>;
    q8a matmul_q8a_q6_k = kquant::matmul::<Q6_K>;
    isums isums_q5_0 = q5::isums::<false>;
    isums isums_q5_1 = q5::isums::<true>;
    isums isums_q4_k = kquant::isums::<Q4_K>;
    isums isums_q5_k = kquant::isums::<Q5_K>;
    isums isums_q6_k = kquant::isums::<Q6_K>;
}

/// The `matmul_q8a` entries of the quantized dtypes after Q4_1 (in `DType::QUANTIZED`
/// order): the AVX2 tables', and those the AVX-512 table's Q5 entries hand the rows its
/// quads do not take.
pub(super) const MATMUL_Q8A_Q5_AND_K: [MatmulQ8aFn; 5] = [
    matmul_q8a_q5_0,
    matmul_q8a_q5_1,
    matmul_q8a_q4_k,
    matmul_q8a_q5_k,
    matmul_q8a_q6_k,
];
/// The `isums` entries, in the same order.
#[cfg(test)]
pub(super) const ISUMS_Q5_AND_K: [IsumsFn; 5] =
    [isums_q5_0, isums_q5_1, isums_q4_k, isums_q5_k, isums_q6_k];

entries! {
    "avx2,fma,f16c,avxvnni";
    q8a vnni_matmul_q8a_q8_0 = matmul_q8a::<Q8_0, VEX_VNNI>;
    q8a vnni_matmul_q8a_q4_0 = matmul_q8a::<Q4_0, VEX_VNNI>;
    q8a vnni_matmul_q8a_q4_1 = matmul_q8a::<Q4_1, VEX_VNNI>;
    isums vnni_isums_q8_0 = isums::<Q8_0, VEX_VNNI>;
    isums vnni_isums_q4_0 = isums::<Q4_0, VEX_VNNI>;
    isums vnni_isums_q4_1 = isums::<Q4_1, VEX_VNNI>;
}

#[cfg(test)]
entries! {
    "avx2,fma,f16c,avx512f,avx512vl,avx512vnni";
    q8a evex_matmul_q8a_q8_0 = matmul_q8a::<Q8_0, EVEX_VNNI>;
    q8a evex_matmul_q8a_q4_0 = matmul_q8a::<Q4_0, EVEX_VNNI>;
    q8a evex_matmul_q8a_q4_1 = matmul_q8a::<Q4_1, EVEX_VNNI>;
    isums evex_isums_q8_0 = isums::<Q8_0, EVEX_VNNI>;
    isums evex_isums_q4_0 = isums::<Q4_0, EVEX_VNNI>;
    isums evex_isums_q4_1 = isums::<Q4_1, EVEX_VNNI>;
}

/// The AVX2 table. The gated activations, the weighted sum and log-sum-exp are the scalar
/// reference's code, vectorized by the compiler for this path's registers: the same IEEE
/// operations in the same order, so the same bits.
pub(super) static KERNELS: Kernels = table(
    "avx2",
    [matmul_q8a_q8_0, matmul_q8a_q4_0, matmul_q8a_q4_1],
    isums3!(isums_q8_0, isums_q4_0, isums_q4_1),
    MATMUL_Q8A_Q5_AND_K,
    FLOAT,
);

/// Tests only: the AVX-VNNI table's arithmetic with the EVEX encoding of the same
/// instruction, so a CPU with AVX-512 VNNI but no AVX-VNNI checks the `avxvnni` kernels
/// against the scalar reference. Not selectable by name.
#[cfg(test)]
pub(super) static KERNELS_VNNI_EVEX: Kernels = table(
    "avxvnni-as-evex",
    [
        evex_matmul_q8a_q8_0,
        evex_matmul_q8a_q4_0,
        evex_matmul_q8a_q4_1,
    ],
    isums3!(evex_isums_q8_0, evex_isums_q4_0, evex_isums_q4_1),
    MATMUL_Q8A_Q5_AND_K,
    FLOAT,
);

/// The AVX-VNNI table (VEX `vpdpbusd`, CPUs without AVX-512): the AVX2 table with VNNI
/// integer products.
pub(super) static KERNELS_VNNI: Kernels = table(
    "avxvnni",
    [
        vnni_matmul_q8a_q8_0,
        vnni_matmul_q8a_q4_0,
        vnni_matmul_q8a_q4_1,
    ],
    isums3!(vnni_isums_q8_0, vnni_isums_q4_0, vnni_isums_q4_1),
    MATMUL_Q8A_Q5_AND_K,
    FLOAT,
);
