//! The converter's error type: every refusal names what was wrong and the value found.

use crate::dequant::DequantError;
use crate::gguf::GgufError;
use pipit_format::FormatError;
use std::fmt;
use std::path::PathBuf;

/// Why a conversion was refused or failed.
#[derive(Debug)]
pub enum ConvertError {
    /// INPUT does not exist or is neither a file nor a directory.
    Input { path: PathBuf, reason: String },
    /// Reading an input file failed.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The GGUF file is malformed.
    Gguf(GgufError),
    /// A JSON file of a Hugging Face directory is malformed or lacks a field.
    Json { file: PathBuf, reason: String },
    /// A safetensors file is malformed.
    Safetensors { file: PathBuf, reason: String },
    /// The model's architecture is not one pipit runs.
    UnknownArchitecture { found: String },
    /// A tensor's element type cannot be converted.
    UnsupportedDtype { tensor: String, dtype: String },
    /// A tensor's shape is not what the hyper-parameters require.
    ShapeMismatch {
        tensor: String,
        expected: Vec<u64>,
        found: Vec<u64>,
    },
    /// A required tensor is absent.
    MissingTensor { tensor: String },
    /// A tensor that pipit does not know (it would be silently ignored at run time).
    UnexpectedTensor { tensor: String },
    /// No usable tokenizer in the input.
    MissingTokenizer { what: String },
    /// A required metadata key is absent.
    MissingKey { key: String },
    /// A metadata value is out of range or inconsistent.
    BadValue {
        key: String,
        value: String,
        reason: String,
    },
    /// A feature of the input that pipit does not support.
    Unsupported { what: String },
    /// The output path cannot be written.
    OutputNotWritable { path: PathBuf, reason: String },
    /// The format crate rejected a tensor or the file (context says which).
    Format {
        context: String,
        source: FormatError,
    },
    /// A tensor's data could not be dequantized.
    Dequant {
        tensor: String,
        source: DequantError,
    },
}

impl fmt::Display for ConvertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ConvertError::*;
        match self {
            Input { path, reason } => write!(f, "input {}: {reason}", path.display()),
            Io { path, source } => write!(f, "cannot read {}: {source}", path.display()),
            Gguf(e) => write!(f, "{e}"),
            Json { file, reason } => write!(f, "{}: {reason}", file.display()),
            Safetensors { file, reason } => write!(f, "{}: {reason}", file.display()),
            UnknownArchitecture { found } => write!(
                f,
                "unknown architecture {found:?} (supported: GGUF llama, qwen2, gemma3; \
                 Hugging Face llama, mistral, qwen2)"
            ),
            UnsupportedDtype { tensor, dtype } => write!(
                f,
                "tensor {tensor:?}: unsupported dtype {dtype} (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, \
                 Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K)"
            ),
            ShapeMismatch { tensor, expected, found } => {
                write!(f, "tensor {tensor:?}: shape mismatch: expected {expected:?}, found {found:?}")
            }
            MissingTensor { tensor } => write!(f, "required tensor {tensor:?} is missing"),
            UnexpectedTensor { tensor } => write!(f, "tensor {tensor:?} is not part of any architecture pipit runs"),
            MissingTokenizer { what } => write!(f, "missing tokenizer: {what}"),
            MissingKey { key } => write!(f, "required key {key:?} is missing"),
            BadValue { key, value, reason } => write!(f, "{key} = {value}: {reason}"),
            Unsupported { what } => write!(f, "unsupported: {what}"),
            OutputNotWritable { path, reason } => write!(f, "output {} is not writable: {reason}", path.display()),
            Format { context, source } => write!(f, "{context}: {source}"),
            Dequant { tensor, source } => write!(f, "tensor {tensor:?}: {source}"),
        }
    }
}

impl std::error::Error for ConvertError {}

impl From<GgufError> for ConvertError {
    fn from(e: GgufError) -> Self {
        ConvertError::Gguf(e)
    }
}

/// Result alias of the converter.
pub type Result<T> = std::result::Result<T, ConvertError>;
