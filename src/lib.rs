//! pipit: a small, fast, trustworthy runtime for quantized decoder-only language models.
//!
//! The crate is a straight line of layers, each using only those before it (a test reads
//! the `crate::` paths of every file and checks that the module graph has no cycle):
//!
//! - [`model`] opens and validates a `.pipit` file; [`tokenizer`] turns text into ids and
//!   back;
//! - `kernels` (dequantize-matmul kernels: scalar reference plus SIMD paths chosen at run
//!   time), `kv` (the KV cache: pages shared between sequences, window-sized rings for
//!   sliding layers) and `forward` (the transformer) are internal;
//! - [`constraint`] compiles regexes, JSON Schema and GBNF into token masks for structured
//!   output;
//! - [`session`] owns the state of one conversation (context, KV cache, save/load,
//!   truncate, choose, beam search, its constraint); [`sampler`] picks the next token;
//! - [`generate`] is the one generation loop (stop strings, masks, stop reasons);
//! - the faces: [`chat`] renders chat templates, [`ffi`] is the C ABI (`include/pipit.h`),
//!   and the `pipit` binary is the command line.

pub mod chat;
pub mod constraint;
pub mod error;
pub mod ffi;
mod forward;
pub mod generate;
mod kernels;
mod kv;
mod mem;
pub mod model;
pub mod sampler;
pub mod session;
mod threadpool;
pub mod tokenizer;

pub use error::{Error, Result};

/// Internals reachable for pipit's own tests and benchmarks only: not part of the API and
/// not covered by semver.
#[doc(hidden)]
pub mod testing {
    /// The dequantize-matmul kernels.
    pub mod kernels {
        pub use crate::kernels::*;
    }
    /// The transformer's forward pass and its buffers.
    pub mod forward {
        pub use crate::forward::*;
    }
    /// The KV cache.
    pub mod kv {
        pub use crate::kv::*;
    }
    /// The thread pool of the matrix work.
    pub mod threadpool {
        pub use crate::threadpool::*;
    }
}
