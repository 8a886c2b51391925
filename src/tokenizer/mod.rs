//! Tokenizers: GPT-2 byte-level BPE and SentencePiece by scores, both as llama.cpp runs them,
//! with special tokens recognised in the text, and decoding to bytes.
//!
//! Encoding: special tokens (control, user-defined and unknown types) are cut out of the text
//! first (`special`); each remaining fragment is, for BPE, split into words by the
//! pre-tokenizer the model declares (`pretok`) and each word merged by rank (`bpe`); for
//! SPM, spaces become `▁` and the fragment is merged by score (`spm`).
//! Decoding: [`Tokenizer::piece`] gives the bytes of a token, precomputed at load;
//! [`Utf8Stream`] reassembles characters that pieces split.

mod bpe;
mod pretok;
mod special;
mod spm;
mod unicode;
mod unicode_tables;
mod utf8;
mod vocab;
pub mod vocab_index;
pub mod vocab_slices;

pub use unicode_tables::UNICODE_VERSION;
pub use utf8::Utf8Stream;

use crate::{Error, Result};
use pipit_format::{FormatError, Metadata};
use pretok::PreTokenizer;
use special::{Fragment, SpecialMatcher};
use std::ops::Range;
use vocab::Vocab;

/// Token types, as GGUF's `tokenizer.ggml.token_type` and `.pipit`'s `tokenizer.token_types`.
pub mod token_type {
    /// Not set.
    pub const UNDEFINED: u8 = 0;
    /// An ordinary token.
    pub const NORMAL: u8 = 1;
    /// The unknown token.
    pub const UNKNOWN: u8 = 2;
    /// A control token (`<bos>`, `<|im_start|>`): recognised in text, decodes to nothing.
    pub const CONTROL: u8 = 3;
    /// A user-defined token: recognised in text, decodes to its text.
    pub const USER_DEFINED: u8 = 4;
    /// An unused slot.
    pub const UNUSED: u8 = 5;
    /// A byte token `<0xNN>` (SPM byte fallback).
    pub const BYTE: u8 = 6;
}

/// The tokenizer algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenizerKind {
    /// GPT-2 byte-level BPE with merges (`tokenizer.kind = "bpe"`, GGUF model `gpt2`).
    Bpe,
    /// SentencePiece by scores with byte fallback (`tokenizer.kind = "spm"`, GGUF model `llama`).
    Spm,
}

/// Everything a tokenizer is built from: the `tokenizer.*` metadata, decoded and borrowed.
#[derive(Debug, Clone, Copy)]
pub struct TokenizerParts<'a> {
    /// Algorithm.
    pub kind: TokenizerKind,
    /// Pre-tokenizer name (BPE only; e.g. `smollm`, `llama3`, `gpt2`, `default`).
    pub pre: &'a str,
    /// Token texts; the id of a token is its index.
    pub tokens: &'a [String],
    /// Scores, one per token (SPM); may be empty for BPE.
    pub scores: &'a [f32],
    /// Types, one per token (see [`token_type`]).
    pub token_types: &'a [u8],
    /// BPE merges `"left right"`, highest priority first.
    pub merges: &'a [String],
    /// Beginning-of-sequence token.
    pub bos: Option<u32>,
    /// End-of-sequence token.
    pub eos: Option<u32>,
    /// Unknown token (SPM fallback for bytes without a byte token).
    pub unk: Option<u32>,
    /// Extra end-of-generation tokens (e.g. `<|im_end|>`, `<end_of_turn>`).
    pub eot_ids: &'a [u32],
    /// Whether prompts start with BOS.
    pub add_bos: bool,
    /// SPM: prepend a space to text at the start and after each special token.
    pub add_space_prefix: bool,
}

/// A loaded tokenizer. Immutable, `Send + Sync`; encoding allocates only scratch space.
pub struct Tokenizer {
    vocab: Vocab,
    types: Vec<u8>,
    /// Decoded bytes of every token: `pieces[piece_offs[i]..piece_offs[i + 1]]`.
    pieces: Vec<u8>,
    piece_offs: Vec<u32>,
    specials: SpecialMatcher,
    algo: Algo,
    bos: Option<u32>,
    eos: Option<u32>,
    /// What a byte no other token expresses becomes.
    unk: Option<u32>,
    eot: Vec<u32>,
    add_bos: bool,
    add_space_prefix: bool,
}

#[derive(Debug)]
enum Algo {
    Bpe { pre: PreTokenizer, bpe: bpe::Bpe },
    Spm(spm::Spm),
}

impl std::fmt::Debug for Tokenizer {
    /// A summary: the vocabulary itself is too large to print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("kind", &self.kind())
            .field("n_vocab", &self.n_vocab())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("add_bos", &self.add_bos)
            .finish_non_exhaustive()
    }
}

/// Words longer than this are cut before BPE, keeping symbol indices within `u32`.
const MAX_WORD: usize = 1 << 30;

fn id_from_meta(meta: &Metadata, key: &str) -> Result<Option<u32>> {
    match meta.opt_i32(key)? {
        None | Some(-1) => Ok(None),
        Some(id) => match u32::try_from(id) {
            Ok(id) => Ok(Some(id)),
            Err(_) => Err(FormatError::BadTokenId {
                key: key.to_string(),
                id: i64::from(id),
                n_vocab: 0,
            }
            .into()),
        },
    }
}

impl Tokenizer {
    /// Builds the tokenizer from a model's `tokenizer.*` metadata (see formats/SPEC.md).
    pub fn from_metadata(meta: &Metadata) -> Result<Tokenizer> {
        let kind = match meta.get_str("tokenizer.kind")? {
            "bpe" => TokenizerKind::Bpe,
            "spm" => TokenizerKind::Spm,
            other => {
                return Err(Error::Unsupported(format!(
                    "tokenizer.kind '{other}' (known: bpe, spm)"
                )))
            }
        };
        let tokens = meta.get_arr_str("tokenizer.tokens")?;
        let token_types = meta.get_arr_u8("tokenizer.token_types")?;
        let scores = match kind {
            TokenizerKind::Spm => meta.get_arr_f32("tokenizer.scores")?,
            TokenizerKind::Bpe => meta.opt_arr_f32("tokenizer.scores")?.unwrap_or(&[]),
        };
        let merges = match kind {
            TokenizerKind::Bpe => meta.get_arr_str("tokenizer.merges")?,
            TokenizerKind::Spm => &[],
        };
        let eot_meta = meta.opt_arr_i32("tokenizer.eot_ids")?.unwrap_or(&[]);
        let mut eot_ids = crate::mem::try_vec(eot_meta.len())?;
        for &id in eot_meta {
            match u32::try_from(id) {
                Ok(id) => eot_ids.push(id),
                Err(_) => {
                    return Err(FormatError::BadTokenId {
                        key: "tokenizer.eot_ids".to_string(),
                        id: i64::from(id),
                        n_vocab: tokens.len() as u64,
                    }
                    .into())
                }
            }
        }
        Self::from_parts(&TokenizerParts {
            kind,
            pre: meta.opt_str("tokenizer.pre")?.unwrap_or("default"),
            tokens,
            scores,
            token_types,
            merges,
            bos: id_from_meta(meta, "tokenizer.bos_id")?,
            eos: id_from_meta(meta, "tokenizer.eos_id")?,
            unk: id_from_meta(meta, "tokenizer.unk_id")?,
            eot_ids: &eot_ids,
            add_bos: meta.opt_bool("tokenizer.add_bos")?.unwrap_or(false),
            add_space_prefix: meta
                .opt_bool("tokenizer.add_space_prefix")?
                .unwrap_or(false),
        })
    }

    /// Builds the tokenizer from decoded parts, checking every length and id.
    pub fn from_parts(p: &TokenizerParts) -> Result<Tokenizer> {
        let n = p.tokens.len();
        let n_u64 = n as u64;
        if n == 0 {
            return Err(FormatError::MissingKey {
                key: "tokenizer.tokens (empty vocabulary)".to_string(),
            }
            .into());
        }
        if n >= u32::MAX as usize {
            return Err(FormatError::LimitExceeded {
                field: "vocabulary size".to_string(),
                value: n_u64,
                limit: u64::from(u32::MAX - 1),
            }
            .into());
        }
        // Token texts and decoded pieces (at most 3 bytes more per token) use u32 offsets.
        let text_bytes = p.tokens.iter().map(|t| t.len() as u64).sum::<u64>();
        if text_bytes.saturating_add(3 * n_u64) > u64::from(u32::MAX) {
            return Err(FormatError::LimitExceeded {
                field: "total bytes of tokenizer.tokens".to_string(),
                value: text_bytes,
                limit: u64::from(u32::MAX).saturating_sub(3 * n_u64),
            }
            .into());
        }
        let mismatch = |key: &str, len: usize| -> Error {
            FormatError::LengthMismatch {
                key: key.to_string(),
                len: len as u64,
                expected: n_u64,
            }
            .into()
        };
        if p.token_types.len() != n {
            return Err(mismatch("tokenizer.token_types", p.token_types.len()));
        }
        if let Some((i, &t)) = p
            .token_types
            .iter()
            .enumerate()
            .find(|(_, &t)| t > token_type::BYTE)
        {
            return Err(Error::Unsupported(format!(
                "tokenizer.token_types[{i}] = {t} (known: 0..=6)"
            )));
        }
        if p.kind == TokenizerKind::Spm && p.scores.len() != n {
            return Err(mismatch("tokenizer.scores", p.scores.len()));
        }
        let check = |key: &str, id: Option<u32>| -> Result<()> {
            match id {
                Some(id) if id as usize >= n => Err(FormatError::BadTokenId {
                    key: key.to_string(),
                    id: i64::from(id),
                    n_vocab: n_u64,
                }
                .into()),
                _ => Ok(()),
            }
        };
        pipit_format::check_token_lengths(p.tokens, Some(p.token_types))?;
        check("tokenizer.bos_id", p.bos)?;
        check("tokenizer.eos_id", p.eos)?;
        check("tokenizer.unk_id", p.unk)?;
        for &id in p.eot_ids {
            check("tokenizer.eot_ids", Some(id))?;
        }

        let vocab = Vocab::new(p.tokens)?;
        let algo = match p.kind {
            TokenizerKind::Bpe => {
                let pre = PreTokenizer::from_name(p.pre).ok_or_else(|| {
                    Error::Unsupported(format!(
                        "tokenizer.pre '{}' (known: smollm, gpt2, llama3, default and their aliases)",
                        p.pre
                    ))
                })?;
                Algo::Bpe {
                    pre,
                    bpe: bpe::Bpe::new(&vocab, p.merges, p.unk)?,
                }
            }
            TokenizerKind::Spm => Algo::Spm(spm::Spm::new(
                &vocab,
                crate::mem::try_copy(p.scores)?,
                p.unk,
            )),
        };
        // Every byte of any text must become some token: refuse a vocabulary that would
        // silently drop one (issue 13 row 11).
        let lost = match &algo {
            Algo::Bpe { bpe, .. } => bpe.inexpressible_byte(&vocab),
            Algo::Spm(spm) => spm.inexpressible_byte(),
        };
        if let Some(b) = lost {
            return Err(FormatError::BadValue {
                key: "tokenizer.tokens".into(),
                value: format!("{n} tokens"),
                rule: format!(
                    "no token expresses byte 0x{b:02X} and there is no unknown token \
                     (tokenizer.unk_id), so text with it would be lost"
                ),
            }
            .into());
        }
        let specials = SpecialMatcher::new(
            p.token_types
                .iter()
                .zip(p.tokens)
                .enumerate()
                .filter(|(_, (&t, _))| {
                    matches!(
                        t,
                        token_type::UNKNOWN | token_type::CONTROL | token_type::USER_DEFINED
                    )
                })
                .map(|(i, (_, text))| (i as u32, text.as_str())),
        )?;

        // A token decodes to at most its text, or 3 bytes (SPM's unknown token).
        let mut pieces = crate::mem::try_vec(text_bytes as usize + 3 * n)?;
        let mut piece_offs = crate::mem::try_vec(n + 1)?;
        piece_offs.push(0);
        for (i, text) in p.tokens.iter().enumerate() {
            decode_token(p.kind, p.token_types[i], text, &mut pieces);
            piece_offs.push(u32::try_from(pieces.len()).unwrap_or(u32::MAX));
        }
        let mut eot = crate::mem::try_vec(p.eot_ids.len() + 1)?;
        eot.extend_from_slice(p.eot_ids);
        eot.extend(p.eos);
        crate::mem::sort_u32_by(&mut eot, &mut |a, b| a.cmp(&b));
        eot.dedup();
        Ok(Tokenizer {
            vocab,
            types: crate::mem::try_copy(p.token_types)?,
            pieces,
            piece_offs,
            specials,
            algo,
            bos: p.bos,
            eos: p.eos,
            unk: p.unk,
            eot,
            add_bos: p.add_bos,
            add_space_prefix: p.add_space_prefix,
        })
    }

    /// Number of tokens.
    pub fn n_vocab(&self) -> usize {
        self.vocab.len()
    }

    /// The algorithm.
    pub fn kind(&self) -> TokenizerKind {
        match self.algo {
            Algo::Bpe { .. } => TokenizerKind::Bpe,
            Algo::Spm(_) => TokenizerKind::Spm,
        }
    }

    /// Tokenizes `text` into `out` (cleared first), BOS first if `add_bos` and the model
    /// has one. Special tokens written in the text are recognised.
    pub fn encode(&self, text: &str, add_bos: bool, out: &mut Vec<u32>) {
        out.clear();
        if add_bos {
            out.extend(self.bos);
        }
        let mut frags = Vec::new();
        self.specials.partition(text, &mut frags);
        match &self.algo {
            Algo::Bpe { pre, bpe } => {
                let mut pre_scratch = pretok::Scratch::default();
                let mut bpe_scratch = bpe::Scratch::default();
                let mut words: Vec<Range<usize>> = Vec::new();
                for frag in &frags {
                    let r = match frag {
                        Fragment::Special(id) => {
                            out.push(*id);
                            continue;
                        }
                        Fragment::Text(r) => r.clone(),
                    };
                    let Some(fragment) = text.get(r) else {
                        continue;
                    };
                    pre.split(fragment, &mut pre_scratch, &mut words);
                    for w in &words {
                        for chunk in fragment.as_bytes()[w.clone()].chunks(MAX_WORD) {
                            bpe.encode_word(
                                chunk,
                                &self.vocab,
                                pre.ignore_merges(),
                                &mut bpe_scratch,
                                out,
                            );
                        }
                    }
                }
            }
            Algo::Spm(spm) => {
                let mut scratch = spm::Scratch::default();
                let mut prev_special = true;
                for frag in &frags {
                    let r = match frag {
                        Fragment::Special(id) => {
                            out.push(*id);
                            prev_special = true;
                            continue;
                        }
                        Fragment::Text(r) => r.clone(),
                    };
                    let Some(fragment) = text.get(r) else {
                        continue;
                    };
                    let mut rest = fragment;
                    let mut first = true;
                    while !rest.is_empty() {
                        let cut = floor_char_boundary(rest, MAX_WORD);
                        let (head, tail) = rest.split_at(cut);
                        scratch.text.clear();
                        if first && self.add_space_prefix && prev_special {
                            scratch.text.push('▁');
                        }
                        for c in head.chars() {
                            scratch.text.push(if c == ' ' { '▁' } else { c });
                        }
                        spm.encode(&self.vocab, &mut scratch, out);
                        rest = tail;
                        first = false;
                    }
                    prev_special = false;
                }
            }
        }
    }

    /// The bytes token `id` stands for: byte-level mapping undone (BPE), `▁` as space and
    /// `<0xNN>` as that byte (SPM), user-defined tokens as written; empty for control,
    /// unused and out-of-range ids.
    pub fn piece(&self, id: u32) -> &[u8] {
        let i = id as usize;
        match (
            self.piece_offs.get(i),
            self.piece_offs.get(i.wrapping_add(1)),
        ) {
            (Some(&a), Some(&b)) => self.pieces.get(a as usize..b as usize).unwrap_or(&[]),
            _ => &[],
        }
    }

    /// The raw vocabulary text of token `id` ("" when out of range).
    pub fn token_text(&self, id: u32) -> &str {
        self.vocab.get(id)
    }

    /// The type of token `id` (see [`token_type`]); `None` when out of range.
    pub fn token_type(&self, id: u32) -> Option<u8> {
        self.types.get(id as usize).copied()
    }

    /// The id of the token whose vocabulary text is exactly `text`.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.vocab.find(text.as_bytes())
    }

    /// Beginning-of-sequence token.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// The unknown token: [`Tokenizer::encode`] gives it for a byte of the text that no
    /// other token expresses (so such text does not decode back to itself).
    pub fn unk(&self) -> Option<u32> {
        self.unk
    }

    /// End-of-sequence token.
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// Whether the model wants BOS at the start of a prompt.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// The tokens generation stops at, sorted: EOS and `tokenizer.eot_ids`.
    pub fn eog_tokens(&self) -> &[u32] {
        &self.eot
    }

    /// Whether generation stops at `id`: EOS or one of `tokenizer.eot_ids`.
    pub fn is_eog(&self, id: u32) -> bool {
        self.eot.binary_search(&id).is_ok()
    }
}

/// The largest char boundary of `s` at or below `max`.
fn floor_char_boundary(s: &str, max: usize) -> usize {
    if max >= s.len() {
        return s.len();
    }
    let mut i = max;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Appends the bytes `text` of a token of `kind` and type `ty` decodes to, as llama.cpp's
/// `token_to_piece` without `special`.
fn decode_token(kind: TokenizerKind, ty: u8, text: &str, out: &mut Vec<u8>) {
    match (kind, ty) {
        (_, token_type::USER_DEFINED) => out.extend_from_slice(text.as_bytes()),
        (TokenizerKind::Bpe, token_type::NORMAL) => {
            let mut tmp = [0u8; 4];
            for c in text.chars() {
                match unicode::char_to_byte(c) {
                    Some(b) => out.push(b),
                    None => out.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes()),
                }
            }
        }
        (TokenizerKind::Spm, token_type::NORMAL) => {
            let mut tmp = [0u8; 4];
            for c in text.chars() {
                let c = if c == '▁' { ' ' } else { c };
                out.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
            }
        }
        (TokenizerKind::Spm, token_type::BYTE) => {
            let hex = text.strip_prefix("<0x").and_then(|h| h.strip_suffix('>'));
            if let Some(b) = hex
                .filter(|h| h.len() == 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
            }
        }
        (TokenizerKind::Spm, token_type::UNKNOWN) => out.extend_from_slice("▅".as_bytes()),
        _ => {}
    }
}

#[cfg(test)]
mod tests;
