//! pipit-convert: turns GGUF files and Hugging Face model directories into `.pipit` files.

pub mod dequant;
pub mod gguf;
