//! SentencePiece-style tokenization by scores, as llama.cpp's `llm_tokenizer_spm_session`:
//! start from single characters, repeatedly merge the adjacent pair whose concatenation is
//! the vocabulary token of highest score (leftmost on ties), then write characters that
//! are no token as byte tokens `<0xNN>`.

use super::vocab::Vocab;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

const NONE: u32 = u32::MAX;

/// Scores and byte tokens of an SPM vocabulary.
#[derive(Debug)]
pub(crate) struct Spm {
    scores: Vec<f32>,
    /// Token for each byte: `<0xNN>`, else the one-byte text, else `unk`, else `NONE`.
    byte_tok: [u32; 256],
    /// Longest token text in bytes; longer pairs cannot be tokens.
    max_token_len: usize,
}

#[derive(Debug, Clone, Copy)]
struct Sym {
    start: u32,
    len: u32,
    prev: u32,
    next: u32,
    /// Heap key of the pair (this, next) if it is a token, else `NO_KEY`.
    key: u64,
}

const NO_KEY: u64 = u64::MAX;

/// Heap key of a candidate merge, smallest first: higher score, then leftmost. An entry is
/// current while its left symbol is alive and still has that key; older entries are
/// skipped when they come up, as llama.cpp skips outdated bigrams.
fn key(score: f32, left: u32) -> u64 {
    let bits = score.to_bits();
    // Map f32 to u32 preserving order (as `f32::total_cmp`), then invert: high score first.
    let ordered = if bits & 0x8000_0000 != 0 {
        !bits
    } else {
        bits | 0x8000_0000
    };
    u64::from(!ordered) << 32 | u64::from(left)
}

/// Buffers reused across fragments.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    syms: Vec<Sym>,
    heap: Vec<Reverse<u64>>,
    pub(crate) text: String,
}

impl Spm {
    /// `scores` has one entry per token.
    pub(crate) fn new(vocab: &Vocab, scores: Vec<f32>, unk: Option<u32>) -> Self {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        let mut byte_tok = [NONE; 256];
        for b in 0..=255u8 {
            let name = [
                b'<',
                b'0',
                b'x',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
                b'>',
            ];
            byte_tok[usize::from(b)] = vocab
                .find(&name)
                .or_else(|| vocab.find(&[b]))
                .or(unk)
                .unwrap_or(NONE);
        }
        let max_token_len = (0..vocab.len() as u32)
            .map(|i| vocab.get(i).len())
            .max()
            .unwrap_or(0);
        Self {
            scores,
            byte_tok,
            max_token_len,
        }
    }

    /// The first byte that can occur in UTF-8 text and that no token expresses (no `<0xNN>`,
    /// no one-byte token, no unknown token): text holding it could not be encoded.
    pub(crate) fn inexpressible_byte(&self) -> Option<u8> {
        (0..=255u8).find(|&b| super::utf8::can_occur(b) && self.byte_tok[usize::from(b)] == NONE)
    }

    /// Appends the tokens of `text` (already escaped: spaces as U+2581) to `out`.
    pub(crate) fn encode(&self, vocab: &Vocab, s: &mut Scratch, out: &mut Vec<u32>) {
        let Scratch { syms, heap, text } = s;
        let bytes = text.as_bytes();
        syms.clear();
        let n = text.chars().count() as u32;
        for (i, (start, c)) in text.char_indices().enumerate() {
            let i = i as u32;
            syms.push(Sym {
                start: start as u32,
                len: c.len_utf8() as u32,
                prev: if i == 0 { NONE } else { i - 1 },
                next: if i + 1 == n { NONE } else { i + 1 },
                key: NO_KEY,
            });
        }
        let mut keys = std::mem::take(heap);
        keys.clear();
        for i in 1..n {
            keys.extend(self.set_pair(vocab, bytes, syms, i - 1));
        }
        let mut queue = BinaryHeap::from(keys);
        while let Some(Reverse(k)) = queue.pop() {
            let left = k as u32;
            let l = syms[left as usize];
            if l.len == 0 || l.key != k {
                continue; // outdated
            }
            let r = syms[l.next as usize];
            syms[left as usize].len = l.len + r.len;
            syms[left as usize].next = r.next;
            syms[l.next as usize].len = 0;
            if r.next != NONE {
                syms[r.next as usize].prev = left;
            }
            if l.prev != NONE {
                queue.extend(self.set_pair(vocab, bytes, syms, l.prev));
            }
            queue.extend(self.set_pair(vocab, bytes, syms, left));
        }
        *heap = queue.into_vec();
        let mut i = if n == 0 { NONE } else { 0 };
        while i != NONE {
            let sym = syms[i as usize];
            let piece = &bytes[sym.start as usize..(sym.start + sym.len) as usize];
            match vocab.find(piece) {
                Some(id) => out.push(id),
                None => {
                    for &b in piece {
                        let t = self.byte_tok[usize::from(b)];
                        if t != NONE {
                            out.push(t);
                        }
                    }
                }
            }
            i = sym.next;
        }
    }

    /// Records the merge of `left` with its right neighbour, returning its heap key.
    fn set_pair(
        &self,
        vocab: &Vocab,
        bytes: &[u8],
        syms: &mut [Sym],
        left: u32,
    ) -> Option<Reverse<u64>> {
        let l = syms[left as usize];
        let found = syms.get(l.next as usize).and_then(|r| {
            let len = (l.len + r.len) as usize;
            if len > self.max_token_len {
                return None;
            }
            let id = vocab.find(&bytes[l.start as usize..l.start as usize + len])?;
            Some(key(
                self.scores.get(id as usize).copied().unwrap_or(0.0),
                left,
            ))
        });
        syms[left as usize].key = found.unwrap_or(NO_KEY);
        found.map(Reverse)
    }
}
