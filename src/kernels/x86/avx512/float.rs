//! Float work of the AVX-512 table: activation quantization, the f32-activation matmuls
//! (F32, F16, Q8_0, Q4_0, Q4_1 weights) and row dequantization.
//! Safety: as in the `avx512` module documentation.

use std::arch::x86_64::*;
use std::ops::Range;

use super::super::super::scalar;
use super::super::super::{BlockQ8A, QK};
use super::super::{block_bytes, drive, FOperands, Tiler, Q4_0, Q8_0};
use super::frame::hsum;

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
    drive::<_, 4, 4>(&FTile::<F16>(ops), rows, n_tok)
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
    drive::<_, 4, 4>(&FqTile::<DT>(ops), rows, n_tok)
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

/// Dequantizes one row; bit-identical to the scalar rule (`d * q`, `d * (q - 8)`, `d * q + m`
/// without FMA; exact conversions for F16).
#[inline(always)]
pub(super) unsafe fn dequant_f16(w: &[u8], out: &mut [f32]) {
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
pub(super) unsafe fn dequant_f32(w: &[u8], out: &mut [f32]) {
    std::ptr::copy_nonoverlapping(w.as_ptr(), out.as_mut_ptr().cast::<u8>(), 4 * out.len());
}

#[inline(always)]
pub(super) unsafe fn dequant_q<const DT: u8>(w: &[u8], out: &mut [f32]) {
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
