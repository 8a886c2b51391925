//! GPT-2 byte-level BPE over one pre-tokenized word, as llama.cpp's
//! `llm_tokenizer_bpe_session`: repeatedly merge the adjacent pair of lowest merge rank
//! (leftmost on ties) until no pair has a rank.
//!
//! Symbols carry ids instead of strings: vocabulary ids for texts that are tokens, and ids
//! from `n_vocab` up for merge operands or results that are not (llama.cpp merges by
//! string and only then looks the result up, so such texts can still merge further).

use super::unicode::byte_to_char;
use super::vocab::Vocab;
use crate::Result;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

const NONE: u32 = u32::MAX;

/// Merge table of a byte-level BPE vocabulary.
#[derive(Debug)]
pub(crate) struct Bpe {
    /// Symbol id of the text GPT-2's byte mapping gives each byte, or `NONE`.
    byte_sym: [u32; 256],
    /// `(left, right)` -> `(rank, merged)`.
    merges: PairMap,
    n_vocab: u32,
    /// The unknown token: what a byte that no token expresses becomes.
    unk: Option<u32>,
}

#[derive(Debug, Clone, Copy)]
struct Sym {
    id: u32,
    start: u32,
    len: u32,
    prev: u32,
    next: u32,
    /// Merge rank of the pair (this, next), `NONE` if it has none.
    rank: u32,
    /// The symbol that pair merges into.
    merged: u32,
}

/// Heap key of a candidate merge: `rank << 32 | left`, smallest first. An entry is current
/// while its left symbol is alive and still has that rank with its right neighbour; older
/// entries are skipped when they come up, as llama.cpp skips outdated bigrams.
type Key = Reverse<u64>;

/// Buffers reused across words.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    syms: Vec<Sym>,
    heap: Vec<Key>,
    mapped: String,
}

impl Bpe {
    /// Builds the merge table from `"left right"` strings in priority order. A string
    /// without a space after its first byte is skipped (as llama.cpp, which cannot use it);
    /// for a repeated pair the first rank counts.
    pub(crate) fn new(vocab: &Vocab, merges: &[String], unk: Option<u32>) -> Result<Self> {
        let n_vocab = vocab.len() as u32;
        let mut extra: HashMap<String, u32> = HashMap::new();
        let mut intern = |s: &str| -> Result<u32> {
            if let Some(id) = vocab.find(s.as_bytes()) {
                return Ok(id);
            }
            crate::mem::reserved(extra.try_reserve(1), 1)?;
            let next = n_vocab.saturating_add(extra.len() as u32);
            Ok(*extra.entry(s.to_string()).or_insert(next))
        };
        let mut table = PairMap::with_capacity(merges.len())?;
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
            let l = intern(left)?;
            let r = intern(right)?;
            buf.clear();
            buf.push_str(left);
            buf.push_str(right);
            let merged = intern(&buf)?;
            let Some(rank) = u32::try_from(rank).ok().filter(|&r| r != NONE) else {
                break;
            };
            table.insert_first(l, r, rank, merged);
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
        Ok(Self {
            byte_sym,
            merges: table,
            n_vocab,
            unk,
        })
    }

    /// The first byte that can occur in UTF-8 text and that [`Bpe::emit`] could not express
    /// by any token: not its own symbol, not the single-byte tokens of its mapped text, and
    /// no unknown token to stand for it.
    pub(crate) fn inexpressible_byte(&self, vocab: &Vocab) -> Option<u8> {
        if self.unk.is_some() {
            return None;
        }
        (0..=255u8)
            .filter(|&b| super::utf8::can_occur(b))
            .find(|&b| self.byte_tokens(b, vocab, &mut Vec::new()).is_none())
    }

    /// Appends the tokens for raw byte `b` alone to `out`: its own symbol if that is a token,
    /// else (as llama.cpp) the single-byte tokens of its mapped text if they all exist.
    /// `None` (nothing appended) if neither exists.
    fn byte_tokens(&self, b: u8, vocab: &Vocab, out: &mut Vec<u32>) -> Option<()> {
        let sym = self.byte_sym[usize::from(b)];
        if sym < self.n_vocab {
            out.push(sym);
            return Some(());
        }
        let mut tmp = [0u8; 4];
        let mapped = byte_to_char(b).encode_utf8(&mut tmp).as_bytes();
        let n = out.len();
        for &mb in mapped {
            match vocab.find(&[mb]) {
                Some(t) => out.push(t),
                None => {
                    out.truncate(n);
                    return None;
                }
            }
        }
        Some(())
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
                rank: NONE,
                merged: NONE,
            });
        }
        let mut keys = std::mem::take(&mut s.heap);
        keys.clear();
        for i in 0..n - 1 {
            if let Some(k) = self.set_pair(syms, i) {
                keys.push(k);
            }
        }
        let mut heap = BinaryHeap::from(keys);
        while let Some(Reverse(key)) = heap.pop() {
            let (rank, left) = ((key >> 32) as u32, key as u32);
            let l = syms[left as usize];
            if l.len == 0 || l.rank != rank {
                continue; // outdated
            }
            let r = syms[l.next as usize];
            syms[left as usize].len = l.len + r.len;
            syms[left as usize].id = l.merged;
            syms[left as usize].next = r.next;
            syms[l.next as usize].len = 0;
            if r.next != NONE {
                syms[r.next as usize].prev = left;
            }
            if l.prev != NONE {
                heap.extend(self.set_pair(syms, l.prev));
            }
            heap.extend(self.set_pair(syms, left));
        }
        s.heap = heap.into_vec();
        let mut i = 0;
        while i != NONE {
            let sym = syms[i as usize];
            let bytes = &word[sym.start as usize..(sym.start + sym.len) as usize];
            self.emit(sym.id, bytes, vocab, out);
            i = sym.next;
        }
    }

    /// Records the merge of `left` with its right neighbour, returning its heap key.
    fn set_pair(&self, syms: &mut [Sym], left: u32) -> Option<Key> {
        let l = syms[left as usize];
        let pair = match syms.get(l.next as usize) {
            Some(r) if l.id != NONE && r.id != NONE => self.merges.get(l.id, r.id),
            _ => None,
        };
        let (rank, merged) = pair.unwrap_or((NONE, NONE));
        syms[left as usize].rank = rank;
        syms[left as usize].merged = merged;
        pair.map(|_| Reverse(u64::from(rank) << 32 | u64::from(left)))
    }

    /// Appends symbol `id` standing for `bytes`. A text that is no token falls back to the
    /// tokens of each of its bytes ([`Bpe::byte_tokens`]), else to the unknown token: no byte
    /// is dropped (a tokenizer where some byte has neither is refused at load).
    fn emit(&self, id: u32, bytes: &[u8], vocab: &Vocab, out: &mut Vec<u32>) {
        if id < self.n_vocab {
            out.push(id);
            return;
        }
        for &b in bytes {
            if self.byte_tokens(b, vocab, out).is_none() {
                out.extend(self.unk);
            }
        }
    }
}

/// Open-addressing map `(left, right)` -> `(rank, merged)`: the merge lookup is the hot
/// path of BPE. Multiply-shift hashing with a per-process random multiplier, so that no
/// file can choose colliding pairs.
#[derive(Debug)]
struct PairMap {
    /// `(left << 32 | right, rank, merged)`; key `EMPTY_PAIR` marks a free slot.
    slots: Vec<(u64, u32, u32)>,
    shift: u32,
    mult: u64,
}

const EMPTY_PAIR: u64 = u64::MAX;

impl PairMap {
    fn with_capacity(n: usize) -> Result<Self> {
        let cap = (n.saturating_mul(2)).next_power_of_two().max(16);
        let mult =
            std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u64)
                | 1;
        let mut slots = crate::mem::try_vec(cap)?;
        slots.resize(cap, (EMPTY_PAIR, 0, 0));
        Ok(Self {
            slots,
            shift: 64 - cap.trailing_zeros(),
            mult,
        })
    }

    #[inline]
    fn slot(&self, key: u64) -> usize {
        (key.wrapping_mul(self.mult) >> self.shift) as usize
    }

    /// Inserts unless the pair is present (the first, best rank counts).
    fn insert_first(&mut self, left: u32, right: u32, rank: u32, merged: u32) {
        let key = u64::from(left) << 32 | u64::from(right);
        if key == EMPTY_PAIR {
            return;
        }
        let mask = self.slots.len() - 1;
        let mut i = self.slot(key);
        loop {
            match self.slots[i].0 {
                EMPTY_PAIR => {
                    self.slots[i] = (key, rank, merged);
                    return;
                }
                k if k == key => return,
                _ => i = (i + 1) & mask,
            }
        }
    }

    #[inline]
    fn get(&self, left: u32, right: u32) -> Option<(u32, u32)> {
        let key = u64::from(left) << 32 | u64::from(right);
        let mask = self.slots.len() - 1;
        let mut i = self.slot(key);
        loop {
            let (k, rank, merged) = self.slots[i];
            if k == key {
                return Some((rank, merged));
            }
            if k == EMPTY_PAIR {
                return None;
            }
            i = (i + 1) & mask;
        }
    }
}
