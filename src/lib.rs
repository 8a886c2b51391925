//! pipit: a small, fast, trustworthy runtime for quantized decoder-only language models.
//!
//! Layout: [`model`] opens and validates a `.pipit` file; [`tokenizer`] turns text into ids
//! and back; [`kernels`] holds the dequantize-matmul kernels (scalar reference plus SIMD
//! paths chosen at run time); [`forward`] is the transformer; [`session`] owns the state of
//! one conversation; [`sampler`] picks the next token; [`ffi`] is the C ABI
//! (`include/pipit.h`); [`constraint`] compiles regexes, JSON Schema and GBNF into token
//! masks for structured output; [`chat`] renders chat templates and runs `pipit chat`.

pub mod chat;
pub mod constraint;
pub mod error;
pub mod ffi;
pub mod forward;
pub mod kernels;
pub mod model;
pub mod sampler;
pub mod session;
pub mod threadpool;
pub mod tokenizer;

pub use error::{Error, Result};
