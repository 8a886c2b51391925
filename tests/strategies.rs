//! Single-sequence generation strategies: truncate, save/load, choose, stop strings, score
//! with a prompt and --ignore-eos, in the library (tiny synthetic models) and on the command
//! line (the real SmolLM2 model, models/SmolLM2-135M-Instruct.pipit).

mod common;

use std::process::Command;
use std::sync::Arc;

use pipit::generate::{GenerateOptions, StopReason};
use pipit::model::Model;
use pipit::sampler::SamplerParams;
use pipit::session::{KvType, Session, SessionParams};
use pipit::Error;
use pipit_format::DType;

const SMOLLM2: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/models/SmolLM2-135M-Instruct.pipit"
);

fn tiny(arch: &str, seed: u64) -> Arc<Model> {
    let t = if arch == "llama" {
        common::Tiny::llama(DType::Q8_0, seed)
    } else {
        common::Tiny::gemma3(DType::Q8_0, seed)
    };
    Arc::new(Model::from_bytes(t.bytes()).unwrap())
}

fn session(model: &Arc<Model>, n_ctx: usize, n_batch: usize, kv_type: KvType) -> Session {
    let params = SessionParams {
        n_ctx,
        n_threads: 2,
        n_batch,
        kv_type,
        ..SessionParams::default()
    };
    Session::new(Arc::clone(model), params).unwrap()
}

/// Spread-out token ids of the tiny vocabulary.
fn ids(n: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 37 + 11) % 290) as u32).collect()
}

fn greedy(s: &mut Session, n: usize) -> Vec<u32> {
    let opts = GenerateOptions {
        sampling: SamplerParams::greedy(),
        max_tokens: n,
        ignore_eos: true,
        ..GenerateOptions::default()
    };
    let before = s.n_past();
    s.generate(&[], &opts, |_, _| false).unwrap();
    s.tokens()[before..].to_vec()
}

#[test]
fn truncate_then_reevaluate_gives_bit_identical_logits() {
    for arch in ["llama", "gemma3"] {
        let m = tiny(arch, 21);
        // Batches of 4 and of 64: the rewound positions cross batch boundaries or not.
        for n_batch in [4, 64] {
            let mut s = session(&m, 40, n_batch, KvType::F16);
            let t = ids(30);
            s.eval(&t).unwrap();
            let full = s.logits().unwrap().to_vec();
            for cut in [29, 17, 1] {
                s.truncate(cut).unwrap();
                assert_eq!(s.n_past(), cut);
                let mut fresh = session(&m, 40, n_batch, KvType::F16);
                fresh.eval(&t[..cut]).unwrap();
                assert_eq!(
                    s.logits().unwrap(),
                    fresh.logits().unwrap(),
                    "{arch} cut {cut}"
                );
                s.eval(&t[cut..]).unwrap();
                assert_eq!(
                    s.logits().unwrap(),
                    &full[..],
                    "{arch} {n_batch} re-eval from {cut}"
                );
            }
            assert!(matches!(s.truncate(31), Err(Error::InvalidArgument(_))));
            assert_eq!(s.logits().unwrap(), &full[..]);
            s.truncate(0).unwrap();
            assert_eq!((s.n_past(), s.logits()), (0, None));
        }
    }
}

#[test]
fn save_load_round_trip_and_refusals() {
    for kv_type in [KvType::F16, KvType::F32, KvType::Int8] {
        for arch in ["llama", "gemma3"] {
            // An int8 cache needs head_dim 32: the tiny gemma3's, not the tiny llama's 16.
            if kv_type == KvType::Int8 && arch == "llama" {
                continue;
            }
            let m = tiny(arch, 22);
            let mut s = session(&m, 48, 8, kv_type);
            s.eval(&ids(19)).unwrap();
            let mut state = Vec::new();
            s.save(&mut state).unwrap();
            assert_eq!(state.len(), s.state_len());
            let logits = s.logits().unwrap().to_vec();
            let text = greedy(&mut s, 12);

            // A fresh session replays the same logits and greedy text.
            let mut t = session(&m, 48, 8, kv_type);
            t.load(&state).unwrap();
            assert_eq!(t.tokens(), &ids(19)[..]);
            assert_eq!(t.logits().unwrap(), &logits[..]);
            assert_eq!(greedy(&mut t, 12), text, "{arch} {kv_type:?}");
            // And so does the first session, loaded over its own later context.
            s.load(&state).unwrap();
            assert_eq!(greedy(&mut s, 12), text);

            // Refusals leave the session byte-identical.
            let mut before = Vec::new();
            t.save(&mut before).unwrap();
            let check_unchanged = |t: &Session| {
                let mut after = Vec::new();
                t.save(&mut after).unwrap();
                assert!(
                    after == before,
                    "{arch} {kv_type:?}: a failed load changed the session"
                );
            };
            let other = tiny(arch, 23);
            let mut o = session(&other, 48, 8, kv_type);
            o.eval(&ids(19)).unwrap();
            let mut foreign = Vec::new();
            o.save(&mut foreign).unwrap();
            assert!(matches!(
                t.load(&foreign),
                Err(Error::State(pipit::error::StateError::OtherModel))
            ));
            check_unchanged(&t);
            for cut in [0, 7, 64, state.len() / 2, state.len() - 1] {
                assert!(
                    matches!(t.load(&state[..cut]), Err(Error::State(_))),
                    "cut {cut}"
                );
                check_unchanged(&t);
            }
            let mut longer = state.clone();
            longer.push(0);
            assert!(t.load(&longer).is_err());
            for at in [0, 9, 17, 41, 70, state.len() / 2, state.len() - 3] {
                for bit in [0x01u8, 0x80] {
                    let mut flipped = state.clone();
                    flipped[at] ^= bit;
                    assert!(
                        matches!(t.load(&flipped), Err(Error::State(_))),
                        "byte {at}"
                    );
                    check_unchanged(&t);
                }
            }
            // Another n_ctx or KV type.
            let mut wide = session(&m, 49, 8, kv_type);
            assert!(matches!(
                wide.load(&state),
                Err(Error::State(pipit::error::StateError::NCtx { .. }))
            ));
            let other_kv = if kv_type == KvType::F32 {
                KvType::F16
            } else {
                KvType::F32
            };
            let mut k = session(&m, 48, 8, other_kv);
            assert!(matches!(
                k.load(&state),
                Err(Error::State(pipit::error::StateError::KvType))
            ));
            assert_eq!(k.n_past(), 0);
        }
    }
}

#[test]
fn an_empty_session_saves_and_loads() {
    let m = tiny("llama", 24);
    let s = session(&m, 16, 8, KvType::F16);
    let mut state = Vec::new();
    s.save(&mut state).unwrap();
    let mut t = session(&m, 16, 8, KvType::F16);
    t.eval(&ids(3)).unwrap();
    t.load(&state).unwrap();
    assert_eq!((t.n_past(), t.logits()), (0, None));
}

#[test]
fn choose_shares_the_prompt_and_equals_score() {
    for arch in ["llama", "gemma3"] {
        let m = tiny(arch, 25);
        let prompt = ids(9);
        let options = vec![
            vec![5u32, 6, 7],
            vec![8],
            vec![9, 10, 11, 12, 13, 14, 15, 16, 17],
        ];
        let mut s = session(&m, 32, 4, KvType::F16);
        s.eval(&[1, 2]).unwrap();
        let mut lps = vec![0.0; 3];
        let best = s.choose(&prompt, &options, &mut lps).unwrap();
        // The context is the old one plus the prompt, with the prompt's logits.
        let mut want = vec![1, 2];
        want.extend_from_slice(&prompt);
        assert_eq!(s.tokens(), &want[..]);
        let mut r = session(&m, 32, 4, KvType::F16);
        r.eval(&want).unwrap();
        assert_eq!(s.logits(), r.logits());
        for (o, lp) in options.iter().zip(&lps) {
            let mut r = session(&m, 32, 4, KvType::F16);
            r.eval(&want).unwrap();
            assert_eq!(r.score(o).unwrap(), *lp, "{arch}");
        }
        let max = lps.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        assert_eq!(lps[best], max);
        // Errors change nothing: an option that does not fit, a cancel.
        let too_long = vec![vec![1u32; 32 - want.len() - prompt.len() + 1]];
        let mut one = vec![0.0];
        assert!(matches!(
            s.choose(&prompt, &too_long, &mut one),
            Err(Error::ContextFull { .. })
        ));
        assert_eq!(s.tokens(), &want[..]);
        s.cancel_handle()
            .store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(matches!(
            s.choose(&prompt, &options, &mut lps),
            Err(Error::Cancelled)
        ));
        assert_eq!(s.tokens(), &want[..]);
        assert_eq!(s.logits(), r.logits());
    }
}

#[test]
fn generation_that_fills_the_context_stops_cleanly() {
    let m = tiny("llama", 26);
    let mut s = session(&m, 12, 8, KvType::F16);
    let opts = GenerateOptions {
        sampling: SamplerParams::greedy(),
        max_tokens: 100,
        ignore_eos: true,
        ..GenerateOptions::default()
    };
    assert_eq!(
        s.generate(&ids(5), &opts, |_, _| false).unwrap(),
        StopReason::ContextFull
    );
    assert_eq!(s.n_past(), 12);
    // Full already: ends at once, nothing changes.
    assert_eq!(
        s.generate(&[], &opts, |_, _| false).unwrap(),
        StopReason::ContextFull
    );
    assert_eq!(s.n_past(), 12);
    // A prompt that does not fit is an error that changes nothing.
    assert!(matches!(
        s.generate(&ids(1), &opts, |_, _| false),
        Err(Error::ContextFull { .. })
    ));
    assert_eq!(s.n_past(), 12);
}

#[test]
fn ignore_eos_never_samples_end_of_text() {
    let m = tiny("llama", 27);
    let tok = m.tokenizer();
    let mut s = session(&m, 128, 8, KvType::F16);
    // A sampler hot enough to pick anything, end-of-text included, without the mask.
    let opts = GenerateOptions {
        sampling: SamplerParams {
            temperature: 50.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            ..SamplerParams::default()
        },
        max_tokens: 100,
        ignore_eos: true,
        ..GenerateOptions::default()
    };
    assert_eq!(
        s.generate(&ids(3), &opts, |_, _| false).unwrap(),
        StopReason::MaxTokens
    );
    assert_eq!(s.n_past(), 103);
    assert!(s.tokens().iter().all(|&t| !tok.is_eog(t)));
}

// ---- the command line on SmolLM2 ----

fn pipit(args: &[&str]) -> (String, String) {
    assert!(
        std::path::Path::new(SMOLLM2).exists(),
        "{SMOLLM2} is missing: run tools/test-models.sh first"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_pipit"))
        .args(args)
        .output()
        .expect("pipit starts");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "pipit {args:?} failed:\n{stderr}");
    (String::from_utf8(out.stdout).unwrap(), stderr)
}

const PROMPT: &str = "<|im_start|>user\nWrite a short story about a robot who learns to paint.<|im_end|>\n<|im_start|>assistant\n";

#[test]
fn a_stop_string_across_two_tokens_ends_the_output_before_it() {
    // The greedy reply, piece by piece, from the library.
    let model = Arc::new(Model::open(SMOLLM2).unwrap());
    let tok = model.tokenizer();
    let mut prompt = Vec::new();
    tok.encode(PROMPT, tok.add_bos(), &mut prompt);
    let mut s = Session::new(
        Arc::clone(&model),
        SessionParams {
            n_ctx: 512,
            n_threads: 2,
            ..SessionParams::default()
        },
    )
    .unwrap();
    let mut pieces: Vec<Vec<u8>> = Vec::new();
    let opts = GenerateOptions {
        sampling: SamplerParams::greedy(),
        max_tokens: 32,
        ..GenerateOptions::default()
    };
    s.generate(&prompt, &opts, |p, _| {
        pieces.push(p.to_vec());
        false
    })
    .unwrap();
    let text: Vec<u8> = pieces.concat();
    // The last two bytes of piece k-1 and the first two of piece k, found nowhere earlier.
    let (k, stop) = (3..pieces.len())
        .find_map(|k| {
            let (a, b) = (&pieces[k - 1], &pieces[k]);
            if a.len() < 2 || b.len() < 2 {
                return None;
            }
            let stop = [&a[a.len() - 2..], &b[..2]].concat();
            let at = pieces[..k - 1].concat().len() + a.len() - 2;
            let first = text.windows(4).position(|w| w == &stop[..]);
            (first == Some(at) && stop.is_ascii()).then_some((k, stop))
        })
        .expect("two ASCII pieces to span");
    let stop = String::from_utf8(stop).unwrap();
    let before = pieces[..k].concat();
    let before = &before[..before.len() - 2];

    let (out, err) = pipit(&[
        "run",
        "-m",
        SMOLLM2,
        "-p",
        PROMPT,
        "-n",
        "32",
        "--temp",
        "0",
        "--ctx",
        "512",
        "-t",
        "2",
        "--stop",
        "never-in-this-text",
        "--stop",
        &stop,
    ]);
    assert_eq!(out.as_bytes(), [before, b"\n"].concat(), "stop {stop:?}");
    assert!(err.contains("(stop string)"), "{err}");
    // Without the stop string the whole text comes out.
    let (out, _) = pipit(&[
        "run", "-m", SMOLLM2, "-p", PROMPT, "-n", "32", "--temp", "0", "--ctx", "512", "-t", "2",
    ]);
    assert_eq!(out.as_bytes(), [&text[..], b"\n"].concat());

    // The library: the context holds the tokens that spelled the stop string.
    let stops = vec![stop];
    let opts = GenerateOptions {
        stop: &stops,
        ..opts
    };
    s.reset();
    let mut got = Vec::new();
    let r = s
        .generate(&prompt, &opts, |p, _| {
            got.extend_from_slice(p);
            false
        })
        .unwrap();
    assert_eq!((r, &got[..]), (StopReason::StopString, before));
    assert_eq!(s.n_past(), prompt.len() + k + 1);
}

#[test]
fn choose_picks_paris_and_its_numbers_equal_score() {
    let (out, _) = pipit(&[
        "choose",
        "-m",
        SMOLLM2,
        "-p",
        "The capital of France is",
        "--options",
        " Berlin| Paris| London",
        "-t",
        "2",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("\" Paris\"\ttokens=1\t"), "{out}");
    for line in &lines {
        let field = |name: &str| -> f64 {
            line.split('\t')
                .find_map(|f| f.strip_prefix(name))
                .unwrap()
                .parse()
                .unwrap()
        };
        let option = line.split('\t').next().unwrap().trim_matches('"');
        let (score, _) = pipit(&[
            "score",
            "-m",
            SMOLLM2,
            "-p",
            "The capital of France is",
            "--text",
            option,
            "-t",
            "2",
        ]);
        let total: f64 = score
            .split_whitespace()
            .find_map(|f| f.strip_prefix("total_nll="))
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            (field("logprob=") + total).abs() <= 1e-6,
            "{line} vs {score}"
        );
        let n = field("tokens=");
        assert!((field("per_token=") - field("logprob=") / n).abs() <= 1e-6);
        assert!((field("per_byte=") - field("logprob=") / option.len() as f64).abs() <= 1e-6);
    }
}

#[test]
fn score_with_a_prompt_counts_only_the_text() {
    // Scoring "P T" whole and T after P agree on T's tokens when they tokenize apart.
    let model = Model::open(SMOLLM2).unwrap();
    let tok = model.tokenizer();
    let (p, t) = ("The capital of France is", " Paris. It is a big city.");
    let (mut pi, mut ti, mut whole) = (Vec::new(), Vec::new(), Vec::new());
    tok.encode(p, tok.add_bos(), &mut pi);
    tok.encode(t, false, &mut ti);
    tok.encode(&format!("{p}{t}"), tok.add_bos(), &mut whole);
    assert_eq!(
        [&pi[..], &ti[..]].concat(),
        whole,
        "the test needs a clean split"
    );
    let (with, _) = pipit(&["score", "-m", SMOLLM2, "-p", p, "--text", t, "-t", "2"]);
    assert!(with.starts_with(&format!("tokens={} ", ti.len())), "{with}");
    let nll = |line: &str, key: &str| -> f64 {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(key))
            .unwrap()
            .parse()
            .unwrap()
    };
    let mut s = Session::new(
        Arc::new(model),
        SessionParams {
            n_threads: 2,
            n_ctx: 64,
            ..SessionParams::default()
        },
    )
    .unwrap();
    s.eval(&pi).unwrap();
    let lp = s.score(&ti).unwrap();
    assert!(
        (nll(&with, "total_nll=") + lp).abs() <= 1e-5,
        "{with} vs {lp}"
    );
    assert!((nll(&with, "mean_nll=") + lp / ti.len() as f64).abs() <= 1e-5);
}

#[test]
fn ignore_eos_generates_exactly_n_tokens() {
    // SmolLM2 ends this reply early; with --ignore-eos it writes all 40 tokens.
    let p = "<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\n";
    let (_, err) = pipit(&[
        "run", "-m", SMOLLM2, "-p", p, "-n", "40", "--temp", "0", "-t", "2",
    ]);
    assert!(err.contains("(end of text)"), "{err}");
    let (_, err) = pipit(&[
        "run",
        "-m",
        SMOLLM2,
        "-p",
        p,
        "-n",
        "40",
        "--temp",
        "0",
        "-t",
        "2",
        "--ignore-eos",
    ]);
    assert!(
        err.contains("generated 40 tokens") && err.contains("(length)"),
        "{err}"
    );
}
