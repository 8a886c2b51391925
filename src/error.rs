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
    /// A saved session state cannot be loaded into this session; nothing was changed.
    State(StateError),
    /// A bug: an invariant did not hold.
    Internal(String),
    /// A constrained output cannot be completed within the remaining budget.
    Incomplete { needed_bytes: usize },
}

/// Why a saved session state was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateError {
    /// Shorter than its header, or than the sizes its header gives.
    Truncated,
    /// Longer than the sizes its header gives.
    TrailingBytes,
    /// Not a pipit session state.
    BadMagic,
    /// A format version this build does not read.
    Version(u32),
    /// The checksum does not match: the bytes were altered.
    Checksum,
    /// Saved from another model file.
    OtherModel,
    /// Saved with another KV cache type.
    KvType,
    /// Saved by a session with another context size.
    NCtx { saved: u64, here: usize },
    /// A field is out of range (token count, token id, vocabulary size, flags).
    BadField(&'static str),
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::Truncated => write!(f, "the buffer is truncated"),
            StateError::TrailingBytes => write!(f, "the buffer has bytes past the state"),
            StateError::BadMagic => write!(f, "not a pipit session state"),
            StateError::Version(v) => write!(f, "state format version {v} is not supported"),
            StateError::Checksum => write!(f, "checksum mismatch: the state was altered"),
            StateError::OtherModel => write!(f, "saved from another model"),
            StateError::KvType => write!(f, "saved with another KV cache type"),
            StateError::NCtx { saved, here } => {
                write!(f, "saved with n_ctx = {saved}; this session has {here}")
            }
            StateError::BadField(what) => write!(f, "{what} is out of range"),
        }
    }
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
            Error::State(e) => write!(f, "invalid session state: {e}"),
            Error::Internal(what) => write!(f, "internal error: {what}"),
            Error::Incomplete { needed_bytes } => write!(
                f,
                "incomplete output: the constraint needs {needed_bytes} more bytes than the budget allows"
            ),
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
            pipit_format::FormatError::OutOfMemory { bytes } => {
                Error::OutOfMemory(format!("cannot allocate {bytes} bytes"))
            }
            e => Error::Format(e),
        }
    }
}
