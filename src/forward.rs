//! The transformer forward pass of a decoder-only model (llama family and Gemma 3).
//!
//! [`forward`] reads top to bottom like llama2.c's: embed, then per layer attention and
//! feed-forward blocks with residuals, then the final norm and the output head. It processes
//! a batch of consecutive tokens at once (prefill is matrix-matrix work, decode is the batch
//! of one), writes their keys and values into the KV cache and leaves the logits wanted.
//! Every buffer lives in [`Scratch`] and [`KvCache`], sized when the session is created, so a
//! call allocates nothing.

use crate::kernels::{BlockQ8A, Glu, Kernels, QMatrix};
pub use crate::kv::KvType;
use crate::kv::{KvCache, Span, PAGE};
use crate::mem::{checked_len, try_vec, zeroed};
use crate::model::{Activation, HParams, Model, RopePairs, RopeScaling, Tensor};
use crate::threadpool::ThreadPool;
use crate::{Error, Result};

/// How activations meet quantized weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Activations are quantized to int8 blocks for integer dot products (fast; the default).
    #[default]
    Int8,
    /// Activations stay f32 and weights are dequantized on the fly (reference accuracy).
    F32,
}

/// The activations of one forward call of up to `n_batch` tokens (llama2.c's RunState).
#[derive(Debug)]
pub struct Scratch {
    /// Most tokens one call takes.
    pub n_batch: usize,
    /// Residual stream: [n_batch, d_model].
    x: Vec<f32>,
    /// Normed block input, and block output before the residual add: [n_batch, d_model].
    xb: Vec<f32>,
    /// Quantized matmul input: [n_batch, max(d_model, q_dim, d_ff) / 32].
    xq: Vec<BlockQ8A>,
    /// Queries: [n_batch, n_head * head_dim].
    q: Vec<f32>,
    /// New keys and values: [n_batch, kv_dim].
    k: Vec<f32>,
    v: Vec<f32>,
    /// Attention output, before the output projection: [n_batch, n_head * head_dim].
    att_out: Vec<f32>,
    /// Attention work space, one slab per thread ([`attention`] says what a slab holds):
    /// [n_slabs][att_slab_len] floats and [n_slabs][att_slab_q8] quantized query blocks.
    n_slabs: usize,
    att_slab_len: usize,
    att_slab_q8: usize,
    att: Vec<f32>,
    att_q: Vec<BlockQ8A>,
    /// FFN gate and up projections: [n_batch, d_ff].
    gate: Vec<f32>,
    up: Vec<f32>,
    /// RoPE cos and sin per token of the batch, for the global and the local base:
    /// [2][n_batch][rope_dim / 2].
    rope_cos: Vec<f32>,
    rope_sin: Vec<f32>,
    /// Inverse frequencies of the rotated pairs for both bases: [2][rope_dim / 2].
    inv_freq: Vec<f64>,
    /// Position of each batch token in its sequence: [n_batch].
    pos: Vec<usize>,
    /// Attention's runs of the call: up to [`ATT_TOKENS`] tokens of one span, as (span, first
    /// token, end token) batch indices; capacity n_batch.
    att_runs: Vec<(usize, usize, usize)>,
    /// Runs that attend together, as ranges of `att_runs`: one run of a prompt, or the
    /// single tokens at one position of several sequences (a beam step), which read the pages
    /// their sequences share once; capacity n_batch.
    att_groups: Vec<(usize, usize)>,
}

impl Scratch {
    /// Bytes the scratch of a batch of `n_batch` tokens and a context of `n_ctx` takes, with
    /// attention work space for `n_slabs` threads.
    pub fn bytes_for(hp: &HParams, n_batch: usize, n_ctx: usize, n_slabs: usize) -> Option<usize> {
        let q_dim = hp.n_head.checked_mul(hp.head_dim)?;
        let kv_dim = hp.n_kv_head.checked_mul(hp.head_dim)?;
        let widest = hp.d_model.max(q_dim).max(hp.d_ff);
        let half = hp.rope_dim / 2;
        // x, xb, q, k, v, att_out, gate, up, rope_cos, rope_sin; xq; pos, att_runs and
        // att_groups.
        let per_token = (2 * hp.d_model + 2 * q_dim + 2 * kv_dim + 2 * hp.d_ff + 4 * half)
            * size_of::<f32>()
            + widest / 32 * size_of::<BlockQ8A>()
            + size_of::<usize>()
            + size_of::<(usize, usize, usize)>()
            + size_of::<(usize, usize)>();
        let (f32s, q8s) = att_slab(hp, n_ctx)?;
        let slab = f32s
            .checked_mul(size_of::<f32>())?
            .checked_add(q8s.checked_mul(size_of::<BlockQ8A>())?)?;
        per_token
            .checked_mul(n_batch)?
            .checked_add(slab.checked_mul(n_slabs)?)?
            .checked_add(2 * half * size_of::<f64>())
    }

    /// Bytes these buffers allocated: what [`Scratch::bytes_for`] gives for their sizes.
    pub fn bytes(&self) -> usize {
        fn b<T>(v: &Vec<T>) -> usize {
            v.capacity() * size_of::<T>()
        }
        [&self.x, &self.xb, &self.q, &self.k, &self.v, &self.att_out, &self.att]
            .iter()
            .chain([&self.gate, &self.up, &self.rope_cos, &self.rope_sin].iter())
            .map(|v| b(v))
            .sum::<usize>()
            + b(&self.xq)
            + b(&self.att_q)
            + b(&self.inv_freq)
            + b(&self.pos)
            + b(&self.att_runs)
            + b(&self.att_groups)
    }

    /// Buffers for batches of up to `n_batch` tokens over a context of `n_ctx`, with
    /// attention work space for `n_slabs` threads.
    pub fn new(hp: &HParams, n_batch: usize, n_ctx: usize, n_slabs: usize) -> Result<Self> {
        let overflow = || {
            Error::OutOfMemory(format!(
                "attention work space for n_ctx = {n_ctx} overflows"
            ))
        };
        let (att_slab_len, att_slab_q8) = att_slab(hp, n_ctx).ok_or_else(overflow)?;
        let q_dim = hp.n_head * hp.head_dim;
        let kv_dim = hp.n_kv_head * hp.head_dim;
        let widest = hp.d_model.max(q_dim).max(hp.d_ff);
        let half = hp.rope_dim / 2;
        // Per-pair divisors of the frequencies (Llama 3; Phi-3 LongRoPE picks its short or
        // long set by the context, as llama.cpp does).
        let factors = match &hp.rope_scaling {
            RopeScaling::Llama3 { factors } => Some(factors),
            RopeScaling::LongRope {
                short,
                long,
                ctx_orig,
                ..
            } => Some(if n_ctx > *ctx_orig { long } else { short }),
            RopeScaling::None | RopeScaling::Linear => None,
        };
        let mut inv_freq = try_vec(2 * half)?;
        for theta in [hp.rope_theta, hp.rope_theta_local] {
            let theta = f64::from(theta);
            inv_freq.extend((0..half).map(|i| {
                let f = theta.powf(-2.0 * i as f64 / hp.rope_dim as f64);
                f / factors.map_or(1.0, |fs| f64::from(fs[i]))
            }));
        }
        Ok(Scratch {
            n_batch,
            x: zeroed(checked_len(&[n_batch, hp.d_model])?)?,
            xb: zeroed(checked_len(&[n_batch, hp.d_model])?)?,
            xq: zeroed(checked_len(&[n_batch, widest / 32])?)?,
            q: zeroed(checked_len(&[n_batch, q_dim])?)?,
            k: zeroed(checked_len(&[n_batch, kv_dim])?)?,
            v: zeroed(checked_len(&[n_batch, kv_dim])?)?,
            att_out: zeroed(checked_len(&[n_batch, q_dim])?)?,
            n_slabs,
            att_slab_len,
            att_slab_q8,
            att: zeroed(checked_len(&[n_slabs, att_slab_len])?)?,
            att_q: zeroed(checked_len(&[n_slabs, att_slab_q8])?)?,
            gate: zeroed(checked_len(&[n_batch, hp.d_ff])?)?,
            up: zeroed(checked_len(&[n_batch, hp.d_ff])?)?,
            rope_cos: zeroed(checked_len(&[2, n_batch, half])?)?,
            rope_sin: zeroed(checked_len(&[2, n_batch, half])?)?,
            inv_freq,
            pos: zeroed(n_batch)?,
            att_runs: try_vec(n_batch)?,
            att_groups: try_vec(n_batch)?,
        })
    }
}

/// Which logits a forward call leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// None (a prompt batch that is not the last).
    None,
    /// The last token's: `logits[..n_vocab]`.
    Last,
    /// Every token's: `logits[t * n_vocab..(t + 1) * n_vocab]`.
    All,
}

/// What a forward call runs on: the model, the kernel table, the thread pool and the mode.
pub struct Exec<'a> {
    pub model: &'a Model,
    pub kern: &'static Kernels,
    pub pool: &'a ThreadPool,
    pub precision: Precision,
}

impl Exec<'_> {
    /// out[t, r] = W[r] . x[t] for the `n` rows of x ([n, cols]); out is [n, rows].
    fn matmul(&self, w: &Tensor, x: &[f32], n: usize, out: &mut [f32], xq: &mut [BlockQ8A]) {
        let qm = QMatrix {
            dtype: w.dtype,
            rows: w.rows,
            cols: w.cols,
            data: self.model.data(w),
        };
        let x = &x[..n * w.cols];
        let out = &mut out[..n * w.rows];
        let quantized = w.dtype.is_quantized();
        if quantized && self.precision == Precision::Int8 {
            let xq = &mut xq[..n * w.cols / 32];
            self.kern.quantize_act(x, xq);
            self.kern.matmul_q8a_par(self.pool, &qm, xq, n, out, w.rows);
        } else {
            self.kern.matmul_f32_par(self.pool, &qm, x, n, out, w.rows);
        }
    }

    /// Several matmuls of the same input `x` ([n, cols]): `outs[i] = x . W_i^T`. The input is
    /// quantized once; for one token (decode) the rows of all the matrices are split across
    /// the pool in a single dispatch, so q/k/v (or gate/up) cost one synchronisation.
    fn matmul_same_input<const K: usize>(
        &self,
        ws: [&Tensor; K],
        x: &[f32],
        n: usize,
        outs: [&mut [f32]; K],
        xq: &mut [BlockQ8A],
    ) {
        let quantized = ws.iter().all(|w| w.dtype.is_quantized());
        let cols = ws[0].cols;
        if !quantized || self.precision != Precision::Int8 || ws.iter().any(|w| w.cols != cols) {
            for (w, out) in ws.into_iter().zip(outs) {
                self.matmul(w, x, n, out, xq);
            }
            return;
        }
        let xq = &mut xq[..n * cols / 32];
        self.kern.quantize_act(&x[..n * cols], xq);
        let xq = &*xq;
        let mats = ws.map(|w| QMatrix {
            dtype: w.dtype,
            rows: w.rows,
            cols,
            data: self.model.data(w),
        });
        if n > 1 {
            for (m, out) in mats.iter().zip(outs) {
                self.kern
                    .matmul_q8a_par(self.pool, m, xq, n, &mut out[..n * m.rows], m.rows);
            }
            return;
        }
        // One token: out_i[r] for the rows of every matrix, in chunks of CHUNK rows.
        const CHUNK: usize = 256;
        let ptrs = outs.map(|o| SharedMut(o.as_mut_ptr()));
        let chunks: [usize; K] = mats.map(|m| m.rows.div_ceil(CHUNK));
        let n_tasks: usize = chunks.iter().sum();
        let task = |mut i: usize| {
            let mut k = 0;
            while i >= chunks[k] {
                i -= chunks[k];
                k += 1;
            }
            let m = &mats[k];
            let (a, b) = (i * CHUNK, ((i + 1) * CHUNK).min(m.rows));
            let rb = m.row_bytes();
            let sub = QMatrix {
                dtype: m.dtype,
                rows: b - a,
                cols,
                data: &m.data[a * rb..b * rb],
            };
            // SAFETY: rows a..b of matrix k belong to this task alone (chunks are disjoint),
            // and out_k, exclusively borrowed for the call, holds at least m.rows floats.
            let out = unsafe { std::slice::from_raw_parts_mut(ptrs[k].get().add(a), b - a) };
            self.kern.matmul_q8a(&sub, xq, 1, out, b - a, 0..b - a);
        };
        self.pool.run(n_tasks, &task);
    }

    /// Adds a bias row to each of the `n` rows of `y`.
    /// Calls `f(first_row, rows)` on `data` cut into whole rows of `row_len` floats, spread
    /// over the pool when there are enough rows to pay for a dispatch (prefill), else inline.
    fn par_rows(&self, data: &mut [f32], row_len: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
        const MIN_ROWS: usize = 4;
        assert!(row_len > 0 && data.len().is_multiple_of(row_len));
        let n_rows = data.len() / row_len;
        let threads = self.pool.n_threads();
        if threads <= 1 || n_rows < MIN_ROWS {
            f(0, data);
            return;
        }
        let per_task = n_rows.div_ceil(threads);
        let n_tasks = n_rows.div_ceil(per_task);
        let base = SharedMut(data.as_mut_ptr());
        self.pool.run(n_tasks, &|i| {
            let r0 = i * per_task;
            let r1 = (r0 + per_task).min(n_rows);
            // SAFETY: task i gets rows r0..r1 of `data`, disjoint from every other task's and
            // inside `data` (r1 <= n_rows), which is exclusively borrowed until `run` returns.
            let rows = unsafe {
                std::slice::from_raw_parts_mut(base.get().add(r0 * row_len), (r1 - r0) * row_len)
            };
            f(r0, rows)
        });
    }

    /// [`rmsnorm`] of the `n` rows of `x` into `out`, in parallel for batches.
    fn rmsnorm(&self, out: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
        let d = w.len();
        self.par_rows(out, d, |r0, o| {
            rmsnorm(o, &x[r0 * d..r0 * d + o.len()], w, eps)
        });
    }

    /// [`rmsnorm_inplace`] of the rows of `x`, in parallel for batches.
    fn rmsnorm_inplace(&self, x: &mut [f32], w: &[f32], eps: f32) {
        self.par_rows(x, w.len(), |_, rows| rmsnorm_inplace(rows, w, eps));
    }

    fn add_bias(&self, y: &mut [f32], bias: Option<&Tensor>, n: usize) {
        let Some(b) = bias else { return };
        let b = self.model.f32s(b);
        for row in y[..n * b.len()].chunks_exact_mut(b.len()) {
            row.iter_mut().zip(b).for_each(|(y, b)| *y += b);
        }
    }
}

/// Sum of squares in f64, in 8 interleaved partial sums (so it vectorizes and is not one long
/// dependency chain); each square is exact in f64.
#[inline(always)]
fn sum_sq(x: &[f32]) -> f64 {
    let mut acc = [0.0f64; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f64::from(v) * f64::from(v);
        }
    }
    for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
        *a += f64::from(v) * f64::from(v);
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// RMSNorm of each `w.len()`-wide row of `x` into `out`: out = x / rms(x) * w.
fn rmsnorm(out: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
    for (o, x) in out.chunks_exact_mut(w.len()).zip(x.chunks_exact(w.len())) {
        let ss = sum_sq(x);
        let scale = (1.0 / (ss / x.len() as f64 + f64::from(eps)).sqrt()) as f32;
        for ((o, &x), &w) in o.iter_mut().zip(x).zip(w) {
            *o = x * scale * w;
        }
    }
}

/// RMSNorm in place of each `w.len()`-wide row of `x`.
fn rmsnorm_inplace(x: &mut [f32], w: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(w.len()) {
        let ss = sum_sq(row);
        let scale = (1.0 / (ss / row.len() as f64 + f64::from(eps)).sqrt()) as f32;
        row.iter_mut()
            .zip(w)
            .for_each(|(x, &w)| *x = *x * scale * w);
    }
}

/// Rotates the first `2 * cos.len()` dimensions of one head vector by the position's angles.
fn rope(head: &mut [f32], cos: &[f32], sin: &[f32], pairs: RopePairs) {
    let half = cos.len();
    for i in 0..half {
        let (a, b) = match pairs {
            RopePairs::Adjacent => (2 * i, 2 * i + 1),
            RopePairs::Half => (i, i + half),
        };
        let (x0, x1) = (head[a], head[b]);
        head[a] = x0 * cos[i] - x1 * sin[i];
        head[b] = x0 * sin[i] + x1 * cos[i];
    }
}

/// A raw pointer shared by the tasks of one parallel attention call.
#[derive(Clone, Copy)]
struct SharedMut<T>(*mut T);
// SAFETY: `attention` hands each task disjoint parts of the pointee (its own slab and the
// output rows of its own (token, kv head) pairs), and the pointee outlives `pool.run`.
unsafe impl<T> Sync for SharedMut<T> {}
unsafe impl<T> Send for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// The pointer (a method, so closures capture the whole `Sync` wrapper).
    fn get(self) -> *mut T {
        self.0
    }
}

/// Batch tokens one attention work item takes at most (bounds the scores in a slab).
const ATT_TOKENS: usize = 16;

/// Sizes of one thread's attention slab for a context of `n_ctx`: (f32s, quantized query
/// blocks). The f32s hold, in order: queries and outputs of a work item
/// ([ATT_TOKENS * heads_per_kv][head_dim] each), the values of the window as f32
/// [n_ctx][head_dim] and the scores [ATT_TOKENS * heads_per_kv][n_ctx].
fn att_slab(hp: &HParams, n_ctx: usize) -> Option<(usize, usize)> {
    let rows = ATT_TOKENS.checked_mul(hp.n_head / hp.n_kv_head.max(1))?;
    let io = rows.checked_mul(hp.head_dim)?;
    let f32s = io
        .checked_mul(2)?
        .checked_add(hp.head_dim.checked_mul(n_ctx)?)?
        .checked_add(rows.checked_mul(n_ctx)?)?;
    Some((f32s, io / 32))
}

/// Fills `s.att_groups` from `s.att_runs`: a prompt's run attends alone; a stretch of
/// single-token spans at one position (the beams of a search step) attends together, cut
/// into as few groups as keep the threads evenly loaded (items are kv heads x groups).
fn group_runs(s: &mut Scratch, spans: &[Span], n_kv_head: usize) {
    let runs = &s.att_runs;
    let single = |r: usize| spans[runs[r].0].n == 1;
    s.att_groups.clear();
    let mut r = 0;
    while r < runs.len() {
        let mut end = r + 1;
        if single(r) {
            let pos = spans[runs[r].0].pos;
            while end < runs.len() && single(end) && spans[runs[end].0].pos == pos {
                end += 1;
            }
        }
        // The fewest groups of at most ATT_TOKENS runs whose count times the kv heads is a
        // multiple of the threads (one group per run when none is).
        let m = end - r;
        let parts = (m.div_ceil(ATT_TOKENS)..=m)
            .find(|p| (p * n_kv_head).is_multiple_of(s.n_slabs))
            .unwrap_or(m);
        for i in 0..parts {
            s.att_groups
                .push((r + i * m / parts, r + (i + 1) * m / parts));
        }
        r = end;
    }
}

/// Attention of the batch's tokens at layer `l`. A work item is one kv head and one group of
/// runs ([`group_runs`]): a run of up to [`ATT_TOKENS`] consecutive tokens of one sequence,
/// or the single tokens at one position of several sequences. Its query heads' scores
/// against the keys of the window are a matmul per cache page (the keys of a kv head inside a
/// page are a matrix); pages the group's sequences share are read once for all of them. Then
/// causal (and sliding-window) masking and softmax per row, then each token's weighted sum of
/// the value rows of exactly its own window ([`Kernels::wsum`]; the kernels give a row the
/// same bits whatever else is in the call, so results depend neither on how the batch was cut
/// nor on the other sequences in it). Items are split across the thread pool, each thread
/// with its own work space slab.
fn attention(ex: &Exec, kv: &KvCache, s: &mut Scratch, spans: &[Span], l: usize) {
    let hp = ex.model.hparams();
    let hd = hp.head_dim;
    let heads_per_kv = hp.n_head / hp.n_kv_head;
    // One token's query heads of one kv head: a block of this many floats.
    let token_q = heads_per_kv * hd;
    let q_dim = hp.n_head * hd;
    let n_groups = s.att_groups.len();
    let n_items = hp.n_kv_head * n_groups;
    let n_tasks = s.n_slabs.min(n_items);
    let per_task = n_items.div_ceil(n_tasks);
    let (f_len, q_len) = (s.att_slab_len, s.att_slab_q8);
    let slab_f = SharedMut(s.att.as_mut_ptr());
    let slab_q = SharedMut(s.att_q.as_mut_ptr());
    let att_out = SharedMut(s.att_out.as_mut_ptr());
    let q = &s.q[..];
    let (runs, groups) = (&s.att_runs[..], &s.att_groups[..]);
    let positions = &s.pos[..];
    // Query (or output) rows of one item: ATT_TOKENS tokens x the heads of one kv head.
    let item_len = ATT_TOKENS * token_q;
    let int8_keys = kv.kv_type == crate::kv::KvType::Int8;

    let task = |i: usize| {
        // SAFETY: task i alone uses slab i of `att` and `att_q` (i < n_tasks <= n_slabs, and
        // each holds n_slabs slabs), and `s` is exclusively borrowed for the call.
        let (slab, slab_q8) = unsafe {
            (
                std::slice::from_raw_parts_mut(slab_f.get().add(i * f_len), f_len),
                std::slice::from_raw_parts_mut(slab_q.get().add(i * q_len), q_len),
            )
        };
        // The slab, in order: queries, outputs, the window's values as f32, the scores.
        let (queries, rest) = slab.split_at_mut(item_len);
        let (outputs, rest) = rest.split_at_mut(item_len);
        let (values, scores) = rest.split_at_mut(hd * kv.n_ctx);
        for item in i * per_task..((i + 1) * per_task).min(n_items) {
            let (kv_head, group) = (item / n_groups, item % n_groups);
            let group = &runs[groups[group].0..groups[group].1];
            // Every run of a group covers the same positions (it is one run, or single
            // tokens at one position), so they share the window and the masks.
            let (_, t0, t1) = group[0];
            let seq_of = |run: &(usize, usize, usize)| spans[run.0].seq;
            let (first_pos, last_pos) = (positions[t0], positions[t1 - 1]);
            let start = kv.window_start(l, first_pos);
            let width = last_pos + 1 - start;
            // Score rows of one run, and of the group: one per (token, head).
            let run_rows = (t1 - t0) * heads_per_kv;
            let rows = group.len() * run_rows;

            // The item's queries, run after run, token after token.
            let mut at = 0;
            for &(_, a, b) in group {
                let from = a * q_dim + kv_head * token_q;
                for t in 0..b - a {
                    queries[at..at + token_q].copy_from_slice(&q[from + t * q_dim..][..token_q]);
                    at += token_q;
                }
            }
            let (queries, scores) = (&queries[..rows * hd], &mut scores[..rows * width]);
            let queries_q8 = &mut slab_q8[..rows * hd / 32];
            if int8_keys {
                ex.kern.quantize_act(queries, queries_q8);
            }
            let queries_q8 = &*queries_q8;
            let scores_of = |keys: &QMatrix, x: std::ops::Range<usize>, out: &mut [f32]| {
                let n = x.len() / hd;
                if int8_keys {
                    let xq = &queries_q8[x.start / 32..x.end / 32];
                    ex.kern.matmul_q8a(keys, xq, n, out, width, 0..keys.rows);
                } else {
                    ex.kern
                        .matmul_f32(keys, &queries[x], n, out, width, 0..keys.rows);
                }
            };

            // The pages every sequence of the group reads (the prompt under a beam search):
            // scores of all rows at once, and the values as f32 rows, once for the group.
            let mut shared = start;
            while shared <= last_pos
                && group[1..]
                    .iter()
                    .all(|r| kv.same_page(seq_of(&group[0]), seq_of(r), l, shared))
            {
                shared = (shared / PAGE + 1) * PAGE;
            }
            let shared = shared.min(last_pos + 1);
            let values = &mut values[..width * hd];
            kv.for_each_run(
                seq_of(&group[0]),
                l,
                kv_head,
                start..shared,
                |p, keys, vals| {
                    let col = p - start;
                    scores_of(&keys, 0..rows * hd, &mut scores[col..]);
                    ex.kern
                        .dequant_rows(&vals, &mut values[col * hd..(col + vals.rows) * hd]);
                },
            );
            // The rest of the window, each run against its own pages.
            for (j, run) in group.iter().enumerate() {
                kv.for_each_run(
                    seq_of(run),
                    l,
                    kv_head,
                    shared..last_pos + 1,
                    |p, keys, _| {
                        let out = &mut scores[j * run_rows * width + p - start..];
                        scores_of(&keys, j * run_rows * hd..(j + 1) * run_rows * hd, out);
                    },
                );
            }

            // Each row keeps the positions its token may see, scaled and normalized.
            for (r, row) in scores.chunks_exact_mut(width).enumerate() {
                let pos = first_pos + r % run_rows / heads_per_kv;
                let (lo, hi) = (kv.window_start(l, pos) - start, pos + 1 - start);
                row[..lo].fill(0.0);
                row[hi..].fill(0.0);
                let seen = &mut row[lo..hi];
                // Soft-capping of the scores (Gemma 2): c * tanh(s / c).
                if let Some(c) = hp.attn_softcap {
                    seen.iter_mut()
                        .for_each(|v| *v = (*v * hp.attn_scale / c).tanh() * c);
                    ex.kern.softmax(seen, 1.0);
                } else {
                    ex.kern.softmax(seen, hp.attn_scale);
                }
            }

            // Weighted sums of the value rows: each (token, head) row over exactly its own
            // window, in position order, so its bits do not depend on how the batch was cut.
            // The heads of one token share its window, so they share one pass over it. Each
            // run first puts the values of its own pages after the shared ones.
            let outputs = &mut outputs[..rows * hd];
            // Tokens of the group done so far.
            let mut done = 0;
            for run in group {
                kv.for_each_run(
                    seq_of(run),
                    l,
                    kv_head,
                    shared..last_pos + 1,
                    |p, _, vals| {
                        let col = p - start;
                        ex.kern
                            .dequant_rows(&vals, &mut values[col * hd..(col + vals.rows) * hd]);
                    },
                );
                for &pos in &positions[run.1..run.2] {
                    let (lo, hi) = (kv.window_start(l, pos) - start, pos + 1 - start);
                    let weights = &scores[done * heads_per_kv * width + lo..];
                    let out = &mut outputs[done * token_q..(done + 1) * token_q];
                    ex.kern
                        .wsum(weights, width, &values[lo * hd..hi * hd], out, hd);
                    done += 1;
                }
            }
            let tokens = group.iter().flat_map(|&(_, a, b)| a..b);
            for (t, out_rows) in tokens.zip(outputs.chunks_exact(token_q)) {
                // SAFETY: the output of (token t, kv head) belongs to this item alone, and
                // items are split into disjoint ranges across tasks.
                let out = unsafe {
                    std::slice::from_raw_parts_mut(
                        att_out.get().add(t * q_dim + kv_head * token_q),
                        token_q,
                    )
                };
                out.copy_from_slice(out_rows);
            }
        }
    };
    ex.pool.run(n_tasks, &task);
}

/// Runs `tokens` (ids already checked < n_vocab) through the model. They belong to the
/// sequences of `spans`, in order: span i's `n` tokens sit at consecutive positions from its
/// `pos` (a prompt is one span; a beam step is one span of one token per beam). Their keys and
/// values land in `kv`, whose pages for them must be prepared ([`KvCache::prepare`]).
/// `tokens.len()` (the spans' total) is at most `s.n_batch`, each span ends within `kv.n_ctx`,
/// and no two spans write the same sequence (the session checks all three). `logits` must
/// hold n_vocab floats for [`Logits::Last`], n_vocab per token for [`Logits::All`].
pub fn forward(
    ex: &Exec,
    kv: &mut KvCache,
    s: &mut Scratch,
    tokens: &[u32],
    spans: &[Span],
    want: Logits,
    logits: &mut [f32],
) {
    let model = ex.model;
    let hp = model.hparams();
    let w = model.weights();
    let n = tokens.len();
    let d = hp.d_model;
    let hd = hp.head_dim;
    let q_dim = hp.n_head * hd;
    let kv_dim = hp.n_kv_head * hd;
    let half = hp.rope_dim / 2;

    // Each token's position, and attention's runs: up to ATT_TOKENS tokens of one span.
    s.att_runs.clear();
    let mut t = 0;
    for (i, span) in spans.iter().enumerate() {
        for j in 0..span.n {
            s.pos[t + j] = span.pos + j;
        }
        for r in (0..span.n).step_by(ATT_TOKENS) {
            s.att_runs
                .push((i, t + r, t + (r + ATT_TOKENS).min(span.n)));
        }
        t += span.n;
    }
    debug_assert_eq!(t, n, "the spans cover the batch");
    group_runs(s, spans, hp.n_kv_head);

    // Token embeddings, scaled as the architecture asks.
    let embd = QMatrix {
        dtype: w.token_embd.dtype,
        rows: w.token_embd.rows,
        cols: d,
        data: model.data(&w.token_embd),
    };
    for (t, &tok) in tokens.iter().enumerate() {
        let x = &mut s.x[t * d..(t + 1) * d];
        ex.kern.dequant_row(&embd, tok as usize, x);
        if hp.embed_scale != 1.0 {
            x.iter_mut().for_each(|v| *v *= hp.embed_scale);
        }
    }

    // RoPE angles of each batch position, for the global [0] and the local [1] base; LongRoPE
    // also scales the magnitude of cos and sin.
    let mscale = match hp.rope_scaling {
        RopeScaling::LongRope { attn_factor, .. } => f64::from(attn_factor),
        _ => 1.0,
    };
    for base in 0..2 {
        for t in 0..n {
            let pos = s.pos[t] as f64 / f64::from(hp.rope_scale);
            for i in 0..half {
                let angle = pos * s.inv_freq[base * half + i];
                let at = (base * s.n_batch + t) * half + i;
                s.rope_cos[at] = (angle.cos() * mscale) as f32;
                s.rope_sin[at] = (angle.sin() * mscale) as f32;
            }
        }
    }

    for (l, lw) in w.layers.iter().enumerate() {
        let sliding = hp.layer_sliding[l];

        // Attention block: norm, then q, k, v projections (with biases when the model has them).
        ex.rmsnorm(
            &mut s.xb[..n * d],
            &s.x[..n * d],
            model.f32s(&lw.attn_norm),
            hp.norm_eps,
        );
        ex.matmul_same_input(
            [&lw.wq, &lw.wk, &lw.wv],
            &s.xb,
            n,
            [&mut s.q, &mut s.k, &mut s.v],
            &mut s.xq,
        );
        ex.add_bias(&mut s.q, lw.bq.as_ref(), n);
        ex.add_bias(&mut s.k, lw.bk.as_ref(), n);
        ex.add_bias(&mut s.v, lw.bv.as_ref(), n);

        // Per-head norms of queries and keys (Gemma 3).
        if let Some(qn) = &lw.q_norm {
            ex.rmsnorm_inplace(&mut s.q[..n * q_dim], model.f32s(qn), hp.norm_eps);
        }
        if let Some(kn) = &lw.k_norm {
            ex.rmsnorm_inplace(&mut s.k[..n * kv_dim], model.f32s(kn), hp.norm_eps);
        }

        // Rotary position embedding of queries and keys, then keys and values into the cache.
        let base = usize::from(sliding);
        for t in 0..n {
            let at = (base * s.n_batch + t) * half;
            let (cos, sin) = (&s.rope_cos[at..at + half], &s.rope_sin[at..at + half]);
            for head in s.q[t * q_dim..(t + 1) * q_dim].chunks_exact_mut(hd) {
                rope(head, cos, sin, hp.rope_pairs);
            }
            for head in s.k[t * kv_dim..(t + 1) * kv_dim].chunks_exact_mut(hd) {
                rope(head, cos, sin, hp.rope_pairs);
            }
        }
        let mut t = 0;
        for span in spans {
            for pos in span.pos..span.pos + span.n {
                for kvh in 0..hp.n_kv_head {
                    let head = t * kv_dim + kvh * hd..t * kv_dim + (kvh + 1) * hd;
                    let (k, v) = (&s.k[head.clone()], &s.v[head]);
                    kv.put(ex.kern, span.seq, l, kvh, pos, k, v, &mut s.xq);
                }
                t += 1;
            }
        }

        // Grouped-query causal attention: each head attends to the positions up to its own
        // (the last `sliding_window` of them on sliding layers).
        attention(ex, kv, s, spans, l);

        // Output projection, optional post-attention norm (Gemma 3), residual.
        ex.matmul(&lw.wo, &s.att_out, n, &mut s.xb, &mut s.xq);
        if let Some(pn) = &lw.post_attn_norm {
            ex.rmsnorm_inplace(&mut s.xb[..n * d], model.f32s(pn), hp.norm_eps);
        }
        s.x[..n * d]
            .iter_mut()
            .zip(&s.xb)
            .for_each(|(x, &b)| *x += b);

        // Feed-forward block: norm, gated activation (SwiGLU or GeGLU), down projection.
        ex.rmsnorm(
            &mut s.xb[..n * d],
            &s.x[..n * d],
            model.f32s(&lw.ffn_norm),
            hp.norm_eps,
        );
        ex.matmul_same_input(
            [&lw.w_gate, &lw.w_up],
            &s.xb,
            n,
            [&mut s.gate, &mut s.up],
            &mut s.xq,
        );
        let act = match hp.activation {
            Activation::Silu => Glu::Silu,
            Activation::GeluTanh => Glu::GeluTanh,
        };
        let (ff, up) = (hp.d_ff, &s.up[..n * hp.d_ff]);
        ex.par_rows(&mut s.gate[..n * ff], ff, |r0, g| {
            ex.kern.glu(act, g, &up[r0 * ff..r0 * ff + g.len()])
        });
        ex.matmul(&lw.w_down, &s.gate, n, &mut s.xb, &mut s.xq);

        // Optional post-FFN norm (Gemma 3), residual.
        if let Some(pn) = &lw.post_ffw_norm {
            ex.rmsnorm_inplace(&mut s.xb[..n * d], model.f32s(pn), hp.norm_eps);
        }
        s.x[..n * d]
            .iter_mut()
            .zip(&s.xb)
            .for_each(|(x, &b)| *x += b);
    }

    // Final norm and output head for the tokens whose logits are wanted.
    let (first, count) = match want {
        Logits::None => return,
        Logits::Last => (n - 1, 1),
        Logits::All => (0, n),
    };
    let rows = first * d..(first + count) * d;
    ex.rmsnorm(
        &mut s.xb[..count * d],
        &s.x[rows],
        model.f32s(&w.output_norm),
        hp.norm_eps,
    );
    ex.matmul(&w.output, &s.xb, count, logits, &mut s.xq);

    // Soft-capping of the logits, where the model asks for it.
    if let Some(cap) = hp.final_logit_softcap {
        for l in &mut logits[..count * hp.n_vocab] {
            *l = (*l / cap).tanh() * cap;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::scalar::{exp, gelu_tanh, silu};

    #[test]
    fn scratch_allocates_what_bytes_for_computes() {
        for window in [0, 100] {
            let hp = crate::kv::tests::hp(window);
            for (n_batch, n_ctx, n_slabs) in [(1, 1, 1), (7, 33, 2), (64, 4096, 3)] {
                let s = Scratch::new(&hp, n_batch, n_ctx, n_slabs).unwrap();
                let want = Scratch::bytes_for(&hp, n_batch, n_ctx, n_slabs);
                assert_eq!(Some(s.bytes()), want, "n_batch {n_batch} n_ctx {n_ctx}");
            }
        }
    }

    #[test]
    fn rope_conventions_rotate_the_right_pairs() {
        let cos = [0.0f32, 1.0];
        let sin = [1.0f32, 0.0];
        // Adjacent: pairs (0,1) and (2,3); the first is rotated by 90 degrees.
        let mut h = [1.0f32, 2.0, 3.0, 4.0];
        rope(&mut h, &cos, &sin, RopePairs::Adjacent);
        assert_eq!(h, [-2.0, 1.0, 3.0, 4.0]);
        // Half: pairs (0,2) and (1,3).
        let mut h = [1.0f32, 2.0, 3.0, 4.0];
        rope(&mut h, &cos, &sin, RopePairs::Half);
        assert_eq!(h, [-3.0, 2.0, 1.0, 4.0]);
    }

    #[test]
    fn rmsnorm_normalises_rows() {
        let x = [3.0f32, 4.0, 0.0, 0.0];
        let mut out = [0.0f32; 4];
        rmsnorm(&mut out, &x, &[1.0, 2.0], 1e-12);
        let rms = (12.5f32).sqrt();
        assert!((out[0] - 3.0 / rms).abs() < 1e-6 && (out[1] - 8.0 / rms).abs() < 1e-6);
        assert_eq!(&out[2..], &[0.0, 0.0]);
    }

    #[test]
    fn exp_is_accurate_and_total() {
        let mut x = -100.0f32;
        while x < 88.0 {
            let (got, want) = (exp(x), f64::from(x).exp());
            if x < -87.0 {
                assert_eq!(got, 0.0);
            } else {
                assert!(
                    (f64::from(got) - want).abs() <= want * 2e-7,
                    "exp({x}) = {got}, want {want}"
                );
            }
            x += 0.013;
        }
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(1000.0).is_finite());
    }

    #[test]
    fn activations() {
        assert!((silu(1.0) - 0.731_058_6).abs() < 1e-6);
        assert!((gelu_tanh(1.0) - 0.841_192).abs() < 1e-5);
        assert_eq!(silu(0.0), 0.0);
        assert_eq!(gelu_tanh(0.0), 0.0);
    }
}
