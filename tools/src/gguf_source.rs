//! GGUF -> [`Source`]: metadata keys of SPEC.md from the GGUF keys, tensors renamed.
//!
//! Rules (see also the `--help` text):
//! - `general.architecture`: `llama` -> llama (q/k rows are stored permuted for adjacent-pair
//!   RoPE: `rope_pairs = adjacent`); `qwen2` -> llama with `rope_pairs = half` (llama.cpp
//!   stores Qwen2 unpermuted, NEOX RoPE); `gemma3` -> gemma3, `half`.
//! - `head_dim` = `{arch}.attention.key_length`, else `d_model / n_head`; `rope_dim` =
//!   `{arch}.rope.dimension_count`, else `head_dim`.
//! - gemma3: `layer_sliding[i] = (i + 1) % 6 != 0` (or the period in
//!   `gemma3.attention.sliding_window_pattern`), `rope_theta_local` = `{arch}.rope.freq_base_swa`
//!   or 10000, `embed_scale = sqrt(d_model)`, `attn_scale = 1/sqrt(query_pre_attn_scalar)`
//!   where query_pre_attn_scalar is `head_dim`, except for the 27B model (62 layers) where it
//!   is `d_model / n_head` (llama.cpp's rule; GGUF does not store it), activation `gelu_tanh`.
//! - Tokenizer: `tokenizer.ggml.model` `gpt2` -> `bpe`, `llama` -> `spm`; `add_bos` defaults
//!   to true for spm and false for bpe, `add_space_prefix` likewise.
//! - Tensor names: `.weight` dropped, `.bias` -> `_bias`; shapes reversed (GGUF dims are
//!   innermost first).

use crate::error::{ConvertError, Result};
use crate::gguf::{Array, Gguf, GgufError};
use crate::source::{eot_ids, gemma3_layer_sliding, special_id, Source, SrcTensor};
use pipit_format::{Metadata, Value};
use std::borrow::Cow;

/// Which GGUF architectures map to which pipit architecture and RoPE pair convention.
fn arch_map(arch: &str) -> Option<(&'static str, &'static str)> {
    match arch {
        "llama" => Some(("llama", "adjacent")),
        "qwen2" => Some(("llama", "half")),
        "gemma3" => Some(("gemma3", "half")),
        _ => None,
    }
}

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

/// Builds the source model from a parsed GGUF file. `file_name` goes into `general.source`.
pub fn build<'a>(g: &Gguf<'a>, file_name: &str) -> Result<Source<'a>> {
    let arch = req(g.get_str("general.architecture"), "general.architecture")?;
    let (pipit_arch, rope_pairs) =
        arch_map(arch).ok_or_else(|| ConvertError::UnknownArchitecture {
            found: arch.to_string(),
        })?;
    let gemma = pipit_arch == "gemma3";
    let k = |s: &str| format!("{arch}.{s}");
    let u = |s: &str| -> Result<u32> { positive(&k(s), req(g.get_u32(&k(s)), &k(s))?) };

    let n_layer = u("block_count")?;
    // Each block has at least 9 tensors: a larger count is a lie, refused before it sizes anything.
    if u64::from(n_layer) * 9 > g.tensors.len() as u64 {
        return Err(ConvertError::BadValue {
            key: k("block_count"),
            value: n_layer.to_string(),
            reason: format!("the file has only {} tensors", g.tensors.len()),
        });
    }
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
    if n_head % n_kv_head != 0 {
        return Err(ConvertError::BadValue {
            key: k("attention.head_count_kv"),
            value: n_kv_head.to_string(),
            reason: format!("does not divide head_count {n_head}"),
        });
    }
    let d_ff = u("feed_forward_length")?;
    let n_ctx = u("context_length")?;
    let norm_eps = req(
        g.get_f32(&k("attention.layer_norm_rms_epsilon")),
        &k("attention.layer_norm_rms_epsilon"),
    )?;
    let rope_theta = g.get_f32(&k("rope.freq_base"))?.unwrap_or(10000.0);
    let rope_dim = g.get_u32(&k("rope.dimension_count"))?.unwrap_or(head_dim);
    if rope_dim > head_dim || rope_dim % 2 != 0 {
        return Err(ConvertError::BadValue {
            key: k("rope.dimension_count"),
            value: rope_dim.to_string(),
            reason: format!("must be even and at most head_dim {head_dim}"),
        });
    }
    let (rope_scaling, rope_scale) = rope_scaling(g, &k)?;

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

    let mut m = Metadata::new();
    m.set("general.architecture", Value::Str(pipit_arch.into()));
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
    m.set("model.rope_scaling", Value::Str(rope_scaling.into()));
    m.set("model.rope_scale", Value::F32(rope_scale));
    m.set("model.rope_pairs", Value::Str(rope_pairs.into()));
    m.set("model.tied_embeddings", Value::Bool(tied));
    if gemma {
        let window = u("attention.sliding_window")?;
        let layers = gemma3_sliding(g, &k, n_layer)?;
        let qpas = if n_layer == 62 {
            d_model / n_head
        } else {
            head_dim
        };
        m.set("model.activation", Value::Str("gelu_tanh".into()));
        m.set(
            "model.rope_theta_local",
            Value::F32(g.get_f32(&k("rope.freq_base_swa"))?.unwrap_or(10000.0)),
        );
        m.set("model.sliding_window", Value::U32(window));
        m.set("model.layer_sliding", Value::ArrU8(layers));
        m.set("model.embed_scale", Value::F32((d_model as f32).sqrt()));
        m.set("model.attn_scale", Value::F32(1.0 / (qpas as f32).sqrt()));
    } else {
        m.set("model.activation", Value::Str("silu".into()));
        m.set("model.sliding_window", Value::U32(0));
        m.set(
            "model.layer_sliding",
            Value::ArrU8(vec![0; n_layer as usize]),
        );
        m.set("model.embed_scale", Value::F32(1.0));
        m.set(
            "model.attn_scale",
            Value::F32(1.0 / (head_dim as f32).sqrt()),
        );
    }
    if let Some(c) = g.get_f32(&k("final_logit_softcapping"))? {
        if c != 0.0 {
            m.set("model.final_logit_softcap", Value::F32(c));
        }
    }
    tokenizer(g, &mut m, n_vocab as usize)?;

    let mut tensors = Vec::with_capacity(g.tensors.len());
    for t in &g.tensors {
        if t.name == "rope_freqs.weight" {
            return Err(ConvertError::Unsupported {
                what: "tensor \"rope_freqs.weight\" (Llama 3.1-style RoPE frequency scaling)"
                    .into(),
            });
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
        tensors.push(SrcTensor {
            name,
            source_name: t.name.clone(),
            shape: t.shape(),
            ggml_type: t.ggml_type,
            data: Cow::Borrowed(g.data(t)),
        });
    }
    Ok(Source { meta: m, tensors })
}

fn rope_scaling(g: &Gguf, k: &dyn Fn(&str) -> String) -> Result<(&'static str, f32)> {
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

fn gemma3_sliding(g: &Gguf, k: &dyn Fn(&str) -> String, n_layer: u32) -> Result<Vec<u8>> {
    let key = k("attention.sliding_window_pattern");
    match g.get(&key) {
        None => Ok(gemma3_layer_sliding(n_layer, 6)),
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
        Some(_) => Ok(gemma3_layer_sliding(n_layer, g.get_u32(&key)?.unwrap_or(6))),
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
    m.set(
        "tokenizer.add_bos",
        Value::Bool(g.get_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(spm)),
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
