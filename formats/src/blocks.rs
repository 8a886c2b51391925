//! Quantized block layouts, dequantization, and THE quantization rule.
//!
//! Each quantized dtype stores 32 consecutive values of a row in one block. The block
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

const _: () = assert!(size_of::<BlockQ8_0>() == 34);
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
    }
    Ok(())
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
        DType::Q4_0 => {
            for (b, xs) in x.chunks_exact(QK).enumerate() {
                let (mut amax, mut max) = (0.0f32, 0.0f32);
                for &v in xs {
                    if amax < v.abs() {
                        amax = v.abs();
                        max = v;
                    }
                }
                let d = max / -8.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&scale(b, d)?.to_le_bytes());
                push_nibbles(&mut out, xs, |v| v * id + 8.5);
            }
        }
        DType::Q4_1 => {
            for (b, xs) in x.chunks_exact(QK).enumerate() {
                let min = xs.iter().fold(f32::MAX, |m, &v| if v < m { v } else { m });
                let max = xs.iter().fold(-f32::MAX, |m, &v| if v > m { v } else { m });
                let d = (max - min) / 15.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&scale(b, d)?.to_le_bytes());
                out.extend_from_slice(&scale(b, min)?.to_le_bytes());
                push_nibbles(&mut out, xs, |v| (v - min) * id + 0.5);
            }
        }
    }
    Ok(out)
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
