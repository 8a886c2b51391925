//! Hugging Face model directory -> [`Source`].
//!
//! Reads `config.json` (model_type `llama`, `mistral`, `qwen2`, `qwen3`, `phi3`, `gemma2` or
//! `gemma3_text`: the families of [`pipit_format::arch::FAMILIES`]), every `*.safetensors` file
//! (F32, F16, BF16), `tokenizer.json` and, if present, `tokenizer_config.json` and
//! `chat_template.jinja`.
//!
//! Rules:
//! - The family ([`Family::by_hf_type`]) decides the rest, so that a directory and the GGUF
//!   llama.cpp makes from the same checkpoint give identical tensors: for `llama` (and
//!   mistral) q/k projection rows (and q/k biases) are permuted from Hugging Face's
//!   split-half layout to the adjacent-pair layout GGUF uses (`model.rope_pairs = adjacent`);
//!   the other families keep split halves (`half`). Fused `qkv_proj` / `gate_up_proj`
//!   (phi3) are split; `q_norm`/`k_norm` (qwen3, gemma3) are kept.
//! - Families with post-norms (Gemma 2 and 3) name a block's four norms
//!   `input_layernorm`, `post_attention_layernorm` (the attention output's norm there, the
//!   FFN input's elsewhere), `pre_feedforward_layernorm` and `post_feedforward_layernorm`.
//!   Their checkpoints store each RMSNorm weight `w` applied as `1 + w` (the family's
//!   `norm_plus_one`): the converter adds the 1 (in f32), as GGUF files already have it.
//! - Activation: config.json's `hidden_activation` (else `hidden_act`) must be the family's:
//!   `silu`, or `gelu_pytorch_tanh` for the gelu-tanh families.
//! - Gemma: `embed_scale = sqrt(hidden_size)`, `attn_scale = 1/sqrt(query_pre_attn_scalar)`
//!   (default head_dim), soft-caps from `attn_logit_softcapping` and
//!   `final_logit_softcapping`, `rope_theta_local` from `rope_local_base_freq` (else the
//!   family's).
//! - Sliding layers: `layer_types` (`sliding_attention` / `full_attention`) when present;
//!   else Gemma 3's `sliding_window_pattern` (a period); else, given a `sliding_window`, the
//!   family's pattern (Gemma 2: the even layers); Mistral's `sliding_window` applies to
//!   every layer, Qwen 2's from `max_window_layers` on when `use_sliding_window`.
//! - RoPE scaling: linear, Llama 3 (the per-pair factors computed from config.json's
//!   parameters) or LongRoPE (see `hf_rope_scaling`); `partial_rotary_factor` sets rope_dim.
//! - Tokenizer kind: a BPE model with a `ByteLevel` pre-tokenizer or decoder is `bpe`; a BPE
//!   model with `byte_fallback` is `spm` (Llama 2 / Mistral / TinyLlama style); anything else
//!   is refused. spm scores are derived from the merges: the token a merge of rank r
//!   produces scores -r (so llama.cpp-style best-score merging follows the merge order);
//!   tokens no merge produces score -1e9.
//! - Token types: an added token marked `special` is control (3), other added tokens are
//!   user-defined (4); for spm, `<0xXX>` tokens are byte (6) and the model's unk token is
//!   unknown (2); ids without a token (vocabulary padding up to the embedding rows) become
//!   `[PAD<id>]`, unused (5); everything else is normal (1).
//! - `tokenizer.pre` (bpe): `qwen2` for model_type qwen2 and qwen3; `llama3` when a Split
//!   pre-tokenizer's regex groups digits by `\p{N}{1,3}`; `smollm` for a `Digits`
//!   (individual_digits) + `ByteLevel` sequence (SmolLM2 / StarCoder); `gpt-2` for a lone
//!   regex-splitting `ByteLevel`; else `default`. spm: `default`.
//! - Special tokens: `bos_token`/`eos_token`/`unk_token`/`pad_token` of tokenizer_config.json
//!   (string or `{"content": ..}`), else config.json's `*_token_id` (an eos list adds its
//!   later ids to `eot_ids`); `add_bos` = `add_bos_token` of tokenizer_config.json, else true
//!   when the post-processor's template starts with a special token, else true for spm and
//!   false for bpe; `add_space_prefix` (spm) = a `Prepend("▁")` normalizer or a Metaspace
//!   pre-tokenizer that prepends.

use crate::dequant;
use crate::error::{ConvertError, Result};
use crate::gguf::GgmlType;
use crate::source::{
    eot_ids, half_to_adjacent, input_error, special_id, split_rows, validate, Source, SrcTensor,
};
use memmap2::Mmap;
use pipit_format::arch::{
    check_layer_count, Activation, Family, Feature, RopePairs, SlidingPattern,
};
use pipit_format::{Metadata, Value};
use serde_json::Value as J;
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// An opened Hugging Face model directory: parsed JSON files and mapped weights.
pub struct HfDir {
    dir: PathBuf,
    config: J,
    tokenizer: J,
    tokenizer_config: Option<J>,
    chat_template_file: Option<String>,
    weights: Vec<(PathBuf, Mmap)>,
}

fn read_json(path: &Path) -> Result<J> {
    let text = std::fs::read_to_string(path).map_err(|e| ConvertError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    serde_json::from_str(&text).map_err(|e| ConvertError::Json {
        file: path.to_path_buf(),
        reason: format!("invalid JSON: {e}"),
    })
}

impl HfDir {
    /// Opens `dir`: requires config.json, tokenizer.json and at least one *.safetensors file.
    pub fn open(dir: &Path) -> Result<HfDir> {
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(ConvertError::Input {
                path: dir.to_path_buf(),
                reason: "a directory without config.json (expected a Hugging Face model directory)"
                    .into(),
            });
        }
        let config = read_json(&config_path)?;
        // Refuse an unknown architecture before looking at anything else.
        arch_of(&config, &config_path)?;
        let tok_path = dir.join("tokenizer.json");
        if !tok_path.is_file() {
            let hint = if dir.join("tokenizer.model").is_file() {
                " (only a SentencePiece tokenizer.model is present; it is not supported)"
            } else {
                ""
            };
            return Err(ConvertError::MissingTokenizer {
                what: format!("{} not found{hint}", tok_path.display()),
            });
        }
        let tokenizer = read_json(&tok_path)?;
        let tc_path = dir.join("tokenizer_config.json");
        let tokenizer_config = if tc_path.is_file() {
            Some(read_json(&tc_path)?)
        } else {
            None
        };
        let jinja = dir.join("chat_template.jinja");
        let chat_template_file = if jinja.is_file() {
            Some(
                std::fs::read_to_string(&jinja).map_err(|e| ConvertError::Io {
                    path: jinja.clone(),
                    source: e,
                })?,
            )
        } else {
            None
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| ConvertError::Io {
                path: dir.to_path_buf(),
                source: e,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors") && p.is_file())
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(ConvertError::Input {
                path: dir.to_path_buf(),
                reason: "no *.safetensors files".into(),
            });
        }
        let mut weights = Vec::with_capacity(files.len());
        for p in files {
            let f = std::fs::File::open(&p).map_err(|e| ConvertError::Io {
                path: p.clone(),
                source: e,
            })?;
            // SAFETY: a read-only *shared* map: its bytes alias the file, so another process
            // writing or truncating it during the conversion would change bytes behind an
            // immutable borrow or fault. The converter never writes its input and requires
            // that nobody else does meanwhile (as every mmap-based reader); all access goes
            // through bounds-checked slices after safetensors validated the header.
            let m = unsafe { Mmap::map(&f) }.map_err(|e| ConvertError::Io {
                path: p.clone(),
                source: e,
            })?;
            weights.push((p, m));
        }
        Ok(HfDir {
            dir: dir.to_path_buf(),
            config,
            tokenizer,
            tokenizer_config,
            chat_template_file,
            weights,
        })
    }

    /// Total size of the safetensors files.
    pub fn weights_bytes(&self) -> u64 {
        self.weights.iter().map(|(_, m)| m.len() as u64).sum()
    }

    /// Reads metadata, tokenizer and tensors.
    pub fn source(&self) -> Result<Source<'_>> {
        let cfg_path = self.dir.join("config.json");
        let cfg = Cfg {
            j: &self.config,
            file: &cfg_path,
        };
        let fam = arch_of(&self.config, &cfg_path)?;
        let model_type = self
            .config
            .get("model_type")
            .and_then(J::as_str)
            .unwrap_or("");

        let n_layer = cfg.u32("num_hidden_layers")?;
        let d_model = cfg.u32("hidden_size")?;
        let n_head = cfg.u32("num_attention_heads")?;
        let n_kv_head = cfg.opt_u32("num_key_value_heads")?.unwrap_or(n_head);
        let head_dim = match cfg.opt_u32("head_dim")? {
            Some(h) => h,
            None if d_model % n_head == 0 => d_model / n_head,
            None => {
                return Err(cfg.bad(
                    "hidden_size",
                    d_model,
                    "not divisible by num_attention_heads",
                ))
            }
        };
        if n_kv_head == 0 || n_head % n_kv_head != 0 {
            return Err(cfg.bad(
                "num_key_value_heads",
                n_kv_head,
                "must divide num_attention_heads",
            ));
        }
        if head_dim % 2 != 0 {
            return Err(cfg.bad("head_dim", head_dim, "must be even for RoPE"));
        }
        let (act_key, act) = match cfg.opt_str("hidden_activation")? {
            Some(a) => ("hidden_activation", a),
            None => ("hidden_act", cfg.opt_str("hidden_act")?.unwrap_or("silu")),
        };
        let (want, act_name) = match fam.activation {
            Activation::Silu => ("silu", "silu"),
            Activation::GeluTanh => ("gelu_pytorch_tanh", "gelu_tanh"),
        };
        if act != want {
            return Err(ConvertError::Unsupported {
                what: format!(
                    "{}: {act_key} = {act:?} ({} uses {want})",
                    cfg_path.display(),
                    fam.name
                ),
            });
        }

        // Tensors: the embedding's rows give n_vocab.
        let mut raw: HashMap<String, SrcTensor<'_>> = HashMap::new();
        for (path, map) in &self.weights {
            let bad = |reason: String| ConvertError::Safetensors {
                file: path.clone(),
                reason,
            };
            let (n, st) = safetensors::SafeTensors::read_metadata(map)
                .map_err(|e| bad(safetensors_reason(&e)))?;
            let base = n
                .checked_add(8)
                .ok_or_else(|| bad("header length overflows".into()))?;
            for (name, info) in st.tensors() {
                if name.ends_with("rotary_emb.inv_freq") {
                    continue;
                }
                let ty = match info.dtype {
                    safetensors::Dtype::F32 => GgmlType::F32,
                    safetensors::Dtype::F16 => GgmlType::F16,
                    safetensors::Dtype::BF16 => GgmlType::Bf16,
                    d => {
                        return Err(ConvertError::UnsupportedDtype {
                            tensor: name,
                            dtype: format!("{d:?} (safetensors)"),
                        })
                    }
                };
                let (a, b) = info.data_offsets;
                let data = base
                    .checked_add(a)
                    .zip(base.checked_add(b))
                    .and_then(|(a, b)| map.get(a..b))
                    .ok_or_else(|| {
                        bad(format!(
                            "tensor {name:?}: data offsets {a}..{b} outside the file"
                        ))
                    })?;
                let shape: Vec<u64> = info.shape.iter().map(|&d| d as u64).collect();
                let Some(pipit) = hf_name(&name, fam) else {
                    return Err(ConvertError::UnexpectedTensor { tensor: name });
                };
                let t = SrcTensor {
                    name: pipit.clone(),
                    source_name: name.clone(),
                    shape,
                    ggml_type: ty,
                    data: Cow::Borrowed(data),
                };
                if raw.insert(pipit, t).is_some() {
                    return Err(bad(format!(
                        "tensor {name:?} appears in more than one file"
                    )));
                }
            }
        }
        let embd = raw.get("token_embd").ok_or(ConvertError::MissingTensor {
            tensor: "model.embed_tokens.weight".into(),
        })?;
        let n_vocab = match embd.shape.as_slice() {
            [rows, _] => {
                u32::try_from(*rows).map_err(|_| cfg.bad("vocab_size", rows, "too large"))?
            }
            s => {
                return Err(ConvertError::ShapeMismatch {
                    tensor: embd.source_name.clone(),
                    expected: vec![
                        u64::from(cfg.opt_u32("vocab_size")?.unwrap_or(0)),
                        u64::from(d_model),
                    ],
                    found: s.to_vec(),
                })
            }
        };
        if let Some(v) = cfg.opt_u32("vocab_size")? {
            if v != n_vocab {
                return Err(cfg.bad(
                    "vocab_size",
                    v,
                    &format!("model.embed_tokens.weight has {n_vocab} rows"),
                ));
            }
        }
        let d_ff = cfg.u32("intermediate_size")?;
        let tied = match cfg.opt_bool("tie_word_embeddings")? {
            Some(true) => {
                raw.remove("output");
                true
            }
            Some(false) if !raw.contains_key("output") => {
                return Err(ConvertError::MissingTensor {
                    tensor: "lm_head.weight (tie_word_embeddings is false)".into(),
                })
            }
            _ => !raw.contains_key("output"),
        };
        // A layer count the tensors cannot hold is refused before it sizes anything.
        check_layer_count(fam, n_layer as usize, raw.len(), "num_hidden_layers")
            .map_err(input_error)?;
        let (window, layers) = sliding(&cfg, fam, model_type, n_layer)?;
        let feature = |f: Feature, present: bool| match f {
            Feature::No => false,
            Feature::Yes => true,
            Feature::Optional => present,
        };
        let has = |suffix: &str| raw.keys().any(|n| n.ends_with(suffix));
        let qkv_bias = feature(fam.qkv_bias, has(".attn_q_bias"));
        let qk_norm = feature(fam.qk_norm, has(".attn_q_norm"));
        let rope_dim = match cfg.opt_f32("partial_rotary_factor")? {
            Some(f) => ((head_dim as f32 * f) as u32) & !1,
            None => head_dim,
        };
        let rope_theta = cfg.opt_f32("rope_theta")?.unwrap_or(10000.0);

        let mut m = Metadata::new();
        let name = self
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        m.set("general.architecture", Value::Str(fam.name.into()));
        m.set("general.name", Value::Str(name.clone()));
        m.set("general.source", Value::Str(format!("hf:{name}")));
        m.set("model.n_layer", Value::U32(n_layer));
        m.set("model.d_model", Value::U32(d_model));
        m.set("model.n_head", Value::U32(n_head));
        m.set("model.n_kv_head", Value::U32(n_kv_head));
        m.set("model.head_dim", Value::U32(head_dim));
        m.set("model.d_ff", Value::U32(d_ff));
        m.set("model.n_vocab", Value::U32(n_vocab));
        m.set(
            "model.n_ctx_train",
            Value::U32(cfg.u32("max_position_embeddings")?),
        );
        m.set("model.norm_eps", Value::F32(cfg.f32("rms_norm_eps")?));
        m.set("model.rope_theta", Value::F32(rope_theta));
        m.set("model.rope_dim", Value::U32(rope_dim));
        hf_rope_scaling(&cfg, rope_theta, rope_dim, &mut m)?;
        // Families whose GGUF files use adjacent pairs get their q/k rows permuted below,
        // so that the directory and the GGUF give identical files.
        let permute = fam.gguf_rope_pairs == RopePairs::Adjacent;
        let pairs = if permute { "adjacent" } else { "half" };
        m.set("model.rope_pairs", Value::Str(pairs.into()));
        m.set("model.tied_embeddings", Value::Bool(tied));
        m.set("model.qkv_bias", Value::Bool(qkv_bias));
        m.set("model.qk_norm", Value::Bool(qk_norm));
        m.set(
            "model.post_norms",
            Value::Bool(fam.post_norms == Feature::Yes),
        );
        m.set("model.activation", Value::Str(act_name.into()));
        m.set("model.sliding_window", Value::U32(window));
        m.set("model.layer_sliding", Value::ArrU8(layers));
        if let Some(b) = cfg.opt_f32("rope_local_base_freq")? {
            m.set("model.rope_theta_local", Value::F32(b));
        } else if let Some(b) = fam.gguf_rope_theta_local {
            m.set("model.rope_theta_local", Value::F32(b));
        }
        let embed_scale = if fam.embed_scale_sqrt_d {
            (d_model as f32).sqrt()
        } else {
            1.0
        };
        m.set("model.embed_scale", Value::F32(embed_scale));
        let qpas = match cfg.opt_f32("query_pre_attn_scalar")? {
            Some(q) => q,
            None => head_dim as f32,
        };
        m.set("model.attn_scale", Value::F32(1.0 / qpas.sqrt()));
        for (hf, key) in [
            ("attn_logit_softcapping", "model.attn_softcap"),
            ("final_logit_softcapping", "model.final_logit_softcap"),
        ] {
            if let Some(c) = cfg.opt_f32(hf)? {
                if c != 0.0 {
                    m.set(key, Value::F32(c));
                }
            }
        }
        self.tokenizer_meta(&mut m, &cfg, model_type, n_vocab as usize)?;

        let mut names: Vec<String> = raw.keys().cloned().collect();
        names.sort();
        let mut tensors = Vec::with_capacity(names.len());
        for pipit in names {
            let Some(mut t) = raw.remove(&pipit) else {
                continue;
            };
            let block = pipit.rsplit_once('.').map_or("", |(b, _)| b).to_string();
            let (q, kv) = (
                u64::from(n_head) * u64::from(head_dim),
                u64::from(n_kv_head) * u64::from(head_dim),
            );
            match pipit.rsplit('.').next() {
                Some("attn_qkv") if fam.fused_qkv => {
                    let names = [
                        format!("{block}.attn_q"),
                        format!("{block}.attn_k"),
                        format!("{block}.attn_v"),
                    ];
                    let names: Vec<&str> = names.iter().map(String::as_str).collect();
                    tensors.extend(split_rows(&t, &names, &[q, kv, kv])?);
                    continue;
                }
                Some("ffn_up_fused") if fam.fused_gate_up => {
                    let names = [format!("{block}.ffn_gate"), format!("{block}.ffn_up")];
                    let names: Vec<&str> = names.iter().map(String::as_str).collect();
                    let ff = u64::from(d_ff);
                    tensors.extend(split_rows(&t, &names, &[ff, ff])?);
                    continue;
                }
                Some("attn_qkv" | "ffn_up_fused") => {
                    return Err(ConvertError::UnexpectedTensor {
                        tensor: t.source_name,
                    })
                }
                _ => {}
            }
            let heads = match pipit.rsplit('.').next() {
                Some("attn_q" | "attn_q_bias") if permute => Some(n_head),
                Some("attn_k" | "attn_k_bias") if permute => Some(n_kv_head),
                _ => None,
            };
            if let (Some(h), Some(&rows)) = (heads, t.shape.first()) {
                let rows = usize::try_from(rows).map_err(|_| cfg.bad("rows", rows, "too large"))?;
                t.data = Cow::Owned(half_to_adjacent(&t.data, rows, h as usize, &t.source_name)?);
            }
            if fam.norm_plus_one && pipit.ends_with("norm") {
                t = plus_one(t)?;
            }
            tensors.push(t);
        }
        validate(&m, tensors.len())?;
        Ok(Source { meta: m, tensors })
    }

    fn tokenizer_meta(
        &self,
        m: &mut Metadata,
        cfg: &Cfg,
        model_type: &str,
        n_vocab: usize,
    ) -> Result<()> {
        let tok_path = self.dir.join("tokenizer.json");
        let tj = Cfg {
            j: &self.tokenizer,
            file: &tok_path,
        };
        let model = self
            .tokenizer
            .get("model")
            .filter(|v| v.is_object())
            .ok_or_else(|| tj.missing("model"))?;
        let mtype = model.get("type").and_then(J::as_str).unwrap_or("");
        if mtype != "BPE" {
            return Err(ConvertError::Unsupported {
                what: format!("{}: model type {mtype:?} (only BPE)", tok_path.display()),
            });
        }
        let byte_level = has_type(self.tokenizer.get("pre_tokenizer"), "ByteLevel")
            || has_type(self.tokenizer.get("decoder"), "ByteLevel");
        let byte_fallback = model
            .get("byte_fallback")
            .and_then(J::as_bool)
            .unwrap_or(false);
        let spm = !byte_level && byte_fallback;
        if !byte_level && !byte_fallback {
            return Err(ConvertError::Unsupported {
                what: format!(
                    "{}: a BPE tokenizer that is neither byte-level nor byte-fallback",
                    tok_path.display()
                ),
            });
        }

        // Vocabulary: model.vocab plus added_tokens, dense up to n_vocab.
        let vocab = model
            .get("vocab")
            .and_then(J::as_object)
            .ok_or_else(|| tj.missing("model.vocab"))?;
        let mut tokens: Vec<Option<String>> = vec![None; n_vocab];
        let mut types = vec![1u8; n_vocab];
        let put = |text: &str, id: &J, tokens: &mut Vec<Option<String>>| -> Result<usize> {
            let id = id
                .as_u64()
                .and_then(|i| usize::try_from(i).ok())
                .filter(|&i| i < n_vocab)
                .ok_or_else(|| ConvertError::BadValue {
                    key: format!("{}: id of token {text:?}", tok_path.display()),
                    value: id.to_string(),
                    reason: format!("outside the embedding's {n_vocab} rows"),
                })?;
            match &tokens[id] {
                Some(t) if t != text => Err(ConvertError::BadValue {
                    key: format!("{}: id {id}", tok_path.display()),
                    value: format!("{text:?}"),
                    reason: format!("already used by {t:?}"),
                }),
                _ => {
                    tokens[id] = Some(text.to_string());
                    Ok(id)
                }
            }
        };
        for (text, id) in vocab {
            put(text, id, &mut tokens)?;
        }
        let added = self
            .tokenizer
            .get("added_tokens")
            .and_then(J::as_array)
            .cloned()
            .unwrap_or_default();
        for a in &added {
            let text = a
                .get("content")
                .and_then(J::as_str)
                .ok_or_else(|| tj.missing("added_tokens[].content"))?;
            let id = put(text, a.get("id").unwrap_or(&J::Null), &mut tokens)?;
            types[id] = if a.get("special").and_then(J::as_bool).unwrap_or(false) {
                3
            } else {
                4
            };
        }
        let tokens: Vec<String> = tokens
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                t.unwrap_or_else(|| {
                    types[i] = 5;
                    format!("[PAD{i}]")
                })
            })
            .collect();
        let id_of: HashMap<&str, usize> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_str(), i))
            .collect();
        let model_unk = model.get("unk_token").and_then(J::as_str);
        if spm {
            for (i, t) in tokens.iter().enumerate() {
                if is_byte_token(t) {
                    types[i] = 6;
                }
            }
            if let Some(&u) = model_unk.and_then(|u| id_of.get(u)) {
                types[u] = 2;
            }
        }

        let merges = parse_merges(model.get("merges"), &tok_path)?;

        // Special tokens.
        let tc = self.tokenizer_config.as_ref();
        let lookup = |field: &str, id_key: &str| -> Result<Option<i64>> {
            if let Some(text) = tc.and_then(|c| token_text(c.get(field))) {
                let id = id_of
                    .get(text.as_str())
                    .ok_or_else(|| ConvertError::BadValue {
                        key: format!("tokenizer_config.json: {field}"),
                        value: format!("{text:?}"),
                        reason: "not a token of tokenizer.json".into(),
                    })?;
                return Ok(Some(*id as i64));
            }
            Ok(match cfg.j.get(id_key) {
                Some(J::Number(n)) => n.as_i64(),
                Some(J::Array(a)) => a.first().and_then(J::as_i64),
                _ => None,
            })
        };
        let bos = special_id("bos_id", lookup("bos_token", "bos_token_id")?, n_vocab)?;
        let eos = special_id("eos_id", lookup("eos_token", "eos_token_id")?, n_vocab)?;
        let unk = match lookup("unk_token", "unk_token_id")? {
            Some(u) => special_id("unk_id", Some(u), n_vocab)?,
            None => special_id(
                "unk_id",
                model_unk.and_then(|u| id_of.get(u)).map(|&i| i as i64),
                n_vocab,
            )?,
        };
        let pad = special_id("pad_id", lookup("pad_token", "pad_token_id")?, n_vocab)?;
        let mut explicit = Vec::new();
        if let Some(J::Array(a)) = cfg.j.get("eos_token_id") {
            for v in a.iter().skip(1) {
                explicit.push(special_id("eos_token_id", v.as_i64(), n_vocab)?);
            }
        }

        let add_bos = match tc.and_then(|c| c.get("add_bos_token")).and_then(J::as_bool) {
            Some(b) => b,
            None => template_adds_special(self.tokenizer.get("post_processor")).unwrap_or(spm),
        };
        let pre = if spm {
            "default"
        } else {
            bpe_pre(&self.tokenizer, model_type)
        };
        let chat_template = match tc.and_then(|c| c.get("chat_template")) {
            Some(J::String(s)) => Some(s.clone()),
            Some(J::Array(list)) => {
                let named = |n: &str| {
                    list.iter()
                        .find(|t| t.get("name").and_then(J::as_str) == Some(n))
                };
                named("default")
                    .or(list.first())
                    .and_then(|t| t.get("template"))
                    .and_then(J::as_str)
                    .map(str::to_string)
            }
            _ => self.chat_template_file.clone(),
        };

        m.set(
            "tokenizer.kind",
            Value::Str(if spm { "spm" } else { "bpe" }.into()),
        );
        m.set("tokenizer.pre", Value::Str(pre.into()));
        if spm {
            let mut scores = vec![-1e9f32; n_vocab];
            for (rank, mg) in merges.iter().enumerate() {
                let merged: String = mg.split(' ').collect();
                if let Some(&id) = id_of.get(merged.as_str()) {
                    if scores[id] == -1e9 {
                        scores[id] = -(rank as f32);
                    }
                }
            }
            m.set("tokenizer.tokens", Value::ArrStr(tokens.clone()));
            m.set("tokenizer.scores", Value::ArrF32(scores));
            m.set("tokenizer.token_types", Value::ArrU8(types));
        } else {
            m.set("tokenizer.tokens", Value::ArrStr(tokens.clone()));
            m.set("tokenizer.token_types", Value::ArrU8(types));
            m.set("tokenizer.merges", Value::ArrStr(merges));
        }
        m.set("tokenizer.bos_id", Value::I32(bos));
        m.set("tokenizer.eos_id", Value::I32(eos));
        m.set("tokenizer.unk_id", Value::I32(unk));
        m.set("tokenizer.pad_id", Value::I32(pad));
        m.set(
            "tokenizer.eot_ids",
            Value::ArrI32(eot_ids(&tokens, eos, &explicit)),
        );
        m.set("tokenizer.add_bos", Value::Bool(add_bos));
        m.set(
            "tokenizer.add_space_prefix",
            Value::Bool(spm && adds_space_prefix(&self.tokenizer)),
        );
        if let Some(t) = chat_template {
            m.set("tokenizer.chat_template", Value::Str(t));
        }
        Ok(())
    }
}

/// The family of config.json's model_type, if pipit converts it from Hugging Face.
fn arch_of(config: &J, path: &Path) -> Result<&'static Family> {
    let mt = config.get("model_type").and_then(J::as_str);
    let found = match mt {
        Some(t) => t.to_string(),
        None => config
            .get("architectures")
            .and_then(J::as_array)
            .and_then(|a| a.first())
            .and_then(J::as_str)
            .unwrap_or("(none)")
            .to_string(),
    };
    mt.and_then(Family::by_hf_type)
        .ok_or_else(|| ConvertError::UnknownArchitecture {
            found: format!("{found} (model_type in {})", path.display()),
        })
}

/// A Gemma norm weight `w` (applied as `1 + w`) as the multiplier itself, in f32.
fn plus_one(t: SrcTensor<'_>) -> Result<SrcTensor<'_>> {
    let n = t.shape.iter().product::<u64>();
    let n = usize::try_from(n).map_err(|_| ConvertError::BadValue {
        key: format!("elements of {}", t.source_name),
        value: n.to_string(),
        reason: "too many".into(),
    })?;
    let mut w = vec![0f32; n];
    dequant::dequantize(t.ggml_type, &t.data, &mut w).map_err(|e| ConvertError::BadValue {
        key: t.source_name.clone(),
        value: format!("{} bytes", t.data.len()),
        reason: e.to_string(),
    })?;
    let bytes = w.iter().flat_map(|v| (v + 1.0).to_le_bytes()).collect();
    Ok(SrcTensor {
        ggml_type: GgmlType::F32,
        data: Cow::Owned(bytes),
        ..t
    })
}

/// Maps a Hugging Face tensor name of a `fam` checkpoint to its pipit name.
pub fn hf_name(name: &str, fam: &Family) -> Option<String> {
    match name {
        "model.embed_tokens.weight" => return Some("token_embd".into()),
        "model.norm.weight" => return Some("output_norm".into()),
        "lm_head.weight" => return Some("output".into()),
        _ => {}
    }
    // Gemma's names for its four norms of a block (see the module docs).
    let post_norms = fam.post_norms == Feature::Yes;
    let rest = name.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: u32 = layer.parse().ok()?;
    let short = match rest {
        "input_layernorm.weight" => "attn_norm",
        "self_attn.q_proj.weight" => "attn_q",
        "self_attn.k_proj.weight" => "attn_k",
        "self_attn.v_proj.weight" => "attn_v",
        "self_attn.q_proj.bias" => "attn_q_bias",
        "self_attn.k_proj.bias" => "attn_k_bias",
        "self_attn.v_proj.bias" => "attn_v_bias",
        "self_attn.o_proj.weight" => "attn_output",
        "self_attn.q_norm.weight" => "attn_q_norm",
        "self_attn.k_norm.weight" => "attn_k_norm",
        "self_attn.qkv_proj.weight" => "attn_qkv",
        "mlp.gate_up_proj.weight" => "ffn_up_fused",
        "post_attention_layernorm.weight" if post_norms => "post_attention_norm",
        "pre_feedforward_layernorm.weight" if post_norms => "ffn_norm",
        "post_feedforward_layernorm.weight" if post_norms => "post_ffw_norm",
        "post_attention_layernorm.weight" => "ffn_norm",
        "mlp.gate_proj.weight" => "ffn_gate",
        "mlp.up_proj.weight" => "ffn_up",
        "mlp.down_proj.weight" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{short}"))
}

struct Cfg<'a> {
    j: &'a J,
    file: &'a Path,
}

impl Cfg<'_> {
    fn missing(&self, key: &str) -> ConvertError {
        ConvertError::Json {
            file: self.file.to_path_buf(),
            reason: format!("required field {key:?} is missing"),
        }
    }
    fn bad(&self, key: &str, v: impl std::fmt::Display, reason: &str) -> ConvertError {
        ConvertError::BadValue {
            key: format!("{}: {key}", self.file.display()),
            value: v.to_string(),
            reason: reason.into(),
        }
    }
    fn opt_u32(&self, key: &str) -> Result<Option<u32>> {
        match self.j.get(key) {
            None | Some(J::Null) => Ok(None),
            Some(v) => match v
                .as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .filter(|&x| x > 0)
            {
                Some(x) => Ok(Some(x)),
                None => Err(self.bad(key, v, "expected a positive integer")),
            },
        }
    }
    fn u32(&self, key: &str) -> Result<u32> {
        self.opt_u32(key)?.ok_or_else(|| self.missing(key))
    }
    fn opt_f32(&self, key: &str) -> Result<Option<f32>> {
        match self.j.get(key) {
            None | Some(J::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(|x| Some(x as f32))
                .ok_or_else(|| self.bad(key, v, "expected a number")),
        }
    }
    fn f32(&self, key: &str) -> Result<f32> {
        self.opt_f32(key)?.ok_or_else(|| self.missing(key))
    }
    fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.j.get(key) {
            None | Some(J::Null) => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.bad(key, v, "expected true or false")),
        }
    }
    fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        match self.j.get(key) {
            None | Some(J::Null) => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.bad(key, v, "expected a string")),
        }
    }
}

/// `model.rope_scaling` and its parameters from config.json's `rope_scaling`: linear,
/// Llama 3 (per-pair factors computed from `factor`, `low_freq_factor`,
/// `high_freq_factor` and `original_max_position_embeddings`, as Meta defines them) or
/// LongRoPE (`short_factor`, `long_factor`; the original context is config.json's
/// `original_max_position_embeddings`, and the attention factor
/// `sqrt(1 + ln(s) / ln(original))` with `s = max_position_embeddings / original`).
fn hf_rope_scaling(cfg: &Cfg, theta: f32, rope_dim: u32, m: &mut Metadata) -> Result<()> {
    let none = |m: &mut Metadata| {
        m.set("model.rope_scaling", Value::Str("none".into()));
        m.set("model.rope_scale", Value::F32(1.0));
    };
    let rs = match cfg.j.get("rope_scaling") {
        None | Some(J::Null) => {
            none(m);
            return Ok(());
        }
        Some(rs) => rs,
    };
    let kind = rs
        .get("rope_type")
        .or_else(|| rs.get("type"))
        .and_then(J::as_str)
        .unwrap_or("");
    let num = |key: &str| rs.get(key).and_then(J::as_f64);
    let factor = || match num("factor") {
        Some(f) if f.is_finite() && f > 0.0 => Ok(f),
        _ => Err(cfg.bad(
            "rope_scaling.factor",
            rs,
            "RoPE scaling needs a positive factor",
        )),
    };
    let half = (rope_dim / 2) as usize;
    match kind {
        "default" => none(m),
        "linear" => {
            m.set("model.rope_scaling", Value::Str("linear".into()));
            m.set("model.rope_scale", Value::F32(factor()? as f32));
        }
        "llama3" => {
            let factor = factor()?;
            let low = num("low_freq_factor").unwrap_or(1.0);
            let high = num("high_freq_factor").unwrap_or(4.0);
            let orig = num("original_max_position_embeddings").unwrap_or(8192.0);
            if high.partial_cmp(&low) != Some(std::cmp::Ordering::Greater) {
                return Err(cfg.bad(
                    "rope_scaling.high_freq_factor",
                    rs,
                    "must exceed low_freq_factor",
                ));
            }
            let (low_wavelen, high_wavelen) = (orig / low, orig / high);
            let factors: Vec<f32> = (0..half)
                .map(|i| {
                    let freq = f64::from(theta).powf(-2.0 * i as f64 / f64::from(rope_dim));
                    let wavelen = 2.0 * std::f64::consts::PI / freq;
                    let f = if wavelen < high_wavelen {
                        1.0
                    } else if wavelen > low_wavelen {
                        factor
                    } else {
                        let smooth = (orig / wavelen - low) / (high - low);
                        1.0 / ((1.0 - smooth) / factor + smooth)
                    };
                    f as f32
                })
                .collect();
            m.set("model.rope_scaling", Value::Str("llama3".into()));
            m.set("model.rope_scale", Value::F32(1.0));
            m.set("model.rope_factors", Value::ArrF32(factors));
        }
        "longrope" | "su" => {
            let list = |key: &str| -> Result<Vec<f32>> {
                let a = rs.get(key).and_then(J::as_array).ok_or_else(|| {
                    cfg.bad(
                        &format!("rope_scaling.{key}"),
                        rs,
                        "expected a list of numbers",
                    )
                })?;
                a.iter()
                    .map(|v| {
                        v.as_f64().map(|x| x as f32).ok_or_else(|| {
                            cfg.bad(&format!("rope_scaling.{key}"), v, "expected a number")
                        })
                    })
                    .collect()
            };
            let orig = cfg.u32("original_max_position_embeddings")?;
            let max = cfg.u32("max_position_embeddings")?;
            let scale = f64::from(max) / f64::from(orig);
            let attn_factor = if scale <= 1.0 {
                1.0
            } else {
                (1.0 + scale.ln() / f64::from(orig).ln()).sqrt()
            };
            m.set("model.rope_scaling", Value::Str("longrope".into()));
            m.set("model.rope_scale", Value::F32(1.0));
            m.set("model.rope_factors", Value::ArrF32(list("short_factor")?));
            m.set(
                "model.rope_factors_long",
                Value::ArrF32(list("long_factor")?),
            );
            m.set("model.rope_ctx_orig", Value::U32(orig));
            m.set("model.rope_attn_factor", Value::F32(attn_factor as f32));
        }
        other => {
            return Err(ConvertError::Unsupported {
                what: format!(
                    "{}: rope_scaling type {other:?} (known: default, linear, llama3, longrope)",
                    cfg.file.display()
                ),
            })
        }
    }
    Ok(())
}

/// The window and `layer_sliding` (see the module docs).
fn sliding(cfg: &Cfg, fam: &Family, model_type: &str, n_layer: u32) -> Result<(u32, Vec<u8>)> {
    let n = n_layer as usize;
    // Read only where it is used: configs keep a window their layers do not use (Qwen 2's
    // with use_sliding_window false).
    let window = || cfg.opt_u32("sliding_window");
    let need_window = || window()?.ok_or_else(|| cfg.missing("sliding_window"));
    if let Some(types) = cfg.j.get("layer_types").filter(|v| !v.is_null()) {
        let bad = || {
            let rule = format!("expected {n} of \"sliding_attention\" or \"full_attention\"");
            cfg.bad("layer_types", types, &rule)
        };
        let layers = types
            .as_array()
            .filter(|a| a.len() == n)
            .ok_or_else(bad)?
            .iter()
            .map(|t| match t.as_str() {
                Some("sliding_attention") => Ok(1),
                Some("full_attention") => Ok(0),
                _ => Err(bad()),
            })
            .collect::<Result<Vec<u8>>>()?;
        let w = if layers.contains(&1) {
            need_window()?
        } else {
            0
        };
        return Ok((w, layers));
    }
    if fam.sliding != SlidingPattern::None {
        let Some(w) = window()? else {
            return Ok((0, vec![0; n]));
        };
        let layers = match cfg.opt_u32("sliding_window_pattern")? {
            Some(p) => (0..n_layer).map(|i| u8::from((i + 1) % p != 0)).collect(),
            None => fam.layer_sliding(n),
        };
        return Ok((w, layers));
    }
    match model_type {
        "mistral" => match window()? {
            Some(w) => Ok((w, vec![1; n])),
            None => Ok((0, vec![0; n])),
        },
        "qwen2" if cfg.opt_bool("use_sliding_window")? == Some(true) => {
            let w = need_window()?;
            let from = cfg.opt_u32("max_window_layers")?.unwrap_or(0);
            Ok((w, (0..n_layer).map(|i| u8::from(i >= from)).collect()))
        }
        _ => Ok((0, vec![0; n])),
    }
}

/// `"tok"` or `{"content": "tok", ..}`.
fn token_text(v: Option<&J>) -> Option<String> {
    match v? {
        J::String(s) => Some(s.clone()),
        J::Object(o) => o.get("content").and_then(J::as_str).map(str::to_string),
        _ => None,
    }
}

fn is_byte_token(t: &str) -> bool {
    t.len() == 6
        && t.starts_with("<0x")
        && t.ends_with('>')
        && t[3..5].chars().all(|c| c.is_ascii_hexdigit())
}

/// True when `v` (a pre-tokenizer, decoder, ..) is or contains (in a Sequence) type `ty`.
fn has_type(v: Option<&J>, ty: &str) -> bool {
    find_all(v)
        .iter()
        .any(|x| x.get("type").and_then(J::as_str) == Some(ty))
}

/// `v` itself, or the members of a Sequence (`pretokenizers`, `decoders`, `normalizers`, ..).
fn find_all(v: Option<&J>) -> Vec<&J> {
    let Some(v) = v.filter(|v| v.is_object()) else {
        return vec![];
    };
    if v.get("type").and_then(J::as_str) == Some("Sequence") {
        for key in ["pretokenizers", "decoders", "normalizers", "processors"] {
            if let Some(a) = v.get(key).and_then(J::as_array) {
                return a.iter().collect();
            }
        }
    }
    vec![v]
}

fn parse_merges(v: Option<&J>, file: &Path) -> Result<Vec<String>> {
    let bad = |i: usize| ConvertError::Json {
        file: file.to_path_buf(),
        reason: format!("model.merges[{i}] is neither \"a b\" nor [\"a\", \"b\"]"),
    };
    let Some(list) = v.and_then(J::as_array) else {
        return Ok(vec![]);
    };
    list.iter()
        .enumerate()
        .map(|(i, m)| match m {
            J::String(s) if s.split(' ').count() == 2 => Ok(s.clone()),
            J::Array(p) if p.len() == 2 => match (p[0].as_str(), p[1].as_str()) {
                (Some(a), Some(b)) if !a.contains(' ') && !b.contains(' ') => {
                    Ok(format!("{a} {b}"))
                }
                _ => Err(bad(i)),
            },
            _ => Err(bad(i)),
        })
        .collect()
}

fn template_adds_special(pp: Option<&J>) -> Option<bool> {
    let tp = find_all(pp)
        .into_iter()
        .find(|x| x.get("type").and_then(J::as_str) == Some("TemplateProcessing"))?;
    let first = tp.get("single")?.as_array()?.first()?;
    Some(first.get("SpecialToken").is_some())
}

fn bpe_pre(tok: &J, model_type: &str) -> &'static str {
    if matches!(model_type, "qwen2" | "qwen3") {
        return "qwen2";
    }
    let parts = find_all(tok.get("pre_tokenizer"));
    let ty = |x: &J| x.get("type").and_then(J::as_str).unwrap_or("").to_string();
    let regex = parts
        .iter()
        .filter(|x| ty(x) == "Split")
        .filter_map(|x| {
            x.get("pattern")
                .and_then(|p| p.get("Regex"))
                .and_then(J::as_str)
        })
        .collect::<String>();
    if regex.contains("\\p{N}{1,3}") {
        return "llama3";
    }
    let digits = parts.iter().any(|x| {
        ty(x) == "Digits" && x.get("individual_digits").and_then(J::as_bool) == Some(true)
    });
    let byte_level = parts.iter().any(|x| ty(x) == "ByteLevel");
    if digits && byte_level {
        return "smollm";
    }
    if byte_level
        && parts.len() == 1
        && parts[0].get("use_regex").and_then(J::as_bool) != Some(false)
    {
        return "gpt-2";
    }
    "default"
}

fn adds_space_prefix(tok: &J) -> bool {
    let prepend = find_all(tok.get("normalizer")).iter().any(|x| {
        x.get("type").and_then(J::as_str) == Some("Prepend")
            && x.get("prepend").and_then(J::as_str) == Some("\u{2581}")
    });
    let meta = find_all(tok.get("pre_tokenizer")).iter().any(|x| {
        x.get("type").and_then(J::as_str) == Some("Metaspace")
            && (x.get("add_prefix_space").and_then(J::as_bool) == Some(true)
                || matches!(
                    x.get("prepend_scheme").and_then(J::as_str),
                    Some("always" | "first")
                ))
    });
    prepend || meta
}

/// A message for a safetensors header error (the crate's own `Display` prints the enum
/// variant's name).
fn safetensors_reason(e: &safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::InvalidHeader => "the header is not valid UTF-8".into(),
        E::InvalidHeaderStart => "the header does not start with '{'".into(),
        E::InvalidHeaderDeserialization => "the header is not valid JSON".into(),
        E::JsonError(e) => format!("the header is not valid JSON: {e}"),
        E::HeaderTooLarge => "the header is larger than 100 MB".into(),
        E::HeaderTooSmall => "the file is shorter than its 8-byte header length".into(),
        E::InvalidHeaderLength => "the header length points past the end of the file".into(),
        E::TensorNotFound(name) => format!("tensor {name:?} is not in the file"),
        E::TensorInvalidInfo => {
            "a tensor's data offsets do not span its shape times its dtype size".into()
        }
        E::InvalidOffset(name) => format!(
            "tensor {name:?} does not start where the previous tensor's data ends \
             (a tensor missing from the header, or overlapping or out-of-order offsets)"
        ),
        E::IoError(e) => e.to_string(),
        E::InvalidTensorView(dtype, shape, len) => {
            format!("{len} bytes do not hold a {dtype:?} tensor of shape {shape:?}")
        }
        E::MetadataIncompleteBuffer => {
            "the tensors' data does not cover the file up to its end".into()
        }
        E::ValidationOverflow => "a tensor's shape or size overflows".into(),
    }
}
