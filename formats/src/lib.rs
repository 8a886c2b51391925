//! The `.pipit` weight file format: constants, data types, a validating reader and a writer.
//!
//! `SPEC.md` in this crate is the normative description of the bytes; this crate is its
//! reference implementation. The reader ([`PipitFile::parse`]) is safe code with checked
//! arithmetic throughout and never panics: every malformed input yields a [`FormatError`]
//! naming the offending field and value.

pub mod arch;
pub mod blocks;
pub mod crc32c;
mod error;
pub mod limits;
pub mod mem;
mod metadata;
mod reader;
mod writer;

pub use error::FormatError;
pub use metadata::{check_token_lengths, Metadata, Value};
pub use reader::{PipitFile, TensorInfo};
pub use writer::{file_kind, refuse_non_regular, Writer};

/// The first 8 bytes of every `.pipit` file. The high-bit byte and the CR LF pair catch
/// 7-bit and newline-translating transfers, as in PNG.
pub const MAGIC: [u8; 8] = *b"\x89PIPIT\r\n";
/// The format version this crate reads and writes.
pub const VERSION: u32 = 1;
/// Alignment, in bytes, of the data section and of every tensor within it.
pub const ALIGN: u64 = 64;
/// Size of the fixed header at the start of the file.
pub const HEADER_LEN: u64 = 64;

/// Element type of a tensor. The discriminant is the code stored in the file.
/// Names follow GGUF's (`Q4_K`, not `Q4K`) so that one spelling is used everywhere.
#[repr(u32)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE-754 binary32.
    F32 = 0,
    /// IEEE-754 binary16.
    F16 = 1,
    /// 32 weights: an f16 scale and 32 signed bytes (GGUF `Q8_0`).
    Q8_0 = 2,
    /// 32 weights: an f16 scale and 32 unsigned nibbles offset by 8 (GGUF `Q4_0`).
    Q4_0 = 3,
    /// 32 weights: an f16 scale, an f16 minimum and 32 unsigned nibbles (GGUF `Q4_1`).
    Q4_1 = 4,
    /// 32 weights: an f16 scale and 32 5-bit values offset by 16 (GGUF `Q5_0`).
    Q5_0 = 5,
    /// 32 weights: an f16 scale, an f16 minimum and 32 5-bit values (GGUF `Q5_1`).
    Q5_1 = 6,
    /// 256 weights: f16 super-scales, 8 sub-blocks of 32 with 6-bit scales and minimums,
    /// 4-bit values (GGUF `Q4_K`).
    Q4_K = 7,
    /// As `Q4_K` with 5-bit values (GGUF `Q5_K`).
    Q5_K = 8,
    /// 256 weights: an f16 super-scale, 16 sub-blocks of 16 with i8 scales, 6-bit values
    /// offset by 32 (GGUF `Q6_K`).
    Q6_K = 9,
}

impl DType {
    /// Every dtype, in code order.
    pub const ALL: [DType; 10] = [
        DType::F32,
        DType::F16,
        DType::Q8_0,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
    ];

    /// The quantized dtypes (those with [`DType::is_quantized`]), in code order.
    pub const QUANTIZED: [DType; 8] = [
        DType::Q8_0,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
    ];

    /// The dtype stored under `code`, or `None` for an unknown code.
    pub fn from_code(code: u32) -> Option<Self> {
        match code {
            0 => Some(DType::F32),
            1 => Some(DType::F16),
            2 => Some(DType::Q8_0),
            3 => Some(DType::Q4_0),
            4 => Some(DType::Q4_1),
            5 => Some(DType::Q5_0),
            6 => Some(DType::Q5_1),
            7 => Some(DType::Q4_K),
            8 => Some(DType::Q5_K),
            9 => Some(DType::Q6_K),
            _ => None,
        }
    }

    /// The code stored in the file.
    pub const fn code(self) -> u32 {
        self as u32
    }

    /// Name as written in SPEC.md (`F32`, `F16`, `Q8_0`, `Q4_0`, ..., `Q6_K`).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::Q8_0 => "Q8_0",
            DType::Q4_0 => "Q4_0",
            DType::Q4_1 => "Q4_1",
            DType::Q5_0 => "Q5_0",
            DType::Q5_1 => "Q5_1",
            DType::Q4_K => "Q4_K",
            DType::Q5_K => "Q5_K",
            DType::Q6_K => "Q6_K",
        }
    }

    /// Number of elements in one block (1 for the float types).
    pub const fn block_elems(self) -> usize {
        match self {
            DType::F32 | DType::F16 => 1,
            DType::Q8_0 | DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q5_1 => 32,
            DType::Q4_K | DType::Q5_K | DType::Q6_K => 256,
        }
    }

    /// Number of bytes one block occupies.
    pub const fn block_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 => 2,
            DType::Q8_0 => size_of::<blocks::BlockQ8_0>(),
            DType::Q4_0 => size_of::<blocks::BlockQ4_0>(),
            DType::Q4_1 => size_of::<blocks::BlockQ4_1>(),
            DType::Q5_0 => size_of::<blocks::BlockQ5_0>(),
            DType::Q5_1 => size_of::<blocks::BlockQ5_1>(),
            DType::Q4_K => size_of::<blocks::BlockQ4K>(),
            DType::Q5_K => size_of::<blocks::BlockQ5K>(),
            DType::Q6_K => size_of::<blocks::BlockQ6K>(),
        }
    }

    /// Bytes needed for `n_elems` elements; `None` when `n_elems` is not a whole number of
    /// blocks or the size overflows `u64`.
    pub fn bytes_for(self, n_elems: u64) -> Option<u64> {
        let block = self.block_elems() as u64;
        if !n_elems.is_multiple_of(block) {
            return None;
        }
        (n_elems / block).checked_mul(self.block_bytes() as u64)
    }

    /// Whether values are stored in quantized blocks (the matrices the int8-activation
    /// kernels take).
    pub const fn is_quantized(self) -> bool {
        self.block_elems() > 1
    }

    /// Position in [`DType::QUANTIZED`] (the index of a quantized dtype in kernel tables),
    /// `None` for the float types.
    pub const fn quant_index(self) -> Option<usize> {
        let mut i = 0;
        while i < DType::QUANTIZED.len() {
            if DType::QUANTIZED[i].code() == self.code() {
                return Some(i);
            }
            i += 1;
        }
        None
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `n` rounded up to the next multiple of [`ALIGN`]; `None` on overflow.
pub fn align_up(n: u64) -> Option<u64> {
    Some(n.checked_add(ALIGN - 1)? / ALIGN * ALIGN)
}
