//! Gemma 3 270M (sliding-window attention, GeGLU, SentencePiece) against llama.cpp's greedy
//! output (tests/data/gemma3-270m.json). Needs models/gemma-3-270m.pipit (tools/test-models.sh).

#[path = "support/json.rs"]
mod json;

use std::sync::Arc;

use json::Json;
use pipit::model::Model;
use pipit::sampler::{Sampler, SamplerParams};
use pipit::session::{Session, SessionParams};

fn model() -> Arc<Model> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/models/gemma-3-270m.pipit");
    match Model::open(path) {
        Ok(m) => Arc::new(m),
        Err(e) => panic!("{path}: {e}\nrun tools/test-models.sh first (fetches and converts the reference models)"),
    }
}

#[test]
fn prompts_tokenize_with_bos_like_llama_cpp() {
    let r = Json::load("gemma3-270m.json");
    let model = model();
    let tok = model.tokenizer();
    assert!(tok.add_bos());
    for case in r.get("greedy_llama_cpp").arr() {
        let mut ids = Vec::new();
        tok.encode(case.get("prompt").str(), tok.add_bos(), &mut ids);
        assert_eq!(
            ids,
            case.get("prompt_ids_with_bos").ids(),
            "{:?}",
            case.get("prompt").str()
        );
    }
}

#[test]
fn greedy_text_follows_llama_cpp() {
    let r = Json::load("gemma3-270m.json");
    let model = model();
    let tok = model.tokenizer();
    let mut matched = 0;
    let cases = r.get("greedy_llama_cpp").arr();
    for case in cases {
        let prompt = case.get("prompt").str();
        let ids = case.get("prompt_ids_with_bos").ids();
        let params = SessionParams {
            n_ctx: 256,
            ..SessionParams::default()
        };
        let mut s = Session::new(Arc::clone(&model), params).unwrap();
        let mut sampler = Sampler::new(SamplerParams::greedy(), model.hparams().n_vocab).unwrap();
        s.eval(&ids).unwrap();
        let mut text = Vec::new();
        for _ in 0..16 {
            let t = s.sample(&mut sampler).unwrap();
            if tok.is_eog(t) {
                break;
            }
            text.extend_from_slice(tok.piece(t));
            s.eval(&[t]).unwrap();
        }
        let text = String::from_utf8_lossy(&text).into_owned();
        let want = case.get("llama_cpp_text").str();
        let want = &want[want.find(prompt).expect("prompt in llama.cpp text") + prompt.len()..];
        let ok = want.starts_with(&text);
        matched += usize::from(ok);
        eprintln!(
            "{prompt:?}: {} {text:?}\n  llama.cpp: {:?}",
            if ok { "match" } else { "differs" },
            &want[..want.len().min(text.len() + 10)]
        );
    }
    // llama.cpp quantizes activations differently, so a near-tie may go the other way.
    assert!(
        matched + 1 >= cases.len(),
        "{matched} of {} greedy continuations follow llama.cpp",
        cases.len()
    );
}

/// A long text of real words (tokenizes to well over the 512-token window).
fn long_ids(model: &Model, n: usize) -> Vec<u32> {
    let tok = model.tokenizer();
    let text = "The river runs past the old mill, where children once counted boats and \
                the miller sold flour to every farm in the valley. ";
    let mut ids = Vec::new();
    tok.encode(&text.repeat(n / 20 + 1), true, &mut ids);
    ids.truncate(n);
    assert_eq!(ids.len(), n);
    ids
}

#[test]
fn the_window_sized_cache_equals_full_attention_with_a_window_mask() {
    let model = model();
    let hp = model.hparams();
    assert_eq!(hp.sliding_window, 512);
    let ids = long_ids(&model, 1300);
    let make = |full: bool| {
        let params = SessionParams {
            n_ctx: 1400,
            full_window_cache: full,
            ..SessionParams::default()
        };
        Session::new(Arc::clone(&model), params).unwrap()
    };
    let (mut ring, mut full) = (make(false), make(true));
    // A long prompt in batches, then decode steps past it: the logits agree bit for bit.
    for s in [&mut ring, &mut full] {
        s.eval(&ids[..1200]).unwrap();
    }
    assert_eq!(ring.logits().unwrap(), full.logits().unwrap(), "after 1200 tokens");
    for (i, &t) in ids[1200..].iter().enumerate() {
        ring.eval(&[t]).unwrap();
        full.eval(&[t]).unwrap();
        assert_eq!(ring.logits().unwrap(), full.logits().unwrap(), "at token {}", 1200 + i);
    }
}

#[test]
fn the_window_sized_cache_is_under_30_percent_of_a_full_one_at_8192() {
    let model = model();
    let sized = |full: bool| SessionParams {
        n_ctx: 8192,
        full_window_cache: full,
        ..SessionParams::default()
    };
    let ring = pipit::session::MemoryReport::estimate(&model, &sized(false)).unwrap();
    let full = pipit::session::MemoryReport::estimate(&model, &sized(true)).unwrap();
    let share = ring.kv_cache as f64 / full.kv_cache as f64;
    eprintln!(
        "KV cache at n_ctx 8192: window-sized {} bytes, full {} bytes ({:.1}%)",
        ring.kv_cache,
        full.kv_cache,
        share * 100.0
    );
    assert!(share <= 0.30, "{share}");
}

/// `pipit inspect --ctx N`'s line for a context: (KV cache bytes, its share of a full-size
/// cache in percent).
fn inspected_kv(n_ctx: usize) -> (usize, f64) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/models/gemma-3-270m.pipit");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pipit"))
        .args(["inspect", path, "--ctx", &n_ctx.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = String::from_utf8(out.stdout).unwrap();
    let head = format!("n_ctx {n_ctx}: KV cache ");
    let line = report
        .lines()
        .find_map(|l| l.trim().strip_prefix(head.as_str()))
        .unwrap_or_else(|| panic!("no {head:?} line in\n{report}"));
    // "41.4 MiB (43450368 bytes; 28.7% of a full-size cache's 144.6 MiB) + scratch ..."
    let field = |after: &str, until: &str| -> f64 {
        let rest = &line[line.find(after).unwrap() + after.len()..];
        rest[..rest.find(until).unwrap()].parse().unwrap()
    };
    (field("(", " bytes") as usize, field("bytes; ", "% of a full-size"))
}

#[test]
fn inspect_reports_the_kv_cache_a_session_allocates() {
    let model = model();
    let allocated = |n_ctx: usize, full_window_cache: bool| {
        let params = SessionParams {
            n_ctx,
            full_window_cache,
            ..SessionParams::default()
        };
        Session::new(model.clone(), params).unwrap().kv_cache_bytes()
    };
    // Inside one window, past it, and the 8192.
    for n_ctx in [300, 1200, 8192] {
        let (reported, share) = inspected_kv(n_ctx);
        let (ring, full) = (allocated(n_ctx, false), allocated(n_ctx, true));
        assert_eq!(reported, ring, "n_ctx {n_ctx}");
        let real_share = 100.0 * ring as f64 / full as f64;
        assert!((share - real_share).abs() <= 0.05, "n_ctx {n_ctx}: {share}% vs {real_share}%");
        if n_ctx == 8192 {
            assert!(real_share <= 30.0, "{real_share}% of a full cache at 8192");
        }
    }
}
