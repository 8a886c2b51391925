//! Tiny synthetic models for tests, built with `pipit_format::Writer`: a 2-layer llama or
//! gemma3 with deterministic random weights of a chosen dtype and a small, valid byte-level
//! BPE tokenizer (about 300 tokens). Shared by the loader, forward-pass and session tests.
//!
//! `Tiny::llama(DType::Q8_0, seed).bytes()` gives a file; to make a broken one, take
//! `metadata()` and `tensors()`, edit them, and `assemble` the result.
#![allow(dead_code)]

use pipit_format::blocks::quantize;
use pipit_format::{DType, Value, Writer};

/// Special tokens at ids 0, 1, 2 (as in SmolLM2): `<|endoftext|>`, `<|im_start|>` (BOS),
/// `<|im_end|>` (EOS and end of turn).
pub const SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
/// Id of the first byte token; byte `b` is token `BYTE0 + b`.
pub const BYTE0: u32 = 3;
/// BPE merges in priority order (`Ġ` is the byte-level space).
pub const MERGES: [&str; 40] = [
    "Ġ t", "h e", "Ġt he", "i n", "e r", "a n", "o u", "Ġ a", "r e", "o n", "Ġ s", "i s", "e n",
    "Ġ w", "Ġ b", "l l", "Ġ o", "i t", "a t", "Ġ h", "in g", "Ġ c", "Ġ f", "e d", "Ġ p", "o r",
    "Ġ m", "a r", "Ġ d", "e s", "l o", "Ġ i", "Ġa n", "Ġan d", "Ġ l", "Ġo f", "Ġt o", "a l", "Ġ n",
    "Ġc at",
];
/// Vocabulary size: specials, 256 byte tokens, one token per merge.
pub const N_VOCAB: usize = SPECIALS.len() + 256 + MERGES.len();

/// ChatML, as SmolLM2 ships it (kept as text, never executed).
pub const CHAT_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// GPT-2's byte-to-character table of byte-level BPE.
pub fn byte_char(b: u8) -> char {
    let printable = |b: u8| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    if printable(b) {
        char::from(b)
    } else {
        let n = (0..b).filter(|&x| !printable(x)).count() as u32;
        char::from_u32(256 + n).unwrap()
    }
}

/// Token strings in id order.
pub fn vocab() -> Vec<String> {
    let mut v: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
    v.extend((0..=255u8).map(|b| byte_char(b).to_string()));
    v.extend(MERGES.iter().map(|m| m.replace(' ', "")));
    v
}

/// The `tokenizer.*` entries of the tiny BPE tokenizer.
pub fn tokenizer_metadata() -> Vec<(String, Value)> {
    let mut types = vec![3u8; SPECIALS.len()];
    types.resize(N_VOCAB, 1);
    vec![
        ("tokenizer.kind".into(), Value::Str("bpe".into())),
        ("tokenizer.pre".into(), Value::Str("smollm".into())),
        ("tokenizer.tokens".into(), Value::ArrStr(vocab())),
        ("tokenizer.token_types".into(), Value::ArrU8(types)),
        (
            "tokenizer.merges".into(),
            Value::ArrStr(MERGES.iter().map(|m| m.to_string()).collect()),
        ),
        ("tokenizer.bos_id".into(), Value::I32(1)),
        ("tokenizer.eos_id".into(), Value::I32(2)),
        ("tokenizer.unk_id".into(), Value::I32(-1)),
        ("tokenizer.pad_id".into(), Value::I32(-1)),
        ("tokenizer.eot_ids".into(), Value::ArrI32(vec![2])),
        ("tokenizer.add_bos".into(), Value::Bool(false)),
        (
            "tokenizer.chat_template".into(),
            Value::Str(CHAT_TEMPLATE.into()),
        ),
    ]
}

/// One tensor before quantization.
#[derive(Debug, Clone)]
pub struct TinyTensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<u64>,
    pub values: Vec<f32>,
}

/// Shape and options of a tiny model.
#[derive(Debug, Clone)]
pub struct Tiny {
    /// `llama` or `gemma3`.
    pub arch: &'static str,
    pub n_layer: usize,
    pub d_model: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub d_ff: usize,
    pub n_ctx_train: usize,
    /// Dtype of the weight matrices (norms and biases are always F32).
    pub dtype: DType,
    /// Reuse `token_embd` as the output head (no `output` tensor).
    pub tied: bool,
    /// Add q/k/v biases (Qwen2 style).
    pub biases: bool,
    /// `adjacent` or `half`.
    pub rope_pairs: &'static str,
    /// Seed of the weights.
    pub seed: u64,
}

/// Deterministic uniform values in [-1, 1) (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let r = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (r >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

impl Tiny {
    /// 2 layers, d_model 64, 4 heads of 16, 2 kv heads, d_ff 128, untied, no biases;
    /// trained context 2048, so the CLI defaults apply.
    pub fn llama(dtype: DType, seed: u64) -> Self {
        Tiny {
            arch: "llama",
            n_layer: 2,
            d_model: 64,
            n_head: 4,
            n_kv_head: 2,
            head_dim: 16,
            d_ff: 128,
            n_ctx_train: 2048,
            dtype,
            tied: false,
            biases: false,
            rope_pairs: "adjacent",
            seed,
        }
    }

    /// 2 layers (the first sliding, window 8), d_model 64, 4 heads of 32, 1 kv head,
    /// d_ff 128, tied, with gemma3's q/k and post norms.
    pub fn gemma3(dtype: DType, seed: u64) -> Self {
        Tiny {
            arch: "gemma3",
            head_dim: 32,
            n_kv_head: 1,
            tied: true,
            ..Tiny::llama(dtype, seed)
        }
    }

    /// Every metadata entry, tokenizer included.
    pub fn metadata(&self) -> Vec<(String, Value)> {
        let gemma = self.arch == "gemma3";
        let u = |v: usize| Value::U32(v as u32);
        let mut m: Vec<(String, Value)> = vec![
            ("general.architecture".into(), Value::Str(self.arch.into())),
            (
                "general.name".into(),
                Value::Str(format!("tiny-{}", self.arch)),
            ),
            ("general.source".into(), Value::Str("synthetic".into())),
            ("model.n_layer".into(), u(self.n_layer)),
            ("model.d_model".into(), u(self.d_model)),
            ("model.n_head".into(), u(self.n_head)),
            ("model.n_kv_head".into(), u(self.n_kv_head)),
            ("model.head_dim".into(), u(self.head_dim)),
            ("model.d_ff".into(), u(self.d_ff)),
            ("model.n_vocab".into(), u(N_VOCAB)),
            ("model.n_ctx_train".into(), u(self.n_ctx_train)),
            ("model.norm_eps".into(), Value::F32(1e-5)),
            (
                "model.rope_theta".into(),
                Value::F32(if gemma { 1e6 } else { 1e4 }),
            ),
            ("model.rope_dim".into(), u(self.head_dim)),
            ("model.rope_scaling".into(), Value::Str("none".into())),
            ("model.rope_scale".into(), Value::F32(1.0)),
            (
                "model.rope_pairs".into(),
                Value::Str(self.rope_pairs.into()),
            ),
            (
                "model.activation".into(),
                Value::Str(if gemma { "gelu_tanh" } else { "silu" }.into()),
            ),
            ("model.tied_embeddings".into(), Value::Bool(self.tied)),
        ];
        if self.biases {
            m.push(("model.qkv_bias".into(), Value::Bool(true)));
        }
        if gemma {
            let sliding = (0..self.n_layer).map(|l| u8::from(l % 2 == 0)).collect();
            m.extend([
                ("model.rope_theta_local".into(), Value::F32(1e4)),
                ("model.sliding_window".into(), u(8)),
                ("model.layer_sliding".into(), Value::ArrU8(sliding)),
                (
                    "model.embed_scale".into(),
                    Value::F32((self.d_model as f32).sqrt()),
                ),
                (
                    "model.attn_scale".into(),
                    Value::F32(1.0 / (self.head_dim as f32).sqrt()),
                ),
            ]);
        } else {
            m.extend([
                ("model.sliding_window".into(), u(0)),
                (
                    "model.layer_sliding".into(),
                    Value::ArrU8(vec![0; self.n_layer]),
                ),
            ]);
        }
        m.extend(tokenizer_metadata());
        m
    }

    /// Every tensor in file order, with deterministic random values: matrices uniform in
    /// ±1/sqrt(cols), norms around 1, biases small.
    pub fn tensors(&self) -> Vec<TinyTensor> {
        let mut rng = Rng::new(self.seed);
        let (d, q, kv, ff, hd) = (
            self.d_model,
            self.n_head * self.head_dim,
            self.n_kv_head * self.head_dim,
            self.d_ff,
            self.head_dim,
        );
        let mut out = Vec::new();
        let mut push = |name: String, shape: &[usize], kind: char| {
            let n: usize = shape.iter().product();
            let cols = shape[shape.len() - 1] as f32;
            let values = (0..n)
                .map(|_| {
                    let r = rng.next_f32();
                    match kind {
                        'm' => r / cols.sqrt(),
                        'n' => 1.0 + 0.1 * r,
                        _ => 0.05 * r,
                    }
                })
                .collect();
            let dtype = if kind == 'm' { self.dtype } else { DType::F32 };
            out.push(TinyTensor {
                name,
                dtype,
                shape: shape.iter().map(|&x| x as u64).collect(),
                values,
            });
        };
        push("token_embd".into(), &[N_VOCAB, d], 'm');
        push("output_norm".into(), &[d], 'n');
        if !self.tied {
            push("output".into(), &[N_VOCAB, d], 'm');
        }
        let gemma = self.arch == "gemma3";
        for l in 0..self.n_layer {
            let n = |s: &str| format!("blk.{l}.{s}");
            push(n("attn_norm"), &[d], 'n');
            push(n("attn_q"), &[q, d], 'm');
            push(n("attn_k"), &[kv, d], 'm');
            push(n("attn_v"), &[kv, d], 'm');
            if self.biases {
                push(n("attn_q_bias"), &[q], 'b');
                push(n("attn_k_bias"), &[kv], 'b');
                push(n("attn_v_bias"), &[kv], 'b');
            }
            if gemma {
                push(n("attn_q_norm"), &[hd], 'n');
                push(n("attn_k_norm"), &[hd], 'n');
            }
            push(n("attn_output"), &[d, q], 'm');
            if gemma {
                push(n("post_attention_norm"), &[d], 'n');
            }
            push(n("ffn_norm"), &[d], 'n');
            push(n("ffn_gate"), &[ff, d], 'm');
            push(n("ffn_up"), &[ff, d], 'm');
            push(n("ffn_down"), &[d, ff], 'm');
            if gemma {
                push(n("post_ffw_norm"), &[d], 'n');
            }
        }
        out
    }

    /// The model file.
    pub fn bytes(&self) -> Vec<u8> {
        assemble(&self.metadata(), &self.tensors())
    }
}

/// A `.pipit` file from metadata and tensors (quantized with THE rounding rule).
pub fn assemble(metadata: &[(String, Value)], tensors: &[TinyTensor]) -> Vec<u8> {
    try_assemble(metadata, tensors).expect("values, tensors and metadata the writer accepts")
}

/// [`assemble`], or `None` where the writer refuses the values, a tensor or the metadata
/// (the fuzz targets mutate both).
pub fn try_assemble(metadata: &[(String, Value)], tensors: &[TinyTensor]) -> Option<Vec<u8>> {
    let mut w = Writer::new();
    for (k, v) in metadata {
        w.set(k, v.clone());
    }
    for t in tensors {
        let data = quantize(t.dtype, &t.values).ok()?;
        w.add_tensor(&t.name, t.dtype, &t.shape, data).ok()?;
    }
    w.to_bytes().ok()
}

/// Stores the header checksum of `b` (SPEC.md: bytes `0..60` and the `meta_len` bytes of the
/// metadata/directory section, as far as the file goes), so that a mutated header or
/// directory reaches the parser's own checks instead of the checksum.
pub fn fix_header_crc(b: &mut [u8]) {
    use pipit_format::crc32c::{crc32c, update};
    if b.len() < 64 {
        return;
    }
    let meta_len = u64::from_le_bytes(b[16..24].try_into().unwrap());
    let end = 64usize
        .saturating_add(meta_len.min(b.len() as u64) as usize)
        .min(b.len());
    let crc = update(crc32c(&b[..60]), &b[64..end]);
    b[60..64].copy_from_slice(&crc.to_le_bytes());
}

/// A tiny llama with Q8_0 matrices.
pub fn tiny_llama(seed: u64) -> Vec<u8> {
    Tiny::llama(DType::Q8_0, seed).bytes()
}
