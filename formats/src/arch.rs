//! Model architectures as data: one [`Family`] entry per architecture in [`FAMILIES`], and
//! the hyper-parameters of a file ([`HParams`]), validated by the rules of SPEC.md
//! ("Metadata keys").
//!
//! Everything that knows an architecture reads it from here: the runtime's loader (which
//! tensors, which shapes, which features), the converter (what a GGUF or Hugging Face
//! checkpoint of the family looks like, validated by [`HParams::from_metadata`] before it
//! writes anything) and `pipit inspect`. Adding a family is one entry in [`FAMILIES`] plus
//! the arithmetic it genuinely adds to the forward pass.

use crate::{FormatError, Metadata};

/// Model architecture (`general.architecture`), named as llama.cpp names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// `llama`: Llama 2/3.x, Mistral, SmolLM2, TinyLlama.
    Llama,
    /// `qwen2`: Qwen 2 / 2.5.
    Qwen2,
    /// `qwen3`: Qwen 3 (dense).
    Qwen3,
    /// `phi3`: Phi-3 / 3.5 mini.
    Phi3,
    /// `gemma2`: Gemma 2.
    Gemma2,
    /// `gemma3`: Gemma 3 (text).
    Gemma3,
}

/// Whether a family has a feature that adds tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// Never: its key must be absent or false.
    No,
    /// Per file: its key says (absent = false).
    Optional,
    /// Always: its key must be absent or true.
    Yes,
}

/// Which layers attend within the sliding window, as the family's checkpoints imply it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlidingPattern {
    /// No sliding layers unless the checkpoint's configuration names them.
    None,
    /// Layers `0, 2, 4, ...` slide (Gemma 2).
    EvenLayers,
    /// Every layer slides except each `n`-th (`(i + 1) % n == 0` is global; Gemma 3: 6).
    AllButEvery(u32),
}

/// Which elements RoPE rotates together (`model.rope_pairs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopePairs {
    /// `(x[2i], x[2i+1])`: the GGUF / llama.cpp layout of `llama` q/k rows.
    Adjacent,
    /// `(x[i], x[i + rope_dim/2])`: the Hugging Face (NEOX) layout.
    Half,
}

/// FFN gate activation (`model.activation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// SwiGLU: `silu(gate) * up`.
    Silu,
    /// GeGLU with the tanh approximation of GELU.
    GeluTanh,
}

/// How RoPE frequencies are scaled (`model.rope_scaling`).
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// None.
    None,
    /// Positions are divided by `model.rope_scale`.
    Linear,
    /// Llama 3.x: each pair's frequency is divided by its factor (`model.rope_factors`,
    /// rope_dim/2 values; GGUF's `rope_freqs` tensor).
    Llama3 {
        /// Per-pair divisors of the frequency.
        factors: Vec<f32>,
    },
    /// Phi-3 LongRoPE: per-pair divisors `short` for contexts up to `ctx_orig`, `long`
    /// beyond; cos and sin are multiplied by `attn_factor`.
    LongRope {
        /// Divisors for a context of at most `ctx_orig` (`model.rope_factors`).
        short: Vec<f32>,
        /// Divisors for a longer context (`model.rope_factors_long`).
        long: Vec<f32>,
        /// The context the model was pre-trained with (`model.rope_ctx_orig`).
        ctx_orig: usize,
        /// Magnitude factor of cos and sin (`model.rope_attn_factor`).
        attn_factor: f32,
    },
}

/// One architecture: what its files contain and what its checkpoints imply.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    /// The architecture.
    pub arch: Arch,
    /// `general.architecture`, GGUF's `general.architecture` and its key prefix.
    pub name: &'static str,
    /// Hugging Face `model_type`s of this family.
    pub hf_types: &'static [&'static str],
    /// `blk.L.attn_{q,k,v}_bias` (`model.qkv_bias`).
    pub qkv_bias: Feature,
    /// Per-head RMSNorm of queries and keys, `blk.L.attn_{q,k}_norm` (`model.qk_norm`).
    pub qk_norm: Feature,
    /// RMSNorm of the attention and FFN outputs before the residual,
    /// `blk.L.post_attention_norm` and `blk.L.post_ffw_norm` (`model.post_norms`).
    pub post_norms: Feature,
    /// The activation of the family's checkpoints.
    pub activation: Activation,
    /// The pair layout of q/k rows in llama.cpp's GGUF files of the family.
    pub gguf_rope_pairs: RopePairs,
    /// Checkpoints store q, k, v as one `attn_qkv` matrix (rows q, then k, then v); the
    /// converter splits it.
    pub fused_qkv: bool,
    /// Checkpoints store gate and up as one `ffn_up` matrix of 2*d_ff rows (gate first);
    /// the converter splits it.
    pub fused_gate_up: bool,
    /// The sliding-window layers of the family's checkpoints.
    pub sliding: SlidingPattern,
    /// Embeddings are multiplied by sqrt(d_model) (`model.embed_scale`).
    pub embed_scale_sqrt_d: bool,
    /// GGUF does not store Gemma's `query_pre_attn_scalar`; llama.cpp takes
    /// `d_model / n_head` for the checkpoint with this many layers (the 27B model) and
    /// `head_dim` otherwise. Converters of GGUF files follow that rule.
    pub gguf_qpas_d_over_heads_layers: Option<usize>,
    /// The RoPE base of sliding layers when a GGUF does not give one (`None`: the global
    /// base).
    pub gguf_rope_theta_local: Option<f32>,
    /// Gemma's norms multiply by `1 + w`; the converter folds the 1 into Hugging Face
    /// weights (GGUF already has).
    pub norm_plus_one: bool,
}

/// Every architecture this build runs.
pub const FAMILIES: [Family; 6] = [
    Family {
        arch: Arch::Llama,
        name: "llama",
        hf_types: &["llama", "mistral"],
        qkv_bias: Feature::Optional,
        qk_norm: Feature::No,
        post_norms: Feature::No,
        activation: Activation::Silu,
        gguf_rope_pairs: RopePairs::Adjacent,
        fused_qkv: false,
        fused_gate_up: false,
        sliding: SlidingPattern::None,
        embed_scale_sqrt_d: false,
        gguf_qpas_d_over_heads_layers: None,
        gguf_rope_theta_local: None,
        norm_plus_one: false,
    },
    Family {
        arch: Arch::Qwen2,
        name: "qwen2",
        hf_types: &["qwen2"],
        qkv_bias: Feature::Yes,
        qk_norm: Feature::No,
        post_norms: Feature::No,
        activation: Activation::Silu,
        gguf_rope_pairs: RopePairs::Half,
        fused_qkv: false,
        fused_gate_up: false,
        sliding: SlidingPattern::None,
        embed_scale_sqrt_d: false,
        gguf_qpas_d_over_heads_layers: None,
        gguf_rope_theta_local: None,
        norm_plus_one: false,
    },
    Family {
        arch: Arch::Qwen3,
        name: "qwen3",
        hf_types: &["qwen3"],
        qkv_bias: Feature::No,
        qk_norm: Feature::Yes,
        post_norms: Feature::No,
        activation: Activation::Silu,
        gguf_rope_pairs: RopePairs::Half,
        fused_qkv: false,
        fused_gate_up: false,
        sliding: SlidingPattern::None,
        embed_scale_sqrt_d: false,
        gguf_qpas_d_over_heads_layers: None,
        gguf_rope_theta_local: None,
        norm_plus_one: false,
    },
    Family {
        arch: Arch::Phi3,
        name: "phi3",
        hf_types: &["phi3"],
        qkv_bias: Feature::No,
        qk_norm: Feature::No,
        post_norms: Feature::No,
        activation: Activation::Silu,
        gguf_rope_pairs: RopePairs::Half,
        fused_qkv: true,
        fused_gate_up: true,
        sliding: SlidingPattern::None,
        embed_scale_sqrt_d: false,
        gguf_qpas_d_over_heads_layers: None,
        gguf_rope_theta_local: None,
        norm_plus_one: false,
    },
    Family {
        arch: Arch::Gemma2,
        name: "gemma2",
        hf_types: &["gemma2"],
        qkv_bias: Feature::No,
        qk_norm: Feature::No,
        post_norms: Feature::Yes,
        activation: Activation::GeluTanh,
        gguf_rope_pairs: RopePairs::Half,
        fused_qkv: false,
        fused_gate_up: false,
        sliding: SlidingPattern::EvenLayers,
        embed_scale_sqrt_d: true,
        gguf_qpas_d_over_heads_layers: Some(46),
        gguf_rope_theta_local: None,
        norm_plus_one: true,
    },
    Family {
        arch: Arch::Gemma3,
        name: "gemma3",
        hf_types: &["gemma3_text"],
        qkv_bias: Feature::No,
        qk_norm: Feature::Yes,
        post_norms: Feature::Yes,
        activation: Activation::GeluTanh,
        gguf_rope_pairs: RopePairs::Half,
        fused_qkv: false,
        fused_gate_up: false,
        sliding: SlidingPattern::AllButEvery(6),
        embed_scale_sqrt_d: true,
        gguf_qpas_d_over_heads_layers: Some(62),
        gguf_rope_theta_local: Some(10000.0),
        norm_plus_one: true,
    },
];

impl Arch {
    /// The table entry of this architecture.
    pub fn family(self) -> &'static Family {
        FAMILIES
            .iter()
            .find(|f| f.arch == self)
            .expect("every Arch has a FAMILIES entry")
    }

    /// `general.architecture` of this architecture.
    pub fn name(self) -> &'static str {
        self.family().name
    }
}

impl Family {
    /// The entry named `name` (`general.architecture`).
    pub fn by_name(name: &str) -> Option<&'static Family> {
        FAMILIES.iter().find(|f| f.name == name)
    }

    /// The entry of Hugging Face `model_type` `t`.
    pub fn by_hf_type(t: &str) -> Option<&'static Family> {
        FAMILIES.iter().find(|f| f.hf_types.contains(&t))
    }

    /// The names of every architecture, for messages.
    pub fn known() -> String {
        FAMILIES.map(|f| f.name).join(", ")
    }

    /// `layer_sliding` of an `n_layer` checkpoint of this family (all zero without a
    /// pattern).
    pub fn layer_sliding(&self, n_layer: usize) -> Vec<u8> {
        (0..n_layer)
            .map(|i| match self.sliding {
                SlidingPattern::None => 0,
                SlidingPattern::EvenLayers => u8::from(i % 2 == 0),
                SlidingPattern::AllButEvery(n) => u8::from(n == 0 || (i + 1) % n as usize != 0),
            })
            .collect()
    }

    /// The fewest tensors one block of this family has: a file or checkpoint with fewer
    /// than `n_layer` times this many tensors lies about `n_layer`, and is refused before
    /// anything is sized by it.
    pub fn min_tensors_per_layer(&self) -> usize {
        // attn_norm, q, k, v, output, ffn_norm, gate, up, down (fused: qkv and gate/up as one).
        let base = 9 - usize::from(self.fused_qkv) * 2 - usize::from(self.fused_gate_up);
        let always = |f: Feature, n: usize| if f == Feature::Yes { n } else { 0 };
        base + always(self.qkv_bias, 3) + always(self.qk_norm, 2) + always(self.post_norms, 2)
    }
}

/// Validated hyper-parameters (formats/SPEC.md, "Metadata keys").
#[derive(Debug, Clone, PartialEq)]
pub struct HParams {
    /// Architecture.
    pub arch: Arch,
    /// Transformer blocks.
    pub n_layer: usize,
    /// Residual width.
    pub d_model: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads; divides `n_head`.
    pub n_kv_head: usize,
    /// Width of one head of q, k and v.
    pub head_dim: usize,
    /// FFN hidden width.
    pub d_ff: usize,
    /// Vocabulary size (rows of `token_embd`, tokens of the tokenizer).
    pub n_vocab: usize,
    /// Context length the model was trained for.
    pub n_ctx_train: usize,
    /// Rotated dimensions per head: even, `2..=head_dim`.
    pub rope_dim: usize,
    /// RMSNorm epsilon.
    pub norm_eps: f32,
    /// RoPE base (global layers).
    pub rope_theta: f32,
    /// RoPE base of sliding-window layers (`rope_theta` when the file has none).
    pub rope_theta_local: f32,
    /// Positions are divided by this (1 unless `rope_scaling` is linear).
    pub rope_scale: f32,
    /// How RoPE frequencies are scaled.
    pub rope_scaling: RopeScaling,
    /// Which elements RoPE rotates together.
    pub rope_pairs: RopePairs,
    /// FFN gate activation.
    pub activation: Activation,
    /// The output head is `token_embd`.
    pub tied: bool,
    /// q, k and v have biases.
    pub qkv_bias: bool,
    /// Queries and keys are RMS-normed per head.
    pub qk_norm: bool,
    /// Attention and FFN outputs are RMS-normed before the residual add.
    pub post_norms: bool,
    /// Window of sliding layers in tokens; 0 = none.
    pub sliding_window: usize,
    /// `n_layer` entries: whether the layer attends within the sliding window.
    pub layer_sliding: Vec<bool>,
    /// Embeddings are multiplied by this (1 unless the file says otherwise).
    pub embed_scale: f32,
    /// Attention scores are multiplied by this (`1/sqrt(head_dim)` unless the file says).
    pub attn_scale: f32,
    /// Attention scores become `c * tanh(score / c)` when set (after `attn_scale`).
    pub attn_softcap: Option<f32>,
    /// Logits become `c * tanh(logit / c)` when set.
    pub final_logit_softcap: Option<f32>,
}

fn bad_value(key: &str, value: impl std::fmt::Display, rule: impl Into<String>) -> FormatError {
    FormatError::BadValue {
        key: key.to_string(),
        value: value.to_string(),
        rule: rule.into(),
    }
}

fn unknown(key: &str, value: &str, known: &str) -> FormatError {
    FormatError::UnknownChoice {
        key: key.to_string(),
        value: value.to_string(),
        known: known.to_string(),
    }
}

/// A dimension: a `u32` of at least 1. (`usize` is at least 32 bits on every target.)
fn dim(meta: &Metadata, key: &str) -> Result<usize, FormatError> {
    let v = meta.get_u32(key)?;
    if v == 0 {
        return Err(bad_value(key, v, "must be at least 1"));
    }
    Ok(v as usize)
}

/// A finite, strictly positive `f32`.
fn positive(key: &str, v: f32) -> Result<f32, FormatError> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(bad_value(key, v, "must be finite and greater than 0"))
    }
}

/// An optional soft-cap: absent or 0 = none, else finite and > 0.
fn softcap(meta: &Metadata, key: &str) -> Result<Option<f32>, FormatError> {
    match meta.opt_f32(key)? {
        None => Ok(None),
        Some(0.0) => Ok(None),
        Some(v) => positive(key, v).map(Some),
    }
}

/// A feature flag checked against the family: absent = the family's default.
fn feature(meta: &Metadata, key: &str, f: Feature, arch: &str) -> Result<bool, FormatError> {
    let v = meta.opt_bool(key)?;
    match (f, v) {
        (Feature::No, Some(true)) => {
            Err(bad_value(key, true, format!("{arch} has no such tensors")))
        }
        (Feature::Yes, Some(false)) => {
            Err(bad_value(key, false, format!("{arch} always has them")))
        }
        (Feature::No, _) => Ok(false),
        (Feature::Yes, _) => Ok(true),
        (Feature::Optional, v) => Ok(v.unwrap_or(false)),
    }
}

/// `rope_dim / 2` per-pair factors under `key`, each finite and > 0.
fn factors(meta: &Metadata, key: &str, half: usize) -> Result<Vec<f32>, FormatError> {
    let f = meta.get_arr_f32(key)?;
    if f.len() != half {
        return Err(FormatError::LengthMismatch {
            key: key.to_string(),
            len: f.len() as u64,
            expected: half as u64,
        });
    }
    for (i, &v) in f.iter().enumerate() {
        positive(&format!("{key}[{i}]"), v)?;
    }
    crate::mem::try_copy(f)
}

impl HParams {
    /// Reads and validates `general.architecture` and every `model.*` entry. Nothing is
    /// sized by a value before the value is checked; `layer_sliding` is the only
    /// `n_layer`-sized allocation, and its length is the stored array's.
    pub fn from_metadata(meta: &Metadata) -> Result<HParams, FormatError> {
        let arch_name = meta.get_str("general.architecture")?;
        let fam = Family::by_name(arch_name)
            .ok_or_else(|| unknown("general.architecture", arch_name, &Family::known()))?;
        let n_layer = dim(meta, "model.n_layer")?;
        let d_model = dim(meta, "model.d_model")?;
        let n_head = dim(meta, "model.n_head")?;
        let n_kv_head = dim(meta, "model.n_kv_head")?;
        let head_dim = dim(meta, "model.head_dim")?;
        let d_ff = dim(meta, "model.d_ff")?;
        let n_vocab = dim(meta, "model.n_vocab")?;
        let n_ctx_train = dim(meta, "model.n_ctx_train")?;
        if n_head % n_kv_head != 0 {
            return Err(bad_value(
                "model.n_kv_head",
                n_kv_head,
                format!("must divide model.n_head ({n_head})"),
            ));
        }
        if n_head.checked_mul(head_dim).is_none() {
            return Err(bad_value(
                "model.head_dim",
                head_dim,
                format!("times model.n_head ({n_head}) overflows"),
            ));
        }
        let rope_dim = meta.get_u32("model.rope_dim")? as usize;
        if rope_dim == 0 || !rope_dim.is_multiple_of(2) || rope_dim > head_dim {
            return Err(bad_value(
                "model.rope_dim",
                rope_dim,
                format!("must be even and in 2..={head_dim} (head_dim)"),
            ));
        }
        let norm_eps = positive("model.norm_eps", meta.get_f32("model.norm_eps")?)?;
        let rope_theta = positive("model.rope_theta", meta.get_f32("model.rope_theta")?)?;
        let rope_theta_local = match meta.opt_f32("model.rope_theta_local")? {
            Some(v) => positive("model.rope_theta_local", v)?,
            None => rope_theta,
        };
        let rope_scale = positive("model.rope_scale", meta.get_f32("model.rope_scale")?)?;
        let half = rope_dim / 2;
        let kind = meta.get_str("model.rope_scaling")?;
        let rope_scaling = match kind {
            "linear" => RopeScaling::Linear,
            "none" | "llama3" | "longrope" if rope_scale != 1.0 => {
                return Err(bad_value(
                    "model.rope_scale",
                    rope_scale,
                    format!("must be 1 when model.rope_scaling is {kind}"),
                ))
            }
            "none" => RopeScaling::None,
            "llama3" => RopeScaling::Llama3 {
                factors: factors(meta, "model.rope_factors", half)?,
            },
            "longrope" => {
                let ctx_orig = dim(meta, "model.rope_ctx_orig")?;
                RopeScaling::LongRope {
                    short: factors(meta, "model.rope_factors", half)?,
                    long: factors(meta, "model.rope_factors_long", half)?,
                    ctx_orig,
                    attn_factor: positive(
                        "model.rope_attn_factor",
                        meta.get_f32("model.rope_attn_factor")?,
                    )?,
                }
            }
            other => {
                return Err(unknown(
                    "model.rope_scaling",
                    other,
                    "none, linear, llama3, longrope",
                ))
            }
        };
        // The keys of the other scalings must be absent (and, like every known key, typed).
        let longrope = matches!(rope_scaling, RopeScaling::LongRope { .. });
        let llama3 = matches!(rope_scaling, RopeScaling::Llama3 { .. });
        let unused = [
            (
                "model.rope_factors",
                meta.opt_arr_f32("model.rope_factors")?.is_some() && !longrope && !llama3,
            ),
            (
                "model.rope_factors_long",
                meta.opt_arr_f32("model.rope_factors_long")?.is_some() && !longrope,
            ),
            (
                "model.rope_ctx_orig",
                meta.opt_u32("model.rope_ctx_orig")?.is_some() && !longrope,
            ),
            (
                "model.rope_attn_factor",
                meta.opt_f32("model.rope_attn_factor")?.is_some() && !longrope,
            ),
        ];
        if let Some((key, _)) = unused.iter().find(|(_, bad)| *bad) {
            return Err(bad_value(
                key,
                "present",
                format!("model.rope_scaling {kind} does not use it"),
            ));
        }
        let rope_pairs = match meta.get_str("model.rope_pairs")? {
            "adjacent" => RopePairs::Adjacent,
            "half" => RopePairs::Half,
            other => return Err(unknown("model.rope_pairs", other, "adjacent, half")),
        };
        let activation = match meta.get_str("model.activation")? {
            "silu" => Activation::Silu,
            "gelu_tanh" => Activation::GeluTanh,
            other => return Err(unknown("model.activation", other, "silu, gelu_tanh")),
        };
        let tied = meta.get_bool("model.tied_embeddings")?;
        let qkv_bias = feature(meta, "model.qkv_bias", fam.qkv_bias, fam.name)?;
        let qk_norm = feature(meta, "model.qk_norm", fam.qk_norm, fam.name)?;
        let post_norms = feature(meta, "model.post_norms", fam.post_norms, fam.name)?;
        let sliding_window = meta.get_u32("model.sliding_window")? as usize;
        let flags = meta.get_arr_u8("model.layer_sliding")?;
        if flags.len() != n_layer {
            return Err(FormatError::LengthMismatch {
                key: "model.layer_sliding".to_string(),
                len: flags.len() as u64,
                expected: n_layer as u64,
            });
        }
        if let Some((i, &f)) = flags.iter().enumerate().find(|(_, &f)| f > 1) {
            return Err(bad_value(
                &format!("model.layer_sliding[{i}]"),
                f,
                "must be 0 or 1",
            ));
        }
        let layer_sliding = crate::mem::try_collect(flags.iter().map(|&f| f == 1))?;
        if sliding_window == 0 && layer_sliding.contains(&true) {
            return Err(bad_value(
                "model.sliding_window",
                0,
                "must be at least 1 when a layer is sliding",
            ));
        }
        let embed_scale = match meta.opt_f32("model.embed_scale")? {
            Some(v) => positive("model.embed_scale", v)?,
            None => 1.0,
        };
        let attn_scale = match meta.opt_f32("model.attn_scale")? {
            Some(v) => positive("model.attn_scale", v)?,
            None => 1.0 / (head_dim as f32).sqrt(),
        };
        Ok(HParams {
            arch: fam.arch,
            n_layer,
            d_model,
            n_head,
            n_kv_head,
            head_dim,
            d_ff,
            n_vocab,
            n_ctx_train,
            rope_dim,
            norm_eps,
            rope_theta,
            rope_theta_local,
            rope_scale,
            rope_scaling,
            rope_pairs,
            activation,
            tied,
            qkv_bias,
            qk_norm,
            post_norms,
            sliding_window,
            layer_sliding,
            embed_scale,
            attn_scale,
            attn_softcap: softcap(meta, "model.attn_softcap")?,
            final_logit_softcap: softcap(meta, "model.final_logit_softcap")?,
        })
    }

    /// The architecture's table entry.
    pub fn family(&self) -> &'static Family {
        self.arch.family()
    }

    /// Width of the concatenated query heads, `n_head * head_dim` (checked at load).
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    /// Width of the concatenated key (or value) heads, `n_kv_head * head_dim`.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_head * self.head_dim
    }

    /// One line naming the architecture's optional features and scalings as this file has
    /// them (for `pipit inspect`).
    pub fn features(&self) -> String {
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        let scaling = match &self.rope_scaling {
            RopeScaling::None => "none".to_string(),
            RopeScaling::Linear => format!("linear {}", self.rope_scale),
            RopeScaling::Llama3 { factors } => format!("llama3 ({} per-pair factors)", factors.len()),
            RopeScaling::LongRope {
                ctx_orig,
                attn_factor,
                ..
            } => format!("longrope (short/long factors, original context {ctx_orig}, attn factor {attn_factor})"),
        };
        let cap = |c: Option<f32>| c.map_or("none".to_string(), |c| c.to_string());
        format!(
            "features: qkv bias {}, q/k norm {}, post norms {}, rope scaling {scaling}, attn softcap {}",
            yes_no(self.qkv_bias),
            yes_no(self.qk_norm),
            yes_no(self.post_norms),
            cap(self.attn_softcap)
        )
    }

    /// Refuses an `n_layer` that `n_tensors` tensors cannot hold (see
    /// [`Family::min_tensors_per_layer`]).
    pub fn check_tensor_count(&self, n_tensors: usize) -> Result<(), FormatError> {
        check_layer_count(self.family(), self.n_layer, n_tensors, "model.n_layer")
    }

    /// Every tensor of the file, in the order the converter writes them.
    ///
    /// # Panics
    /// Aborts if the list cannot be allocated, as any infallible collection; the loader,
    /// which must not, calls [`HParams::try_tensors`].
    pub fn tensors(&self) -> Vec<TensorSpec> {
        match self.try_tensors() {
            Ok(v) => v,
            Err(_) => std::alloc::handle_alloc_error(std::alloc::Layout::new::<TensorSpec>()),
        }
    }

    /// [`HParams::tensors`], with allocation failure an error.
    pub fn try_tensors(&self) -> Result<Vec<TensorSpec>, FormatError> {
        let (d, q, kv, ff, hd) = (
            self.d_model,
            self.q_dim(),
            self.kv_dim(),
            self.d_ff,
            self.head_dim,
        );
        let per_layer = 9
            + 3 * usize::from(self.qkv_bias)
            + 2 * usize::from(self.qk_norm)
            + 2 * usize::from(self.post_norms);
        let n = per_layer.saturating_mul(self.n_layer).saturating_add(3);
        let mut v = crate::mem::try_vec(n)?;
        v.push(TensorSpec::matrix("token_embd".into(), self.n_vocab, d));
        for l in 0..self.n_layer {
            let p = |n: &str| format!("blk.{l}.{n}");
            v.push(TensorSpec::vector(p("attn_norm"), d));
            v.push(TensorSpec::matrix(p("attn_q"), q, d));
            v.push(TensorSpec::matrix(p("attn_k"), kv, d));
            v.push(TensorSpec::matrix(p("attn_v"), kv, d));
            if self.qkv_bias {
                v.push(TensorSpec::vector(p("attn_q_bias"), q));
                v.push(TensorSpec::vector(p("attn_k_bias"), kv));
                v.push(TensorSpec::vector(p("attn_v_bias"), kv));
            }
            if self.qk_norm {
                v.push(TensorSpec::vector(p("attn_q_norm"), hd));
                v.push(TensorSpec::vector(p("attn_k_norm"), hd));
            }
            v.push(TensorSpec::matrix(p("attn_output"), d, q));
            if self.post_norms {
                v.push(TensorSpec::vector(p("post_attention_norm"), d));
            }
            v.push(TensorSpec::vector(p("ffn_norm"), d));
            v.push(TensorSpec::matrix(p("ffn_gate"), ff, d));
            v.push(TensorSpec::matrix(p("ffn_up"), ff, d));
            v.push(TensorSpec::matrix(p("ffn_down"), d, ff));
            if self.post_norms {
                v.push(TensorSpec::vector(p("post_ffw_norm"), d));
            }
        }
        v.push(TensorSpec::vector("output_norm".into(), d));
        if !self.tied {
            v.push(TensorSpec::matrix("output".into(), self.n_vocab, d));
        }
        Ok(v)
    }
}

/// Refuses `n_layer` blocks of `fam` in an input of `n_tensors` tensors when they cannot
/// all be there. `key` names the value in the input.
pub fn check_layer_count(
    fam: &Family,
    n_layer: usize,
    n_tensors: usize,
    key: &str,
) -> Result<(), FormatError> {
    let need = n_layer.checked_mul(fam.min_tensors_per_layer());
    if need.is_none_or(|need| need > n_tensors) {
        return Err(bad_value(
            key,
            n_layer,
            format!(
                "{} layers need at least {} tensors each; there are {n_tensors} tensors",
                fam.name,
                fam.min_tensors_per_layer()
            ),
        ));
    }
    Ok(())
}

/// A tensor a model file holds: its name and shape, and whether it is a 1-D vector (norm
/// weight or bias, stored F32) or a matrix (any dtype).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Name (`blk.0.attn_q`).
    pub name: String,
    /// Shape, outermost first.
    pub shape: Vec<usize>,
    /// A 1-D F32 vector rather than a matrix.
    pub vector: bool,
}

impl TensorSpec {
    fn matrix(name: String, rows: usize, cols: usize) -> Self {
        TensorSpec {
            name,
            shape: vec![rows, cols],
            vector: false,
        }
    }

    fn vector(name: String, len: usize) -> Self {
        TensorSpec {
            name,
            shape: vec![len],
            vector: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_arch_has_one_entry() {
        for f in &FAMILIES {
            assert_eq!(f.arch.family().name, f.name);
            assert_eq!(Family::by_name(f.name).unwrap().arch, f.arch);
        }
    }

    #[test]
    fn sliding_patterns() {
        let g3 = Arch::Gemma3.family();
        assert_eq!(g3.layer_sliding(7), [1, 1, 1, 1, 1, 0, 1]);
        assert_eq!(Arch::Gemma2.family().layer_sliding(4), [1, 0, 1, 0]);
        assert_eq!(Arch::Llama.family().layer_sliding(2), [0, 0]);
    }

    #[test]
    fn layer_count_is_checked_against_the_tensors() {
        let f = Arch::Llama.family();
        assert!(check_layer_count(f, 2, 18, "n").is_ok());
        assert!(check_layer_count(f, 3, 18, "n").is_err());
        assert!(check_layer_count(f, usize::MAX, 18, "n").is_err());
        assert_eq!(Arch::Phi3.family().min_tensors_per_layer(), 6);
        assert_eq!(Arch::Gemma3.family().min_tensors_per_layer(), 13);
    }
}
