//! The golden file `tests/data/golden.pipit`: a checked-in file of every value type and
//! dtype whose bytes and decoded values are asserted here and quoted in SPEC.md, so the
//! spec, the writer and the reader cannot drift apart.
//!
//! Regenerate (only after a deliberate format change): `PIPIT_BLESS=1 cargo test -p
//! pipit-format --test golden generator`, then update SPEC.md's hex dump and the
//! constants below.

use pipit_format::blocks::{dequantize, quantize};
use pipit_format::{DType, PipitFile, Value, Writer, MAGIC};

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/golden.pipit");

/// The inputs of SPEC.md's worked examples (32 values each).
fn q8_input() -> Vec<f32> {
    let mut x = vec![0.0, 1.0, -2.0, 127.0, 2.5, -2.5, 3.49, -126.5];
    x.resize(32, 0.0);
    x
}

fn q4_0_input() -> Vec<f32> {
    let mut x = vec![-8.0, 7.0, 7.6, 0.0, 0.5, -0.5, -3.2];
    x.resize(32, 0.0);
    x[16] = 1.0;
    x[17] = -1.0;
    x
}

fn q4_1_input() -> Vec<f32> {
    let mut x = vec![-1.0, 14.0, 0.0, 2.5, 6.2];
    x.resize(32, 0.0);
    x[16] = 3.0;
    x
}

fn q5_0_input() -> Vec<f32> {
    let mut x = vec![-16.0, 15.0, 15.6, 0.0, 0.5, -0.5, -3.2];
    x.resize(32, 0.0);
    x[16] = 1.0;
    x[17] = -1.0;
    x
}

fn q5_1_input() -> Vec<f32> {
    let mut x = vec![-1.0, 30.0, 0.0, 2.5, 6.2];
    x.resize(32, 0.0);
    x[16] = 3.0;
    x
}

/// SPEC.md's Q4_K block, or with `five` its Q5_K block (the same plus `qh`).
fn k_block(five: bool) -> Vec<u8> {
    let mut b = vec![0x00, 0x3C, 0x00, 0x38];
    b.extend_from_slice(&[0x41, 0, 0, 0, 0x82, 0, 0, 0, 0x11, 0, 0, 0]);
    if five {
        b.push(0x11);
        b.resize(48, 0);
    }
    let qs = b.len();
    b.resize(qs + 128, 0);
    b[qs] = 0x53;
    b[qs + 64] = 0xA7;
    b
}

fn k_values(five: bool) -> Vec<f32> {
    let mut v = vec![0.0; 256];
    v[..32].fill(-1.0);
    v[128..160].fill(-16.5);
    v[0] = if five { 18.0 } else { 2.0 };
    v[128] = if five { 374.5 } else { 102.5 };
    v
}

/// SPEC.md's Q6_K block.
fn q6_k_block() -> Vec<u8> {
    let mut b = vec![0u8; 210];
    b[0] = 0x21;
    b[128] = 0x23;
    b[192] = 2;
    b[194] = 0xFF;
    b[196] = 1;
    b[208..].copy_from_slice(&[0x00, 0x38]);
    b
}

const F32_VALUES: [f32; 6] = [1.0, -1.5, 0.25, 3.0, 100.0, -0.0];
const F16_VALUES: [f32; 4] = [1.0, -2.0, 65504.0, 5.960_464_5e-8];

/// The generator of the golden file.
fn golden() -> Writer {
    let mut w = Writer::new();
    w.set("general.architecture", Value::Str("golden".into()));
    w.set("test.u8", Value::U8(200));
    w.set("test.u32", Value::U32(0xDEAD_BEEF));
    w.set("test.i32", Value::I32(-7));
    w.set("test.u64", Value::U64(1 << 40));
    w.set("test.f32", Value::F32(0.5));
    w.set("test.bool", Value::Bool(true));
    w.set("test.str", Value::Str("h\u{e9}llo".into()));
    w.set("test.arr_u8", Value::ArrU8(vec![1, 2, 3]));
    w.set("test.arr_u32", Value::ArrU32(vec![1, 70000]));
    w.set("test.arr_i32", Value::ArrI32(vec![-1, 2]));
    w.set("test.arr_f32", Value::ArrF32(vec![1.5, -0.25]));
    w.set(
        "tokenizer.tokens",
        Value::ArrStr(vec!["<s>".into(), "a".into(), "b".into()]),
    );
    w.set("tokenizer.bos_id", Value::I32(0));
    w.set("tokenizer.eos_id", Value::I32(-1));
    w.add_tensor(
        "f32",
        DType::F32,
        &[2, 3],
        quantize(DType::F32, &F32_VALUES).unwrap(),
    )
    .unwrap();
    w.add_tensor(
        "f16",
        DType::F16,
        &[4],
        quantize(DType::F16, &F16_VALUES).unwrap(),
    )
    .unwrap();
    w.add_tensor(
        "q8_0",
        DType::Q8_0,
        &[1, 32],
        quantize(DType::Q8_0, &q8_input()).unwrap(),
    )
    .unwrap();
    w.add_tensor(
        "q4_0",
        DType::Q4_0,
        &[1, 32],
        quantize(DType::Q4_0, &q4_0_input()).unwrap(),
    )
    .unwrap();
    w.add_tensor(
        "q4_1",
        DType::Q4_1,
        &[1, 32],
        quantize(DType::Q4_1, &q4_1_input()).unwrap(),
    )
    .unwrap();
    w.add_tensor(
        "q5_0",
        DType::Q5_0,
        &[1, 32],
        quantize(DType::Q5_0, &q5_0_input()).unwrap(),
    )
    .unwrap();
    w.add_tensor(
        "q5_1",
        DType::Q5_1,
        &[1, 32],
        quantize(DType::Q5_1, &q5_1_input()).unwrap(),
    )
    .unwrap();
    w.add_tensor("q4_k", DType::Q4_K, &[1, 256], k_block(false))
        .unwrap();
    w.add_tensor("q5_k", DType::Q5_K, &[1, 256], k_block(true))
        .unwrap();
    w.add_tensor("q6_k", DType::Q6_K, &[1, 256], q6_k_block())
        .unwrap();
    w
}

fn golden_bytes() -> Vec<u8> {
    std::fs::read(PATH).unwrap_or_else(|e| panic!("{PATH}: {e} (create it with PIPIT_BLESS=1)"))
}

#[test]
fn generator_reproduces_the_golden_file() {
    let generated = golden().to_bytes().unwrap();
    if std::env::var_os("PIPIT_BLESS").is_some() {
        std::fs::write(PATH, &generated).unwrap();
    }
    assert_eq!(
        golden_bytes(),
        generated,
        "writer output differs from {PATH}"
    );
}

/// The header as quoted in SPEC.md ("Worked example: the golden file").
#[test]
fn header_bytes_match_spec() {
    let bytes = golden_bytes();
    let header: [u8; 64] = [
        0x89, b'P', b'I', b'P', b'I', b'T', b'\r', b'\n', // magic
        0x01, 0x00, 0x00, 0x00, // version 1
        0x00, 0x00, 0x00, 0x00, // flags
        0x83, 0x03, 0, 0, 0, 0, 0, 0, // meta_len = 899
        0x00, 0x04, 0, 0, 0, 0, 0, 0, // data_offset = 1024 = 64 + 899 rounded up to 64
        0x12, 0x04, 0, 0, 0, 0, 0, 0, // data_len = 1042 = 832 + 210 (last tensor q6_k)
        0x12, 0x08, 0, 0, 0, 0, 0, 0, // file_len = 2066 = 1024 + 1042
        0x0A, 0x00, 0x00, 0x00, // n_tensors = 10
        0, 0, 0, 0, 0, 0, 0, 0, // reserved
        0x45, 0xBD, 0xDA, 0xEE, // header_crc32c = 0xEEDABD45
    ];
    assert_eq!(&bytes[..8], &MAGIC);
    assert_eq!(bytes[..64], header);
    assert_eq!(bytes.len(), 2066);
}

/// The metadata and directory entry examples of SPEC.md.
#[test]
fn entry_bytes_match_spec() {
    let bytes = golden_bytes();
    let mut bos = vec![0x10, 0, 0, 0];
    bos.extend_from_slice(b"tokenizer.bos_id");
    bos.extend_from_slice(&[0x02, 0, 0, 0, 0]);
    assert!(bytes.windows(bos.len()).any(|w| w == bos));
    let mut f16 = vec![0x03, 0, 0, 0, b'f', b'1', b'6', 1, 0, 0, 0, 1, 0, 0, 0];
    for v in [4u64, 64, 8] {
        f16.extend_from_slice(&v.to_le_bytes());
    }
    f16.extend_from_slice(&[0x25, 0xC4, 0x4B, 0x20]);
    assert!(bytes.windows(f16.len()).any(|w| w == f16));
    assert_eq!(
        pipit_format::crc32c::crc32c(&[0x00, 0x3C, 0x00, 0xC0, 0xFF, 0x7B, 0x01, 0x00]),
        0x204B_C425
    );
}

#[test]
fn decodes_to_the_expected_values() {
    let bytes = golden_bytes();
    let f = PipitFile::parse(&bytes).unwrap();
    f.verify_data(&bytes).unwrap();
    let m = &f.metadata;
    assert_eq!(m.len(), 15);
    assert_eq!(m.get_str("general.architecture").unwrap(), "golden");
    assert_eq!(m.get_u8("test.u8").unwrap(), 200);
    assert_eq!(m.get_u32("test.u32").unwrap(), 0xDEAD_BEEF);
    assert_eq!(m.get_i32("test.i32").unwrap(), -7);
    assert_eq!(m.get_u64("test.u64").unwrap(), 1 << 40);
    assert_eq!(m.get_f32("test.f32").unwrap(), 0.5);
    assert!(m.get_bool("test.bool").unwrap());
    assert_eq!(m.get_str("test.str").unwrap(), "h\u{e9}llo");
    assert_eq!(m.get_arr_u8("test.arr_u8").unwrap(), [1, 2, 3]);
    assert_eq!(m.get_arr_u32("test.arr_u32").unwrap(), [1, 70000]);
    assert_eq!(m.get_arr_i32("test.arr_i32").unwrap(), [-1, 2]);
    assert_eq!(m.get_arr_f32("test.arr_f32").unwrap(), [1.5, -0.25]);
    assert_eq!(
        m.get_arr_str("tokenizer.tokens").unwrap(),
        ["<s>", "a", "b"]
    );
    assert_eq!(m.get_i32("tokenizer.bos_id").unwrap(), 0);
    assert_eq!(m.get_i32("tokenizer.eos_id").unwrap(), -1);

    let names: Vec<&str> = f.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        ["f32", "f16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k", "q5_k", "q6_k"]
    );
    let offsets: Vec<u64> = f.tensors.iter().map(|t| t.offset - f.data_offset).collect();
    assert_eq!(offsets, [0, 64, 128, 192, 256, 320, 384, 448, 640, 832]);
    let decode = |name: &str| {
        let t = f.tensor(name).unwrap();
        let mut out = vec![0.0; t.n_elems() as usize];
        dequantize(t.dtype, t.data(&bytes).unwrap(), &mut out).unwrap();
        out
    };
    assert_eq!(f.tensor("f32").unwrap().shape, [2, 3]);
    assert_eq!(decode("f32"), F32_VALUES);
    assert!(decode("f32")[5].is_sign_negative());
    assert_eq!(decode("f16"), F16_VALUES);
    let mut q8 = vec![0.0, 1.0, -2.0, 127.0, 3.0, -3.0, 3.0, -127.0];
    q8.resize(32, 0.0);
    assert_eq!(decode("q8_0"), q8);
    let mut q40 = vec![-8.0, 7.0, 7.0, 0.0, 1.0, 0.0, -3.0];
    q40.resize(32, 0.0);
    q40[16] = 1.0;
    q40[17] = -1.0;
    assert_eq!(decode("q4_0"), q40);
    let mut q41 = vec![-1.0, 14.0, 0.0, 3.0, 6.0];
    q41.resize(32, 0.0);
    q41[16] = 3.0;
    assert_eq!(decode("q4_1"), q41);
    let mut q50 = vec![-16.0, 15.0, 15.0, 0.0, 1.0, 0.0, -3.0];
    q50.resize(32, 0.0);
    q50[16] = 1.0;
    q50[17] = -1.0;
    assert_eq!(decode("q5_0"), q50);
    let mut q51 = vec![-1.0, 30.0, 0.0, 3.0, 6.0];
    q51.resize(32, 0.0);
    q51[16] = 3.0;
    assert_eq!(decode("q5_1"), q51);
    assert_eq!(decode("q4_k"), k_values(false));
    assert_eq!(decode("q5_k"), k_values(true));
    let mut q6 = vec![0.0; 256];
    q6[..16].fill(-32.0);
    q6[0] = 17.0;
    q6[32..48].fill(16.0);
    q6[64..80].fill(-16.0);
    q6[64] = 1.0;
    assert_eq!(decode("q6_k"), q6);
}
