//! pipit runtime.
