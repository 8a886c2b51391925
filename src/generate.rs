//! The generation loop: the one place where tokens are sampled, appended and streamed.
//!
//! `pipit run`, `pipit chat` and `pipit_generate` all call [`Session::generate`]. A step
//! samples from the logits (after the per-step mask), appends the token to the context,
//! turns its bytes into whole UTF-8 characters and passes them through the stop-string
//! matcher, which holds back any text that may still become a stop string. Every buffer is
//! sized when the call starts, so a step allocates nothing.

use std::sync::Arc;

use crate::sampler::{Sampler, SamplerParams};
use crate::session::Session;
use crate::tokenizer::Utf8Stream;
use crate::{Error, Result};

/// How to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions<'a> {
    /// Sampling settings (a new random stream per call, seeded by `sampling.seed`).
    pub sampling: SamplerParams,
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Generation stops once the output ends with one of these; the stop string itself is
    /// not emitted. Empty strings are refused.
    pub stop: &'a [String],
    /// End-of-generation tokens cannot be sampled (fixed-length runs).
    pub ignore_eos: bool,
}

impl Default for GenerateOptions<'_> {
    fn default() -> Self {
        GenerateOptions {
            sampling: SamplerParams::default(),
            max_tokens: 128,
            stop: &[],
            ignore_eos: false,
        }
    }
}

/// Why a generation ended (errors, including a cancel, are reported as errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced an end-of-generation token (not appended).
    EndOfText,
    /// `max_tokens` tokens were generated.
    MaxTokens,
    /// The output ended with a stop string (its tokens are in the context).
    StopString,
    /// The callback asked to stop.
    Callback,
    /// The context is full; every generated token is in it.
    ContextFull,
}

impl StopReason {
    /// A short description for messages.
    pub fn describe(self) -> &'static str {
        match self {
            StopReason::EndOfText => "end of text",
            StopReason::MaxTokens => "length",
            StopReason::StopString => "stop string",
            StopReason::Callback => "stopped by the caller",
            StopReason::ContextFull => "context full",
        }
    }
}

/// Holds back generated text that might still be the start of a stop string.
#[derive(Debug)]
pub struct StopMatcher<'a> {
    stops: &'a [String],
    /// Text received but not yet emitted: always a proper prefix of some stop string
    /// between calls. Capacity reserved up front.
    held: Vec<u8>,
}

impl<'a> StopMatcher<'a> {
    /// A matcher for `stops`; `max_piece` bounds the bytes one `push` receives.
    pub fn new(stops: &'a [String], max_piece: usize) -> Result<Self> {
        if stops.iter().any(String::is_empty) {
            return Err(Error::InvalidArgument("a stop string is empty".into()));
        }
        let longest = stops.iter().map(String::len).max().unwrap_or(0);
        let mut held = Vec::new();
        held.try_reserve_exact(longest + max_piece)
            .map_err(|_| Error::OutOfMemory("stop-string buffer".into()))?;
        Ok(StopMatcher { stops, held })
    }

    /// Takes `bytes` of output: emits what can no longer be part of a stop string, and
    /// returns true (emitting the text before it) once a stop string is complete.
    pub fn push(&mut self, bytes: &[u8], mut emit: impl FnMut(&[u8])) -> bool {
        if self.stops.is_empty() {
            emit(bytes);
            return false;
        }
        self.held.extend_from_slice(bytes);
        // The earliest complete stop string ends the output.
        let found = self
            .stops
            .iter()
            .filter_map(|s| find(&self.held, s.as_bytes()))
            .min();
        if let Some(at) = found {
            if at > 0 {
                emit(&self.held[..at]);
            }
            self.held.clear();
            return true;
        }
        // Keep the longest tail that a stop string starts with; emit the rest.
        let keep = (1..self.held.len().min(self.longest()) + 1)
            .rev()
            .find(|&k| {
                let tail = &self.held[self.held.len() - k..];
                self.stops.iter().any(|s| s.as_bytes().starts_with(tail))
            })
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        if cut > 0 {
            emit(&self.held[..cut]);
            self.held.copy_within(cut.., 0);
            self.held.truncate(keep);
        }
        false
    }

    /// Emits the held-back text: the output ended without completing a stop string.
    pub fn finish(&mut self, mut emit: impl FnMut(&[u8])) {
        if !self.held.is_empty() {
            emit(&self.held);
            self.held.clear();
        }
    }

    fn longest(&self) -> usize {
        self.stops.iter().map(String::len).max().unwrap_or(0)
    }
}

/// Start of the first occurrence of `needle` (non-empty) in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Session {
    /// Evaluates `prompt` (empty: continue from the current logits), then samples, appends
    /// and streams tokens until a [`StopReason`]. `emit(text, token)` receives whole UTF-8
    /// characters (`token` is the latest token behind them) and returns true to stop. Every
    /// generated token is in the context, including those that spell a stop string; the
    /// end-of-generation token is not. A prompt that does not fit is
    /// [`Error::ContextFull`] and changes nothing; on any other error the tokens generated
    /// so far stay in the context.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions<'_>,
        mut emit: impl FnMut(&[u8], u32) -> bool,
    ) -> Result<StopReason> {
        let model = Arc::clone(self.model());
        let tok = model.tokenizer();
        let n_vocab = model.hparams().n_vocab;
        let mut sampler = Sampler::new(opts.sampling, n_vocab)?;
        let max_piece = (0..n_vocab as u32)
            .map(|id| tok.piece(id).len())
            .max()
            .unwrap_or(0);
        // A split character is held by the UTF-8 stream, so one push gets at most 3 more.
        let mut stops = StopMatcher::new(opts.stop, max_piece + 4)?;
        // Logits after the mask, and the tokens it removes; only needed when a mask applies.
        let mut masked = Vec::new();
        let mut banned = Vec::new();
        if opts.ignore_eos {
            masked
                .try_reserve_exact(n_vocab)
                .map_err(|_| Error::OutOfMemory("masked logits".into()))?;
            banned.extend((0..n_vocab as u32).filter(|&id| tok.is_eog(id)));
        }
        // A constraint applies to the generated output only: it restarts after the prompt.
        if !prompt.is_empty() {
            self.eval_prompt(prompt)?;
        } else if self.logits().is_none() {
            return Err(Error::InvalidArgument(
                "the prompt is empty and the session has no context to continue".into(),
            ));
        }
        self.constraint_restart();

        let mut stream = Utf8Stream::new();
        // Whether the caller asked to stop, and whether a stop string completed.
        let (mut asked, mut matched) = (false, false);
        let mut last = 0u32;
        // Flushes held-back text when the output ends for any reason but a stop string.
        macro_rules! flush {
            () => {{
                stream.finish(|b| {
                    matched = matched || stops.push(b, |t| asked = asked || emit(t, last));
                });
                if !matched {
                    stops.finish(|t| asked = asked || emit(t, last));
                }
            }};
        }
        let mut n = 0;
        let reason = loop {
            if n == opts.max_tokens {
                break StopReason::MaxTokens;
            }
            if self.n_past() == self.params().n_ctx {
                break StopReason::ContextFull;
            }
            // The per-step token mask: disallowed tokens are never drawn. Under a
            // constraint its mask applies, steered to complete within the tokens left (each
            // can carry one byte); end-of-generation tokens are removed under `ignore_eos`.
            let drawn = if self.constraint().is_some() {
                let banned: &[u32] = if opts.ignore_eos { &banned } else { &[] };
                self.sample_constrained(&mut sampler, Some(opts.max_tokens - n), banned)
            } else {
                let Some(logits) = self.logits() else {
                    return Err(Error::Internal("no logits after evaluation".into()));
                };
                let logits = if opts.ignore_eos {
                    masked.clear();
                    masked.extend_from_slice(logits);
                    for &id in &banned {
                        masked[id as usize] = f32::NEG_INFINITY;
                    }
                    &masked[..]
                } else {
                    logits
                };
                sampler.sample(logits, self.tokens())
            };
            let next = match drawn {
                Ok(next) => next,
                Err(e) => {
                    flush!();
                    return Err(e);
                }
            };
            if tok.is_eog(next) {
                break StopReason::EndOfText;
            }
            if let Err(e) = self.eval(&[next]) {
                flush!();
                return Err(e);
            }
            n += 1;
            last = next;
            stream.push(tok.piece(next), |b| {
                if !matched && !asked {
                    matched = stops.push(b, |t| asked = asked || emit(t, next));
                }
            });
            if matched {
                return Ok(StopReason::StopString);
            }
            if asked {
                return Ok(StopReason::Callback);
            }
        };
        flush!();
        if matched {
            return Ok(StopReason::StopString);
        }
        if asked {
            return Ok(StopReason::Callback);
        }
        // Output that ran out of tokens or context must still be complete under a
        // constraint: never silently invalid.
        self.check_complete()?;
        Ok(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `pieces` to a matcher; returns the emitted text and whether a stop matched.
    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut m = StopMatcher::new(&stops, 16).unwrap();
        let mut out = Vec::new();
        for p in pieces {
            if m.push(p.as_bytes(), |b| out.extend_from_slice(b)) {
                return (String::from_utf8(out).unwrap(), true);
            }
        }
        m.finish(|b| out.extend_from_slice(b));
        (String::from_utf8(out).unwrap(), false)
    }

    #[test]
    fn stop_strings_across_pieces_are_never_emitted() {
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
        assert_eq!(
            run(&["END"], &["abc", "E", "N", "D", "x"]),
            ("abc".into(), true)
        );
        assert_eq!(run(&["END"], &["abcEN", "Dxyz"]), ("abc".into(), true));
        assert_eq!(run(&["END"], &["xENDy"]), ("x".into(), true));
        assert_eq!(run(&["END"], &["END"]), ("".into(), true));
        // A partial match that fails is emitted in full.
        assert_eq!(run(&["END"], &["EN", "d", "EN"]), ("ENdEN".into(), false));
        // Overlapping candidates: "aab" inside "aaab".
        assert_eq!(
            run(&["aab"], &["a", "a", "a", "b", "c"]),
            ("a".into(), true)
        );
        // The earliest of several stops wins.
        assert_eq!(run(&["yz", "xy"], &["wxyz"]), ("w".into(), true));
        assert_eq!(
            run(&["\n\n", "<|"], &["hi\n", "<", "|"]),
            ("hi\n".into(), true)
        );
        // Multi-byte characters.
        assert_eq!(run(&["é!"], &["caf", "é", "!"]), ("caf".into(), true));
    }

    #[test]
    fn held_back_text_is_what_might_still_match() {
        let stops = vec!["</s>".to_string()];
        let mut m = StopMatcher::new(&stops, 8).unwrap();
        let mut out = Vec::new();
        assert!(!m.push(b"ab</", |b| out.extend_from_slice(b)));
        assert_eq!(out, b"ab");
        assert!(!m.push(b"x", |b| out.extend_from_slice(b)));
        assert_eq!(out, b"ab</x");
        assert!(StopMatcher::new(&["".to_string()], 8).is_err());
    }
}
