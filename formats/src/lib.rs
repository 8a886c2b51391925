//! The .pipit weight format.

/// Placeholder until the reader lands.
#[derive(Debug)]
pub struct FormatError;

impl std::fmt::Display for FormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("format error")
    }
}

impl std::error::Error for FormatError {}
