//! The model families on their tiny random models (tools/make_tiny_models.py), against
//! llama.cpp. Needs models/tiny/, made by tools/test-models.sh (which builds the peer
//! llama.cpp with /work/shared-style scripts/peer-llama-cpp.sh for its vocab GGUFs and
//! `gguf` package); a missing file is a failure, not a skip.
//!
//! - Tokenizers: every `.inp`/`.out` vector of llama.cpp's `llama-bpe`, `qwen2`, `phi-3` and
//!   `llama-spm` vocabularies (llama.cpp's test-tokenizer-0: no BOS, no special-token
//!   parsing), encoded by the tokenizer of the tiny model that carries that vocabulary.
//! - The Hugging Face path: each tiny model exported by tools/gguf_to_hf.py (f32, q/k rows
//!   back in split-half order for `llama`, Llama 3 RoPE scaling as config.json parameters,
//!   Phi-3's fused tensors and LongRoPE factors as Hugging Face has them, Gemma's norms as
//!   `w` applied as `1 + w` under Gemma's names, Gemma 3's layer kinds as `layer_types`)
//!   converts to a model whose logits equal the GGUF's within 1e-4.
//! - llama.cpp (tests/data/families.json, made by tools/family_reference.py with the peer):
//!   `pipit perplexity --ctx 128` within 0.5% of `llama-perplexity -c 128` on
//!   tests/data/families.txt, and `pipit run --temp 0` printing exactly llama.cpp's greedy
//!   text for 24 tokens on two prompts, with the context llama.cpp used (it pads every
//!   context to 256, beyond Phi-3's original 64, so both runs use LongRoPE's long factors;
//!   the short set is compared with the HF path at n_ctx 48). llama.cpp runs its plain f32
//!   path (flash attention off, F32 KV cache; the greedy text through tools/llama_greedy.c):
//!   under llama-simple's flash attention with an F16 cache, Mistral's first prompt takes
//!   the runner-up at step 11, where the f32 margin is 0.0071 and the flash-attention one
//!   0.0007. families.json records each prompt's smallest margin (pipit runs its default
//!   F16 cache: on that Mistral step its margin is 0.0057, against 0.0071 with F32).
//!   tools/test-models.sh checks that the generator reproduces the recorded model bytes.

use pipit::model::Model;
use pipit::session::Precision;
use pipit::session::{Session, SessionParams};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

// Shared with the other reference tests; this one reads objects, numbers and strings.
#[allow(dead_code)]
#[path = "support/json.rs"]
mod json;

fn tiny_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/models/tiny"))
}

fn open(family: &str) -> Model {
    let path = tiny_dir().join(format!("{family}.pipit"));
    Model::open(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}\nrun tools/test-models.sh first (makes the tiny family models)",
            path.display()
        )
    })
}

/// llama.cpp's test vectors of `vocab`: (text, ids).
fn vectors(vocab: &str) -> Vec<(String, Vec<u32>)> {
    let base = tiny_dir().join(format!("ggml-vocab-{vocab}.gguf"));
    let read = |ext: &str| {
        let p = base.with_extension(format!("gguf.{ext}"));
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("{}: {e}\nrun tools/test-models.sh first", p.display()))
    };
    let (inp, out) = (read("inp"), read("out"));
    let sep = "\n__ggml_vocab_test__\n";
    let mut texts: Vec<String> = Vec::new();
    let mut rest = inp.as_str();
    while !rest.is_empty() {
        match rest.find(sep) {
            Some(i) => {
                texts.push(rest[..i].to_string());
                rest = &rest[i + sep.len()..];
            }
            None => {
                texts.push(rest.to_string());
                break;
            }
        }
    }
    let ids: Vec<Vec<u32>> = out
        .lines()
        .map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect())
        .collect();
    assert_eq!(texts.len(), ids.len(), "{vocab}: .inp and .out disagree");
    assert!(texts.len() > 20, "{vocab}: too few vectors");
    texts.into_iter().zip(ids).collect()
}

fn check_vocab(family: &str, vocab: &str) {
    let model = open(family);
    let tok = model.tokenizer();
    let mut failures = Vec::new();
    let mut ids = Vec::new();
    let cases = vectors(vocab);
    for (text, want) in &cases {
        tok.encode(text, false, &mut ids);
        if &ids != want {
            failures.push(format!("{text:?}\n   pipit {ids:?}\n   llama {want:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{vocab}: {} of {} vectors differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn tokenizer_llama_bpe() {
    check_vocab("llama3", "llama-bpe");
}

#[test]
fn tokenizer_qwen2() {
    check_vocab("qwen2", "qwen2");
}

#[test]
fn tokenizer_phi3() {
    check_vocab("phi3", "phi-3");
}

#[test]
fn tokenizer_llama_spm() {
    check_vocab("mistral", "llama-spm");
}

/// Every logit of `ids`, through the f32 path, in a session of `n_ctx` positions.
fn all_logits(model: Model, ids: &[u32], n_ctx: usize) -> Vec<f32> {
    let params = SessionParams {
        n_ctx,
        precision: Precision::F32,
        ..SessionParams::default()
    };
    let mut s = Session::new(Arc::new(model), params).unwrap();
    let mut out = Vec::new();
    s.eval_all(ids, |_, l| out.extend_from_slice(l)).unwrap();
    out
}

/// The GGUF's tokens of a text, fed to both conversions (a SentencePiece vocabulary's
/// HF export has no merges, so only the weights are compared), in a context of 48 and of
/// 128 (Phi-3's LongRoPE uses its short factors in the first, its long ones in the second),
/// as many as fit: more than the 32-token window of Gemma's sliding layers either way.
fn hf_matches_gguf(family: &str) {
    let text = "The quick brown fox jumps over the lazy dog; 12345 times, again and again. \
                Then the dog, no longer lazy, chased the fox around the farm until sunset.";
    let gguf = open(family);
    let mut ids = Vec::new();
    gguf.tokenizer()
        .encode(text, gguf.tokenizer().add_bos(), &mut ids);
    assert!(ids.len() > 32, "{family}: {ids:?}");
    for n_ctx in [48, 128] {
        let ids = &ids[..ids.len().min(n_ctx)];
        let a = all_logits(open(family), ids, n_ctx);
        let b = all_logits(open(&format!("hf-{family}")), ids, n_ctx);
        assert_eq!(a.len(), b.len());
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(
            worst <= 1e-4,
            "{family}, n_ctx {n_ctx}: max |logit difference| {worst}"
        );
    }
}

#[test]
fn hf_llama3_rope_scaling_converts_to_the_same_logits() {
    hf_matches_gguf("llama3");
}

#[test]
fn hf_qwen2_converts_to_the_same_logits() {
    hf_matches_gguf("qwen2");
}

#[test]
fn hf_qwen3_converts_to_the_same_logits() {
    hf_matches_gguf("qwen3");
}

#[test]
fn hf_mistral_converts_to_the_same_logits() {
    hf_matches_gguf("mistral");
}

#[test]
fn hf_phi3_fused_and_longrope_convert_to_the_same_logits() {
    hf_matches_gguf("phi3");
}

#[test]
fn hf_gemma2_norms_softcaps_and_window_convert_to_the_same_logits() {
    hf_matches_gguf("gemma2");
}

#[test]
fn hf_gemma3_norms_and_layer_types_convert_to_the_same_logits() {
    hf_matches_gguf("gemma3");
}

fn pipit(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_pipit"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pipit {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn against_llama_cpp(family: &str) {
    let reference = json::Json::load("families.json");
    let r = reference.get(family);
    let model = tiny_dir().join(format!("{family}.pipit"));
    let model = model.to_str().unwrap();
    let text = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/families.txt");

    let out = pipit(&["perplexity", "-m", model, "-f", text, "--ctx", "128"]);
    let ppl: f64 = out
        .trim()
        .strip_prefix("PPL = ")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{family}: no PPL in {out:?}"));
    let want = r.get("ppl").num();
    assert!(
        (ppl / want - 1.0).abs() <= 0.005,
        "{family}: pipit PPL {ppl}, llama.cpp {want}"
    );

    for g in r.get("greedy").arr() {
        let n_ctx = format!("{}", g.get("n_ctx").num());
        let prompt = g.get("prompt").str();
        let text = pipit(&[
            "run", "-m", model, "-p", prompt, "-n", "24", "--temp", "0", "--ctx", &n_ctx,
        ]);
        assert_eq!(
            text,
            g.get("text").str(),
            "{family}: greedy text of {prompt:?}"
        );
    }
}

#[test]
fn llama3_matches_llama_cpp() {
    against_llama_cpp("llama3");
}

#[test]
fn mistral_matches_llama_cpp() {
    against_llama_cpp("mistral");
}

#[test]
fn qwen2_matches_llama_cpp() {
    against_llama_cpp("qwen2");
}

#[test]
fn qwen3_matches_llama_cpp() {
    against_llama_cpp("qwen3");
}

#[test]
fn phi3_matches_llama_cpp() {
    against_llama_cpp("phi3");
}

#[test]
fn gemma2_matches_llama_cpp() {
    against_llama_cpp("gemma2");
}

#[test]
fn gemma3_matches_llama_cpp() {
    against_llama_cpp("gemma3");
}
