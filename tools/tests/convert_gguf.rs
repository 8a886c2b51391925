//! Synthetic GGUF files -> convert -> pipit_format::PipitFile::parse: metadata, dtypes,
//! values, and every refusal with its message.

mod common;

use common::*;
use pipit_convert::convert::{convert, Quant};
use pipit_convert::dequant;
use pipit_convert::gguf::GgmlType;
use pipit_format::{blocks, DType, PipitFile, Value};
use std::path::Path;

fn run(g: &GgufBuilder, quant: Quant) -> (Vec<u8>, PipitFile, TempDir) {
    let dir = TempDir::new("gguf");
    let input = dir.join("in.gguf");
    g.write(&input);
    let out = dir.join("out.pipit");
    let mut log = Vec::new();
    let report =
        convert(&input, &out, quant, &mut log).unwrap_or_else(|e| panic!("convert failed: {e}"));
    let bytes = std::fs::read(&out).unwrap();
    let f = PipitFile::parse(&bytes).unwrap();
    f.verify_data(&bytes).unwrap();
    assert_eq!(report.output_bytes, bytes.len() as u64);
    assert_eq!(report.tensors.len(), f.tensors.len());
    // One progress line per tensor.
    assert_eq!(
        String::from_utf8(log).unwrap().lines().count(),
        f.tensors.len()
    );
    (bytes, f, dir)
}

fn values(f: &PipitFile, bytes: &[u8], name: &str) -> Vec<f32> {
    let t = f.tensor(name).unwrap_or_else(|| panic!("no tensor {name}"));
    let mut v = vec![0f32; t.n_elems() as usize];
    blocks::dequantize(t.dtype, t.data(bytes).unwrap(), &mut v).unwrap();
    v
}

fn source_values(g: &GgufBuilder, name: &str) -> (u32, Vec<f32>, Vec<u8>) {
    let t = g.tensors.iter().find(|t| t.name == name).unwrap();
    let ty = GgmlType::from_code(t.ggml_type).unwrap();
    let mut v = vec![0f32; t.dims.iter().product::<u64>() as usize];
    dequant::dequantize(ty, &t.data, &mut v).unwrap();
    (t.ggml_type, v, t.data.clone())
}

fn rel_rmse(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
    let den: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum();
    (num / den).sqrt()
}

#[test]
fn llama_keep_maps_every_type_to_its_nearest() {
    let g = tiny_llama_gguf();
    let (bytes, f, _d) = run(&g, Quant::Keep);
    let m = &f.metadata;
    assert_eq!(m.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(m.get_str("general.name").unwrap(), "tiny");
    assert_eq!(m.get_str("general.source").unwrap(), "gguf:in.gguf");
    assert_eq!(m.get_u32("model.n_layer").unwrap(), 2);
    assert_eq!(m.get_u32("model.d_model").unwrap(), 64);
    assert_eq!(m.get_u32("model.n_head").unwrap(), 2);
    assert_eq!(m.get_u32("model.n_kv_head").unwrap(), 1);
    assert_eq!(m.get_u32("model.head_dim").unwrap(), 32);
    assert_eq!(m.get_u32("model.d_ff").unwrap(), 256);
    assert_eq!(m.get_u32("model.n_vocab").unwrap(), 12);
    assert_eq!(m.get_u32("model.n_ctx_train").unwrap(), 256);
    assert_eq!(m.get_u32("model.rope_dim").unwrap(), 32);
    assert_eq!(m.get_f32("model.norm_eps").unwrap(), 1e-5);
    assert_eq!(m.get_f32("model.rope_theta").unwrap(), 10000.0);
    assert_eq!(m.get_str("model.rope_pairs").unwrap(), "adjacent");
    assert_eq!(m.get_str("model.rope_scaling").unwrap(), "none");
    assert_eq!(m.get_f32("model.rope_scale").unwrap(), 1.0);
    assert_eq!(m.get_str("model.activation").unwrap(), "silu");
    assert!(!m.get_bool("model.tied_embeddings").unwrap());
    assert_eq!(m.get_u32("model.sliding_window").unwrap(), 0);
    assert_eq!(m.get_arr_u8("model.layer_sliding").unwrap(), &[0, 0]);
    assert_eq!(m.get_f32("model.attn_scale").unwrap(), 1.0 / 32f32.sqrt());
    assert_eq!(m.get("model.rope_theta_local"), None);
    assert_eq!(m.get("model.final_logit_softcap"), None);
    // Tokenizer.
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
    assert_eq!(m.get("tokenizer.scores"), None);
    assert_eq!(m.get_i32("tokenizer.bos_id").unwrap(), 1);
    assert_eq!(m.get_i32("tokenizer.eos_id").unwrap(), 2);
    assert_eq!(m.get_i32("tokenizer.unk_id").unwrap(), 0);
    assert_eq!(m.get_i32("tokenizer.pad_id").unwrap(), 2);
    assert_eq!(m.get_arr_i32("tokenizer.eot_ids").unwrap(), &[0]);
    assert!(!m.get_bool("tokenizer.add_bos").unwrap());
    assert!(!m.get_bool("tokenizer.add_space_prefix").unwrap());
    assert_eq!(
        m.get_str("tokenizer.chat_template").unwrap(),
        "{{ messages }}"
    );

    // Tensors: names without .weight, shapes outermost first, canonical order.
    let names: Vec<&str> = f.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names[..3],
        ["token_embd", "blk.0.attn_norm", "blk.0.attn_q"]
    );
    assert_eq!(names[names.len() - 2..], ["output_norm", "output"]);
    assert_eq!(f.tensor("blk.0.attn_k").unwrap().shape, [32, 64]);
    assert_eq!(f.tensor("blk.0.ffn_down").unwrap().shape, [64, 256]);
    let expect = [
        ("token_embd", DType::Q8_0, true),
        ("blk.0.attn_norm", DType::F32, true),
        ("blk.0.attn_q", DType::Q4_0, true),
        ("blk.0.attn_k", DType::Q4_1, true),
        ("blk.0.attn_v", DType::F16, true),
        ("blk.0.attn_output", DType::F32, false),
        ("blk.0.ffn_gate", DType::Q5_0, true),
        ("blk.0.ffn_up", DType::F32, true),
        ("blk.0.ffn_down", DType::Q4_K, true),
        ("blk.1.ffn_down", DType::Q6_K, true),
        ("output", DType::Q8_0, true),
    ];
    for (name, dtype, copied) in expect {
        let t = f.tensor(name).unwrap();
        assert_eq!(t.dtype, dtype, "{name}");
        let (ty, src, src_bytes) = source_values(&g, &format!("{name}.weight"));
        let out = values(&f, &bytes, name);
        if copied {
            assert_eq!(
                t.data(&bytes).unwrap(),
                &src_bytes[..],
                "{name}: bytes not copied verbatim"
            );
            assert_eq!(out, src, "{name}");
        } else if ty == BF16 {
            assert_eq!(out, src, "{name}: BF16 -> F32 must be exact");
        } else {
            // Requantized with the one rounding rule, and close to the source.
            assert_eq!(
                t.data(&bytes).unwrap(),
                &blocks::quantize(dtype, &src).unwrap()[..],
                "{name}"
            );
            let e = rel_rmse(&src, &out);
            assert!(e > 0.0 && e < 0.02, "{name}: rel RMSE {e}");
        }
    }
}

#[test]
fn quant_modes_requantize_every_matrix_and_keep_vectors_f32() {
    let g = tiny_llama_gguf();
    for (quant, want) in [
        (Quant::Q4, DType::Q4_1),
        (Quant::Q4_0, DType::Q4_0),
        (Quant::Q8, DType::Q8_0),
    ] {
        let (bytes, f, _d) = run(&g, quant);
        for t in &f.tensors {
            let want = if t.shape.len() == 1 { DType::F32 } else { want };
            assert_eq!(t.dtype, want, "{quant:?} {}", t.name);
            let (ty, src, src_bytes) = source_values(&g, &format!("{}.weight", t.name));
            let out = values(&f, &bytes, &t.name);
            if GgmlType::from_code(ty).unwrap().name() == want.name() {
                // Same type in and out: copied, not requantized.
                assert_eq!(t.data(&bytes).unwrap(), &src_bytes[..], "{}", t.name);
            } else {
                assert_eq!(
                    t.data(&bytes).unwrap(),
                    &blocks::quantize(want, &src).unwrap()[..],
                    "{}",
                    t.name
                );
                assert!(rel_rmse(&src, &out) < 0.2, "{}", t.name);
            }
        }
    }
}

#[test]
fn gemma3_rules() {
    let g = tiny_gemma_gguf();
    let (bytes, f, _d) = run(&g, Quant::Keep);
    let m = &f.metadata;
    assert_eq!(m.get_str("general.architecture").unwrap(), "gemma3");
    assert_eq!(m.get_str("model.rope_pairs").unwrap(), "half");
    assert_eq!(m.get_str("model.activation").unwrap(), "gelu_tanh");
    assert_eq!(m.get_u32("model.head_dim").unwrap(), 32);
    assert_eq!(m.get_u32("model.rope_dim").unwrap(), 32);
    assert_eq!(m.get_u32("model.sliding_window").unwrap(), 16);
    assert_eq!(
        m.get_arr_u8("model.layer_sliding").unwrap(),
        &[1, 1, 1, 1, 1, 0]
    );
    assert_eq!(m.get_f32("model.rope_theta").unwrap(), 1_000_000.0);
    assert_eq!(m.get_f32("model.rope_theta_local").unwrap(), 10000.0);
    assert_eq!(m.get_f32("model.embed_scale").unwrap(), 8.0);
    assert_eq!(m.get_f32("model.attn_scale").unwrap(), 1.0 / 32f32.sqrt());
    assert!(m.get_bool("model.tied_embeddings").unwrap());
    assert!(f.tensor("output").is_none());
    assert_eq!(m.get_str("tokenizer.kind").unwrap(), "spm");
    assert_eq!(m.get_arr_f32("tokenizer.scores").unwrap()[6], -3.5);
    assert_eq!(
        m.get_arr_u8("tokenizer.token_types").unwrap(),
        &[3, 3, 3, 2, 3, 3, 1, 6]
    );
    assert_eq!(m.get("tokenizer.merges"), None);
    assert_eq!(m.get_arr_i32("tokenizer.eot_ids").unwrap(), &[5]);
    assert!(
        m.get_bool("tokenizer.add_bos").unwrap(),
        "spm default add_bos is true"
    );
    assert!(!m.get_bool("tokenizer.add_space_prefix").unwrap());
    assert_eq!(m.get("tokenizer.chat_template"), None);
    assert_eq!(
        f.tensor("blk.0.attn_q").unwrap().dtype,
        DType::Q5_0,
        "Q5_0 kept"
    );
    assert_eq!(f.tensor("blk.5.post_ffw_norm").unwrap().shape, [64]);
    let (_, src, _) = source_values(&g, "blk.3.attn_k_norm.weight");
    assert_eq!(values(&f, &bytes, "blk.3.attn_k_norm"), src);
}

#[test]
fn gguf_v2_and_custom_alignment_read_the_same() {
    let mut g = tiny_llama_gguf();
    let (a, _, _d1) = run(&g, Quant::Keep);
    g.version = 2;
    g.alignment = 256;
    g.kv("general.alignment", GV::U32(256));
    let (b, _, _d2) = run(&g, Quant::Keep);
    assert_eq!(a, b);
}

#[test]
fn optional_keys_take_their_defaults() {
    let mut g = tiny_llama_gguf();
    g.remove_kv("llama.rope.dimension_count")
        .remove_kv("llama.rope.freq_base")
        .remove_kv("llama.attention.head_count_kv")
        .remove_kv("tokenizer.ggml.add_bos_token")
        .remove_kv("tokenizer.ggml.pre")
        .kv("llama.attention.head_count_kv", GV::U32(2))
        .kv("llama.rope.scaling.type", s("linear"))
        .kv("llama.rope.scaling.factor", GV::F32(4.0));
    g.get_tensor("blk.0.attn_k.weight").dims = vec![64, 64];
    g.get_tensor("blk.0.attn_k.weight").data = gguf_data(&mut Rng(9), Q4_1, 64 * 64);
    g.get_tensor("blk.0.attn_v.weight").dims = vec![64, 64];
    g.get_tensor("blk.0.attn_v.weight").data = gguf_data(&mut Rng(10), F16, 64 * 64);
    g.get_tensor("blk.1.attn_k.weight").dims = vec![64, 64];
    g.get_tensor("blk.1.attn_k.weight").data = gguf_data(&mut Rng(11), Q4_1, 64 * 64);
    g.get_tensor("blk.1.attn_v.weight").dims = vec![64, 64];
    g.get_tensor("blk.1.attn_v.weight").data = gguf_data(&mut Rng(12), F16, 64 * 64);
    let (_, f, _d) = run(&g, Quant::Keep);
    let m = &f.metadata;
    assert_eq!(m.get_u32("model.rope_dim").unwrap(), 32);
    assert_eq!(m.get_f32("model.rope_theta").unwrap(), 10000.0);
    assert_eq!(m.get_u32("model.n_kv_head").unwrap(), 2);
    assert_eq!(m.get_str("model.rope_scaling").unwrap(), "linear");
    assert_eq!(m.get_f32("model.rope_scale").unwrap(), 4.0);
    assert!(
        !m.get_bool("tokenizer.add_bos").unwrap(),
        "bpe default add_bos is false"
    );
    assert_eq!(m.get_str("tokenizer.pre").unwrap(), "default");
}

fn convert_err(g: &GgufBuilder, out_name: Option<&Path>) -> String {
    let dir = TempDir::new("gguf-err");
    let input = dir.join("in.gguf");
    g.write(&input);
    let out = out_name
        .map(Path::to_path_buf)
        .unwrap_or_else(|| dir.join("out.pipit"));
    let err = convert(&input, &out, Quant::Keep, &mut std::io::sink())
        .expect_err("conversion should fail");
    // A refused conversion leaves nothing behind: no output, no temporary file.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["in.gguf"], "files left after a failed conversion");
    err.to_string()
}

#[test]
fn refuses_unknown_architecture() {
    let mut g = tiny_llama_gguf();
    g.kv("general.architecture", s("mamba"));
    let e = convert_err(&g, None);
    assert!(e.contains("unknown architecture \"mamba\""), "{e}");
}

#[test]
fn refuses_unsupported_dtype() {
    let mut g = tiny_llama_gguf();
    let t = g.get_tensor("blk.1.ffn_down.weight");
    t.ggml_type = 16; // IQ2_XXS: 256 elements in 66 bytes
    t.data = vec![0; 64 * 66];
    let e = convert_err(&g, None);
    assert!(
        e.contains("tensor \"blk.1.ffn_down.weight\": unsupported dtype IQ2_XXS"),
        "{e}"
    );
}

#[test]
fn refuses_missing_tokenizer() {
    let mut g = tiny_llama_gguf();
    g.remove_kv("tokenizer.ggml.tokens");
    let e = convert_err(&g, None);
    assert!(
        e.contains("missing tokenizer: GGUF key tokenizer.ggml.tokens is absent"),
        "{e}"
    );
    let mut g = tiny_llama_gguf();
    g.remove_kv("tokenizer.ggml.model");
    let e = convert_err(&g, None);
    assert!(e.contains("missing tokenizer"), "{e}");
    let mut g = tiny_llama_gguf();
    g.remove_kv("tokenizer.ggml.merges");
    let e = convert_err(&g, None);
    assert!(
        e.contains("missing tokenizer: GGUF key tokenizer.ggml.merges"),
        "{e}"
    );
}

#[test]
fn refuses_shape_mismatch_and_missing_or_unknown_tensors() {
    let mut g = tiny_llama_gguf();
    g.get_tensor("blk.1.attn_q.weight").dims = vec![64, 32];
    g.get_tensor("blk.1.attn_q.weight")
        .data
        .truncate(32 * 64 / 32 * 18);
    let e = convert_err(&g, None);
    assert!(
        e.contains(
            "tensor \"blk.1.attn_q.weight\": shape mismatch: expected [64, 64], found [32, 64]"
        ),
        "{e}"
    );

    let mut g = tiny_llama_gguf();
    g.tensors.retain(|t| t.name != "blk.1.ffn_up.weight");
    let e = convert_err(&g, None);
    assert!(
        e.contains("required tensor \"blk.1.ffn_up\" is missing"),
        "{e}"
    );

    let mut g = tiny_llama_gguf();
    g.tensor("blk.0.mystery.weight", &[64], F32, vec![0; 256]);
    let e = convert_err(&g, None);
    assert!(
        e.contains("\"blk.0.mystery.weight\" is not part of any architecture"),
        "{e}"
    );

    let mut g = tiny_llama_gguf();
    // Llama 3 RoPE factors are read into the metadata, and checked as the runtime does.
    g.tensor("rope_freqs.weight", &[16], F32, vec![0; 64]);
    let e = convert_err(&g, None);
    assert!(
        e.contains("'model.rope_factors[0]' = 0: must be finite and greater than 0"),
        "{e}"
    );
}

#[test]
fn refuses_bad_metadata_values() {
    let mut g = tiny_llama_gguf();
    g.kv("tokenizer.ggml.eos_token_id", GV::U32(12));
    let e = convert_err(&g, None);
    assert!(
        e.contains(
            "tokenizer.ggml.eos_token_id = 12: token id outside the vocabulary of 12 tokens"
        ),
        "{e}"
    );

    let mut g = tiny_llama_gguf();
    g.kv("llama.block_count", GV::U32(4_000_000_000));
    let e = convert_err(&g, None);
    assert!(e.contains("'llama.block_count' = 4000000000"), "{e}");

    let mut g = tiny_llama_gguf();
    g.kv("llama.attention.head_count", s("two"));
    let e = convert_err(&g, None);
    assert!(
        e.contains("\"llama.attention.head_count\" has type string"),
        "{e}"
    );

    let mut g = tiny_llama_gguf();
    g.remove_kv("llama.context_length");
    let e = convert_err(&g, None);
    assert!(
        e.contains("required key \"llama.context_length\" is missing"),
        "{e}"
    );

    let mut g = tiny_llama_gguf();
    g.kv("tokenizer.ggml.token_type", GV::ArrI32(vec![1; 11]));
    let e = convert_err(&g, None);
    assert!(e.contains("tokenizer.ggml.token_type"), "{e}");

    // Issue 13 row 10: a rotary dimension the runtime refuses is refused here.
    let mut g = tiny_llama_gguf();
    g.kv("llama.rope.dimension_count", GV::U32(0));
    let e = convert_err(&g, None);
    assert!(
        e.contains("'model.rope_dim' = 0: must be even and in 2..="),
        "{e}"
    );

    let mut g = tiny_llama_gguf();
    g.kv("llama.rope.scaling.type", s("yarn"));
    let e = convert_err(&g, None);
    assert!(
        e.contains("unsupported: llama.rope.scaling.type = \"yarn\""),
        "{e}"
    );
}

#[test]
fn refuses_unwritable_output() {
    let g = tiny_llama_gguf();
    let dir = TempDir::new("gguf-out");
    let e = convert_err(&g, Some(&dir.join("no/such/dir/out.pipit")));
    assert!(
        e.contains("is not writable: directory") && e.contains("does not exist"),
        "{e}"
    );
    let e = convert_err(&g, Some(dir.path()));
    assert!(e.contains("exists and is a directory, not a regular file"), "{e}");
}

#[test]
fn refuses_missing_input() {
    let dir = TempDir::new("gguf-missing");
    let e = convert(
        &dir.join("nope.gguf"),
        &dir.join("o.pipit"),
        Quant::Keep,
        &mut std::io::sink(),
    )
    .unwrap_err();
    assert!(
        e.to_string().starts_with("input ") && e.to_string().contains("nope.gguf"),
        "{e}"
    );
}

#[test]
fn truncated_or_bit_flipped_inputs_never_panic() {
    let dir = TempDir::new("gguf-fuzz");
    let good = tiny_llama_gguf().to_bytes();
    let input = dir.join("in.gguf");
    let out = dir.join("out.pipit");
    let mut rng = Rng(77);
    let mut cases = 0;
    // Every header/metadata/directory length from 0 to the data section, then some in the data.
    let data_start = good.len()
        - tiny_llama_gguf()
            .tensors
            .iter()
            .map(|t| t.data.len())
            .sum::<usize>();
    let mut cuts: Vec<usize> = (0..data_start.min(2000)).collect();
    cuts.extend((0..40).map(|_| (rng.next() as usize) % good.len()));
    for cut in cuts {
        std::fs::write(&input, &good[..cut]).unwrap();
        assert!(
            convert(&input, &out, Quant::Keep, &mut std::io::sink()).is_err(),
            "truncated at {cut} accepted"
        );
        cases += 1;
    }
    for _ in 0..300 {
        let mut b = good.clone();
        let pos = (rng.next() as usize) % data_start;
        b[pos] ^= 1 << (rng.next() % 8);
        std::fs::write(&input, &b).unwrap();
        // Either a clean error or a file that parses.
        if convert(&input, &out, Quant::Keep, &mut std::io::sink()).is_ok() {
            PipitFile::parse(&std::fs::read(&out).unwrap()).unwrap();
        }
        cases += 1;
    }
    assert!(cases > 500);
}

#[test]
fn written_metadata_is_typed_per_spec() {
    let (_, f, _d) = run(&tiny_llama_gguf(), Quant::Keep);
    let spec_types = [
        ("general.architecture", "str"),
        ("model.n_layer", "u32"),
        ("model.norm_eps", "f32"),
        ("model.layer_sliding", "[u8]"),
        ("model.tied_embeddings", "bool"),
        ("tokenizer.tokens", "[str]"),
        ("tokenizer.token_types", "[u8]"),
        ("tokenizer.eot_ids", "[i32]"),
        ("tokenizer.bos_id", "i32"),
    ];
    for (k, t) in spec_types {
        assert_eq!(f.metadata.get(k).map(Value::type_name), Some(t), "{k}");
    }
}

/// The Q4_K_M mix against the types llama-quantize chose in the published Gemma 3 270M
/// Q4_K_M file (tools/fetch-models.sh; 18 layers, d_model 640, d_ff 2048, tied embedding),
/// as listed by the gguf package: Q6_K -> Q8_0 and Q4_K -> Q5_0 where rows are 640 wide.
#[test]
fn k_mix_reproduces_llama_quantize_on_gemma3() {
    use pipit_convert::convert::k_mix;
    let more = [0, 1, 4, 7, 10, 13, 15, 16, 17];
    assert_eq!(k_mix(DType::Q4_K, "token_embd", 640, 18, true), DType::Q8_0);
    assert_eq!(
        k_mix(DType::Q4_K, "token_embd", 640, 18, false),
        DType::Q5_0
    );
    assert_eq!(k_mix(DType::Q4_K, "output", 1024, 18, false), DType::Q6_K);
    for l in 0..18u64 {
        let m = |n: &str, cols| k_mix(DType::Q4_K, &format!("blk.{l}.{n}"), cols, 18, true);
        let bumped = more.contains(&l);
        assert_eq!(m("attn_q", 640), DType::Q5_0);
        assert_eq!(m("attn_k", 640), DType::Q5_0);
        assert_eq!(m("attn_output", 1024), DType::Q4_K);
        assert_eq!(m("ffn_gate", 640), DType::Q5_0);
        assert_eq!(m("ffn_up", 640), DType::Q5_0);
        let v = if bumped { DType::Q8_0 } else { DType::Q5_0 };
        assert_eq!(m("attn_v", 640), v, "layer {l}");
        let down = if bumped { DType::Q6_K } else { DType::Q4_K };
        assert_eq!(m("ffn_down", 2048), down, "layer {l}");
        // Q5_K_M: Q5_K base, Q5_1 fallback; Q6_K: no bumps.
        let m5 = |n: &str, cols| k_mix(DType::Q5_K, &format!("blk.{l}.{n}"), cols, 18, true);
        assert_eq!(m5("attn_q", 640), DType::Q5_1);
        let down5 = if bumped { DType::Q6_K } else { DType::Q5_K };
        assert_eq!(m5("ffn_down", 2048), down5);
        let m6 = |n: &str, cols| k_mix(DType::Q6_K, &format!("blk.{l}.{n}"), cols, 18, true);
        assert_eq!(m6("attn_q", 640), DType::Q8_0);
        assert_eq!(m6("ffn_down", 2048), DType::Q6_K);
    }
}

/// `--quant q4_k_m` end to end on the tiny llama (d_model 64, d_ff 256): the head and the
/// bumped layers' ffn_down are Q6_K where rows allow, and every value is close to the source.
#[test]
fn quant_q4_k_m_writes_the_mix() {
    let g = tiny_llama_gguf();
    let (bytes, f, _d) = run(&g, Quant::Q4KM);
    // 2 layers: layer 1 gets more bits (l >= 7 * 2 / 8 = 1), layer 0 does not.
    assert_eq!(f.tensor("blk.0.ffn_down").unwrap().dtype, DType::Q4_K);
    assert_eq!(f.tensor("blk.1.ffn_down").unwrap().dtype, DType::Q6_K);
    assert_eq!(f.tensor("blk.0.attn_q").unwrap().dtype, DType::Q5_0);
    assert_eq!(f.tensor("output").unwrap().dtype, DType::Q8_0);
    assert_eq!(f.tensor("blk.0.attn_norm").unwrap().dtype, DType::F32);
    for name in [
        "blk.0.ffn_down",
        "blk.1.ffn_down",
        "blk.0.attn_q",
        "blk.0.ffn_up",
    ] {
        let (_, src, _) = source_values(&g, &format!("{name}.weight"));
        let e = rel_rmse(&src, &values(&f, &bytes, name));
        assert!(e < 0.1, "{name}: rel RMSE {e}");
    }
}
