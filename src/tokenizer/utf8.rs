//! Reassembly of UTF-8 characters that streamed token pieces split.

/// U+FFFD REPLACEMENT CHARACTER, emitted for each maximal invalid byte sequence.
const REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();

/// Holds back the bytes of a UTF-8 character split across tokens; no allocation.
///
/// Feed each token's piece to [`push`](Self::push); `emit` receives only valid UTF-8.
/// Invalid bytes become U+FFFD, one per maximal invalid subsequence, exactly as
/// [`String::from_utf8_lossy`] would render the concatenated pieces. Call
/// [`finish`](Self::finish) at the end of the stream to flush an unfinished character.
#[derive(Debug, Clone, Default)]
pub struct Utf8Stream {
    /// An incomplete but so far valid prefix of one character (at most 3 bytes).
    pending: [u8; 4],
    len: usize,
}

impl Utf8Stream {
    /// An empty stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether bytes of an unfinished character are held back.
    pub fn has_pending(&self) -> bool {
        self.len > 0
    }

    /// Adds `piece`; calls `emit` with each run of complete, valid UTF-8 text.
    pub fn push(&mut self, piece: &[u8], mut emit: impl FnMut(&[u8])) {
        let mut rest = piece;
        if self.len > 0 {
            // Complete the held-back character with at most 3 more bytes.
            let take = rest.len().min(3);
            let mut buf = [0u8; 7];
            buf[..self.len].copy_from_slice(&self.pending[..self.len]);
            buf[self.len..self.len + take].copy_from_slice(&rest[..take]);
            let joined = &buf[..self.len + take];
            match std::str::from_utf8(joined) {
                Ok(_) => {
                    let n = char_len(joined[0]);
                    emit(&joined[..n]);
                    rest = &rest[n - self.len..];
                    self.len = 0;
                }
                Err(e) if e.valid_up_to() > 0 => {
                    let n = e.valid_up_to().min(char_len(joined[0]));
                    emit(&joined[..n]);
                    rest = &rest[n - self.len..];
                    self.len = 0;
                }
                Err(e) => match e.error_len() {
                    None => {
                        // Still incomplete: `rest` was too short to finish the character.
                        self.pending[self.len..self.len + take].copy_from_slice(&rest[..take]);
                        self.len += take;
                        return;
                    }
                    Some(bad) => {
                        emit(REPLACEMENT);
                        rest = &rest[bad.saturating_sub(self.len)..];
                        self.len = 0;
                    }
                },
            }
        }
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    if !s.is_empty() {
                        emit(rest);
                    }
                    return;
                }
                Err(e) => {
                    let (valid, tail) = rest.split_at(e.valid_up_to());
                    if !valid.is_empty() {
                        emit(valid);
                    }
                    match e.error_len() {
                        None => {
                            // An incomplete character at the end (1..=3 bytes): hold it back.
                            self.pending[..tail.len()].copy_from_slice(tail);
                            self.len = tail.len();
                            return;
                        }
                        Some(bad) => {
                            emit(REPLACEMENT);
                            rest = &tail[bad..];
                        }
                    }
                }
            }
        }
    }

    /// Ends the stream: an unfinished character becomes U+FFFD.
    pub fn finish(&mut self, mut emit: impl FnMut(&[u8])) {
        if self.len > 0 {
            self.len = 0;
            emit(REPLACEMENT);
        }
    }
}

/// Length of the UTF-8 sequence a valid lead byte starts.
fn char_len(lead: u8) -> usize {
    match lead {
        0x00..=0x7F => 1,
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

/// Whether byte `b` can occur in valid UTF-8 (all but 0xC0, 0xC1 and 0xF5..=0xFF).
pub(crate) fn can_occur(b: u8) -> bool {
    !matches!(b, 0xC0 | 0xC1 | 0xF5..=0xFF)
}
