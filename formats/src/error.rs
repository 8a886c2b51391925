//! The one error type of the format crate.

use crate::DType;
use std::fmt;

/// Why a file (or a writer/quantizer input) was rejected. Every variant names the
/// offending field, key or tensor and the value found.
#[derive(Debug, Clone, PartialEq)]
pub enum FormatError {
    /// The file ends before `needed` bytes (`what` says which part was cut).
    Truncated {
        what: &'static str,
        needed: u64,
        actual: u64,
    },
    /// Bytes follow the end the header's `file_len` announces.
    TrailingData { file_len: u64, actual: u64 },
    /// The first 8 bytes are not [`crate::MAGIC`].
    BadMagic { found: [u8; 8] },
    /// A version this reader does not know.
    UnsupportedVersion { found: u32 },
    /// Header `flags` has bits no version-1 reader knows.
    UnknownFlags { flags: u32 },
    /// A reserved header byte is not zero.
    NonZeroReserved { offset: u64, value: u8 },
    /// A count or length read from the file is above its hard limit (see [`crate::limits`]).
    LimitExceeded {
        field: String,
        value: u64,
        limit: u64,
    },
    /// Header `data_offset` is not `64 + meta_len` rounded up to 64.
    BadDataOffset { found: u64, expected: u64 },
    /// Header `data_offset + data_len` is not `file_len` (or overflows).
    BadDataLen {
        data_offset: u64,
        data_len: u64,
        file_len: u64,
    },
    /// The CRC-32C of header and metadata/directory section does not match.
    HeaderChecksum { stored: u32, computed: u32 },
    /// A padding byte that must be zero is not.
    NonZeroPadding { offset: u64, value: u8 },
    /// A field of the metadata/directory section runs past the end of that section.
    MetaTruncated {
        field: String,
        offset: u64,
        needed: u64,
    },
    /// The metadata/directory section has bytes left after the last directory entry.
    MetaTrailing { offset: u64, unused: u64 },
    /// A key, tensor name or string value is not valid UTF-8.
    BadUtf8 { field: String },
    /// A key or tensor name is empty.
    EmptyString { field: String },
    /// Two metadata entries share a key.
    DuplicateKey { key: String },
    /// Two tensors share a name.
    DuplicateTensor { name: String },
    /// A metadata value type tag is unknown.
    UnknownValueType { key: String, tag: u8 },
    /// An array element type tag is unknown or not allowed in arrays.
    BadArrayType { key: String, tag: u8 },
    /// A bool value is neither 0 nor 1.
    BadBool { key: String, value: u8 },
    /// A tensor's dtype code is unknown.
    UnknownDType { tensor: String, code: u32 },
    /// A tensor has rank 0.
    EmptyShape { tensor: String },
    /// A tensor dimension is zero.
    ZeroDim { tensor: String, axis: usize },
    /// The element count or byte size of a tensor overflows `u64`.
    SizeOverflow { tensor: String },
    /// A quantized tensor's innermost dimension is not a multiple of the block size.
    NotWholeBlocks {
        tensor: String,
        dtype: DType,
        cols: u64,
    },
    /// A tensor's byte size does not match its dtype and shape.
    SizeMismatch {
        tensor: String,
        expected: u64,
        found: u64,
    },
    /// A tensor's offset is not a multiple of 64.
    Misaligned { tensor: String, offset: u64 },
    /// A tensor reaches past the end of the data section.
    OutOfBounds {
        tensor: String,
        offset: u64,
        size: u64,
        data_len: u64,
    },
    /// A tensor's offset is below the previous tensor's.
    Unsorted {
        tensor: String,
        offset: u64,
        prev: String,
        prev_offset: u64,
    },
    /// A tensor starts inside the previous one.
    Overlap {
        tensor: String,
        offset: u64,
        prev: String,
        prev_end: u64,
    },
    /// A tensor does not start at the first 64-aligned offset after the previous one.
    Gap {
        tensor: String,
        offset: u64,
        expected: u64,
    },
    /// The data section continues past the end of the last tensor.
    UncoveredTail { end: u64, data_len: u64 },
    /// A required metadata key is absent.
    MissingKey { key: String },
    /// A metadata value has another type than required.
    WrongType {
        key: String,
        expected: &'static str,
        found: &'static str,
    },
    /// A token id is outside `0..n_vocab` (and not the `-1` "absent" marker).
    BadTokenId { key: String, id: i64, n_vocab: u64 },
    /// A per-token array's length differs from the vocabulary size.
    LengthMismatch {
        key: String,
        len: u64,
        expected: u64,
    },
    /// A tensor's data does not match its stored CRC-32C.
    TensorChecksum {
        tensor: String,
        stored: u32,
        computed: u32,
    },
    /// (De)quantization buffers disagree: `bytes` of `dtype` do not hold `elems` values.
    BufferSize {
        dtype: DType,
        bytes: usize,
        elems: usize,
    },
    /// A value to quantize is NaN or infinite.
    NonFinite { index: usize, value: f32 },
    /// The input length of a quantizer is not a whole number of blocks.
    BlockMultiple { dtype: DType, elems: usize },
    /// A block's scale (or minimum) does not fit in f16.
    ScaleOverflow { block: usize, value: f32 },
    /// A metadata value breaks a rule of SPEC.md (used by consumers such as the runtime
    /// loader, which validates hyper-parameters).
    BadValue {
        key: String,
        value: String,
        rule: String,
    },
    /// A metadata value names a choice this build does not implement (an architecture,
    /// an activation, a RoPE convention, ...).
    UnknownChoice {
        key: String,
        value: String,
        known: String,
    },
    /// A tensor the model needs is absent.
    MissingTensor { name: String },
    /// A tensor the model does not use is present (e.g. a layer beyond `n_layer`).
    UnexpectedTensor { name: String, reason: String },
    /// A tensor's shape differs from what the hyper-parameters imply.
    ShapeMismatch {
        tensor: String,
        expected: Vec<u64>,
        found: Vec<u64>,
    },
    /// A tensor has a dtype its role does not allow (e.g. a norm that is not F32).
    WrongDType {
        tensor: String,
        found: DType,
        expected: &'static str,
    },
    /// A buffer of `bytes` bytes (sized by the file's numbers) could not be allocated.
    OutOfMemory { bytes: u64 },
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use FormatError::*;
        match self {
            Truncated { what, needed, actual } => {
                write!(f, "file truncated: {what} needs {needed} bytes, file has {actual}")
            }
            TrailingData { file_len, actual } => {
                write!(f, "file has {actual} bytes but header file_len says {file_len}")
            }
            BadMagic { found } => write!(f, "not a .pipit file: magic is {found:02x?}"),
            UnsupportedVersion { found } => {
                write!(f, "unsupported version {found} (this reader knows version {})", crate::VERSION)
            }
            UnknownFlags { flags } => write!(f, "header flags {flags:#x} has unknown bits"),
            NonZeroReserved { offset, value } => {
                write!(f, "reserved header byte at offset {offset} is {value:#04x}, must be 0")
            }
            LimitExceeded { field, value, limit } => {
                write!(f, "{field} is {value}, above the limit {limit}")
            }
            BadDataOffset { found, expected } => {
                write!(f, "header data_offset is {found}, expected {expected}")
            }
            BadDataLen { data_offset, data_len, file_len } => write!(
                f,
                "header data_offset {data_offset} + data_len {data_len} does not equal file_len {file_len}"
            ),
            HeaderChecksum { stored, computed } => write!(
                f,
                "header checksum mismatch: stored {stored:#010x}, computed {computed:#010x} (file corrupt)"
            ),
            NonZeroPadding { offset, value } => {
                write!(f, "padding byte at offset {offset} is {value:#04x}, must be 0")
            }
            MetaTruncated { field, offset, needed } => write!(
                f,
                "{field} at offset {offset} needs {needed} bytes past the end of the metadata section"
            ),
            MetaTrailing { offset, unused } => write!(
                f,
                "{unused} unused bytes at offset {offset} after the last directory entry"
            ),
            BadUtf8 { field } => write!(f, "{field} is not valid UTF-8"),
            EmptyString { field } => write!(f, "{field} is empty"),
            DuplicateKey { key } => write!(f, "metadata key '{key}' appears twice"),
            DuplicateTensor { name } => write!(f, "tensor '{name}' appears twice"),
            UnknownValueType { key, tag } => {
                write!(f, "metadata '{key}': unknown value type tag {tag}")
            }
            BadArrayType { key, tag } => {
                write!(f, "metadata '{key}': type tag {tag} is not allowed as an array element")
            }
            BadBool { key, value } => write!(f, "metadata '{key}': bool byte is {value}, must be 0 or 1"),
            UnknownDType { tensor, code } => write!(f, "tensor '{tensor}': unknown dtype code {code}"),
            EmptyShape { tensor } => write!(f, "tensor '{tensor}': rank is 0"),
            ZeroDim { tensor, axis } => write!(f, "tensor '{tensor}': dimension {axis} is 0"),
            SizeOverflow { tensor } => {
                write!(f, "tensor '{tensor}': element count or byte size overflows 64 bits")
            }
            NotWholeBlocks { tensor, dtype, cols } => write!(
                f,
                "tensor '{tensor}': innermost dimension {cols} is not a multiple of the {dtype} block size {}",
                dtype.block_elems()
            ),
            SizeMismatch { tensor, expected, found } => write!(
                f,
                "tensor '{tensor}': size is {found} bytes, dtype and shape need {expected}"
            ),
            Misaligned { tensor, offset } => write!(
                f,
                "tensor '{tensor}': offset {offset} is not a multiple of {}",
                crate::ALIGN
            ),
            OutOfBounds { tensor, offset, size, data_len } => write!(
                f,
                "tensor '{tensor}': bytes {offset}..{offset}+{size} exceed the data section ({data_len} bytes)"
            ),
            Unsorted { tensor, offset, prev, prev_offset } => write!(
                f,
                "tensor '{tensor}' at offset {offset} comes after '{prev}' at offset {prev_offset}: not sorted"
            ),
            Overlap { tensor, offset, prev, prev_end } => write!(
                f,
                "tensor '{tensor}' at offset {offset} overlaps '{prev}', which ends at {prev_end}"
            ),
            Gap { tensor, offset, expected } => write!(
                f,
                "tensor '{tensor}' at offset {offset} leaves a gap: it must start at {expected}"
            ),
            UncoveredTail { end, data_len } => write!(
                f,
                "data section is {data_len} bytes but the last tensor ends at {end}"
            ),
            MissingKey { key } => write!(f, "metadata key '{key}' is missing"),
            WrongType { key, expected, found } => {
                write!(f, "metadata '{key}' has type {found}, expected {expected}")
            }
            BadTokenId { key, id, n_vocab } => {
                write!(f, "metadata '{key}': token id {id} is outside 0..{n_vocab}")
            }
            LengthMismatch { key, len, expected } => {
                write!(f, "metadata '{key}' has {len} entries, expected {expected}")
            }
            TensorChecksum { tensor, stored, computed } => write!(
                f,
                "tensor '{tensor}': checksum mismatch, stored {stored:#010x}, computed {computed:#010x} (data corrupt)"
            ),
            BufferSize { dtype, bytes, elems } => {
                write!(f, "{bytes} bytes of {dtype} do not hold exactly {elems} values")
            }
            NonFinite { index, value } => write!(f, "value {value} at index {index} is not finite"),
            BlockMultiple { dtype, elems } => write!(
                f,
                "{elems} values are not a whole number of {dtype} blocks of {}",
                dtype.block_elems()
            ),
            ScaleOverflow { block, value } => {
                write!(f, "block {block}: scale or minimum {value} does not fit in f16")
            }
            BadValue { key, value, rule } => write!(f, "metadata '{key}' = {value}: {rule}"),
            UnknownChoice { key, value, known } => {
                write!(f, "{key} '{value}' (known: {known})")
            }
            MissingTensor { name } => write!(f, "tensor '{name}' is missing"),
            UnexpectedTensor { name, reason } => write!(f, "unexpected tensor '{name}': {reason}"),
            ShapeMismatch { tensor, expected, found } => write!(
                f,
                "tensor '{tensor}' has shape {found:?}, expected {expected:?}"
            ),
            WrongDType { tensor, found, expected } => {
                write!(f, "tensor '{tensor}' has dtype {found}, expected {expected}")
            }
            OutOfMemory { bytes } => write!(f, "out of memory: cannot allocate {bytes} bytes"),
        }
    }
}

impl std::error::Error for FormatError {}
