//! Synthetic Hugging Face directories (safetensors written with the safetensors crate)
//! -> convert -> PipitFile::parse; equality with the GGUF path; refusals.

mod common;

use common::*;
use half::{bf16, f16};
use pipit_convert::convert::{convert, Quant};
use pipit_format::{blocks, DType, PipitFile};
use safetensors::tensor::{Dtype, TensorView};
use serde_json::json;
use std::path::Path;

struct HfTensor {
    name: String,
    shape: Vec<usize>,
    dtype: Dtype,
    values: Vec<f32>,
}

fn encode(dtype: Dtype, v: &[f32]) -> Vec<u8> {
    match dtype {
        Dtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Dtype::F16 => v
            .iter()
            .flat_map(|x| f16::from_f32(*x).to_le_bytes())
            .collect(),
        Dtype::BF16 => v
            .iter()
            .flat_map(|x| bf16::from_f32(*x).to_le_bytes())
            .collect(),
        Dtype::I32 => v.iter().flat_map(|x| (*x as i32).to_le_bytes()).collect(),
        _ => unreachable!(),
    }
}

/// Values as the file stores them (rounded to the dtype).
fn stored(dtype: Dtype, v: &[f32]) -> Vec<f32> {
    match dtype {
        Dtype::F16 => v.iter().map(|x| f16::from_f32(*x).to_f32()).collect(),
        Dtype::BF16 => v.iter().map(|x| bf16::from_f32(*x).to_f32()).collect(),
        _ => v.to_vec(),
    }
}

fn write_safetensors(path: &Path, tensors: &[HfTensor]) {
    let data: Vec<(String, Vec<u8>, &HfTensor)> = tensors
        .iter()
        .map(|t| (t.name.clone(), encode(t.dtype, &t.values), t))
        .collect();
    let views: Vec<(String, TensorView)> = data
        .iter()
        .map(|(n, bytes, t)| {
            (
                n.clone(),
                TensorView::new(t.dtype, t.shape.clone(), bytes).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, &None, path).unwrap();
}

struct Dir {
    tmp: TempDir,
    config: serde_json::Value,
    tokenizer: serde_json::Value,
    tokenizer_config: Option<serde_json::Value>,
    tensors: Vec<HfTensor>,
}

impl Dir {
    fn model_dir(&self) -> std::path::PathBuf {
        self.tmp.join("model")
    }
    fn write(&self) {
        let d = self.model_dir();
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("config.json"), self.config.to_string()).unwrap();
        std::fs::write(d.join("tokenizer.json"), self.tokenizer.to_string()).unwrap();
        if let Some(tc) = &self.tokenizer_config {
            std::fs::write(d.join("tokenizer_config.json"), tc.to_string()).unwrap();
        }
        // Two shards, as large checkpoints have.
        let (a, b) = self.tensors.split_at(self.tensors.len() / 2);
        write_safetensors(&d.join("model-00001-of-00002.safetensors"), a);
        write_safetensors(&d.join("model-00002-of-00002.safetensors"), b);
    }
    fn convert(&self, quant: Quant) -> Result<(Vec<u8>, PipitFile), String> {
        self.write();
        let out = self.tmp.join("out.pipit");
        convert(&self.model_dir(), &out, quant, &mut std::io::sink()).map_err(|e| e.to_string())?;
        let bytes = std::fs::read(&out).unwrap();
        let f = PipitFile::parse(&bytes).unwrap();
        f.verify_data(&bytes).unwrap();
        Ok((bytes, f))
    }
    fn tensor(&self, name: &str) -> &HfTensor {
        self.tensors.iter().find(|t| t.name == name).unwrap()
    }
}

const N_VOCAB: usize = 12;

fn bpe_tokenizer() -> serde_json::Value {
    let tokens = bpe_tokens();
    let vocab: serde_json::Map<String, serde_json::Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let added = |id: usize, special: bool| json!({"id": id, "content": tokens[id], "special": special, "normalized": false});
    json!({
        "version": "1.0",
        "added_tokens": [added(0, true), added(1, true), added(2, true), added(11, false)],
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "byte_fallback": false, "vocab": vocab,
                  "merges": [["a", "b"], ["ab", "c"], ["Ġ", "a"]]}
    })
}

/// A tiny llama-family directory (2 layers, d 64, 2 heads of 32, 1 kv head, ff 96),
/// mixing F32, F16 and BF16 tensors; `qwen2` adds q/k/v biases.
fn tiny_dir(qwen2: bool) -> Dir {
    let mut rng = Rng(0x5eed);
    let (d, q, kv, ff) = (64usize, 64usize, 32usize, 96usize);
    let mut tensors = vec![];
    let mut t = |name: &str, shape: &[usize], dtype: Dtype| {
        let n = shape.iter().product();
        tensors.push(HfTensor {
            name: name.into(),
            shape: shape.to_vec(),
            dtype,
            values: rng.vec(n),
        });
    };
    t("model.embed_tokens.weight", &[N_VOCAB, d], Dtype::F32);
    for l in 0..2 {
        let p = |n: &str| format!("model.layers.{l}.{n}");
        t(&p("input_layernorm.weight"), &[d], Dtype::BF16);
        t(&p("self_attn.q_proj.weight"), &[q, d], Dtype::BF16);
        t(&p("self_attn.k_proj.weight"), &[kv, d], Dtype::F16);
        t(&p("self_attn.v_proj.weight"), &[kv, d], Dtype::F32);
        if qwen2 {
            t(&p("self_attn.q_proj.bias"), &[q], Dtype::BF16);
            t(&p("self_attn.k_proj.bias"), &[kv], Dtype::BF16);
            t(&p("self_attn.v_proj.bias"), &[kv], Dtype::BF16);
        }
        t(&p("self_attn.o_proj.weight"), &[d, q], Dtype::BF16);
        t(&p("post_attention_layernorm.weight"), &[d], Dtype::F16);
        t(&p("mlp.gate_proj.weight"), &[ff, d], Dtype::F16);
        t(&p("mlp.up_proj.weight"), &[ff, d], Dtype::F16);
        t(&p("mlp.down_proj.weight"), &[d, ff], Dtype::F32);
    }
    t("model.norm.weight", &[d], Dtype::BF16);
    let config = json!({
        "architectures": [if qwen2 { "Qwen2ForCausalLM" } else { "LlamaForCausalLM" }],
        "model_type": if qwen2 { "qwen2" } else { "llama" },
        "hidden_size": d, "intermediate_size": ff, "num_hidden_layers": 2,
        "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 512,
        "rms_norm_eps": 1e-5, "rope_theta": 100000.0, "vocab_size": N_VOCAB, "hidden_act": "silu",
        "tie_word_embeddings": true, "rope_scaling": null, "bos_token_id": 1, "eos_token_id": 2,
        "use_sliding_window": false, "sliding_window": 4096
    });
    let tokenizer_config = json!({
        "bos_token": "<|im_start|>", "eos_token": {"content": "<|im_end|>", "special": true},
        "unk_token": "<|endoftext|>", "pad_token": null,
        "chat_template": [{"name": "tool_use", "template": "T2"}, {"name": "default", "template": "T1"}]
    });
    Dir {
        tmp: TempDir::new("hf"),
        config,
        tokenizer: bpe_tokenizer(),
        tokenizer_config: Some(tokenizer_config),
        tensors,
    }
}

fn values(f: &PipitFile, bytes: &[u8], name: &str) -> Vec<f32> {
    let t = f.tensor(name).unwrap_or_else(|| panic!("no tensor {name}"));
    let mut v = vec![0f32; t.n_elems() as usize];
    blocks::dequantize(t.dtype, t.data(bytes).unwrap(), &mut v).unwrap();
    v
}

/// Rows `[rows, cols]` from split-half to adjacent-pair order, written independently of
/// the converter: out row h*hd + 2i + j = in row h*hd + j*hd/2 + i.
fn to_adjacent(v: &[f32], rows: usize, heads: usize) -> Vec<f32> {
    let cols = v.len() / rows;
    let hd = rows / heads;
    let mut out = vec![0f32; v.len()];
    for h in 0..heads {
        for i in 0..hd / 2 {
            for j in 0..2 {
                let (dst, src) = (h * hd + 2 * i + j, h * hd + j * hd / 2 + i);
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&v[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

#[test]
fn llama_dir_converts_with_adjacent_rope_rows_and_tokenizer() {
    let dir = tiny_dir(false);
    let (bytes, f) = dir.convert(Quant::Keep).unwrap();
    let m = &f.metadata;
    assert_eq!(m.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(m.get_str("general.source").unwrap(), "hf:model");
    assert_eq!(m.get_str("model.rope_pairs").unwrap(), "adjacent");
    assert_eq!(m.get_u32("model.head_dim").unwrap(), 32);
    assert_eq!(m.get_u32("model.n_kv_head").unwrap(), 1);
    assert_eq!(m.get_u32("model.d_ff").unwrap(), 96);
    assert_eq!(m.get_u32("model.n_ctx_train").unwrap(), 512);
    assert_eq!(m.get_f32("model.rope_theta").unwrap(), 100000.0);
    assert_eq!(m.get_f32("model.norm_eps").unwrap(), 1e-5);
    assert!(m.get_bool("model.tied_embeddings").unwrap());
    assert_eq!(m.get_u32("model.sliding_window").unwrap(), 0);
    assert_eq!(m.get_str("tokenizer.kind").unwrap(), "bpe");
    assert_eq!(m.get_str("tokenizer.pre").unwrap(), "smollm");
    assert_eq!(
        m.get_arr_str("tokenizer.tokens").unwrap(),
        &bpe_tokens()[..]
    );
    assert_eq!(
        m.get_arr_u8("tokenizer.token_types").unwrap(),
        &[3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 4]
    );
    assert_eq!(
        m.get_arr_str("tokenizer.merges").unwrap(),
        &strings(&["a b", "ab c", "Ġ a"])[..]
    );
    assert_eq!(m.get_i32("tokenizer.bos_id").unwrap(), 1);
    assert_eq!(m.get_i32("tokenizer.eos_id").unwrap(), 2);
    assert_eq!(m.get_i32("tokenizer.unk_id").unwrap(), 0);
    assert_eq!(m.get_i32("tokenizer.pad_id").unwrap(), -1);
    assert_eq!(m.get_arr_i32("tokenizer.eot_ids").unwrap(), &[0]);
    assert!(!m.get_bool("tokenizer.add_bos").unwrap());
    assert_eq!(m.get_str("tokenizer.chat_template").unwrap(), "T1");

    // q: BF16 -> F32, rows permuted; k: F16 -> F16, rows permuted; others as stored.
    let q = dir.tensor("model.layers.1.self_attn.q_proj.weight");
    assert_eq!(f.tensor("blk.1.attn_q").unwrap().dtype, DType::F32);
    assert_eq!(
        values(&f, &bytes, "blk.1.attn_q"),
        to_adjacent(&stored(q.dtype, &q.values), 64, 2)
    );
    let k = dir.tensor("model.layers.0.self_attn.k_proj.weight");
    assert_eq!(f.tensor("blk.0.attn_k").unwrap().dtype, DType::F16);
    assert_eq!(
        values(&f, &bytes, "blk.0.attn_k"),
        to_adjacent(&stored(k.dtype, &k.values), 32, 1)
    );
    for (hf, pipit, dtype) in [
        (
            "model.layers.0.self_attn.v_proj.weight",
            "blk.0.attn_v",
            DType::F32,
        ),
        (
            "model.layers.0.self_attn.o_proj.weight",
            "blk.0.attn_output",
            DType::F32,
        ),
        (
            "model.layers.1.mlp.gate_proj.weight",
            "blk.1.ffn_gate",
            DType::F16,
        ),
        (
            "model.layers.1.mlp.down_proj.weight",
            "blk.1.ffn_down",
            DType::F32,
        ),
        (
            "model.layers.1.post_attention_layernorm.weight",
            "blk.1.ffn_norm",
            DType::F32,
        ),
        ("model.norm.weight", "output_norm", DType::F32),
        ("model.embed_tokens.weight", "token_embd", DType::F32),
    ] {
        let t = dir.tensor(hf);
        assert_eq!(f.tensor(pipit).unwrap().dtype, dtype, "{pipit}");
        assert_eq!(
            f.tensor(pipit).unwrap().shape,
            t.shape.iter().map(|&x| x as u64).collect::<Vec<_>>()
        );
        assert_eq!(
            values(&f, &bytes, pipit),
            stored(t.dtype, &t.values),
            "{pipit}"
        );
    }
    assert!(f.tensor("output").is_none());

    // --quant q8: every matrix Q8_0 (64 and 96 columns are whole blocks), vectors F32.
    let (_, f8) = dir.convert(Quant::Q8).unwrap();
    for t in &f8.tensors {
        assert_eq!(
            t.dtype,
            if t.shape.len() == 1 {
                DType::F32
            } else {
                DType::Q8_0
            },
            "{}",
            t.name
        );
    }
}

#[test]
fn qwen2_keeps_its_split_half_rows_and_biases() {
    let dir = tiny_dir(true);
    let (bytes, f) = dir.convert(Quant::Keep).unwrap();
    assert_eq!(f.metadata.get_str("general.architecture").unwrap(), "qwen2");
    assert_eq!(f.metadata.get_str("tokenizer.pre").unwrap(), "qwen2");
    // As llama.cpp's GGUF files of qwen2: rows unpermuted, RoPE on split halves.
    assert_eq!(f.metadata.get_str("model.rope_pairs").unwrap(), "half");
    assert!(f.metadata.get_bool("model.qkv_bias").unwrap());
    assert_eq!(
        f.metadata.get_u32("model.sliding_window").unwrap(),
        0,
        "use_sliding_window is false"
    );
    let qb = dir.tensor("model.layers.0.self_attn.q_proj.bias");
    assert_eq!(
        values(&f, &bytes, "blk.0.attn_q_bias"),
        stored(qb.dtype, &qb.values)
    );
    let q = dir.tensor("model.layers.0.self_attn.q_proj.weight");
    assert_eq!(
        values(&f, &bytes, "blk.0.attn_q"),
        stored(q.dtype, &q.values)
    );
    let kb = dir.tensor("model.layers.1.self_attn.k_proj.bias");
    assert_eq!(
        values(&f, &bytes, "blk.1.attn_k_bias"),
        stored(kb.dtype, &kb.values)
    );
    let vb = dir.tensor("model.layers.1.self_attn.v_proj.bias");
    assert_eq!(
        values(&f, &bytes, "blk.1.attn_v_bias"),
        stored(vb.dtype, &vb.values)
    );
    let names: Vec<&str> = f.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names[..6],
        [
            "token_embd",
            "blk.0.attn_norm",
            "blk.0.attn_q",
            "blk.0.attn_k",
            "blk.0.attn_v",
            "blk.0.attn_q_bias"
        ]
    );
}

/// The same checkpoint as a GGUF (F32/F16 tensors, q/k rows in adjacent order, the same
/// vocabulary) converts to exactly the same tensors and tokenizer metadata.
#[test]
fn hf_dir_and_equivalent_gguf_give_the_same_model() {
    let dir = tiny_dir(false);
    let (hf_bytes, hf) = dir.convert(Quant::Keep).unwrap();
    let mut g = GgufBuilder::new();
    g.kv("general.architecture", s("llama"))
        .kv("llama.block_count", GV::U32(2))
        .kv("llama.context_length", GV::U32(512))
        .kv("llama.embedding_length", GV::U32(64))
        .kv("llama.feed_forward_length", GV::U32(96))
        .kv("llama.attention.head_count", GV::U32(2))
        .kv("llama.attention.head_count_kv", GV::U32(1))
        .kv("llama.rope.freq_base", GV::F32(100000.0))
        .kv("llama.attention.layer_norm_rms_epsilon", GV::F32(1e-5))
        .kv("tokenizer.ggml.model", s("gpt2"))
        .kv("tokenizer.ggml.pre", s("smollm"))
        .kv("tokenizer.ggml.tokens", GV::ArrStr(bpe_tokens()))
        .kv(
            "tokenizer.ggml.token_type",
            GV::ArrI32(vec![3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 4]),
        )
        .kv(
            "tokenizer.ggml.merges",
            GV::ArrStr(strings(&["a b", "ab c", "Ġ a"])),
        )
        .kv("tokenizer.ggml.bos_token_id", GV::U32(1))
        .kv("tokenizer.ggml.eos_token_id", GV::U32(2))
        .kv("tokenizer.ggml.unknown_token_id", GV::U32(0))
        .kv("tokenizer.chat_template", s("T1"));
    for t in &dir.tensors {
        let name =
            pipit_convert::hf::hf_name(&t.name, pipit_format::arch::Arch::Llama.family()).unwrap();
        let mut v = stored(t.dtype, &t.values);
        if name.ends_with("attn_q") {
            v = to_adjacent(&v, t.shape[0], 2);
        } else if name.ends_with("attn_k") {
            v = to_adjacent(&v, t.shape[0], 1);
        }
        let (ty, data) = if t.dtype == Dtype::F16 {
            (F16, encode(Dtype::F16, &v))
        } else {
            (F32, encode(Dtype::F32, &v))
        };
        let shape: Vec<u64> = t.shape.iter().map(|&x| x as u64).collect();
        g.tensor(&format!("{name}.weight"), &shape, ty, data);
    }
    let input = dir.tmp.join("same.gguf");
    g.write(&input);
    let out = dir.tmp.join("same.pipit");
    convert(&input, &out, Quant::Keep, &mut std::io::sink()).unwrap();
    let gg_bytes = std::fs::read(&out).unwrap();
    let gg = PipitFile::parse(&gg_bytes).unwrap();
    for (k, v) in hf.metadata.iter() {
        if !k.starts_with("general.") {
            assert_eq!(gg.metadata.get(k), Some(v), "{k}");
        }
    }
    assert_eq!(gg.metadata.len(), hf.metadata.len());
    assert_eq!(gg.tensors.len(), hf.tensors.len());
    for (a, b) in gg.tensors.iter().zip(&hf.tensors) {
        assert_eq!((&a.name, a.dtype, &a.shape), (&b.name, b.dtype, &b.shape));
        assert_eq!(
            a.data(&gg_bytes).unwrap(),
            b.data(&hf_bytes).unwrap(),
            "{}",
            a.name
        );
    }
}

#[test]
fn spm_byte_fallback_tokenizer() {
    let mut dir = tiny_dir(false);
    let toks = [
        "<unk>",
        "<s>",
        "</s>",
        "<0x41>",
        "\u{2581}",
        "a",
        "b",
        "\u{2581}a",
        "ab",
        "\u{2581}ab",
        "<0x0A>",
        "x",
    ];
    let vocab: serde_json::Map<String, serde_json::Value> = toks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), json!(i)))
        .collect();
    let added = |id: usize| json!({"id": id, "content": toks[id], "special": true});
    dir.tokenizer = json!({
        "added_tokens": [added(0), added(1), added(2)],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u{2581}"}, {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}]},
        "pre_tokenizer": null,
        "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}]},
        "decoder": {"type": "Sequence", "decoders": [{"type": "ByteFallback"}]},
        "model": {"type": "BPE", "byte_fallback": true, "unk_token": "<unk>", "vocab": vocab,
                  "merges": ["\u{2581} a", "a b", "\u{2581}a b", "\u{2581} ab"]}
    });
    dir.tokenizer_config = Some(json!({"bos_token": "<s>", "eos_token": "</s>"}));
    let (_, f) = dir.convert(Quant::Keep).unwrap();
    let m = &f.metadata;
    assert_eq!(m.get_str("tokenizer.kind").unwrap(), "spm");
    assert_eq!(m.get_str("tokenizer.pre").unwrap(), "default");
    assert_eq!(
        m.get_arr_u8("tokenizer.token_types").unwrap(),
        &[2, 3, 3, 6, 1, 1, 1, 1, 1, 1, 6, 1]
    );
    let sc = m.get_arr_f32("tokenizer.scores").unwrap();
    // Merge products score -rank (first merge producing them); others -1e9.
    assert_eq!((sc[7], sc[8], sc[9]), (0.0, -1.0, -2.0));
    assert_eq!((sc[4], sc[11]), (-1e9, -1e9));
    assert!(m.get("tokenizer.merges").is_none());
    assert!(
        m.get_bool("tokenizer.add_bos").unwrap(),
        "template starts with a special token"
    );
    assert!(m.get_bool("tokenizer.add_space_prefix").unwrap());
    assert_eq!(
        (
            m.get_i32("tokenizer.bos_id").unwrap(),
            m.get_i32("tokenizer.eos_id").unwrap()
        ),
        (1, 2)
    );
    assert_eq!(m.get_i32("tokenizer.unk_id").unwrap(), 0);
    assert!(m.get_arr_i32("tokenizer.eot_ids").unwrap().is_empty());
}

#[test]
fn vocabulary_padded_to_the_embedding_rows() {
    let mut dir = tiny_dir(false);
    dir.config["vocab_size"] = json!(14);
    let e = dir
        .tensors
        .iter_mut()
        .find(|t| t.name == "model.embed_tokens.weight")
        .unwrap();
    e.shape = vec![14, 64];
    e.values = Rng(3).vec(14 * 64);
    let (_, f) = dir.convert(Quant::Keep).unwrap();
    let m = &f.metadata;
    assert_eq!(m.get_u32("model.n_vocab").unwrap(), 14);
    assert_eq!(
        m.get_arr_str("tokenizer.tokens").unwrap()[12..],
        ["[PAD12]", "[PAD13]"]
    );
    assert_eq!(m.get_arr_u8("tokenizer.token_types").unwrap()[12..], [5, 5]);
}

/// `tiny_dir`'s llama checkpoint renamed and extended into a `gemma3_text` one: Gemma's
/// four norms per block (post_attention_layernorm is the attention output's), q/k norms,
/// gelu-tanh, the window and query_pre_attn_scalar.
fn gemma3_dir() -> Dir {
    let mut d = tiny_dir(false);
    let mut rng = Rng(0x9e3);
    for t in &mut d.tensors {
        t.name = t
            .name
            .replace("post_attention_layernorm", "pre_feedforward_layernorm");
    }
    for l in 0..2 {
        for (n, len) in [
            ("post_attention_layernorm", 64),
            ("post_feedforward_layernorm", 64),
            ("self_attn.q_norm", 32),
            ("self_attn.k_norm", 32),
        ] {
            d.tensors.push(HfTensor {
                name: format!("model.layers.{l}.{n}.weight"),
                shape: vec![len],
                dtype: Dtype::BF16,
                values: rng.vec(len),
            });
        }
    }
    let c = d.config.as_object_mut().unwrap();
    c.remove("use_sliding_window");
    c.remove("hidden_act");
    for (k, v) in [
        ("architectures", json!(["Gemma3ForCausalLM"])),
        ("model_type", json!("gemma3_text")),
        ("hidden_activation", json!("gelu_pytorch_tanh")),
        ("head_dim", json!(32)),
        ("query_pre_attn_scalar", json!(16)),
        ("sliding_window", json!(8)),
        ("sliding_window_pattern", json!(2)),
        ("rope_local_base_freq", json!(10000.0)),
        ("final_logit_softcapping", json!(null)),
        ("attn_logit_softcapping", json!(null)),
    ] {
        c.insert(k.into(), v);
    }
    d
}

#[test]
fn gemma3_dir_gets_its_norms_plus_one_and_its_layer_kinds() {
    let d = gemma3_dir();
    let (bytes, f) = d.convert(Quant::Keep).unwrap();
    let m = &f.metadata;
    assert_eq!(m.get_str("general.architecture").unwrap(), "gemma3");
    assert_eq!(m.get_str("model.rope_pairs").unwrap(), "half");
    assert_eq!(m.get_str("model.activation").unwrap(), "gelu_tanh");
    assert!(m.get_bool("model.qk_norm").unwrap() && m.get_bool("model.post_norms").unwrap());
    assert_eq!(m.get_u32("model.sliding_window").unwrap(), 8);
    // sliding_window_pattern 2: every second layer is global.
    assert_eq!(m.get_arr_u8("model.layer_sliding").unwrap(), &[1, 0]);
    assert_eq!(m.get_f32("model.rope_theta_local").unwrap(), 10000.0);
    assert_eq!(m.get_f32("model.embed_scale").unwrap(), 8.0);
    assert_eq!(m.get_f32("model.attn_scale").unwrap(), 0.25);
    assert!(m.get_f32("model.final_logit_softcap").is_err());
    // Each norm is stored as the multiplier 1 + w, under its pipit name.
    for (hf, pipit) in [
        ("input_layernorm", "attn_norm"),
        ("post_attention_layernorm", "post_attention_norm"),
        ("pre_feedforward_layernorm", "ffn_norm"),
        ("post_feedforward_layernorm", "post_ffw_norm"),
        ("self_attn.q_norm", "attn_q_norm"),
        ("self_attn.k_norm", "attn_k_norm"),
    ] {
        let t = d.tensor(&format!("model.layers.1.{hf}.weight"));
        let want: Vec<f32> = stored(t.dtype, &t.values).iter().map(|w| w + 1.0).collect();
        assert_eq!(values(&f, &bytes, &format!("blk.1.{pipit}")), want, "{hf}");
    }
    let t = d.tensor("model.norm.weight");
    let want: Vec<f32> = stored(t.dtype, &t.values).iter().map(|w| w + 1.0).collect();
    assert_eq!(values(&f, &bytes, "output_norm"), want);
    // Matrices are not touched.
    let t = d.tensor("model.layers.0.self_attn.q_proj.weight");
    assert_eq!(
        values(&f, &bytes, "blk.0.attn_q"),
        stored(t.dtype, &t.values)
    );

    // layer_types, when present, decide over the pattern.
    let mut d = gemma3_dir();
    d.config["layer_types"] = json!(["full_attention", "sliding_attention"]);
    let (_, f) = d.convert(Quant::Keep).unwrap();
    assert_eq!(
        f.metadata.get_arr_u8("model.layer_sliding").unwrap(),
        &[0, 1]
    );

    // Gemma 2: soft-caps, and its even layers slide.
    let mut d = gemma3_dir();
    d.config["model_type"] = json!("gemma2");
    for k in ["sliding_window_pattern", "rope_local_base_freq"] {
        d.config.as_object_mut().unwrap().remove(k);
    }
    d.config["attn_logit_softcapping"] = json!(50.0);
    d.config["final_logit_softcapping"] = json!(30.0);
    d.tensors
        .retain(|t| !t.name.contains("q_norm") && !t.name.contains("k_norm"));
    let (_, f) = d.convert(Quant::Keep).unwrap();
    let m = &f.metadata;
    assert_eq!(m.get_arr_u8("model.layer_sliding").unwrap(), &[1, 0]);
    assert_eq!(m.get_f32("model.attn_softcap").unwrap(), 50.0);
    assert_eq!(m.get_f32("model.final_logit_softcap").unwrap(), 30.0);
    assert!(m.get_f32("model.rope_theta_local").is_err());
}

#[test]
fn refusals() {
    let check = |dir: &Dir, want: &str| {
        let e = dir
            .convert(Quant::Keep)
            .expect_err("conversion should fail");
        assert!(e.contains(want), "expected {want:?} in {e:?}");
        assert!(!dir.tmp.join("out.pipit").exists());
    };
    let mut d = tiny_dir(false);
    d.config["model_type"] = json!("gpt_neox");
    check(&d, "unknown architecture \"gpt_neox");

    let mut d = gemma3_dir();
    d.config["hidden_activation"] = json!("silu");
    check(
        &d,
        "hidden_activation = \"silu\" (gemma3 uses gelu_pytorch_tanh)",
    );

    let mut d = gemma3_dir();
    d.config["layer_types"] = json!(["full_attention"]);
    check(
        &d,
        "expected 2 of \"sliding_attention\" or \"full_attention\"",
    );

    let mut d = tiny_dir(false);
    d.config["hidden_act"] = json!("gelu");
    check(&d, "hidden_act = \"gelu\" (llama uses silu)");

    let mut d = tiny_dir(false);
    d.tensors[3].dtype = Dtype::I32;
    let name = d.tensors[3].name.clone();
    check(&d, &format!("tensor {name:?}: unsupported dtype I32"));

    let mut d = tiny_dir(false);
    d.config.as_object_mut().unwrap().remove("hidden_size");
    check(&d, "config.json: required field \"hidden_size\" is missing");

    let mut d = tiny_dir(false);
    d.config["tie_word_embeddings"] = json!(false);
    check(&d, "lm_head.weight");

    let mut d = tiny_dir(false);
    d.tensors[2].name = "model.layers.0.self_attn.rotary.weight".into();
    check(
        &d,
        "\"model.layers.0.self_attn.rotary.weight\" is not part of any architecture",
    );

    let mut d = tiny_dir(false);
    d.tensors[2].shape = vec![32, 32];
    d.tensors[2].values.truncate(32 * 32);
    check(&d, "shape mismatch");

    let mut d = tiny_dir(false);
    d.tokenizer_config = Some(json!({"eos_token": "<nope>"}));
    check(
        &d,
        "tokenizer_config.json: eos_token = \"<nope>\": not a token of tokenizer.json",
    );

    let mut d = tiny_dir(false);
    d.config["rope_scaling"] = json!({"rope_type": "yarn", "factor": 8.0});
    check(&d, "rope_scaling type \"yarn\"");

    // Issue 13 row 10: values the runtime refuses are refused before anything is written.
    for (key, v, want) in [
        (
            "rope_theta",
            json!(0.0),
            "'model.rope_theta' = 0: must be finite and greater than 0",
        ),
        (
            "rope_theta",
            json!(-1.0),
            "'model.rope_theta' = -1: must be finite and greater than 0",
        ),
        (
            "rms_norm_eps",
            json!(0.0),
            "'model.norm_eps' = 0: must be finite and greater than 0",
        ),
        (
            "rms_norm_eps",
            json!(-1.0),
            "'model.norm_eps' = -1: must be finite and greater than 0",
        ),
    ] {
        let mut d = tiny_dir(false);
        d.config[key] = v;
        check(&d, want);
    }

    // Issue 13 row 3: a layer count the tensors cannot hold is refused before anything is
    // sized by it (it used to allocate 4 GiB of sliding-window flags and abort).
    for n in [4_294_967_295u64, 1_000_000, 3] {
        let mut d = tiny_dir(false);
        d.config["num_hidden_layers"] = json!(n);
        check(
            &d,
            &format!("'num_hidden_layers' = {n}: llama layers need at least 9 tensors each"),
        );
    }

    let d = tiny_dir(false);
    d.write();
    std::fs::remove_file(d.model_dir().join("tokenizer.json")).unwrap();
    let e = convert(
        &d.model_dir(),
        &d.tmp.join("out.pipit"),
        Quant::Keep,
        &mut std::io::sink(),
    )
    .unwrap_err();
    assert!(
        e.to_string().starts_with("missing tokenizer:")
            && e.to_string().contains("tokenizer.json not found"),
        "{e}"
    );

    std::fs::write(d.model_dir().join("tokenizer.json"), "{ not json").unwrap();
    let e = convert(
        &d.model_dir(),
        &d.tmp.join("out.pipit"),
        Quant::Keep,
        &mut std::io::sink(),
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("tokenizer.json: invalid JSON"),
        "{e}"
    );

    std::fs::write(
        d.model_dir().join("tokenizer.json"),
        bpe_tokenizer().to_string(),
    )
    .unwrap();
    std::fs::write(
        d.model_dir().join("model-00001-of-00002.safetensors"),
        b"\x10\0\0\0\0\0\0\0{\"a\":",
    )
    .unwrap();
    let e = convert(
        &d.model_dir(),
        &d.tmp.join("out.pipit"),
        Quant::Keep,
        &mut std::io::sink(),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("model-00001-of-00002.safetensors: the header length points past the end"),
        "{e}"
    );

    let empty = TempDir::new("hf-empty");
    let e = convert(
        empty.path(),
        &empty.join("o.pipit"),
        Quant::Keep,
        &mut std::io::sink(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("without config.json"), "{e}");
}

/// Issue 13 row 12: safetensors errors are sentences, not the crate's enum names, and a
/// tensor missing from a header is described as such rather than as a bad offset of
/// another tensor.
#[test]
fn safetensors_errors_are_described() {
    let d = tiny_dir(false);
    d.write();
    let shard = d.model_dir().join("model-00001-of-00002.safetensors");
    let bytes = std::fs::read(&shard).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    // Drop the tensor whose data comes first: the next one no longer starts at 0.
    let first = header
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .min_by_key(|(_, v)| v["data_offsets"][0].as_u64().unwrap())
        .map(|(k, _)| k.clone())
        .unwrap();
    header.remove(&first);
    let mut text = serde_json::to_string(&header).unwrap().into_bytes();
    text.resize(n, b' ');
    let mut broken = bytes.clone();
    broken[8..8 + n].copy_from_slice(&text);
    std::fs::write(&shard, &broken).unwrap();
    let e = convert(
        &d.model_dir(),
        &d.tmp.join("out.pipit"),
        Quant::Keep,
        &mut std::io::sink(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("does not start where the previous tensor's data ends")
            && e.contains("a tensor missing from the header"),
        "{e}"
    );
    // A shape that does not match its byte range.
    let mut header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let (name, _) = header
        .iter()
        .find(|(k, _)| *k != "__metadata__")
        .map(|(k, v)| (k.clone(), v.clone()))
        .unwrap();
    header[&name]["shape"] = serde_json::json!([1, 3]);
    let mut text = serde_json::to_string(&header).unwrap().into_bytes();
    assert!(text.len() <= n);
    text.resize(n, b' ');
    let mut broken = bytes.clone();
    broken[8..8 + n].copy_from_slice(&text);
    std::fs::write(&shard, &broken).unwrap();
    let e = convert(
        &d.model_dir(),
        &d.tmp.join("out.pipit"),
        Quant::Keep,
        &mut std::io::sink(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("data offsets do not span its shape") && !e.contains("TensorInvalidInfo"),
        "{e}"
    );
}
