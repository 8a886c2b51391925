//! Beam search and the multi-sequence KV cache behind it: greedy equivalence, exactness
//! against exhaustive search on an enumerable tree, scores that equal scoring, batch
//! invariance across sequences, and failed searches that change nothing.
//! Needs models/SmolLM2-135M-Instruct.pipit (tools/test-models.sh).

mod common;
#[path = "support/json.rs"]
#[allow(dead_code)]
mod json;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::Tiny;
use json::Json;
use pipit::model::Model;
use pipit::sampler::argmax;
use pipit::session::{BeamParams, KvType, Restrict, Session, SessionParams};
use pipit_format::DType;

fn smollm2() -> Arc<Model> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/models/SmolLM2-135M-Instruct.pipit"
    );
    match Model::open(path) {
        Ok(m) => Arc::new(m),
        Err(e) => panic!("{path}: {e}\nrun tools/test-models.sh first"),
    }
}

fn session(model: &Arc<Model>, n_ctx: usize, n_seq_max: usize) -> Session {
    let params = SessionParams {
        n_ctx,
        n_seq_max,
        ..SessionParams::default()
    };
    Session::new(Arc::clone(model), params).unwrap()
}

/// Greedy decoding of up to `n` tokens, stopping before end-of-generation (unless ignored).
fn greedy(s: &mut Session, prompt: &[u32], n: usize, ignore_eos: bool) -> (Vec<u32>, f64) {
    let model = Arc::clone(s.model());
    let tok = model.tokenizer();
    s.eval(prompt).unwrap();
    let mut out = Vec::new();
    let mut logprob = 0.0;
    while out.len() < n {
        let mut logits = s.logits().unwrap().to_vec();
        if ignore_eos {
            for &t in tok.eog_tokens() {
                logits[t as usize] = f32::NEG_INFINITY;
            }
        }
        let t = argmax(&logits);
        logprob += pipit::session::log_softmax_at(s.logits().unwrap(), t);
        if tok.is_eog(t) {
            break;
        }
        out.push(t);
        s.eval(&[t]).unwrap();
    }
    (out, logprob)
}

fn reference_prompts() -> Vec<Vec<u32>> {
    let r = Json::load("smollm2-135m.json");
    r.get("greedy")
        .arr()
        .iter()
        .map(|c| c.get("prompt_ids").ids())
        .collect()
}

#[test]
fn one_beam_is_greedy_on_every_reference_prompt() {
    let model = smollm2();
    for prompt in reference_prompts() {
        let (want, want_lp) = greedy(&mut session(&model, 512, 1), &prompt, 24, false);
        for a in [0.0, 1.0, 2.5] {
            let mut s = session(&model, 512, 4);
            let p = BeamParams {
                beams: 1,
                length_penalty: a,
                max_tokens: 24,
                ignore_eos: false,
            };
            let hyps = s.beam_search(&prompt, &p).unwrap();
            assert_eq!(hyps[0].tokens, want, "length penalty {a}");
            // The sums match up to the end-of-text token greedy stopped at.
            assert!((hyps[0].logprob - want_lp).abs() < 1e-4, "{} vs {want_lp}", hyps[0].logprob);
            // The context is prompt + hypothesis, and its logits are the last token's.
            let mut all = prompt.clone();
            all.extend_from_slice(&want);
            assert_eq!(s.tokens(), &all[..]);
            let mut fresh = session(&model, 512, 1);
            fresh.eval(&all).unwrap();
            assert_eq!(s.logits().unwrap(), fresh.logits().unwrap());
        }
    }
}

#[test]
fn four_beams_beat_greedy_and_their_logprob_is_the_score_of_their_tokens() {
    let model = smollm2();
    for prompt in reference_prompts() {
        let (greedy_ids, greedy_lp) = greedy(&mut session(&model, 512, 1), &prompt, 16, true);
        assert_eq!(greedy_ids.len(), 16);
        let mut s = session(&model, 512, 4);
        let p = BeamParams {
            beams: 4,
            length_penalty: 0.0,
            max_tokens: 16,
            ignore_eos: true,
        };
        let hyps = s.beam_search(&prompt, &p).unwrap();
        let best = &hyps[0];
        assert_eq!(best.tokens.len(), 16);
        assert!(
            best.logprob >= greedy_lp - 1e-9,
            "beam {} < greedy {greedy_lp}",
            best.logprob
        );
        // Scoring the same ids after the same prompt gives the same sum.
        let mut scorer = session(&model, 512, 1);
        scorer.eval(&prompt).unwrap();
        let scored = scorer.score(&best.tokens).unwrap();
        assert!(
            (scored - best.logprob).abs() < 1e-4,
            "beam {} vs score {scored}",
            best.logprob
        );
        // Hypotheses come best first.
        assert!(hyps.windows(2).all(|w| w[0].score >= w[1].score));
        eprintln!(
            "greedy {greedy_lp:.4}, 4 beams {:.4} ({} hypotheses)",
            best.logprob,
            hyps.len()
        );
    }
}

/// Allows only a fixed set of tokens (the tree of the exactness test).
struct OnlyThese(Vec<u32>);

impl Restrict for OnlyThese {
    type State = ();
    fn start(&self) {}
    fn mask(&mut self, _: &(), _: usize, logits: &mut [f32]) {
        for (id, l) in logits.iter_mut().enumerate() {
            if !self.0.contains(&(id as u32)) {
                *l = f32::NEG_INFINITY;
            }
        }
    }
    fn advance(&self, _: &mut (), _: u32) {}
}

/// Every sequence over `alphabet` that ends at end-of-generation within `depth` tokens or
/// reaches `depth` without it, with its summed log-probability (end token included).
fn enumerate(
    model: &Arc<Model>,
    prompt: &[u32],
    alphabet: &[u32],
    eos: u32,
    depth: usize,
) -> Vec<(Vec<u32>, bool, f64)> {
    let mut out = Vec::new();
    let mut stack: Vec<Vec<u32>> = vec![vec![]];
    while let Some(prefix) = stack.pop() {
        for &t in alphabet {
            let mut seq = prefix.clone();
            seq.push(t);
            let mut s = session(model, 64, 1);
            s.eval(prompt).unwrap();
            let lp = s.score(&seq).unwrap();
            if t == eos {
                seq.pop();
                out.push((seq, true, lp));
            } else if seq.len() == depth {
                out.push((seq, false, lp));
            } else {
                stack.push(seq);
            }
        }
    }
    out
}

#[test]
fn a_beam_as_wide_as_the_tree_finds_the_exhaustive_best() {
    let mut tiny = Tiny::llama(DType::F32, 7);
    tiny.n_ctx_train = 8192;
    let model = Arc::new(Model::from_bytes(tiny.bytes()).unwrap());
    let eos = model.tokenizer().eos().unwrap();
    // Six tokens (end-of-generation among them), three steps: 31 sequences end early, 125
    // reach the depth.
    let alphabet = vec![eos, 70, 71, 72, 100, 200];
    let prompt = vec![1, 80, 81];
    let depth = 3;
    let all = enumerate(&model, &prompt, &alphabet, eos, depth);
    assert_eq!(all.len(), 31 + 125);
    let width = 160;
    for a in [0.0f32, 0.5, 1.0, 2.0] {
        let key = |(toks, ended, lp): &(Vec<u32>, bool, f64)| {
            lp / ((toks.len() + usize::from(*ended)) as f64).powf(f64::from(a))
        };
        let best = all
            .iter()
            .max_by(|x, y| key(x).total_cmp(&key(y)))
            .unwrap();
        let mut s = session(&model, pipit::session::n_ctx_for_search(prompt.len(), depth, width), width);
        let p = BeamParams {
            beams: width,
            length_penalty: a,
            max_tokens: depth,
            ignore_eos: false,
        };
        let hyps = s
            .beam_search_with(&prompt, &p, &mut OnlyThese(alphabet.clone()))
            .unwrap();
        assert_eq!(hyps[0].tokens, best.0, "length penalty {a}");
        assert_eq!(hyps[0].ended, best.1, "length penalty {a}");
        assert!(
            (hyps[0].logprob - best.2).abs() < 1e-5,
            "length penalty {a}: {} vs {}",
            hyps[0].logprob,
            best.2
        );
        assert!((hyps[0].score - key(best)).abs() < 1e-5);
    }
}

#[test]
fn a_sequence_decodes_the_same_whatever_shares_its_step() {
    // Beam search's steps decode several sequences as one batch; each must get exactly the
    // logits it gets alone. Beams 1..=3 over the same prompt give per-step logits through
    // the context they leave; compare the best hypothesis re-evaluated alone.
    let model = smollm2();
    let prompt = reference_prompts().remove(1);
    for beams in [2, 3, 4] {
        let mut s = session(&model, 512, beams);
        let p = BeamParams {
            beams,
            length_penalty: 1.0,
            max_tokens: 12,
            ignore_eos: true,
        };
        let hyps = s.beam_search(&prompt, &p).unwrap();
        for h in &hyps {
            // The log-probability the search summed from batched steps equals the one of the
            // same tokens evaluated alone.
            let mut alone = session(&model, 512, 1);
            alone.eval(&prompt).unwrap();
            let lp = alone.score(&h.tokens).unwrap();
            assert_eq!(lp, h.logprob, "{beams} beams: batched {} vs alone {lp}", h.logprob);
        }
    }
}

#[test]
fn beams_read_their_shared_pages_once_and_still_decode_as_alone() {
    // The beams of a step attend as groups that read the pages they share (the prompt, and
    // generated pages of a common ancestor) once. With sliding windows (Gemma 3), every KV
    // type and thread counts that cut the beams into different groups, each hypothesis's
    // log-probability must still be exactly the one its tokens get alone. 45 tokens after a
    // 20-token prompt cross two page boundaries.
    let models = [
        Tiny { head_dim: 32, ..Tiny::llama(DType::Q8_0, 21) },
        Tiny::gemma3(DType::Q4_0, 22),
    ];
    let prompt: Vec<u32> = (0..20).map(|i| 40 + 7 * i).collect();
    for tiny in models {
        let model = Arc::new(Model::from_bytes(tiny.bytes()).unwrap());
        for kv_type in [KvType::F16, KvType::F32, KvType::Int8] {
            for n_threads in [1, 2, 3] {
                let at = format!("{} {kv_type:?} {n_threads} threads", tiny.arch);
                let params = |n_seq_max, n_threads| SessionParams {
                    n_ctx: 256,
                    n_seq_max,
                    n_threads,
                    kv_type,
                    ..SessionParams::default()
                };
                let mut s = Session::new(Arc::clone(&model), params(4, n_threads)).unwrap();
                let p = BeamParams {
                    beams: 4,
                    length_penalty: 1.0,
                    max_tokens: 45,
                    ignore_eos: true,
                };
                let hyps = s.beam_search(&prompt, &p).unwrap();
                assert_eq!(hyps.len(), 4, "{at}");
                for h in &hyps {
                    let mut alone = Session::new(Arc::clone(&model), params(1, 1)).unwrap();
                    alone.eval(&prompt).unwrap();
                    let lp = alone.score(&h.tokens).unwrap();
                    assert_eq!(lp, h.logprob, "{at}: batched {} vs alone {lp}", h.logprob);
                }
            }
        }
    }
}

#[test]
fn a_cancelled_or_impossible_search_changes_nothing() {
    let model = smollm2();
    let prompt = reference_prompts().remove(0);
    let mut s = session(&model, 256, 4);
    s.eval(&prompt).unwrap();
    let (n_past, logits) = (s.n_past(), s.logits().unwrap().to_vec());
    let p = BeamParams {
        beams: 4,
        length_penalty: 1.0,
        max_tokens: 8,
        ignore_eos: true,
    };
    // Cancelled before the first step.
    s.cancel_handle().store(true, Ordering::Release);
    let err = s.beam_search(&[100, 200], &p).unwrap_err();
    assert!(matches!(err, pipit::Error::Cancelled), "{err}");
    assert_eq!(s.n_past(), n_past);
    assert_eq!(s.logits().unwrap(), &logits[..]);
    // More beams than the session reserved.
    let too_many = BeamParams { beams: 5, ..p };
    assert!(matches!(
        s.beam_search(&[], &too_many),
        Err(pipit::Error::InvalidArgument(_))
    ));
    // A prompt that does not fit.
    let long = vec![100u32; 300];
    assert!(matches!(
        s.beam_search(&long, &p),
        Err(pipit::Error::ContextFull { .. })
    ));
    assert_eq!(s.n_past(), n_past);
    assert_eq!(s.logits().unwrap(), &logits[..]);
    // And the session still works: continuing equals a fresh evaluation.
    let hyps = s.beam_search(&[], &p).unwrap();
    let mut all = prompt.clone();
    all.extend_from_slice(&hyps[0].tokens);
    let mut fresh = session(&model, 256, 1);
    fresh.eval(&all).unwrap();
    assert_eq!(s.logits().unwrap(), fresh.logits().unwrap());
}
