//! The GGUF parser: every value type, nesting, alignment, and one malformed file per rule.

mod common;

use common::*;
use pipit_convert::gguf::{Array, GgmlType, Gguf, GgufError, Value};

fn parse_err(b: &[u8]) -> GgufError {
    Gguf::parse(b).expect_err("malformed file accepted")
}

/// A file with one tensor and the given extra keys.
fn small(extra: &[(&str, GV)]) -> GgufBuilder {
    let mut g = GgufBuilder::new();
    g.kv("general.architecture", s("llama"));
    for (k, v) in extra {
        g.kv(k, v.clone());
    }
    g.tensor("t.weight", &[2, 32], Q8_0, vec![7; 68]);
    g
}

fn arr_raw(elem: u32, n: u64, body: &[u8]) -> Vec<u8> {
    let mut v = elem.to_le_bytes().to_vec();
    v.extend_from_slice(&n.to_le_bytes());
    v.extend_from_slice(body);
    v
}

#[test]
fn reads_every_value_type_and_nested_arrays() {
    let nested = {
        // [[1u16, 2u16], [3u16]]
        let mut body = arr_raw(2, 2, &[1, 0, 2, 0]);
        body.extend(arr_raw(2, 1, &[3, 0]));
        arr_raw(9, 2, &body)
    };
    let g = small(&[
        ("u8", GV::U8(200)),
        ("i8", GV::Raw(1, vec![0xFF])),
        ("u16", GV::Raw(2, vec![0x34, 0x12])),
        ("i16", GV::Raw(3, vec![0xFE, 0xFF])),
        ("u32", GV::U32(70000)),
        ("i32", GV::I32(-5)),
        ("f32", GV::F32(1.5)),
        ("bool", GV::Bool(true)),
        ("str", s("héllo")),
        ("u64", GV::U64(1 << 40)),
        ("i64", GV::Raw(11, (-7i64).to_le_bytes().to_vec())),
        ("f64", GV::Raw(12, 2.25f64.to_le_bytes().to_vec())),
        ("arr_str", GV::ArrStr(strings(&["a", "", "c"]))),
        ("arr_f32", GV::ArrF32(vec![0.5, -1.0])),
        ("arr_empty", GV::ArrI32(vec![])),
        ("arr_bool", GV::Raw(9, arr_raw(7, 3, &[1, 0, 1]))),
        ("nested", GV::Raw(9, nested)),
    ]);
    let bytes = g.to_bytes();
    let f = Gguf::parse(&bytes).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.get("u8"), Some(&Value::U8(200)));
    assert_eq!(f.get("i8"), Some(&Value::I8(-1)));
    assert_eq!(f.get("u16"), Some(&Value::U16(0x1234)));
    assert_eq!(f.get("i16"), Some(&Value::I16(-2)));
    assert_eq!(f.get_u32("u32").unwrap(), Some(70000));
    assert_eq!(f.get("i32"), Some(&Value::I32(-5)));
    assert_eq!(f.get_f32("f32").unwrap(), Some(1.5));
    assert_eq!(f.get_bool("bool").unwrap(), Some(true));
    assert_eq!(f.get_str("str").unwrap(), Some("héllo"));
    assert_eq!(f.get("u64"), Some(&Value::U64(1 << 40)));
    assert_eq!(f.get("i64"), Some(&Value::I64(-7)));
    assert_eq!(f.get_f32("f64").unwrap(), Some(2.25));
    assert_eq!(
        f.get_array("arr_str").unwrap(),
        Some(&Array::Str(strings(&["a", "", "c"])))
    );
    assert_eq!(
        f.get_array("arr_f32").unwrap(),
        Some(&Array::F32(vec![0.5, -1.0]))
    );
    assert_eq!(f.get_array("arr_empty").unwrap(), Some(&Array::I32(vec![])));
    assert_eq!(
        f.get_array("arr_bool").unwrap(),
        Some(&Array::Bool(vec![true, false, true]))
    );
    assert_eq!(
        f.get_array("nested").unwrap(),
        Some(&Array::Arr(vec![
            Array::U16(vec![1, 2]),
            Array::U16(vec![3])
        ]))
    );
    // Accessors convert between integer types only when the value fits.
    assert_eq!(
        f.get_u32("u64").unwrap_err(),
        GgufError::WrongType {
            key: "u64".into(),
            expected: "an integer in 0..=u32::MAX",
            found: "u64".into()
        }
    );
    assert!(f.get_u32("i32").is_err());
    assert!(f.get_str("u8").is_err());
    assert_eq!(f.get_u32("absent").unwrap(), None);

    let t = &f.tensors[0];
    assert_eq!(
        (t.name.as_str(), t.ggml_type, t.dims.clone(), t.size),
        ("t.weight", GgmlType::Q8_0, vec![32, 2], 68)
    );
    assert_eq!(t.shape(), [2, 32]);
    assert_eq!(t.offset, f.data_offset);
    assert_eq!(f.data_offset % 32, 0);
    assert_eq!(f.data(t), &[7u8; 68][..]);
}

#[test]
fn tensors_follow_general_alignment() {
    let mut g = small(&[("general.alignment", GV::U32(128))]);
    g.alignment = 128;
    g.tensor("u.weight", &[3], F32, vec![0; 12]);
    let b = g.to_bytes();
    let f = Gguf::parse(&b).unwrap();
    assert_eq!(f.alignment, 128);
    assert_eq!(f.data_offset % 128, 0);
    assert_eq!(f.tensors[1].offset - f.data_offset, 128);
}

#[test]
fn one_malformed_file_per_rule() {
    let good = small(&[]).to_bytes();
    assert!(Gguf::parse(&good).is_ok());

    let mut b = good.clone();
    b[0] = b'X';
    assert!(matches!(parse_err(&b), GgufError::BadMagic(_)));

    for v in [1u32, 4, 0x0300_0000] {
        let mut b = good.clone();
        b[4..8].copy_from_slice(&v.to_le_bytes());
        assert_eq!(parse_err(&b), GgufError::UnsupportedVersion(v));
    }

    let mut b = good.clone();
    b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(parse_err(&b), GgufError::TooLarge { .. }));
    let mut b = good.clone();
    b[16..24].copy_from_slice(&1000u64.to_le_bytes());
    assert!(
        matches!(parse_err(&b), GgufError::Truncated { .. }),
        "kv count beyond the file"
    );

    // A string length beyond the file, and one that overflows usize arithmetic.
    for len in [1u64 << 40, u64::MAX] {
        let mut b = good.clone();
        b[24..32].copy_from_slice(&len.to_le_bytes());
        assert!(
            matches!(parse_err(&b), GgufError::Truncated { .. }),
            "len {len}"
        );
    }

    let e = parse_err(&small(&[("k", GV::Raw(13, vec![]))]).to_bytes());
    assert_eq!(
        e,
        GgufError::BadValueType {
            key: "k".into(),
            code: 13
        }
    );
    let e = parse_err(&small(&[("k", GV::Raw(7, vec![2]))]).to_bytes());
    assert_eq!(
        e,
        GgufError::BadBool {
            key: "k".into(),
            value: 2
        }
    );
    let e = parse_err(
        &small(&[(
            "k",
            GV::Raw(8, [2u64.to_le_bytes().to_vec(), vec![0xC3, 0x28]].concat()),
        )])
        .to_bytes(),
    );
    assert!(matches!(e, GgufError::InvalidUtf8 { .. }), "{e}");
    let e = parse_err(&small(&[("k", GV::Raw(9, arr_raw(99, 1, &[0])))]).to_bytes());
    assert_eq!(
        e,
        GgufError::BadValueType {
            key: "k".into(),
            code: 99
        }
    );
    let e = parse_err(&small(&[("k", GV::Raw(9, arr_raw(4, u64::MAX / 2, &[])))]).to_bytes());
    assert!(
        matches!(e, GgufError::Overflow { .. } | GgufError::Truncated { .. }),
        "{e}"
    );
    let e = parse_err(&small(&[("k", GV::Raw(9, arr_raw(8, 1 << 50, &[])))]).to_bytes());
    assert!(matches!(e, GgufError::Truncated { .. }), "{e}");
    // Arrays nested deeper than the limit.
    let mut deep = arr_raw(0, 0, &[]);
    for _ in 0..5 {
        deep = arr_raw(9, 1, &deep);
    }
    let e = parse_err(&small(&[("k", GV::Raw(9, deep))]).to_bytes());
    assert!(matches!(e, GgufError::TooLarge { .. }), "{e}");

    let mut g = small(&[]);
    g.kv.push(("general.architecture".into(), s("again")));
    assert_eq!(
        parse_err(&g.to_bytes()),
        GgufError::DuplicateKey("general.architecture".into())
    );

    for a in [0u32, 3, 1 << 30] {
        let e = parse_err(&small(&[("general.alignment", GV::U32(a))]).to_bytes());
        assert_eq!(e, GgufError::BadAlignment(u64::from(a)));
    }
    let e = parse_err(&small(&[("general.alignment", s("32"))]).to_bytes());
    assert!(matches!(e, GgufError::WrongType { .. }));

    let mut g = small(&[]);
    g.tensor("t.weight", &[3], F32, vec![0; 12]);
    assert_eq!(
        parse_err(&g.to_bytes()),
        GgufError::DuplicateTensor("t.weight".into())
    );

    let mut g = small(&[]);
    g.tensors[0].ggml_type = 5;
    assert_eq!(
        parse_err(&g.to_bytes()),
        GgufError::UnknownTensorType {
            tensor: "t.weight".into(),
            code: 5
        }
    );

    let mut g = small(&[]);
    g.tensors[0].dims = vec![32, 0];
    assert!(matches!(
        parse_err(&g.to_bytes()),
        GgufError::BadShape { .. }
    ));
    let mut g = small(&[]);
    g.tensors[0].dims = vec![1, 1, 1, 1, 32];
    assert!(matches!(
        parse_err(&g.to_bytes()),
        GgufError::BadShape { .. }
    ));
    let mut g = small(&[]);
    g.tensors[0].dims = vec![16, 4];
    assert!(
        matches!(parse_err(&g.to_bytes()), GgufError::BadShape { .. }),
        "rows not whole blocks"
    );
    let mut g = small(&[]);
    g.tensors[0].dims = vec![1 << 32, 1 << 32, 1 << 32];
    g.tensors[0].ggml_type = F32;
    assert!(matches!(
        parse_err(&g.to_bytes()),
        GgufError::Overflow { .. }
    ));

    // Offsets: patch the offset field of the tensor info (after name, n_dims, 2 dims, type).
    let b = small(&[]).to_bytes();
    let info_end = b.windows(8).position(|w| w == b"t.weight").unwrap() + 8 + 4 + 16 + 4 + 8;
    let mut bad = b.clone();
    bad[info_end - 8..info_end].copy_from_slice(&16u64.to_le_bytes());
    assert!(matches!(
        parse_err(&bad),
        GgufError::Misaligned {
            offset: 16,
            alignment: 32,
            ..
        }
    ));
    let mut bad = b.clone();
    bad[info_end - 8..info_end].copy_from_slice(&(1u64 << 20).to_le_bytes());
    assert!(matches!(parse_err(&bad), GgufError::OutOfBounds { .. }));
    let mut bad = b.clone();
    bad[info_end - 8..info_end].copy_from_slice(&(u64::MAX - 31).to_le_bytes());
    assert!(matches!(
        parse_err(&bad),
        GgufError::Overflow { .. } | GgufError::OutOfBounds { .. }
    ));

    let mut g = small(&[]);
    g.tensor("u.weight", &[64], Q8_0, vec![1; 68]);
    let mut b = g.to_bytes();
    // Point the second tensor at the first's data.
    let pos = b.windows(8).position(|w| w == b"u.weight").unwrap() + 8 + 4 + 8 + 4;
    b[pos..pos + 8].copy_from_slice(&0u64.to_le_bytes());
    assert_eq!(
        parse_err(&b),
        GgufError::Overlap {
            first: "t.weight".into(),
            second: "u.weight".into()
        }
    );

    // Truncation anywhere before the end of the data is an error, never a panic.
    for cut in 0..good.len() {
        assert!(Gguf::parse(&good[..cut]).is_err(), "cut at {cut}");
    }
}

#[test]
fn errors_name_the_field() {
    let e = parse_err(&small(&[("my.key", GV::Raw(7, vec![9]))]).to_bytes());
    assert_eq!(
        e.to_string(),
        "GGUF key \"my.key\": bool byte is 9, expected 0 or 1"
    );
    let e = parse_err(b"GGUF\x03\0\0\0\x01\0\0\0\0\0\0\0");
    assert_eq!(
        e.to_string(),
        "GGUF file truncated: key/value count at byte 16 runs past the end"
    );
}
