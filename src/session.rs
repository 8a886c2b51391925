//! A session: everything of one conversation with a model.
//!
//! It owns the KV cache (sized once from `n_ctx`), the scratch buffers, the logits and the
//! token history, plus a thread pool. Prompts go in batches; decoding is a batch of one.
//! A call that fails leaves the session exactly as it was: the context and the logits only
//! change once a whole call has succeeded.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::forward::{
    self, checked_len, zeroed, Exec, KvCache, KvType, Logits, Precision, Scratch,
};
use crate::kernels::{self, Kernels};
use crate::model::Model;
use crate::sampler::Sampler;
use crate::threadpool::ThreadPool;
use crate::{Error, Result};

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
        }
    }
}

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
        let kv = KvCache::bytes_for(hp, params.n_ctx, params.kv_type).ok_or_else(overflow)?;
        let scratch = Scratch::bytes_for(
            hp,
            params.n_batch,
            params.n_ctx,
            resolve_threads(params.n_threads),
        )
        .ok_or_else(overflow)?;
        // Two logit rows (current and next) and one row per batch token for scoring.
        let logits = checked_len(&[hp.n_vocab, params.n_batch + 2, 4])?;
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
        let kv = KvCache::new(hp, params.n_ctx, params.kv_type)?;
        let scratch = Scratch::new(hp, params.n_batch, params.n_ctx, n_threads)?;
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
            pool: ThreadPool::new(n_threads),
            kern,
            kv,
            scratch,
            params,
            model,
        })
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
        self.tokens.clear();
        self.has_logits = false;
    }

    /// A digest of everything a call may change: the tokens in the context (so n_past), the
    /// KV cache below n_past and the current logits. Equal before and after a call that
    /// failed (the session's rule); equal for two sessions that evaluated the same tokens in
    /// any batching with the int8 path (bit-identical logits and cache).
    pub fn state_digest(&self) -> u64 {
        let mut h = forward::FNV_OFFSET;
        h = forward::fnv1a(h, &(self.tokens.len() as u64).to_le_bytes());
        h = forward::fnv1a(h, bytemuck::cast_slice(&self.tokens));
        h = self.kv.digest_below(self.tokens.len(), h);
        match self.logits() {
            Some(l) => forward::fnv1a(h, bytemuck::cast_slice(l)),
            None => forward::fnv1a(h, b"no logits"),
        }
    }

    /// Logits after the last token of the context, if any token was evaluated.
    pub fn logits(&self) -> Option<&[f32]> {
        self.has_logits.then_some(&self.logits[..])
    }

    /// Checks that `tokens` can be appended: non-empty, known ids, room in the context.
    fn check_append(&self, tokens: &[u32]) -> Result<()> {
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

    /// Appends `tokens` to the context and leaves the logits of the last one.
    pub fn eval(&mut self, tokens: &[u32]) -> Result<()> {
        self.check_append(tokens)?;
        let ex = Exec {
            model: &self.model,
            kern: self.kern,
            pool: &self.pool,
            precision: self.params.precision,
        };
        let n_past = self.tokens.len();
        let n_batches = tokens.len().div_ceil(self.params.n_batch);
        for (b, batch) in tokens.chunks(self.params.n_batch).enumerate() {
            self.check_cancel()?;
            let want = if b + 1 == n_batches {
                Logits::Last
            } else {
                Logits::None
            };
            let pos = n_past + b * self.params.n_batch;
            forward::forward(
                &ex,
                &mut self.kv,
                &mut self.scratch,
                batch,
                pos,
                want,
                &mut self.next_logits,
            );
        }
        check_finite(&self.next_logits)?;
        std::mem::swap(&mut self.logits, &mut self.next_logits);
        self.tokens.extend_from_slice(tokens);
        self.has_logits = true;
        Ok(())
    }

    /// Appends `tokens` like [`Session::eval`], calling `f(i, logits)` with the logits after
    /// each `tokens[i]` (the distribution of the token that follows it).
    pub fn eval_all(&mut self, tokens: &[u32], mut f: impl FnMut(usize, &[f32])) -> Result<()> {
        self.check_append(tokens)?;
        let n_vocab = self.model.hparams().n_vocab;
        if self.all_logits.is_empty() {
            self.all_logits = zeroed(checked_len(&[self.params.n_batch, n_vocab])?)?;
        }
        // The context only grows once every batch succeeded; `f` may have seen the logits of
        // earlier batches when a later one fails.
        let ex = Exec {
            model: &self.model,
            kern: self.kern,
            pool: &self.pool,
            precision: self.params.precision,
        };
        let n_past = self.tokens.len();
        for (b, batch) in tokens.chunks(self.params.n_batch).enumerate() {
            self.check_cancel()?;
            let pos = n_past + b * self.params.n_batch;
            forward::forward(
                &ex,
                &mut self.kv,
                &mut self.scratch,
                batch,
                pos,
                Logits::All,
                &mut self.all_logits,
            );
            let rows = &self.all_logits[..batch.len() * n_vocab];
            check_finite(rows)?;
            for (i, row) in rows.chunks_exact(n_vocab).enumerate() {
                f(b * self.params.n_batch + i, row);
            }
            if b * self.params.n_batch + batch.len() == tokens.len() {
                self.logits
                    .copy_from_slice(&rows[(batch.len() - 1) * n_vocab..]);
            }
        }
        self.tokens.extend_from_slice(tokens);
        self.has_logits = true;
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

    /// Samples the next token from the current logits (penalties see the context); does not
    /// append it.
    pub fn sample(&self, sampler: &mut Sampler) -> Result<u32> {
        let logits = self.logits().ok_or_else(|| {
            Error::InvalidArgument("nothing evaluated yet: no logits to sample from".into())
        })?;
        sampler.sample(logits, &self.tokens)
    }
}

/// The thread count `n` stands for: itself, or all cores for 0.
fn resolve_threads(n: usize) -> usize {
    match n {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

#[cfg(test)]
mod tests {
    use super::parse_mem_available;

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

/// Errors if any logit is NaN or infinite.
fn check_finite(logits: &[f32]) -> Result<()> {
    match logits.iter().position(|l| !l.is_finite()) {
        None => Ok(()),
        Some(i) => Err(Error::Numeric(format!("logit {i} is {}", logits[i]))),
    }
}

/// `log softmax(logits)[token]`, computed in f64.
pub fn log_softmax_at(logits: &[f32], token: u32) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits
        .iter()
        .map(|&l| (f64::from(l) - f64::from(max)).exp())
        .sum();
    f64::from(logits[token as usize]) - f64::from(max) - sum.ln()
}
