//! Test helpers: a minimal GGUF writer, synthetic tiny models, a temporary directory.
#![allow(dead_code)]

use half::f16;
use std::path::{Path, PathBuf};

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "pipit-convert-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, s: &str) -> PathBuf {
        self.0.join(s)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A GGUF metadata value for the writer.
#[derive(Clone, Debug)]
pub enum GV {
    U8(u8),
    U32(u32),
    I32(i32),
    U64(u64),
    F32(f32),
    Bool(bool),
    Str(String),
    ArrStr(Vec<String>),
    ArrI32(Vec<i32>),
    ArrF32(Vec<f32>),
    ArrU8(Vec<u8>),
    /// Arbitrary type code and encoded bytes (for malformed files and nested arrays).
    Raw(u32, Vec<u8>),
}

pub fn s(x: &str) -> GV {
    GV::Str(x.to_string())
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

impl GV {
    fn code(&self) -> u32 {
        match self {
            GV::U8(_) => 0,
            GV::U32(_) => 4,
            GV::I32(_) => 5,
            GV::F32(_) => 6,
            GV::Bool(_) => 7,
            GV::Str(_) => 8,
            GV::ArrStr(_) | GV::ArrI32(_) | GV::ArrF32(_) | GV::ArrU8(_) => 9,
            GV::U64(_) => 10,
            GV::Raw(c, _) => *c,
        }
    }
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            GV::U8(x) => out.push(*x),
            GV::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
            GV::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
            GV::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
            GV::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
            GV::Bool(x) => out.push(u8::from(*x)),
            GV::Str(x) => put_str(out, x),
            GV::ArrStr(v) => {
                out.extend_from_slice(&8u32.to_le_bytes());
                out.extend_from_slice(&(v.len() as u64).to_le_bytes());
                v.iter().for_each(|x| put_str(out, x));
            }
            GV::ArrI32(v) => {
                out.extend_from_slice(&5u32.to_le_bytes());
                out.extend_from_slice(&(v.len() as u64).to_le_bytes());
                v.iter()
                    .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
            }
            GV::ArrF32(v) => {
                out.extend_from_slice(&6u32.to_le_bytes());
                out.extend_from_slice(&(v.len() as u64).to_le_bytes());
                v.iter()
                    .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
            }
            GV::ArrU8(v) => {
                out.extend_from_slice(&0u32.to_le_bytes());
                out.extend_from_slice(&(v.len() as u64).to_le_bytes());
                out.extend_from_slice(v);
            }
            GV::Raw(_, b) => out.extend_from_slice(b),
        }
    }
}

/// One tensor for the GGUF writer: dims innermost first (GGUF order).
#[derive(Clone, Debug)]
pub struct GT {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    pub data: Vec<u8>,
}

/// A GGUF file under construction.
#[derive(Clone, Debug)]
pub struct GgufBuilder {
    pub version: u32,
    pub alignment: u64,
    pub kv: Vec<(String, GV)>,
    pub tensors: Vec<GT>,
}

impl GgufBuilder {
    pub fn new() -> Self {
        GgufBuilder {
            version: 3,
            alignment: 32,
            kv: vec![],
            tensors: vec![],
        }
    }
    pub fn kv(&mut self, k: &str, v: GV) -> &mut Self {
        self.kv.retain(|(kk, _)| kk != k);
        self.kv.push((k.to_string(), v));
        self
    }
    pub fn remove_kv(&mut self, k: &str) -> &mut Self {
        self.kv.retain(|(kk, _)| kk != k);
        self
    }
    pub fn tensor(
        &mut self,
        name: &str,
        shape_outer_first: &[u64],
        ggml_type: u32,
        data: Vec<u8>,
    ) -> &mut Self {
        self.tensors.push(GT {
            name: name.into(),
            dims: shape_outer_first.iter().rev().copied().collect(),
            ggml_type,
            data,
        });
        self
    }
    pub fn get_tensor(&mut self, name: &str) -> &mut GT {
        self.tensors.iter_mut().find(|t| t.name == name).unwrap()
    }
    /// The file's bytes; tensor offsets are laid out in order at the alignment.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.kv.len() as u64).to_le_bytes());
        for (k, v) in &self.kv {
            put_str(&mut out, k);
            out.extend_from_slice(&v.code().to_le_bytes());
            v.encode(&mut out);
        }
        let mut off = 0u64;
        let mut offsets = vec![];
        for t in &self.tensors {
            offsets.push(off);
            off = (off + t.data.len() as u64).next_multiple_of(self.alignment);
        }
        for (t, o) in self.tensors.iter().zip(&offsets) {
            put_str(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            t.dims
                .iter()
                .for_each(|d| out.extend_from_slice(&d.to_le_bytes()));
            out.extend_from_slice(&t.ggml_type.to_le_bytes());
            out.extend_from_slice(&o.to_le_bytes());
        }
        let start = (out.len() as u64).next_multiple_of(self.alignment) as usize;
        out.resize(start, 0);
        for (t, o) in self.tensors.iter().zip(&offsets) {
            out.resize(start + *o as usize, 0);
            out.extend_from_slice(&t.data);
        }
        out
    }
    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.to_bytes()).unwrap();
    }
}

/// A deterministic pseudo-random generator (xorshift).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [-1, 1).
    pub fn f(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f() * 0.5).collect()
    }
}

pub const F32: u32 = 0;
pub const F16: u32 = 1;
pub const Q4_0: u32 = 2;
pub const Q4_1: u32 = 3;
pub const Q5_0: u32 = 6;
pub const Q8_0: u32 = 8;
pub const Q4_K: u32 = 12;
pub const Q6_K: u32 = 14;
pub const BF16: u32 = 30;

/// Valid bytes of ggml type `ty` for `n` elements (values near [-0.5, 0.5]).
pub fn gguf_data(rng: &mut Rng, ty: u32, n: usize) -> Vec<u8> {
    use pipit_format::{blocks::quantize, DType};
    let x = rng.vec(n);
    let random_blocks = |rng: &mut Rng, bb: usize, be: usize, scales: &[usize]| {
        let mut out = vec![0u8; n / be * bb];
        for b in out.chunks_mut(bb) {
            for v in b.iter_mut() {
                *v = rng.next() as u8;
            }
            for &o in scales {
                b[o..o + 2].copy_from_slice(&f16::from_f32(rng.f() * 0.01).to_le_bytes());
            }
        }
        out
    };
    match ty {
        F32 => quantize(DType::F32, &x).unwrap(),
        F16 => quantize(DType::F16, &x).unwrap(),
        Q8_0 => quantize(DType::Q8_0, &x).unwrap(),
        Q4_0 => quantize(DType::Q4_0, &x).unwrap(),
        Q4_1 => quantize(DType::Q4_1, &x).unwrap(),
        BF16 => x
            .iter()
            .flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes())
            .collect(),
        Q5_0 => random_blocks(rng, 22, 32, &[0]),
        Q4_K => random_blocks(rng, 144, 256, &[0, 2]),
        Q6_K => random_blocks(rng, 210, 256, &[208]),
        _ => panic!("no generator for type {ty}"),
    }
}

/// Dimensions of the tiny llama model.
pub const L_LAYERS: u64 = 2;
pub const L_D: u64 = 64;
pub const L_HEADS: u64 = 2;
pub const L_KV: u64 = 1;
pub const L_HD: u64 = 32;
pub const L_FF: u64 = 256;
pub const L_VOCAB: u64 = 12;

pub fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Tokens of the tiny BPE vocabulary (GPT-2 byte-level style).
pub fn bpe_tokens() -> Vec<String> {
    strings(&[
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "a",
        "b",
        "c",
        "ab",
        "abc",
        "Ġ",
        "Ġa",
        "1",
        "<tool>",
    ])
}

/// A tiny llama GGUF with a mix of tensor types:
/// token_embd Q8_0, attn_q Q4_0, attn_k Q4_1, attn_v F16, attn_output BF16, ffn_gate Q5_0,
/// ffn_up F32, ffn_down Q4_K (layer 0) / Q6_K (layer 1), output Q8_0, norms F32.
pub fn tiny_llama_gguf() -> GgufBuilder {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut g = GgufBuilder::new();
    g.kv("general.architecture", s("llama"))
        .kv("general.name", s("tiny"))
        .kv("llama.block_count", GV::U32(L_LAYERS as u32))
        .kv("llama.context_length", GV::U32(256))
        .kv("llama.embedding_length", GV::U32(L_D as u32))
        .kv("llama.feed_forward_length", GV::U32(L_FF as u32))
        .kv("llama.attention.head_count", GV::U32(L_HEADS as u32))
        .kv("llama.attention.head_count_kv", GV::U32(L_KV as u32))
        .kv("llama.rope.freq_base", GV::F32(10000.0))
        .kv("llama.attention.layer_norm_rms_epsilon", GV::F32(1e-5))
        .kv("llama.rope.dimension_count", GV::U32(L_HD as u32))
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
        .kv("tokenizer.ggml.padding_token_id", GV::U32(2))
        .kv("tokenizer.ggml.add_bos_token", GV::Bool(false))
        .kv("tokenizer.chat_template", s("{{ messages }}"));
    let q = L_HEADS * L_HD;
    let kv = L_KV * L_HD;
    let mut t = |g: &mut GgufBuilder, name: &str, shape: &[u64], ty: u32| {
        let n = shape.iter().product::<u64>() as usize;
        let data = gguf_data(&mut rng, ty, n);
        g.tensor(name, shape, ty, data);
    };
    t(&mut g, "token_embd.weight", &[L_VOCAB, L_D], Q8_0);
    for l in 0..L_LAYERS {
        let p = |n: &str| format!("blk.{l}.{n}.weight");
        t(&mut g, &p("attn_norm"), &[L_D], F32);
        t(&mut g, &p("attn_q"), &[q, L_D], Q4_0);
        t(&mut g, &p("attn_k"), &[kv, L_D], Q4_1);
        t(&mut g, &p("attn_v"), &[kv, L_D], F16);
        t(&mut g, &p("attn_output"), &[L_D, q], BF16);
        t(&mut g, &p("ffn_norm"), &[L_D], F32);
        t(&mut g, &p("ffn_gate"), &[L_FF, L_D], Q5_0);
        t(&mut g, &p("ffn_up"), &[L_FF, L_D], F32);
        t(
            &mut g,
            &p("ffn_down"),
            &[L_D, L_FF],
            if l == 0 { Q4_K } else { Q6_K },
        );
    }
    t(&mut g, "output_norm.weight", &[L_D], F32);
    t(&mut g, "output.weight", &[L_VOCAB, L_D], Q8_0);
    g
}

/// A tiny gemma3 GGUF (6 layers, SentencePiece vocabulary, tied output).
pub fn tiny_gemma_gguf() -> GgufBuilder {
    let mut rng = Rng(0xfeed_beef_0bad_cafe);
    let (n_layer, d, hd, ff, vocab) = (6u64, 64u64, 32u64, 64u64, 8u64);
    let mut g = GgufBuilder::new();
    g.kv("general.architecture", s("gemma3"))
        .kv("gemma3.block_count", GV::U32(n_layer as u32))
        .kv("gemma3.context_length", GV::U32(1024))
        .kv("gemma3.embedding_length", GV::U32(d as u32))
        .kv("gemma3.feed_forward_length", GV::U32(ff as u32))
        .kv("gemma3.attention.head_count", GV::U32(4))
        .kv("gemma3.attention.head_count_kv", GV::U32(1))
        .kv("gemma3.attention.key_length", GV::U32(hd as u32))
        .kv("gemma3.attention.value_length", GV::U32(hd as u32))
        .kv("gemma3.rope.freq_base", GV::F32(1_000_000.0))
        .kv("gemma3.attention.sliding_window", GV::U32(16))
        .kv("gemma3.attention.layer_norm_rms_epsilon", GV::F32(1e-6))
        .kv("tokenizer.ggml.model", s("llama"))
        .kv("tokenizer.ggml.pre", s("default"))
        .kv(
            "tokenizer.ggml.tokens",
            GV::ArrStr(strings(&[
                "<pad>",
                "<eos>",
                "<bos>",
                "<unk>",
                "<start_of_turn>",
                "<end_of_turn>",
                "\u{2581}a",
                "<0x41>",
            ])),
        )
        .kv(
            "tokenizer.ggml.scores",
            GV::ArrF32(vec![
                -1000.0, -1000.0, -1000.0, -1000.0, -1000.0, -1000.0, -3.5, 0.0,
            ]),
        )
        .kv(
            "tokenizer.ggml.token_type",
            GV::ArrI32(vec![3, 3, 3, 2, 3, 3, 1, 6]),
        )
        .kv("tokenizer.ggml.bos_token_id", GV::U32(2))
        .kv("tokenizer.ggml.eos_token_id", GV::U32(1))
        .kv("tokenizer.ggml.unknown_token_id", GV::U32(3))
        .kv("tokenizer.ggml.padding_token_id", GV::U32(0))
        .kv("tokenizer.ggml.add_space_prefix", GV::Bool(false));
    let mut t = |g: &mut GgufBuilder, name: &str, shape: &[u64], ty: u32| {
        let n = shape.iter().product::<u64>() as usize;
        let data = gguf_data(&mut rng, ty, n);
        g.tensor(name, shape, ty, data);
    };
    t(&mut g, "token_embd.weight", &[vocab, d], Q8_0);
    for l in 0..n_layer {
        let p = |n: &str| format!("blk.{l}.{n}.weight");
        t(&mut g, &p("attn_norm"), &[d], F32);
        t(&mut g, &p("attn_q"), &[4 * hd, d], Q5_0);
        t(&mut g, &p("attn_k"), &[hd, d], Q5_0);
        t(&mut g, &p("attn_v"), &[hd, d], Q8_0);
        t(&mut g, &p("attn_q_norm"), &[hd], F32);
        t(&mut g, &p("attn_k_norm"), &[hd], F32);
        t(&mut g, &p("attn_output"), &[d, 4 * hd], Q8_0);
        t(&mut g, &p("post_attention_norm"), &[d], F32);
        t(&mut g, &p("ffn_norm"), &[d], F32);
        t(&mut g, &p("ffn_gate"), &[ff, d], Q8_0);
        t(&mut g, &p("ffn_up"), &[ff, d], Q8_0);
        t(&mut g, &p("ffn_down"), &[d, ff], Q8_0);
        t(&mut g, &p("post_ffw_norm"), &[d], F32);
    }
    t(&mut g, "output_norm.weight", &[d], F32);
    g
}
