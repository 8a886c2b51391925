//! The transformer forward pass of a decoder-only model (llama family and Gemma 3).
//!
//! [`forward`] reads top to bottom like llama2.c's: embed, then per layer attention and
//! feed-forward blocks with residuals, then the final norm and the output head. It processes
//! a batch of consecutive tokens at once (prefill is matrix-matrix work, decode is the batch
//! of one), writes their keys and values into the KV cache and leaves the logits wanted.
//! Every buffer lives in [`Scratch`] and [`KvCache`], sized when the session is created, so a
//! call allocates nothing.

use crate::kernels::{BlockQ8A, Kernels, QMatrix};
use crate::model::{Activation, HParams, Model, RopePairs, Tensor};
use crate::threadpool::ThreadPool;
use crate::{Error, Result};
use pipit_format::DType;

/// The product of `dims`, or an error naming the overflow.
pub(crate) fn checked_len(dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::OutOfMemory(format!("buffer of {dims:?} elements overflows")))
}

/// A zero-filled buffer of `len` elements; allocation failure is an error, not an abort.
pub(crate) fn zeroed<T: Clone + Default>(len: usize) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| Error::OutOfMemory(format!("cannot allocate {len} x {} bytes", std::mem::size_of::<T>())))?;
    v.resize(len, T::default());
    Ok(v)
}

/// How activations meet quantized weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Activations are quantized to int8 blocks for integer dot products (fast; the default).
    #[default]
    Int8,
    /// Activations stay f32 and weights are dequantized on the fly (reference accuracy).
    F32,
}

/// Keys and values of every position so far, for every layer.
#[derive(Debug)]
pub struct KvCache {
    /// Positions the cache can hold.
    pub n_ctx: usize,
    /// Width of one position's keys (n_kv_head * head_dim); values have the same width.
    pub kv_dim: usize,
    /// Keys: [n_layer][n_ctx][kv_dim].
    k: Vec<f32>,
    /// Values: [n_layer][n_ctx][kv_dim].
    v: Vec<f32>,
}

impl KvCache {
    /// Bytes a cache of `n_ctx` positions takes for these hyper-parameters.
    pub fn bytes_for(hp: &HParams, n_ctx: usize) -> Option<usize> {
        let per_layer = n_ctx.checked_mul(hp.n_kv_head)?.checked_mul(hp.head_dim)?;
        per_layer.checked_mul(hp.n_layer)?.checked_mul(2 * std::mem::size_of::<f32>())
    }

    /// An empty cache of `n_ctx` positions.
    pub fn new(hp: &HParams, n_ctx: usize) -> Result<Self> {
        let kv_dim = hp.n_kv_head * hp.head_dim;
        let len = checked_len(&[hp.n_layer, n_ctx, kv_dim])?;
        Ok(KvCache { n_ctx, kv_dim, k: zeroed(len)?, v: zeroed(len)? })
    }

    fn range(&self, layer: usize, pos: usize) -> std::ops::Range<usize> {
        let start = (layer * self.n_ctx + pos) * self.kv_dim;
        start..start + self.kv_dim
    }
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
    /// Attention scores of one head over the context: [n_ctx].
    att: Vec<f32>,
    /// FFN gate and up projections: [n_batch, d_ff].
    gate: Vec<f32>,
    up: Vec<f32>,
    /// RoPE cos and sin per token of the batch, for the global and the local base:
    /// [2][n_batch][rope_dim / 2].
    rope_cos: Vec<f32>,
    rope_sin: Vec<f32>,
    /// Inverse frequencies of the rotated pairs for both bases: [2][rope_dim / 2].
    inv_freq: Vec<f64>,
}

impl Scratch {
    /// Bytes the scratch of a batch of `n_batch` tokens and a context of `n_ctx` takes.
    pub fn bytes_for(hp: &HParams, n_batch: usize, n_ctx: usize) -> Option<usize> {
        let q_dim = hp.n_head.checked_mul(hp.head_dim)?;
        let kv_dim = hp.n_kv_head.checked_mul(hp.head_dim)?;
        let widest = hp.d_model.max(q_dim).max(hp.d_ff);
        let per_token = (2 * hp.d_model + 2 * q_dim + 2 * kv_dim + 2 * hp.d_ff + 2 * hp.rope_dim) * 4
            + widest / 32 * std::mem::size_of::<BlockQ8A>();
        per_token.checked_mul(n_batch)?.checked_add(n_ctx.checked_mul(4)?)
    }

    /// Buffers for batches of up to `n_batch` tokens over a context of `n_ctx`.
    pub fn new(hp: &HParams, n_batch: usize, n_ctx: usize) -> Result<Self> {
        let q_dim = hp.n_head * hp.head_dim;
        let kv_dim = hp.n_kv_head * hp.head_dim;
        let widest = hp.d_model.max(q_dim).max(hp.d_ff);
        let half = hp.rope_dim / 2;
        let mut inv_freq = Vec::with_capacity(2 * half);
        for theta in [hp.rope_theta, hp.rope_theta_local] {
            let theta = f64::from(theta);
            inv_freq.extend((0..half).map(|i| theta.powf(-2.0 * i as f64 / hp.rope_dim as f64)));
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
            att: zeroed(n_ctx)?,
            gate: zeroed(checked_len(&[n_batch, hp.d_ff])?)?,
            up: zeroed(checked_len(&[n_batch, hp.d_ff])?)?,
            rope_cos: zeroed(checked_len(&[2, n_batch, half])?)?,
            rope_sin: zeroed(checked_len(&[2, n_batch, half])?)?,
            inv_freq,
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
        let qm = QMatrix { dtype: w.dtype, rows: w.rows, cols: w.cols, data: self.model.data(w) };
        let x = &x[..n * w.cols];
        let out = &mut out[..n * w.rows];
        let quantized = matches!(w.dtype, DType::Q4_0 | DType::Q4_1 | DType::Q8_0);
        if quantized && self.precision == Precision::Int8 {
            let xq = &mut xq[..n * w.cols / 32];
            self.kern.quantize_act(x, xq);
            self.kern.matmul_q8a_par(self.pool, &qm, xq, n, out, w.rows);
        } else {
            self.kern.matmul_f32_par(self.pool, &qm, x, n, out, w.rows);
        }
    }

    /// Adds a bias row to each of the `n` rows of `y`.
    fn add_bias(&self, y: &mut [f32], bias: Option<&Tensor>, n: usize) {
        let Some(b) = bias else { return };
        let b = self.model.f32s(b);
        for row in y[..n * b.len()].chunks_exact_mut(b.len()) {
            row.iter_mut().zip(b).for_each(|(y, b)| *y += b);
        }
    }
}

/// RMSNorm of each `w.len()`-wide row of `x` into `out`: out = x / rms(x) * w.
fn rmsnorm(out: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
    for (o, x) in out.chunks_exact_mut(w.len()).zip(x.chunks_exact(w.len())) {
        let ss: f64 = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        let scale = (1.0 / (ss / x.len() as f64 + f64::from(eps)).sqrt()) as f32;
        for ((o, &x), &w) in o.iter_mut().zip(x).zip(w) {
            *o = x * scale * w;
        }
    }
}

/// RMSNorm in place of each `w.len()`-wide row of `x`.
fn rmsnorm_inplace(x: &mut [f32], w: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(w.len()) {
        let ss: f64 = row.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        let scale = (1.0 / (ss / row.len() as f64 + f64::from(eps)).sqrt()) as f32;
        row.iter_mut().zip(w).for_each(|(x, &w)| *x = *x * scale * w);
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

/// tanh approximation of GELU, as Gemma uses.
fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x)).tanh())
}

/// x * sigmoid(x).
fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// Softmax in place.
fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    x.iter_mut().for_each(|v| *v *= inv);
}

/// Runs `tokens` (ids already checked < n_vocab), which sit at positions `pos0..`, through
/// the model; their keys and values land in `kv`. `tokens.len()` is at most
/// `s.n_batch`, and `pos0 + tokens.len()` at most `kv.n_ctx` (the session checks both).
/// `logits` must hold n_vocab floats for [`Logits::Last`], n_vocab per token for
/// [`Logits::All`].
pub fn forward(ex: &Exec, kv: &mut KvCache, s: &mut Scratch, tokens: &[u32], pos0: usize, want: Logits, logits: &mut [f32]) {
    let model = ex.model;
    let hp = model.hparams();
    let w = model.weights();
    let n = tokens.len();
    let d = hp.d_model;
    let hd = hp.head_dim;
    let q_dim = hp.n_head * hd;
    let kv_dim = kv.kv_dim;
    let heads_per_kv = hp.n_head / hp.n_kv_head;
    let half = hp.rope_dim / 2;

    // Token embeddings, scaled as the architecture asks.
    let embd = QMatrix { dtype: w.token_embd.dtype, rows: w.token_embd.rows, cols: d, data: model.data(&w.token_embd) };
    for (t, &tok) in tokens.iter().enumerate() {
        let x = &mut s.x[t * d..(t + 1) * d];
        ex.kern.dequant_row(&embd, tok as usize, x);
        if hp.embed_scale != 1.0 {
            x.iter_mut().for_each(|v| *v *= hp.embed_scale);
        }
    }

    // RoPE angles of each batch position, for the global [0] and the local [1] base.
    for base in 0..2 {
        for t in 0..n {
            let pos = (pos0 + t) as f64 / f64::from(hp.rope_scale);
            for i in 0..half {
                let angle = pos * s.inv_freq[base * half + i];
                let at = (base * s.n_batch + t) * half + i;
                s.rope_cos[at] = angle.cos() as f32;
                s.rope_sin[at] = angle.sin() as f32;
            }
        }
    }

    for (l, lw) in w.layers.iter().enumerate() {
        let sliding = hp.layer_sliding[l];

        // Attention block: norm, then q, k, v projections (with biases when the model has them).
        rmsnorm(&mut s.xb[..n * d], &s.x[..n * d], model.f32s(&lw.attn_norm), hp.norm_eps);
        ex.matmul(&lw.wq, &s.xb, n, &mut s.q, &mut s.xq);
        ex.matmul(&lw.wk, &s.xb, n, &mut s.k, &mut s.xq);
        ex.matmul(&lw.wv, &s.xb, n, &mut s.v, &mut s.xq);
        ex.add_bias(&mut s.q, lw.bq.as_ref(), n);
        ex.add_bias(&mut s.k, lw.bk.as_ref(), n);
        ex.add_bias(&mut s.v, lw.bv.as_ref(), n);

        // Per-head norms of queries and keys (Gemma 3).
        if let Some(qn) = &lw.q_norm {
            rmsnorm_inplace(&mut s.q[..n * q_dim], model.f32s(qn), hp.norm_eps);
        }
        if let Some(kn) = &lw.k_norm {
            rmsnorm_inplace(&mut s.k[..n * kv_dim], model.f32s(kn), hp.norm_eps);
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
            let slot = kv.range(l, pos0 + t);
            kv.k[slot.clone()].copy_from_slice(&s.k[t * kv_dim..(t + 1) * kv_dim]);
            kv.v[slot].copy_from_slice(&s.v[t * kv_dim..(t + 1) * kv_dim]);
        }

        // Grouped-query causal attention: each head attends to the positions up to its own
        // (the last `sliding_window` of them on sliding layers).
        for t in 0..n {
            let pos = pos0 + t;
            let first = if sliding && hp.sliding_window > 0 { (pos + 1).saturating_sub(hp.sliding_window) } else { 0 };
            for h in 0..hp.n_head {
                let q = &s.q[t * q_dim + h * hd..t * q_dim + (h + 1) * hd];
                let kv_off = (h / heads_per_kv) * hd;
                let att = &mut s.att[first..=pos];
                for (j, a) in att.iter_mut().enumerate() {
                    let k = &kv.k[kv.range(l, first + j)][kv_off..kv_off + hd];
                    *a = ex.kern.dot_f32(q, k) * hp.attn_scale;
                }
                softmax(att);
                let out = &mut s.att_out[t * q_dim + h * hd..t * q_dim + (h + 1) * hd];
                out.fill(0.0);
                for (j, &a) in att.iter().enumerate() {
                    let v = &kv.v[kv.range(l, first + j)][kv_off..kv_off + hd];
                    out.iter_mut().zip(v).for_each(|(o, &v)| *o += a * v);
                }
            }
        }

        // Output projection, optional post-attention norm (Gemma 3), residual.
        ex.matmul(&lw.wo, &s.att_out, n, &mut s.xb, &mut s.xq);
        if let Some(pn) = &lw.post_attn_norm {
            rmsnorm_inplace(&mut s.xb[..n * d], model.f32s(pn), hp.norm_eps);
        }
        s.x[..n * d].iter_mut().zip(&s.xb).for_each(|(x, &b)| *x += b);

        // Feed-forward block: norm, gated activation (SwiGLU or GeGLU), down projection.
        rmsnorm(&mut s.xb[..n * d], &s.x[..n * d], model.f32s(&lw.ffn_norm), hp.norm_eps);
        ex.matmul(&lw.w_gate, &s.xb, n, &mut s.gate, &mut s.xq);
        ex.matmul(&lw.w_up, &s.xb, n, &mut s.up, &mut s.xq);
        let act = match hp.activation {
            Activation::Silu => silu,
            Activation::GeluTanh => gelu_tanh,
        };
        let ff = n * hp.d_ff;
        s.gate[..ff].iter_mut().zip(&s.up[..ff]).for_each(|(g, &u)| *g = act(*g) * u);
        ex.matmul(&lw.w_down, &s.gate, n, &mut s.xb, &mut s.xq);

        // Optional post-FFN norm (Gemma 3), residual.
        if let Some(pn) = &lw.post_ffw_norm {
            rmsnorm_inplace(&mut s.xb[..n * d], model.f32s(pn), hp.norm_eps);
        }
        s.x[..n * d].iter_mut().zip(&s.xb).for_each(|(x, &b)| *x += b);
    }

    // Final norm and output head for the tokens whose logits are wanted.
    let (first, count) = match want {
        Logits::None => return,
        Logits::Last => (n - 1, 1),
        Logits::All => (0, n),
    };
    let rows = first * d..(first + count) * d;
    rmsnorm(&mut s.xb[..count * d], &s.x[rows], model.f32s(&w.output_norm), hp.norm_eps);
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
        rmsnorm(&mut out, &x, &[1.0, 2.0], 0.0);
        let rms = (12.5f32).sqrt();
        assert!((out[0] - 3.0 / rms).abs() < 1e-6 && (out[1] - 8.0 / rms).abs() < 1e-6);
        assert_eq!(&out[2..], &[0.0, 0.0]);
    }

    #[test]
    fn softmax_sums_to_one_and_survives_large_values() {
        let mut x = [1000.0f32, 1000.0, -1000.0];
        softmax(&mut x);
        assert!((x[0] - 0.5).abs() < 1e-6 && (x[1] - 0.5).abs() < 1e-6 && x[2] == 0.0);
    }

    #[test]
    fn activations() {
        assert!((silu(1.0) - 0.731_058_6).abs() < 1e-6);
        assert!((gelu_tanh(1.0) - 0.841_192).abs() < 1e-5);
        assert_eq!(silu(0.0), 0.0);
        assert_eq!(gelu_tanh(0.0), 0.0);
    }
}
