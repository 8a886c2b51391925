//! pipit-convert: turns GGUF files and Hugging Face model directories into `.pipit` files.
//!
//! [`gguf`] parses GGUF, [`dequant`] decodes ggml blocks, [`gguf_source`] and [`hf`] turn
//! an input into a [`source::Source`] (SPEC.md metadata + renamed tensors), and
//! [`convert`] chooses dtypes, copies or requantizes, measures the error and writes.

pub mod convert;
pub mod dequant;
pub mod error;
pub mod gguf;
pub mod gguf_source;
pub mod hf;
pub mod source;

pub use error::{ConvertError, Result};
