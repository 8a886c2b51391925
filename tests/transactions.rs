//! Failed calls lose nothing (issue 13): for eval and score failing with a full context, a
//! cancel before the batch is applied, an unknown token or a numeric error, the session's
//! state digest (tokens, so n_past; KV cache below n_past; logits) is the same before and
//! after, and the session keeps working. `pipit_generate`'s rule is tested exactly: the
//! tokens generated before an error stay in the context, and the state equals a fresh
//! session that evaluated the same tokens.
//!
//! `assert_unchanged` is the reusable helper: give it the session and the failing call.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::Tiny;
use pipit::generate::{GenerateOptions, StopReason};
use pipit::model::Model;
use pipit::sampler::SamplerParams;
use pipit::session::{BeamParams, Session, SessionParams};
use pipit::Error;
use pipit_format::DType;

/// Runs `call` on `s`, which must fail with an error `want` accepts, and checks that the
/// state digest did not change.
pub fn assert_unchanged<T: std::fmt::Debug>(
    s: &mut Session,
    what: &str,
    want: impl Fn(&Error) -> bool,
    call: impl FnOnce(&mut Session) -> pipit::Result<T>,
) {
    let before = s.state_digest();
    let n_past = s.n_past();
    let logits = s.logits().map(<[f32]>::to_vec);
    match call(s) {
        Ok(v) => panic!("{what}: succeeded with {v:?}"),
        Err(e) => assert!(want(&e), "{what}: unexpected error {e}"),
    }
    assert_eq!(s.n_past(), n_past, "{what}: n_past changed");
    assert_eq!(
        s.logits().map(<[f32]>::to_vec),
        logits,
        "{what}: logits changed"
    );
    assert_eq!(s.state_digest(), before, "{what}: state changed");
}

fn session(model: &Arc<Model>, n_ctx: usize, n_batch: usize) -> Session {
    let params = SessionParams {
        n_ctx,
        n_batch,
        n_threads: 2,
        ..SessionParams::default()
    };
    Session::new(Arc::clone(model), params).unwrap()
}

/// A tiny llama whose token `bad` has a NaN embedding (Q4_1 scale of its first block).
fn model_with_nan_token(bad: u32) -> Arc<Model> {
    let tiny = Tiny::llama(DType::Q4_1, 9);
    let bytes = tiny.bytes();
    let file = pipit_format::PipitFile::parse(&bytes).unwrap();
    let embd = file
        .tensors
        .iter()
        .find(|t| t.name == "token_embd")
        .unwrap();
    let row_bytes = (embd.size / embd.shape[0]) as usize;
    let off = embd.offset as usize + bad as usize * row_bytes;
    let mut bytes = bytes;
    bytes[off..off + 2].copy_from_slice(&half::f16::NAN.to_bits().to_le_bytes());
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("transactions");
    std::fs::create_dir_all(&dir).unwrap();
    // One file per call: tests run in parallel, and rewriting a file another test has
    // mapped would truncate it under that test (SIGBUS).
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, Ordering::SeqCst);
    let path = dir.join(format!("nan{bad}-{}-{call}.pipit", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    // Opened without verifying tensor checksums (the patched block no longer matches).
    Arc::new(Model::open(&path).unwrap())
}

#[test]
fn failed_eval_and_score_change_nothing() {
    const BAD: u32 = 77;
    let model = model_with_nan_token(BAD);
    let prompt: Vec<u32> = (0..20).map(|i| 40 + i).collect();
    for n_batch in [1, 4, 64] {
        let mut s = session(&model, 32, n_batch);
        // Empty session, then one with a context.
        for round in 0..2 {
            let what = |w: &str| format!("{w} (n_batch {n_batch}, round {round})");
            let room = 32 - s.n_past();
            let full = vec![41u32; room + 1];
            let is_full = |e: &Error| matches!(e, Error::ContextFull { .. });
            assert_unchanged(&mut s, &what("eval, context full"), is_full, |s| {
                s.eval(&full)
            });
            assert_unchanged(&mut s, &what("score, context full"), is_full, |s| {
                s.score(&full)
            });
            let unknown = [40, 41, 100_000];
            let is_arg = |e: &Error| matches!(e, Error::InvalidArgument(_));
            assert_unchanged(&mut s, &what("eval, bad id"), is_arg, |s| s.eval(&unknown));
            assert_unchanged(&mut s, &what("score, bad id"), is_arg, |s| {
                s.score(&unknown)
            });
            let is_cancel = |e: &Error| matches!(e, Error::Cancelled);
            let cancel = s.cancel_handle();
            cancel.store(true, Ordering::SeqCst);
            assert_unchanged(&mut s, &what("eval, cancelled"), is_cancel, |s| {
                s.eval(&prompt[..5])
            });
            cancel.store(true, Ordering::SeqCst);
            assert_unchanged(&mut s, &what("score, cancelled"), is_cancel, |s| {
                s.score(&prompt[..5])
            });
            // The NaN token last, so that earlier batches did write the cache above n_past.
            let mut nan = prompt[..6].to_vec();
            nan.push(BAD);
            let is_num = |e: &Error| matches!(e, Error::Numeric(_));
            assert_unchanged(&mut s, &what("eval, numeric"), is_num, |s| s.eval(&nan));
            assert_unchanged(&mut s, &what("score, numeric"), is_num, |s| s.score(&nan));
            // Still works, and agrees with a session that never failed.
            s.eval(&prompt[..8]).unwrap();
        }
        let mut clean = session(&model, 32, 64);
        clean.eval(&prompt[..8]).unwrap();
        clean.eval(&prompt[..8]).unwrap();
        assert_eq!(clean.state_digest(), s.state_digest(), "n_batch {n_batch}");
    }
}

/// `generate` (behind `pipit_generate`): on an error after some tokens, exactly the tokens
/// generated so far stay in the context (each streamed token among them), and the state is
/// that of a fresh session that evaluated prompt + those tokens.
#[test]
fn generate_keeps_the_tokens_streamed_before_an_error() {
    let model = Arc::new(Model::from_bytes(common::tiny_llama(4)).unwrap());
    let prompt: Vec<u32> = vec![40, 41, 42, 43];
    let params = SamplerParams {
        seed: 5,
        ..SamplerParams::default()
    };
    let reference = |tokens: &[u32]| {
        let mut r = session(&model, 32, 64);
        r.eval(tokens).unwrap();
        r.state_digest()
    };
    // A full context after 6 generated tokens.
    let mut s = session(&model, prompt.len() + 6, 64);
    let mut streamed = Vec::new();
    let opts = GenerateOptions {
        sampling: params,
        max_tokens: 100,
        ..GenerateOptions::default()
    };
    let e = s.generate(&prompt, &opts, |_, t| {
        streamed.push(t);
        false
    });
    match e {
        Ok(StopReason::ContextFull | StopReason::EndOfText) => {}
        other => panic!("{other:?}"),
    }
    let tokens = s.tokens().to_vec();
    assert_eq!(&tokens[..prompt.len()], &prompt[..]);
    assert!(streamed.iter().all(|t| tokens[prompt.len()..].contains(t)));
    assert_eq!(s.state_digest(), reference(&tokens));

    // Cancelled from the callback at the third streamed piece: the next eval fails.
    let mut s = session(&model, 32, 64);
    let cancel = s.cancel_handle();
    let mut calls = 0;
    let e = s.generate(&prompt, &opts, |_, _| {
        calls += 1;
        if calls == 3 {
            cancel.store(true, Ordering::SeqCst);
        }
        false
    });
    if calls >= 3 {
        assert!(matches!(e, Err(Error::Cancelled)), "{e:?}");
    }
    let tokens = s.tokens().to_vec();
    assert!(tokens.len() > prompt.len());
    assert_eq!(s.state_digest(), reference(&tokens));
}

fn session_for(model: &Arc<Model>, n_ctx: usize, n_seq_max: usize) -> Session {
    let params = SessionParams {
        n_ctx,
        n_batch: 4,
        n_threads: 2,
        n_seq_max,
        ..SessionParams::default()
    };
    Session::new(Arc::clone(model), params).unwrap()
}

/// Beam search and choose that fail (context full, cancelled, numeric, a bad id, a bad
/// argument, and the KV cache's page pool exhausted: the per-call memory limit) leave the
/// state digest as it was, and the session then agrees with one that never failed.
#[test]
fn failed_beam_search_and_choose_change_nothing() {
    const BAD: u32 = 77;
    let model = model_with_nan_token(BAD);
    let prompt: Vec<u32> = (0..20).map(|i| 40 + i).collect();
    let p = BeamParams {
        beams: 2,
        length_penalty: 1.0,
        max_tokens: 4,
        ignore_eos: true,
    };
    let mut s = session_for(&model, 64, 4);
    s.eval(&prompt[..8]).unwrap();
    let is_full = |e: &Error| matches!(e, Error::ContextFull { .. });
    let is_arg = |e: &Error| matches!(e, Error::InvalidArgument(_));
    let is_cancel = |e: &Error| matches!(e, Error::Cancelled);
    let is_num = |e: &Error| matches!(e, Error::Numeric(_));
    let cancel = s.cancel_handle();

    // Beam search.
    let long = vec![41u32; 60];
    assert_unchanged(&mut s, "beam, context full", is_full, |s| {
        s.beam_search(&long, &p)
    });
    assert_unchanged(&mut s, "beam, bad id", is_arg, |s| {
        s.beam_search(&[40, 100_000], &p)
    });
    let wide = BeamParams { beams: 5, ..p };
    assert_unchanged(&mut s, "beam, too many beams", is_arg, |s| {
        s.beam_search(&[40], &wide)
    });
    cancel.store(true, Ordering::SeqCst);
    assert_unchanged(&mut s, "beam, cancelled", is_cancel, |s| {
        s.beam_search(&[40], &p)
    });
    assert_unchanged(&mut s, "beam, numeric prompt", is_num, |s| {
        s.beam_search(&[40, BAD], &p)
    });

    // Choose.
    let mut lp = [0.0; 2];
    let opts = |a: Vec<u32>, b: Vec<u32>| [a, b];
    let full = opts(vec![41; 60], vec![42]);
    assert_unchanged(&mut s, "choose, context full", is_full, |s| {
        s.choose(&[40], &full, &mut lp)
    });
    let bad = opts(vec![41, 100_000], vec![42]);
    assert_unchanged(&mut s, "choose, bad id", is_arg, |s| {
        s.choose(&[40], &bad, &mut lp)
    });
    let empty = opts(vec![41], vec![]);
    assert_unchanged(&mut s, "choose, empty option", is_arg, |s| {
        s.choose(&[40], &empty, &mut lp)
    });
    let fine = opts(vec![41, 42], vec![43]);
    cancel.store(true, Ordering::SeqCst);
    assert_unchanged(&mut s, "choose, cancelled", is_cancel, |s| {
        s.choose(&[40], &fine, &mut lp)
    });
    assert_unchanged(&mut s, "choose, numeric prompt", is_num, |s| {
        s.choose(&[40, BAD], &fine, &mut lp)
    });
    let nan = opts(vec![41, BAD, 42], vec![43]);
    assert_unchanged(&mut s, "choose, numeric option", is_num, |s| {
        s.choose(&[40], &nan, &mut lp)
    });
    assert!(
        !cancel.load(Ordering::SeqCst),
        "a cancel request outlived its call"
    );

    // Still works, and agrees with a session that never failed.
    s.eval(&prompt[8..12]).unwrap();
    let mut clean = session_for(&model, 64, 4);
    clean.eval(&prompt[..12]).unwrap();
    assert_eq!(clean.state_digest(), s.state_digest());

    // A sliding-window model in a session made for one sequence: its cache has no pages for
    // a search's windows, which is refused as out of memory before anything changes.
    let gemma = Arc::new(Model::from_bytes(Tiny::gemma3(DType::Q8_0, 3).bytes()).unwrap());
    let mut g = session_for(&gemma, 64, 1);
    g.eval(&prompt[..8]).unwrap();
    let one = BeamParams { beams: 1, ..p };
    let is_oom = |e: &Error| matches!(e, Error::OutOfMemory(_));
    assert_unchanged(&mut g, "beam, no pages for the windows", is_oom, |g| {
        g.beam_search(&[40], &one)
    });
}
