//! Pre-tokenizers of byte-level BPE: llama.cpp's regex splits, written out by hand.
//!
//! A pre-tokenizer is a list of stages; each stage splits every piece the previous stage
//! produced (a regex split keeps both the matches and the text between them as pieces),
//! exactly as llama.cpp's `unicode_regex_split` chains its expressions.

use super::unicode::{flags, ANY, LETTER, NUMBER, PUNCTUATION, WHITESPACE};
use std::ops::Range;

/// The pre-tokenizers this build knows, by llama.cpp's `tokenizer.ggml.pre` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PreTokenizer {
    /// GPT-2's pattern alone (`gpt2`, `mpt`, `olmo`, `jais`, `trillion`).
    Gpt2,
    /// Every `\p{N}` alone, then GPT-2's pattern (`smollm`, `starcoder`, `refact`, ...).
    Smollm,
    /// Llama 3's pattern (`llama3`, `llama-bpe`, `dbrx`, `smaug-bpe`); merges ignored for
    /// words that are whole tokens.
    Llama3,
    /// Qwen 2's pattern (`qwen2`, `deepseek-r1-qwen`): Llama 3's with single digits.
    Qwen2,
    /// llama.cpp's fallback for BPE vocabularies (`default`).
    Default,
}

/// One regex of a pre-tokenizer.
#[derive(Debug, Clone, Copy)]
enum Stage {
    /// `\p{N}`
    EachNumber,
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    Gpt2,
    /// `(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    Llama3,
    /// `(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    Qwen2,
    /// `[\p{P}\$\+<=>\^`\|]+`
    PunctRuns,
    /// `\p{N}+`
    NumberRuns,
    /// `[0-9][0-9][0-9]`
    AsciiDigitTriples,
}

impl PreTokenizer {
    /// The pre-tokenizer llama.cpp selects for `name`, `None` if unknown.
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "gpt2" | "gpt-2" | "mpt" | "olmo" | "jais" | "trillion" => Self::Gpt2,
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone"
            | "minerva" => Self::Smollm,
            "llama3" | "llama-v3" | "llama-bpe" | "dbrx" | "smaug-bpe" | "falcon3" | "pixtral" => {
                Self::Llama3
            }
            "qwen2" | "deepseek-r1-qwen" => Self::Qwen2,
            "default" | "" => Self::Default,
            _ => return None,
        })
    }

    /// Whether BPE keeps a word that is itself a token whole (llama.cpp's `ignore_merges`).
    pub(crate) fn ignore_merges(self) -> bool {
        self == Self::Llama3
    }

    fn stages(self) -> &'static [Stage] {
        match self {
            Self::Gpt2 => &[Stage::Gpt2],
            Self::Smollm => &[Stage::EachNumber, Stage::Gpt2],
            Self::Llama3 => &[Stage::Llama3],
            Self::Qwen2 => &[Stage::Qwen2],
            Self::Default => &[
                Stage::PunctRuns,
                Stage::Gpt2,
                Stage::NumberRuns,
                Stage::AsciiDigitTriples,
            ],
        }
    }

    /// Splits `text` into words, appending their byte ranges to `words` (cleared first).
    pub(crate) fn split(&self, text: &str, scratch: &mut Scratch, words: &mut Vec<Range<usize>>) {
        words.clear();
        let Scratch {
            cps,
            offs,
            pieces,
            next,
        } = scratch;
        cps.clear();
        offs.clear();
        for (i, c) in text.char_indices() {
            cps.push((c, flags(c)));
            offs.push(i);
        }
        offs.push(text.len());
        pieces.clear();
        if !cps.is_empty() {
            pieces.push(0..cps.len());
        }
        for &stage in self.stages() {
            next.clear();
            for r in pieces.iter() {
                let mut s = Splitter {
                    cps: cps.as_slice(),
                    end: r.end,
                    prev_end: r.start,
                    out: next,
                };
                s.run(stage, r.start);
            }
            std::mem::swap(pieces, next);
        }
        words.extend(pieces.iter().map(|r| offs[r.start]..offs[r.end]));
    }
}

/// Buffers reused across calls.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    cps: Vec<(char, u8)>,
    offs: Vec<usize>,
    pieces: Vec<Range<usize>>,
    next: Vec<Range<usize>>,
}

/// Splits one piece `[start, end)` of the code points.
struct Splitter<'a> {
    cps: &'a [(char, u8)],
    end: usize,
    prev_end: usize,
    out: &'a mut Vec<Range<usize>>,
}

impl Splitter<'_> {
    /// The code point at `pos`, `None` past the piece.
    #[inline]
    fn cpt(&self, pos: usize) -> Option<char> {
        if pos < self.end {
            Some(self.cps[pos].0)
        } else {
            None
        }
    }

    /// Class flags at `pos`, 0 past the piece.
    #[inline]
    fn fl(&self, pos: usize) -> u8 {
        if pos < self.end {
            self.cps[pos].1
        } else {
            0
        }
    }

    /// Emits `[prev_end, end)` as a piece if not empty.
    #[inline]
    fn add(&mut self, end: usize) {
        if end > self.prev_end {
            self.out.push(self.prev_end..end);
        }
        self.prev_end = end;
    }

    fn run(&mut self, stage: Stage, start: usize) {
        match stage {
            Stage::EachNumber => self.each(start, |f| f & NUMBER != 0),
            Stage::Gpt2 => self.gpt2(start),
            Stage::Llama3 => self.llama3(start, 3),
            Stage::Qwen2 => self.llama3(start, 1),
            Stage::PunctRuns => {
                self.runs(start, |c, f| f & PUNCTUATION != 0 || "$+<=>^`|".contains(c))
            }
            Stage::NumberRuns => self.runs(start, |_, f| f & NUMBER != 0),
            Stage::AsciiDigitTriples => self.digit_triples(start),
        }
    }

    /// Every code point matching `pred` is a piece; the runs between are pieces too.
    fn each(&mut self, start: usize, pred: impl Fn(u8) -> bool) {
        for pos in start..self.end {
            if pred(self.cps[pos].1) {
                self.add(pos);
                self.add(pos + 1);
            }
        }
        self.add(self.end);
    }

    /// Maximal runs of code points matching `pred` are pieces; the runs between are too.
    fn runs(&mut self, start: usize, pred: impl Fn(char, u8) -> bool) {
        let mut prev = None;
        for pos in start..self.end {
            let m = pred(self.cps[pos].0, self.cps[pos].1);
            if prev.is_some_and(|p| p != m) {
                self.add(pos);
            }
            prev = Some(m);
        }
        self.add(self.end);
    }

    /// Leftmost non-overlapping runs of three ASCII digits are pieces.
    fn digit_triples(&mut self, start: usize) {
        let cps = self.cps;
        let digit = |p: usize| cps[p].0.is_ascii_digit();
        let mut pos = start;
        while pos + 3 <= self.end {
            if digit(pos) && digit(pos + 1) && digit(pos + 2) {
                self.add(pos);
                self.add(pos + 3);
                pos += 3;
            } else {
                pos += 1;
            }
        }
        self.add(self.end);
    }

    /// Length of a contraction (`'s`, `'re`, ...) at `pos`, 0 if none; `fold` lower-cases.
    fn contraction(&self, pos: usize, fold: bool) -> usize {
        if self.cpt(pos) != Some('\'') || pos + 1 >= self.end {
            return 0;
        }
        let low = |c: Option<char>| c.map(|c| if fold { c.to_ascii_lowercase() } else { c });
        let next = low(self.cpt(pos + 1));
        if matches!(next, Some('s' | 't' | 'm' | 'd')) {
            return 2;
        }
        if pos + 2 < self.end {
            let nn = low(self.cpt(pos + 2));
            if matches!(
                (next, nn),
                (Some('r'), Some('e')) | (Some('v'), Some('e')) | (Some('l'), Some('l'))
            ) {
                return 3;
            }
        }
        0
    }

    /// llama.cpp's `unicode_regex_split_custom_gpt2`.
    fn gpt2(&mut self, start: usize) {
        let mut pos = start;
        while pos < self.end {
            let cpt = self.cps[pos].0;
            let flags = self.cps[pos].1;
            let c = self.contraction(pos, false);
            if c > 0 {
                pos += c;
                self.add(pos);
                continue;
            }
            let space = usize::from(cpt == ' ');
            let mut flags2 = if cpt == ' ' { self.fl(pos + 1) } else { flags };
            // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`
            let class = if flags2 & LETTER != 0 {
                Some(LETTER)
            } else if flags2 & NUMBER != 0 {
                Some(NUMBER)
            } else if flags2 & (WHITESPACE | LETTER | NUMBER) == 0 && flags2 & ANY != 0 {
                None
            } else {
                Some(0)
            };
            match class {
                Some(0) => {}
                Some(cls) => {
                    pos += space;
                    while flags2 & cls != 0 {
                        pos += 1;
                        flags2 = self.fl(pos);
                    }
                    self.add(pos);
                    continue;
                }
                None => {
                    pos += space;
                    while flags2 & (WHITESPACE | LETTER | NUMBER) == 0 && flags2 & ANY != 0 {
                        pos += 1;
                        flags2 = self.fl(pos);
                    }
                    self.add(pos);
                    continue;
                }
            }
            let mut n_ws = 0;
            while self.fl(pos + n_ws) & WHITESPACE != 0 {
                n_ws += 1;
            }
            // `\s+(?!\S)`
            if n_ws > 1 && pos + n_ws < self.end {
                pos += n_ws - 1;
                self.add(pos);
                continue;
            }
            // `\s+`
            if n_ws > 0 {
                pos += n_ws;
                self.add(pos);
                continue;
            }
            pos += 1;
            self.add(pos);
        }
    }

    /// llama.cpp's `unicode_regex_split_custom_llama3` (`max_digits` 3) and `_qwen2`
    /// (`max_digits` 1: `\p{N}` instead of `\p{N}{1,3}`).
    fn llama3(&mut self, start: usize, max_digits: usize) {
        let mut pos = start;
        while pos < self.end {
            let cpt = self.cps[pos].0;
            let flags = self.cps[pos].1;
            let c = self.contraction(pos, true);
            if c > 0 {
                pos += c;
                self.add(pos);
                continue;
            }
            // `[^\r\n\p{L}\p{N}]?\p{L}+`
            if !(cpt == '\r' || cpt == '\n' || flags & NUMBER != 0)
                && (flags & LETTER != 0 || self.fl(pos + 1) & LETTER != 0)
            {
                pos += 1;
                while self.fl(pos) & LETTER != 0 {
                    pos += 1;
                }
                self.add(pos);
                continue;
            }
            // `\p{N}{1,max_digits}`
            if flags & NUMBER != 0 {
                let mut ini = pos;
                while self.fl(pos) & NUMBER != 0 {
                    pos += 1;
                    if pos - ini >= max_digits {
                        self.add(pos);
                        ini = pos;
                    }
                }
                self.add(pos);
                continue;
            }
            // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
            let mut flags2 = if cpt == ' ' { self.fl(pos + 1) } else { flags };
            if flags2 & (WHITESPACE | LETTER | NUMBER) == 0 && flags & ANY != 0 {
                pos += usize::from(cpt == ' ');
                while flags2 & (WHITESPACE | LETTER | NUMBER) == 0 && flags2 & ANY != 0 {
                    pos += 1;
                    flags2 = self.fl(pos);
                }
                while matches!(self.cpt(pos), Some('\r' | '\n')) {
                    pos += 1;
                }
                self.add(pos);
                continue;
            }
            let mut n_ws = 0;
            let mut last_rn = 0;
            while self.fl(pos + n_ws) & WHITESPACE != 0 {
                if matches!(self.cpt(pos + n_ws), Some('\r' | '\n')) {
                    last_rn = pos + n_ws + 1;
                }
                n_ws += 1;
            }
            // `\s*[\r\n]+`
            if last_rn > 0 {
                pos = last_rn;
                self.add(pos);
                continue;
            }
            // `\s+(?!\S)`
            if n_ws > 1 && pos + n_ws < self.end {
                pos += n_ws - 1;
                self.add(pos);
                continue;
            }
            // `\s+`
            if n_ws > 0 {
                pos += n_ws;
                self.add(pos);
                continue;
            }
            pos += 1;
            self.add(pos);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(p: PreTokenizer, text: &str) -> Vec<&str> {
        let mut scratch = Scratch::default();
        let mut words = Vec::new();
        p.split(text, &mut scratch, &mut words);
        let joined: String = words.iter().map(|r| &text[r.clone()]).collect();
        assert_eq!(joined, text, "words must cover the text");
        words.into_iter().map(|r| &text[r]).collect()
    }

    #[test]
    fn smollm_splits() {
        let p = PreTokenizer::Smollm;
        assert_eq!(split(p, ""), Vec::<&str>::new());
        assert_eq!(split(p, "Hello world!"), ["Hello", " world", "!"]);
        assert_eq!(
            split(p, "It's   spaced\tout\n\nnew  lines"),
            ["It", "'s", "  ", " spaced", "\t", "out", "\n", "\n", "new", " ", " lines"]
        );
        assert_eq!(
            split(p, " 12345 café"),
            [" ", "1", "2", "3", "4", "5", " café"]
        );
        assert_eq!(split(p, "你好，世界。"), ["你好", "，", "世界", "。"]);
        assert_eq!(split(p, "a  "), ["a", "  "]);
        assert_eq!(split(p, "   leading"), ["  ", " leading"]);
        assert_eq!(split(p, "x²y"), ["x", "²", "y"]);
        assert_eq!(split(p, "we'RE they're"), ["we", "'", "RE", " they", "'re"]);
        assert_eq!(split(p, "!!! ??"), ["!!!", " ??"]);
        assert_eq!(split(p, "🦀 Rust"), ["🦀", " Rust"]);
        assert_eq!(split(p, "e\u{301}"), ["e", "\u{301}"]);
        assert_eq!(split(p, " "), [" "]);
        assert_eq!(split(p, "'"), ["'"]);
        assert_eq!(split(p, "\u{3000}a"), ["\u{3000}", "a"]);
    }

    #[test]
    fn gpt2_keeps_number_runs() {
        assert_eq!(split(PreTokenizer::Gpt2, "a 12345b"), ["a", " 12345", "b"]);
    }

    #[test]
    fn llama3_splits() {
        let p = PreTokenizer::Llama3;
        assert_eq!(
            split(p, "Hello world 12345!!\n\n  x"),
            ["Hello", " world", " ", "123", "45", "!!\n\n", " ", " x"]
        );
        assert_eq!(split(p, "we'RE"), ["we", "'RE"]);
        assert_eq!(split(p, "a \n b"), ["a", " \n", " b"]);
        assert_eq!(split(p, "$hello"), ["$hello"]);
    }

    #[test]
    fn default_splits() {
        let p = PreTokenizer::Default;
        assert_eq!(
            split(p, "a+b=1234567"),
            ["a", "+", "b", "=", "123", "456", "7"]
        );
        assert_eq!(split(p, "hi, there..."), ["hi", ",", " there", "..."]);
    }

    #[test]
    fn names() {
        assert_eq!(
            PreTokenizer::from_name("smollm"),
            Some(PreTokenizer::Smollm)
        );
        assert_eq!(
            PreTokenizer::from_name("llama-bpe"),
            Some(PreTokenizer::Llama3)
        );
        assert_eq!(PreTokenizer::from_name("qwen-unknown"), None);
    }
}
