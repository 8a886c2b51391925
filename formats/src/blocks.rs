//! Quantized block layouts, dequantization, and THE quantization rule.
//!
//! Each quantized dtype stores 32 (or, for the K-quants, 256) consecutive values of a row
//! in one block, with GGUF's byte layout. The block
//! structs are `#[repr(C)]`, free of padding and [`bytemuck::Pod`], so kernels may cast
//! 64-aligned tensor bytes to `&[BlockQ8_0]` etc. The functions here decode bytes
//! explicitly as little-endian and work on any alignment.
//!
//! The quantizers follow ggml's reference quantizers (`quantize_row_*_ref`) operation for
//! operation, in f32, so requantizing here and in llama.cpp gives identical bytes:
//! - `Q8_0`: `amax = max|x|`, `d = amax / 127`, `q = round_half_away_from_zero(x * (1/d))`.
//! - `Q4_0`: `m` = the value of largest magnitude (first one on ties), `d = m / -8`,
//!   `q = min(15, floor(x * (1/d) + 8.5))`.
//! - `Q4_1`: `d = (max - min) / 15`, `q = min(15, floor((x - min) * (1/d) + 0.5))`.
//! - `Q5_0`: as `Q4_0` with `d = m / -16`, `q = min(31, floor(x * (1/d) + 16.5))`.
//! - `Q5_1`: as `Q4_1` with `d = (max - min) / 31`, `q = min(31, ...)`.
//!
//! The K-quants (`Q4_K`, `Q5_K`, `Q6_K`) have no single reference rounding: their
//! quantizers here search each sub-block's scale (and minimum) for the least weighted
//! squared error, then round the sub-block scales to 6 or 8 bits ([`quantize`] documents
//! the search). Any bytes they produce decode with the one dequantization rule.
//!
//! `1/d` is taken as 0 when `d == 0`; the stored scale (and minimum) is `d` rounded to f16
//! (round to nearest, ties to even). SPEC.md, "Quantization rule", is normative.

use crate::{DType, FormatError};
use bytemuck::{Pod, Zeroable};
use half::f16;

/// Values per quantized block.
pub const QK: usize = 32;

/// `Q8_0` block: `value_i = d * qs[i]`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct BlockQ8_0 {
    /// Scale.
    pub d: f16,
    /// Signed quants.
    pub qs: [i8; QK],
}

/// `Q4_0` block: `value_i = d * (q_i - 8)`; `q_i` is the low nibble of `qs[i]` for
/// `i < 16` and the high nibble of `qs[i - 16]` for `i >= 16`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct BlockQ4_0 {
    /// Scale.
    pub d: f16,
    /// Nibbles, packed as described on the struct.
    pub qs: [u8; QK / 2],
}

/// `Q4_1` block: `value_i = d * q_i + m`, nibbles packed as in [`BlockQ4_0`].
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct BlockQ4_1 {
    /// Scale.
    pub d: f16,
    /// Minimum (offset).
    pub m: f16,
    /// Nibbles, packed as in [`BlockQ4_0`].
    pub qs: [u8; QK / 2],
}

/// `Q5_0` block: `value_i = d * (q_i - 16)`; the low 4 bits of `q_i` are packed as in
/// [`BlockQ4_0`], bit 4 is bit `i` of the little-endian u32 `qh`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct BlockQ5_0 {
    /// Scale.
    pub d: f16,
    /// Bit 4 of each value (little-endian u32, bit `i` for value `i`).
    pub qh: [u8; 4],
    /// Low nibbles, packed as in [`BlockQ4_0`].
    pub qs: [u8; QK / 2],
}

/// `Q5_1` block: `value_i = d * q_i + m`, `q_i` packed as in [`BlockQ5_0`].
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct BlockQ5_1 {
    /// Scale.
    pub d: f16,
    /// Minimum (offset).
    pub m: f16,
    /// Bit 4 of each value, as in [`BlockQ5_0`].
    pub qh: [u8; 4],
    /// Low nibbles, packed as in [`BlockQ4_0`].
    pub qs: [u8; QK / 2],
}

/// Values per K-quant super-block.
pub const QK_K: usize = 256;

/// `Q4_K` super-block of 256 values in 8 sub-blocks `j` of 32: value `32j + l` is
/// `(d * sc_j) * q - (dmin * m_j)`, with the 6-bit `sc_j, m_j` from [`k_scale_min`] and
/// `q` the low (`j` even) or high (`j` odd) nibble of `qs[32 * (j / 2) + l]`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct BlockQ4K {
    /// Scale of the sub-block scales.
    pub d: f16,
    /// Scale of the sub-block minimums.
    pub dmin: f16,
    /// Eight 6-bit scales and eight 6-bit minimums, packed as [`k_scale_min`] reads them.
    pub scales: [u8; 12],
    /// Nibbles.
    pub qs: [u8; QK_K / 2],
}

/// `Q5_K` super-block: as [`BlockQ4K`], plus bit `j` of `qh[l]` as bit 4 of value `32j + l`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct BlockQ5K {
    /// Scale of the sub-block scales.
    pub d: f16,
    /// Scale of the sub-block minimums.
    pub dmin: f16,
    /// As in [`BlockQ4K`].
    pub scales: [u8; 12],
    /// High bits.
    pub qh: [u8; QK_K / 8],
    /// Low nibbles, as in [`BlockQ4K`].
    pub qs: [u8; QK_K / 2],
}

/// `Q6_K` super-block of 256 values in 16 sub-blocks of 16: value
/// `e = 128h + 32k + l` (`h < 2`, `k < 4`, `l < 32`) is `(d * scales[e / 16]) * (q - 32)`,
/// where `q`'s low 4 bits are nibble `k / 2` of `ql[64h + 32(k & 1) + l]` and its high
/// 2 bits are bits `2k..2k+2` of `qh[32h + l]`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct BlockQ6K {
    /// Low 4 bits.
    pub ql: [u8; QK_K / 2],
    /// High 2 bits.
    pub qh: [u8; QK_K / 4],
    /// Sub-block scales.
    pub scales: [i8; QK_K / 16],
    /// Scale of the sub-block scales.
    pub d: f16,
}

const _: () = assert!(size_of::<BlockQ8_0>() == 34);
const _: () = assert!(size_of::<BlockQ5_0>() == 22 && align_of::<BlockQ5_0>() == 2);
const _: () = assert!(size_of::<BlockQ5_1>() == 24 && align_of::<BlockQ5_1>() == 2);
const _: () = assert!(size_of::<BlockQ4K>() == 144 && align_of::<BlockQ4K>() == 2);
const _: () = assert!(size_of::<BlockQ5K>() == 176 && align_of::<BlockQ5K>() == 2);
const _: () = assert!(size_of::<BlockQ6K>() == 210 && align_of::<BlockQ6K>() == 2);
const _: () = assert!(size_of::<BlockQ4_0>() == 18);
const _: () = assert!(size_of::<BlockQ4_1>() == 20);
const _: () = assert!(align_of::<BlockQ8_0>() == 2 && align_of::<BlockQ4_0>() == 2);
const _: () = assert!(align_of::<BlockQ4_1>() == 2);

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Decodes `out.len()` values of `dtype` from `bytes`, which must hold exactly that many
/// (`BufferSize` otherwise, including when `out.len()` is not a whole number of blocks).
pub fn dequantize(dtype: DType, bytes: &[u8], out: &mut [f32]) -> Result<(), FormatError> {
    let n = u64::try_from(out.len()).ok();
    if n.and_then(|n| dtype.bytes_for(n)) != u64::try_from(bytes.len()).ok() {
        return Err(FormatError::BufferSize {
            dtype,
            bytes: bytes.len(),
            elems: out.len(),
        });
    }
    let bb = dtype.block_bytes();
    match dtype {
        DType::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(bb)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        DType::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(bb)) {
                *o = f16_at(c, 0);
            }
        }
        DType::Q8_0 => {
            for (o, c) in out.chunks_exact_mut(QK).zip(bytes.chunks_exact(bb)) {
                let d = f16_at(c, 0);
                for (v, &q) in o.iter_mut().zip(&c[2..]) {
                    *v = d * f32::from(i8::from_le_bytes([q]));
                }
            }
        }
        DType::Q4_0 => {
            for (o, c) in out.chunks_exact_mut(QK).zip(bytes.chunks_exact(bb)) {
                let d = f16_at(c, 0);
                let (lo, hi) = o.split_at_mut(QK / 2);
                for ((l, h), &q) in lo.iter_mut().zip(hi).zip(&c[2..]) {
                    *l = d * (f32::from(q & 0x0F) - 8.0);
                    *h = d * (f32::from(q >> 4) - 8.0);
                }
            }
        }
        DType::Q4_1 => {
            for (o, c) in out.chunks_exact_mut(QK).zip(bytes.chunks_exact(bb)) {
                let d = f16_at(c, 0);
                let m = f16_at(c, 2);
                let (lo, hi) = o.split_at_mut(QK / 2);
                for ((l, h), &q) in lo.iter_mut().zip(hi).zip(&c[4..]) {
                    *l = d * f32::from(q & 0x0F) + m;
                    *h = d * f32::from(q >> 4) + m;
                }
            }
        }
        DType::Q5_0 => {
            for (o, c) in out.chunks_exact_mut(QK).zip(bytes.chunks_exact(bb)) {
                let d = f16_at(c, 0);
                let qh = u32::from_le_bytes([c[2], c[3], c[4], c[5]]);
                for (i, v) in o.iter_mut().enumerate() {
                    *v = d * (f32::from(q5(qh, &c[6..22], i)) - 16.0);
                }
            }
        }
        DType::Q5_1 => {
            for (o, c) in out.chunks_exact_mut(QK).zip(bytes.chunks_exact(bb)) {
                let (d, m) = (f16_at(c, 0), f16_at(c, 2));
                let qh = u32::from_le_bytes([c[4], c[5], c[6], c[7]]);
                for (i, v) in o.iter_mut().enumerate() {
                    *v = d * f32::from(q5(qh, &c[8..24], i)) + m;
                }
            }
        }
        DType::Q4_K | DType::Q5_K => {
            let five = dtype == DType::Q5_K;
            for (o, c) in out.chunks_exact_mut(QK_K).zip(bytes.chunks_exact(bb)) {
                let (d, dmin) = (f16_at(c, 0), f16_at(c, 2));
                let (qh, qs) = if five {
                    (&c[16..48], &c[48..176])
                } else {
                    (&c[0..0], &c[16..144])
                };
                for (j, sub) in o.chunks_exact_mut(QK).enumerate() {
                    let (sc, m) = k_scale_min(&c[4..16], j);
                    let (dl, ml) = (d * f32::from(sc), dmin * f32::from(m));
                    for (l, v) in sub.iter_mut().enumerate() {
                        let byte = qs[QK * (j / 2) + l];
                        let mut q = if j % 2 == 0 { byte & 0x0F } else { byte >> 4 };
                        if five {
                            q |= ((qh[l] >> j) & 1) << 4;
                        }
                        *v = dl * f32::from(q) - ml;
                    }
                }
            }
        }
        DType::Q6_K => {
            for (o, c) in out.chunks_exact_mut(QK_K).zip(bytes.chunks_exact(bb)) {
                let d = f16_at(c, 208);
                for (e, v) in o.iter_mut().enumerate() {
                    let sc = f32::from(c[192 + e / 16] as i8);
                    *v = (d * sc) * f32::from(q6(&c[..192], e) - 32);
                }
            }
        }
    }
    Ok(())
}

/// The 5-bit value `i` of a `Q5_0`/`Q5_1` block: low nibble from `qs`, bit 4 from `qh`.
fn q5(qh: u32, qs: &[u8], i: usize) -> u8 {
    let nib = if i < QK / 2 {
        qs[i] & 0x0F
    } else {
        qs[i - QK / 2] >> 4
    };
    nib | ((((qh >> i) & 1) as u8) << 4)
}

/// The 6-bit value `e` (`0..=63`) of a `Q6_K` block whose `ql` and `qh` are `b[..192]`.
fn q6(b: &[u8], e: usize) -> i16 {
    let (h, k, l) = (e / 128, (e % 128) / 32, e % 32);
    let low = (b[64 * h + 32 * (k & 1) + l] >> (4 * (k / 2))) & 0x0F;
    let high = (b[128 + 32 * h + l] >> (2 * k)) & 0x03;
    i16::from(low | (high << 4))
}

/// The 6-bit scale and minimum of sub-block `j` (`0..8`) of a `Q4_K`/`Q5_K` block's 12
/// scale bytes `s`: for `j < 4` the low 6 bits of `s[j]` and `s[j + 4]`; for `j >= 4` the
/// low / high nibble of `s[j + 4]` with bits 4..6 from the top 2 bits of `s[j - 4]` /
/// `s[j]`.
pub fn k_scale_min(s: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (s[j] & 0x3F, s[j + 4] & 0x3F)
    } else {
        let sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 2) & 0x30);
        let m = (s[j + 4] >> 4) | ((s[j] >> 2) & 0x30);
        (sc, m)
    }
}

/// Packs eight 6-bit scales and minimums as [`k_scale_min`] reads them.
fn pack_scale_min(sc: &[u8; 8], m: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..4 {
        s[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
        s[j + 4] = m[j] | ((m[j + 4] >> 4) << 6);
        s[j + 8] = (sc[j + 4] & 0x0F) | ((m[j + 4] & 0x0F) << 4);
    }
    s
}

/// Encodes `x` as `dtype` with THE rounding rule (module docs, SPEC.md). F32 and F16 are
/// exact / round-to-nearest-even conversions. For the block types, `x.len()` must be a
/// multiple of 32 (`BlockMultiple`), every value finite (`NonFinite`), and each block's
/// scale and minimum must fit in f16 (`ScaleOverflow`).
pub fn quantize(dtype: DType, x: &[f32]) -> Result<Vec<u8>, FormatError> {
    if !x.len().is_multiple_of(dtype.block_elems()) {
        return Err(FormatError::BlockMultiple {
            dtype,
            elems: x.len(),
        });
    }
    if dtype.is_quantized() {
        if let Some((index, &value)) = x.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(FormatError::NonFinite { index, value });
        }
    }
    let n_blocks = x.len() / dtype.block_elems();
    let mut out = Vec::with_capacity(n_blocks * dtype.block_bytes());
    match dtype {
        DType::F32 => x
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        DType::F16 => x
            .iter()
            .for_each(|v| out.extend_from_slice(&f16::from_f32(*v).to_le_bytes())),
        DType::Q8_0 => {
            for (b, xs) in x.chunks_exact(QK).enumerate() {
                let amax = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&scale(b, d)?.to_le_bytes());
                // `round` is half away from zero; |v * id| <= 127, the cast cannot saturate.
                out.extend(xs.iter().map(|v| ((v * id).round() as i8).to_le_bytes()[0]));
            }
        }
        DType::Q4_0 | DType::Q5_0 => {
            // 4 or 5 bits: levels 0..=15 or 0..=31 around a zero at 8 or 16.
            let half = if dtype == DType::Q4_0 { 8.0 } else { 16.0 };
            for (b, xs) in x.chunks_exact(QK).enumerate() {
                let (mut amax, mut max) = (0.0f32, 0.0f32);
                for &v in xs {
                    if amax < v.abs() {
                        amax = v.abs();
                        max = v;
                    }
                }
                let d = max / -half;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&scale(b, d)?.to_le_bytes());
                let shifted = |v: f32| v * id + (half + 0.5);
                if dtype == DType::Q4_0 {
                    push_nibbles(&mut out, xs, shifted);
                } else {
                    push_q5(&mut out, xs, shifted);
                }
            }
        }
        DType::Q4_1 | DType::Q5_1 => {
            let top = if dtype == DType::Q4_1 { 15.0 } else { 31.0 };
            for (b, xs) in x.chunks_exact(QK).enumerate() {
                let min = xs.iter().fold(f32::MAX, |m, &v| if v < m { v } else { m });
                let max = xs.iter().fold(-f32::MAX, |m, &v| if v > m { v } else { m });
                let d = (max - min) / top;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&scale(b, d)?.to_le_bytes());
                out.extend_from_slice(&scale(b, min)?.to_le_bytes());
                let shifted = |v: f32| (v - min) * id + 0.5;
                if dtype == DType::Q4_1 {
                    push_nibbles(&mut out, xs, shifted);
                } else {
                    push_q5(&mut out, xs, shifted);
                }
            }
        }
        DType::Q4_K | DType::Q5_K => {
            for (b, xs) in x.chunks_exact(QK_K).enumerate() {
                quantize_q45k(&mut out, b, xs, dtype == DType::Q5_K)?;
            }
        }
        DType::Q6_K => {
            for (b, xs) in x.chunks_exact(QK_K).enumerate() {
                quantize_q6k(&mut out, b, xs)?;
            }
        }
    }
    Ok(out)
}

/// Packs `q_i = min(31, floor(shifted(x_i)))` for one `Q5_0`/`Q5_1` block: `qh`, then the
/// low nibbles as [`push_nibbles`] does.
fn push_q5(out: &mut Vec<u8>, xs: &[f32], shifted: impl Fn(f32) -> f32) {
    let q: Vec<u8> = xs.iter().map(|&v| (shifted(v) as u8).min(31)).collect();
    let qh = q
        .iter()
        .enumerate()
        .fold(0u32, |h, (i, &v)| h | (u32::from(v >> 4) << i));
    out.extend_from_slice(&qh.to_le_bytes());
    let (lo, hi) = q.split_at(QK / 2);
    out.extend(
        lo.iter()
            .zip(hi)
            .map(|(&l, &h)| (l & 0x0F) | ((h & 0x0F) << 4)),
    );
}

/// Relative steps of the scale search: `iscale = (nmax + STEP * s) / range` for
/// `s` in `-STEPS..=STEPS`.
const STEP: f32 = 0.1;
const STEPS: i32 = 10;

/// Fits `x ≈ scale * q - m` (`q` in `0..=nmax`, `scale >= 0`, `m >= 0`) to one sub-block,
/// minimizing `sum w_i (x_i - scale * q_i + m)^2` with `w_i = sqrt(mean(x^2)) + |x_i|`
/// (large values weigh more, as they matter more to a dot product). Candidate level
/// assignments come from `2 * STEPS + 1` scales around `nmax / (max - min)`; for each the
/// weighted least-squares `(scale, m)` is solved in closed form (with `m` clamped to `>= 0`,
/// i.e. the minimum never above 0) and the best is kept. Returns `(scale, m)`.
fn fit_scale_min(x: &[f32], nmax: u8) -> (f32, f32) {
    let n = x.len() as f32;
    let rms = (x.iter().map(|v| v * v).sum::<f32>() / n).sqrt();
    let w: Vec<f32> = x.iter().map(|v| rms + v.abs()).collect();
    let min = x.iter().fold(0.0f32, |m, &v| m.min(v));
    let max = x.iter().fold(min, |m, &v| m.max(v));
    if max == min {
        return (0.0, -min);
    }
    let err_of = |scale: f32, mn: f32| -> f32 {
        x.iter()
            .zip(&w)
            .map(|(&v, &wi)| {
                let q = ((v - mn) / scale).round().clamp(0.0, f32::from(nmax));
                let e = scale * q + mn - v;
                wi * e * e
            })
            .sum()
    };
    let mut best = ((max - min) / f32::from(nmax), min);
    let mut best_err = err_of(best.0, best.1);
    for s in -STEPS..=STEPS {
        let iscale = (f32::from(nmax) + STEP * s as f32) / (max - min);
        // Levels for this candidate, then the weighted least-squares line through them.
        let (mut sw, mut swq, mut swqq, mut swx, mut swqx) = (0f32, 0f32, 0f32, 0f32, 0f32);
        for (&v, &wi) in x.iter().zip(&w) {
            let q = (iscale * (v - min)).round().clamp(0.0, f32::from(nmax));
            sw += wi;
            swq += wi * q;
            swqq += wi * q * q;
            swx += wi * v;
            swqx += wi * q * v;
        }
        let det = sw * swqq - swq * swq;
        if det <= 0.0 {
            continue;
        }
        let mut scale = (sw * swqx - swq * swx) / det;
        let mut mn = (swqq * swx - swq * swqx) / det;
        if mn > 0.0 {
            mn = 0.0;
            scale = swqx / swqq;
        }
        if scale.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            continue;
        }
        let err = err_of(scale, mn);
        if err < best_err {
            best_err = err;
            best = (scale, mn);
        }
    }
    (best.0, -best.1)
}

/// One `Q4_K`/`Q5_K` super-block: [`fit_scale_min`] per sub-block of 32, the scales and
/// minimums rounded to 6 bits of `d = max(scale) / 63` and `dmin = max(m) / 63` (each then
/// rounded to f16), and every value re-rounded to the nearest level of its sub-block's
/// final (scale, minimum).
fn quantize_q45k(out: &mut Vec<u8>, b: usize, xs: &[f32], five: bool) -> Result<(), FormatError> {
    let nmax = if five { 31u8 } else { 15 };
    let fits: Vec<(f32, f32)> = xs
        .chunks_exact(QK)
        .map(|c| fit_scale_min(c, nmax))
        .collect();
    let max_sc = fits.iter().fold(0f32, |a, f| a.max(f.0));
    let max_m = fits.iter().fold(0f32, |a, f| a.max(f.1));
    let d = scale(b, max_sc / 63.0)?;
    let dmin = scale(b, max_m / 63.0)?;
    let six = |v: f32, d: f32| {
        if d > 0.0 {
            (v / d).round().clamp(0.0, 63.0) as u8
        } else {
            0
        }
    };
    let mut sc = [0u8; 8];
    let mut m = [0u8; 8];
    for (j, f) in fits.iter().enumerate() {
        sc[j] = six(f.0, d.to_f32());
        m[j] = six(f.1, dmin.to_f32());
    }
    let mut q = [0u8; QK_K];
    for (j, (c, qj)) in xs.chunks_exact(QK).zip(q.chunks_exact_mut(QK)).enumerate() {
        let dl = d.to_f32() * f32::from(sc[j]);
        let ml = dmin.to_f32() * f32::from(m[j]);
        if dl > 0.0 {
            for (qv, &v) in qj.iter_mut().zip(c) {
                *qv = ((v + ml) / dl).round().clamp(0.0, f32::from(nmax)) as u8;
            }
        }
    }
    out.extend_from_slice(&d.to_le_bytes());
    out.extend_from_slice(&dmin.to_le_bytes());
    out.extend_from_slice(&pack_scale_min(&sc, &m));
    if five {
        out.extend((0..QK).map(|l| (0..8).fold(0u8, |h, j| h | ((q[QK * j + l] >> 4) << j))));
    }
    for c in 0..4 {
        out.extend((0..QK).map(|l| (q[64 * c + l] & 0x0F) | ((q[64 * c + 32 + l] & 0x0F) << 4)));
    }
    Ok(())
}

/// Fits `x ≈ scale * q` (`q` in `-32..=31`) to one sub-block of 16, minimizing
/// `sum x_i^2 (x_i - scale * q_i)^2` over `2 * STEPS + 1` candidate scales around the one
/// that maps the value of largest magnitude to -32 (each refined by weighted least
/// squares). Returns the signed scale.
fn fit_scale_sym(x: &[f32]) -> f32 {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        return 0.0;
    }
    let err_of = |scale: f32| -> f32 {
        x.iter()
            .map(|&v| {
                let q = (v / scale).round().clamp(-32.0, 31.0);
                let e = scale * q - v;
                v * v * e * e
            })
            .sum()
    };
    let mut best = max / -32.0;
    let mut best_err = err_of(best);
    for s in -STEPS..=STEPS {
        let iscale = -(32.0 + STEP * s as f32) / max;
        let (mut sxq, mut sqq) = (0f32, 0f32);
        for &v in x {
            let q = (iscale * v).round().clamp(-32.0, 31.0);
            sxq += v * v * v * q;
            sqq += v * v * q * q;
        }
        if sqq <= 0.0 {
            continue;
        }
        let scale = sxq / sqq;
        if scale == 0.0 || !scale.is_finite() {
            continue;
        }
        let err = err_of(scale);
        if err < best_err {
            best_err = err;
            best = scale;
        }
    }
    best
}

/// One `Q6_K` super-block: [`fit_scale_sym`] per sub-block of 16, the scales rounded to i8
/// multiples of `d = s / -128` (`s` the scale of largest magnitude, `d` then rounded to
/// f16), and every value re-rounded to the nearest level of its final scale.
fn quantize_q6k(out: &mut Vec<u8>, b: usize, xs: &[f32]) -> Result<(), FormatError> {
    let fits: Vec<f32> = xs.chunks_exact(16).map(fit_scale_sym).collect();
    let big = fits
        .iter()
        .fold(0f32, |a, &f| if f.abs() > a.abs() { f } else { a });
    let d = scale(b, big / -128.0)?;
    let df = d.to_f32();
    let mut sc = [0i8; 16];
    if df != 0.0 {
        for (s, &f) in sc.iter_mut().zip(&fits) {
            *s = (f / df).round().clamp(-128.0, 127.0) as i8;
        }
    }
    let mut q = [32u8; QK_K];
    for (i, (c, qi)) in xs.chunks_exact(16).zip(q.chunks_exact_mut(16)).enumerate() {
        let dl = df * f32::from(sc[i]);
        if dl != 0.0 {
            for (qv, &v) in qi.iter_mut().zip(c) {
                *qv = ((v / dl).round().clamp(-32.0, 31.0) + 32.0) as u8;
            }
        }
    }
    let mut ql = [0u8; 128];
    let mut qh = [0u8; 64];
    for (e, &v) in q.iter().enumerate() {
        let (h, k, l) = (e / 128, (e % 128) / 32, e % 32);
        ql[64 * h + 32 * (k & 1) + l] |= (v & 0x0F) << (4 * (k / 2));
        qh[32 * h + l] |= (v >> 4) << (2 * k);
    }
    out.extend_from_slice(&ql);
    out.extend_from_slice(&qh);
    out.extend(sc.iter().map(|s| s.to_le_bytes()[0]));
    out.extend_from_slice(&d.to_le_bytes());
    Ok(())
}

/// `v` as f16, or `ScaleOverflow` if it does not fit.
fn scale(block: usize, v: f32) -> Result<f16, FormatError> {
    let h = f16::from_f32(v);
    if h.is_finite() {
        Ok(h)
    } else {
        Err(FormatError::ScaleOverflow { block, value: v })
    }
}

/// Packs `q_i = min(15, floor(shifted(x_i)))` for one block of 32: value `i` in the low
/// nibble of byte `i`, value `i + 16` in its high nibble. `shifted` is never negative
/// (mathematically >= 0.5, >= 0 after f32 rounding), so truncation is floor.
fn push_nibbles(out: &mut Vec<u8>, xs: &[f32], shifted: impl Fn(f32) -> f32) {
    let q = |v: f32| (shifted(v) as u8).min(15);
    let (lo, hi) = xs.split_at(QK / 2);
    out.extend(lo.iter().zip(hi).map(|(&l, &h)| q(l) | (q(h) << 4)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_casts_match_explicit_decoding() {
        let x: Vec<f32> = (0..64).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let q = quantize(DType::Q4_1, &x).unwrap();
        let blocks: &[BlockQ4_1] = bytemuck::cast_slice(&q);
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[1].d.to_le_bytes(), [q[20], q[21]]);
        assert_eq!(blocks[1].m.to_le_bytes(), [q[22], q[23]]);
        assert_eq!(blocks[1].qs[..], q[24..40]);
    }
}
