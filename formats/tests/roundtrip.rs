//! Writer -> reader round trips, writer-side validation, atomic `write_file`, and the
//! metadata accessors.

use pipit_format::blocks::quantize;
use pipit_format::limits::*;
use pipit_format::{DType, FormatError, Metadata, PipitFile, Value, Writer, ALIGN};

fn every_value() -> Vec<(&'static str, Value)> {
    vec![
        ("general.architecture", Value::Str("llama".into())),
        ("v.u8", Value::U8(7)),
        ("v.u32", Value::U32(u32::MAX)),
        ("v.i32", Value::I32(i32::MIN)),
        ("v.u64", Value::U64(u64::MAX)),
        ("v.f32", Value::F32(-1.25e-7)),
        ("v.bool", Value::Bool(false)),
        ("v.str", Value::Str(String::new())),
        ("v.arr_u8", Value::ArrU8(vec![])),
        ("v.arr_u32", Value::ArrU32(vec![0, 1, u32::MAX])),
        ("v.arr_i32", Value::ArrI32(vec![-1])),
        ("v.arr_f32", Value::ArrF32(vec![f32::INFINITY, 0.5])),
        (
            "v.arr_str",
            Value::ArrStr(vec!["".into(), "\u{1F426} pipit".into(), "a b".into()]),
        ),
        (
            "tokenizer.tokens",
            Value::ArrStr((0..10).map(|i| format!("t{i}")).collect()),
        ),
        (
            "tokenizer.scores",
            Value::ArrF32((0..10).map(|i| -(i as f32)).collect()),
        ),
        ("tokenizer.token_types", Value::ArrU8(vec![1; 10])),
        ("tokenizer.eos_id", Value::I32(9)),
        ("tokenizer.eot_ids", Value::ArrI32(vec![8, 9])),
    ]
}

/// Tensors of every dtype and rank 1 to 4, with sizes that need every padding length.
fn tensors() -> Vec<(String, DType, Vec<u64>, Vec<u8>)> {
    let shapes: [&[u64]; 6] = [&[1], &[3], &[2, 32], &[1, 1, 64], &[2, 1, 3, 32], &[5, 96]];
    let mut out = Vec::new();
    let mut seed = 1u32;
    for dtype in DType::ALL {
        for shape in shapes {
            let n: u64 = shape.iter().product();
            if shape[shape.len() - 1] % dtype.block_elems() as u64 != 0 {
                continue;
            }
            let x: Vec<f32> = (0..n)
                .map(|_| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (seed >> 8) as f32 / (1 << 24) as f32 - 0.5
                })
                .collect();
            let name = format!("{}.{}", dtype.name().to_lowercase(), out.len());
            out.push((name, dtype, shape.to_vec(), quantize(dtype, &x).unwrap()));
        }
    }
    out
}

fn writer() -> Writer {
    let mut w = Writer::new();
    for (k, v) in every_value() {
        w.set(k, v);
    }
    for (name, dtype, shape, data) in tensors() {
        w.add_tensor(&name, dtype, &shape, data).unwrap();
    }
    w
}

#[test]
fn round_trip_is_identical() {
    let bytes = writer().to_bytes().unwrap();
    let f = PipitFile::parse(&bytes).unwrap();
    f.verify_data(&bytes).unwrap();
    assert_eq!(f.version, 1);
    assert_eq!(f.file_len, bytes.len() as u64);
    assert_eq!(f.data_offset % ALIGN, 0);
    let got: Vec<(&str, &Value)> = f.metadata.iter().collect();
    let want = every_value();
    assert_eq!(got.len(), want.len());
    for ((gk, gv), (wk, wv)) in got.iter().zip(&want) {
        assert_eq!((gk, *gv), (wk, wv));
    }
    let want = tensors();
    assert_eq!(f.tensors.len(), want.len());
    assert!(want.iter().any(|t| t.2.len() == 4) && want.iter().any(|t| t.3.len() % 64 == 0));
    for (t, (name, dtype, shape, data)) in f.tensors.iter().zip(&want) {
        assert_eq!((&t.name, t.dtype, &t.shape), (name, *dtype, shape));
        assert_eq!(t.offset % ALIGN, 0, "{name}");
        assert_eq!(t.n_elems(), shape.iter().product::<u64>());
        assert_eq!(t.data(&bytes).unwrap(), data.as_slice(), "{name}");
        assert_eq!(f.tensor(name), Some(t));
    }
    assert!(f.tensor("missing").is_none());
    assert!(f.tensor("").is_none());
}

#[test]
fn empty_file_round_trips() {
    let bytes = Writer::new().to_bytes().unwrap();
    assert_eq!(
        bytes.len(),
        128,
        "64-byte header, 4-byte entry count, padding to 128"
    );
    let f = PipitFile::parse(&bytes).unwrap();
    assert!(f.metadata.is_empty() && f.tensors.is_empty());
    assert_eq!((f.data_offset, f.file_len), (128, 128));
}

#[test]
fn write_to_streams_the_same_bytes() {
    let w = writer();
    let mut out = Vec::new();
    w.write_to(&mut out).unwrap();
    assert_eq!(out, w.to_bytes().unwrap());
}

#[test]
fn set_replaces_in_place() {
    let mut w = Writer::new();
    w.set("a", Value::U32(1));
    w.set("b", Value::U32(2));
    w.set("a", Value::Str("x".into()));
    let keys: Vec<&str> = w.metadata().iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["a", "b"]);
    assert_eq!(w.metadata().get("a"), Some(&Value::Str("x".into())));
}

#[test]
fn add_tensor_validates() {
    let mut w = Writer::new();
    w.add_tensor("t", DType::F32, &[2], vec![0; 8]).unwrap();
    let err = |r: Result<(), FormatError>| r.unwrap_err();
    assert_eq!(
        err(w.add_tensor("t", DType::F32, &[2], vec![0; 8])),
        FormatError::DuplicateTensor { name: "t".into() }
    );
    assert_eq!(
        err(w.add_tensor("u", DType::F32, &[2], vec![0; 9])),
        FormatError::SizeMismatch {
            tensor: "u".into(),
            expected: 8,
            found: 9
        }
    );
    assert!(matches!(
        err(w.add_tensor("", DType::F32, &[2], vec![0; 8])),
        FormatError::EmptyString { .. }
    ));
    let long = "x".repeat(MAX_NAME_LEN as usize + 1);
    assert!(matches!(
        err(w.add_tensor(&long, DType::F32, &[2], vec![0; 8])),
        FormatError::LimitExceeded { .. }
    ));
    assert!(matches!(
        err(w.add_tensor("u", DType::F32, &[], vec![])),
        FormatError::EmptyShape { .. }
    ));
    assert!(matches!(
        err(w.add_tensor("u", DType::F32, &[1, 1, 1, 1, 1], vec![0; 4])),
        FormatError::LimitExceeded { .. }
    ));
    assert!(matches!(
        err(w.add_tensor("u", DType::F32, &[2, 0], vec![])),
        FormatError::ZeroDim { axis: 1, .. }
    ));
    assert!(matches!(
        err(w.add_tensor("u", DType::Q4_0, &[2, 16], vec![0; 18])),
        FormatError::NotWholeBlocks { .. }
    ));
    assert!(matches!(
        err(w.add_tensor("u", DType::F32, &[1 << 63], vec![])),
        FormatError::SizeOverflow { .. }
    ));
    // Nothing failed was added.
    assert_eq!(
        PipitFile::parse(&w.to_bytes().unwrap())
            .unwrap()
            .tensors
            .len(),
        1
    );
}

#[test]
fn to_bytes_validates_metadata() {
    let check = |key: &str, v: Value, pred: &dyn Fn(&FormatError) -> bool| {
        let mut w = Writer::new();
        w.set(
            "tokenizer.tokens",
            Value::ArrStr(vec!["a".into(), "b".into()]),
        );
        w.set(key, v);
        let e = w.to_bytes().unwrap_err();
        assert!(pred(&e), "{key}: {e:?}");
    };
    check("tokenizer.bos_id", Value::I32(2), &|e| {
        matches!(e, FormatError::BadTokenId { id: 2, .. })
    });
    check("tokenizer.tokens", Value::Str("a".into()), &|e| {
        matches!(e, FormatError::WrongType { .. })
    });
    check("tokenizer.token_types", Value::ArrU8(vec![1]), &|e| {
        matches!(e, FormatError::LengthMismatch { .. })
    });
    check("", Value::U8(0), &|e| {
        matches!(e, FormatError::EmptyString { .. })
    });
    check(&"k".repeat(MAX_KEY_LEN as usize + 1), Value::U8(0), &|e| {
        matches!(e, FormatError::LimitExceeded { .. })
    });
    let long = "s".repeat(MAX_STRING_LEN as usize + 1);
    check("s", Value::Str(long.clone()), &|e| {
        matches!(e, FormatError::LimitExceeded { .. })
    });
    check(
        "s",
        Value::ArrStr(vec![long]),
        &|e| matches!(e, FormatError::LimitExceeded { field, .. } if field.contains("element 0")),
    );
    check(
        "a",
        Value::ArrU8(vec![0; MAX_ARRAY_LEN as usize + 1]),
        &|e| matches!(e, FormatError::LimitExceeded { .. }),
    );
    let mut w = Writer::new();
    for i in 0..=MAX_META_ENTRIES {
        w.set(&format!("k{i}"), Value::U8(0));
    }
    assert!(matches!(
        w.to_bytes(),
        Err(FormatError::LimitExceeded { .. })
    ));
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("pipit-format-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn dir_entries(d: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn write_file_is_atomic() {
    let d = temp_dir("write");
    let path = d.join("m.pipit");
    let w = writer();
    w.write_file(&path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), w.to_bytes().unwrap());
    assert_eq!(
        dir_entries(&d),
        ["m.pipit"],
        "no temporary file is left behind"
    );

    // Overwriting replaces the old file.
    Writer::new().write_file(&path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap().len(), 128);

    // A writer error leaves the old file untouched and no temporary file.
    let mut bad = Writer::new();
    bad.set("tokenizer.bos_id", Value::I32(0));
    let e = bad.write_file(&path).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    assert!(e.to_string().contains("tokenizer.tokens"));
    assert_eq!(std::fs::read(&path).unwrap().len(), 128);
    assert_eq!(dir_entries(&d), ["m.pipit"]);

    // An unwritable location fails cleanly.
    assert!(Writer::new()
        .write_file(d.join("no/such/dir/m.pipit"))
        .is_err());
    assert!(Writer::new().write_file(&d).is_err());
    assert_eq!(dir_entries(&d), ["m.pipit"]);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn metadata_accessors() {
    let mut m = Metadata::new();
    for (k, v) in every_value() {
        m.set(k, v);
    }
    assert_eq!(m.get_u8("v.u8").unwrap(), 7);
    assert_eq!(m.get_u32("v.u32").unwrap(), u32::MAX);
    assert_eq!(m.get_i32("v.i32").unwrap(), i32::MIN);
    assert_eq!(m.get_u64("v.u64").unwrap(), u64::MAX);
    assert_eq!(m.get_f32("v.f32").unwrap(), -1.25e-7);
    assert!(!m.get_bool("v.bool").unwrap());
    assert_eq!(m.get_str("v.str").unwrap(), "");
    assert!(m.get_arr_u8("v.arr_u8").unwrap().is_empty());
    assert_eq!(m.get_arr_u32("v.arr_u32").unwrap(), [0, 1, u32::MAX]);
    assert_eq!(m.get_arr_i32("v.arr_i32").unwrap(), [-1]);
    assert_eq!(m.get_arr_f32("v.arr_f32").unwrap(), [f32::INFINITY, 0.5]);
    assert_eq!(m.get_arr_str("v.arr_str").unwrap()[1], "\u{1F426} pipit");
    assert_eq!(
        m.get_u32("nope"),
        Err(FormatError::MissingKey { key: "nope".into() })
    );
    assert_eq!(
        m.get_u32("v.u8"),
        Err(FormatError::WrongType {
            key: "v.u8".into(),
            expected: "u32",
            found: "u8"
        })
    );
    assert_eq!(m.opt_f32("nope"), Ok(None));
    assert_eq!(m.opt_f32("v.f32"), Ok(Some(-1.25e-7)));
    assert!(matches!(
        m.opt_str("v.u32"),
        Err(FormatError::WrongType {
            expected: "str",
            found: "u32",
            ..
        })
    ));
    assert_eq!(m.get("v.arr_str").and_then(Value::array_len), Some(3));
    let e = m.get_arr_str("v.arr_f32").unwrap_err().to_string();
    assert!(
        e.contains("v.arr_f32") && e.contains("[f32]") && e.contains("[str]"),
        "{e}"
    );
}

#[test]
fn dtype_codes_and_sizes() {
    for (code, dtype) in DType::ALL.into_iter().enumerate() {
        assert_eq!(DType::from_code(code as u32), Some(dtype));
        assert_eq!(dtype.code(), code as u32);
    }
    assert_eq!(DType::from_code(10), None);
    assert_eq!(DType::from_code(u32::MAX), None);
    let sizes: Vec<(usize, usize)> = DType::ALL
        .iter()
        .map(|d| (d.block_elems(), d.block_bytes()))
        .collect();
    assert_eq!(
        sizes,
        [
            (1, 4),
            (1, 2),
            (32, 34),
            (32, 18),
            (32, 20),
            (32, 22),
            (32, 24),
            (256, 144),
            (256, 176),
            (256, 210)
        ]
    );
    for (i, d) in DType::QUANTIZED.into_iter().enumerate() {
        assert!(d.is_quantized());
        assert_eq!(d.quant_index(), Some(i));
    }
    assert_eq!(DType::F16.quant_index(), None);
    assert_eq!(DType::Q4_1.bytes_for(64), Some(40));
    assert_eq!(DType::Q4_1.bytes_for(33), None);
    assert_eq!(DType::F32.bytes_for(1 << 62), None);
    assert_eq!(DType::Q8_0.bytes_for(0), Some(0));
    assert_eq!(DType::Q8_0.to_string(), "Q8_0");
}
