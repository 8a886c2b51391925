//! Reference dequantizers for the ggml block types the converter reads.
//!
//! Block layouts (all little-endian, `f16` = IEEE binary16):
//! - `Q4_0` (32 elems, 18 B): `d: f16, qs: [u8; 16]`; q_i = low nibble of qs[i] (i < 16) or
//!   high nibble of qs[i-16]; x = d * (q - 8).
//! - `Q4_1` (32, 20 B): `d, m: f16, qs: [u8; 16]`; x = d * q + m.
//! - `Q5_0` (32, 22 B): `d: f16, qh: u32, qs: [u8; 16]`; q_i = nibble as Q4_0 | bit i of qh << 4;
//!   x = d * (q - 16).
//! - `Q5_1` (32, 24 B): `d, m: f16, qh: u32, qs: [u8; 16]`; x = d * q + m.
//! - `Q8_0` (32, 34 B): `d: f16, qs: [i8; 32]`; x = d * q.
//! - `Q2_K` (256, 84 B): `scales: [u8; 16], qs: [u8; 64], d, dmin: f16`; 16 groups of 16;
//!   group g has scale `d * (scales[g] & 15)` and min `dmin * (scales[g] >> 4)`; element
//!   e = 128*h + 32*s + l (h < 2, s < 4, l < 32) takes bits 2s..2s+2 of qs[32h + l];
//!   x = scale * q - min.
//! - `Q3_K` (256, 110 B): `hmask: [u8; 32], qs: [u8; 64], scales: [u8; 12], d: f16`;
//!   16 6-bit signed scales (low 4 bits from bytes 0..8, nibble j/8; high 2 bits from bytes
//!   8..12), minus 32; low 2 bits of q as Q2_K; element e = 32*j + l (j < 8) takes bit j of
//!   hmask[l] as the high bit, and q = low - 4 when that bit is clear; x = d * scale * q.
//! - `Q4_K` (256, 144 B): `d, dmin: f16, scales: [u8; 12], qs: [u8; 128]`; 8 sub-blocks of 32
//!   with 6-bit scale/min (see [`k_scale_min`]); sub-block 2c / 2c+1 are the low / high
//!   nibbles of qs[32c..32c+32]; x = (d * sc) * q - (dmin * m).
//! - `Q5_K` (256, 176 B): `d, dmin, scales: [u8; 12], qh: [u8; 32], qs: [u8; 128]`; as Q4_K,
//!   plus bit j of qh[l] as bit 4 of element 32*j + l.
//! - `Q6_K` (256, 210 B): `ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16`;
//!   element e = 128*h + 32*k + l (h < 2, k < 4, l < 32): low 4 bits from ql[64h + 32*(k&1) + l]
//!   (nibble k/2), high 2 bits are bits 2k..2k+2 of qh[32h + l]; q - 32; x = (d * scales[e/16]) * q.
//! - `Q8_K` (256, 292 B): `d: f32, qs: [i8; 256], bsums: [i16; 16]`; x = d * q.
//! - `F32`, `F16`, `BF16` (bf16 bits << 16).
//!
//! The floating-point operation order matches the `gguf` Python package's reference
//! dequantizers, so results are bit-identical to it.

use crate::gguf::GgmlType;
use half::f16;

/// Why a buffer could not be dequantized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DequantError {
    /// The converter has no dequantizer for this type.
    Unsupported(GgmlType),
    /// Input bytes and output length do not agree.
    Length {
        ggml_type: GgmlType,
        bytes: usize,
        elems: usize,
    },
}

impl std::fmt::Display for DequantError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DequantError::Unsupported(t) => write!(f, "no dequantizer for ggml type {t}"),
            DequantError::Length {
                ggml_type,
                bytes,
                elems,
            } => {
                write!(
                    f,
                    "{bytes} bytes of {ggml_type} do not hold exactly {elems} elements"
                )
            }
        }
    }
}

impl std::error::Error for DequantError {}

/// True when [`dequantize`] handles `t`.
pub fn supported(t: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        t,
        F32 | F16 | Bf16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q2K | Q3K | Q4K | Q5K | Q6K | Q8K
    )
}

fn h(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantizes `bytes` of type `t` into `out` (whose length is the element count).
pub fn dequantize(t: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), DequantError> {
    if !supported(t) {
        return Err(DequantError::Unsupported(t));
    }
    let (be, bb) = t.block();
    let (be, bb) = (be as usize, bb as usize);
    let len_err = || DequantError::Length {
        ggml_type: t,
        bytes: bytes.len(),
        elems: out.len(),
    };
    if !out.len().is_multiple_of(be)
        || !bytes.len().is_multiple_of(bb)
        || bytes.len() / bb != out.len() / be
    {
        return Err(len_err());
    }
    let blocks = bytes.chunks_exact(bb).zip(out.chunks_exact_mut(be));
    match t {
        GgmlType::F32 => {
            blocks.for_each(|(b, o)| o[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        }
        GgmlType::F16 => blocks.for_each(|(b, o)| o[0] = h(b, 0)),
        GgmlType::Bf16 => blocks.for_each(|(b, o)| {
            o[0] = f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16)
        }),
        GgmlType::Q4_0 => blocks.for_each(|(b, o)| q4_0(b, o)),
        GgmlType::Q4_1 => blocks.for_each(|(b, o)| q4_1(b, o)),
        GgmlType::Q5_0 => blocks.for_each(|(b, o)| q5_0(b, o)),
        GgmlType::Q5_1 => blocks.for_each(|(b, o)| q5_1(b, o)),
        GgmlType::Q8_0 => blocks.for_each(|(b, o)| q8_0(b, o)),
        GgmlType::Q2K => blocks.for_each(|(b, o)| q2_k(b, o)),
        GgmlType::Q3K => blocks.for_each(|(b, o)| q3_k(b, o)),
        GgmlType::Q4K => blocks.for_each(|(b, o)| q4_k(b, o)),
        GgmlType::Q5K => blocks.for_each(|(b, o)| q5_k(b, o)),
        GgmlType::Q6K => blocks.for_each(|(b, o)| q6_k(b, o)),
        GgmlType::Q8K => blocks.for_each(|(b, o)| q8_k(b, o)),
        _ => return Err(DequantError::Unsupported(t)),
    }
    Ok(())
}

fn nibble(qs: &[u8], i: usize) -> u8 {
    if i < 16 {
        qs[i] & 0x0F
    } else {
        qs[i - 16] >> 4
    }
}

fn q4_0(b: &[u8], o: &mut [f32]) {
    let d = h(b, 0);
    for (i, x) in o.iter_mut().enumerate() {
        *x = d * f32::from(i16::from(nibble(&b[2..], i)) - 8);
    }
}

fn q4_1(b: &[u8], o: &mut [f32]) {
    let (d, m) = (h(b, 0), h(b, 2));
    for (i, x) in o.iter_mut().enumerate() {
        *x = d * f32::from(nibble(&b[4..], i)) + m;
    }
}

fn q5(qh: u32, qs: &[u8], i: usize) -> u8 {
    nibble(qs, i) | ((((qh >> i) & 1) as u8) << 4)
}

fn q5_0(b: &[u8], o: &mut [f32]) {
    let d = h(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    for (i, x) in o.iter_mut().enumerate() {
        *x = d * f32::from(i16::from(q5(qh, &b[6..], i)) - 16);
    }
}

fn q5_1(b: &[u8], o: &mut [f32]) {
    let (d, m) = (h(b, 0), h(b, 2));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    for (i, x) in o.iter_mut().enumerate() {
        *x = d * f32::from(q5(qh, &b[8..], i)) + m;
    }
}

fn q8_0(b: &[u8], o: &mut [f32]) {
    let d = h(b, 0);
    for (x, &q) in o.iter_mut().zip(&b[2..34]) {
        *x = f32::from(q as i8) * d;
    }
}

fn q2_k(b: &[u8], o: &mut [f32]) {
    let (scales, qs) = (&b[0..16], &b[16..80]);
    let (d, dmin) = (h(b, 80), h(b, 82));
    for (e, x) in o.iter_mut().enumerate() {
        let (hh, s, l) = (e / 128, (e % 128) / 32, e % 32);
        let q = (qs[32 * hh + l] >> (2 * s)) & 3;
        let sc = scales[e / 16];
        let dl = d * f32::from(sc & 0x0F);
        let ml = dmin * f32::from(sc >> 4);
        *x = dl * f32::from(q) - ml;
    }
}

fn q3_k(b: &[u8], o: &mut [f32]) {
    let (hmask, qs, sc, d) = (&b[0..32], &b[32..96], &b[96..108], h(b, 108));
    let mut scales = [0f32; 16];
    for (j, s) in scales.iter_mut().enumerate() {
        let low = (sc[j % 8] >> (4 * (j / 8))) & 0x0F;
        let high = (sc[8 + j % 4] >> (2 * (j / 4))) & 0x03;
        *s = f32::from(i16::from(low | (high << 4)) - 32);
    }
    for (e, x) in o.iter_mut().enumerate() {
        let (hh, s, l) = (e / 128, (e % 128) / 32, e % 32);
        let low = (qs[32 * hh + l] >> (2 * s)) & 3;
        let bit = (hmask[l] >> (e / 32)) & 1;
        let q = i16::from(low) - if bit == 0 { 4 } else { 0 };
        *x = (d * scales[e / 16]) * f32::from(q);
    }
}

/// The 6-bit scale and min of sub-block `j` (0..8) of a Q4_K/Q5_K block's 12 scale bytes.
pub fn k_scale_min(s: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (s[j] & 0x3F, s[j + 4] & 0x3F)
    } else {
        let sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 2) & 0x30);
        let m = (s[j + 4] >> 4) | ((s[j] >> 2) & 0x30);
        (sc, m)
    }
}

fn q4_k(b: &[u8], o: &mut [f32]) {
    let (d, dmin, scales, qs) = (h(b, 0), h(b, 2), &b[4..16], &b[16..144]);
    for (j, sub) in o.chunks_exact_mut(32).enumerate() {
        let (sc, m) = k_scale_min(scales, j);
        let (dl, ml) = (d * f32::from(sc), dmin * f32::from(m));
        let chunk = &qs[32 * (j / 2)..32 * (j / 2) + 32];
        for (x, &q) in sub.iter_mut().zip(chunk) {
            let q = if j % 2 == 0 { q & 0x0F } else { q >> 4 };
            *x = dl * f32::from(q) - ml;
        }
    }
}

fn q5_k(b: &[u8], o: &mut [f32]) {
    let (d, dmin, scales, qh, qs) = (h(b, 0), h(b, 2), &b[4..16], &b[16..48], &b[48..176]);
    for (j, sub) in o.chunks_exact_mut(32).enumerate() {
        let (sc, m) = k_scale_min(scales, j);
        let (dl, ml) = (d * f32::from(sc), dmin * f32::from(m));
        let chunk = &qs[32 * (j / 2)..32 * (j / 2) + 32];
        for (l, (x, &q)) in sub.iter_mut().zip(chunk).enumerate() {
            let low = if j % 2 == 0 { q & 0x0F } else { q >> 4 };
            let q = low | (((qh[l] >> j) & 1) << 4);
            *x = dl * f32::from(q) - ml;
        }
    }
}

fn q6_k(b: &[u8], o: &mut [f32]) {
    let (ql, qh, sc, d) = (&b[0..128], &b[128..192], &b[192..208], h(b, 208));
    for (e, x) in o.iter_mut().enumerate() {
        let (hh, k, l) = (e / 128, (e % 128) / 32, e % 32);
        let low = (ql[64 * hh + 32 * (k & 1) + l] >> (4 * (k / 2))) & 0x0F;
        let high = (qh[32 * hh + l] >> (2 * k)) & 0x03;
        let q = i16::from(low | (high << 4)) - 32;
        *x = (d * f32::from(sc[e / 16] as i8)) * f32::from(q);
    }
}

fn q8_k(b: &[u8], o: &mut [f32]) {
    let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    for (x, &q) in o.iter_mut().zip(&b[4..260]) {
        *x = d * f32::from(q as i8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_0_worked_example() {
        // d = 0.5, nibbles: element 0 = 0 (-> -4.0), element 16 = 15 (-> 3.5).
        let mut b = vec![0u8; 18];
        b[0..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        b[2] = 0xF0;
        let mut o = [0f32; 32];
        dequantize(GgmlType::Q4_0, &b, &mut o).unwrap();
        assert_eq!(o[0], -4.0);
        assert_eq!(o[16], 3.5);
        assert_eq!(o[1], -4.0);
    }

    #[test]
    fn length_mismatch_is_an_error() {
        let mut o = [0f32; 32];
        assert!(matches!(
            dequantize(GgmlType::Q4_0, &[0u8; 17], &mut o),
            Err(DequantError::Length { .. })
        ));
        assert!(matches!(
            dequantize(GgmlType::Q4_0, &[0u8; 36], &mut o),
            Err(DequantError::Length { .. })
        ));
        assert!(matches!(
            dequantize(GgmlType::Q4K, &[0u8; 144], &mut o),
            Err(DequantError::Length { .. })
        ));
        assert!(dequantize(GgmlType::Q4_0, &[], &mut []).is_ok());
        assert_eq!(
            dequantize(GgmlType::Iq2Xxs, &[0u8; 66], &mut [0f32; 256]),
            Err(DequantError::Unsupported(GgmlType::Iq2Xxs))
        );
    }

    #[test]
    fn bf16_and_f16() {
        let mut o = [0f32; 2];
        dequantize(GgmlType::Bf16, &[0x80, 0x3F, 0x00, 0xC0], &mut o).unwrap();
        assert_eq!(o, [1.0, -2.0]);
        dequantize(GgmlType::F16, &[0x00, 0x3C, 0x00, 0xC0], &mut o).unwrap();
        assert_eq!(o, [1.0, -2.0]);
    }
}
