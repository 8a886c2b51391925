//! GPT-2 byte-level BPE over one pre-tokenized word, as llama.cpp's
//! `llm_tokenizer_bpe_session`: repeatedly merge the adjacent pair of lowest merge rank
//! (leftmost on ties) until no pair has a rank.
//!
//! Symbols carry ids instead of strings: vocabulary ids for texts that are tokens, and ids
//! from `n_vocab` up for merge operands or results that are not (llama.cpp merges by
//! string and only then looks the result up, so such texts can still merge further).

use super::unicode::byte_to_char;
use super::vocab::Vocab;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

const NONE: u32 = u32::MAX;

/// Merge table of a byte-level BPE vocabulary.
#[derive(Debug)]
pub(crate) struct Bpe {
    /// Symbol id of the text GPT-2's byte mapping gives each byte, or `NONE`.
    byte_sym: [u32; 256],
    /// `(left, right)` -> `(rank, merged)`.
    merges: HashMap<(u32, u32), (u32, u32)>,
    n_vocab: u32,
}

#[derive(Debug, Clone, Copy)]
struct Sym {
    id: u32,
    start: u32,
    len: u32,
    prev: u32,
    next: u32,
}

/// A candidate merge: ordered by rank, then left position (a max-heap of `Reverse`).
type Bigram = Reverse<(u32, u32, u32, u32, u32)>; // (rank, left, right, len, merged)

/// Buffers reused across words.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    syms: Vec<Sym>,
    heap: BinaryHeap<Bigram>,
    mapped: String,
}

impl Bpe {
    /// Builds the merge table from `"left right"` strings in priority order. A string
    /// without a space after its first byte is skipped (as llama.cpp, which cannot use it);
    /// for a repeated pair the first rank counts.
    pub(crate) fn new(vocab: &Vocab, merges: &[String]) -> Self {
        let n_vocab = vocab.len() as u32;
        let mut extra: HashMap<String, u32> = HashMap::new();
        let mut intern = |s: &str| -> u32 {
            if let Some(id) = vocab.find(s.as_bytes()) {
                return id;
            }
            let next = n_vocab.saturating_add(extra.len() as u32);
            *extra.entry(s.to_string()).or_insert(next)
        };
        let mut table = HashMap::with_capacity(merges.len());
        let mut buf = String::new();
        for (rank, m) in merges.iter().enumerate() {
            // The first space after the first byte (llama.cpp: `find(' ', 1)`): a space is
            // ASCII, so both halves are whole characters.
            let Some(sp) = m.bytes().skip(1).position(|b| b == b' ').map(|i| i + 1) else {
                continue;
            };
            let (Some(left), Some(right)) = (m.get(..sp), m.get(sp + 1..)) else {
                continue;
            };
            let l = intern(left);
            let r = intern(right);
            buf.clear();
            buf.push_str(left);
            buf.push_str(right);
            let merged = intern(&buf);
            table.entry((l, r)).or_insert((rank as u32, merged));
        }
        let mut byte_sym = [NONE; 256];
        let mut tmp = [0u8; 4];
        for b in 0..=255u8 {
            let s = byte_to_char(b).encode_utf8(&mut tmp);
            byte_sym[usize::from(b)] = match vocab.find(s.as_bytes()) {
                Some(id) => id,
                None => extra.get(&*s).copied().unwrap_or(NONE),
            };
        }
        Self {
            byte_sym,
            merges: table,
            n_vocab,
        }
    }

    /// Appends the tokens of `word` (raw bytes) to `out`.
    pub(crate) fn encode_word(
        &self,
        word: &[u8],
        vocab: &Vocab,
        ignore_merges: bool,
        s: &mut Scratch,
        out: &mut Vec<u32>,
    ) {
        if word.is_empty() {
            return;
        }
        if ignore_merges {
            s.mapped.clear();
            s.mapped.extend(word.iter().map(|&b| byte_to_char(b)));
            if let Some(id) = vocab.find(s.mapped.as_bytes()) {
                out.push(id);
                return;
            }
        }
        if let [b] = word {
            self.emit(self.byte_sym[usize::from(*b)], word, vocab, out);
            return;
        }
        let syms = &mut s.syms;
        syms.clear();
        let n = word.len() as u32;
        for (i, &b) in word.iter().enumerate() {
            let i = i as u32;
            syms.push(Sym {
                id: self.byte_sym[usize::from(b)],
                start: i,
                len: 1,
                prev: if i == 0 { NONE } else { i - 1 },
                next: if i + 1 == n { NONE } else { i + 1 },
            });
        }
        let heap = &mut s.heap;
        heap.clear();
        for i in 1..n {
            self.push_bigram(syms, heap, i - 1, i);
        }
        while let Some(Reverse((_, left, right, len, merged))) = heap.pop() {
            let (l, r) = (syms[left as usize], syms[right as usize]);
            if l.len == 0 || r.len == 0 || l.len + r.len != len {
                continue; // outdated
            }
            syms[left as usize].len = len;
            syms[left as usize].id = merged;
            syms[left as usize].next = r.next;
            syms[right as usize].len = 0;
            if r.next != NONE {
                syms[r.next as usize].prev = left;
            }
            if l.prev != NONE {
                self.push_bigram(syms, heap, l.prev, left);
            }
            if r.next != NONE {
                self.push_bigram(syms, heap, left, r.next);
            }
        }
        let mut i = 0;
        while i != NONE {
            let sym = syms[i as usize];
            let bytes = &word[sym.start as usize..(sym.start + sym.len) as usize];
            self.emit(sym.id, bytes, vocab, out);
            i = sym.next;
        }
    }

    fn push_bigram(&self, syms: &[Sym], heap: &mut BinaryHeap<Bigram>, left: u32, right: u32) {
        let (l, r) = (syms[left as usize], syms[right as usize]);
        if l.id == NONE || r.id == NONE {
            return;
        }
        if let Some(&(rank, merged)) = self.merges.get(&(l.id, r.id)) {
            heap.push(Reverse((rank, left, right, l.len + r.len, merged)));
        }
    }

    /// Appends symbol `id` standing for `bytes`. A text that is no token falls back, as in
    /// llama.cpp, to the single-byte tokens of its mapped text's bytes, where they exist.
    fn emit(&self, id: u32, bytes: &[u8], vocab: &Vocab, out: &mut Vec<u32>) {
        if id < self.n_vocab {
            out.push(id);
            return;
        }
        let mut tmp = [0u8; 4];
        for &b in bytes {
            for &mb in byte_to_char(b).encode_utf8(&mut tmp).as_bytes() {
                if let Some(t) = vocab.find(&[mb]) {
                    out.push(t);
                }
            }
        }
    }
}
