//! Beam search: the `B` most probable continuations, grown side by side.
//!
//! Each beam is a sequence of the session's KV cache forked from the prompt, so the prompt's
//! keys and values are stored once; a step decodes one token for every beam as one batch
//! (the weights are read once per step, not once per beam), and beams that reorder fork their
//! parents' page tables instead of copying their caches.
//!
//! The search follows Hugging Face transformers' `num_beams` with `early_stopping=True`:
//! - a beam's score is the sum of its tokens' log-probabilities (natural log);
//! - each step ranks the `2B` best (beam, token) extensions of every beam by score; walking
//!   them best first, an end-of-generation token among the first `B` finishes a hypothesis
//!   (its log-probability is in the sum and it counts toward the length), any other token
//!   extends a beam, until `B` beams are found;
//! - a hypothesis reaching `max_tokens` finishes there;
//! - the search stops as soon as `B` hypotheses are finished, and returns them by
//!   `sum / length^length_penalty`, best first.
//!
//! With one beam this is greedy decoding. Ties go to the lower beam, then the lower token id,
//! so the output is deterministic. Repetition penalties do not apply.

use std::sync::Arc;

use crate::constraint::{Constraint, ConstraintState, TokenMask};
use crate::kv::Span;
use crate::mem::{checked_len, zeroed};
use crate::session::{check_finite, Session};
use crate::threadpool::ThreadPool;
use crate::{Error, Result};

/// What a beam search is asked for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BeamParams {
    /// Beams kept side by side (`B`); at most the session's `n_seq_max`.
    pub beams: usize,
    /// `A` in `sum / length^A`; 1.0 as in transformers, 0 ranks by the plain sum.
    pub length_penalty: f32,
    /// Most tokens a hypothesis generates (end-of-generation included).
    pub max_tokens: usize,
    /// Never end a hypothesis at end-of-generation (fixed-length comparisons).
    pub ignore_eos: bool,
}

impl Default for BeamParams {
    fn default() -> Self {
        BeamParams {
            beams: 4,
            length_penalty: 1.0,
            max_tokens: 64,
            ignore_eos: false,
        }
    }
}

/// One finished hypothesis.
#[derive(Debug, Clone, PartialEq)]
pub struct Hypothesis {
    /// Generated tokens, without the end-of-generation token that finished it (if any).
    pub tokens: Vec<u32>,
    /// Whether end-of-generation finished it (rather than `max_tokens` or the context).
    pub ended: bool,
    /// Sum of the log-probabilities of its tokens, end-of-generation included.
    pub logprob: f64,
    /// `logprob / length^length_penalty`, the length counting end-of-generation.
    pub score: f64,
}

/// Restricts the tokens a beam may take next (a grammar, a set of choices). Each beam keeps
/// its own state, copied when beams fork.
pub trait Restrict {
    /// Where a beam stands; cloned (into existing values) as beams fork.
    type State: Clone;
    /// The state of a beam that has generated nothing yet.
    fn start(&self) -> Self::State;
    /// Sets the logits of the tokens not allowed after `state` to -inf, when at most
    /// `tokens_left` more tokens may follow (the last one of them included).
    fn mask(&mut self, state: &Self::State, tokens_left: usize, logits: &mut [f32]);
    /// Moves `state` past `token`.
    fn advance(&self, state: &mut Self::State, token: u32);
}

/// No restriction.
pub struct Free;

impl Restrict for Free {
    type State = ();
    fn start(&self) {}
    fn mask(&mut self, _: &(), _: usize, _: &mut [f32]) {}
    fn advance(&self, _: &mut (), _: u32) {}
}

/// `None` restricts nothing, `Some(r)` as `r` does.
impl<R: Restrict> Restrict for Option<R> {
    type State = Option<R::State>;
    fn start(&self) -> Self::State {
        self.as_ref().map(R::start)
    }
    fn mask(&mut self, state: &Self::State, tokens_left: usize, logits: &mut [f32]) {
        if let (Some(r), Some(s)) = (self, state) {
            r.mask(s, tokens_left, logits)
        }
    }
    fn advance(&self, state: &mut Self::State, token: u32) {
        if let (Some(r), Some(s)) = (self, state) {
            r.advance(s, token)
        }
    }
}

/// A constraint restricts beams as it restricts sampling: each beam has a state, the mask
/// steers it to complete within the tokens left, and end-of-generation is allowed only where
/// the output is complete.
pub struct Constrained {
    c: Arc<Constraint>,
    mask: TokenMask,
}

impl Constrained {
    /// Beams restricted by `c`.
    pub fn new(c: Arc<Constraint>) -> Self {
        Constrained {
            c,
            mask: TokenMask::new(),
        }
    }
}

impl Restrict for Constrained {
    type State = ConstraintState;
    fn start(&self) -> ConstraintState {
        self.c.start()
    }
    fn mask(&mut self, state: &ConstraintState, tokens_left: usize, logits: &mut [f32]) {
        self.c.mask(state, Some(tokens_left), &mut self.mask);
        for (id, l) in logits.iter_mut().enumerate() {
            if !self.mask.allowed(id as u32) {
                *l = f32::NEG_INFINITY;
            }
        }
    }
    fn advance(&self, state: &mut ConstraintState, token: u32) {
        // Only allowed tokens reach here (the mask removed the others).
        let _ = self.c.advance(state, token);
    }
}

/// A live beam: its sequence slot, tokens, score and restriction state.
#[derive(Clone)]
struct Beam<S> {
    slot: usize,
    tokens: Vec<u32>,
    logprob: f64,
    state: S,
}

/// An extension of a beam.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    /// The beam's score with this token.
    score: f64,
    beam: usize,
    token: u32,
    logit: f32,
}

/// Best first; ties to the lower beam, then the lower token.
fn by_score(a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
    b.score
        .total_cmp(&a.score)
        .then(a.beam.cmp(&b.beam))
        .then(a.token.cmp(&b.token))
}

/// `log(sum(exp(row)))`, stable (the same function scoring uses): the kernels'
/// [`Kernels::log_sum_exp`](crate::kernels::Kernels::log_sum_exp), the same bits on every
/// path.
pub(crate) fn log_sum_exp(row: &[f32]) -> f64 {
    crate::kernels::kernels().log_sum_exp(row)
}

/// Appends to `out` the `k` best tokens of `logits` as candidates of `beam`, whose score so
/// far is `base`; `lse` is log-sum-exp of the unmasked logits (so `logit - lse` is the token's
/// log-probability). Masked (-inf) entries are skipped. One pass, best first.
fn top_k(logits: &[f32], k: usize, beam: usize, base: f64, lse: f64, out: &mut Vec<Candidate>) {
    let start = out.len();
    for (n, chunk) in logits.chunks(8).enumerate() {
        // Once full, a chunk with no logit above the worst kept one changes nothing: the
        // comparison of 8 at a time vectorizes, and most chunks end here.
        if out.len() - start == k {
            let worst = out[out.len() - 1].logit;
            if !chunk.iter().fold(false, |any, &l| any | (l > worst)) {
                continue;
            }
        }
        for (j, &l) in chunk.iter().enumerate() {
            // Full: only a strictly larger logit gets in (ties keep the lower id).
            if out.len() - start == k && l <= out[out.len() - 1].logit || l == f32::NEG_INFINITY {
                continue;
            }
            if out.len() - start == k {
                out.pop();
            }
            let c = Candidate {
                score: base + (f64::from(l) - lse),
                beam,
                token: (n * 8 + j) as u32,
                logit: l,
            };
            // Insert in order (k is small).
            let mut at = out.len();
            while at > start && out[at - 1].logit < l {
                at -= 1;
            }
            out.insert(at, c);
        }
    }
}

/// One beam's ranking: the log-sum-exp of its logits and its best extensions, best first.
struct Ranked {
    /// The beam's log-probability so far.
    base: f64,
    lse: f64,
    best: Vec<Candidate>,
}

/// `items`, each handed to its own task of `pool`: `f(i, &mut items[i])`.
fn each_in_parallel<T: Send>(pool: &ThreadPool, items: &mut [T], f: impl Fn(usize, &mut T) + Sync) {
    /// The items' pointer, shared by the tasks.
    struct Items<T>(*mut T);
    // SAFETY: task i touches only item i (each index is run exactly once by `pool.run`), and
    // `items` stays exclusively borrowed until `pool.run` has joined every task.
    unsafe impl<T: Send> Sync for Items<T> {}
    impl<T> Items<T> {
        fn get(&self) -> *mut T {
            self.0
        }
    }
    let at = Items(items.as_mut_ptr());
    pool.run(items.len(), &|i| {
        // SAFETY: i < items.len(), and no other task holds item i (see `Items`).
        f(i, unsafe { &mut *at.get().add(i) });
    });
}

/// Buffers of one search, allocated when it starts so that its steps allocate nothing.
struct Work<S> {
    /// The live beams (the first `n_live`) and the next ones being formed; `b` each, on two
    /// disjoint sets of sequence slots.
    live: Vec<Beam<S>>,
    next: Vec<Beam<S>>,
    n_live: usize,
    /// Finished hypotheses (the first `n_finished`), at most `b`.
    finished: Vec<Hypothesis>,
    n_finished: usize,
    candidates: Vec<Candidate>,
    /// Each live beam's ranking.
    ranked: Vec<Ranked>,
    /// The first step's logits, masked: [n_vocab].
    row: Vec<f32>,
    /// Batch of one step: a token and a span per beam.
    tokens: Vec<u32>,
    spans: Vec<Span>,
}

/// Slot of the prompt's sequence; the beams use the slots after it.
const PROMPT: usize = 1;

impl<S: Clone> Work<S> {
    fn new(b: usize, max_tokens: usize, n_vocab: usize, start: S) -> Result<Self> {
        let oom = |_| Error::OutOfMemory("beam search buffers".into());
        let tokens = || -> Result<Vec<u32>> {
            let mut v = Vec::new();
            v.try_reserve_exact(max_tokens).map_err(oom)?;
            Ok(v)
        };
        let beams = |first_slot: usize| -> Result<Vec<Beam<S>>> {
            (0..b)
                .map(|i| {
                    Ok(Beam {
                        slot: first_slot + i,
                        tokens: tokens()?,
                        logprob: 0.0,
                        state: start.clone(),
                    })
                })
                .collect()
        };
        let finished = (0..b)
            .map(|_| {
                Ok(Hypothesis {
                    tokens: tokens()?,
                    ended: false,
                    logprob: 0.0,
                    score: 0.0,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut candidates = Vec::new();
        candidates.try_reserve_exact(2 * b * b + 1).map_err(oom)?;
        let ranked = (0..b)
            .map(|_| {
                let mut best = Vec::new();
                best.try_reserve_exact(2 * b).map_err(oom)?;
                Ok(Ranked {
                    base: 0.0,
                    lse: 0.0,
                    best,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut row = Vec::new();
        row.try_reserve_exact(n_vocab).map_err(oom)?;
        row.resize(n_vocab, 0.0);
        Ok(Work {
            live: beams(PROMPT + 1)?,
            next: beams(PROMPT + 1 + b)?,
            n_live: 0,
            finished,
            n_finished: 0,
            candidates,
            ranked,
            row,
            tokens: Vec::with_capacity(b),
            spans: Vec::with_capacity(b),
        })
    }

    /// Adds a finished hypothesis, keeping the `b` best by score (as transformers does).
    fn finish(&mut self, tokens: &[u32], ended: bool, logprob: f64, length_penalty: f32) {
        let len = tokens.len() + usize::from(ended);
        let score = logprob / (len as f64).powf(f64::from(length_penalty));
        let at = if self.n_finished < self.finished.len() {
            self.n_finished += 1;
            self.n_finished - 1
        } else {
            let worst = (0..self.n_finished)
                .min_by(|&i, &j| self.finished[i].score.total_cmp(&self.finished[j].score))
                .unwrap_or(0);
            if self.finished[worst].score >= score {
                return;
            }
            worst
        };
        let h = &mut self.finished[at];
        h.tokens.clone_from_slice_within_capacity(tokens);
        h.ended = ended;
        h.logprob = logprob;
        h.score = score;
    }
}

/// `clone_from` for token lists that never grows past the capacity reserved for them.
trait CopyTokens {
    fn clone_from_slice_within_capacity(&mut self, from: &[u32]);
}

impl CopyTokens for Vec<u32> {
    fn clone_from_slice_within_capacity(&mut self, from: &[u32]) {
        debug_assert!(from.len() <= self.capacity());
        self.clear();
        self.extend_from_slice(from);
    }
}

impl Session {
    /// Beam search after appending `prompt` to the context (empty: continue from the current
    /// logits). Returns the finished hypotheses, best first. On success the context is the
    /// previous context, the prompt and the best hypothesis (so a conversation can go on from
    /// it) and the logits are those after it; on any error the session is as before.
    /// Under the session's constraint (if any) every beam follows it from its start, and
    /// afterwards the constraint stands after the best hypothesis.
    pub fn beam_search(&mut self, prompt: &[u32], p: &BeamParams) -> Result<Vec<Hypothesis>> {
        // One restriction type for both cases (`None`: free), so the search is compiled once.
        let c = self.constraint().map(|(c, _)| Arc::clone(c));
        let hyps = self.beam_search_with(prompt, p, &mut c.clone().map(Constrained::new))?;
        if c.is_some() {
            self.constraint_restart();
            self.constraint_advance(&hyps[0].tokens);
        }
        Ok(hyps)
    }

    /// [`Session::beam_search`] with the beams' tokens restricted by `restrict`.
    pub fn beam_search_with<R: Restrict>(
        &mut self,
        prompt: &[u32],
        p: &BeamParams,
        restrict: &mut R,
    ) -> Result<Vec<Hypothesis>> {
        if p.beams == 0 || p.beams > self.params.n_seq_max {
            return Err(Error::InvalidArgument(format!(
                "{} beams asked, but this session runs at most {} sequences (n_seq_max)",
                p.beams, self.params.n_seq_max
            )));
        }
        if !p.length_penalty.is_finite() {
            return Err(Error::InvalidArgument(format!(
                "length penalty must be finite, got {}",
                p.length_penalty
            )));
        }
        if p.max_tokens == 0 {
            return Err(Error::InvalidArgument(
                "max_tokens must be at least 1".into(),
            ));
        }
        if prompt.is_empty() && self.logits().is_none() {
            return Err(Error::InvalidArgument(
                "the prompt is empty and the session has no context to continue".into(),
            ));
        }
        if !prompt.is_empty() {
            self.check_append(prompt)?;
        }
        // Tokens each beam can still generate within n_ctx and the cache's pages.
        let base = self.tokens.len() + prompt.len();
        let room = self.kv.search_room(0, base, p.beams).ok_or_else(|| {
            Error::OutOfMemory(format!(
                "this session's KV cache has no room for the sliding windows of a {}-beam \
                 search: create it for at least 2 sequences (n_seq_max, pipit_session_new_ex)",
                p.beams
            ))
        })?;
        let max_tokens = p.max_tokens.min(room);
        if max_tokens == 0 {
            return Err(Error::ContextFull {
                n_past: self.tokens.len(),
                n_new: prompt.len() + 1,
                n_ctx: self.params.n_ctx,
            });
        }
        let result = self.search(prompt, p, max_tokens, restrict);
        // Every slot but the context goes back to the pool, whatever happened.
        for slot in PROMPT..self.kv.n_slots() {
            self.kv.truncate(slot, 0);
        }
        result
    }

    fn search<R: Restrict>(
        &mut self,
        prompt: &[u32],
        p: &BeamParams,
        max_tokens: usize,
        restrict: &mut R,
    ) -> Result<Vec<Hypothesis>> {
        let b = p.beams;
        let n_vocab = self.model.hparams().n_vocab;
        let model = std::sync::Arc::clone(&self.model);
        let tok = model.tokenizer();
        let mut w = Work::new(b, max_tokens, n_vocab, restrict.start())?;
        if self.all_logits.is_empty() {
            self.all_logits = zeroed(checked_len(&[self.scratch.n_batch, n_vocab])?)?;
        }

        // 1. The prompt, in a sequence of its own forked from the context; the first beam
        //    starts from it with nothing generated.
        self.kv.fork(0, PROMPT);
        let root: Vec<f32> = if prompt.is_empty() {
            self.logits.clone()
        } else {
            self.eval_seq(PROMPT, prompt, false, |_, _| {})?;
            self.next_logits.clone()
        };
        self.kv.fork(PROMPT, w.live[0].slot);
        w.n_live = 1;

        // 2. Steps: rank the extensions of every live beam, finish or extend, decode.
        for step in 0..max_tokens {
            self.check_cancel()?;
            // Rank every live beam's extensions: the log-sum-exp of its logits (the model's
            // distribution; masking only removes candidates), its mask, then its best `2B`
            // tokens. Beams are ranked in parallel, their masks (which may share state) one
            // after another. The rows are masked in place: the first step's is a copy of the
            // root's logits, the others are this step's scratch.
            let n_live = w.n_live;
            let rows = if step == 0 {
                w.row.copy_from_slice(&root);
                &mut w.row[..]
            } else {
                &mut self.all_logits[..n_live * n_vocab]
            };
            let ranked = &mut w.ranked[..n_live];
            each_in_parallel(&self.pool, ranked, |i, r| {
                r.lse = log_sum_exp(&rows[i * n_vocab..(i + 1) * n_vocab]);
            });
            for (i, (row, r)) in rows
                .chunks_exact_mut(n_vocab)
                .zip(ranked.iter_mut())
                .enumerate()
            {
                r.base = w.live[i].logprob;
                if p.ignore_eos {
                    for &id in tok.eog_tokens() {
                        row[id as usize] = f32::NEG_INFINITY;
                    }
                }
                restrict.mask(&w.live[i].state, max_tokens - step, row);
            }
            each_in_parallel(&self.pool, ranked, |i, r| {
                let row = &rows[i * n_vocab..(i + 1) * n_vocab];
                r.best.clear();
                top_k(row, 2 * b, i, r.base, r.lse, &mut r.best);
            });
            w.candidates.clear();
            for r in ranked.iter() {
                w.candidates.extend_from_slice(&r.best);
            }
            w.candidates.sort_unstable_by(by_score);

            // Walk the candidates best first: finish at end-of-generation, else extend.
            let last = step + 1 == max_tokens;
            let mut n_next = 0;
            for rank in 0..w.candidates.len() {
                let c = w.candidates[rank];
                if tok.is_eog(c.token) {
                    if rank < b {
                        let parent = std::mem::take(&mut w.live[c.beam].tokens);
                        w.finish(&parent, true, c.score, p.length_penalty);
                        w.live[c.beam].tokens = parent;
                    }
                    continue;
                }
                let (parent, child) = (&w.live[c.beam], &mut w.next[n_next]);
                child
                    .tokens
                    .clone_from_slice_within_capacity(&parent.tokens);
                child.tokens.push(c.token);
                child.logprob = c.score;
                child.state.clone_from(&parent.state);
                restrict.advance(&mut child.state, c.token);
                if !last {
                    self.kv.fork(parent.slot, child.slot);
                }
                n_next += 1;
                if n_next == b {
                    break;
                }
            }
            if last {
                // The extensions reach max_tokens: they finish there.
                for i in 0..n_next {
                    let child = std::mem::take(&mut w.next[i].tokens);
                    w.finish(&child, false, w.next[i].logprob, p.length_penalty);
                    w.next[i].tokens = child;
                }
            }
            if w.n_finished >= b || last || n_next == 0 {
                break;
            }

            // The old beams' sequences were needed only to fork from: dropping them first
            // leaves a page that one new beam alone inherits to be written in place, not
            // copied. Then the new beams' tokens are decoded as one batch and become the live
            // beams.
            for old in &w.live[..w.n_live] {
                self.kv.truncate(old.slot, 0);
            }
            w.tokens.clear();
            w.spans.clear();
            for child in &w.next[..n_next] {
                w.tokens.push(child.tokens[child.tokens.len() - 1]);
                w.spans.push(Span {
                    seq: child.slot,
                    pos: self.kv.len(child.slot),
                    n: 1,
                });
            }
            self.decode_step(&w.tokens, &w.spans)?;
            std::mem::swap(&mut w.live, &mut w.next);
            w.n_live = n_next;
        }

        // 3. The best hypothesis becomes the context, swapped into slot 0. The live beam
        //    sharing the most of its first tokens already holds their keys and values: the
        //    prompt's sequence takes that beam's pages up to there, and only the rest of the
        //    hypothesis (at least its last token, for the logits after it) is decoded.
        let mut finished = w.finished;
        finished.truncate(w.n_finished);
        finished.sort_by(|a, c| c.score.total_cmp(&a.score));
        let best = finished
            .first()
            .ok_or_else(|| Error::Internal("beam search ended without a hypothesis".into()))?;
        let base = self.kv.len(PROMPT);
        let mut from = None;
        for bm in &w.live[..w.n_live] {
            let shared = bm
                .tokens
                .iter()
                .zip(&best.tokens)
                .take_while(|(a, b)| a == b)
                .count()
                .min(best.tokens.len().saturating_sub(1));
            // Positions a token at `base + shared` attends to may have left a sliding window.
            if shared > from.map_or(0, |(_, n)| n) && self.kv.can_truncate(bm.slot, base + shared) {
                from = Some((bm.slot, shared));
            }
        }
        let mut shared = 0;
        if let Some((slot, n)) = from {
            self.kv.fork(slot, PROMPT);
            self.kv.truncate(PROMPT, base + n);
            shared = n;
        }
        for slot in PROMPT + 1..self.kv.n_slots() {
            self.kv.truncate(slot, 0);
        }
        if best.tokens.is_empty() {
            self.next_logits.copy_from_slice(&root);
        } else {
            self.eval_seq(PROMPT, &best.tokens[shared..], false, |_, _| {})?;
        }
        self.kv.swap(0, PROMPT);
        std::mem::swap(&mut self.logits, &mut self.next_logits);
        self.tokens.extend_from_slice(prompt);
        self.tokens.extend_from_slice(&best.tokens);
        self.has_logits = true;
        Ok(finished)
    }

    /// Decodes one token for each of several sequences as one batch; the logits of span i
    /// land in row i of `all_logits`. A transaction per sequence: on error none of them
    /// changes.
    fn decode_step(&mut self, tokens: &[u32], spans: &[Span]) -> Result<()> {
        let n_vocab = self.model.hparams().n_vocab;
        for s in spans {
            self.kv.begin(s.seq);
        }
        let mut prepared = Ok(());
        for s in spans {
            prepared = prepared.and_then(|()| self.kv.prepare(s.seq, s.pos, s.n));
        }
        if let Err(e) = prepared {
            for s in spans {
                self.kv.rollback(s.seq);
            }
            return Err(e);
        }
        let ex = crate::forward::Exec {
            model: &self.model,
            kern: self.kern,
            pool: &self.pool,
            precision: self.params.precision,
        };
        crate::forward::forward(
            &ex,
            &mut self.kv,
            &mut self.scratch,
            tokens,
            spans,
            crate::forward::Logits::All,
            &mut self.all_logits,
        );
        if let Err(e) = check_finite(&self.all_logits[..tokens.len() * n_vocab]) {
            for s in spans {
                self.kv.rollback(s.seq);
            }
            return Err(e);
        }
        for s in spans {
            self.kv.commit(s.seq, s.pos + s.n);
        }
        Ok(())
    }
}
