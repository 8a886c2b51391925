//! Fault injection (issue 13): a global allocator that fails the N-th allocation of 4 KiB or
//! more, for every N, while a tiny model is opened (mapped, read into memory, and through
//! the C ABI's `pipit_model_open_ex`) and while a session is created on it (KV cache,
//! scratch, logits, token history; pool threads are started with `thread::Builder` and a
//! pool keeps the threads it got). Each attempt must return
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
use pipit_format::{DType, Value};

use common::Tiny;

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
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
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
                assert_eq!(
                    LIVE.load(Ordering::SeqCst),
                    live,
                    "{what}: leak after success"
                );
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

/// A tiny model whose loader tables are still big: 24 layers (a directory of 219 tensors)
/// and 2,000 more user-defined tokens with 500 merges between them (the vocabulary and its
/// hash table, the special-token trie, the merge table and the strings it interns, the
/// decoded pieces).
fn wide_model() -> Vec<u8> {
    const EXTRA: usize = 2000;
    let tiny = Tiny {
        n_layer: 24,
        ..Tiny::llama(DType::Q8_0, 7)
    };
    let n_vocab = common::N_VOCAB + EXTRA;
    let mut meta = tiny.metadata();
    for (k, v) in &mut meta {
        match (k.as_str(), v) {
            ("model.n_vocab", v) => *v = Value::U32(n_vocab as u32),
            ("tokenizer.tokens", Value::ArrStr(t)) => {
                t.extend((0..EXTRA).map(|i| format!("<x{i}>")));
            }
            ("tokenizer.token_types", Value::ArrU8(t)) => t.resize(n_vocab, 4),
            ("tokenizer.merges", Value::ArrStr(m)) => {
                m.extend((0..500).map(|i| format!("<x{i}> <x{}>", i + 1)));
            }
            _ => {}
        }
    }
    let mut tensors = tiny.tensors();
    for t in &mut tensors {
        if t.name == "token_embd" || t.name == "output" {
            t.shape[0] = n_vocab as u64;
            t.values.resize(n_vocab * tiny.d_model, 0.01);
        }
    }
    common::assemble(&meta, &tensors)
}

/// A model opened through the C ABI, freed on drop.
struct CModel(*mut pipit::ffi::pipit_model);

impl Drop for CModel {
    fn drop(&mut self) {
        // SAFETY: the pointer came from `pipit_model_open_ex` and is freed once, here.
        unsafe { pipit::ffi::pipit_model_free(self.0) }
    }
}

/// A session created through the C ABI, freed on drop.
struct CSession(*mut pipit::ffi::pipit_session);

impl Drop for CSession {
    fn drop(&mut self) {
        // SAFETY: the pointer came from `pipit_session_new` and is freed once, here.
        unsafe { pipit::ffi::pipit_session_free(self.0) }
    }
}

/// A C call's `status` and `*out` as a `Result`: out of memory becomes `Error::OutOfMemory`
/// with `pipit_last_error`'s text, any other failure `Error::Internal`; a failed call must
/// leave `*out` NULL. The thread's last error is then set to one fixed message, so that its
/// (small) buffer is the same size after every attempt and the live-bytes check sees only
/// real leaks.
fn c_result<P, T>(
    status: pipit::ffi::pipit_status,
    out: *mut P,
    wrap: fn(*mut P) -> T,
) -> pipit::Result<T> {
    use pipit::ffi::{pipit_last_error, pipit_model_open_ex, PIPIT_OK};
    let r = if status == PIPIT_OK {
        assert!(!out.is_null());
        Ok(wrap(out))
    } else {
        assert!(out.is_null(), "a failed call set *out");
        // SAFETY: pipit_last_error never returns NULL; the text lives until the next call.
        let msg = unsafe { std::ffi::CStr::from_ptr(pipit_last_error()) }
            .to_string_lossy()
            .into_owned();
        Err(if status == PIPIT_ERR_OUT_OF_MEMORY {
            Error::OutOfMemory(msg)
        } else {
            Error::Internal(format!("status {status}: {msg}"))
        })
    };
    let mut none = std::ptr::null_mut();
    // SAFETY: a NULL path is refused with a fixed message; `none` is writable.
    let refused = unsafe { pipit_model_open_ex(std::ptr::null(), 0, &mut none) };
    assert_ne!(refused, PIPIT_OK);
    r
}

/// `pipit_model_open_ex(path, flags)`.
fn c_open(path: &std::ffi::CStr, flags: u32) -> pipit::Result<CModel> {
    let mut out = std::ptr::null_mut();
    // SAFETY: a NUL-terminated path and a writable out pointer.
    let status = unsafe { pipit::ffi::pipit_model_open_ex(path.as_ptr(), flags, &mut out) };
    c_result(status, out, CModel)
}

/// `pipit_session_new(model, params)`.
fn c_session(model: &CModel, params: &pipit::ffi::pipit_session_params) -> pipit::Result<CSession> {
    let mut out = std::ptr::null_mut();
    // SAFETY: a live model, initialised parameters and a writable out pointer.
    let status = unsafe { pipit::ffi::pipit_session_new(model.0, params, &mut out) };
    c_result(status, out, CSession)
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

    // Opening, mapped and read into memory: every big allocation the loader makes (the
    // in-memory copy, the reader's metadata arrays and tables, the tensor directory, the
    // tokenizer's vocabulary, merge table, special-token trie and pieces, the weight views).
    let opens_mmap = every_failure("model open (mmap)", || Model::open(&path));
    let opens = every_failure("model open (no mmap)", || Model::open_with(&path, &no_mmap));
    let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    let c_opens = every_failure("pipit_model_open_ex (no mmap)", || {
        c_open(&c_path, pipit::ffi::PIPIT_OPEN_NO_MMAP)
    });
    let wide = dir.join("wide.pipit");
    std::fs::write(&wide, wide_model()).unwrap();
    let wide_opens = every_failure("wide model open (mmap)", || Model::open(&wide));
    // The vocabulary index that constraints use, built on first use.
    let indexes = every_failure("vocab index", || {
        let m = Model::open(&wide)?;
        m.try_vocab_index()?;
        Ok(m)
    }) - wide_opens;
    let model = Arc::new(Model::open_with(&path, &no_mmap).unwrap());
    let params = SessionParams {
        n_ctx: 256,
        n_threads: 2,
        ..SessionParams::default()
    };
    let sessions = every_failure("session", || Session::new(Arc::clone(&model), params));
    let c_model = c_open(&c_path, pipit::ffi::PIPIT_OPEN_NO_MMAP).unwrap();
    // SAFETY: a plain-data struct, all zero before the library fills in its defaults.
    let mut c_params: pipit::ffi::pipit_session_params = unsafe { std::mem::zeroed() };
    // SAFETY: a writable struct.
    unsafe { pipit::ffi::pipit_session_params_default(&mut c_params) };
    c_params.n_ctx = 256;
    c_params.n_threads = 2;
    let c_sessions = every_failure("pipit_session_new", || c_session(&c_model, &c_params));
    assert!(
        opens_mmap > 0 && opens > opens_mmap && c_opens == opens && sessions > 0,
        "too few big allocations failed: {opens_mmap} {opens} {c_opens} {sessions}"
    );
    assert_eq!(
        c_sessions, sessions,
        "the C ABI's session creation allocates as Session::new"
    );
    // Directory, tensor list, views, layers, metadata arrays, vocabulary, trie, merges, ...
    assert!(
        wide_opens >= 15,
        "only {wide_opens} big allocations opening the wide model"
    );
    assert!(
        indexes >= 5,
        "only {indexes} big allocations building the vocabulary index"
    );
    println!(
        "faults: ok, failed {opens_mmap} model opens (mmap), {opens} (no mmap), {c_opens} \
         through pipit_model_open_ex (no mmap), {wide_opens} opening a wider model (mmap), \
         {indexes} building its vocabulary index and {sessions} session creations (as many through pipit_session_new), each out \
         of memory with nothing leaked"
    );
}
