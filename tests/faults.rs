//! Fault injection (issue 13): a global allocator that fails the N-th allocation of 4 KiB or
//! more, for every N, while a session is created on a tiny model (KV cache, scratch, logits,
//! token history; pool threads are started with `thread::Builder` and a pool keeps the
//! threads it got), and the in-memory copy of a model opened without mmap (the path an app
//! takes when it cannot trust the file). Each attempt must return
//! `Error::OutOfMemory` (PIPIT_ERR_OUT_OF_MEMORY), leak nothing (live bytes as before) and
//! abort nothing (an infallible allocation that fails aborts this process, failing the test).
//!
//! Own `main` (`harness = false`): the allocator counts every thread, so nothing else may run.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};
use std::sync::Arc;

use pipit::ffi::{status_of, PIPIT_ERR_OUT_OF_MEMORY};
use pipit::model::{Model, OpenOptions};
use pipit::session::{Session, SessionParams};
use pipit::Error;

/// Allocations from this size up are counted and may be failed.
const BIG: usize = 4096;

struct Faulty;

static ARMED: AtomicBool = AtomicBool::new(false);
/// Big allocations seen since armed.
static SEEN: AtomicUsize = AtomicUsize::new(0);
/// Which big allocation fails (1-based); 0: none.
static FAIL_AT: AtomicUsize = AtomicUsize::new(0);
/// Bytes allocated and not freed, over the whole run.
static LIVE: AtomicIsize = AtomicIsize::new(0);

impl Faulty {
    /// Whether this allocation of `size` bytes is the one to fail.
    fn fail(size: usize) -> bool {
        if size < BIG || !ARMED.load(Ordering::Relaxed) {
            return false;
        }
        SEEN.fetch_add(1, Ordering::Relaxed) + 1 == FAIL_AT.load(Ordering::Relaxed)
    }
}

// SAFETY: forwards to the system allocator, or returns NULL (allowed by `GlobalAlloc`); the
// counters are atomics.
unsafe impl GlobalAlloc for Faulty {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if Faulty::fail(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if Faulty::fail(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if Faulty::fail(new_size) {
            return std::ptr::null_mut();
        }
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Faulty = Faulty;

/// Runs `f` with the N-th big allocation failing, for N = 1, 2, ... until an attempt sees
/// fewer than N big allocations (nothing was failed: `f` must then succeed). Every failed
/// attempt must be an out-of-memory error that leaves the live bytes as they were. Returns
/// how many attempts failed.
fn every_failure<T>(what: &str, f: impl FnMut() -> pipit::Result<T>) -> usize {
    every_failure_up_to(what, usize::MAX, f)
}

/// [`every_failure`] for N up to `last` only.
fn every_failure_up_to<T>(
    what: &str,
    last: usize,
    mut f: impl FnMut() -> pipit::Result<T>,
) -> usize {
    // Once unarmed first: one-time initialisations (kernel table, hash keys) stay alive.
    drop(f().unwrap());
    for n in 1..=last {
        let live = LIVE.load(Ordering::SeqCst);
        SEEN.store(0, Ordering::SeqCst);
        FAIL_AT.store(n, Ordering::SeqCst);
        ARMED.store(true, Ordering::SeqCst);
        let r = f();
        ARMED.store(false, Ordering::SeqCst);
        let seen = SEEN.load(Ordering::SeqCst);
        match r {
            Ok(v) => {
                assert!(seen < n, "{what}: allocation {n} of {seen} failed, yet Ok");
                drop(v);
                assert_eq!(LIVE.load(Ordering::SeqCst), live, "{what}: leak after success");
                return n - 1;
            }
            Err(e) => {
                assert!(
                    matches!(e, Error::OutOfMemory(_)),
                    "{what}: allocation {n} failed gave {e}"
                );
                assert_eq!(status_of(&e), PIPIT_ERR_OUT_OF_MEMORY);
                drop(e);
                assert_eq!(
                    LIVE.load(Ordering::SeqCst),
                    live,
                    "{what}: allocation {n} failed leaked"
                );
            }
        }
    }
    last
}

fn main() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("faults");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.pipit");
    std::fs::write(&path, common::tiny_llama(2)).unwrap();
    let no_mmap = OpenOptions {
        mmap: false,
        ..OpenOptions::default()
    };

    // Opening: only the in-memory copy of the file, the first big allocation, is fallible
    // so far; the reader's and tokenizer's tables (metadata arrays, vocabulary, merges) are
    // not yet (issue 13: still to do), so failing a later one would abort.
    let opens = every_failure_up_to("model open", 1, || Model::open_with(&path, &no_mmap));
    let model = Arc::new(Model::open_with(&path, &no_mmap).unwrap());
    let params = SessionParams {
        n_ctx: 256,
        n_threads: 2,
        ..SessionParams::default()
    };
    let sessions = every_failure("session", || Session::new(Arc::clone(&model), params));
    assert!(opens > 0 && sessions > 0, "no big allocation was failed");
    println!(
        "faults: ok, {opens} failed model open(s) and {sessions} failed session creations, \
         each out of memory with nothing leaked"
    );
}
