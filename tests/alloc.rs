//! No heap allocation on the per-token path: after warm-up, decode + sample + streaming of
//! 64 tokens make exactly zero allocations and zero frees, counted by a global allocator;
//! so do 64 steps of the library's generation loop (with stop strings and the end-of-text
//! mask), and the scoring part of `Session::choose` once the options are tokenized.
//!
//! Constrained decoding (mask, masked sampling, constraint advance) is counted the same way,
//! on a replay: a state's token set is built on its first visit (cached on the constraint),
//! so the second pass over the same outputs must allocate nothing.
//!
//! This test has its own `main` (`harness = false`): libtest's runner thread allocates while
//! a test runs, and the allocator counts every thread (the pool's workers must count too).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use pipit::constraint::Constraint;
use pipit::generate::{GenerateOptions, StopReason};
use pipit::model::Model;
use pipit::sampler::{Sampler, SamplerParams};
use pipit::session::{BeamParams, Precision, Session, SessionParams};
use pipit::tokenizer::Utf8Stream;
use pipit_format::DType;

/// Counts allocations and frees while `COUNTING` is set (any thread: the pool's workers too).
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
static FREES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call unchanged to the system allocator; the counters are atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.load(Ordering::Relaxed) {
            FREES.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `steps` decode steps (sample, stream the piece, eval) and returns (allocs, frees)
/// made during them, after a warm-up of the same loop.
fn count_decode(
    model: Arc<Model>,
    params: SessionParams,
    sampler: SamplerParams,
    steps: usize,
) -> (usize, usize) {
    let mut s = Session::new(Arc::clone(&model), params).unwrap();
    let mut sampler = Sampler::new(sampler, model.hparams().n_vocab).unwrap();
    let mut stream = Utf8Stream::new();
    let mut sink = std::io::sink();
    let tok = model.tokenizer();
    s.eval(&[1, 2, 3, 4, 5]).unwrap();
    let mut step = |s: &mut Session| {
        let next = s.sample(&mut sampler).unwrap();
        stream.push(tok.piece(next), |b| sink.write_all(b).unwrap());
        s.eval(&[next]).unwrap();
    };
    for _ in 0..8 {
        step(&mut s);
    }
    ALLOCS.store(0, Ordering::SeqCst);
    FREES.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    for _ in 0..steps {
        step(&mut s);
    }
    COUNTING.store(false, Ordering::SeqCst);
    (ALLOCS.load(Ordering::SeqCst), FREES.load(Ordering::SeqCst))
}

/// Counts the allocations of `steps` steps of `Session::generate`, from inside its
/// callback: counting starts at the 8th piece and stops at the `8 + steps`th.
fn count_generate(
    model: Arc<Model>,
    params: SessionParams,
    opts: &GenerateOptions,
) -> (usize, usize) {
    let mut s = Session::new(Arc::clone(&model), params).unwrap();
    let steps = opts.max_tokens - 16;
    let mut calls = 0;
    let reason = s
        .generate(&[1, 2, 3, 4, 5], opts, |_, _| {
            calls += 1;
            if calls == 8 {
                ALLOCS.store(0, Ordering::SeqCst);
                FREES.store(0, Ordering::SeqCst);
                COUNTING.store(true, Ordering::SeqCst);
            } else if calls == 8 + steps {
                COUNTING.store(false, Ordering::SeqCst);
            }
            false
        })
        .unwrap();
    COUNTING.store(false, Ordering::SeqCst);
    assert_eq!(reason, StopReason::MaxTokens);
    assert!(calls > 8 + steps, "only {calls} pieces");
    (ALLOCS.load(Ordering::SeqCst), FREES.load(Ordering::SeqCst))
}

/// Counts the allocations of a second `choose` call (the first one sizes the buffers).
fn count_choose(model: Arc<Model>, params: SessionParams) -> (usize, usize) {
    let mut s = Session::new(model, params).unwrap();
    let prompt = [1u32, 2, 3, 4, 5, 6, 7];
    let options = vec![
        vec![10u32, 11, 12],
        vec![20],
        vec![30, 31, 32, 33, 34, 35, 36, 37],
    ];
    let mut lps = vec![0.0; options.len()];
    s.choose(&prompt, &options, &mut lps).unwrap();
    s.reset();
    ALLOCS.store(0, Ordering::SeqCst);
    FREES.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    let best = s.choose(&prompt, &options, &mut lps);
    COUNTING.store(false, Ordering::SeqCst);
    assert!(best.unwrap() < options.len());
    (ALLOCS.load(Ordering::SeqCst), FREES.load(Ordering::SeqCst))
}

fn main() {
    decode_and_sample_allocate_nothing();
    println!("test decode_and_sample_allocate_nothing ... ok");
    generation_loop_allocates_nothing_per_step();
    println!("test generation_loop_allocates_nothing_per_step ... ok");
    choose_allocates_nothing_after_tokenization();
    println!("test choose_allocates_nothing_after_tokenization ... ok");
    beam_search_steps_allocate_nothing();
    println!("test beam_search_steps_allocate_nothing ... ok");
    constrained_steps_allocate_nothing();
    println!("test constrained_steps_allocate_nothing ... ok");
    println!("5 passed, 0 failed");
}

fn generation_loop_allocates_nothing_per_step() {
    // Stop strings the tiny model's random text never spells (each byte is a token, so a
    // single control byte would come up about once in 300 tokens), so that text is held back
    // and released without ever matching.
    let stops = [
        "zzzzqqqq".to_string(),
        "e e e e e e".to_string(),
        "\u{7f}\u{7f}\u{7f}\u{7f}".to_string(),
    ];
    for arch in ["llama", "gemma3"] {
        let tiny = if arch == "llama" {
            common::Tiny::llama(DType::Q8_0, 3)
        } else {
            common::Tiny::gemma3(DType::Q8_0, 3)
        };
        let model = Arc::new(Model::from_bytes(tiny.bytes()).unwrap());
        let params = SessionParams {
            n_ctx: 128,
            n_threads: 2,
            ..SessionParams::default()
        };
        for sampling in [SamplerParams::default(), SamplerParams::greedy()] {
            for (stop, ignore_eos) in [(&stops[..], true), (&[][..], true), (&stops[..], false)] {
                let opts = GenerateOptions {
                    sampling,
                    max_tokens: 80,
                    stop,
                    ignore_eos,
                };
                let (allocs, frees) = count_generate(Arc::clone(&model), params, &opts);
                assert_eq!(
                    (allocs, frees),
                    (0, 0),
                    "{arch} {sampling:?} stops {stop:?} ignore_eos {ignore_eos}: allocations in 64 steps"
                );
            }
        }
    }
}

fn choose_allocates_nothing_after_tokenization() {
    for arch in ["llama", "gemma3"] {
        let tiny = if arch == "llama" {
            common::Tiny::llama(DType::Q4_0, 5)
        } else {
            common::Tiny::gemma3(DType::Q4_0, 5)
        };
        let model = Arc::new(Model::from_bytes(tiny.bytes()).unwrap());
        for (threads, n_batch) in [(1, 64), (2, 4)] {
            let params = SessionParams {
                n_ctx: 64,
                n_threads: threads,
                n_batch,
                ..SessionParams::default()
            };
            assert_eq!(
                count_choose(Arc::clone(&model), params),
                (0, 0),
                "{arch} {threads} threads, batches of {n_batch}: allocations in choose"
            );
        }
    }
}

fn decode_and_sample_allocate_nothing() {
    for (dtype, threads, precision) in [
        (DType::Q8_0, 1, Precision::Int8),
        (DType::Q4_0, 2, Precision::Int8),
        (DType::Q4_1, 2, Precision::Int8),
        (DType::Q4_1, 2, Precision::F32),
        (DType::Q5_0, 2, Precision::Int8),
        (DType::Q5_1, 1, Precision::Int8),
        (DType::Q4_K, 2, Precision::Int8),
        (DType::Q5_K, 1, Precision::Int8),
        (DType::Q6_K, 2, Precision::Int8),
        (DType::Q6_K, 1, Precision::F32),
    ] {
        for arch in ["llama", "gemma3"] {
            let mut tiny = if arch == "llama" {
                common::Tiny::llama(dtype, 3)
            } else {
                common::Tiny::gemma3(dtype, 3)
            };
            if dtype.block_elems() > 32 {
                // Every matrix row a whole number of 256-value blocks.
                (tiny.d_model, tiny.head_dim, tiny.d_ff) = (256, 64, 256);
            }
            let model = Arc::new(Model::from_bytes(tiny.bytes()).unwrap());
            let params = SessionParams {
                n_ctx: 128,
                n_threads: threads,
                precision,
                ..SessionParams::default()
            };
            for sampler in [SamplerParams::default(), SamplerParams::greedy()] {
                let (allocs, frees) = count_decode(Arc::clone(&model), params, sampler, 64);
                assert_eq!(
                    (allocs, frees),
                    (0, 0),
                    "{arch} {dtype:?} {threads} threads {precision:?} {sampler:?}: allocations in 64 decode steps"
                );
            }
        }
    }
}

/// (allocs, frees) of one beam search of `steps` tokens after a prompt: the buffers of the
/// search are allocated when it starts, so the count must not grow with the steps.
fn count_beam_search(s: &mut Session, beams: usize, steps: usize) -> (usize, usize) {
    let p = BeamParams {
        beams,
        length_penalty: 1.0,
        max_tokens: steps,
        ignore_eos: true,
    };
    s.reset();
    s.eval(&[1, 2, 3, 4, 5]).unwrap();
    ALLOCS.store(0, Ordering::SeqCst);
    FREES.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    let hyps = s.beam_search(&[], &p).unwrap();
    COUNTING.store(false, Ordering::SeqCst);
    assert_eq!(hyps[0].tokens.len(), steps);
    drop(hyps);
    (ALLOCS.load(Ordering::SeqCst), FREES.load(Ordering::SeqCst))
}

fn beam_search_steps_allocate_nothing() {
    for (dtype, threads) in [(DType::Q8_0, 1), (DType::Q4_1, 2)] {
        for arch in ["llama", "gemma3"] {
            let tiny = if arch == "llama" {
                common::Tiny::llama(dtype, 5)
            } else {
                common::Tiny::gemma3(dtype, 5)
            };
            let model = Arc::new(Model::from_bytes(tiny.bytes()).unwrap());
            let params = SessionParams {
                n_ctx: pipit::session::n_ctx_for_search(5, 40, 4),
                n_threads: threads,
                n_seq_max: 4,
                ..SessionParams::default()
            };
            let mut s = Session::new(Arc::clone(&model), params).unwrap();
            count_beam_search(&mut s, 4, 4);
            let short = count_beam_search(&mut s, 4, 6);
            let long = count_beam_search(&mut s, 4, 40);
            assert_eq!(
                short, long,
                "{arch} {dtype:?} {threads} threads: a beam search of 40 steps allocated more than one of 6"
            );
        }
    }
}

/// Decodes `steps` tokens under `c` (a new output starts whenever one ends), twice from the
/// same start and seed; returns (allocs, frees) of the second pass.
fn count_constrained(
    model: &Arc<Model>,
    c: &Arc<Constraint>,
    sampler: SamplerParams,
    steps: usize,
) -> (usize, usize) {
    let params = SessionParams {
        n_ctx: 256,
        n_threads: 2,
        ..SessionParams::default()
    };
    let mut s = Session::new(Arc::clone(model), params).unwrap();
    s.set_constraint(Some(Arc::clone(c))).unwrap();
    let tok = model.tokenizer();
    let run = |s: &mut Session, count: bool| {
        let mut sampler = Sampler::new(sampler, model.hparams().n_vocab).unwrap();
        s.reset();
        s.eval_prompt(&[1, 2, 3, 4, 5]).unwrap();
        if count {
            ALLOCS.store(0, Ordering::SeqCst);
            FREES.store(0, Ordering::SeqCst);
            COUNTING.store(true, Ordering::SeqCst);
        }
        for _ in 0..steps {
            let mut next = s.sample_within(&mut sampler, Some(1000)).unwrap();
            if tok.is_eog(next) {
                s.constraint_restart();
                next = s.sample(&mut sampler).unwrap();
            }
            s.eval(&[next]).unwrap();
        }
        COUNTING.store(false, Ordering::SeqCst);
    };
    run(&mut s, false);
    run(&mut s, true);
    (ALLOCS.load(Ordering::SeqCst), FREES.load(Ordering::SeqCst))
}

fn constrained_steps_allocate_nothing() {
    let tiny = common::Tiny::llama(DType::Q8_0, 3);
    let model = Arc::new(Model::from_bytes(tiny.bytes()).unwrap());
    let schema = r##"{"type":"object","properties":{"name":{"type":"string","maxLength":8},"tags":{"type":"array","items":{"type":"string"}},"n":{"type":"integer"},"child":{"$ref":"#"}},"required":["name"]}"##;
    let constraints = [
        Constraint::regex(&model, r"(\d{3}-[a-z]{2,5} ?)+").unwrap(),
        Constraint::json_schema(&model, "").unwrap(),
        Constraint::json_schema(&model, schema).unwrap(),
        Constraint::gbnf(
            &model,
            "root ::= (\"(\" expr \")\")+\nexpr ::= [a-z]+ | \"(\" expr (\"+\" expr)* \")\"\n",
        )
        .unwrap(),
    ];
    for c in &constraints {
        for sampler in [SamplerParams::default(), SamplerParams::greedy()] {
            let (allocs, frees) = count_constrained(&model, c, sampler, 64);
            assert_eq!(
                (allocs, frees),
                (0, 0),
                "{c:?} {sampler:?}: allocations in 64 constrained steps"
            );
        }
    }
}
