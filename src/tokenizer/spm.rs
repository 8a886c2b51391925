//! SentencePiece-style tokenization by scores, as llama.cpp's `llm_tokenizer_spm_session`:
//! start from single characters, repeatedly merge the adjacent pair whose concatenation is
//! the vocabulary token of highest score (leftmost on ties), then write characters that
//! are no token as byte tokens `<0xNN>`.

use super::vocab::Vocab;
use std::cmp::Ordering;
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
}

#[derive(Debug, Clone, Copy)]
struct Bigram {
    score: f32,
    left: u32,
    right: u32,
    len: u32,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Highest score first, then leftmost.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then(other.left.cmp(&self.left))
    }
}

/// Buffers reused across fragments.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    syms: Vec<Sym>,
    heap: BinaryHeap<Bigram>,
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

    /// Appends the tokens of `text` (already escaped: spaces as U+2581) to `out`.
    pub(crate) fn encode(&self, vocab: &Vocab, s: &mut Scratch, out: &mut Vec<u32>) {
        let Scratch { syms, heap, text } = s;
        let bytes = text.as_bytes();
        syms.clear();
        heap.clear();
        let n = text.chars().count() as u32;
        for (i, (start, c)) in text.char_indices().enumerate() {
            let i = i as u32;
            syms.push(Sym {
                start: start as u32,
                len: c.len_utf8() as u32,
                prev: if i == 0 { NONE } else { i - 1 },
                next: if i + 1 == n { NONE } else { i + 1 },
            });
        }
        for i in 1..n {
            self.push_bigram(vocab, bytes, syms, heap, i - 1, i);
        }
        while let Some(b) = heap.pop() {
            let (l, r) = (syms[b.left as usize], syms[b.right as usize]);
            if l.len == 0 || r.len == 0 || l.len + r.len != b.len {
                continue; // outdated
            }
            syms[b.left as usize].len = b.len;
            syms[b.left as usize].next = r.next;
            syms[b.right as usize].len = 0;
            if r.next != NONE {
                syms[r.next as usize].prev = b.left;
            }
            if l.prev != NONE {
                self.push_bigram(vocab, bytes, syms, heap, l.prev, b.left);
            }
            if r.next != NONE {
                self.push_bigram(vocab, bytes, syms, heap, b.left, r.next);
            }
        }
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

    fn push_bigram(
        &self,
        vocab: &Vocab,
        bytes: &[u8],
        syms: &[Sym],
        heap: &mut BinaryHeap<Bigram>,
        left: u32,
        right: u32,
    ) {
        let (l, r) = (syms[left as usize], syms[right as usize]);
        let len = l.len + r.len;
        if len as usize > self.max_token_len {
            return;
        }
        let text = &bytes[l.start as usize..(l.start + len) as usize];
        if let Some(id) = vocab.find(text) {
            let score = self.scores.get(id as usize).copied().unwrap_or(0.0);
            heap.push(Bigram {
                score,
                left,
                right,
                len,
            });
        }
    }
}
