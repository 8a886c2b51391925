//! AVX2 kernels on f32 values: activation quantization, matmuls of F32/F16 weights and of
//! Q8_0/Q4_0/Q4_1 weights with f32 activations, and row dequantization.
//!
//! # Safety
//! Every `unsafe fn` here requires AVX2, FMA and F16C (the entry points' features) and the
//! slice-size preconditions of the table types in `kernels/mod.rs`.

#![allow(clippy::needless_range_loop)] // tiles index rows and tokens in lockstep

use std::arch::x86_64::*;
use std::ops::Range;

use super::super::super::scalar;
use super::super::super::{BlockQ8A, QK};
use super::super::{block_bytes, drive, FOperands, Tiler, Q4_0, Q4_1, Q8_0};
use super::{f16_at, hsum, hsum4};

/// Quantizes activations, bit-identical to the scalar rule (`vroundps` to nearest-even, then
/// an exact conversion of the integral value).
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn quantize_act(x: &[f32], out: &mut [BlockQ8A]) {
    let sign = _mm256_set1_ps(-0.0);
    for (xb, o) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let p = xb.as_ptr();
        let v = [
            _mm256_loadu_ps(p),
            _mm256_loadu_ps(p.add(8)),
            _mm256_loadu_ps(p.add(16)),
            _mm256_loadu_ps(p.add(24)),
        ];
        // Integer max of the magnitudes' bits: a NaN is the largest (scalar::abs_bits).
        let a = v.map(|vk| _mm256_castps_si256(_mm256_andnot_ps(sign, vk)));
        let m = _mm256_max_epi32(_mm256_max_epi32(a[0], a[1]), _mm256_max_epi32(a[2], a[3]));
        let m = _mm_max_epi32(_mm256_castsi256_si128(m), _mm256_extracti128_si256::<1>(m));
        let m = _mm_max_epi32(m, _mm_shuffle_epi32::<0b01_00_11_10>(m));
        let m = _mm_max_epi32(m, _mm_shuffle_epi32::<0b10_11_00_01>(m));
        let (d, id) = scalar::act_scale(f32::from_bits(_mm_cvtsi128_si32(m) as u32));
        if d.is_nan() {
            *o = scalar::NON_FINITE_BLOCK;
            continue;
        }
        let idv = _mm256_set1_ps(id);
        let mut q = [_mm256_setzero_si256(); 4];
        for (qk, &vk) in q.iter_mut().zip(&v) {
            let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm256_mul_ps(vk, idv),
            );
            *qk = _mm256_cvtps_epi32(r);
        }
        let sum = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        let s = _mm_add_epi32(
            _mm256_castsi256_si128(sum),
            _mm256_extracti128_si256::<1>(sum),
        );
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        let p01 = _mm256_packs_epi32(q[0], q[1]);
        let p23 = _mm256_packs_epi32(q[2], q[3]);
        let p = _mm256_packs_epi16(p01, p23);
        let p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(o.qs.as_mut_ptr().cast(), p);
        o.d = d;
        o.s = d * _mm_cvtsi128_si32(s) as f32;
    }
}

/// `R` rows x `T` tokens of an F32/F16-weight matmul; 8 columns per step, scalar tail.
#[inline(always)]
unsafe fn tile_f<const F16: bool, const R: usize, const T: usize>(
    w: *const u8,
    rb: usize,
    cols: usize,
    x: *const f32,
    out: *mut f32,
    out_stride: usize,
) {
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    let mut i = 0;
    while i + 8 <= cols {
        let mut xv = [_mm256_setzero_ps(); T];
        for (t, v) in xv.iter_mut().enumerate() {
            *v = _mm256_loadu_ps(x.add(t * cols + i));
        }
        for r in 0..R {
            let p = w.add(r * rb);
            let wv = if F16 {
                _mm256_cvtph_ps(_mm_loadu_si128(p.add(2 * i).cast()))
            } else {
                _mm256_loadu_ps(p.add(4 * i).cast())
            };
            for t in 0..T {
                acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
            }
        }
        i += 8;
    }
    for t in 0..T {
        let mut tails = [0f32; 4];
        for (r, tail) in tails[..R].iter_mut().enumerate() {
            let p = w.add(r * rb);
            for j in i..cols {
                let wj = if F16 {
                    f16_at(p.add(2 * j))
                } else {
                    f32::from_le_bytes(std::ptr::read_unaligned(p.add(4 * j).cast::<[u8; 4]>()))
                };
                *tail += wj * *x.add(t * cols + j);
            }
        }
        // Outputs (t, r..r + R) are adjacent: four rows reduce and store together, with the
        // same bits as one at a time.
        if R == 4 {
            let sums = hsum4([acc[0][t], acc[1][t], acc[2][t], acc[3][t]]);
            let v = _mm_add_ps(sums, _mm_loadu_ps(tails.as_ptr()));
            _mm_storeu_ps(out.add(t * out_stride), v);
        } else {
            for r in 0..R {
                *out.add(t * out_stride + r) = hsum(acc[r][t]) + tails[r];
            }
        }
    }
}

#[inline(always)]
pub(super) unsafe fn matmul_f<const F16: bool>(
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
    drive::<_, 4, 2>(&FTile::<F16>(ops), rows, n_tok)
}

/// [`tile_f`] as a [`Tiler`].
struct FTile<const F16: bool>(FOperands);

impl<const F16: bool> Tiler for FTile<F16> {
    #[inline(always)]
    unsafe fn tile<const R: usize, const T: usize>(&self, r: usize, t: usize) {
        let (w, x, out) = self.0.at(r, t);
        tile_f::<F16, R, T>(w, self.0.rb, self.0.n, x, out, self.0.out_stride)
    }
}

/// One quantized block dequantized to four 8-lane f32 vectors.
#[inline(always)]
unsafe fn deq_block<const DT: u8>(p: *const u8) -> [__m256; 4] {
    let d = _mm256_set1_ps(f16_at(p));
    let mut v = [_mm256_setzero_ps(); 4];
    match DT {
        Q8_0 => {
            for (k, vk) in v.iter_mut().enumerate() {
                let q = _mm_loadl_epi64(p.add(2 + 8 * k).cast());
                *vk = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)));
            }
        }
        _ => {
            let q = _mm_loadu_si128(p.add(if DT == Q4_0 { 2 } else { 4 }).cast());
            let lo = _mm_and_si128(q, _mm_set1_epi8(0x0f));
            let hi = _mm_and_si128(_mm_srli_epi16::<4>(q), _mm_set1_epi8(0x0f));
            let parts = [lo, _mm_srli_si128::<8>(lo), hi, _mm_srli_si128::<8>(hi)];
            let m = if DT == Q4_1 {
                _mm256_set1_ps(f16_at(p.add(2)))
            } else {
                _mm256_setzero_ps()
            };
            for (vk, &part) in v.iter_mut().zip(&parts) {
                let qf = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(part));
                *vk = if DT == Q4_0 {
                    _mm256_mul_ps(d, _mm256_sub_ps(qf, _mm256_set1_ps(8.0)))
                } else {
                    _mm256_fmadd_ps(d, qf, m)
                };
            }
        }
    }
    v
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
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    for b in 0..cols / QK {
        for r in 0..R {
            let wv = deq_block::<DT>(w.add(r * rb + b * bb));
            for t in 0..T {
                let p = x.add(t * cols + b * QK);
                for (k, &wk) in wv.iter().enumerate() {
                    acc[r][t] = _mm256_fmadd_ps(wk, _mm256_loadu_ps(p.add(8 * k)), acc[r][t]);
                }
            }
        }
    }
    for r in 0..R {
        for t in 0..T {
            *out.add(t * out_stride + r) = hsum(acc[r][t]);
        }
    }
}

#[inline(always)]
pub(super) unsafe fn matmul_fq<const DT: u8>(
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
    drive::<_, 4, 2>(&FqTile::<DT>(ops), rows, n_tok)
}

/// [`tile_fq`] as a [`Tiler`].
struct FqTile<const DT: u8>(FOperands);

impl<const DT: u8> Tiler for FqTile<DT> {
    #[inline(always)]
    unsafe fn tile<const R: usize, const T: usize>(&self, r: usize, t: usize) {
        let (w, x, out) = self.0.at(r, t);
        tile_fq::<DT, R, T>(w, self.0.rb, self.0.n, x, out, self.0.out_stride)
    }
}

/// Dequantizes one row; bit-identical to the scalar rule (no FMA; exact F16 conversion).
#[inline(always)]
pub(super) unsafe fn dequant_f16(w: &[u8], out: &mut [f32]) {
    let n = out.len();
    let (p, o) = (w.as_ptr(), out.as_mut_ptr());
    let mut i = 0;
    while i + 8 <= n {
        _mm256_storeu_ps(
            o.add(i),
            _mm256_cvtph_ps(_mm_loadu_si128(p.add(2 * i).cast())),
        );
        i += 8;
    }
    while i < n {
        *o.add(i) = f16_at(p.add(2 * i));
        i += 1;
    }
}

#[inline(always)]
pub(super) unsafe fn dequant_f32(w: &[u8], out: &mut [f32]) {
    std::ptr::copy_nonoverlapping(w.as_ptr(), out.as_mut_ptr().cast::<u8>(), 4 * out.len());
}

#[inline(always)]
pub(super) unsafe fn dequant_q<const DT: u8>(w: &[u8], out: &mut [f32]) {
    let bb = block_bytes(DT);
    for b in 0..out.len() / QK {
        let p = w.as_ptr().add(b * bb);
        let d = _mm256_set1_ps(f16_at(p));
        let o = out.as_mut_ptr().add(b * QK);
        let mut q = [_mm256_setzero_ps(); 4];
        if DT == Q8_0 {
            for (k, qk) in q.iter_mut().enumerate() {
                *qk = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(
                    p.add(2 + 8 * k).cast(),
                )));
            }
        } else {
            let v = _mm_loadu_si128(p.add(if DT == Q4_0 { 2 } else { 4 }).cast());
            let lo = _mm_and_si128(v, _mm_set1_epi8(0x0f));
            let hi = _mm_and_si128(_mm_srli_epi16::<4>(v), _mm_set1_epi8(0x0f));
            let parts = [lo, _mm_srli_si128::<8>(lo), hi, _mm_srli_si128::<8>(hi)];
            for (qk, &part) in q.iter_mut().zip(&parts) {
                *qk = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(part));
            }
        }
        let m = if DT == Q4_1 {
            _mm256_set1_ps(f16_at(p.add(2)))
        } else {
            _mm256_setzero_ps()
        };
        for (k, &qk) in q.iter().enumerate() {
            let v = match DT {
                Q8_0 => _mm256_mul_ps(d, qk),
                Q4_0 => _mm256_mul_ps(d, _mm256_sub_ps(qk, _mm256_set1_ps(8.0))),
                _ => _mm256_add_ps(_mm256_mul_ps(d, qk), m),
            };
            _mm256_storeu_ps(o.add(8 * k), v);
        }
    }
}
