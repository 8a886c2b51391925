//! A session: everything of one conversation with a model.
//!
//! It owns the KV cache (sized once from `n_ctx`), the scratch buffers, the logits and the
//! token history, plus a thread pool. Prompts go in batches; decoding is a batch of one.
//! A call that fails leaves the session exactly as it was: the context and the logits only
//! change once a whole call has succeeded.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::constraint::{Constraint, ConstraintState, TokenMask};
use crate::error::StateError;
use crate::forward::{self, Exec, Logits, Scratch};
use crate::kernels::{self, Kernels};
use crate::kv::{KvCache, Span};
use crate::mem::{checked_len, zeroed};
use crate::model::Model;
use crate::sampler::Sampler;
use crate::threadpool::ThreadPool;
use crate::{Error, Result};

pub use crate::forward::{KvType, Precision};

mod beam;
pub use beam::{BeamParams, Constrained, Free, Hypothesis, Restrict};

/// Most threads a session may ask for.
pub const MAX_THREADS: usize = 256;

/// How a session is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionParams {
    /// Context window in tokens (prompt plus generated). Default 2048, never more than the
    /// model was trained for.
    pub n_ctx: usize,
    /// Threads for the matrix work; 0 means all cores.
    pub n_threads: usize,
    /// Most tokens processed by one forward call (prompt batches).
    pub n_batch: usize,
    /// Integer (fast) or f32 (reference) activations.
    pub precision: Precision,
    /// Element type of the KV cache.
    pub kv_type: KvType,
    /// Bytes allowed for the KV cache plus scratch; 0 means no limit.
    pub memory_limit: u64,
    /// Most sequences one search (beam search) runs side by side; 1 for plain generation.
    /// Their memory is reserved when the session is created.
    pub n_seq_max: usize,
    /// Test only: sliding-window layers keep every position instead of their window (a full
    /// cache with a window mask, the reference the window-sized cache must equal).
    #[doc(hidden)]
    pub full_window_cache: bool,
}

impl Default for SessionParams {
    fn default() -> Self {
        SessionParams {
            n_ctx: 2048,
            n_threads: 0,
            n_batch: 64,
            precision: Precision::Int8,
            kv_type: KvType::F16,
            memory_limit: 0,
            n_seq_max: 1,
            full_window_cache: false,
        }
    }
}

/// Most sequences a session may run side by side.
pub const MAX_SEQ: usize = 256;

/// The memory a session needs, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryReport {
    /// Model weights mapped from the file (shared by all sessions of the model).
    pub weights_mapped: u64,
    /// The KV cache.
    pub kv_cache: u64,
    /// Activations, logits and the other per-session buffers.
    pub scratch: u64,
    /// The sum of the three.
    pub total: u64,
}

impl MemoryReport {
    /// What a session with `params` on `model` would take; errors on nonsense parameters.
    pub fn estimate(model: &Model, params: &SessionParams) -> Result<Self> {
        let hp = model.hparams();
        let overflow = || Error::OutOfMemory("memory estimate overflows".into());
        let n_batch = batch_size(params);
        let kv = KvCache::bytes_for(
            hp,
            params.n_ctx,
            params.n_seq_max,
            n_batch,
            params.kv_type,
            !params.full_window_cache,
        )
        .ok_or_else(overflow)?;
        let scratch =
            Scratch::bytes_for(hp, n_batch, params.n_ctx, resolve_threads(params.n_threads))
                .ok_or_else(overflow)?;
        // Two logit rows (current and next) and one row per batch token for scoring and
        // searches.
        let logits = checked_len(&[hp.n_vocab, n_batch + 2, 4])?;
        let scratch = scratch.checked_add(logits).ok_or_else(overflow)?;
        let weights = model.bytes().len() as u64;
        let (kv, scratch) = (kv as u64, scratch as u64);
        Ok(MemoryReport {
            weights_mapped: weights,
            kv_cache: kv,
            scratch,
            total: weights + kv + scratch,
        })
    }
}

/// Bytes of memory the machine can give new allocations without swapping: `MemAvailable`
/// of `/proc/meminfo` (Linux, Android); `None` where that is unknown.
pub fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_available(&info)
}

/// The `MemAvailable:` line of a `/proc/meminfo` text, in bytes.
fn parse_mem_available(info: &str) -> Option<u64> {
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut words = line["MemAvailable:".len()..].split_whitespace();
    let kib: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => kib.checked_mul(1024),
        _ => None,
    }
}

/// Errors with [`Error::OutOfMemory`], naming both figures, when the KV cache and scratch of
/// a session with `params` exceed `available` bytes (the machine's, from
/// [`available_memory`]); a library cannot know its host's limits, so callers opt in (the
/// CLI by default, the C ABI with `PIPIT_SESSION_CHECK_MEMORY`). Call before
/// [`Session::new`]: nothing is allocated.
pub fn check_memory(model: &Model, params: &SessionParams, available: Option<u64>) -> Result<()> {
    let Some(available) = available else {
        return Ok(());
    };
    let mem = MemoryReport::estimate(model, params)?;
    let need = mem.kv_cache.saturating_add(mem.scratch);
    if need > available {
        const MIB: u64 = 1 << 20;
        return Err(Error::OutOfMemory(format!(
            "a session of n_ctx = {} needs {} MiB (KV cache {} MiB + scratch {} MiB), more than \
             the {} MiB of memory available (MemAvailable in /proc/meminfo)",
            params.n_ctx,
            need.div_ceil(MIB),
            mem.kv_cache.div_ceil(MIB),
            mem.scratch.div_ceil(MIB),
            available / MIB
        )));
    }
    Ok(())
}

/// One conversation: its context, cache and buffers.
pub struct Session {
    model: Arc<Model>,
    params: SessionParams,
    kern: &'static Kernels,
    pool: ThreadPool,
    kv: KvCache,
    scratch: Scratch,
    /// Logits after the last token of the context: [n_vocab].
    logits: Vec<f32>,
    /// Where a forward call writes them; swapped with `logits` once the call succeeded.
    next_logits: Vec<f32>,
    /// Logits of every token of a batch, for scoring: [n_batch, n_vocab]; empty until used.
    all_logits: Vec<f32>,
    /// The tokens in the context, oldest first; capacity n_ctx.
    tokens: Vec<u32>,
    /// Whether `logits` belong to the last token of `tokens`.
    has_logits: bool,
    /// Set from any thread to stop the running call.
    cancel: Arc<AtomicBool>,
    /// The constraint output follows, if any (see [`Session::set_constraint`]).
    constraint: Option<ConstraintSlot>,
}

/// A session's constraint: its state, a scratch state for checking tokens before they are
/// evaluated, and the mask buffer.
struct ConstraintSlot {
    c: Arc<Constraint>,
    state: ConstraintState,
    next: ConstraintState,
    mask: TokenMask,
}

impl Session {
    /// A new, empty session. Checks the parameters and the memory limit before allocating.
    pub fn new(model: Arc<Model>, params: SessionParams) -> Result<Self> {
        let hp = model.hparams();
        if params.n_ctx == 0 {
            return Err(Error::InvalidArgument("n_ctx must be at least 1".into()));
        }
        if params.n_ctx > hp.n_ctx_train {
            return Err(Error::InvalidArgument(format!(
                "n_ctx = {} exceeds the {} tokens this model was trained for",
                params.n_ctx, hp.n_ctx_train
            )));
        }
        if params.n_threads > MAX_THREADS {
            return Err(Error::InvalidArgument(format!(
                "n_threads must be at most {MAX_THREADS} (0 means all cores), got {}",
                params.n_threads
            )));
        }
        if params.n_batch == 0 || params.n_batch > 4096 {
            return Err(Error::InvalidArgument(format!(
                "n_batch must be in 1..=4096, got {}",
                params.n_batch
            )));
        }
        if params.n_seq_max == 0 || params.n_seq_max > MAX_SEQ {
            return Err(Error::InvalidArgument(format!(
                "n_seq_max must be in 1..={MAX_SEQ}, got {}",
                params.n_seq_max
            )));
        }
        let mem = MemoryReport::estimate(&model, &params)?;
        if params.memory_limit != 0 && mem.kv_cache + mem.scratch > params.memory_limit {
            return Err(Error::OutOfMemory(format!(
                "the session needs {} bytes (KV cache {} + scratch {}), over the limit of {}",
                mem.kv_cache + mem.scratch,
                mem.kv_cache,
                mem.scratch,
                params.memory_limit
            )));
        }
        let n_threads = resolve_threads(params.n_threads);
        let kern = kernels::kernels_from_env()?;
        let n_batch = batch_size(&params);
        let kv = KvCache::with_windows(
            hp,
            params.n_ctx,
            params.n_seq_max,
            n_batch,
            params.kv_type,
            !params.full_window_cache,
        )?;
        let scratch = Scratch::new(hp, n_batch, params.n_ctx, n_threads)?;
        let mut tokens = Vec::new();
        tokens
            .try_reserve_exact(params.n_ctx)
            .map_err(|_| Error::OutOfMemory("token history".into()))?;
        Ok(Session {
            logits: zeroed(hp.n_vocab)?,
            next_logits: zeroed(hp.n_vocab)?,
            all_logits: Vec::new(),
            tokens,
            has_logits: false,
            cancel: Arc::new(AtomicBool::new(false)),
            constraint: None,
            pool: ThreadPool::new(n_threads),
            kern,
            kv,
            scratch,
            params,
            model,
        })
    }

    /// Bytes of the KV cache this session allocated: the `kv_cache` of
    /// [`MemoryReport::estimate`] for its parameters (sliding-window layers hold their
    /// window, not the context).
    pub fn kv_cache_bytes(&self) -> usize {
        self.kv.bytes()
    }

    /// The model this session runs.
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// The parameters it was created with.
    pub fn params(&self) -> &SessionParams {
        &self.params
    }

    /// The kernel path in use.
    pub fn kernel_name(&self) -> &'static str {
        self.kern.name
    }

    /// Threads doing the matrix work.
    pub fn n_threads(&self) -> usize {
        self.pool.n_threads()
    }

    /// The memory read bandwidth this session's threads reach, in GB/s (1e9 bytes per
    /// second): the best of `passes` timed reads of a `bytes`-long buffer, in 1 MiB pieces
    /// spread over the thread pool as the matmuls spread their rows. A decode step reads
    /// every weight once, so with a buffer well past the last-level cache this is its DRAM
    /// roofline. The buffer is written first: untouched pages would all map the one zero
    /// page and be read from cache.
    pub fn read_bandwidth(&self, bytes: usize, passes: usize) -> Result<f64> {
        const PIECE: usize = (1 << 20) / 8;
        let n_words = bytes / 8;
        if n_words == 0 || passes == 0 {
            return Err(Error::InvalidArgument(format!(
                "read_bandwidth: {bytes} bytes, {passes} passes: both must be nonzero"
            )));
        }
        let mut words = zeroed::<u64>(n_words)?;
        words.fill(1);
        let n_pieces = n_words.div_ceil(PIECE);
        let mut best = f64::INFINITY;
        for _ in 0..passes {
            let total = std::sync::atomic::AtomicU64::new(0);
            let t = std::time::Instant::now();
            self.pool.run(n_pieces, &|i| {
                let piece = &words[i * PIECE..((i + 1) * PIECE).min(n_words)];
                total.fetch_add(sum_words(piece), Ordering::Relaxed);
            });
            best = best.min(t.elapsed().as_secs_f64());
            // Every word is 1: a wrong sum means pieces were skipped or read twice.
            if total.into_inner() != n_words as u64 {
                return Err(Error::Internal("read_bandwidth: the sum is wrong".into()));
            }
        }
        Ok((n_words * 8) as f64 / best / 1e9)
    }

    /// Tokens in the context.
    pub fn n_past(&self) -> usize {
        self.tokens.len()
    }

    /// The tokens in the context, oldest first.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// A handle that stops the running call from another thread ([`Error::Cancelled`]).
    pub fn cancel_handle(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.cancel)
    }

    /// Empties the context.
    pub fn reset(&mut self) {
        self.kv.truncate(0, 0);
        self.tokens.clear();
        self.has_logits = false;
    }

    /// A digest of everything a call may change: the tokens in the context (so n_past), the
    /// KV cache below n_past and the current logits. Equal before and after a call that
    /// failed (the session's rule); equal for two sessions that evaluated the same tokens in
    /// any batching with the int8 path (bit-identical logits and cache).
    pub fn state_digest(&self) -> u64 {
        let mut h = crate::mem::FNV_OFFSET;
        h = crate::mem::fnv1a(h, &(self.tokens.len() as u64).to_le_bytes());
        h = crate::mem::fnv1a(h, bytemuck::cast_slice(&self.tokens));
        h = self.kv.digest_below(self.tokens.len(), h);
        match self.logits() {
            Some(l) => crate::mem::fnv1a(h, bytemuck::cast_slice(l)),
            None => crate::mem::fnv1a(h, b"no logits"),
        }
    }

    /// Logits after the last token of the context, if any token was evaluated.
    pub fn logits(&self) -> Option<&[f32]> {
        self.has_logits.then_some(&self.logits[..])
    }

    /// Checks that `tokens` can be appended: non-empty, known ids, room in the context.
    pub(crate) fn check_append(&self, tokens: &[u32]) -> Result<()> {
        if tokens.is_empty() {
            return Err(Error::InvalidArgument("no tokens to evaluate".into()));
        }
        let n_vocab = self.model.hparams().n_vocab;
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(Error::InvalidArgument(format!(
                "token id {bad} is outside the vocabulary of {n_vocab}"
            )));
        }
        if self.tokens.len() + tokens.len() > self.params.n_ctx {
            return Err(Error::ContextFull {
                n_past: self.tokens.len(),
                n_new: tokens.len(),
                n_ctx: self.params.n_ctx,
            });
        }
        Ok(())
    }

    /// Stops with [`Error::Cancelled`] if a cancel was requested, clearing the request.
    fn check_cancel(&self) -> Result<()> {
        if self.cancel.swap(false, Ordering::AcqRel) {
            return Err(Error::Cancelled);
        }
        Ok(())
    }

    /// Sets the constraint that sampling and [`Session::eval`] follow from now on, at its
    /// start (`None` clears it). A constraint compiled for another vocabulary is
    /// `InvalidArgument`.
    pub fn set_constraint(&mut self, c: Option<Arc<Constraint>>) -> Result<()> {
        let Some(c) = c else {
            self.constraint = None;
            return Ok(());
        };
        if c.vocab_id() != self.model.try_vocab_index()?.id {
            return Err(Error::InvalidArgument(
                "the constraint was compiled for another model's vocabulary".into(),
            ));
        }
        self.constraint = Some(ConstraintSlot {
            state: c.start(),
            next: c.start(),
            mask: TokenMask::new(),
            c,
        });
        Ok(())
    }

    /// The constraint in use and where the output is in it.
    pub fn constraint(&self) -> Option<(&Arc<Constraint>, &ConstraintState)> {
        self.constraint.as_ref().map(|k| (&k.c, &k.state))
    }

    /// Puts the constraint back at its start (at the start of a generated output).
    pub fn constraint_restart(&mut self) {
        if let Some(k) = &mut self.constraint {
            k.c.restart(&mut k.state);
        }
    }

    /// Moves the constraint past `tokens` (already in the context), ignoring ones it would
    /// refuse.
    fn constraint_advance(&mut self, tokens: &[u32]) {
        if let Some(k) = &mut self.constraint {
            for &t in tokens {
                let _ = k.c.advance(&mut k.state, t);
            }
        }
    }

    /// Evaluates a prompt: like [`Session::eval`], but the constraint does not apply to
    /// it and restarts after it, ready for the generated output.
    pub fn eval_prompt(&mut self, tokens: &[u32]) -> Result<()> {
        let k = self.constraint.take();
        let r = self.eval(tokens);
        self.constraint = k;
        if r.is_ok() {
            self.constraint_restart();
        }
        r
    }

    /// Appends `tokens` to the context and leaves the logits of the last one. Under a
    /// constraint the tokens must be allowed (else `InvalidArgument`, nothing changed)
    /// and advance it.
    pub fn eval(&mut self, tokens: &[u32]) -> Result<()> {
        if let Some(k) = &mut self.constraint {
            k.next.clone_from(&k.state);
            for &t in tokens {
                k.c.advance(&mut k.next, t)?;
            }
        }
        self.eval_tokens(tokens)?;
        if let Some(k) = &mut self.constraint {
            std::mem::swap(&mut k.state, &mut k.next);
        }
        Ok(())
    }

    fn eval_tokens(&mut self, tokens: &[u32]) -> Result<()> {
        self.check_append(tokens)?;
        self.eval_seq(0, tokens, false, |_, _| {})?;
        std::mem::swap(&mut self.logits, &mut self.next_logits);
        self.tokens.extend_from_slice(tokens);
        self.has_logits = true;
        Ok(())
    }

    /// Appends `tokens` like [`Session::eval`], calling `f(i, logits)` with the logits after
    /// each `tokens[i]` (the distribution of the token that follows it). The context only
    /// grows once every batch succeeded; `f` may have seen the logits of earlier batches when
    /// a later one fails.
    pub fn eval_all(&mut self, tokens: &[u32], f: impl FnMut(usize, &[f32])) -> Result<()> {
        self.check_append(tokens)?;
        self.eval_seq(0, tokens, true, f)?;
        let n_vocab = self.model.hparams().n_vocab;
        let last = (tokens.len() - 1) % self.scratch.n_batch;
        self.logits
            .copy_from_slice(&self.all_logits[last * n_vocab..(last + 1) * n_vocab]);
        self.tokens.extend_from_slice(tokens);
        self.has_logits = true;
        Ok(())
    }

    /// Writes `tokens` at the end of sequence `seq` as one transaction of the cache (see
    /// [`Session::run_batches`]); on any error the cache is as before.
    fn eval_seq(
        &mut self,
        seq: usize,
        tokens: &[u32],
        all: bool,
        f: impl FnMut(usize, &[f32]),
    ) -> Result<()> {
        let n_past = self.kv.len(seq);
        self.kv.begin(seq);
        match self.run_batches(seq, n_past, tokens, all, f) {
            Ok(()) => {
                self.kv.commit(seq, n_past + tokens.len());
                Ok(())
            }
            Err(e) => {
                self.kv.rollback(seq);
                Err(e)
            }
        }
    }

    /// Runs `tokens` through the model at positions `pos..` of sequence `seq`, inside a
    /// transaction the caller opened, in batches. With `all`, `f(i, logits)` sees the logits
    /// after each `tokens[i]` and the last batch's rows stay in `all_logits`; without,
    /// `next_logits` holds the last token's. Checks for a cancel before each batch and for
    /// NaN or infinite logits.
    fn run_batches(
        &mut self,
        seq: usize,
        pos: usize,
        tokens: &[u32],
        all: bool,
        mut f: impl FnMut(usize, &[f32]),
    ) -> Result<()> {
        let n_vocab = self.model.hparams().n_vocab;
        if all && self.all_logits.is_empty() {
            self.all_logits = zeroed(checked_len(&[self.scratch.n_batch, n_vocab])?)?;
        }
        let n_batch = self.scratch.n_batch;
        let ex = Exec {
            model: &self.model,
            kern: self.kern,
            pool: &self.pool,
            precision: self.params.precision,
        };
        let n_batches = tokens.len().div_ceil(n_batch);
        for (b, batch) in tokens.chunks(n_batch).enumerate() {
            self.check_cancel()?;
            let at = pos + b * n_batch;
            self.kv.prepare(seq, at, batch.len())?;
            let span = [Span {
                seq,
                pos: at,
                n: batch.len(),
            }];
            let want = match (all, b + 1 == n_batches) {
                (true, _) => Logits::All,
                (false, true) => Logits::Last,
                (false, false) => Logits::None,
            };
            let out = if all {
                &mut self.all_logits
            } else {
                &mut self.next_logits
            };
            forward::forward(&ex, &mut self.kv, &mut self.scratch, batch, &span, want, out);
            if all {
                let rows = &self.all_logits[..batch.len() * n_vocab];
                check_finite(rows)?;
                for (i, row) in rows.chunks_exact(n_vocab).enumerate() {
                    f(b * n_batch + i, row);
                }
            }
        }
        if !all {
            check_finite(&self.next_logits)?;
        }
        Ok(())
    }

    /// Sum of `log P(tokens[i] | context, tokens[..i])`, natural log, appending the tokens.
    /// On an empty context `tokens[0]` is given, not scored.
    pub fn score(&mut self, tokens: &[u32]) -> Result<f64> {
        self.check_append(tokens)?;
        let mut total = match (self.tokens.is_empty(), self.logits()) {
            (false, Some(l)) => log_softmax_at(l, tokens[0]),
            _ => 0.0,
        };
        self.eval_all(tokens, |i, logits| {
            if let Some(&next) = tokens.get(i + 1) {
                total += log_softmax_at(logits, next);
            }
        })?;
        Ok(total)
    }

    /// Rewinds the context to its first `n_past` tokens. The logits become those after
    /// token `n_past - 1`, recomputed by evaluating that token again at its position (none
    /// at 0). `n_past` above the current count is an error; on any error nothing changes.
    pub fn truncate(&mut self, n_past: usize) -> Result<()> {
        if n_past > self.tokens.len() {
            return Err(Error::InvalidArgument(format!(
                "cannot truncate to {n_past} tokens: the context holds {}",
                self.tokens.len()
            )));
        }
        if n_past == self.tokens.len() {
            return Ok(());
        }
        if n_past == 0 {
            self.reset();
            return Ok(());
        }
        if !self.kv.can_truncate(0, n_past) {
            return Err(Error::InvalidArgument(format!(
                "cannot truncate to {n_past} tokens: the sliding-window layers keep only the \
                 last {} positions of the {} in the context; reset the session and evaluate \
                 the tokens again",
                self.model.hparams().sliding_window,
                self.tokens.len()
            )));
        }
        // Position n_past-1 is evaluated again (its cache rows get the values they hold) for
        // its logits; the cache keeps the first n_past positions.
        let last = self.tokens[n_past - 1];
        self.kv.begin(0);
        if let Err(e) = self.run_batches(0, n_past - 1, &[last], false, |_, _| {}) {
            self.kv.rollback(0);
            return Err(e);
        }
        self.kv.commit(0, n_past);
        std::mem::swap(&mut self.logits, &mut self.next_logits);
        self.tokens.truncate(n_past);
        self.has_logits = true;
        Ok(())
    }

    /// Log-probabilities of each option as a continuation of the context plus `prompt`:
    /// `logprobs[i]` = sum of log P(`options[i][j]` | context, prompt, `options[i][..j]`).
    /// Returns the index of the best (the first on ties). The prompt is evaluated once and
    /// the options share its KV rows; afterwards the context holds the prompt and nothing
    /// of the options. On error nothing changes. Scoring allocates nothing once the
    /// session has scored before.
    pub fn choose(
        &mut self,
        prompt: &[u32],
        options: &[Vec<u32>],
        logprobs: &mut [f64],
    ) -> Result<usize> {
        if options.is_empty() || logprobs.len() != options.len() {
            return Err(Error::InvalidArgument(format!(
                "{} options and room for {} log-probabilities: need the same, at least 1",
                options.len(),
                logprobs.len()
            )));
        }
        if prompt.is_empty() && !self.has_logits {
            return Err(Error::InvalidArgument(
                "the prompt is empty and the session has no context to continue".into(),
            ));
        }
        if let Some(i) = options.iter().position(Vec::is_empty) {
            return Err(Error::InvalidArgument(format!("option {i} has no tokens")));
        }
        if !prompt.is_empty() {
            self.check_append(prompt)?;
        }
        for o in options {
            self.check_append_after(prompt.len(), o)?;
        }
        // The prompt's logits go to `next_logits`; the context is committed at the end.
        let base = self.tokens.len() + prompt.len();
        // One transaction: the prompt, then each option at positions base.. over the
        // prompt's rows (the sliding windows keep what every option needs); the commit keeps
        // the prompt and drops the options.
        let n_past = self.tokens.len();
        self.kv.begin(0);
        if let Err(e) = self.choose_in(n_past, base, prompt, options, logprobs) {
            self.kv.rollback(0);
            return Err(e);
        }
        self.kv.commit(0, base);
        std::mem::swap(&mut self.logits, &mut self.next_logits);
        self.tokens.extend_from_slice(prompt);
        self.has_logits = true;
        let mut best = 0;
        for (i, &lp) in logprobs.iter().enumerate() {
            if lp > logprobs[best] {
                best = i;
            }
        }
        Ok(best)
    }

    /// The work of [`Session::choose`] inside its transaction: the prompt's logits end in
    /// `next_logits`.
    fn choose_in(
        &mut self,
        n_past: usize,
        base: usize,
        prompt: &[u32],
        options: &[Vec<u32>],
        logprobs: &mut [f64],
    ) -> Result<()> {
        if prompt.is_empty() {
            self.next_logits.copy_from_slice(&self.logits);
        } else {
            self.run_batches(0, n_past, prompt, false, |_, _| {})?;
        }
        self.kv.keep_from(0, base);
        for (o, lp) in options.iter().zip(logprobs.iter_mut()) {
            let mut total = log_softmax_at(&self.next_logits, o[0]);
            self.run_batches(0, base, o, true, |i, logits| {
                if let Some(&next) = o.get(i + 1) {
                    total += log_softmax_at(logits, next);
                }
            })?;
            *lp = total;
        }
        Ok(())
    }

    /// Checks `tokens` as if `ahead` more tokens were already in the context.
    fn check_append_after(&self, ahead: usize, tokens: &[u32]) -> Result<()> {
        let n_vocab = self.model.hparams().n_vocab;
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(Error::InvalidArgument(format!(
                "token id {bad} is outside the vocabulary of {n_vocab}"
            )));
        }
        let n_past = self.tokens.len() + ahead;
        if n_past + tokens.len() > self.params.n_ctx {
            return Err(Error::ContextFull {
                n_past,
                n_new: tokens.len(),
                n_ctx: self.params.n_ctx,
            });
        }
        Ok(())
    }

    /// Bytes [`Session::save`] writes for the current context.
    pub fn state_len(&self) -> usize {
        let logits = if self.has_logits {
            self.logits.len()
        } else {
            0
        };
        STATE_HEADER + 4 * self.tokens.len() + 4 * logits + self.kv.state_len(self.tokens.len()) + 4
    }

    /// Appends the session's state to `out`: the tokens, the KV cache below `n_past` and
    /// the logits, tagged with the model file's identity, the KV type and `n_ctx`, and
    /// checksummed (layout in [`STATE_MAGIC`]'s documentation).
    pub fn save(&self, out: &mut Vec<u8>) -> Result<()> {
        let start = out.len();
        out.try_reserve(self.state_len())
            .map_err(|_| Error::OutOfMemory("session state".into()))?;
        let file = self.model.file();
        let n_past = self.tokens.len();
        let logits: &[f32] = if self.has_logits { &self.logits } else { &[] };
        out.extend_from_slice(STATE_MAGIC);
        out.extend_from_slice(&STATE_VERSION.to_le_bytes());
        out.extend_from_slice(&u32::from(self.has_logits).to_le_bytes());
        out.extend_from_slice(&file.header_crc32c.to_le_bytes());
        out.extend_from_slice(&kv_code(self.params.kv_type).to_le_bytes());
        for v in [
            file.file_len,
            self.params.n_ctx as u64,
            n_past as u64,
            self.model.hparams().n_vocab as u64,
            self.kv.state_len(n_past) as u64,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for t in &self.tokens {
            out.extend_from_slice(&t.to_le_bytes());
        }
        for l in logits {
            out.extend_from_slice(&l.to_le_bytes());
        }
        self.kv.export(n_past, out);
        let crc = pipit_format::crc32c::crc32c(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(())
    }

    /// Replaces the session's context with a state from [`Session::save`]. A state of
    /// another model, KV type or `n_ctx`, or a truncated or altered buffer, is
    /// [`Error::State`] and changes nothing.
    pub fn load(&mut self, bytes: &[u8]) -> Result<()> {
        let bad = |e: StateError| Err(Error::State(e));
        if bytes.len() < STATE_HEADER + 4 {
            return bad(StateError::Truncated);
        }
        if &bytes[..8] != STATE_MAGIC {
            return bad(StateError::BadMagic);
        }
        let u32_at = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let u64_at = |at: usize| u64::from(u32_at(at)) | u64::from(u32_at(at + 4)) << 32;
        let version = u32_at(8);
        if version != STATE_VERSION {
            return bad(StateError::Version(version));
        }
        let (flags, model_crc, kv_type) = (u32_at(12), u32_at(16), u32_at(20));
        let (file_len, n_ctx, n_past, n_vocab, kv_len) =
            (u64_at(24), u64_at(32), u64_at(40), u64_at(48), u64_at(56));
        // The length the header promises (overflow cannot be a buffer's length).
        let n_logits = if flags & 1 != 0 { n_vocab } else { 0 };
        let want = n_past
            .checked_add(n_logits)
            .and_then(|n| n.checked_mul(4))
            .and_then(|n| n.checked_add(kv_len))
            .and_then(|n| n.checked_add(STATE_HEADER as u64 + 4));
        match want {
            Some(w) if w == bytes.len() as u64 => {}
            Some(w) if w < bytes.len() as u64 => return bad(StateError::TrailingBytes),
            _ => return bad(StateError::Truncated),
        }
        let body = &bytes[..bytes.len() - 4];
        if pipit_format::crc32c::crc32c(body) != u32_at(bytes.len() - 4) {
            return bad(StateError::Checksum);
        }
        let file = self.model.file();
        if model_crc != file.header_crc32c || file_len != file.file_len {
            return bad(StateError::OtherModel);
        }
        if kv_type != kv_code(self.params.kv_type) {
            return bad(StateError::KvType);
        }
        if n_ctx != self.params.n_ctx as u64 {
            return bad(StateError::NCtx {
                saved: n_ctx,
                here: self.params.n_ctx,
            });
        }
        let hp_vocab = self.model.hparams().n_vocab;
        if flags > 1 || (flags == 1) != (n_past > 0) {
            return bad(StateError::BadField("flags"));
        }
        if n_vocab != hp_vocab as u64 {
            return bad(StateError::BadField("n_vocab"));
        }
        // n_past <= n_ctx (a usize), so the casts below are exact.
        if n_past > n_ctx {
            return bad(StateError::BadField("n_past"));
        }
        let n_past = n_past as usize;
        if kv_len != self.kv.state_len(n_past) as u64 {
            return bad(StateError::BadField("KV length"));
        }
        let (tokens, rest) = body[STATE_HEADER..].split_at(4 * n_past);
        let (logits, kv) = rest.split_at(4 * n_logits as usize);
        let ids = tokens
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        if ids.clone().any(|t| t as usize >= hp_vocab) {
            return bad(StateError::BadField("token id"));
        }
        // Everything is checked: from here nothing fails.
        self.kv.import(n_past, kv)?;
        self.tokens.clear();
        self.tokens.extend(ids);
        for (l, c) in self.logits.iter_mut().zip(logits.chunks_exact(4)) {
            *l = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        self.has_logits = n_past > 0;
        Ok(())
    }

    /// Samples the next token from the current logits (penalties see the context); does not
    /// append it. Under a constraint only allowed tokens are drawn.
    pub fn sample(&mut self, sampler: &mut Sampler) -> Result<u32> {
        self.sample_within(sampler, None)
    }

    /// [`Session::sample`], with at most `budget_bytes` more bytes of output allowed under
    /// the constraint (`None` = unlimited): only tokens after which the shortest
    /// completion still fits are drawn; `Incomplete` if none is left.
    pub fn sample_within(
        &mut self,
        sampler: &mut Sampler,
        budget_bytes: Option<usize>,
    ) -> Result<u32> {
        self.sample_constrained(sampler, budget_bytes, &[])
    }

    /// [`Session::sample_within`], never drawing a token of `banned` (end-of-generation
    /// tokens under ignore-eos).
    pub fn sample_constrained(
        &mut self,
        sampler: &mut Sampler,
        budget_bytes: Option<usize>,
        banned: &[u32],
    ) -> Result<u32> {
        if !self.has_logits {
            return Err(Error::InvalidArgument(
                "nothing evaluated yet: no logits to sample from".into(),
            ));
        }
        let logits = &self.logits[..];
        let Some(k) = &mut self.constraint else {
            return sampler.sample(logits, &self.tokens);
        };
        k.c.mask(&k.state, budget_bytes, &mut k.mask);
        for &id in banned {
            k.mask.remove(id);
        }
        if k.mask.count() == 0 {
            let need = k.c.min_completion_bytes(&k.state);
            return Err(Error::Incomplete {
                needed_bytes: need.saturating_sub(budget_bytes.unwrap_or(0)).max(1),
            });
        }
        sampler.sample_masked(logits, &self.tokens, Some(k.mask.allowed_tokens()))
    }

    /// Errors with [`Error::Incomplete`] when a constraint is set and the output so far is
    /// not complete under it.
    pub fn check_complete(&self) -> Result<()> {
        match &self.constraint {
            Some(k) if !k.c.is_accepting(&k.state) => Err(Error::Incomplete {
                needed_bytes: k.c.min_completion_bytes(&k.state),
            }),
            _ => Ok(()),
        }
    }
}

/// First bytes of a saved session state. The layout, all little-endian:
/// magic (8) | version u32 | flags u32 (bit 0: logits present) | model header CRC-32C u32 |
/// KV type u32 (0 f16, 1 f32, 2 int8) | model file length u64 | n_ctx u64 | n_past u64 |
/// n_vocab u64 | KV byte count u64 | tokens (n_past u32) | logits (n_vocab f32, when
/// present) | KV rows (`KvCache::export`) | CRC-32C of everything before, u32.
pub const STATE_MAGIC: &[u8; 8] = b"PIPITST\0";
/// The state layout's version.
pub const STATE_VERSION: u32 = 1;
/// Bytes before the tokens.
const STATE_HEADER: usize = 64;

/// The state format's code of a KV type.
fn kv_code(t: KvType) -> u32 {
    match t {
        KvType::F16 => 0,
        KvType::F32 => 1,
        KvType::Int8 => 2,
    }
}

/// The wrapping sum of `words`, in eight independent lanes so that loads, not the adds'
/// latency, bound it (the compiler turns the lanes into vector adds).
fn sum_words(words: &[u64]) -> u64 {
    let mut lanes = [0u64; 8];
    let mut groups = words.chunks_exact(8);
    for g in &mut groups {
        for (lane, &w) in lanes.iter_mut().zip(g) {
            *lane = lane.wrapping_add(w);
        }
    }
    let tail = groups.remainder().iter().fold(0u64, |s, &w| s.wrapping_add(w));
    lanes.iter().fold(tail, |s, &l| s.wrapping_add(l))
}

/// The name of the kernel path sessions use: `PIPIT_KERNELS` if set, else the best this
/// CPU has; an error for an unknown or unavailable `PIPIT_KERNELS`.
pub fn kernel_path() -> Result<&'static str> {
    Ok(kernels::kernels_from_env()?.name)
}

/// The smallest `n_ctx` of a session in which `beams` beams can each generate `n_gen` tokens
/// after a context of `prompt` tokens.
pub fn n_ctx_for_search(prompt: usize, n_gen: usize, beams: usize) -> usize {
    KvCache::n_ctx_for_search(prompt, n_gen, beams)
}

/// Tokens one forward call takes: the parameter, and at least one per search sequence.
fn batch_size(params: &SessionParams) -> usize {
    params.n_batch.max(params.n_seq_max)
}

/// The thread count `n` stands for: itself, or all cores for 0.
fn resolve_threads(n: usize) -> usize {
    match n {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// Errors if any logit is NaN or infinite.
pub(crate) fn check_finite(logits: &[f32]) -> Result<()> {
    // A branch-free pass (it vectorizes) first; the position only when something is wrong.
    if logits.iter().fold(true, |ok, l| ok & l.is_finite()) {
        return Ok(());
    }
    match logits.iter().position(|l| !l.is_finite()) {
        None => Ok(()),
        Some(i) => Err(Error::Numeric(format!("logit {i} is {}", logits[i]))),
    }
}

/// `log softmax(logits)[token]`, in f64 (the same log-sum-exp beam search uses).
pub fn log_softmax_at(logits: &[f32], token: u32) -> f64 {
    f64::from(logits[token as usize]) - beam::log_sum_exp(logits)
}

#[cfg(test)]
mod tests {
    use super::{parse_mem_available, sum_words};

    #[test]
    fn sum_words_adds_every_word_at_any_length_and_alignment() {
        let words: Vec<u64> = (0..40u64).map(|i| i * i + 1).collect();
        for start in [0, 1, 3] {
            for len in [0, 1, 7, 8, 9, 16, 17, 37 - start] {
                let s = &words[start..start + len];
                assert_eq!(sum_words(s), s.iter().sum::<u64>(), "start {start} len {len}");
            }
        }
        assert_eq!(sum_words(&[u64::MAX, 2]), 1, "the sum wraps");
    }

    #[test]
    fn mem_available_is_parsed() {
        let info = "MemTotal:       24576000 kB\nMemFree:  100 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(parse_mem_available(info), Some(20_000_000 * 1024));
        assert_eq!(parse_mem_available("MemTotal: 5 kB\n"), None);
        assert_eq!(parse_mem_available("MemAvailable: x kB\n"), None);
        assert_eq!(parse_mem_available("MemAvailable: 5 MB\n"), None);
        assert!(super::available_memory().is_some_and(|b| b > 0));
    }
}
