//! Block layouts and THE quantization rule: SPEC.md worked examples byte for byte, error
//! bounds, and edge cases (empty, partial, misaligned, non-finite, overflowing scales).

use half::f16;
use pipit_format::blocks::{dequantize, quantize, BlockQ4_0, BlockQ4_1, BlockQ8_0, QK};
use pipit_format::{DType, FormatError};

fn dq(dtype: DType, bytes: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![f32::NAN; n];
    dequantize(dtype, bytes, &mut out).unwrap();
    out
}

fn with_tail(head: &[f32], n: usize) -> Vec<f32> {
    let mut v = head.to_vec();
    v.resize(n, 0.0);
    v
}

/// SPEC.md "Worked examples": Q8_0.
#[test]
fn spec_example_q8_0() {
    let x = with_tail(&[0.0, 1.0, -2.0, 127.0, 2.5, -2.5, 3.49, -126.5], QK);
    let mut bytes = vec![0x00, 0x3C, 0x00, 0x01, 0xFE, 0x7F, 0x03, 0xFD, 0x03, 0x81];
    bytes.resize(34, 0);
    assert_eq!(quantize(DType::Q8_0, &x).unwrap(), bytes);
    let want = with_tail(&[0.0, 1.0, -2.0, 127.0, 3.0, -3.0, 3.0, -127.0], QK);
    assert_eq!(dq(DType::Q8_0, &bytes, QK), want);
}

/// SPEC.md "Worked examples": Q4_0.
#[test]
fn spec_example_q4_0() {
    let mut x = with_tail(&[-8.0, 7.0, 7.6, 0.0, 0.5, -0.5, -3.2], QK);
    x[16] = 1.0;
    x[17] = -1.0;
    let mut bytes = vec![0x00, 0x3C, 0x90, 0x7F, 0x8F, 0x88, 0x89, 0x88, 0x85];
    bytes.resize(18, 0x88);
    assert_eq!(quantize(DType::Q4_0, &x).unwrap(), bytes);
    let mut want = with_tail(&[-8.0, 7.0, 7.0, 0.0, 1.0, 0.0, -3.0], QK);
    want[16] = 1.0;
    want[17] = -1.0;
    assert_eq!(dq(DType::Q4_0, &bytes, QK), want);
}

/// SPEC.md: the scale is negative when the value of largest magnitude is positive.
#[test]
fn q4_0_negative_scale() {
    let x = with_tail(&[8.0, -4.0], QK);
    let b = quantize(DType::Q4_0, &x).unwrap();
    assert_eq!(f16::from_le_bytes([b[0], b[1]]).to_f32(), -1.0);
    // 8 -> q 0 (value -1 * (0 - 8) = 8), -4 -> q 12, 0 -> q 8.
    assert_eq!(&b[2..4], &[0x80, 0x8C]);
    assert_eq!(dq(DType::Q4_0, &b, QK), x);
}

/// SPEC.md "Worked examples": Q4_1.
#[test]
fn spec_example_q4_1() {
    let mut x = with_tail(&[-1.0, 14.0, 0.0, 2.5, 6.2], QK);
    x[16] = 3.0;
    let mut bytes = vec![0x00, 0x3C, 0x00, 0xBC, 0x40, 0x1F, 0x11, 0x14, 0x17];
    bytes.resize(20, 0x11);
    assert_eq!(quantize(DType::Q4_1, &x).unwrap(), bytes);
    let mut want = with_tail(&[-1.0, 14.0, 0.0, 3.0, 6.0], QK);
    want[16] = 3.0;
    assert_eq!(dq(DType::Q4_1, &bytes, QK), want);
}

/// SPEC.md "Worked examples": F16 and F32.
#[test]
fn spec_example_floats() {
    let h = [0x00, 0x3C, 0x00, 0xC0, 0xFF, 0x7B, 0x01, 0x00];
    assert_eq!(
        dq(DType::F16, &h, 4),
        vec![1.0, -2.0, 65504.0, 2f32.powi(-24)]
    );
    assert_eq!(
        quantize(DType::F16, &[1.0, -2.0, 65504.0, 2f32.powi(-24)]).unwrap(),
        h
    );
    let f = [0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0xC0, 0xBF];
    assert_eq!(dq(DType::F32, &f, 2), vec![1.0, -1.5]);
    assert_eq!(quantize(DType::F32, &[1.0, -1.5]).unwrap(), f);
    // F16 rounds to nearest, ties to even.
    let tie_down = 1.0 + 2f32.powi(-11);
    let tie_up = 1.0 + 3.0 * 2f32.powi(-11);
    let b = quantize(DType::F16, &[tie_down, tie_up]).unwrap();
    assert_eq!(dq(DType::F16, &b, 2), vec![1.0, 1.0 + 2f32.powi(-9)]);
}

/// Deterministic pseudo-random values with per-block magnitudes from 1e-3 to 1e3.
fn sample(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    (0..n)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
            let scale = 10f32.powi((i / QK) as i32 % 7 - 3);
            u * scale
        })
        .collect()
}

fn scale16(f: f32) -> f32 {
    f16::from_f32(f).to_f32()
}

#[test]
fn q8_0_error_bound() {
    let x = sample(32 * 70, 1);
    let q = quantize(DType::Q8_0, &x).unwrap();
    let y = dq(DType::Q8_0, &q, x.len());
    for (b, (xs, ys)) in x.chunks(QK).zip(y.chunks(QK)).enumerate() {
        let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let bound = scale16(d) / 2.0 + 127.0 * (d - scale16(d)).abs() + amax * 1e-6;
        for (x, y) in xs.iter().zip(ys) {
            assert!(
                (x - y).abs() <= bound,
                "block {b}: {x} -> {y}, bound {bound}"
            );
        }
    }
}

#[test]
fn q4_0_error_bound() {
    let x = sample(32 * 70, 2);
    let q = quantize(DType::Q4_0, &x).unwrap();
    let y = dq(DType::Q4_0, &q, x.len());
    for (b, (xs, ys)) in x.chunks(QK).zip(y.chunks(QK)).enumerate() {
        let max = xs
            .iter()
            .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
        let d = max / -8.0;
        // Rounding error d/2, except values of the other sign near 8|d|, which clamp to
        // level 7 and may be off by a whole step.
        let bound = scale16(d).abs() + 8.0 * (d - scale16(d)).abs() + max.abs() * 1e-6;
        for (x, y) in xs.iter().zip(ys) {
            assert!(
                (x - y).abs() <= bound,
                "block {b}: {x} -> {y}, bound {bound}"
            );
        }
        // The value of largest magnitude is reproduced up to the f16 rounding of d.
        let i = xs.iter().position(|&v| v == max).unwrap();
        assert!((ys[i] - max).abs() <= 8.0 * (d - scale16(d)).abs() + max.abs() * 1e-6);
    }
}

#[test]
fn q4_1_error_bound() {
    let x = sample(32 * 70, 3);
    let q = quantize(DType::Q4_1, &x).unwrap();
    let y = dq(DType::Q4_1, &q, x.len());
    for (b, (xs, ys)) in x.chunks(QK).zip(y.chunks(QK)).enumerate() {
        let min = xs.iter().fold(f32::MAX, |m, &v| m.min(v));
        let max = xs.iter().fold(f32::MIN, |m, &v| m.max(v));
        let d = (max - min) / 15.0;
        let bound = scale16(d) / 2.0
            + 15.0 * (d - scale16(d)).abs()
            + (min - scale16(min)).abs()
            + (max - min) * 1e-6;
        for (x, y) in xs.iter().zip(ys) {
            assert!(
                (x - y).abs() <= bound,
                "block {b}: {x} -> {y}, bound {bound}"
            );
        }
    }
}

#[test]
fn f16_error_bound() {
    let x = sample(33, 4);
    let y = dq(DType::F16, &quantize(DType::F16, &x).unwrap(), x.len());
    for (x, y) in x.iter().zip(&y) {
        // Half an ulp: relative 2^-11 for normal values, 2^-25 absolute in the subnormals.
        assert!(
            (x - y).abs() <= x.abs() * 2f32.powi(-11) + 2f32.powi(-25),
            "{x} -> {y}"
        );
    }
}

#[test]
fn constant_and_zero_blocks_are_exact() {
    for dtype in [DType::Q8_0, DType::Q4_0, DType::Q4_1] {
        let zeros = vec![0.0; 64];
        assert_eq!(
            dq(dtype, &quantize(dtype, &zeros).unwrap(), 64),
            zeros,
            "{dtype}"
        );
    }
    let fives = vec![5.0; 32];
    assert_eq!(
        dq(DType::Q4_1, &quantize(DType::Q4_1, &fives).unwrap(), 32),
        fives
    );
}

#[test]
fn lengths_empty_and_multi_block() {
    for dtype in DType::ALL {
        assert_eq!(quantize(dtype, &[]).unwrap(), Vec::<u8>::new());
        dequantize(dtype, &[], &mut []).unwrap();
        for n_blocks in [1usize, 3] {
            let n = n_blocks * dtype.block_elems();
            let q = quantize(dtype, &sample(n, 5)).unwrap();
            assert_eq!(q.len(), n_blocks * dtype.block_bytes(), "{dtype}");
        }
    }
    // A single F32/F16 element, and an odd count.
    assert_eq!(
        dq(DType::F32, &quantize(DType::F32, &[0.1]).unwrap(), 1),
        vec![0.1]
    );
    assert_eq!(quantize(DType::F16, &[0.5; 7]).unwrap().len(), 14);
}

#[test]
fn partial_blocks_are_rejected() {
    for dtype in DType::QUANTIZED {
        for n in [1, 31, 33, 224, 288] {
            if n % dtype.block_elems() == 0 {
                continue;
            }
            assert_eq!(
                quantize(dtype, &vec![1.0; n]),
                Err(FormatError::BlockMultiple { dtype, elems: n })
            );
        }
    }
}

#[test]
fn mismatched_buffers_are_rejected() {
    for dtype in DType::ALL {
        let bytes = vec![0u8; dtype.block_bytes() * 2];
        for n in [0, dtype.block_elems(), dtype.block_elems() * 3] {
            let mut out = vec![0.0; n];
            let err = dequantize(dtype, &bytes, &mut out).unwrap_err();
            assert_eq!(
                err,
                FormatError::BufferSize {
                    dtype,
                    bytes: bytes.len(),
                    elems: n
                }
            );
        }
    }
    let mut out = vec![0.0; 33];
    assert!(matches!(
        dequantize(DType::Q8_0, &[0; 34], &mut out),
        Err(FormatError::BufferSize { .. })
    ));
}

#[test]
fn misaligned_input_decodes_the_same() {
    for dtype in DType::ALL {
        let n = 2 * dtype.block_elems().max(8);
        let q = quantize(dtype, &sample(n, 6)).unwrap();
        let mut shifted = vec![0xAA];
        shifted.extend_from_slice(&q);
        assert_eq!(dq(dtype, &shifted[1..], n), dq(dtype, &q, n), "{dtype}");
    }
}

#[test]
fn non_finite_and_overflowing_inputs_are_rejected() {
    for dtype in DType::QUANTIZED {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut x = vec![1.0; 2 * dtype.block_elems()];
            x[37] = bad;
            assert!(
                matches!(
                    quantize(dtype, &x),
                    Err(FormatError::NonFinite { index: 37, .. })
                ),
                "{dtype} {bad}"
            );
        }
    }
    let mut x = vec![0.0; 64];
    x[40] = 1e7;
    assert!(matches!(
        quantize(DType::Q8_0, &x),
        Err(FormatError::ScaleOverflow { block: 1, .. })
    ));
    let x = vec![-1e5; 32];
    assert!(matches!(
        quantize(DType::Q4_1, &x),
        Err(FormatError::ScaleOverflow { block: 0, .. })
    ));
}

#[test]
fn block_structs_view_quantized_bytes() {
    let x = sample(64, 7);
    let q8 = quantize(DType::Q8_0, &x).unwrap();
    let b8: &[BlockQ8_0] = bytemuck::cast_slice(&q8);
    assert_eq!(b8[1].qs[3].to_le_bytes()[0], q8[34 + 2 + 3]);
    let q40 = quantize(DType::Q4_0, &x).unwrap();
    let b40: &[BlockQ4_0] = bytemuck::cast_slice(&q40);
    assert_eq!(b40[1].d.to_le_bytes(), [q40[18], q40[19]]);
    let q41 = quantize(DType::Q4_1, &x).unwrap();
    let b41: &[BlockQ4_1] = bytemuck::cast_slice(&q41);
    assert_eq!(b41[0].qs[15], q41[19]);
}

fn rel_rmse(dtype: DType, x: &[f32]) -> f32 {
    let y = dq(dtype, &quantize(dtype, x).unwrap(), x.len());
    let e: f32 = x.iter().zip(&y).map(|(a, b)| (a - b) * (a - b)).sum();
    let r: f32 = x.iter().map(|a| a * a).sum();
    (e / r).sqrt()
}

/// The new block types round-trip with the error their bit widths allow, and the K-quants'
/// searched scales beat the plain 32-value rules of the same width.
#[test]
fn new_types_error_bounds() {
    let x = sample(4096, 11);
    let err: Vec<(DType, f32)> = [
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
    ]
    .into_iter()
    .map(|d| (d, rel_rmse(d, &x)))
    .collect();
    let e = |d: DType| err.iter().find(|(t, _)| *t == d).unwrap().1;
    assert!(e(DType::Q5_0) < 0.6 * e(DType::Q4_0), "{err:?}");
    assert!(e(DType::Q5_1) < 0.6 * e(DType::Q4_1), "{err:?}");
    assert!(e(DType::Q4_K) < 0.09, "{err:?}");
    assert!(e(DType::Q5_K) < 0.6 * e(DType::Q4_K), "{err:?}");
    assert!(e(DType::Q6_K) < 0.6 * e(DType::Q5_K), "{err:?}");
    // Constant, all-zero and single-spike blocks stay finite and near exact.
    for d in [
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
        DType::Q5_0,
        DType::Q5_1,
    ] {
        let n = d.block_elems();
        assert!(dq(d, &quantize(d, &vec![0.0; n]).unwrap(), n)
            .iter()
            .all(|&v| v == 0.0));
        let mut spike = vec![0.0; n];
        spike[n - 1] = 3.0;
        let y = dq(d, &quantize(d, &spike).unwrap(), n);
        assert!(
            (y[n - 1] - 3.0).abs() < 0.05 && y[..n - 1].iter().all(|v| v.abs() < 0.05),
            "{d} {y:?}"
        );
    }
}

#[test]
fn new_block_structs_view_quantized_bytes() {
    use pipit_format::blocks::{BlockQ4K, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K};
    let x = sample(512, 8);
    let q = quantize(DType::Q5_0, &x).unwrap();
    let b: &[BlockQ5_0] = bytemuck::cast_slice(&q);
    assert_eq!(b[1].qh, q[22 + 2..22 + 6]);
    let q = quantize(DType::Q5_1, &x).unwrap();
    let b: &[BlockQ5_1] = bytemuck::cast_slice(&q);
    assert_eq!(b[1].m.to_le_bytes(), [q[26], q[27]]);
    let q = quantize(DType::Q4_K, &x).unwrap();
    let b: &[BlockQ4K] = bytemuck::cast_slice(&q);
    assert_eq!(b[1].scales, q[144 + 4..144 + 16]);
    let q = quantize(DType::Q5_K, &x).unwrap();
    let b: &[BlockQ5K] = bytemuck::cast_slice(&q);
    assert_eq!(b[1].qh, q[176 + 16..176 + 48]);
    let q = quantize(DType::Q6_K, &x).unwrap();
    let b: &[BlockQ6K] = bytemuck::cast_slice(&q);
    assert_eq!(b[1].d.to_le_bytes(), [q[210 + 208], q[210 + 209]]);
}

/// SPEC.md "Worked examples": Q5_0.
#[test]
fn spec_example_q5_0() {
    let mut x = with_tail(&[-16.0, 15.0, 15.6, 0.0, 0.5, -0.5, -3.2], QK);
    x[16] = 1.0;
    x[17] = -1.0;
    let mut bytes = vec![0x00, 0x3C, 0xBE, 0xFF, 0xFD, 0xFF];
    bytes.extend_from_slice(&[0x10, 0xFF, 0x0F, 0x00, 0x01, 0x00, 0x0D]);
    bytes.resize(22, 0x00);
    assert_eq!(quantize(DType::Q5_0, &x).unwrap(), bytes);
    let mut want = with_tail(&[-16.0, 15.0, 15.0, 0.0, 1.0, 0.0, -3.0], QK);
    want[16] = 1.0;
    want[17] = -1.0;
    assert_eq!(dq(DType::Q5_0, &bytes, QK), want);
}

/// SPEC.md "Worked examples": Q5_1.
#[test]
fn spec_example_q5_1() {
    let mut x = with_tail(&[-1.0, 30.0, 0.0, 2.5, 6.2], QK);
    x[16] = 3.0;
    let mut bytes = vec![0x00, 0x3C, 0x00, 0xBC, 0x02, 0x00, 0x00, 0x00];
    bytes.extend_from_slice(&[0x40, 0x1F, 0x11, 0x14, 0x17]);
    bytes.resize(24, 0x11);
    assert_eq!(quantize(DType::Q5_1, &x).unwrap(), bytes);
    let mut want = with_tail(&[-1.0, 30.0, 0.0, 3.0, 6.0], QK);
    want[16] = 3.0;
    assert_eq!(dq(DType::Q5_1, &bytes, QK), want);
}

/// SPEC.md "Worked examples": the Q4_K block (144 bytes).
pub fn spec_q4_k_bytes() -> Vec<u8> {
    let mut b = vec![0x00, 0x3C, 0x00, 0x38];
    b.extend_from_slice(&[0x41, 0, 0, 0, 0x82, 0, 0, 0, 0x11, 0, 0, 0]);
    b.resize(144, 0);
    b[16] = 0x53;
    b[16 + 64] = 0xA7;
    b
}

fn spec_q4_k_values(five: bool) -> Vec<f32> {
    let mut v = vec![0.0; 256];
    v[..32].fill(-1.0);
    v[128..160].fill(-16.5);
    v[0] = if five { 18.0 } else { 2.0 };
    v[128] = if five { 374.5 } else { 102.5 };
    v
}

#[test]
fn spec_example_q4_k() {
    assert_eq!(
        dq(DType::Q4_K, &spec_q4_k_bytes(), 256),
        spec_q4_k_values(false)
    );
}

/// SPEC.md: the Q5_K block is the Q4_K one with `qh` (32 bytes, `qh[0] = 0x11`) inserted
/// after the scales.
#[test]
fn spec_example_q5_k() {
    let q4 = spec_q4_k_bytes();
    let mut b = q4[..16].to_vec();
    let mut qh = [0u8; 32];
    qh[0] = 0x11;
    b.extend_from_slice(&qh);
    b.extend_from_slice(&q4[16..]);
    assert_eq!(dq(DType::Q5_K, &b, 256), spec_q4_k_values(true));
}

/// SPEC.md "Worked examples": the Q6_K block (210 bytes).
#[test]
fn spec_example_q6_k() {
    let mut b = vec![0u8; 210];
    b[0] = 0x21; // ql[0]
    b[128] = 0x23; // qh[0]
    b[192] = 2; // scales[0]
    b[194] = 0xFF; // scales[2] = -1
    b[196] = 1; // scales[4]
    b[208..].copy_from_slice(&[0x00, 0x38]); // d = 0.5
    let mut want = vec![0.0; 256];
    want[..16].fill(-32.0);
    want[0] = 17.0;
    want[32..48].fill(16.0);
    want[64..80].fill(-16.0);
    want[64] = 1.0;
    assert_eq!(dq(DType::Q6_K, &b, 256), want);
}
