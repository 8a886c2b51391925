//! A GGUF (v2/v3) reader in safe code.
//!
//! Layout (little-endian): magic `GGUF`, `version: u32`, `tensor_count: u64`, `kv_count: u64`,
//! then `kv_count` key/value pairs (`key: string`, `type: u32`, value), then `tensor_count`
//! tensor infos (`name: string`, `n_dims: u32`, `dims: [u64; n_dims]` innermost first,
//! `type: u32`, `offset: u64` relative to the data section), then padding up to
//! `general.alignment` (default 32), then the data section. A string is `len: u64` + UTF-8 bytes;
//! an array is `elem_type: u32`, `len: u64`, elements (arrays may nest).
//!
//! Every count is checked against the bytes that remain before anything is allocated, and
//! every size and offset is computed with checked arithmetic: a malformed file gives a
//! [`GgufError`] naming the field, never a panic.

use std::fmt;

/// GGUF magic bytes.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the data section and of every tensor when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Most tensors a file may declare.
pub const MAX_TENSORS: u64 = 1 << 20;
/// Most key/value pairs a file may declare.
pub const MAX_KV: u64 = 1 << 20;
/// Most dimensions of a tensor (ggml's GGML_MAX_DIMS).
pub const MAX_DIMS: u32 = 4;
/// Deepest nesting of arrays accepted.
pub const MAX_ARRAY_DEPTH: u32 = 4;
/// Largest alignment accepted.
pub const MAX_ALIGNMENT: u64 = 1 << 20;

/// Why a GGUF file was rejected.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufError {
    /// The file does not start with `GGUF`.
    BadMagic([u8; 4]),
    /// Version other than 2 or 3.
    UnsupportedVersion(u32),
    /// The file ends inside `what`, which starts at `offset`.
    Truncated { what: String, offset: u64 },
    /// A count or size field is beyond what this reader accepts.
    TooLarge { field: String, value: u64, max: u64 },
    /// A value type code that GGUF does not define.
    BadValueType { key: String, code: u32 },
    /// A bool stored as something other than 0 or 1.
    BadBool { key: String, value: u8 },
    /// A string that is not UTF-8.
    InvalidUtf8 { what: String },
    /// The same key appears twice.
    DuplicateKey(String),
    /// The same tensor name appears twice.
    DuplicateTensor(String),
    /// A key with a value of the wrong type for its meaning.
    WrongType {
        key: String,
        expected: &'static str,
        found: String,
    },
    /// `general.alignment` is zero, not a power of two, or too large.
    BadAlignment(u64),
    /// A tensor type code that ggml does not define.
    UnknownTensorType { tensor: String, code: u32 },
    /// A tensor with a bad shape (zero dims, zero extent, rows not whole blocks).
    BadShape {
        tensor: String,
        dims: Vec<u64>,
        reason: String,
    },
    /// A tensor whose data offset is not aligned.
    Misaligned {
        tensor: String,
        offset: u64,
        alignment: u64,
    },
    /// A tensor whose data lies (partly) outside the file.
    OutOfBounds {
        tensor: String,
        offset: u64,
        size: u64,
        file_len: u64,
    },
    /// Two tensors whose data overlap.
    Overlap { first: String, second: String },
    /// Size arithmetic overflowed while computing `what`.
    Overflow { what: String },
}

impl fmt::Display for GgufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GgufError::BadMagic(m) => write!(f, "not a GGUF file: magic is {m:02x?}, expected \"GGUF\""),
            GgufError::UnsupportedVersion(v) => {
                write!(f, "unsupported GGUF version {v} (supported: 2, 3; big-endian files are not supported)")
            }
            GgufError::Truncated { what, offset } => {
                write!(f, "GGUF file truncated: {what} at byte {offset} runs past the end")
            }
            GgufError::TooLarge { field, value, max } => write!(f, "GGUF {field} = {value} exceeds the limit {max}"),
            GgufError::BadValueType { key, code } => write!(f, "GGUF key {key:?}: unknown value type {code}"),
            GgufError::BadBool { key, value } => write!(f, "GGUF key {key:?}: bool byte is {value}, expected 0 or 1"),
            GgufError::InvalidUtf8 { what } => write!(f, "GGUF {what} is not valid UTF-8"),
            GgufError::DuplicateKey(k) => write!(f, "GGUF key {k:?} appears twice"),
            GgufError::DuplicateTensor(n) => write!(f, "GGUF tensor {n:?} appears twice"),
            GgufError::WrongType { key, expected, found } => {
                write!(f, "GGUF key {key:?} has type {found}, expected {expected}")
            }
            GgufError::BadAlignment(a) => {
                write!(f, "GGUF general.alignment = {a}: must be a power of two between 1 and {MAX_ALIGNMENT}")
            }
            GgufError::UnknownTensorType { tensor, code } => write!(f, "GGUF tensor {tensor:?}: unknown ggml type {code}"),
            GgufError::BadShape { tensor, dims, reason } => write!(f, "GGUF tensor {tensor:?}: bad dims {dims:?}: {reason}"),
            GgufError::Misaligned { tensor, offset, alignment } => {
                write!(f, "GGUF tensor {tensor:?}: data offset {offset} is not a multiple of the alignment {alignment}")
            }
            GgufError::OutOfBounds { tensor, offset, size, file_len } => write!(
                f,
                "GGUF tensor {tensor:?}: data at {offset}..{offset}+{size} lies outside the file ({file_len} bytes)"
            ),
            GgufError::Overlap { first, second } => write!(f, "GGUF tensors {first:?} and {second:?} overlap"),
            GgufError::Overflow { what } => write!(f, "GGUF size arithmetic overflows computing {what}"),
        }
    }
}

impl std::error::Error for GgufError {}

/// A ggml tensor type, as stored in GGUF tensor infos.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
    Iq2Xxs,
    Iq2Xs,
    Iq3Xxs,
    Iq1S,
    Iq4Nl,
    Iq3S,
    Iq2S,
    Iq4Xs,
    I8,
    I16,
    I32,
    I64,
    F64,
    Iq1M,
    Bf16,
    Tq1_0,
    Tq2_0,
    Mxfp4,
}

impl GgmlType {
    /// The type for a ggml type code, if ggml defines it.
    pub fn from_code(code: u32) -> Option<GgmlType> {
        use GgmlType::*;
        Some(match code {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            6 => Q5_0,
            7 => Q5_1,
            8 => Q8_0,
            9 => Q8_1,
            10 => Q2K,
            11 => Q3K,
            12 => Q4K,
            13 => Q5K,
            14 => Q6K,
            15 => Q8K,
            16 => Iq2Xxs,
            17 => Iq2Xs,
            18 => Iq3Xxs,
            19 => Iq1S,
            20 => Iq4Nl,
            21 => Iq3S,
            22 => Iq2S,
            23 => Iq4Xs,
            24 => I8,
            25 => I16,
            26 => I32,
            27 => I64,
            28 => F64,
            29 => Iq1M,
            30 => Bf16,
            34 => Tq1_0,
            35 => Tq2_0,
            39 => Mxfp4,
            _ => return None,
        })
    }

    /// The ggml type code.
    pub fn code(self) -> u32 {
        use GgmlType::*;
        match self {
            F32 => 0,
            F16 => 1,
            Q4_0 => 2,
            Q4_1 => 3,
            Q5_0 => 6,
            Q5_1 => 7,
            Q8_0 => 8,
            Q8_1 => 9,
            Q2K => 10,
            Q3K => 11,
            Q4K => 12,
            Q5K => 13,
            Q6K => 14,
            Q8K => 15,
            Iq2Xxs => 16,
            Iq2Xs => 17,
            Iq3Xxs => 18,
            Iq1S => 19,
            Iq4Nl => 20,
            Iq3S => 21,
            Iq2S => 22,
            Iq4Xs => 23,
            I8 => 24,
            I16 => 25,
            I32 => 26,
            I64 => 27,
            F64 => 28,
            Iq1M => 29,
            Bf16 => 30,
            Tq1_0 => 34,
            Tq2_0 => 35,
            Mxfp4 => 39,
        }
    }

    /// ggml's name for the type (e.g. `Q4_K`).
    pub fn name(self) -> &'static str {
        use GgmlType::*;
        match self {
            F32 => "F32",
            F16 => "F16",
            Q4_0 => "Q4_0",
            Q4_1 => "Q4_1",
            Q5_0 => "Q5_0",
            Q5_1 => "Q5_1",
            Q8_0 => "Q8_0",
            Q8_1 => "Q8_1",
            Q2K => "Q2_K",
            Q3K => "Q3_K",
            Q4K => "Q4_K",
            Q5K => "Q5_K",
            Q6K => "Q6_K",
            Q8K => "Q8_K",
            Iq2Xxs => "IQ2_XXS",
            Iq2Xs => "IQ2_XS",
            Iq3Xxs => "IQ3_XXS",
            Iq1S => "IQ1_S",
            Iq4Nl => "IQ4_NL",
            Iq3S => "IQ3_S",
            Iq2S => "IQ2_S",
            Iq4Xs => "IQ4_XS",
            I8 => "I8",
            I16 => "I16",
            I32 => "I32",
            I64 => "I64",
            F64 => "F64",
            Iq1M => "IQ1_M",
            Bf16 => "BF16",
            Tq1_0 => "TQ1_0",
            Tq2_0 => "TQ2_0",
            Mxfp4 => "MXFP4",
        }
    }

    /// Elements per block and bytes per block.
    pub fn block(self) -> (u64, u64) {
        use GgmlType::*;
        match self {
            F32 => (1, 4),
            F16 => (1, 2),
            Q4_0 => (32, 18),
            Q4_1 => (32, 20),
            Q5_0 => (32, 22),
            Q5_1 => (32, 24),
            Q8_0 => (32, 34),
            Q8_1 => (32, 40),
            Q2K => (256, 84),
            Q3K => (256, 110),
            Q4K => (256, 144),
            Q5K => (256, 176),
            Q6K => (256, 210),
            Q8K => (256, 292),
            Iq2Xxs => (256, 66),
            Iq2Xs => (256, 74),
            Iq3Xxs => (256, 98),
            Iq1S => (256, 50),
            Iq4Nl => (32, 18),
            Iq3S => (256, 110),
            Iq2S => (256, 82),
            Iq4Xs => (256, 136),
            I8 => (1, 1),
            I16 => (1, 2),
            I32 => (1, 4),
            I64 => (1, 8),
            F64 => (1, 8),
            Iq1M => (256, 56),
            Bf16 => (1, 2),
            Tq1_0 => (256, 54),
            Tq2_0 => (256, 66),
            Mxfp4 => (32, 17),
        }
    }

    /// Bytes needed for `n_elems` elements; `None` if not whole blocks or on overflow.
    pub fn bytes_for(self, n_elems: u64) -> Option<u64> {
        let (be, bb) = self.block();
        if !n_elems.is_multiple_of(be) {
            return None;
        }
        (n_elems / be).checked_mul(bb)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A typed GGUF array. Arrays of arrays are [`Array::Arr`].
#[derive(Debug, Clone, PartialEq)]
pub enum Array {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bool(Vec<bool>),
    Str(Vec<String>),
    Arr(Vec<Array>),
}

impl Array {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Array::U8(v) => v.len(),
            Array::I8(v) => v.len(),
            Array::U16(v) => v.len(),
            Array::I16(v) => v.len(),
            Array::U32(v) => v.len(),
            Array::I32(v) => v.len(),
            Array::U64(v) => v.len(),
            Array::I64(v) => v.len(),
            Array::F32(v) => v.len(),
            Array::F64(v) => v.len(),
            Array::Bool(v) => v.len(),
            Array::Str(v) => v.len(),
            Array::Arr(v) => v.len(),
        }
    }

    /// True when the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Name of the element type, for messages.
    pub fn elem_type_name(&self) -> &'static str {
        match self {
            Array::U8(_) => "u8",
            Array::I8(_) => "i8",
            Array::U16(_) => "u16",
            Array::I16(_) => "i16",
            Array::U32(_) => "u32",
            Array::I32(_) => "i32",
            Array::U64(_) => "u64",
            Array::I64(_) => "i64",
            Array::F32(_) => "f32",
            Array::F64(_) => "f64",
            Array::Bool(_) => "bool",
            Array::Str(_) => "string",
            Array::Arr(_) => "array",
        }
    }

    /// The elements as signed 64-bit integers, when they are integers (or bools).
    pub fn to_i64s(&self) -> Option<Vec<i64>> {
        Some(match self {
            Array::U8(v) => v.iter().map(|&x| i64::from(x)).collect(),
            Array::I8(v) => v.iter().map(|&x| i64::from(x)).collect(),
            Array::U16(v) => v.iter().map(|&x| i64::from(x)).collect(),
            Array::I16(v) => v.iter().map(|&x| i64::from(x)).collect(),
            Array::U32(v) => v.iter().map(|&x| i64::from(x)).collect(),
            Array::I32(v) => v.iter().map(|&x| i64::from(x)).collect(),
            Array::U64(v) => v
                .iter()
                .map(|&x| i64::try_from(x).ok())
                .collect::<Option<_>>()?,
            Array::I64(v) => v.clone(),
            Array::Bool(v) => v.iter().map(|&x| i64::from(x)).collect(),
            _ => return None,
        })
    }
}

/// A GGUF metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    Str(String),
    Array(Array),
}

impl Value {
    /// Name of the value's type, for messages.
    pub fn type_name(&self) -> String {
        match self {
            Value::U8(_) => "u8".into(),
            Value::I8(_) => "i8".into(),
            Value::U16(_) => "u16".into(),
            Value::I16(_) => "i16".into(),
            Value::U32(_) => "u32".into(),
            Value::I32(_) => "i32".into(),
            Value::U64(_) => "u64".into(),
            Value::I64(_) => "i64".into(),
            Value::F32(_) => "f32".into(),
            Value::F64(_) => "f64".into(),
            Value::Bool(_) => "bool".into(),
            Value::Str(_) => "string".into(),
            Value::Array(a) => format!("array of {}", a.elem_type_name()),
        }
    }

    /// The value as an integer, for any integer type.
    pub fn as_i128(&self) -> Option<i128> {
        Some(match *self {
            Value::U8(x) => x.into(),
            Value::I8(x) => x.into(),
            Value::U16(x) => x.into(),
            Value::I16(x) => x.into(),
            Value::U32(x) => x.into(),
            Value::I32(x) => x.into(),
            Value::U64(x) => x.into(),
            Value::I64(x) => x.into(),
            _ => return None,
        })
    }
}

/// One tensor info.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// Name as stored (e.g. `blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions, innermost first (GGUF order).
    pub dims: Vec<u64>,
    /// Element type.
    pub ggml_type: GgmlType,
    /// Absolute offset of the data from the start of the file.
    pub offset: u64,
    /// Size of the data in bytes.
    pub size: u64,
}

impl TensorInfo {
    /// Number of elements (checked at parse time not to overflow).
    pub fn n_elems(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Shape outermost first (the reverse of `dims`).
    pub fn shape(&self) -> Vec<u64> {
        self.dims.iter().rev().copied().collect()
    }
}

/// A parsed GGUF file, borrowing its bytes.
#[derive(Debug)]
pub struct Gguf<'a> {
    /// Format version (2 or 3).
    pub version: u32,
    /// Key/value metadata in file order.
    pub kv: Vec<(String, Value)>,
    /// Tensor infos in file order.
    pub tensors: Vec<TensorInfo>,
    /// Alignment of the data section.
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
    bytes: &'a [u8],
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8], GgufError> {
        let truncated = || GgufError::Truncated {
            what: what(),
            offset: self.pos as u64,
        };
        let n = usize::try_from(n).map_err(|_| truncated())?;
        let end = self.pos.checked_add(n).ok_or_else(truncated)?;
        let s = self.b.get(self.pos..end).ok_or_else(truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn remaining(&self) -> u64 {
        (self.b.len() - self.pos) as u64
    }

    fn arr<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N], GgufError> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, GgufError> {
        let len = self.u64(&|| format!("length of {}", what()))?;
        let s = self.take(len, what)?;
        String::from_utf8(s.to_vec()).map_err(|_| GgufError::InvalidUtf8 { what: what() })
    }
}

/// Checks an element count read from the file against the bytes left (each element needs
/// at least `min_bytes`), so that a huge count fails before any allocation.
fn check_count(
    c: &Cursor,
    field: &dyn Fn() -> String,
    count: u64,
    min_bytes: u64,
) -> Result<usize, GgufError> {
    let need = count
        .checked_mul(min_bytes)
        .ok_or_else(|| GgufError::Overflow { what: field() })?;
    if need > c.remaining() {
        return Err(GgufError::Truncated {
            what: format!("{} ({count} elements)", field()),
            offset: c.pos as u64,
        });
    }
    usize::try_from(count).map_err(|_| GgufError::TooLarge {
        field: field(),
        value: count,
        max: usize::MAX as u64,
    })
}

macro_rules! read_prims {
    ($c:expr, $n:expr, $what:expr, $t:ty, $size:expr) => {{
        let raw = $c.take(($n as u64) * $size, $what)?;
        raw.chunks_exact($size as usize)
            .map(|ch| {
                let mut a = [0u8; $size];
                a.copy_from_slice(ch);
                <$t>::from_le_bytes(a)
            })
            .collect::<Vec<$t>>()
    }};
}

fn value_size(code: u32) -> Option<u64> {
    Some(match code {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        8 | 9 => 8, // minimum: a length field
        _ => return None,
    })
}

fn read_value(c: &mut Cursor, key: &str, code: u32, depth: u32) -> Result<Value, GgufError> {
    let what = || format!("value of key {key:?}");
    Ok(match code {
        0 => Value::U8(c.arr::<1>(&what)?[0]),
        1 => Value::I8(i8::from_le_bytes(c.arr(&what)?)),
        2 => Value::U16(u16::from_le_bytes(c.arr(&what)?)),
        3 => Value::I16(i16::from_le_bytes(c.arr(&what)?)),
        4 => Value::U32(u32::from_le_bytes(c.arr(&what)?)),
        5 => Value::I32(i32::from_le_bytes(c.arr(&what)?)),
        6 => Value::F32(f32::from_le_bytes(c.arr(&what)?)),
        7 => Value::Bool(read_bool(c, key)?),
        8 => Value::Str(c.string(&what)?),
        9 => Value::Array(read_array(c, key, depth)?),
        10 => Value::U64(u64::from_le_bytes(c.arr(&what)?)),
        11 => Value::I64(i64::from_le_bytes(c.arr(&what)?)),
        12 => Value::F64(f64::from_le_bytes(c.arr(&what)?)),
        _ => {
            return Err(GgufError::BadValueType {
                key: key.to_string(),
                code,
            })
        }
    })
}

fn read_bool(c: &mut Cursor, key: &str) -> Result<bool, GgufError> {
    match c.arr::<1>(&|| format!("value of key {key:?}"))?[0] {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(GgufError::BadBool {
            key: key.to_string(),
            value: v,
        }),
    }
}

fn read_array(c: &mut Cursor, key: &str, depth: u32) -> Result<Array, GgufError> {
    if depth >= MAX_ARRAY_DEPTH {
        return Err(GgufError::TooLarge {
            field: format!("array nesting depth of key {key:?}"),
            value: u64::from(depth) + 1,
            max: u64::from(MAX_ARRAY_DEPTH),
        });
    }
    let et = c.u32(&|| format!("array element type of key {key:?}"))?;
    let n = c.u64(&|| format!("array length of key {key:?}"))?;
    let min = value_size(et).ok_or_else(|| GgufError::BadValueType {
        key: key.to_string(),
        code: et,
    })?;
    let field = || format!("array of key {key:?}");
    let n = check_count(c, &field, n, min)?;
    Ok(match et {
        0 => Array::U8(c.take(n as u64, &field)?.to_vec()),
        1 => Array::I8(read_prims!(c, n, &field, i8, 1)),
        2 => Array::U16(read_prims!(c, n, &field, u16, 2)),
        3 => Array::I16(read_prims!(c, n, &field, i16, 2)),
        4 => Array::U32(read_prims!(c, n, &field, u32, 4)),
        5 => Array::I32(read_prims!(c, n, &field, i32, 4)),
        6 => Array::F32(read_prims!(c, n, &field, f32, 4)),
        7 => Array::Bool(
            (0..n)
                .map(|_| read_bool(c, key))
                .collect::<Result<_, _>>()?,
        ),
        8 => {
            let mut v = Vec::with_capacity(n);
            for i in 0..n {
                v.push(c.string(&|| format!("string {i} of key {key:?}"))?);
            }
            Array::Str(v)
        }
        9 => {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(read_array(c, key, depth + 1)?);
            }
            Array::Arr(v)
        }
        10 => Array::U64(read_prims!(c, n, &field, u64, 8)),
        11 => Array::I64(read_prims!(c, n, &field, i64, 8)),
        12 => Array::F64(read_prims!(c, n, &field, f64, 8)),
        _ => {
            return Err(GgufError::BadValueType {
                key: key.to_string(),
                code: et,
            })
        }
    })
}

impl<'a> Gguf<'a> {
    /// Parses the header, metadata and tensor infos of `bytes` (the whole file) and checks
    /// that every tensor's data is aligned, inside the file and not overlapping another.
    pub fn parse(bytes: &'a [u8]) -> Result<Gguf<'a>, GgufError> {
        let mut c = Cursor { b: bytes, pos: 0 };
        let magic: [u8; 4] = c.arr(&|| "magic".into())?;
        if magic != MAGIC {
            return Err(GgufError::BadMagic(magic));
        }
        let version = c.u32(&|| "version".into())?;
        if version != 2 && version != 3 {
            return Err(GgufError::UnsupportedVersion(version));
        }
        let n_tensors = c.u64(&|| "tensor count".into())?;
        let n_kv = c.u64(&|| "key/value count".into())?;
        if n_tensors > MAX_TENSORS {
            return Err(GgufError::TooLarge {
                field: "tensor count".into(),
                value: n_tensors,
                max: MAX_TENSORS,
            });
        }
        if n_kv > MAX_KV {
            return Err(GgufError::TooLarge {
                field: "key/value count".into(),
                value: n_kv,
                max: MAX_KV,
            });
        }
        // A key/value pair needs at least 8 (key length) + 4 (type) + 1 bytes.
        let n_kv = check_count(&c, &|| "key/value pairs".into(), n_kv, 13)?;
        let mut kv: Vec<(String, Value)> = Vec::with_capacity(n_kv);
        let mut seen = std::collections::HashSet::new();
        for i in 0..n_kv {
            let key = c.string(&|| format!("key {i}"))?;
            let code = c.u32(&|| format!("value type of key {key:?}"))?;
            let v = read_value(&mut c, &key, code, 0)?;
            if !seen.insert(key.clone()) {
                return Err(GgufError::DuplicateKey(key));
            }
            kv.push((key, v));
        }

        let alignment = match kv.iter().find(|(k, _)| k == "general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some((_, Value::U32(a))) => u64::from(*a),
            Some((k, v)) => {
                return Err(GgufError::WrongType {
                    key: k.clone(),
                    expected: "u32",
                    found: v.type_name(),
                })
            }
        };
        if alignment == 0 || !alignment.is_power_of_two() || alignment > MAX_ALIGNMENT {
            return Err(GgufError::BadAlignment(alignment));
        }

        // A tensor info needs at least 8 (name length) + 4 + 8 + 4 + 8 bytes.
        let n_tensors = check_count(&c, &|| "tensor infos".into(), n_tensors, 32)?;
        let mut raw = Vec::with_capacity(n_tensors);
        let mut names = std::collections::HashSet::new();
        for i in 0..n_tensors {
            let name = c.string(&|| format!("name of tensor {i}"))?;
            let n_dims = c.u32(&|| format!("n_dims of tensor {name:?}"))?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(GgufError::BadShape {
                    tensor: name,
                    dims: vec![],
                    reason: format!("n_dims = {n_dims}, must be 1..={MAX_DIMS}"),
                });
            }
            let dims = read_prims!(c, n_dims, &|| format!("dims of tensor {name:?}"), u64, 8);
            let code = c.u32(&|| format!("type of tensor {name:?}"))?;
            let offset = c.u64(&|| format!("offset of tensor {name:?}"))?;
            if !names.insert(name.clone()) {
                return Err(GgufError::DuplicateTensor(name));
            }
            raw.push((name, dims, code, offset));
        }

        let end_of_infos = c.pos as u64;
        let data_offset = end_of_infos
            .checked_next_multiple_of(alignment)
            .ok_or_else(|| GgufError::Overflow {
                what: "data section offset".into(),
            })?;
        let file_len = bytes.len() as u64;
        let mut tensors = Vec::with_capacity(raw.len());
        for (name, dims, code, rel) in raw {
            let ggml_type = GgmlType::from_code(code).ok_or(GgufError::UnknownTensorType {
                tensor: name.clone(),
                code,
            })?;
            if dims.contains(&0) {
                return Err(GgufError::BadShape {
                    tensor: name,
                    dims,
                    reason: "a dimension is 0".into(),
                });
            }
            let mut n_elems: u64 = 1;
            for &d in &dims {
                n_elems = n_elems.checked_mul(d).ok_or_else(|| GgufError::Overflow {
                    what: format!("element count of tensor {name:?}"),
                })?;
            }
            let (be, _) = ggml_type.block();
            if dims[0] % be != 0 {
                return Err(GgufError::BadShape {
                    tensor: name,
                    dims,
                    reason: format!(
                        "innermost dimension is not a multiple of the {ggml_type} block size {be}"
                    ),
                });
            }
            let size = ggml_type
                .bytes_for(n_elems)
                .ok_or_else(|| GgufError::Overflow {
                    what: format!("byte size of tensor {name:?}"),
                })?;
            if rel % alignment != 0 {
                return Err(GgufError::Misaligned {
                    tensor: name,
                    offset: rel,
                    alignment,
                });
            }
            let offset = data_offset
                .checked_add(rel)
                .ok_or_else(|| GgufError::Overflow {
                    what: format!("offset of tensor {name:?}"),
                })?;
            match offset.checked_add(size) {
                Some(end) if end <= file_len => {}
                _ => {
                    return Err(GgufError::OutOfBounds {
                        tensor: name,
                        offset,
                        size,
                        file_len,
                    })
                }
            }
            tensors.push(TensorInfo {
                name,
                dims,
                ggml_type,
                offset,
                size,
            });
        }

        let mut order: Vec<usize> = (0..tensors.len()).collect();
        order.sort_by_key(|&i| tensors[i].offset);
        for w in order.windows(2) {
            let (a, b) = (&tensors[w[0]], &tensors[w[1]]);
            // a.offset + a.size was checked above not to overflow.
            if a.offset + a.size > b.offset {
                return Err(GgufError::Overlap {
                    first: a.name.clone(),
                    second: b.name.clone(),
                });
            }
        }

        Ok(Gguf {
            version,
            kv,
            tensors,
            alignment,
            data_offset,
            bytes,
        })
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.kv.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The tensor named `name`, if present.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The data bytes of `t` (bounds checked at parse time).
    pub fn data(&self, t: &TensorInfo) -> &'a [u8] {
        // Offsets were validated against the file length in `parse`; usize conversion cannot
        // fail because the slice length itself is a usize.
        let start = t.offset as usize;
        &self.bytes[start..start + t.size as usize]
    }

    fn wrong(&self, key: &str, expected: &'static str, v: &Value) -> GgufError {
        GgufError::WrongType {
            key: key.to_string(),
            expected,
            found: v.type_name(),
        }
    }

    /// An unsigned integer key (any integer type whose value fits in u32).
    pub fn get_u32(&self, key: &str) -> Result<Option<u32>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_i128().and_then(|x| u32::try_from(x).ok()) {
                Some(x) => Ok(Some(x)),
                None => Err(self.wrong(key, "an integer in 0..=u32::MAX", v)),
            },
        }
    }

    /// A float key (f32 or f64, or an integer).
    pub fn get_f32(&self, key: &str) -> Result<Option<f32>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::F32(x)) => Ok(Some(*x)),
            Some(Value::F64(x)) => Ok(Some(*x as f32)),
            Some(v) => match v.as_i128() {
                Some(x) => Ok(Some(x as f32)),
                None => Err(self.wrong(key, "a number", v)),
            },
        }
    }

    /// A bool key.
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.wrong(key, "bool", v)),
        }
    }

    /// A string key.
    pub fn get_str(&self, key: &str) -> Result<Option<&str>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Str(s)) => Ok(Some(s)),
            Some(v) => Err(self.wrong(key, "string", v)),
        }
    }

    /// An array key.
    pub fn get_array(&self, key: &str) -> Result<Option<&Array>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(v) => Err(self.wrong(key, "array", v)),
        }
    }
}
