//! The validating reader.

use crate::limits::*;
use crate::mem::{reserved, sort_by, try_collect, try_copy, try_string, try_vec};
use crate::metadata::{tag, validate_tokenizer};
use crate::{
    align_up, crc32c, DType, FormatError, Metadata, Value, ALIGN, HEADER_LEN, MAGIC, VERSION,
};
use std::collections::HashSet;

/// Byte offsets of the fixed header fields (SPEC.md, "Header").
pub(crate) mod hdr {
    pub const VERSION: usize = 8;
    pub const FLAGS: usize = 12;
    pub const META_LEN: usize = 16;
    pub const DATA_OFFSET: usize = 24;
    pub const DATA_LEN: usize = 32;
    pub const FILE_LEN: usize = 40;
    pub const N_TENSORS: usize = 48;
    pub const RESERVED: usize = 52;
    pub const CRC: usize = 60;
}

/// One entry of the tensor directory, validated against the file it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// Unique, non-empty UTF-8 name (SPEC.md, "Tensor names").
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Dimensions, outermost first; 1 to 4 of them, none zero.
    pub shape: Vec<u64>,
    /// Absolute offset of the data from the start of the file (a multiple of 64).
    pub offset: u64,
    /// Size of the data in bytes (exactly what dtype and shape need).
    pub size: u64,
    /// CRC-32C of the data.
    pub crc32c: u32,
}

impl TensorInfo {
    /// Number of elements (product of the shape; saturates at `u64::MAX`, which a parsed
    /// file never reaches).
    pub fn n_elems(&self) -> u64 {
        self.shape
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d))
            .unwrap_or(u64::MAX)
    }

    /// This tensor's bytes within `file`, or `None` if `file` is too short.
    pub fn data<'a>(&self, file: &'a [u8]) -> Option<&'a [u8]> {
        let start = usize::try_from(self.offset).ok()?;
        let end = start.checked_add(usize::try_from(self.size).ok()?)?;
        file.get(start..end)
    }
}

/// A parsed and validated `.pipit` file: everything except the tensor data itself, which
/// stays in the caller's bytes (see [`TensorInfo::data`]).
#[derive(Debug, Clone)]
pub struct PipitFile {
    /// Format version (always [`VERSION`]).
    pub version: u32,
    /// Metadata entries in file order.
    pub metadata: Metadata,
    /// Tensor directory, sorted by offset.
    pub tensors: Vec<TensorInfo>,
    /// Absolute offset of the data section (a multiple of 64).
    pub data_offset: u64,
    /// Total file length in bytes.
    pub file_len: u64,
    /// The stored (and verified) CRC-32C of header and metadata/directory section.
    pub header_crc32c: u32,
    /// Indices into `tensors`, sorted by name.
    by_name: Vec<usize>,
}

/// Sequential little-endian reads within the metadata/directory section, each bounds
/// checked and naming the field on failure.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn abs(&self) -> u64 {
        HEADER_LEN.saturating_add(u64::try_from(self.pos).unwrap_or(u64::MAX))
    }

    fn remaining(&self) -> u64 {
        u64::try_from(self.buf.len().saturating_sub(self.pos)).unwrap_or(u64::MAX)
    }

    fn take(&mut self, n: u64, field: &dyn Fn() -> String) -> Result<&'a [u8], FormatError> {
        let slice = usize::try_from(n)
            .ok()
            .and_then(|n| self.pos.checked_add(n).map(|end| (n, end)))
            .and_then(|(n, end)| self.buf.get(self.pos..end).map(|s| (n, s)));
        match slice {
            Some((n, s)) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(FormatError::MetaTruncated {
                field: field(),
                offset: self.abs(),
                needed: n,
            }),
        }
    }

    fn array<const N: usize>(
        &mut self,
        field: &dyn Fn() -> String,
    ) -> Result<[u8; N], FormatError> {
        let s = self.take(N as u64, field)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self, field: &dyn Fn() -> String) -> Result<u8, FormatError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn u32(&mut self, field: &dyn Fn() -> String) -> Result<u32, FormatError> {
        self.array(field).map(u32::from_le_bytes)
    }

    fn u64(&mut self, field: &dyn Fn() -> String) -> Result<u64, FormatError> {
        self.array(field).map(u64::from_le_bytes)
    }

    /// A `u32` length, checked against `max`, then that many bytes of UTF-8.
    fn string(&mut self, max: u64, field: &dyn Fn() -> String) -> Result<String, FormatError> {
        let len = u64::from(self.u32(&|| format!("length of {}", field()))?);
        if len > max {
            return Err(FormatError::LimitExceeded {
                field: format!("length of {}", field()),
                value: len,
                limit: max,
            });
        }
        let bytes = self.take(len, field)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => try_string(s),
            Err(_) => Err(FormatError::BadUtf8 { field: field() }),
        }
    }

    /// Element count of an array whose elements take at least `min_size` bytes, checked
    /// against the limit and against the bytes left before anything is allocated.
    fn array_len(&mut self, key: &str, min_size: u64) -> Result<usize, FormatError> {
        let count = self.u64(&|| format!("element count of '{key}'"))?;
        if count > MAX_ARRAY_LEN {
            return Err(FormatError::LimitExceeded {
                field: format!("element count of '{key}'"),
                value: count,
                limit: MAX_ARRAY_LEN,
            });
        }
        let needed = count.saturating_mul(min_size);
        if needed > self.remaining() {
            return Err(FormatError::MetaTruncated {
                field: format!("{count} elements of '{key}'"),
                offset: self.abs(),
                needed,
            });
        }
        // count <= MAX_ARRAY_LEN, which fits every usize of 32 bits or more.
        usize::try_from(count).map_err(|_| FormatError::LimitExceeded {
            field: format!("element count of '{key}'"),
            value: count,
            limit: MAX_ARRAY_LEN,
        })
    }

    fn value(&mut self, key: &str, tag: u8) -> Result<Value, FormatError> {
        let f = || format!("value of '{key}'");
        Ok(match tag {
            tag::U8 => Value::U8(self.u8(&f)?),
            tag::U32 => Value::U32(self.u32(&f)?),
            tag::I32 => Value::I32(self.array(&f).map(i32::from_le_bytes)?),
            tag::U64 => Value::U64(self.u64(&f)?),
            tag::F32 => Value::F32(self.array(&f).map(f32::from_le_bytes)?),
            tag::BOOL => match self.u8(&f)? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                value => {
                    return Err(FormatError::BadBool {
                        key: key.to_string(),
                        value,
                    })
                }
            },
            tag::STR => Value::Str(self.string(MAX_STRING_LEN, &f)?),
            tag::ARRAY => {
                let elem = self.u8(&|| format!("element type of '{key}'"))?;
                self.array_value(key, elem)?
            }
            tag => {
                return Err(FormatError::UnknownValueType {
                    key: key.to_string(),
                    tag,
                })
            }
        })
    }

    fn array_value(&mut self, key: &str, elem: u8) -> Result<Value, FormatError> {
        let elems = |n: u64, cur: &mut Self| -> Result<&'a [u8], FormatError> {
            let count = cur.array_len(key, n)?;
            cur.take(count as u64 * n, &|| format!("elements of '{key}'"))
        };
        Ok(match elem {
            tag::U8 => Value::ArrU8(try_copy(elems(1, self)?)?),
            tag::U32 => Value::ArrU32(words(elems(4, self)?, u32::from_le_bytes)?),
            tag::I32 => Value::ArrI32(words(elems(4, self)?, i32::from_le_bytes)?),
            tag::F32 => Value::ArrF32(words(elems(4, self)?, f32::from_le_bytes)?),
            tag::STR => {
                let count = self.array_len(key, 4)?;
                let mut v = try_vec(count)?;
                for i in 0..count {
                    v.push(self.string(MAX_STRING_LEN, &|| format!("element {i} of '{key}'"))?);
                }
                Value::ArrStr(v)
            }
            tag => {
                return Err(FormatError::BadArrayType {
                    key: key.to_string(),
                    tag,
                })
            }
        })
    }
}

fn words<T>(b: &[u8], f: fn([u8; 4]) -> T) -> Result<Vec<T>, FormatError> {
    try_collect(b.chunks_exact(4).map(|c| f([c[0], c[1], c[2], c[3]])))
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Byte size that `dtype` and `shape` require, with every shape rule checked: rank 1..=4,
/// no zero dimension, no overflow, innermost dimension a whole number of blocks.
pub(crate) fn expected_size(name: &str, dtype: DType, shape: &[u64]) -> Result<u64, FormatError> {
    let rank = u64::try_from(shape.len()).unwrap_or(u64::MAX);
    if rank == 0 {
        return Err(FormatError::EmptyShape {
            tensor: name.to_string(),
        });
    }
    if rank > MAX_RANK {
        return Err(FormatError::LimitExceeded {
            field: format!("rank of tensor '{name}'"),
            value: rank,
            limit: MAX_RANK,
        });
    }
    if let Some(axis) = shape.iter().position(|&d| d == 0) {
        return Err(FormatError::ZeroDim {
            tensor: name.to_string(),
            axis,
        });
    }
    let overflow = || FormatError::SizeOverflow {
        tensor: name.to_string(),
    };
    let n = shape
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d))
        .ok_or_else(overflow)?;
    let cols = shape.last().copied().unwrap_or(1);
    if cols % dtype.block_elems() as u64 != 0 {
        return Err(FormatError::NotWholeBlocks {
            tensor: name.to_string(),
            dtype,
            cols,
        });
    }
    dtype.bytes_for(n).ok_or_else(overflow)
}

/// A directory entry as stored (offset relative to the data section).
struct RawEntry {
    name: String,
    dtype: DType,
    shape: Vec<u64>,
    rel_offset: u64,
    size: u64,
    crc32c: u32,
}

impl PipitFile {
    /// Parses and validates a whole file held in memory: header, checksum of header and
    /// metadata/directory, every metadata value, the tensor directory and data layout, and
    /// the tokenizer's ids. Tensor data checksums are left to [`PipitFile::verify_data`].
    pub fn parse(bytes: &[u8]) -> Result<PipitFile, FormatError> {
        let actual = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        let Some(h) = bytes.get(..HEADER_LEN as usize) else {
            return Err(FormatError::Truncated {
                what: "header",
                needed: HEADER_LEN,
                actual,
            });
        };
        let mut magic = [0u8; 8];
        magic.copy_from_slice(&h[..8]);
        if magic != MAGIC {
            return Err(FormatError::BadMagic { found: magic });
        }
        let version = le_u32(h, hdr::VERSION);
        if version != VERSION {
            return Err(FormatError::UnsupportedVersion { found: version });
        }
        let flags = le_u32(h, hdr::FLAGS);
        if flags != 0 {
            return Err(FormatError::UnknownFlags { flags });
        }
        if let Some(i) = (hdr::RESERVED..hdr::CRC).find(|&i| h[i] != 0) {
            return Err(FormatError::NonZeroReserved {
                offset: i as u64,
                value: h[i],
            });
        }
        let meta_len = le_u64(h, hdr::META_LEN);
        let data_offset = le_u64(h, hdr::DATA_OFFSET);
        let data_len = le_u64(h, hdr::DATA_LEN);
        let file_len = le_u64(h, hdr::FILE_LEN);
        let n_tensors = u64::from(le_u32(h, hdr::N_TENSORS));
        let stored_crc = le_u32(h, hdr::CRC);

        let max_meta = MAX_HEADER_BYTES - HEADER_LEN;
        if meta_len > max_meta {
            return Err(FormatError::LimitExceeded {
                field: "header meta_len".to_string(),
                value: meta_len,
                limit: max_meta,
            });
        }
        if n_tensors > MAX_TENSORS {
            return Err(FormatError::LimitExceeded {
                field: "header n_tensors".to_string(),
                value: n_tensors,
                limit: MAX_TENSORS,
            });
        }
        // meta_len <= MAX_HEADER_BYTES, so neither addition can overflow.
        let meta_end = HEADER_LEN + meta_len;
        let expected_data_offset = meta_end.div_ceil(ALIGN) * ALIGN;
        if data_offset != expected_data_offset {
            return Err(FormatError::BadDataOffset {
                found: data_offset,
                expected: expected_data_offset,
            });
        }
        if data_offset.checked_add(data_len) != Some(file_len) {
            return Err(FormatError::BadDataLen {
                data_offset,
                data_len,
                file_len,
            });
        }
        if actual < file_len {
            return Err(FormatError::Truncated {
                what: "file (header file_len)",
                needed: file_len,
                actual,
            });
        }
        if actual > file_len {
            return Err(FormatError::TrailingData { file_len, actual });
        }
        // file_len == bytes.len() >= data_offset >= meta_end: these indices are in bounds.
        let meta_end = index(meta_end);
        let data_start = index(data_offset);
        let meta = bytes.get(HEADER_LEN as usize..meta_end).unwrap_or(&[]);
        let computed = crc32c::update(crc32c::crc32c(&h[..hdr::CRC]), meta);
        if computed != stored_crc {
            return Err(FormatError::HeaderChecksum {
                stored: stored_crc,
                computed,
            });
        }
        check_zero(bytes, meta_end, data_start)?;

        let mut cur = Cursor { buf: meta, pos: 0 };
        let metadata = read_metadata(&mut cur)?;
        let raw = read_directory(&mut cur, n_tensors)?;
        if cur.remaining() != 0 {
            return Err(FormatError::MetaTrailing {
                offset: cur.abs(),
                unused: cur.remaining(),
            });
        }
        let tensors = check_layout(bytes, raw, data_offset, data_len)?;
        validate_tokenizer(&metadata)?;

        let mut by_name = try_collect(0..tensors.len())?;
        sort_by(&mut by_name, &mut |&a, &b| {
            tensors[a].name.cmp(&tensors[b].name)
        })?;
        Ok(PipitFile {
            version,
            metadata,
            tensors,
            data_offset,
            file_len,
            header_crc32c: stored_crc,
            by_name,
        })
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        let i = self
            .by_name
            .binary_search_by(|&i| self.tensors[i].name.as_str().cmp(name))
            .ok()?;
        self.tensors.get(self.by_name[i])
    }

    /// Recomputes every tensor's CRC-32C over `bytes` (the same file that was parsed).
    pub fn verify_data(&self, bytes: &[u8]) -> Result<(), FormatError> {
        let actual = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        if actual < self.file_len {
            return Err(FormatError::Truncated {
                what: "file (header file_len)",
                needed: self.file_len,
                actual,
            });
        }
        if actual > self.file_len {
            return Err(FormatError::TrailingData {
                file_len: self.file_len,
                actual,
            });
        }
        for t in &self.tensors {
            let data = t.data(bytes).ok_or_else(|| FormatError::OutOfBounds {
                tensor: t.name.clone(),
                offset: t.offset,
                size: t.size,
                data_len: self.file_len.saturating_sub(self.data_offset),
            })?;
            let computed = crc32c::crc32c(data);
            if computed != t.crc32c {
                return Err(FormatError::TensorChecksum {
                    tensor: t.name.clone(),
                    stored: t.crc32c,
                    computed,
                });
            }
        }
        Ok(())
    }
}

/// `x` as an index into the file; callers have checked `x <= bytes.len()`, so the
/// saturation never happens.
fn index(x: u64) -> usize {
    usize::try_from(x).unwrap_or(usize::MAX)
}

/// `NonZeroPadding` unless `bytes[start..end]` are all zero (`start..end` in bounds).
fn check_zero(bytes: &[u8], start: usize, end: usize) -> Result<(), FormatError> {
    let pad = bytes.get(start..end).unwrap_or(&[]);
    match pad.iter().position(|&b| b != 0) {
        None => Ok(()),
        Some(i) => Err(FormatError::NonZeroPadding {
            offset: (start + i) as u64,
            value: pad[i],
        }),
    }
}

fn read_metadata(cur: &mut Cursor<'_>) -> Result<Metadata, FormatError> {
    let count = u64::from(cur.u32(&|| "metadata entry count".to_string())?);
    if count > MAX_META_ENTRIES {
        return Err(FormatError::LimitExceeded {
            field: "metadata entry count".to_string(),
            value: count,
            limit: MAX_META_ENTRIES,
        });
    }
    // count <= MAX_META_ENTRIES.
    let count = count as usize;
    let mut meta = Metadata::with_capacity(count)?;
    let mut seen = HashSet::new();
    reserved(seen.try_reserve(count), count)?;
    for i in 0..count {
        let key = cur.string(MAX_KEY_LEN, &|| format!("key of metadata entry {i}"))?;
        if key.is_empty() {
            return Err(FormatError::EmptyString {
                field: format!("key of metadata entry {i}"),
            });
        }
        if !seen.insert(key.clone()) {
            return Err(FormatError::DuplicateKey { key });
        }
        let tag = cur.u8(&|| format!("type tag of '{key}'"))?;
        let value = cur.value(&key, tag)?;
        meta.push_new(key, value);
    }
    Ok(meta)
}

fn read_directory(cur: &mut Cursor<'_>, n_tensors: u64) -> Result<Vec<RawEntry>, FormatError> {
    // n_tensors <= MAX_TENSORS; each entry takes at least 45 bytes, so the capacity is
    // bounded by the section size too.
    let cap = n_tensors.min(cur.remaining() / 45) as usize;
    let mut entries = try_vec(cap)?;
    let mut seen = HashSet::new();
    reserved(seen.try_reserve(cap), cap)?;
    for i in 0..n_tensors {
        let name = cur.string(MAX_NAME_LEN, &|| format!("name of tensor {i}"))?;
        if name.is_empty() {
            return Err(FormatError::EmptyString {
                field: format!("name of tensor {i}"),
            });
        }
        if !seen.insert(name.clone()) {
            return Err(FormatError::DuplicateTensor { name });
        }
        let code = cur.u32(&|| format!("dtype of tensor '{name}'"))?;
        let dtype = DType::from_code(code).ok_or_else(|| FormatError::UnknownDType {
            tensor: name.clone(),
            code,
        })?;
        let rank = u64::from(cur.u32(&|| format!("rank of tensor '{name}'"))?);
        if rank > MAX_RANK {
            return Err(FormatError::LimitExceeded {
                field: format!("rank of tensor '{name}'"),
                value: rank,
                limit: MAX_RANK,
            });
        }
        let mut shape = Vec::with_capacity(rank as usize);
        for axis in 0..rank {
            shape.push(cur.u64(&|| format!("dimension {axis} of tensor '{name}'"))?);
        }
        let rel_offset = cur.u64(&|| format!("offset of tensor '{name}'"))?;
        let size = cur.u64(&|| format!("size of tensor '{name}'"))?;
        let crc32c = cur.u32(&|| format!("checksum of tensor '{name}'"))?;
        entries.push(RawEntry {
            name,
            dtype,
            shape,
            rel_offset,
            size,
            crc32c,
        });
    }
    Ok(entries)
}

/// Checks every entry's shape and size, then the data layout: 64-aligned, in bounds,
/// sorted, each tensor at the first aligned offset after the previous one, zero padding,
/// and the last tensor ending exactly at the end of the data section.
fn check_layout(
    bytes: &[u8],
    raw: Vec<RawEntry>,
    data_offset: u64,
    data_len: u64,
) -> Result<Vec<TensorInfo>, FormatError> {
    let mut tensors: Vec<TensorInfo> = try_vec(raw.len())?;
    let mut end = 0u64;
    for e in raw {
        let expected = expected_size(&e.name, e.dtype, &e.shape)?;
        if e.size != expected {
            return Err(FormatError::SizeMismatch {
                tensor: e.name,
                expected,
                found: e.size,
            });
        }
        if e.rel_offset % ALIGN != 0 {
            return Err(FormatError::Misaligned {
                tensor: e.name,
                offset: e.rel_offset,
            });
        }
        if e.rel_offset
            .checked_add(e.size)
            .is_none_or(|tensor_end| tensor_end > data_len)
        {
            return Err(FormatError::OutOfBounds {
                tensor: e.name,
                offset: e.rel_offset,
                size: e.size,
                data_len,
            });
        }
        if let Some(prev) = tensors.last() {
            let prev_offset = prev.offset - data_offset;
            if e.rel_offset < prev_offset {
                return Err(FormatError::Unsorted {
                    tensor: e.name,
                    offset: e.rel_offset,
                    prev: prev.name.clone(),
                    prev_offset,
                });
            }
            if e.rel_offset < end {
                return Err(FormatError::Overlap {
                    tensor: e.name,
                    offset: e.rel_offset,
                    prev: prev.name.clone(),
                    prev_end: end,
                });
            }
        }
        // end <= data_len, which is far from u64::MAX.
        let expected_offset = align_up(end).unwrap_or(u64::MAX);
        if e.rel_offset != expected_offset {
            return Err(FormatError::Gap {
                tensor: e.name,
                offset: e.rel_offset,
                expected: expected_offset,
            });
        }
        // In bounds: data_offset + data_len == bytes.len().
        check_zero(
            bytes,
            index(data_offset + end),
            index(data_offset + e.rel_offset),
        )?;
        end = e.rel_offset + e.size;
        tensors.push(TensorInfo {
            name: e.name,
            dtype: e.dtype,
            shape: e.shape,
            offset: data_offset + e.rel_offset,
            size: e.size,
            crc32c: e.crc32c,
        });
    }
    if end != data_len {
        return Err(FormatError::UncoveredTail { end, data_len });
    }
    Ok(tensors)
}
