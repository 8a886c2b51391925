//! The `pipit` command line on the real SmolLM2 model: tokenize, run, score and perplexity
//! against llama.cpp's figures. Needs models/SmolLM2-135M-Instruct.pipit (tools/test-models.sh).

mod common;
#[path = "support/json.rs"]
mod json;

use std::process::Command;

use json::Json;

const MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/models/SmolLM2-135M-Instruct.pipit"
);

/// Runs `pipit ARGS`, asserting success; returns (stdout, stderr).
fn pipit(args: &[&str]) -> (String, String) {
    assert!(
        std::path::Path::new(MODEL).exists(),
        "{MODEL} is missing: run tools/test-models.sh first"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_pipit"))
        .args(args)
        .output()
        .expect("pipit starts");
    let (stdout, stderr) = (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "pipit {args:?} failed:\n{stderr}");
    (stdout, stderr)
}

#[test]
fn tokenize_prints_llama_cpp_ids() {
    let r = Json::load("smollm2-135m.json");
    for case in r.get("tokenize_no_bos").arr() {
        let (out, _) = pipit(&["tokenize", "-m", MODEL, "--no-bos", case.get("text").str()]);
        let want: Vec<String> = case.get("ids").ids().iter().map(u32::to_string).collect();
        assert_eq!(
            out.trim_end(),
            format!("[{}]", want.join(", ")),
            "text {:?}",
            case.get("text").str()
        );
    }
}

#[test]
fn run_streams_only_the_continuation() {
    let r = Json::load("smollm2-135m.json");
    let case = &r.get("greedy").arr()[0];
    let prompt = case.get("prompt").str();
    let (out, err) = pipit(&["run", "-m", MODEL, "-p", prompt, "-n", "8", "--temp", "0"]);
    // llama.cpp's greedy text starts with the same words ("Berlin. The capital of the").
    let llama = case.get("llama_cpp_text").str();
    let continuation = &llama[prompt.len()..];
    assert!(
        continuation.starts_with(out.trim_end()),
        "pipit: {out:?}\nllama.cpp: {continuation:?}"
    );
    assert!(out.starts_with(" Berlin."), "{out:?}");
    assert!(err.contains("tok/s"), "stats line missing: {err}");

    // Same seed, same text; another seed, other text.
    let sample = |seed: &str| {
        pipit(&[
            "run", "-m", MODEL, "-p", prompt, "-n", "24", "--temp", "1.0", "--seed", seed,
        ])
        .0
    };
    let a = sample("11");
    assert_eq!(a, sample("11"));
    assert!(
        (12..16).map(|s| sample(&s.to_string())).any(|o| o != a),
        "every seed gave the same text"
    );
}

#[test]
fn score_prints_the_documented_line() {
    let (out, _) = pipit(&[
        "score",
        "-m",
        MODEL,
        "--text",
        "The capital of France is Paris.",
    ]);
    let line = out.trim_end();
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(fields.len(), 3, "{line}");
    assert!(
        fields[0].starts_with("tokens=")
            && fields[1].starts_with("total_nll=")
            && fields[2].starts_with("mean_nll="),
        "{line}"
    );
    let n: f64 = fields[0][7..].parse().unwrap();
    let total: f64 = fields[1][10..].parse().unwrap();
    let mean: f64 = fields[2][9..].parse().unwrap();
    assert!((total / (n - 1.0) - mean).abs() < 1e-5, "{line}");
    assert!(mean > 0.5 && mean < 6.0, "implausible mean NLL: {line}");
}

#[test]
fn perplexity_matches_llama_cpp() {
    // llama.cpp's llama-perplexity on the same GGUF, same file, --ctx 512: 18.39 (see the
    // peer script in ../shared/scripts).
    const LLAMA_CPP: f64 = 18.39;
    let file = "/usr/share/common-licenses/GPL-3";
    let (out, _) = pipit(&["perplexity", "-m", MODEL, "-f", file, "--ctx", "512"]);
    let last = out.lines().last().unwrap();
    let ppl: f64 = last
        .strip_prefix("PPL = ")
        .unwrap_or_else(|| panic!("last line {last:?}"))
        .parse()
        .unwrap();
    assert!(
        (ppl - LLAMA_CPP).abs() / LLAMA_CPP < 0.01,
        "PPL {ppl} vs llama.cpp {LLAMA_CPP}"
    );
}

#[test]
fn bad_arguments_are_errors_not_crashes() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_pipit"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["run", "-m", "/nonexistent.pipit", "-p", "x"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.pipit"));
    let out = run(&["run", "-m", MODEL, "-p", "x", "--top-p", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("top_p"));
    let out = run(&["run", "-m", MODEL, "-p", "x", "--ctx", "100000000"]);
    assert!(!out.status.success());
    let out = run(&["bench", "-m", MODEL, "-r", "0"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&run(&["--help"]).stdout).into_owned();
    for cmd in [
        "run",
        "tokenize",
        "score",
        "perplexity",
        "inspect",
        "verify",
        "bench",
        "chat",
    ] {
        assert!(text.contains(cmd), "--help does not mention {cmd}");
    }
}

#[test]
fn bench_json_has_the_documented_fields() {
    let (out, _) = pipit(&[
        "bench", "-m", MODEL, "-p", "16", "-n", "4", "-r", "1", "-t", "1", "--json",
    ]);
    for key in ["\"pp_tps\"", "\"tg_tps\"", "\"kernel\"", "\"threads\": 1", "\"kv_cache_bytes\""] {
        assert!(out.contains(key), "{key} missing from {out}");
    }
}

#[test]
fn bench_compares_decode_with_the_memory_roofline() {
    let field = |out: &str, key: &str| -> f64 {
        let at = out.find(&format!("\"{key}\": ")).unwrap_or_else(|| panic!("{key} missing from {out}"));
        let rest = &out[at + key.len() + 4..];
        let end = rest.find([',', '}']).unwrap();
        rest[..end].trim_matches('"').parse().unwrap_or(f64::NAN)
    };
    let args = ["bench", "-m", MODEL, "-p", "0", "-n", "4", "-r", "1", "-t", "1", "--json"];
    let (given, _) = pipit(&[&args[..], &["--roofline", "20"]].concat());
    assert!(given.contains("\"roofline\": \"given\""), "{given}");
    assert_eq!(field(&given, "roofline_gbps"), 20.0);
    let pct = field(&given, "tg_roofline_pct");
    assert!((pct - 5.0 * field(&given, "tg_weight_gbps")).abs() < 0.1, "{given}");
    let (measured, _) = pipit(&[&args[..], &["--roofline"]].concat());
    assert!(measured.contains("\"roofline\": \"measured\""), "{measured}");
    let r = field(&measured, "roofline_gbps");
    assert!(r > 0.1 && r < 10_000.0, "a read bandwidth of {r} GB/s: {measured}");
    let out = Command::new(env!("CARGO_BIN_EXE_pipit"))
        .args([&args[..], &["--roofline", "NaN"]].concat())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--roofline NaN"));
}

#[test]
fn inspect_summarizes_the_model() {
    let tiny = common::Tiny::gemma3(pipit_format::DType::Q4_1, 1);
    let path = std::env::temp_dir().join(format!("pipit-cli-inspect-{}.pipit", std::process::id()));
    std::fs::write(&path, tiny.bytes()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pipit"))
        .arg("inspect")
        .arg(&path)
        .env("PIPIT_KERNELS", "scalar")
        .output()
        .expect("pipit starts");
    std::fs::remove_file(&path).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "version 1",
        "'tiny-gemma3' (gemma3)",
        "n_layer 2, d_model 64, n_head 4, n_kv_head 1, head_dim 32",
        "sliding window 8 tokens on 1 of 2 layers",
        "bpe (pre smollm), 299 tokens, 40 merges",
        "bos 1 \"<|im_start|>\"",
        "blk.1.post_ffw_norm",
        "Q4_1 15 tensors",
        "a session's KV cache (F16, batches of 64) and scratch:",
        // Pages of 32 positions x 32 x 2 bytes x 2 (K, V) = 4096 bytes: the global layer
        // holds 2048 / 32 + 1 spare = 65; the sliding one its 8-token window plus a 64-token
        // batch, (8 + 63) / 32 rounded up + 1 = 4, a spare, and the 2 of the committed
        // window a failed call restores (KvCache::bytes_for): 72 pages.
        "n_ctx 2048 (trained): KV cache 0.3 MiB (294912 bytes; 55.4% of a full-size cache's \
         0.5 MiB)",
        "kernels    scalar",
    ] {
        assert!(r.contains(needle), "missing {needle:?} in\n{r}");
    }
}

#[test]
fn run_with_one_beam_prints_the_greedy_text_and_beams_all_every_hypothesis() {
    let prompt = "The capital of France is";
    let (greedy, _) = pipit(&["run", "-m", MODEL, "-p", prompt, "-n", "12", "--temp", "0"]);
    let (beam, stats) = pipit(&["run", "-m", MODEL, "-p", prompt, "-n", "12", "--beams", "1"]);
    assert_eq!(beam, greedy);
    assert!(stats.contains("logprob"), "{stats}");
    let (all, _) = pipit(&[
        "run", "-m", MODEL, "-p", prompt, "-n", "8", "--beams", "3", "--beams-all",
        "--length-penalty", "0", "--ignore-eos",
    ]);
    let lines: Vec<&str> = all.lines().collect();
    assert_eq!(lines.len(), 3, "{all}");
    let mut last = f64::INFINITY;
    for (i, line) in lines.iter().enumerate() {
        assert!(line.starts_with(&format!("#{} score ", i + 1)), "{line}");
        let score: f64 = line.split(' ').nth(2).unwrap().parse().unwrap();
        assert!(score <= last, "hypotheses best first: {all}");
        last = score;
        assert!(line.contains(" tokens 8: "), "{line}");
    }
}

#[test]
fn bench_with_beams_reports_step_and_memory_ratios() {
    let (out, _) = pipit(&[
        "bench", "-m", MODEL, "-p", "32", "-n", "8", "-r", "1", "-t", "1", "--json", "--beams", "4",
    ]);
    for key in [
        "\"beams\": 4",
        "\"greedy_step_ms\"",
        "\"beam_step_ms\"",
        "\"beam_step_ratio\"",
        "\"beam_memory_ratio\"",
    ] {
        assert!(out.contains(key), "{key} missing from {out}");
    }
    Json::parse(out.trim());
}

#[test]
fn a_beam_search_logprob_equals_score_of_its_text() {
    // Per reference prompt: 4 beams, fixed length, plain sums; the printed log-probability of
    // the best hypothesis equals `score --prompt P --text T` on the printed text whenever that
    // text tokenizes back to the same number of tokens.
    let r = Json::load("smollm2-135m.json");
    let mut compared = 0;
    for case in r.get("greedy").arr() {
        let prompt = case.get("prompt").str();
        let (text, stats) = pipit(&[
            "run", "-m", MODEL, "-p", prompt, "-n", "16", "--beams", "4", "--ignore-eos",
            "--length-penalty", "0",
        ]);
        let text = text.strip_suffix('\n').unwrap();
        let logprob: f64 = stats
            .split("logprob ")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .unwrap()
            .parse()
            .unwrap();
        let (scored, _) = pipit(&["score", "-m", MODEL, "--prompt", prompt, "--text", text]);
        let fields: Vec<&str> = scored.trim_end().split(' ').collect();
        let n: usize = fields[0][7..].parse().unwrap();
        let total_nll: f64 = fields[1][10..].parse().unwrap();
        if n != 16 {
            eprintln!("{prompt:?}: the text re-tokenizes to {n} tokens; not comparable");
            continue;
        }
        assert!(
            (-total_nll - logprob).abs() < 1e-4,
            "{prompt:?}: beam {logprob} vs score {}",
            -total_nll
        );
        compared += 1;
    }
    assert!(compared >= 3, "only {compared} prompts re-tokenized to the same length");
}

#[test]
fn choices_always_give_one_of_the_options() {
    let options = [" Paris", " Berlin", " London", " a small city in France", " Lyon"];
    let joined = options.join("|");
    for seed in 0..20 {
        let seed = seed.to_string();
        let (out, _) = pipit(&[
            "run", "-m", MODEL, "-p", "The capital of France is", "-n", "16", "--temp", "1.0",
            "--seed", &seed, "--choices", &joined,
        ]);
        let text = out.strip_suffix('\n').unwrap();
        assert!(options.contains(&text), "seed {seed}: {text:?}");
    }
}

#[test]
fn beams_follow_a_constraint() {
    let (out, _) = pipit(&[
        "run", "-m", MODEL, "-p", "Is the sky blue? Answer:", "-n", "8", "--beams", "3",
        "--regex", " ?(yes|no)",
    ]);
    let text = out.strip_suffix('\n').unwrap();
    assert!([" yes", " no", "yes", "no"].contains(&text), "{text:?}");
    let (out, _) = pipit(&[
        "run", "-m", MODEL, "-p", "A JSON object describing a cat:", "-n", "48", "--beams", "2",
        "--json",
    ]);
    Json::parse(out.trim_end());
}

/// Issue 13 row 11, found by the tokenize fuzz target: SmolLM2 has no token for byte 0x13
/// (nor most C0 controls); it was dropped from the text, and now becomes the unknown token
/// (id 0, `<|endoftext|>`), as in llama.cpp's vocabularies with an unknown token.
#[test]
fn a_byte_without_a_token_becomes_the_unknown_token() {
    let (out, _) = pipit(&["tokenize", "-m", MODEL, "--no-bos", "T\u{13}e"]);
    assert_eq!(out.trim_end(), "[68, 0, 85]");
}

#[test]
fn run_dumps_the_logits_after_the_prompt() {
    use pipit::model::Model;
    use pipit::session::{Session, SessionParams};
    let tiny = common::Tiny::gemma3(pipit_format::DType::Q4_1, 2);
    let dir = std::env::temp_dir();
    let path = dir.join(format!("pipit-cli-dump-{}.pipit", std::process::id()));
    let dump = dir.join(format!("pipit-cli-dump-{}.f32", std::process::id()));
    std::fs::write(&path, tiny.bytes()).unwrap();
    let prompt = "hello world";
    let out = Command::new(env!("CARGO_BIN_EXE_pipit"))
        .args(["run", "-t", "1", "-n", "1", "--temp", "0", "-p", prompt, "-m"])
        .arg(&path)
        .arg("--dump-logits")
        .arg(&dump)
        .output()
        .expect("pipit starts");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&dump).unwrap();
    std::fs::remove_file(&dump).unwrap();
    // The same prompt through the library: the file is its logits, bit for bit.
    let model = std::sync::Arc::new(Model::open(&path).unwrap());
    std::fs::remove_file(&path).unwrap();
    let mut ids = Vec::new();
    let tok = model.tokenizer();
    tok.encode(prompt, tok.add_bos(), &mut ids);
    let params = SessionParams {
        n_threads: 1,
        ..SessionParams::default()
    };
    let mut session = Session::new(std::sync::Arc::clone(&model), params).unwrap();
    session.eval(&ids).unwrap();
    let want: Vec<u8> = session
        .logits()
        .unwrap()
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    assert_eq!(bytes.len(), 4 * model.hparams().n_vocab);
    assert!(bytes == want, "dumped logits differ from the session's");
}
