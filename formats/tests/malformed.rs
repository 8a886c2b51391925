//! One hand-made bad file per rule of SPEC.md. Each file is built byte by byte by [`Raw`]
//! with correct checksums (unless the checksum is what is under test), so the rule's own
//! check is what rejects it; each test asserts the specific error variant.

use pipit_format::blocks::quantize;
use pipit_format::crc32c::{crc32c, update};
use pipit_format::limits::*;
use pipit_format::{DType, FormatError, PipitFile, Value, Writer, MAGIC};

struct Entry {
    name: Vec<u8>,
    dtype: u32,
    rank: Option<u32>,
    dims: Vec<u64>,
    offset: u64,
    size: u64,
    crc: Option<u32>,
}

/// A file described field by field; `None` overrides mean "the correct value".
struct Raw {
    magic: [u8; 8],
    version: u32,
    flags: u32,
    reserved: [u8; 8],
    kv_count: Option<u32>,
    kvs: Vec<(Vec<u8>, Vec<u8>)>,
    entries: Vec<Entry>,
    meta_trailer: Vec<u8>,
    n_tensors: Option<u32>,
    meta_len: Option<u64>,
    data_offset: Option<u64>,
    data_len: Option<u64>,
    file_len: Option<u64>,
    crc: Option<u32>,
    data: Vec<u8>,
}

fn v_i32(x: i32) -> Vec<u8> {
    let mut v = vec![2];
    v.extend_from_slice(&x.to_le_bytes());
    v
}

fn v_str(s: &[u8]) -> Vec<u8> {
    let mut v = vec![6];
    v.extend_from_slice(&(s.len() as u32).to_le_bytes());
    v.extend_from_slice(s);
    v
}

fn v_arr(elem: u8, count: u64, body: &[u8]) -> Vec<u8> {
    let mut v = vec![7, elem];
    v.extend_from_slice(&count.to_le_bytes());
    v.extend_from_slice(body);
    v
}

fn v_arr_str(items: &[&[u8]]) -> Vec<u8> {
    let mut body = Vec::new();
    for s in items {
        body.extend_from_slice(&(s.len() as u32).to_le_bytes());
        body.extend_from_slice(s);
    }
    v_arr(6, items.len() as u64, &body)
}

fn v_arr_i32(items: &[i32]) -> Vec<u8> {
    let body: Vec<u8> = items.iter().flat_map(|x| x.to_le_bytes()).collect();
    v_arr(2, items.len() as u64, &body)
}

fn kv(key: &str, value: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
    (key.as_bytes().to_vec(), value)
}

fn entry(name: &str, dtype: DType, dims: &[u64], offset: u64) -> Entry {
    let n: u64 = dims.iter().product();
    Entry {
        name: name.as_bytes().to_vec(),
        dtype: dtype.code(),
        rank: None,
        dims: dims.to_vec(),
        offset,
        size: dtype.bytes_for(n).unwrap(),
        crc: None,
    }
}

fn a_data() -> Vec<u8> {
    quantize(DType::F32, &[1.0, 2.0, 3.0, 4.0]).unwrap()
}

fn b_data() -> Vec<u8> {
    quantize(
        DType::Q8_0,
        &(0..32).map(|i| i as f32 - 16.0).collect::<Vec<_>>(),
    )
    .unwrap()
}

impl Raw {
    /// A valid file: a 3-token vocabulary with BOS 0, tensor `a` (F32 [4]) at 0 and
    /// tensor `b` (Q8_0 [1, 32]) at 64.
    fn valid() -> Raw {
        let mut data = a_data();
        data.resize(64, 0);
        data.extend_from_slice(&b_data());
        Raw {
            magic: MAGIC,
            version: 1,
            flags: 0,
            reserved: [0; 8],
            kv_count: None,
            kvs: vec![
                kv("general.architecture", v_str(b"llama")),
                kv("tokenizer.tokens", v_arr_str(&[b"<s>", b"a", b"b"])),
                kv("tokenizer.bos_id", v_i32(0)),
            ],
            entries: vec![
                entry("a", DType::F32, &[4], 0),
                entry("b", DType::Q8_0, &[1, 32], 64),
            ],
            meta_trailer: Vec::new(),
            n_tensors: None,
            meta_len: None,
            data_offset: None,
            data_len: None,
            file_len: None,
            crc: None,
            data,
        }
    }

    fn meta(&self) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&self.kv_count.unwrap_or(self.kvs.len() as u32).to_le_bytes());
        for (k, v) in &self.kvs {
            m.extend_from_slice(&(k.len() as u32).to_le_bytes());
            m.extend_from_slice(k);
            m.extend_from_slice(v);
        }
        for e in &self.entries {
            m.extend_from_slice(&(e.name.len() as u32).to_le_bytes());
            m.extend_from_slice(&e.name);
            m.extend_from_slice(&e.dtype.to_le_bytes());
            m.extend_from_slice(&e.rank.unwrap_or(e.dims.len() as u32).to_le_bytes());
            e.dims
                .iter()
                .for_each(|d| m.extend_from_slice(&d.to_le_bytes()));
            m.extend_from_slice(&e.offset.to_le_bytes());
            m.extend_from_slice(&e.size.to_le_bytes());
            let crc = e.crc.unwrap_or_else(|| {
                let (o, s) = (e.offset as usize, e.size as usize);
                self.data.get(o..o.saturating_add(s)).map_or(0, crc32c)
            });
            m.extend_from_slice(&crc.to_le_bytes());
        }
        m.extend_from_slice(&self.meta_trailer);
        m
    }

    fn build(&self) -> Vec<u8> {
        let meta = self.meta();
        let aligned = (64 + meta.len()).div_ceil(64) * 64;
        let meta_len = self.meta_len.unwrap_or(meta.len() as u64);
        let data_offset = self.data_offset.unwrap_or(aligned as u64);
        let data_len = self.data_len.unwrap_or(self.data.len() as u64);
        let mut b = Vec::new();
        b.extend_from_slice(&self.magic);
        b.extend_from_slice(&self.version.to_le_bytes());
        b.extend_from_slice(&self.flags.to_le_bytes());
        b.extend_from_slice(&meta_len.to_le_bytes());
        b.extend_from_slice(&data_offset.to_le_bytes());
        b.extend_from_slice(&data_len.to_le_bytes());
        b.extend_from_slice(
            &self
                .file_len
                .unwrap_or(data_offset.wrapping_add(data_len))
                .to_le_bytes(),
        );
        b.extend_from_slice(
            &self
                .n_tensors
                .unwrap_or(self.entries.len() as u32)
                .to_le_bytes(),
        );
        b.extend_from_slice(&self.reserved);
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(&meta);
        b.resize(aligned, 0);
        b.extend_from_slice(&self.data);
        fix_crc(&mut b);
        if let Some(crc) = self.crc {
            b[60..64].copy_from_slice(&crc.to_le_bytes());
        }
        b
    }
}

/// Stores the correct header checksum over the bytes the reader will cover.
fn fix_crc(b: &mut [u8]) {
    let meta_len = u64::from_le_bytes(b[16..24].try_into().unwrap());
    let end = 64usize
        .saturating_add(meta_len.min(b.len() as u64) as usize)
        .min(b.len());
    let crc = update(crc32c(&b[..60]), &b[64..end]);
    b[60..64].copy_from_slice(&crc.to_le_bytes());
}

fn parse(raw: &Raw) -> Result<PipitFile, FormatError> {
    PipitFile::parse(&raw.build())
}

/// Asserts the error and that its message is informative.
fn rejects(raw: &Raw, check: impl Fn(&FormatError) -> bool) -> FormatError {
    let bytes = raw.build();
    let err = PipitFile::parse(&bytes).expect_err("the file must be rejected");
    assert!(check(&err), "unexpected error: {err:?}");
    assert!(err.to_string().len() > 10);
    err
}

#[test]
fn baseline_is_valid_and_equals_writer_output() {
    let bytes = Raw::valid().build();
    let f = PipitFile::parse(&bytes).unwrap();
    f.verify_data(&bytes).unwrap();
    assert_eq!(f.tensors.len(), 2);
    let mut w = Writer::new();
    w.set("general.architecture", Value::Str("llama".into()));
    w.set(
        "tokenizer.tokens",
        Value::ArrStr(vec!["<s>".into(), "a".into(), "b".into()]),
    );
    w.set("tokenizer.bos_id", Value::I32(0));
    w.add_tensor("a", DType::F32, &[4], a_data()).unwrap();
    w.add_tensor("b", DType::Q8_0, &[1, 32], b_data()).unwrap();
    assert_eq!(
        w.to_bytes().unwrap(),
        bytes,
        "the hand-made layout must equal the writer's"
    );
}

#[test]
fn bad_magic() {
    let mut r = Raw::valid();
    r.magic = *b"GGUF\x03\0\0\0";
    rejects(
        &r,
        |e| matches!(e, FormatError::BadMagic { found } if found == b"GGUF\x03\0\0\0"),
    );
}

#[test]
fn bad_version() {
    for v in [0, 2, u32::MAX] {
        let mut r = Raw::valid();
        r.version = v;
        rejects(&r, |e| *e == FormatError::UnsupportedVersion { found: v });
    }
}

#[test]
fn unknown_flags_and_reserved_bytes() {
    let mut r = Raw::valid();
    r.flags = 4;
    rejects(&r, |e| *e == FormatError::UnknownFlags { flags: 4 });
    let mut r = Raw::valid();
    r.reserved[3] = 9;
    rejects(&r, |e| {
        *e == FormatError::NonZeroReserved {
            offset: 55,
            value: 9,
        }
    });
}

#[test]
fn truncated() {
    let bytes = Raw::valid().build();
    let n = bytes.len() as u64;
    for cut in [0, 1, 63] {
        assert_eq!(
            PipitFile::parse(&bytes[..cut]).unwrap_err(),
            FormatError::Truncated {
                what: "header",
                needed: 64,
                actual: cut as u64
            }
        );
    }
    for cut in [64, 100, bytes.len() - 1] {
        assert!(matches!(
            PipitFile::parse(&bytes[..cut]).unwrap_err(),
            FormatError::Truncated { needed, actual, .. } if needed == n && actual == cut as u64
        ));
    }
}

#[test]
fn trailing_data() {
    let mut bytes = Raw::valid().build();
    bytes.push(0);
    let n = bytes.len() as u64;
    assert_eq!(
        PipitFile::parse(&bytes).unwrap_err(),
        FormatError::TrailingData {
            file_len: n - 1,
            actual: n
        }
    );
}

#[test]
fn header_sizes_inconsistent() {
    let good = Raw::valid().build();
    let data_offset = u64::from_le_bytes(good[24..32].try_into().unwrap());
    let mut r = Raw::valid();
    r.data_offset = Some(data_offset + 64);
    rejects(&r, |e| {
        *e == FormatError::BadDataOffset {
            found: data_offset + 64,
            expected: data_offset,
        }
    });
    let mut r = Raw::valid();
    r.file_len = Some(good.len() as u64);
    r.data_len = Some(99);
    rejects(&r, |e| {
        matches!(e, FormatError::BadDataLen { data_len: 99, .. })
    });
    let mut r = Raw::valid();
    r.data_len = Some(u64::MAX);
    r.file_len = Some(7);
    rejects(&r, |e| {
        matches!(
            e,
            FormatError::BadDataLen {
                data_len: u64::MAX,
                file_len: 7,
                ..
            }
        )
    });
}

#[test]
fn bad_header_checksum() {
    let mut r = Raw::valid();
    let good = u32::from_le_bytes(r.build()[60..64].try_into().unwrap());
    r.crc = Some(good ^ 1);
    rejects(&r, |e| {
        *e == FormatError::HeaderChecksum {
            stored: good ^ 1,
            computed: good,
        }
    });
}

#[test]
fn bad_tensor_checksum_found_by_verify_data() {
    let mut r = Raw::valid();
    let good = crc32c(&b_data());
    r.entries[1].crc = Some(good ^ 0x100);
    let bytes = r.build();
    let f = PipitFile::parse(&bytes).expect("parse does not check tensor data");
    let err = f.verify_data(&bytes).unwrap_err();
    assert_eq!(
        err,
        FormatError::TensorChecksum {
            tensor: "b".into(),
            stored: good ^ 0x100,
            computed: good
        }
    );
    assert!(err.to_string().contains("'b'"));
    // A flipped data bit with an intact directory is caught the same way.
    let mut bytes = Raw::valid().build();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x10;
    let f = PipitFile::parse(&bytes).unwrap();
    assert!(
        matches!(f.verify_data(&bytes), Err(FormatError::TensorChecksum { tensor, .. }) if tensor == "b")
    );
    assert!(matches!(
        f.verify_data(&bytes[..last]),
        Err(FormatError::Truncated { .. })
    ));
}

#[test]
fn nonzero_padding() {
    let r = Raw::valid();
    let mut bytes = r.build();
    let meta_end = 64 + r.meta().len();
    assert_ne!(meta_end % 64, 0, "the baseline must have metadata padding");
    bytes[meta_end] = 1;
    assert_eq!(
        PipitFile::parse(&bytes).unwrap_err(),
        FormatError::NonZeroPadding {
            offset: meta_end as u64,
            value: 1
        }
    );
    let mut r = Raw::valid();
    r.data[16] = 0xEE;
    let data_offset = u64::from_le_bytes(r.build()[24..32].try_into().unwrap());
    rejects(&r, |e| {
        *e == FormatError::NonZeroPadding {
            offset: data_offset + 16,
            value: 0xEE,
        }
    });
}

#[test]
fn directory_runs_past_metadata_section() {
    let mut r = Raw::valid();
    r.n_tensors = Some(3);
    rejects(
        &r,
        |e| matches!(e, FormatError::MetaTruncated { field, .. } if field == "length of name of tensor 2"),
    );
    let mut r = Raw::valid();
    r.kvs.push(kv("tokenizer.eos_id", vec![2, 1]));
    r.entries.clear();
    r.data.clear();
    rejects(
        &r,
        |e| matches!(e, FormatError::MetaTruncated { field, .. } if field.contains("tokenizer.eos_id")),
    );
}

#[test]
fn metadata_section_with_unused_bytes() {
    let mut r = Raw::valid();
    r.meta_trailer = vec![0; 5];
    rejects(&r, |e| {
        matches!(e, FormatError::MetaTrailing { unused: 5, .. })
    });
}

fn limit_field(e: &FormatError, want: &str) -> bool {
    matches!(e, FormatError::LimitExceeded { field, value, limit } if field.contains(want) && value > limit)
}

#[test]
fn counts_beyond_limits() {
    let mut r = Raw::valid();
    r.n_tensors = Some(MAX_TENSORS as u32 + 1);
    rejects(&r, |e| limit_field(e, "n_tensors"));
    let mut r = Raw::valid();
    r.meta_len = Some(MAX_HEADER_BYTES);
    rejects(&r, |e| limit_field(e, "meta_len"));
    let mut r = Raw::valid();
    r.meta_len = Some(u64::MAX);
    rejects(&r, |e| limit_field(e, "meta_len"));
    let mut r = Raw::valid();
    r.kv_count = Some(MAX_META_ENTRIES as u32 + 1);
    rejects(&r, |e| limit_field(e, "metadata entry count"));
    let mut r = Raw::valid();
    r.kvs.push((vec![b'k'; MAX_KEY_LEN as usize + 1], v_i32(1)));
    rejects(&r, |e| limit_field(e, "key of metadata entry 3"));
    let mut r = Raw::valid();
    r.entries[1].name = vec![b'n'; MAX_NAME_LEN as usize + 1];
    rejects(&r, |e| limit_field(e, "name of tensor 1"));
    let mut r = Raw::valid();
    let mut big = vec![6];
    big.extend_from_slice(&(MAX_STRING_LEN as u32 + 1).to_le_bytes());
    r.kvs.push(kv("general.name", big));
    rejects(&r, |e| limit_field(e, "value of 'general.name'"));
    let mut r = Raw::valid();
    r.kvs.push(kv("test.arr", v_arr(0, MAX_ARRAY_LEN + 1, &[])));
    rejects(&r, |e| limit_field(e, "element count of 'test.arr'"));
    let mut r = Raw::valid();
    r.kvs.push(kv("test.arr", v_arr(0, u64::MAX, &[])));
    rejects(&r, |e| limit_field(e, "element count of 'test.arr'"));
    let mut r = Raw::valid();
    r.entries[0].rank = Some(5);
    r.entries[0].dims = vec![1, 1, 1, 1, 4];
    rejects(&r, |e| limit_field(e, "rank of tensor 'a'"));
    let mut r = Raw::valid();
    r.entries[0].rank = Some(u32::MAX);
    rejects(&r, |e| limit_field(e, "rank of tensor 'a'"));
}

#[test]
fn vocabulary_beyond_limit() {
    let mut r = Raw::valid();
    let n = MAX_VOCAB + 1;
    r.kvs[1] = kv("tokenizer.tokens", v_arr(6, n, &vec![0u8; 4 * n as usize]));
    rejects(&r, |e| limit_field(e, "vocabulary"));
}

#[test]
fn array_count_checked_against_remaining_bytes_before_allocating() {
    let mut r = Raw::valid();
    r.kvs.push(kv("test.arr", v_arr(1, MAX_ARRAY_LEN, &[0; 8])));
    rejects(
        &r,
        |e| matches!(e, FormatError::MetaTruncated { field, .. } if field.contains("'test.arr'")),
    );
    let mut r = Raw::valid();
    r.kvs
        .push(kv("test.strs", v_arr(6, MAX_ARRAY_LEN, &[0; 8])));
    rejects(
        &r,
        |e| matches!(e, FormatError::MetaTruncated { field, .. } if field.contains("'test.strs'")),
    );
}

#[test]
fn overflow_in_size_arithmetic() {
    // Element count overflows u64.
    let mut r = Raw::valid();
    r.entries[0].dims = vec![1 << 32, 1 << 32];
    rejects(&r, |e| {
        *e == FormatError::SizeOverflow { tensor: "a".into() }
    });
    let mut r = Raw::valid();
    r.entries[0].dims = vec![u64::MAX, 2, 1, 1];
    rejects(&r, |e| {
        *e == FormatError::SizeOverflow { tensor: "a".into() }
    });
    // Element count fits, byte size does not.
    let mut r = Raw::valid();
    r.entries[0].dims = vec![1 << 62];
    rejects(&r, |e| {
        *e == FormatError::SizeOverflow { tensor: "a".into() }
    });
    // offset + size overflows.
    let mut r = Raw::valid();
    r.entries[1].offset = u64::MAX - 63;
    rejects(
        &r,
        |e| matches!(e, FormatError::OutOfBounds { tensor, .. } if tensor == "b"),
    );
}

#[test]
fn invalid_utf8() {
    let mut r = Raw::valid();
    r.entries[0].name = vec![b'a', 0xC3, 0x28];
    rejects(&r, |e| {
        *e == FormatError::BadUtf8 {
            field: "name of tensor 0".into(),
        }
    });
    let mut r = Raw::valid();
    r.kvs.push((vec![0xFF], v_i32(1)));
    rejects(&r, |e| {
        *e == FormatError::BadUtf8 {
            field: "key of metadata entry 3".into(),
        }
    });
    let mut r = Raw::valid();
    r.kvs.push(kv("general.name", v_str(&[0xED, 0xA0, 0x80])));
    rejects(&r, |e| {
        *e == FormatError::BadUtf8 {
            field: "value of 'general.name'".into(),
        }
    });
    let mut r = Raw::valid();
    r.kvs[1] = kv("tokenizer.tokens", v_arr_str(&[b"<s>", b"\xC0\xAF", b"b"]));
    rejects(&r, |e| {
        *e == FormatError::BadUtf8 {
            field: "element 1 of 'tokenizer.tokens'".into(),
        }
    });
}

#[test]
fn empty_and_duplicate_names() {
    let mut r = Raw::valid();
    r.entries[1].name.clear();
    rejects(&r, |e| {
        *e == FormatError::EmptyString {
            field: "name of tensor 1".into(),
        }
    });
    let mut r = Raw::valid();
    r.kvs.push(kv("", v_i32(1)));
    rejects(&r, |e| {
        *e == FormatError::EmptyString {
            field: "key of metadata entry 3".into(),
        }
    });
    let mut r = Raw::valid();
    r.kvs.push(kv("tokenizer.bos_id", v_i32(1)));
    rejects(&r, |e| {
        *e == FormatError::DuplicateKey {
            key: "tokenizer.bos_id".into(),
        }
    });
    let mut r = Raw::valid();
    r.entries[1].name = b"a".to_vec();
    rejects(&r, |e| {
        *e == FormatError::DuplicateTensor { name: "a".into() }
    });
}

#[test]
fn bad_value_encodings() {
    let mut r = Raw::valid();
    r.kvs.push(kv("test.x", vec![8, 0, 0, 0, 0]));
    rejects(&r, |e| {
        *e == FormatError::UnknownValueType {
            key: "test.x".into(),
            tag: 8,
        }
    });
    for elem in [3u8, 5, 7, 200] {
        let mut r = Raw::valid();
        r.kvs.push(kv("test.x", v_arr(elem, 0, &[])));
        rejects(&r, |e| {
            *e == FormatError::BadArrayType {
                key: "test.x".into(),
                tag: elem,
            }
        });
    }
    let mut r = Raw::valid();
    r.kvs.push(kv("test.b", vec![5, 2]));
    rejects(&r, |e| {
        *e == FormatError::BadBool {
            key: "test.b".into(),
            value: 2,
        }
    });
}

#[test]
fn unknown_dtype() {
    let mut r = Raw::valid();
    r.entries[1].dtype = 10;
    rejects(&r, |e| {
        *e == FormatError::UnknownDType {
            tensor: "b".into(),
            code: 10,
        }
    });
}

#[test]
fn bad_shapes() {
    let mut r = Raw::valid();
    r.entries[0].dims.clear();
    rejects(&r, |e| *e == FormatError::EmptyShape { tensor: "a".into() });
    let mut r = Raw::valid();
    r.entries[1].dims = vec![1, 0, 32];
    rejects(&r, |e| {
        *e == FormatError::ZeroDim {
            tensor: "b".into(),
            axis: 1,
        }
    });
    // 2 x 16 is one block's worth of elements, but rows must be whole blocks.
    let mut r = Raw::valid();
    r.entries[1].dims = vec![2, 16];
    rejects(&r, |e| {
        *e == FormatError::NotWholeBlocks {
            tensor: "b".into(),
            dtype: DType::Q8_0,
            cols: 16,
        }
    });
}

#[test]
fn size_not_matching_dtype_and_shape() {
    let mut r = Raw::valid();
    r.entries[0].size = 12;
    rejects(&r, |e| {
        *e == FormatError::SizeMismatch {
            tensor: "a".into(),
            expected: 16,
            found: 12,
        }
    });
    let mut r = Raw::valid();
    r.entries[1].dtype = DType::Q4_0.code();
    rejects(&r, |e| {
        *e == FormatError::SizeMismatch {
            tensor: "b".into(),
            expected: 18,
            found: 34,
        }
    });
}

#[test]
fn misaligned_data() {
    let mut r = Raw::valid();
    r.entries[1].offset = 16;
    r.data.drain(16..64);
    rejects(&r, |e| {
        *e == FormatError::Misaligned {
            tensor: "b".into(),
            offset: 16,
        }
    });
}

#[test]
fn offset_out_of_bounds() {
    let mut r = Raw::valid();
    r.entries[1].offset = 128;
    rejects(&r, |e| {
        *e == FormatError::OutOfBounds {
            tensor: "b".into(),
            offset: 128,
            size: 34,
            data_len: 98,
        }
    });
}

#[test]
fn overlapping_tensors() {
    let mut r = Raw::valid();
    r.entries[0] = entry("a", DType::F32, &[32], 0);
    r.data.resize(128, 0);
    rejects(&r, |e| {
        *e == FormatError::Overlap {
            tensor: "b".into(),
            offset: 64,
            prev: "a".into(),
            prev_end: 128,
        }
    });
}

#[test]
fn unsorted_tensors() {
    let mut r = Raw::valid();
    r.entries.push(entry("c", DType::F32, &[4], 0));
    rejects(&r, |e| {
        *e == FormatError::Unsorted {
            tensor: "c".into(),
            offset: 0,
            prev: "b".into(),
            prev_offset: 64,
        }
    });
}

#[test]
fn hole_between_tensors() {
    let mut r = Raw::valid();
    r.entries[1].offset = 128;
    r.data.splice(64..64, [0u8; 64]);
    rejects(&r, |e| {
        *e == FormatError::Gap {
            tensor: "b".into(),
            offset: 128,
            expected: 64,
        }
    });
    let mut r = Raw::valid();
    r.entries.remove(0);
    rejects(&r, |e| {
        *e == FormatError::Gap {
            tensor: "b".into(),
            offset: 64,
            expected: 0,
        }
    });
}

#[test]
fn data_past_the_last_tensor() {
    let mut r = Raw::valid();
    r.data.extend_from_slice(&[0; 30]);
    rejects(&r, |e| {
        *e == FormatError::UncoveredTail {
            end: 98,
            data_len: 128,
        }
    });
    let mut r = Raw::valid();
    r.entries.clear();
    rejects(&r, |e| {
        *e == FormatError::UncoveredTail {
            end: 0,
            data_len: 98,
        }
    });
}

#[test]
fn special_token_id_out_of_vocabulary() {
    for id in [3, 1000, -2, i32::MIN] {
        let mut r = Raw::valid();
        r.kvs[2] = kv("tokenizer.bos_id", v_i32(id));
        rejects(&r, |e| {
            *e == FormatError::BadTokenId {
                key: "tokenizer.bos_id".into(),
                id: i64::from(id),
                n_vocab: 3,
            }
        });
    }
    let mut r = Raw::valid();
    r.kvs.push(kv("tokenizer.eot_ids", v_arr_i32(&[1, 7])));
    rejects(&r, |e| {
        *e == FormatError::BadTokenId {
            key: "tokenizer.eot_ids".into(),
            id: 7,
            n_vocab: 3,
        }
    });
    let mut r = Raw::valid();
    r.kvs.push(kv("tokenizer.pad_id", v_i32(-1)));
    r.kvs.push(kv("tokenizer.eot_ids", v_arr_i32(&[2])));
    parse(&r).expect("-1 means absent; 2 is inside the vocabulary");
}

#[test]
fn tokenizer_entries_of_wrong_type_or_length() {
    let mut r = Raw::valid();
    r.kvs[1] = kv("tokenizer.tokens", v_str(b"abc"));
    rejects(&r, |e| {
        *e == FormatError::WrongType {
            key: "tokenizer.tokens".into(),
            expected: "[str]",
            found: "str",
        }
    });
    let mut r = Raw::valid();
    let body: Vec<u8> = [0.0f32, 1.0].iter().flat_map(|x| x.to_le_bytes()).collect();
    r.kvs.push(kv("tokenizer.scores", v_arr(4, 2, &body)));
    rejects(&r, |e| {
        *e == FormatError::LengthMismatch {
            key: "tokenizer.scores".into(),
            len: 2,
            expected: 3,
        }
    });
    let mut r = Raw::valid();
    r.kvs.remove(1);
    rejects(&r, |e| {
        *e == FormatError::MissingKey {
            key: "tokenizer.tokens".into(),
        }
    });
}

/// Issue 13 rows 5 and 6: token texts are capped (`MAX_TOKEN_LEN`; special tokens
/// `MAX_SPECIAL_TOKEN_LEN` each and `MAX_SPECIAL_BYTES` in all), so a crafted vocabulary
/// cannot make special-token matching slow or its tables huge. The reader and the writer
/// both refuse; control tokens of 1 MiB (within `MAX_STRING_LEN`) were accepted before.
#[test]
fn token_lengths_are_capped() {
    let long = vec![b'a'; MAX_TOKEN_LEN as usize + 1];
    let mut r = Raw::valid();
    r.kvs[1] = kv("tokenizer.tokens", v_arr_str(&[b"<s>", &long, b"b"]));
    rejects(&r, |e| {
        *e == FormatError::LimitExceeded {
            field: "length of tokenizer.tokens[1]".into(),
            value: MAX_TOKEN_LEN + 1,
            limit: MAX_TOKEN_LEN,
        }
    });
    // A control token (type 3) longer than MAX_SPECIAL_TOKEN_LEN; as a normal one, fine.
    let special = vec![b'c'; MAX_SPECIAL_TOKEN_LEN as usize + 1];
    for (ty, ok) in [(3u8, false), (1, true)] {
        let mut r = Raw::valid();
        r.kvs[1] = kv("tokenizer.tokens", v_arr_str(&[b"<s>", b"a", &special]));
        r.kvs.push(kv("tokenizer.token_types", v_arr(0, 3, &[3, 1, ty])));
        if ok {
            parse(&r).expect("a normal token may be that long");
        } else {
            rejects(&r, |e| {
                matches!(e, FormatError::LimitExceeded { field, limit, .. }
                    if field == "length of special token tokenizer.tokens[2]"
                        && *limit == MAX_SPECIAL_TOKEN_LEN)
            });
        }
    }
    // Many special tokens within the per-token cap but over MAX_SPECIAL_BYTES together.
    let n = (MAX_SPECIAL_BYTES / MAX_SPECIAL_TOKEN_LEN) as usize + 1;
    let texts: Vec<String> = (0..n)
        .map(|i| format!("{i:0width$}", width = MAX_SPECIAL_TOKEN_LEN as usize))
        .collect();
    let mut w = Writer::new();
    w.set("tokenizer.tokens", Value::ArrStr(texts));
    w.set("tokenizer.token_types", Value::ArrU8(vec![4; n]));
    let e = w.to_bytes().unwrap_err();
    assert!(
        matches!(&e, FormatError::LimitExceeded { field, limit, .. }
            if field == "total length of the special tokens" && *limit == MAX_SPECIAL_BYTES),
        "{e}"
    );
}
