//! The writer: lays out a file in memory and computes offsets, padding and checksums.

use crate::limits::*;
use crate::metadata::{tag, validate_tokenizer};
use crate::reader::{expected_size, hdr};
use crate::{
    align_up, crc32c, DType, FormatError, Metadata, Value, ALIGN, HEADER_LEN, MAGIC, VERSION,
};
use std::convert::Infallible;
use std::io::{self, Write};
use std::path::Path;

struct PendingTensor {
    name: String,
    dtype: DType,
    shape: Vec<u64>,
    data: Vec<u8>,
    crc32c: u32,
}

/// Builds a `.pipit` file. Tensors are stored in the order they are added. The writer
/// enforces every rule the reader checks, so whatever it writes parses.
#[derive(Default)]
pub struct Writer {
    metadata: Metadata,
    tensors: Vec<PendingTensor>,
}

impl Writer {
    /// An empty file: no metadata, no tensors.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets metadata `key` (replacing an earlier value in place). Keys and values are
    /// checked against the limits by [`Writer::to_bytes`].
    pub fn set(&mut self, key: &str, v: Value) {
        self.metadata.set(key, v);
    }

    /// The metadata set so far.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Appends a tensor. `data` must be exactly the bytes `dtype` and `shape` need.
    pub fn add_tensor(
        &mut self,
        name: &str,
        dtype: DType,
        shape: &[u64],
        data: Vec<u8>,
    ) -> Result<(), FormatError> {
        if name.is_empty() {
            return Err(FormatError::EmptyString {
                field: "tensor name".to_string(),
            });
        }
        check_len(
            &format!("length of name of tensor '{name}'"),
            name.len(),
            MAX_NAME_LEN,
        )?;
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(FormatError::DuplicateTensor {
                name: name.to_string(),
            });
        }
        check_len("tensor count", self.tensors.len() + 1, MAX_TENSORS)?;
        let expected = expected_size(name, dtype, shape)?;
        let found = u64::try_from(data.len()).unwrap_or(u64::MAX);
        if found != expected {
            return Err(FormatError::SizeMismatch {
                tensor: name.to_string(),
                expected,
                found,
            });
        }
        let crc32c = crc32c::crc32c(&data);
        self.tensors.push(PendingTensor {
            name: name.to_string(),
            dtype,
            shape: shape.to_vec(),
            data,
            crc32c,
        });
        Ok(())
    }

    /// The whole file.
    pub fn to_bytes(&self) -> Result<Vec<u8>, FormatError> {
        let (head, data_len) = self.head()?;
        let total = usize::try_from(data_len)
            .ok()
            .and_then(|n| n.checked_add(head.len()));
        let mut out = Vec::with_capacity(total.unwrap_or(0));
        out.extend_from_slice(&head);
        let Ok(()) = self.each_data_chunk(|chunk| {
            out.extend_from_slice(chunk);
            Ok::<(), Infallible>(())
        });
        Ok(out)
    }

    /// Writes the whole file to `w`, streaming the tensor data (no copy of it is made).
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        let (head, _) = self
            .head()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        w.write_all(&head)?;
        self.each_data_chunk(|chunk| w.write_all(chunk))
    }

    /// Writes the file to `path` atomically: the bytes go to a temporary file in the same
    /// directory, which is synced and then renamed over `path`. On error the temporary
    /// file is removed and nothing exists under `path` that was not there before.
    pub fn write_file(&self, path: impl AsRef<Path>) -> io::Result<()> {
        let path = path.as_ref();
        let file_name = path.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a file path", path.display()),
            )
        })?;
        refuse_non_regular(path)?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(file_name);
        tmp_name.push(format!(".tmp{}", std::process::id()));
        let tmp = path.with_file_name(tmp_name);
        let result = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            let mut buf = io::BufWriter::with_capacity(1 << 20, &mut file);
            self.write_to(&mut buf)?;
            buf.flush()?;
            drop(buf);
            file.sync_all()?;
            // Again just before the rename, which would replace whatever `path` names.
            refuse_non_regular(path)?;
            std::fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Header, metadata/directory section and padding up to the data section, plus the
    /// length of the data section.
    fn head(&self) -> Result<(Vec<u8>, u64), FormatError> {
        check_len(
            "metadata entry count",
            self.metadata.len(),
            MAX_META_ENTRIES,
        )?;
        let mut meta = Vec::new();
        meta.extend_from_slice(&(self.metadata.len() as u32).to_le_bytes());
        for (key, value) in self.metadata.iter() {
            if key.is_empty() {
                return Err(FormatError::EmptyString {
                    field: "metadata key".to_string(),
                });
            }
            check_len(
                &format!("length of metadata key '{key}'"),
                key.len(),
                MAX_KEY_LEN,
            )?;
            put_str(&mut meta, key);
            put_value(&mut meta, key, value)?;
        }
        validate_tokenizer(&self.metadata)?;
        let mut end = 0u64;
        for t in &self.tensors {
            let offset = align_up(end).ok_or_else(|| FormatError::SizeOverflow {
                tensor: t.name.clone(),
            })?;
            put_str(&mut meta, &t.name);
            meta.extend_from_slice(&t.dtype.code().to_le_bytes());
            meta.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
            t.shape
                .iter()
                .for_each(|d| meta.extend_from_slice(&d.to_le_bytes()));
            meta.extend_from_slice(&offset.to_le_bytes());
            meta.extend_from_slice(&(t.data.len() as u64).to_le_bytes());
            meta.extend_from_slice(&t.crc32c.to_le_bytes());
            end = offset.checked_add(t.data.len() as u64).ok_or_else(|| {
                FormatError::SizeOverflow {
                    tensor: t.name.clone(),
                }
            })?;
        }
        let meta_len = meta.len() as u64;
        let head_len = HEADER_LEN + meta_len;
        if head_len > MAX_HEADER_BYTES {
            return Err(FormatError::LimitExceeded {
                field: "header meta_len".to_string(),
                value: meta_len,
                limit: MAX_HEADER_BYTES - HEADER_LEN,
            });
        }
        let data_offset = head_len.div_ceil(ALIGN) * ALIGN;
        let file_len = data_offset
            .checked_add(end)
            .ok_or_else(|| FormatError::SizeOverflow {
                tensor: "<data section>".to_string(),
            })?;

        let mut head = Vec::with_capacity(data_offset as usize);
        head.extend_from_slice(&MAGIC);
        head.extend_from_slice(&VERSION.to_le_bytes());
        head.extend_from_slice(&0u32.to_le_bytes());
        for v in [meta_len, data_offset, end, file_len] {
            head.extend_from_slice(&v.to_le_bytes());
        }
        head.extend_from_slice(&(self.tensors.len() as u32).to_le_bytes());
        head.resize(hdr::CRC, 0);
        let crc = crc32c::update(crc32c::crc32c(&head), &meta);
        head.extend_from_slice(&crc.to_le_bytes());
        head.extend_from_slice(&meta);
        head.resize(data_offset as usize, 0);
        Ok((head, end))
    }

    /// Feeds the data section to `sink`: each tensor, then zero padding up to the next
    /// tensor's 64-aligned offset (none after the last).
    fn each_data_chunk<E>(&self, mut sink: impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        const ZEROS: [u8; ALIGN as usize] = [0; ALIGN as usize];
        for (i, t) in self.tensors.iter().enumerate() {
            sink(&t.data)?;
            let pad = (ALIGN as usize - t.data.len() % ALIGN as usize) % ALIGN as usize;
            if i + 1 < self.tensors.len() {
                sink(&ZEROS[..pad])?;
            }
        }
        Ok(())
    }
}

/// `LimitExceeded` if `len > limit`.
fn check_len(field: &str, len: usize, limit: u64) -> Result<(), FormatError> {
    let value = u64::try_from(len).unwrap_or(u64::MAX);
    if value > limit {
        return Err(FormatError::LimitExceeded {
            field: field.to_string(),
            value,
            limit,
        });
    }
    Ok(())
}

/// A string as `u32` length + bytes (lengths are checked by the caller).
fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, key: &str, value: &Value) -> Result<(), FormatError> {
    let string = |out: &mut Vec<u8>, field: &dyn Fn() -> String, s: &str| {
        check_len(&field(), s.len(), MAX_STRING_LEN).map(|()| put_str(out, s))
    };
    let array = |out: &mut Vec<u8>, elem: u8, len: usize| {
        check_len(&format!("element count of '{key}'"), len, MAX_ARRAY_LEN).map(|()| {
            out.extend_from_slice(&[tag::ARRAY, elem]);
            out.extend_from_slice(&(len as u64).to_le_bytes());
        })
    };
    match value {
        Value::U8(v) => out.extend_from_slice(&[tag::U8, *v]),
        Value::U32(v) => {
            out.push(tag::U32);
            out.extend_from_slice(&v.to_le_bytes());
        }
        Value::I32(v) => {
            out.push(tag::I32);
            out.extend_from_slice(&v.to_le_bytes());
        }
        Value::U64(v) => {
            out.push(tag::U64);
            out.extend_from_slice(&v.to_le_bytes());
        }
        Value::F32(v) => {
            out.push(tag::F32);
            out.extend_from_slice(&v.to_le_bytes());
        }
        Value::Bool(v) => out.extend_from_slice(&[tag::BOOL, u8::from(*v)]),
        Value::Str(s) => {
            out.push(tag::STR);
            string(out, &|| format!("length of value of '{key}'"), s)?;
        }
        Value::ArrU8(v) => {
            array(out, tag::U8, v.len())?;
            out.extend_from_slice(v);
        }
        Value::ArrU32(v) => {
            array(out, tag::U32, v.len())?;
            v.iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        }
        Value::ArrI32(v) => {
            array(out, tag::I32, v.len())?;
            v.iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        }
        Value::ArrF32(v) => {
            array(out, tag::F32, v.len())?;
            v.iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        }
        Value::ArrStr(v) => {
            array(out, tag::STR, v.len())?;
            for (i, s) in v.iter().enumerate() {
                string(out, &|| format!("length of element {i} of '{key}'"), s)?;
            }
        }
    }
    Ok(())
}

/// Errors if `path` exists and is not a regular file (after following symlinks): writing a
/// model renames a temporary file over `path`, which would replace a device node such as
/// `/dev/null`, a FIFO, a socket or a directory with a regular file.
pub fn refuse_non_regular(path: &Path) -> io::Result<()> {
    match std::fs::metadata(path) {
        Ok(md) if !md.is_file() => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} exists and is {}, not a regular file; refusing to replace it",
                path.display(),
                file_kind(&md.file_type())
            ),
        )),
        _ => Ok(()),
    }
}

/// What kind of file system object `t` is, for messages ("a directory", ...).
pub fn file_kind(t: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_dir() {
        "a directory"
    } else if t.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}
