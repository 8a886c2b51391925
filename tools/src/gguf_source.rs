//! GGUF -> [`Source`]: metadata keys of SPEC.md from the GGUF keys, tensors renamed.
//!
//! Rules (see also the `--help` text). Everything about an architecture comes from its
//! entry in [`pipit_format::arch::FAMILIES`]:
//! - `general.architecture` is kept (`llama`, `qwen2`, `qwen3`, `phi3`, `gemma2`, `gemma3`);
//!   `rope_pairs` is the family's GGUF layout (`llama` q/k rows are stored permuted for
//!   adjacent pairs; the others are NEOX, `half`).
//! - `head_dim` = `{arch}.attention.key_length`, else `d_model / n_head`; `rope_dim` =
//!   `{arch}.rope.dimension_count`, else `head_dim`.
//! - Features: `qkv_bias` (llama: whether the bias tensors are there), `qk_norm` and
//!   `post_norms` as the family has them.
//! - RoPE scaling: a `rope_freqs` tensor is Llama 3's per-pair factors (`llama3`,
//!   `model.rope_factors`); `rope_factors_short`/`_long` tensors are Phi-3's LongRoPE
//!   (`longrope`, with `rope.scaling.original_context_length` and
//!   `rope.scaling.attn_factor`, default 1); else `rope.scaling.type` linear or none.
//! - Fused tensors (phi3): `attn_qkv` is split into `attn_q`, `attn_k`, `attn_v` and
//!   `ffn_up` (2 * d_ff rows) into `ffn_gate` (first half) and `ffn_up`.
//! - Sliding windows: `{arch}.attention.sliding_window_pattern` (an array of flags, or a
//!   period), else the family's pattern; the window is `{arch}.attention.sliding_window`.
//! - gemma: `rope_theta_local` = `{arch}.rope.freq_base_swa` (gemma3: 10000, gemma2: the
//!   global base), `embed_scale = sqrt(d_model)`, `attn_scale = 1/sqrt(query_pre_attn_scalar)`
//!   by the family's rule, soft-caps from `{arch}.attn_logit_softcapping` and
//!   `{arch}.final_logit_softcapping`.
//! - Tokenizer: `tokenizer.ggml.model` `gpt2` -> `bpe`, `llama` -> `spm`; `add_bos` defaults
//!   to true for spm and for the Llama 3 pre-tokenizers (`llama-bpe`, ..., as llama.cpp)
//!   and false for other bpe; `add_space_prefix` true for spm, false for bpe.
//! - Tensor names: `.weight` dropped, `.bias` -> `_bias`; shapes reversed (GGUF dims are
//!   innermost first).
//!
//! Every value is validated by the runtime's rules ([`crate::source::validate`]) before
//! anything is sized by it.

use crate::error::{ConvertError, Result};
use crate::gguf::{Array, GgmlType, Gguf, GgufError, TensorInfo as GgufTensor};
use crate::source::{eot_ids, input_error, special_id, split_rows, validate, Source, SrcTensor};
use pipit_format::arch::{check_layer_count, Activation, Family, Feature, RopePairs};
use pipit_format::{Metadata, Value};
use std::borrow::Cow;

fn req<T>(v: std::result::Result<Option<T>, GgufError>, key: &str) -> Result<T> {
    v?.ok_or_else(|| ConvertError::MissingKey {
        key: key.to_string(),
    })
}

fn positive(key: &str, v: u32) -> Result<u32> {
    if v == 0 {
        return Err(ConvertError::BadValue {
            key: key.into(),
            value: "0".into(),
            reason: "must be positive".into(),
        });
    }
    Ok(v)
}

/// The values of a 1-D F32 tensor (RoPE factors).
fn f32_values(g: &Gguf, t: &GgufTensor) -> Result<Vec<f32>> {
    if t.ggml_type != GgmlType::F32 || t.dims.len() != 1 {
        return Err(ConvertError::Unsupported {
            what: format!("tensor {:?}: RoPE factors must be a 1-D F32 tensor", t.name),
        });
    }
    Ok(g.data(t)
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// Builds the source model from a parsed GGUF file. `file_name` goes into `general.source`.
pub fn build<'a>(g: &Gguf<'a>, file_name: &str) -> Result<Source<'a>> {
    let arch = req(g.get_str("general.architecture"), "general.architecture")?;
    let fam = Family::by_name(arch).ok_or_else(|| ConvertError::UnknownArchitecture {
        found: arch.to_string(),
    })?;
    let k = |s: &str| format!("{arch}.{s}");
    let u = |s: &str| -> Result<u32> { positive(&k(s), req(g.get_u32(&k(s)), &k(s))?) };

    let n_layer = u("block_count")?;
    // A layer count the tensors cannot hold is a lie, refused before it sizes anything.
    check_layer_count(fam, n_layer as usize, g.tensors.len(), &k("block_count"))
        .map_err(input_error)?;
    let d_model = u("embedding_length")?;
    let n_head = u("attention.head_count")?;
    let n_kv_head = positive(
        &k("attention.head_count_kv"),
        g.get_u32(&k("attention.head_count_kv"))?.unwrap_or(n_head),
    )?;
    let head_dim = match g.get_u32(&k("attention.key_length"))? {
        Some(hd) => positive(&k("attention.key_length"), hd)?,
        None if d_model % n_head == 0 => d_model / n_head,
        None => {
            return Err(ConvertError::BadValue {
                key: k("embedding_length"),
                value: d_model.to_string(),
                reason: format!("not divisible by head_count {n_head} and no key_length given"),
            })
        }
    };
    if let Some(vl) = g.get_u32(&k("attention.value_length"))? {
        if vl != head_dim {
            return Err(ConvertError::Unsupported {
                what: format!(
                    "{} = {vl} differs from the key length {head_dim}",
                    k("attention.value_length")
                ),
            });
        }
    }
    let d_ff = u("feed_forward_length")?;
    let n_ctx = u("context_length")?;
    let norm_eps = req(
        g.get_f32(&k("attention.layer_norm_rms_epsilon")),
        &k("attention.layer_norm_rms_epsilon"),
    )?;
    let rope_theta = g.get_f32(&k("rope.freq_base"))?.unwrap_or(10000.0);
    let rope_dim = g.get_u32(&k("rope.dimension_count"))?.unwrap_or(head_dim);

    let token_embd = g
        .tensor("token_embd.weight")
        .ok_or(ConvertError::MissingTensor {
            tensor: "token_embd.weight".into(),
        })?;
    let n_vocab = match token_embd.dims.as_slice() {
        [_, rows] => u32::try_from(*rows).map_err(|_| ConvertError::BadValue {
            key: "rows of token_embd.weight".into(),
            value: rows.to_string(),
            reason: "too many".into(),
        })?,
        dims => {
            return Err(ConvertError::ShapeMismatch {
                tensor: "token_embd.weight".into(),
                expected: vec![0, u64::from(d_model)],
                found: dims.iter().rev().copied().collect(),
            })
        }
    };
    let tied = g.tensor("output.weight").is_none();
    let has = |suffix: &str| g.tensors.iter().any(|t| t.name.ends_with(suffix));
    let feature = |f: Feature, present: bool| match f {
        Feature::No => false,
        Feature::Yes => true,
        Feature::Optional => present,
    };

    let mut m = Metadata::new();
    m.set("general.architecture", Value::Str(fam.name.into()));
    m.set(
        "general.name",
        Value::Str(g.get_str("general.name")?.unwrap_or("").to_string()),
    );
    m.set("general.source", Value::Str(format!("gguf:{file_name}")));
    m.set("model.n_layer", Value::U32(n_layer));
    m.set("model.d_model", Value::U32(d_model));
    m.set("model.n_head", Value::U32(n_head));
    m.set("model.n_kv_head", Value::U32(n_kv_head));
    m.set("model.head_dim", Value::U32(head_dim));
    m.set("model.d_ff", Value::U32(d_ff));
    m.set("model.n_vocab", Value::U32(n_vocab));
    m.set("model.n_ctx_train", Value::U32(n_ctx));
    m.set("model.norm_eps", Value::F32(norm_eps));
    m.set("model.rope_theta", Value::F32(rope_theta));
    m.set("model.rope_dim", Value::U32(rope_dim));
    rope_scaling(g, &k, &mut m)?;
    let pairs = match fam.gguf_rope_pairs {
        RopePairs::Adjacent => "adjacent",
        RopePairs::Half => "half",
    };
    m.set("model.rope_pairs", Value::Str(pairs.into()));
    m.set("model.tied_embeddings", Value::Bool(tied));
    m.set(
        "model.qkv_bias",
        Value::Bool(feature(fam.qkv_bias, has(".attn_q.bias"))),
    );
    m.set(
        "model.qk_norm",
        Value::Bool(feature(fam.qk_norm, has(".attn_q_norm.weight"))),
    );
    m.set(
        "model.post_norms",
        Value::Bool(feature(fam.post_norms, has(".post_attention_norm.weight"))),
    );
    let activation = match fam.activation {
        Activation::Silu => "silu",
        Activation::GeluTanh => "gelu_tanh",
    };
    m.set("model.activation", Value::Str(activation.into()));
    let layers = sliding_layers(g, &k, fam, n_layer)?;
    let window = if layers.contains(&1) {
        u("attention.sliding_window")?
    } else {
        0
    };
    m.set("model.sliding_window", Value::U32(window));
    m.set("model.layer_sliding", Value::ArrU8(layers));
    if let Some(b) = g.get_f32(&k("rope.freq_base_swa"))? {
        m.set("model.rope_theta_local", Value::F32(b));
    } else if let Some(b) = fam.gguf_rope_theta_local {
        m.set("model.rope_theta_local", Value::F32(b));
    }
    m.set(
        "model.embed_scale",
        Value::F32(if fam.embed_scale_sqrt_d {
            (d_model as f32).sqrt()
        } else {
            1.0
        }),
    );
    let qpas = match fam.gguf_qpas_d_over_heads_layers {
        Some(n) if n == n_layer as usize => d_model / n_head,
        _ => head_dim,
    };
    m.set("model.attn_scale", Value::F32(1.0 / (qpas as f32).sqrt()));
    for (gguf, key) in [
        ("attn_logit_softcapping", "model.attn_softcap"),
        ("final_logit_softcapping", "model.final_logit_softcap"),
    ] {
        if let Some(c) = g.get_f32(&k(gguf))? {
            if c != 0.0 {
                m.set(key, Value::F32(c));
            }
        }
    }
    tokenizer(g, &mut m, n_vocab as usize)?;

    let q = u64::from(n_head) * u64::from(head_dim);
    let kv = u64::from(n_kv_head) * u64::from(head_dim);
    let mut tensors = Vec::with_capacity(g.tensors.len());
    for t in &g.tensors {
        if matches!(
            t.name.as_str(),
            "rope_freqs.weight" | "rope_factors_long.weight" | "rope_factors_short.weight"
        ) {
            continue; // read into the metadata by rope_scaling
        }
        let name = if let Some(base) = t.name.strip_suffix(".weight") {
            base.to_string()
        } else if let Some(base) = t.name.strip_suffix(".bias") {
            format!("{base}_bias")
        } else {
            return Err(ConvertError::UnexpectedTensor {
                tensor: t.name.clone(),
            });
        };
        let src = SrcTensor {
            name: name.clone(),
            source_name: t.name.clone(),
            shape: t.shape(),
            ggml_type: t.ggml_type,
            data: Cow::Borrowed(g.data(t)),
        };
        let block = name.rsplit_once('.').map(|(b, _)| b.to_string());
        match (name.rsplit('.').next(), block) {
            (Some("attn_qkv"), Some(b)) if fam.fused_qkv => tensors.extend(split_rows(
                &src,
                &[
                    &format!("{b}.attn_q"),
                    &format!("{b}.attn_k"),
                    &format!("{b}.attn_v"),
                ],
                &[q, kv, kv],
            )?),
            (Some("ffn_up"), Some(b)) if fam.fused_gate_up => tensors.extend(split_rows(
                &src,
                &[&format!("{b}.ffn_gate"), &format!("{b}.ffn_up")],
                &[u64::from(d_ff), u64::from(d_ff)],
            )?),
            _ => tensors.push(src),
        }
    }
    validate(&m, tensors.len())?;
    Ok(Source { meta: m, tensors })
}

/// Writes `model.rope_scaling` and its parameters: Llama 3's `rope_freqs`, Phi-3's LongRoPE
/// factor tensors, or the linear factor of the keys.
fn rope_scaling(g: &Gguf, k: &dyn Fn(&str) -> String, m: &mut Metadata) -> Result<()> {
    let (short, long) = (
        g.tensor("rope_factors_short.weight"),
        g.tensor("rope_factors_long.weight"),
    );
    if let Some(t) = g.tensor("rope_freqs.weight") {
        m.set("model.rope_scaling", Value::Str("llama3".into()));
        m.set("model.rope_scale", Value::F32(1.0));
        m.set("model.rope_factors", Value::ArrF32(f32_values(g, t)?));
        return Ok(());
    }
    if let (Some(s), Some(l)) = (short, long) {
        let ctx_orig = req(
            g.get_u32(&k("rope.scaling.original_context_length")),
            &k("rope.scaling.original_context_length"),
        )?;
        m.set("model.rope_scaling", Value::Str("longrope".into()));
        m.set("model.rope_scale", Value::F32(1.0));
        m.set("model.rope_factors", Value::ArrF32(f32_values(g, s)?));
        m.set("model.rope_factors_long", Value::ArrF32(f32_values(g, l)?));
        m.set("model.rope_ctx_orig", Value::U32(ctx_orig));
        m.set(
            "model.rope_attn_factor",
            Value::F32(g.get_f32(&k("rope.scaling.attn_factor"))?.unwrap_or(1.0)),
        );
        return Ok(());
    }
    let (kind, scale) = linear_scaling(g, k)?;
    m.set("model.rope_scaling", Value::Str(kind.into()));
    m.set("model.rope_scale", Value::F32(scale));
    Ok(())
}

fn linear_scaling(g: &Gguf, k: &dyn Fn(&str) -> String) -> Result<(&'static str, f32)> {
    let factor = match g.get_f32(&k("rope.scaling.factor"))? {
        Some(f) => Some(f),
        None => g.get_f32(&k("rope.scale_linear"))?,
    };
    let kind = g.get_str(&k("rope.scaling.type"))?;
    let linear = match kind {
        None => factor.is_some_and(|f| f != 1.0),
        Some("none") => false,
        Some("linear") => true,
        Some(other) => {
            return Err(ConvertError::Unsupported {
                what: format!(
                    "{} = {other:?} (only none and linear)",
                    k("rope.scaling.type")
                ),
            })
        }
    };
    if !linear {
        return Ok(("none", 1.0));
    }
    match factor {
        Some(f) if f.is_finite() && f > 0.0 => Ok(("linear", f)),
        f => Err(ConvertError::BadValue {
            key: k("rope.scaling.factor"),
            value: format!("{f:?}"),
            reason: "linear RoPE scaling needs a positive factor".into(),
        }),
    }
}

/// `layer_sliding`: the GGUF's pattern key (an array of flags or a period), else the
/// family's pattern.
fn sliding_layers(
    g: &Gguf,
    k: &dyn Fn(&str) -> String,
    fam: &Family,
    n_layer: u32,
) -> Result<Vec<u8>> {
    let key = k("attention.sliding_window_pattern");
    match g.get(&key) {
        None => Ok(fam.layer_sliding(n_layer as usize)),
        Some(crate::gguf::Value::Array(a)) => {
            let v = a
                .to_i64s()
                .filter(|v| v.len() == n_layer as usize && v.iter().all(|&x| x == 0 || x == 1));
            v.map(|v| v.into_iter().map(|x| u8::from(x == 1)).collect())
                .ok_or_else(|| ConvertError::BadValue {
                    key,
                    value: format!("array of {} {}", a.len(), a.elem_type_name()),
                    reason: format!("expected {n_layer} flags of 0 or 1"),
                })
        }
        Some(_) => {
            let period = g.get_u32(&key)?.unwrap_or(0);
            Ok((0..n_layer)
                .map(|i| u8::from(period == 0 || (i + 1) % period != 0))
                .collect())
        }
    }
}

fn tokenizer(g: &Gguf, m: &mut Metadata, n_vocab: usize) -> Result<()> {
    let missing = |what: &str| ConvertError::MissingTokenizer {
        what: what.to_string(),
    };
    let model = g
        .get_str("tokenizer.ggml.model")?
        .ok_or_else(|| missing("GGUF key tokenizer.ggml.model is absent"))?;
    let kind = match model {
        "gpt2" => "bpe",
        "llama" => "spm",
        other => {
            return Err(ConvertError::Unsupported {
                what: format!("tokenizer.ggml.model = {other:?} (supported: gpt2, llama)"),
            })
        }
    };
    let tokens = match g.get_array("tokenizer.ggml.tokens")? {
        Some(Array::Str(t)) => t,
        Some(a) => {
            return Err(ConvertError::BadValue {
                key: "tokenizer.ggml.tokens".into(),
                value: format!("array of {}", a.elem_type_name()),
                reason: "expected strings".into(),
            })
        }
        None => return Err(missing("GGUF key tokenizer.ggml.tokens is absent")),
    };
    if tokens.len() != n_vocab {
        return Err(ConvertError::BadValue {
            key: "tokenizer.ggml.tokens".into(),
            value: format!("{} tokens", tokens.len()),
            reason: format!("token_embd has {n_vocab} rows"),
        });
    }
    let types: Vec<u8> = match g.get_array("tokenizer.ggml.token_type")? {
        None => vec![1; n_vocab],
        Some(a) => {
            let v = a.to_i64s().filter(|v| v.len() == n_vocab).ok_or_else(|| {
                ConvertError::BadValue {
                    key: "tokenizer.ggml.token_type".into(),
                    value: format!("array of {} {}", a.len(), a.elem_type_name()),
                    reason: format!("expected {n_vocab} integers"),
                }
            })?;
            v.iter()
                .enumerate()
                .map(|(i, &t)| {
                    u8::try_from(t)
                        .ok()
                        .filter(|&t| t <= 6)
                        .ok_or_else(|| ConvertError::BadValue {
                            key: format!("tokenizer.ggml.token_type[{i}]"),
                            value: t.to_string(),
                            reason: "token types are 0..=6".into(),
                        })
                })
                .collect::<Result<_>>()?
        }
    };
    let id = |key: &str| -> Result<i32> {
        let v =
            match g.get(key) {
                None => None,
                Some(v) => Some(v.as_i128().and_then(|x| i64::try_from(x).ok()).ok_or_else(
                    || ConvertError::BadValue {
                        key: key.into(),
                        value: v.type_name(),
                        reason: "expected an integer token id".into(),
                    },
                )?),
            };
        special_id(key, v, n_vocab)
    };
    let bos = id("tokenizer.ggml.bos_token_id")?;
    let eos = id("tokenizer.ggml.eos_token_id")?;
    let unk = id("tokenizer.ggml.unknown_token_id")?;
    let pad = id("tokenizer.ggml.padding_token_id")?;
    let explicit: Vec<i32> = [
        id("tokenizer.ggml.eot_token_id")?,
        id("tokenizer.ggml.eom_token_id")?,
    ]
    .into_iter()
    .filter(|&i| i >= 0)
    .collect();
    let spm = kind == "spm";

    m.set("tokenizer.kind", Value::Str(kind.into()));
    m.set(
        "tokenizer.pre",
        Value::Str(
            g.get_str("tokenizer.ggml.pre")?
                .unwrap_or("default")
                .to_string(),
        ),
    );
    m.set("tokenizer.tokens", Value::ArrStr(tokens.clone()));
    if spm {
        match g.get_array("tokenizer.ggml.scores")? {
            Some(Array::F32(s)) if s.len() == n_vocab => {
                m.set("tokenizer.scores", Value::ArrF32(s.clone()))
            }
            Some(a) => {
                return Err(ConvertError::BadValue {
                    key: "tokenizer.ggml.scores".into(),
                    value: format!("array of {} {}", a.len(), a.elem_type_name()),
                    reason: format!("expected {n_vocab} f32"),
                })
            }
            None => return Err(missing(
                "GGUF key tokenizer.ggml.scores is absent (needed by a SentencePiece vocabulary)",
            )),
        }
    }
    m.set("tokenizer.token_types", Value::ArrU8(types));
    if !spm {
        match g.get_array("tokenizer.ggml.merges")? {
            Some(Array::Str(s)) => m.set("tokenizer.merges", Value::ArrStr(s.clone())),
            Some(a) => {
                return Err(ConvertError::BadValue {
                    key: "tokenizer.ggml.merges".into(),
                    value: format!("array of {}", a.elem_type_name()),
                    reason: "expected strings".into(),
                })
            }
            None => {
                return Err(missing(
                    "GGUF key tokenizer.ggml.merges is absent (needed by a BPE vocabulary)",
                ))
            }
        }
    }
    m.set("tokenizer.bos_id", Value::I32(bos));
    m.set("tokenizer.eos_id", Value::I32(eos));
    m.set("tokenizer.unk_id", Value::I32(unk));
    m.set("tokenizer.pad_id", Value::I32(pad));
    m.set(
        "tokenizer.eot_ids",
        Value::ArrI32(eot_ids(tokens, eos, &explicit)),
    );
    // Absent, llama.cpp adds BOS for SentencePiece and for the Llama 3 pre-tokenizers.
    let pre = g.get_str("tokenizer.ggml.pre")?.unwrap_or("default");
    let bos_by_default = spm || matches!(pre, "llama3" | "llama-v3" | "llama-bpe" | "pixtral");
    m.set(
        "tokenizer.add_bos",
        Value::Bool(
            g.get_bool("tokenizer.ggml.add_bos_token")?
                .unwrap_or(bos_by_default),
        ),
    );
    m.set(
        "tokenizer.add_space_prefix",
        Value::Bool(
            g.get_bool("tokenizer.ggml.add_space_prefix")?
                .unwrap_or(spm),
        ),
    );
    if let Some(t) = g.get_str("tokenizer.chat_template")? {
        m.set("tokenizer.chat_template", Value::Str(t.to_string()));
    }
    Ok(())
}
