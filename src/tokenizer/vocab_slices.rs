//! Token classes ("slices", as in llguidance's slicer), built once per vocabulary.
//!
//! Every token belongs to exactly one slice: the first language of [`Slices::langs`] that
//! spells it (lowercase words, capitalised words, digits, JSON-string-safe text, ...,
//! then any bytes), split by token length. Each slice has its own trie and its bit mask.
//! A constraint state that provably accepts every string of a slice's language up to the
//! slice's longest token takes the slice's mask whole, and one that provably rejects them
//! all skips it; only the other slices' tries are walked. That makes the first visit of a
//! state inside a long string or a counted letter run cheap even on a 262k vocabulary.

use super::vocab_index::{build_trie, Node};
use crate::mem::{reserve, try_collect, try_copy, try_vec};
use crate::Result;

/// "No state" in a language's transition table.
pub const NO_Q: u8 = u8::MAX;

/// A small DFA over bytes: the language of one family of slices. State 0 is the start.
#[derive(Debug)]
pub struct Lang {
    pub name: &'static str,
    /// `trans[q][b]`: next state or [`NO_Q`].
    pub trans: Vec<[u8; 256]>,
    pub accept: Vec<bool>,
}

impl Lang {
    /// One byte of each of `steps`, then any number of `tail` bytes. Not inlined: `langs`
    /// calls it ten times with constant predicates, and each inlined copy is specialized
    /// (about 17 KB of the library for code that runs once per model).
    #[inline(never)]
    fn seq(name: &'static str, steps: &[fn(u8) -> bool], tail: fn(u8) -> bool) -> Lang {
        let n = steps.len();
        let mut trans = vec![[NO_Q; 256]; n + 1];
        for (q, step) in steps.iter().enumerate() {
            for b in 0..=255u8 {
                if step(b) {
                    trans[q][b as usize] = q as u8 + 1;
                }
            }
        }
        for b in 0..=255u8 {
            if tail(b) {
                trans[n][b as usize] = n as u8;
            }
        }
        let mut accept = vec![false; n + 1];
        accept[n] = true;
        Lang {
            name,
            trans,
            accept,
        }
    }

    /// Well-formed UTF-8 (no overlongs, no surrogates) of the characters `ascii` allows
    /// below 0x80 and every character from U+0080 up.
    fn utf8(name: &'static str, ascii: fn(u8) -> bool) -> Lang {
        // 0 start, 1 at a character boundary (accepting), 2/3/4 = 1/2/3 continuation
        // bytes to go, 5 after E0, 6 after ED, 7 after F0, 8 after F4.
        let mut trans = vec![[NO_Q; 256]; 9];
        for q in [0, 1] {
            let row = &mut trans[q];
            for b in 0..0x80u8 {
                if ascii(b) {
                    row[b as usize] = 1;
                }
            }
            row[0xC2..=0xDF].fill(2);
            row[0xE0] = 5;
            row[0xE1..=0xEC].fill(3);
            row[0xED] = 6;
            row[0xEE..=0xEF].fill(3);
            row[0xF0] = 7;
            row[0xF1..=0xF3].fill(4);
            row[0xF4] = 8;
        }
        trans[2][0x80..=0xBF].fill(1);
        trans[3][0x80..=0xBF].fill(2);
        trans[4][0x80..=0xBF].fill(3);
        trans[5][0xA0..=0xBF].fill(2);
        trans[6][0x80..=0x9F].fill(2);
        trans[7][0x90..=0xBF].fill(3);
        trans[8][0x80..=0x8F].fill(3);
        let mut accept = vec![false; 9];
        accept[1] = true;
        Lang {
            name,
            trans,
            accept,
        }
    }

    /// Whether the language contains `p`.
    pub fn spells(&self, p: &[u8]) -> bool {
        let mut q = 0u8;
        for &b in p {
            q = self.trans[q as usize][b as usize];
            if q == NO_Q {
                return false;
            }
        }
        self.accept[q as usize]
    }
}

fn lower(b: u8) -> bool {
    b.is_ascii_lowercase()
}
fn upper(b: u8) -> bool {
    b.is_ascii_uppercase()
}
fn digit(b: u8) -> bool {
    b.is_ascii_digit()
}
fn space(b: u8) -> bool {
    b == b' '
}
fn word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}
fn blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}
/// Characters a JSON string holds unescaped in ASCII (as the JSON compiler writes it:
/// no control characters, DEL included).
fn json_ascii(b: u8) -> bool {
    (0x20..0x7F).contains(&b) && b != b'"' && b != b'\\'
}
fn any(_: u8) -> bool {
    true
}

/// The languages, in the order tokens are assigned (first match wins). The last one
/// spells every non-empty byte string.
fn langs() -> Vec<Lang> {
    vec![
        Lang::seq("[a-z]+", &[lower], lower),
        Lang::seq("[A-Z][a-z]*", &[upper], lower),
        Lang::seq("[A-Z]+", &[upper], upper),
        Lang::seq("[0-9]+", &[digit], digit),
        Lang::seq(" [a-z]+", &[space, lower], lower),
        Lang::seq(" [A-Z][a-z]*", &[space, upper], lower),
        Lang::seq("\\w+", &[word], word),
        Lang::seq("[ \\t\\n\\r]+", &[blank], blank),
        Lang::seq("JSON-string ASCII", &[json_ascii], json_ascii),
        Lang::utf8("JSON-string UTF-8", json_ascii),
        Lang::seq("any bytes", &[any], any),
    ]
}

/// Token-length buckets of each language's slices (inclusive; the last is open). One
/// length each up to 12, so that a counted repeat's bound falls between slices.
const BUCKETS: &[(u32, u32)] = &[
    (1, 1),
    (2, 2),
    (3, 3),
    (4, 4),
    (5, 5),
    (6, 6),
    (7, 7),
    (8, 8),
    (9, 9),
    (10, 10),
    (11, 11),
    (12, 12),
    (13, 14),
    (15, 16),
    (17, 20),
    (21, u32::MAX),
];

/// One class of tokens: those whose first spelling language is `lang`, with lengths in
/// `min_len..=max_len` (the actual extremes).
#[derive(Debug)]
pub struct Slice {
    pub lang: usize,
    pub min_len: u32,
    pub max_len: u32,
    /// The slice's trie, its tokens in byte order (`Node::tok_lo..tok_hi` index them).
    pub nodes: Vec<Node>,
    pub tokens: Vec<u32>,
    /// For each node, the node of the vocabulary's whole trie spelling the same bytes.
    pub full: Vec<u32>,
    /// The mask of this slice and the shorter slices of its language: the states that
    /// take this slice whole take those too.
    pub upto: Words,
}

/// A token mask, 64 tokens a word: all words, or the non-zero ones as (index, bits).
#[derive(Debug)]
pub enum Words {
    Dense(Vec<u64>),
    Sparse(Vec<(u32, u64)>),
}

impl Words {
    fn new(dense: &[u64]) -> Result<Words> {
        let nonzero = dense.iter().filter(|&&w| w != 0).count();
        Ok(if nonzero * 2 > dense.len() {
            Words::Dense(try_copy(dense)?)
        } else {
            let pairs = dense.iter().enumerate().filter(|(_, &w)| w != 0);
            Words::Sparse(try_collect(pairs.map(|(i, &w)| (i as u32, w)))?)
        })
    }

    /// `out |= self`; `out` has a word per 64 tokens of the vocabulary.
    pub fn or_into(&self, out: &mut [u64]) {
        match self {
            Words::Dense(w) => out.iter_mut().zip(w).for_each(|(o, x)| *o |= x),
            Words::Sparse(p) => {
                for &(i, w) in p {
                    out[i as usize] |= w;
                }
            }
        }
    }
}

impl Slice {
    /// The tokens ending at node `k` of the slice's trie.
    pub fn tokens_at(&self, k: usize) -> &[u32] {
        let n = &self.nodes[k];
        &self.tokens[n.tok_lo as usize..n.tok_hi as usize]
    }
}

/// The vocabulary's slices.
#[derive(Debug)]
pub struct Slices {
    pub langs: Vec<Lang>,
    /// Slices grouped by language, in language order.
    pub slices: Vec<Slice>,
    /// Longest token of each language's slices (0: the language has none).
    pub lang_max: Vec<u32>,
    /// Largest shortest-token length among each language's slices.
    pub lang_max_lo: Vec<u32>,
}

impl Slices {
    /// Partitions the tokens of the whole trie `nodes` (over `order`, the non-empty
    /// tokens sorted by bytes) of a vocabulary of `n_vocab` tokens.
    pub(crate) fn new<'p>(
        n_vocab: usize,
        nodes: &[Node],
        order: &[u32],
        piece: impl Fn(u32) -> &'p [u8],
    ) -> Result<Slices> {
        let langs = langs();
        // Node of the whole trie where each token (by position in `order`) ends, and
        // every node's parent, to map slice nodes to whole-trie nodes.
        let mut end_of = try_vec(order.len())?;
        end_of.resize(order.len(), 0u32);
        let mut parent = try_vec(nodes.len())?;
        parent.resize(nodes.len(), u32::MAX);
        let max_depth = nodes.iter().map(|nd| nd.depth as usize).max().unwrap_or(0);
        let mut path: Vec<u32> = try_vec(max_depth)?;
        for (i, nd) in nodes.iter().enumerate() {
            path.truncate(nd.depth as usize - 1);
            parent[i] = path.last().copied().unwrap_or(u32::MAX);
            path.push(i as u32);
            for e in &mut end_of[nd.tok_lo as usize..nd.tok_hi as usize] {
                *e = i as u32;
            }
        }
        // (slice key, position in `order`): grouping by key keeps byte order inside. Keys are
        // below langs x buckets, a few dozen.
        let key = |lang: usize, len: usize| -> u32 {
            let b = BUCKETS
                .iter()
                .position(|&(lo, hi)| lo as usize <= len && len <= hi as usize)
                .unwrap_or(BUCKETS.len() - 1);
            (lang * BUCKETS.len() + b) as u32
        };
        let mut keyed: Vec<(u32, u32)> = try_collect(order.iter().enumerate().map(|(i, &t)| {
                let p = piece(t);
                let lang = langs
                    .iter()
                    .position(|l| l.spells(p))
                    .unwrap_or(langs.len() - 1);
                (key(lang, p.len()), i as u32)
        }))?;
        // Keys are distinct (positions are): an unstable sort is exact. A whole vocabulary
        // (262,144 entries for Gemma 3): the standard sort of `(u32, u32)`, which the mask
        // computation compiles anyway, is 2-3x faster than `sort_by`.
        keyed.sort_unstable();
        let mut slices = Vec::new();
        let mut lang_max = vec![0u32; langs.len()];
        let mut lang_max_lo = vec![0u32; langs.len()];
        let mut upto = try_vec(n_vocab.div_ceil(64))?;
        upto.resize(n_vocab.div_ceil(64), 0u64);
        let mut upto_lang = usize::MAX;
        let mut s = 0;
        while s < keyed.len() {
            let k = keyed[s].0;
            let e = s + keyed[s..].iter().take_while(|x| x.0 == k).count();
            let pos: Vec<u32> = try_collect(keyed[s..e].iter().map(|x| x.1))?;
            let tokens: Vec<u32> = try_collect(pos.iter().map(|&i| order[i as usize]))?;
            let snodes = build_trie(&tokens, &piece)?;
            // A slice node spells a prefix of the tokens below it: the whole trie's node
            // at the same depth on the path of any of them.
            let full = try_collect(snodes.iter().map(|nd| {
                    let mut f = end_of[pos[nd.tok_lo.min(pos.len() as u32 - 1) as usize] as usize];
                    while nodes[f as usize].depth > nd.depth {
                        f = parent[f as usize];
                    }
                    f
            }))?;
            let lens = tokens.iter().map(|&t| piece(t).len() as u32);
            let (min_len, max_len) = (lens.clone().min().unwrap_or(0), lens.max().unwrap_or(0));
            let lang = k as usize / BUCKETS.len();
            if lang != upto_lang {
                upto.fill(0);
                upto_lang = lang;
            }
            for &t in &tokens {
                upto[t as usize >> 6] |= 1 << (t & 63);
            }
            lang_max[lang] = lang_max[lang].max(max_len);
            lang_max_lo[lang] = lang_max_lo[lang].max(min_len);
            reserve(&mut slices, 1)?;
            slices.push(Slice {
                lang,
                min_len,
                max_len,
                nodes: snodes,
                tokens,
                full,
                upto: Words::new(&upto)?,
            });
            s = e;
        }
        Ok(Slices {
            langs,
            slices,
            lang_max,
            lang_max_lo,
        })
    }
}
