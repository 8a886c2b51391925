//! No heap allocation on the per-token path: after warm-up, decode + sample + streaming of
//! 64 tokens make exactly zero allocations and zero frees, counted by a global allocator.
//!
//! This test has its own `main` (`harness = false`): libtest's runner thread allocates while
//! a test runs, and the allocator counts every thread (the pool's workers must count too).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use pipit::forward::Precision;
use pipit::model::Model;
use pipit::sampler::{Sampler, SamplerParams};
use pipit::session::{Session, SessionParams};
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

fn main() {
    decode_and_sample_allocate_nothing();
    println!("test decode_and_sample_allocate_nothing ... ok");
    println!("1 passed, 0 failed");
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
