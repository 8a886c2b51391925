//! AVX2 + FMA + F16C kernels for the 5-bit blocks (Q5_0, Q5_1) and the K-quants (Q4_K,
//! Q5_K, Q6_K), used by the AVX2 and the AVX-512 tables.
//!
//! Every layout is cut into sub-blocks of 32 weights, one per activation block. A sub-block
//! is unpacked to 32 unsigned bytes `u` (`0..=31` or `0..=63`) and meets the signed
//! activations through `vpmaddubsw` + `vpmaddwd` (pairs stay below `2 * 63 * 127 < 2^15`),
//! giving 8 exact i32 lanes. Offset types (`q - 16` of Q5_0, `q - 32` of Q6_K) use the
//! signed weights with the sign trick (`|w| * sign(a, w)`); Q6_K's two scales of 16 multiply
//! lanes 0-3 and 4-7. The lanes are converted to f32 and accumulated with one FMA by the
//! sub-block's f32 scale; the minimum terms (`m * s_a`, `-(dmin * m_j) * s_a`) go to a
//! scalar sum in sub-block order. Each (row, token) output sees the same operations in the
//! same order whatever the tile, batch or thread split, so results are batch-invariant.
//!
//! # Safety
//! Every `unsafe fn` here requires AVX2, FMA and F16C (guaranteed by the `#[target_feature]`
//! entry points) and the slice-size preconditions of the table types in `kernels/mod.rs`.

use std::arch::x86_64::*;
use std::ops::Range;

use super::super::super::{BlockQ8A, DType, QK};
use pipit_format::blocks::k_scale_min;

/// Tokens that share one unpacked weight sub-block.
const TOK: usize = 4;

/// The f16 at `b[off..off + 2]` as f32.
#[inline(always)]
fn f16_at(b: &[u8], off: usize) -> f32 {
    half::f16::from_le_bytes([b[off], b[off + 1]]).to_f32()
}

/// 32 bytes at `b[off..off + 32]`, unaligned.
#[inline(always)]
unsafe fn load32(b: &[u8], off: usize) -> __m256i {
    let s = &b[off..off + 32];
    // SAFETY: `s` holds 32 bytes; the load is unaligned.
    unsafe { _mm256_loadu_si256(s.as_ptr().cast()) }
}

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

/// Nibbles of 16 bytes at `b[off..]`: low nibbles in bytes 0..16, high in 16..32.
#[inline(always)]
unsafe fn nibbles16(b: &[u8], off: usize) -> __m256i {
    let s = &b[off..off + 16];
    // SAFETY: `s` holds 16 bytes; the load is unaligned.
    let q = unsafe { _mm_loadu_si128(s.as_ptr().cast()) };
    let lo = _mm_and_si128(q, _mm_set1_epi8(0x0F));
    let hi = _mm_and_si128(_mm_srli_epi16(q, 4), _mm_set1_epi8(0x0F));
    _mm256_set_m128i(hi, lo)
}

/// One unpacked sub-block: unsigned bytes, the offset to remove, the i32 lane multipliers
/// (Q6_K's two scales; 1 otherwise), the f32 scale `d` (times `sc_j` for Q4_K/Q5_K) and the
/// minimum `m` that enters as `m * s_a`.
struct Sub {
    u: __m256i,
    off: i8,
    lane_sc: Option<__m256i>,
    d: f32,
    m: f32,
}

/// Sub-block `j` of the block `wb` of `dtype` (one of the five types of this file).
#[inline(always)]
unsafe fn unpack(dtype: DType, wb: &[u8], j: usize) -> Sub {
    let m15 = _mm256_set1_epi8(0x0F);
    match dtype {
        DType::Q5_0 | DType::Q5_1 => {
            let one = dtype == DType::Q5_1;
            let o = if one { 4 } else { 2 };
            let qh = u32::from_le_bytes([wb[o], wb[o + 1], wb[o + 2], wb[o + 3]]);
            let u = _mm256_or_si256(nibbles16(wb, o + 4), bits_to_0x10(qh));
            Sub {
                u,
                off: if one { 0 } else { 16 },
                lane_sc: None,
                d: f16_at(wb, 0),
                m: if one { f16_at(wb, 2) } else { 0.0 },
            }
        }
        DType::Q4_K | DType::Q5_K => {
            let five = dtype == DType::Q5_K;
            let (sc, m) = k_scale_min(&wb[4..16], j);
            let qs = if five { 48 } else { 16 };
            let raw = load32(wb, qs + QK * (j / 2));
            let shift = _mm_cvtsi32_si128(4 * (j % 2) as i32);
            let mut u = _mm256_and_si256(_mm256_srl_epi16(raw, shift), m15);
            if five {
                let hb = _mm256_srl_epi16(load32(wb, 16), _mm_cvtsi32_si128(j as i32));
                let hb = _mm256_and_si256(hb, _mm256_set1_epi8(1));
                u = _mm256_or_si256(u, _mm256_slli_epi16(hb, 4));
            }
            Sub {
                u,
                off: 0,
                lane_sc: None,
                d: f16_at(wb, 0) * f32::from(sc),
                m: -(f16_at(wb, 2) * f32::from(m)),
            }
        }
        _ => {
            // Q6_K.
            let (h, k) = (j / 4, j % 4);
            let ql = load32(wb, 64 * h + 32 * (k & 1));
            let low = _mm256_and_si256(
                _mm256_srl_epi16(ql, _mm_cvtsi32_si128(4 * (k / 2) as i32)),
                m15,
            );
            let qh = load32(wb, 128 + 32 * h);
            let high = _mm256_and_si256(
                _mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * k as i32)),
                _mm256_set1_epi8(3),
            );
            let u = _mm256_or_si256(low, _mm256_slli_epi16(high, 4));
            let (s0, s1) = (
                i32::from(wb[192 + 2 * j] as i8),
                i32::from(wb[193 + 2 * j] as i8),
            );
            Sub {
                u,
                off: 32,
                lane_sc: Some(_mm256_setr_epi32(s0, s0, s0, s0, s1, s1, s1, s1)),
                d: f16_at(wb, 208),
                m: 0.0,
            }
        }
    }
}

/// The exact i32 lanes of one sub-block against one activation block (lane sum = `isum`
/// of the module docs, before the K-quants' f32 scale `sc_j`).
#[inline(always)]
unsafe fn lanes(s: &Sub, a: &BlockQ8A) -> __m256i {
    // SAFETY: `a.qs` holds 32 bytes; the load is unaligned.
    let av = unsafe { _mm256_loadu_si256(a.qs.as_ptr().cast()) };
    let ones = _mm256_set1_epi16(1);
    let mut l = if s.off != 0 {
        // Signed weights `u - off` (|w| <= 32): `|w| * sign(a, w)` keeps vpmaddubsw's first
        // operand unsigned, and pairs stay below 2 * 32 * 127.
        let w = _mm256_sub_epi8(s.u, _mm256_set1_epi8(s.off));
        let p = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(av, w));
        _mm256_madd_epi16(p, ones)
    } else {
        _mm256_madd_epi16(_mm256_maddubs_epi16(s.u, av), ones)
    };
    if let Some(sc) = s.lane_sc {
        l = _mm256_mullo_epi32(l, sc);
    }
    l
}

/// The sum of 8 f32 lanes in one fixed order.
#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// The sum of 8 i32 lanes.
#[inline(always)]
unsafe fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
    _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01)))
}

/// The matmul of [`super::super::MatmulQ8aFn`] for `dtype`: rows one at a time, tokens in
/// tiles of [`TOK`] that share each unpacked sub-block.
#[inline(always)]
unsafe fn matmul<const K: usize>(
    w: &[u8],
    cols: usize,
    rows: Range<usize>,
    xq: &[BlockQ8A],
    n_tok: usize,
    out: *mut f32,
    out_stride: usize,
) {
    let dtype = TYPES[K];
    let (bb, be) = (dtype.block_bytes(), dtype.block_elems());
    let subs = be / QK;
    let (nb, nsub) = (cols / be, cols / QK);
    for r in rows {
        let row = &w[r * nb * bb..(r + 1) * nb * bb];
        let mut t0 = 0;
        while t0 < n_tok {
            let nt = (n_tok - t0).min(TOK);
            let mut acc = [_mm256_setzero_ps(); TOK];
            let mut mins = [0f32; TOK];
            for (b, wb) in row.chunks_exact(bb).enumerate() {
                for j in 0..subs {
                    let s = unpack(dtype, wb, j);
                    for t in 0..nt {
                        let a = &xq[(t0 + t) * nsub + b * subs + j];
                        let l = _mm256_cvtepi32_ps(lanes(&s, a));
                        acc[t] = _mm256_fmadd_ps(l, _mm256_set1_ps(s.d * a.d), acc[t]);
                        mins[t] += s.m * a.s;
                    }
                }
            }
            for t in 0..nt {
                // SAFETY: the caller guarantees `out` is writable at (t0 + t) * out_stride + r.
                unsafe { *out.add((t0 + t) * out_stride + r) = hsum(acc[t]) + mins[t] };
            }
            t0 += nt;
        }
    }
}

/// [`super::super::IsumsFn`] for `dtype`, with the integer primitive of [`matmul`].
#[inline(always)]
unsafe fn isums<const K: usize>(w_row: &[u8], xq: &[BlockQ8A], out: &mut [i32]) {
    let dtype = TYPES[K];
    let subs = dtype.block_elems() / QK;
    for ((wb, xs), os) in w_row
        .chunks_exact(dtype.block_bytes())
        .zip(xq.chunks_exact(subs))
        .zip(out.chunks_exact_mut(subs))
    {
        for (j, (a, o)) in xs.iter().zip(os).enumerate() {
            let s = unpack(dtype, wb, j);
            let sc = match dtype {
                DType::Q4_K | DType::Q5_K => i32::from(k_scale_min(&wb[4..16], j).0),
                _ => 1,
            };
            *o = sc * hsum_i32(lanes(&s, a));
        }
    }
}

/// The dtypes of this file, indexed by the kernels' const parameter `K`.
const TYPES: [DType; 5] = [
    DType::Q5_0,
    DType::Q5_1,
    DType::Q4_K,
    DType::Q5_K,
    DType::Q6_K,
];

entries! {
    "avx2,fma,f16c";
    q8a matmul_q8a_q5_0 = matmul::<0>;
    q8a matmul_q8a_q5_1 = matmul::<1>;
    q8a matmul_q8a_q4_k = matmul::<2>;
    q8a matmul_q8a_q5_k = matmul::<3>;
    q8a matmul_q8a_q6_k = matmul::<4>;
    isums isums_q5_0 = isums::<0>;
    isums isums_q5_1 = isums::<1>;
    isums isums_q4_k = isums::<2>;
    isums isums_q5_k = isums::<3>;
    isums isums_q6_k = isums::<4>;
}

/// The `matmul_q8a` entries of this file, for the quantized dtypes after Q4_1 (in
/// [`DType::QUANTIZED`] order).
pub(in super::super) const MATMUL_Q8A: [super::super::super::MatmulQ8aFn; 5] = [
    matmul_q8a_q5_0,
    matmul_q8a_q5_1,
    matmul_q8a_q4_k,
    matmul_q8a_q5_k,
    matmul_q8a_q6_k,
];
/// The `isums` entries, in the same order.
pub(in super::super) const ISUMS: [super::super::super::IsumsFn; 5] =
    [isums_q5_0, isums_q5_1, isums_q4_k, isums_q5_k, isums_q6_k];
