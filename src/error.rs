//! The runtime's one error type. Every fallible public function returns it; the C ABI maps
//! each variant to a `pipit_status`.

use std::fmt;

/// What went wrong, with enough detail for a user to act on it.
#[derive(Debug)]
pub enum Error {
    /// A file could not be opened, read or mapped.
    Io {
        path: String,
        source: std::io::Error,
    },
    /// The model file is malformed or corrupt.
    Format(pipit_format::FormatError),
    /// A well-formed file asks for something this build does not support.
    Unsupported(String),
    /// A caller passed a value out of range.
    InvalidArgument(String),
    /// An allocation would exceed the caller's memory limit, or failed.
    OutOfMemory(String),
    /// The context window cannot hold the tokens; nothing was changed.
    ContextFull {
        n_past: usize,
        n_new: usize,
        n_ctx: usize,
    },
    /// The session is used by another thread.
    Busy,
    /// A cancel request stopped the call.
    Cancelled,
    /// NaN or infinity reached the logits.
    Numeric(String),
    /// A bug: an invariant did not hold.
    Internal(String),
}

/// Shorthand used throughout the runtime.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "{path}: {source}"),
            Error::Format(e) => write!(f, "malformed model file: {e}"),
            Error::Unsupported(what) => write!(f, "unsupported: {what}"),
            Error::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
            Error::OutOfMemory(what) => write!(f, "out of memory: {what}"),
            Error::ContextFull { n_past, n_new, n_ctx } => write!(
                f,
                "context full: {n_past} tokens in the context plus {n_new} new exceed n_ctx = {n_ctx}"
            ),
            Error::Busy => write!(f, "the session is in use by another thread"),
            Error::Cancelled => write!(f, "cancelled"),
            Error::Numeric(what) => write!(f, "numeric error: {what}"),
            Error::Internal(what) => write!(f, "internal error: {what}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Format(e) => Some(e),
            _ => None,
        }
    }
}

impl From<pipit_format::FormatError> for Error {
    fn from(e: pipit_format::FormatError) -> Self {
        match e {
            pipit_format::FormatError::UnknownChoice { .. } => Error::Unsupported(e.to_string()),
            e => Error::Format(e),
        }
    }
}
