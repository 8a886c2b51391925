//! The dequantizers against values computed by the `gguf` Python package
//! (tests/data/dequant_vectors.bin, made by tools/gen_dequant_vectors.py).

use pipit_convert::dequant::dequantize;
use pipit_convert::gguf::GgmlType;

fn u32_at(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize
}

/// The .pipit dtype with the same block bytes as ggml type `t`.
fn pipit_dtype(t: GgmlType) -> Option<pipit_format::DType> {
    use pipit_format::DType;
    Some(match t {
        GgmlType::F16 => DType::F16,
        GgmlType::Q8_0 => DType::Q8_0,
        GgmlType::Q4_0 => DType::Q4_0,
        GgmlType::Q4_1 => DType::Q4_1,
        GgmlType::Q5_0 => DType::Q5_0,
        GgmlType::Q5_1 => DType::Q5_1,
        GgmlType::Q4K => DType::Q4_K,
        GgmlType::Q5K => DType::Q5_K,
        GgmlType::Q6K => DType::Q6_K,
        _ => return None,
    })
}

#[test]
fn matches_gguf_python_reference_bit_for_bit() {
    let data = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/dequant_vectors.bin"
    ))
    .unwrap();
    let mut pos = 0;
    let mut seen = Vec::new();
    let mut pipit_checked = Vec::new();
    while pos < data.len() {
        let code = u32_at(&data, pos) as u32;
        let (n_bytes, n_elems) = (u32_at(&data, pos + 4), u32_at(&data, pos + 8));
        pos += 12;
        let bytes = &data[pos..pos + n_bytes];
        pos += n_bytes;
        let expected: Vec<f32> = data[pos..pos + 4 * n_elems]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        pos += 4 * n_elems;
        let t = GgmlType::from_code(code).unwrap();
        let mut out = vec![f32::NAN; n_elems];
        dequantize(t, bytes, &mut out).unwrap();
        for (i, (a, b)) in out.iter().zip(&expected).enumerate() {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "{t} element {i}: got {a}, gguf gives {b}"
            );
        }
        // A single block on its own (tail handling) gives the first block's values.
        let (be, bb) = t.block();
        let mut one = vec![0f32; be as usize];
        dequantize(t, &bytes[..bb as usize], &mut one).unwrap();
        assert_eq!(one[..], out[..be as usize]);
        // The .pipit dtypes that hold these blocks verbatim decode them to the same bits.
        if let Some(d) = pipit_dtype(t) {
            let mut got = vec![f32::NAN; n_elems];
            pipit_format::blocks::dequantize(d, bytes, &mut got).unwrap();
            for (i, (a, b)) in got.iter().zip(&expected).enumerate() {
                assert_eq!(
                    a.to_bits(),
                    b.to_bits(),
                    "pipit {d} element {i}: {a} vs {b}"
                );
            }
            pipit_checked.push(d);
        }
        seen.push(t);
    }
    assert_eq!(pipit_checked.len(), 9, "{pipit_checked:?}");
    use GgmlType::*;
    for t in [
        Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2K, Q3K, Q4K, Q5K, Q6K, Bf16, F16,
    ] {
        assert!(seen.contains(&t), "no vectors for {t}");
    }
}

#[test]
fn q8_k_by_hand() {
    let mut b = vec![0u8; 292];
    b[0..4].copy_from_slice(&0.25f32.to_le_bytes());
    b[4] = 4;
    b[5] = 0xFC; // -4
    b[259] = 127;
    let mut out = vec![0f32; 256];
    dequantize(GgmlType::Q8K, &b, &mut out).unwrap();
    assert_eq!(out[0], 1.0);
    assert_eq!(out[1], -1.0);
    assert_eq!(out[2], 0.0);
    assert_eq!(out[255], 31.75);
}
