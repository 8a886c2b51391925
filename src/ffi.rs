//! The C ABI: `include/pipit.h`, version 1.
//!
//! Every exported function checks its pointers, catches panics and returns a status; the
//! detail of a failure goes to a thread-local message read by `pipit_last_error`. A
//! `pipit_model` is an `Arc<Model>` plus the C strings its info hands out, so sessions keep
//! it alive and any number of threads may share it. A `pipit_session` wraps a [`Session`]
//! behind a busy flag: a second thread entering it gets `PIPIT_ERR_BUSY` instead of a data
//! race, and `pipit_session_cancel` only reaches the call that is running when it arrives.
#![allow(non_camel_case_types)]

use std::cell::{RefCell, UnsafeCell};
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::forward::KvType;
use crate::model::{Model, OpenOptions};
use crate::sampler::{Sampler, SamplerParams};
use crate::session::{self, MemoryReport, Session, SessionParams};
use crate::tokenizer::Utf8Stream;
use crate::{Error, Result};

/// A status code; one of the `PIPIT_*` constants below.
pub type pipit_status = i32;

/// The ABI version of include/pipit.h that this library implements.
pub const PIPIT_ABI_VERSION: u32 = 1;

/// Success.
pub const PIPIT_OK: pipit_status = 0;
/// NULL pointer, value out of range.
pub const PIPIT_ERR_INVALID_ARGUMENT: pipit_status = 1;
/// Missing or unreadable file.
pub const PIPIT_ERR_IO: pipit_status = 2;
/// Malformed or corrupt model file.
pub const PIPIT_ERR_FORMAT: pipit_status = 3;
/// Valid file, feature not supported here.
pub const PIPIT_ERR_UNSUPPORTED: pipit_status = 4;
/// Allocation failed, or `memory_limit` would be exceeded.
pub const PIPIT_ERR_OUT_OF_MEMORY: pipit_status = 5;
/// The context cannot take the tokens; nothing was changed.
pub const PIPIT_ERR_CONTEXT_FULL: pipit_status = 6;
/// The size out-parameter says what is needed.
pub const PIPIT_ERR_BUFFER_TOO_SMALL: pipit_status = 7;
/// The session is in use by another thread.
pub const PIPIT_ERR_BUSY: pipit_status = 8;
/// `pipit_session_cancel` stopped the call.
pub const PIPIT_ERR_CANCELLED: pipit_status = 9;
/// NaN or infinity reached the logits.
pub const PIPIT_ERR_NUMERIC: pipit_status = 10;
/// A bug, including a caught panic.
pub const PIPIT_ERR_INTERNAL: pipit_status = 11;

/// `pipit_model_open_ex` flag: read the file into memory instead of mapping it.
pub const PIPIT_OPEN_NO_MMAP: u32 = 1;
/// `pipit_model_open_ex` flag: check every tensor checksum while opening.
pub const PIPIT_OPEN_VERIFY: u32 = 2;

/// `pipit_session_params.flags`: before allocating, check the session's KV cache and scratch
/// against the machine's available memory (`MemAvailable`; no check where unknown) and fail
/// with `PIPIT_ERR_OUT_OF_MEMORY` naming both figures.
pub const PIPIT_SESSION_CHECK_MEMORY: u32 = 1;

/// KV cache in IEEE half precision (the default).
pub const PIPIT_KV_F16: u32 = 0;
/// KV cache in f32.
pub const PIPIT_KV_F32: u32 = 1;
/// KV cache in Q8_0 blocks (head_dim must be a multiple of 32).
pub const PIPIT_KV_INT8: u32 = 2;

/// What `pipit_model_get_info` reports.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct pipit_model_info {
    /// Vocabulary size.
    pub n_vocab: u32,
    /// Context length the model was trained for.
    pub n_ctx_train: u32,
    /// Transformer blocks.
    pub n_layer: u32,
    /// Residual width.
    pub d_model: u32,
    /// BOS token id, -1 when absent.
    pub bos_token: i32,
    /// EOS token id, -1 when absent.
    pub eos_token: i32,
    /// Bytes of tensor data in the file.
    pub weights_bytes: u64,
    /// `general.architecture`, NUL-terminated; lives as long as the model.
    pub architecture: *const c_char,
    /// `general.name` (may be empty), NUL-terminated; lives as long as the model.
    pub name: *const c_char,
}

/// How a session is set up.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct pipit_session_params {
    /// Context window in tokens; default 2048.
    pub n_ctx: u32,
    /// Threads for the matrix work; 0: all cores.
    pub n_threads: u32,
    /// One of `PIPIT_KV_*`; default `PIPIT_KV_F16`.
    pub kv_type: u32,
    /// Reserved, 0.
    pub flags: u32,
    /// Bytes for KV cache plus scratch; 0: no limit.
    pub memory_limit: u64,
}

/// Sampling settings.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct pipit_sampler_params {
    /// 0: greedy; default 0.8.
    pub temperature: f32,
    /// 0: off; default 40.
    pub top_k: u32,
    /// 1: off; default 0.95.
    pub top_p: f32,
    /// 0: off; default 0.05.
    pub min_p: f32,
    /// 1: off; default 1.1.
    pub repeat_penalty: f32,
    /// Default 64.
    pub repeat_last_n: u32,
    /// Default 0.
    pub seed: u64,
}

/// The memory of a session, in bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct pipit_memory_report {
    /// Model weights (mapped or read; shared by all sessions of the model).
    pub weights_mapped: u64,
    /// The KV cache.
    pub kv_cache: u64,
    /// Activations, logits and the other per-session buffers.
    pub scratch: u64,
    /// The sum of the three.
    pub total: u64,
}

/// Receives each piece of generated text; nonzero stops the generation.
pub type pipit_token_callback = Option<
    unsafe extern "C" fn(piece: *const c_char, len: usize, token: i32, user: *mut c_void) -> c_int,
>;

const _: () = {
    assert!(std::mem::size_of::<pipit_session_params>() == 24);
    assert!(std::mem::size_of::<pipit_sampler_params>() == 32);
    assert!(std::mem::size_of::<pipit_memory_report>() == 32);
};

// ---------------------------------------------------------------------------------------
// Errors, panics and the last-error message

thread_local! {
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

/// Records `msg` as this thread's last error.
fn set_last_error(msg: &str) {
    let msg = CString::new(msg.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = Some(msg));
}

/// The status code of an error.
pub fn status_of(e: &Error) -> pipit_status {
    match e {
        Error::Io { .. } => PIPIT_ERR_IO,
        Error::Format(_) => PIPIT_ERR_FORMAT,
        Error::Unsupported(_) => PIPIT_ERR_UNSUPPORTED,
        Error::InvalidArgument(_) => PIPIT_ERR_INVALID_ARGUMENT,
        Error::OutOfMemory(_) => PIPIT_ERR_OUT_OF_MEMORY,
        Error::ContextFull { .. } => PIPIT_ERR_CONTEXT_FULL,
        Error::Busy => PIPIT_ERR_BUSY,
        Error::Cancelled => PIPIT_ERR_CANCELLED,
        Error::Numeric(_) => PIPIT_ERR_NUMERIC,
        Error::Internal(_) => PIPIT_ERR_INTERNAL,
    }
}

/// An error that has no `Error` variant of its own: the buffer the caller gave is too small.
struct BufferTooSmall(String);

/// What an exported function body can fail with.
enum Failure {
    Error(Error),
    BufferTooSmall(BufferTooSmall),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Error(e)
    }
}

impl From<BufferTooSmall> for Failure {
    fn from(e: BufferTooSmall) -> Self {
        Failure::BufferTooSmall(e)
    }
}

/// The text of a caught panic's payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(no message)"
    }
}

/// Runs the body of an exported function: its error or panic becomes a status and this
/// thread's last error.
fn call(body: impl FnOnce() -> std::result::Result<(), Failure>) -> pipit_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => PIPIT_OK,
        Ok(Err(Failure::Error(e))) => {
            set_last_error(&e.to_string());
            status_of(&e)
        }
        Ok(Err(Failure::BufferTooSmall(BufferTooSmall(msg)))) => {
            set_last_error(&msg);
            PIPIT_ERR_BUFFER_TOO_SMALL
        }
        Err(payload) => {
            set_last_error(&format!(
                "internal error: panic: {}",
                panic_message(payload.as_ref())
            ));
            PIPIT_ERR_INTERNAL
        }
    }
}

/// Runs the body of a function that cannot report a status (the void and value functions);
/// a panic only leaves its message for `pipit_last_error`.
fn call_quiet<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|payload| {
        set_last_error(&format!(
            "internal error: panic: {}",
            panic_message(payload.as_ref())
        ));
        fallback
    })
}

fn null_arg(name: &str) -> Error {
    Error::InvalidArgument(format!("{name} is NULL"))
}

/// `*ptr` for a pointer the caller gave, or an error naming the argument.
///
/// # Safety
/// `ptr` is NULL or points to a valid, aligned `T` that lives for `'a`.
unsafe fn arg<'a, T>(ptr: *const T, name: &str) -> Result<&'a T> {
    // SAFETY: the caller's promise; NULL is turned into an error by `as_ref`.
    unsafe { ptr.as_ref() }.ok_or_else(|| null_arg(name))
}

/// Writes through an out-pointer, or names the NULL argument.
///
/// # Safety
/// `ptr` is NULL or points to writable memory for one `T`.
unsafe fn put<T>(ptr: *mut T, name: &str, value: T) -> Result<()> {
    if ptr.is_null() {
        return Err(null_arg(name));
    }
    if !ptr.is_aligned() {
        return Err(Error::InvalidArgument(format!("{name} is not aligned")));
    }
    // SAFETY: non-NULL and aligned; the caller promises it is writable. `write` does not
    // drop the old (possibly uninitialised) value.
    unsafe { ptr.write(value) };
    Ok(())
}

/// The `n` elements at `ptr` as a slice; `ptr` may be NULL only when `n` is 0.
///
/// # Safety
/// `ptr` is NULL or points to `n` initialised `T`s that live for `'a` and are not written
/// meanwhile.
unsafe fn slice<'a, T>(ptr: *const T, n: usize, name: &str) -> Result<&'a [T]> {
    if n == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(Error::InvalidArgument(format!(
            "{name} is NULL but its length is {n}"
        )));
    }
    if !ptr.is_aligned() {
        return Err(Error::InvalidArgument(format!("{name} is not aligned")));
    }
    if n.checked_mul(std::mem::size_of::<T>())
        .is_none_or(|b| b > isize::MAX as usize)
    {
        return Err(Error::InvalidArgument(format!(
            "{name}: length {n} is too large"
        )));
    }
    // SAFETY: non-NULL, aligned, the byte length fits isize; the caller promises `n`
    // readable elements for 'a.
    Ok(unsafe { std::slice::from_raw_parts(ptr, n) })
}

/// Token ids from C (`int32_t`) as the runtime's `u32`, without copying.
fn token_ids(tokens: &[i32]) -> Result<&[u32]> {
    if let Some(i) = tokens.iter().position(|&t| t < 0) {
        return Err(Error::InvalidArgument(format!(
            "tokens[{i}] = {} is negative",
            tokens[i]
        )));
    }
    Ok(bytemuck::cast_slice(tokens))
}

// ---------------------------------------------------------------------------------------
// Library

/// The ABI version this library implements (`PIPIT_ABI_VERSION`).
#[no_mangle]
pub extern "C" fn pipit_abi_version() -> u32 {
    PIPIT_ABI_VERSION
}

/// A static, NUL-terminated name for a status.
#[no_mangle]
pub extern "C" fn pipit_status_string(status: pipit_status) -> *const c_char {
    let s: &'static CStr = match status {
        PIPIT_OK => c"ok",
        PIPIT_ERR_INVALID_ARGUMENT => c"invalid argument",
        PIPIT_ERR_IO => c"i/o error",
        PIPIT_ERR_FORMAT => c"malformed model file",
        PIPIT_ERR_UNSUPPORTED => c"unsupported",
        PIPIT_ERR_OUT_OF_MEMORY => c"out of memory",
        PIPIT_ERR_CONTEXT_FULL => c"context full",
        PIPIT_ERR_BUFFER_TOO_SMALL => c"buffer too small",
        PIPIT_ERR_BUSY => c"session busy",
        PIPIT_ERR_CANCELLED => c"cancelled",
        PIPIT_ERR_NUMERIC => c"numeric error",
        PIPIT_ERR_INTERNAL => c"internal error",
        _ => c"unknown status",
    };
    s.as_ptr()
}

/// This thread's last failure message; never NULL, empty when nothing failed yet.
#[no_mangle]
pub extern "C" fn pipit_last_error() -> *const c_char {
    call_quiet(c"".as_ptr(), || {
        LAST_ERROR.with(|e| e.borrow().as_ref().map_or(c"".as_ptr(), |m| m.as_ptr()))
    })
}

// ---------------------------------------------------------------------------------------
// Model

/// An open model, shared by its sessions.
pub struct pipit_model {
    model: Arc<Model>,
    architecture: CString,
    name: CString,
}

impl pipit_model {
    fn new(model: Arc<Model>) -> Result<Self> {
        let meta = &model.file().metadata;
        let text = |key: &str| -> Result<CString> {
            let s = meta.opt_str(key)?.unwrap_or_default();
            // A NUL inside the text ends the C string there.
            let end = s.find('\0').unwrap_or(s.len());
            Ok(CString::new(&s[..end]).unwrap_or_default())
        };
        Ok(pipit_model {
            architecture: text("general.architecture")?,
            name: text("general.name")?,
            model,
        })
    }
}

/// The path argument as a file system path (any bytes on Unix).
fn c_path(path: *const c_char) -> Result<std::path::PathBuf> {
    if path.is_null() {
        return Err(null_arg("path"));
    }
    // SAFETY: non-NULL; the C caller passes a NUL-terminated string.
    let bytes = unsafe { CStr::from_ptr(path) }.to_bytes();
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        Ok(std::ffi::OsStr::from_bytes(bytes).into())
    }
    #[cfg(not(unix))]
    {
        std::str::from_utf8(bytes)
            .map(Into::into)
            .map_err(|_| Error::InvalidArgument("path is not valid UTF-8".into()))
    }
}

/// Opens a model with the default options (mapped, checksums not verified).
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn pipit_model_open(
    path: *const c_char,
    out: *mut *mut pipit_model,
) -> pipit_status {
    // SAFETY: forwarded under the same contract.
    unsafe { pipit_model_open_ex(path, 0, out) }
}

/// Opens a model; `flags` is a combination of `PIPIT_OPEN_*`.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn pipit_model_open_ex(
    path: *const c_char,
    flags: u32,
    out: *mut *mut pipit_model,
) -> pipit_status {
    call(|| {
        // SAFETY: the caller's contract on `out`.
        unsafe { put(out, "out", std::ptr::null_mut())? };
        let path = c_path(path)?;
        let known = PIPIT_OPEN_NO_MMAP | PIPIT_OPEN_VERIFY;
        if flags & !known != 0 {
            return Err(Error::InvalidArgument(format!(
                "unknown open flags {:#x}",
                flags & !known
            ))
            .into());
        }
        let opts = OpenOptions {
            mmap: flags & PIPIT_OPEN_NO_MMAP == 0,
            verify: flags & PIPIT_OPEN_VERIFY != 0,
        };
        let model = pipit_model::new(Arc::new(Model::open_with(&path, &opts)?))?;
        // SAFETY: checked writable above.
        unsafe { out.write(Box::into_raw(Box::new(model))) };
        Ok(())
    })
}

/// Drops the caller's reference to a model; sessions keep their own. NULL is a no-op.
///
/// # Safety
/// `model` is NULL or came from `pipit_model_open*` and is not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn pipit_model_free(model: *mut pipit_model) {
    if model.is_null() {
        return;
    }
    call_quiet((), || {
        // SAFETY: the caller hands back ownership of a pointer from Box::into_raw.
        drop(unsafe { Box::from_raw(model) });
    });
}

/// Facts about a model; the strings live as long as the model.
///
/// # Safety
/// `model` is NULL or a live model; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn pipit_model_get_info(
    model: *const pipit_model,
    out: *mut pipit_model_info,
) -> pipit_status {
    call(|| {
        // SAFETY: the caller's contract.
        let m = unsafe { arg(model, "model")? };
        if out.is_null() {
            return Err(null_arg("out").into());
        }
        let hp = m.model.hparams();
        let tok = m.model.tokenizer();
        let u32_of = |what: &str, v: usize| {
            u32::try_from(v)
                .map_err(|_| Error::Internal(format!("{what} = {v} does not fit in 32 bits")))
        };
        let id = |t: Option<u32>| t.and_then(|t| i32::try_from(t).ok()).unwrap_or(-1);
        let weights_bytes = m
            .model
            .file()
            .tensors
            .iter()
            .map(|t| t.size)
            .fold(0u64, u64::saturating_add);
        let info = pipit_model_info {
            n_vocab: u32_of("n_vocab", hp.n_vocab)?,
            n_ctx_train: u32_of("n_ctx_train", hp.n_ctx_train)?,
            n_layer: u32_of("n_layer", hp.n_layer)?,
            d_model: u32_of("d_model", hp.d_model)?,
            bos_token: id(tok.bos()),
            eos_token: id(tok.eos()),
            weights_bytes,
            architecture: m.architecture.as_ptr(),
            name: m.name.as_ptr(),
        };
        // SAFETY: the caller's contract on `out`.
        unsafe { put(out, "out", info)? };
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------
// Tokens

/// Tokenizes `len` bytes of UTF-8 `text`. When `capacity` is short, returns
/// `PIPIT_ERR_BUFFER_TOO_SMALL` with `*n_tokens` set to the count needed.
///
/// # Safety
/// `model` is NULL or live; `text` is NULL or `len` readable bytes; `tokens` is NULL or
/// `capacity` writable ids; `n_tokens` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn pipit_tokenize(
    model: *const pipit_model,
    text: *const c_char,
    len: usize,
    add_bos: c_int,
    tokens: *mut i32,
    capacity: usize,
    n_tokens: *mut usize,
) -> pipit_status {
    call(|| {
        // SAFETY: the caller's contract on each pointer.
        let m = unsafe { arg(model, "model")? };
        if n_tokens.is_null() {
            return Err(null_arg("n_tokens").into());
        }
        // SAFETY: as above.
        let bytes = unsafe { slice(text.cast::<u8>(), len, "text")? };
        let text = std::str::from_utf8(bytes).map_err(|e| {
            Error::InvalidArgument(format!(
                "text is not valid UTF-8 (byte {})",
                e.valid_up_to()
            ))
        })?;
        #[cfg(feature = "ffi-test-panic")]
        if text == "pipit:test-panic" {
            panic!("forced by the ffi-test-panic feature");
        }
        let mut ids = Vec::new();
        m.model.tokenizer().encode(text, add_bos != 0, &mut ids);
        // SAFETY: as above.
        unsafe { put(n_tokens, "n_tokens", ids.len())? };
        if ids.len() > capacity {
            return Err(BufferTooSmall(format!(
                "the text has {} tokens; the buffer holds {capacity}",
                ids.len()
            ))
            .into());
        }
        if ids.is_empty() {
            return Ok(());
        }
        if tokens.is_null() {
            return Err(null_arg("tokens").into());
        }
        if !tokens.is_aligned() {
            return Err(Error::InvalidArgument("tokens is not aligned".into()).into());
        }
        for (i, &id) in ids.iter().enumerate() {
            let id = i32::try_from(id)
                .map_err(|_| Error::Internal(format!("token id {id} exceeds int32")))?;
            // SAFETY: i < ids.len() <= capacity, the caller's writable length.
            unsafe { tokens.add(i).write(id) };
        }
        Ok(())
    })
}

/// The bytes a token stands for, pointing into the model (not NUL-terminated; empty for
/// control tokens).
///
/// # Safety
/// `model` is NULL or live; `piece` and `len` are NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn pipit_token_to_piece(
    model: *const pipit_model,
    token: i32,
    piece: *mut *const c_char,
    len: *mut usize,
) -> pipit_status {
    call(|| {
        // SAFETY: the caller's contract.
        let m = unsafe { arg(model, "model")? };
        if piece.is_null() || len.is_null() {
            return Err(null_arg(if piece.is_null() { "piece" } else { "len" }).into());
        }
        let tok = m.model.tokenizer();
        let id = u32::try_from(token)
            .ok()
            .filter(|&t| (t as usize) < tok.n_vocab())
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "token {token} is outside the vocabulary of {}",
                    tok.n_vocab()
                ))
            })?;
        let bytes = tok.piece(id);
        let ptr = if bytes.is_empty() {
            c"".as_ptr()
        } else {
            bytes.as_ptr().cast::<c_char>()
        };
        // SAFETY: both checked non-NULL; the caller promises they are writable.
        unsafe {
            put(piece, "piece", ptr)?;
            put(len, "len", bytes.len())?;
        }
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------
// Sessions

/// Writes the default session parameters. NULL is a no-op.
///
/// # Safety
/// `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn pipit_session_params_default(out: *mut pipit_session_params) {
    call_quiet((), || {
        let d = SessionParams::default();
        let p = pipit_session_params {
            n_ctx: u32::try_from(d.n_ctx).unwrap_or(2048),
            n_threads: 0,
            kv_type: PIPIT_KV_F16,
            flags: 0,
            memory_limit: 0,
        };
        // SAFETY: the caller's contract; a NULL or misaligned pointer is ignored.
        let _ = unsafe { put(out, "out", p) };
    });
}

/// The runtime's parameters for the C ones, checking the fields the runtime does not.
fn session_params(p: &pipit_session_params) -> Result<SessionParams> {
    if p.kv_type > PIPIT_KV_INT8 {
        return Err(Error::InvalidArgument(format!(
            "kv_type {} is not one of PIPIT_KV_*",
            p.kv_type
        )));
    }
    if p.flags & !PIPIT_SESSION_CHECK_MEMORY != 0 {
        return Err(Error::InvalidArgument(format!(
            "unknown session flags {:#x} (known: PIPIT_SESSION_CHECK_MEMORY)",
            p.flags
        )));
    }
    let usize_of = |v: u32| {
        usize::try_from(v)
            .map_err(|_| Error::InvalidArgument(format!("{v} does not fit in size_t")))
    };
    let kv_type = match p.kv_type {
        PIPIT_KV_F32 => KvType::F32,
        PIPIT_KV_INT8 => KvType::Int8,
        _ => KvType::F16,
    };
    Ok(SessionParams {
        n_ctx: usize_of(p.n_ctx)?,
        n_threads: usize_of(p.n_threads)?,
        memory_limit: p.memory_limit,
        kv_type,
        ..SessionParams::default()
    })
}

/// The memory a session with `params` would take.
///
/// # Safety
/// Each pointer is NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn pipit_memory_estimate(
    model: *const pipit_model,
    params: *const pipit_session_params,
    out: *mut pipit_memory_report,
) -> pipit_status {
    call(|| {
        // SAFETY: the caller's contract.
        let (m, p) = unsafe { (arg(model, "model")?, arg(params, "params")?) };
        if out.is_null() {
            return Err(null_arg("out").into());
        }
        let r = MemoryReport::estimate(&m.model, &session_params(p)?)?;
        let report = pipit_memory_report {
            weights_mapped: r.weights_mapped,
            kv_cache: r.kv_cache,
            scratch: r.scratch,
            total: r.total,
        };
        // SAFETY: the caller's contract.
        unsafe { put(out, "out", report)? };
        Ok(())
    })
}

/// The state a session's lock guards.
#[derive(Default)]
struct Lock {
    /// A call is running on the session.
    busy: bool,
    /// A call panicked: the session may be inconsistent and refuses further work.
    poisoned: bool,
}

/// The session itself and the sampler `pipit_session_sample` keeps between calls.
struct Inner {
    session: Session,
    sampler: Option<Sampler>,
}

/// One conversation, used by one thread at a time.
pub struct pipit_session {
    /// Held only for an instant, to flip `busy` or deliver a cancel.
    lock: Mutex<Lock>,
    /// Touched only by the thread that set `busy`.
    inner: UnsafeCell<Inner>,
    /// The session's cancel flag.
    cancel: Arc<AtomicBool>,
    /// Tokens in the context as of the end of the last call; readable while busy.
    n_past: AtomicU32,
}

// SAFETY: `inner` is only reached through a `Busy` guard, which `lock` hands to one thread
// at a time; the other fields are synchronised themselves. The `Session` inside is `Send`.
unsafe impl Sync for pipit_session {}

/// Exclusive use of a session for the duration of one call.
struct Busy<'a> {
    s: &'a pipit_session,
}

impl pipit_session {
    fn lock(&self) -> MutexGuard<'_, Lock> {
        self.lock.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks the session busy, or fails with `Busy` if another call is running.
    fn enter(&self) -> Result<Busy<'_>> {
        let mut l = self.lock();
        if l.poisoned {
            return Err(Error::Internal(
                "an earlier call on this session panicked; free the session".into(),
            ));
        }
        if l.busy {
            return Err(Error::Busy);
        }
        l.busy = true;
        Ok(Busy { s: self })
    }
}

impl Busy<'_> {
    fn inner(&mut self) -> &mut Inner {
        // SAFETY: this guard is the only one alive for the session (see `enter`), and it is
        // borrowed mutably, so this is the only reference to `inner`.
        unsafe { &mut *self.s.inner.get() }
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        let n_past = self.inner().session.n_past();
        self.s
            .n_past
            .store(u32::try_from(n_past).unwrap_or(u32::MAX), Ordering::Release);
        let mut l = self.s.lock();
        // A cancel that arrived too late for this call must not stop the next one.
        self.s.cancel.store(false, Ordering::Release);
        l.poisoned |= std::thread::panicking();
        l.busy = false;
    }
}

/// A session pointer argument.
///
/// # Safety
/// `session` is NULL or a live session.
unsafe fn session_arg<'a>(session: *const pipit_session) -> Result<&'a pipit_session> {
    // SAFETY: the caller's contract.
    unsafe { arg(session, "session") }
}

/// Creates a session on `model`; it keeps the model alive.
///
/// # Safety
/// Each pointer is NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn pipit_session_new(
    model: *const pipit_model,
    params: *const pipit_session_params,
    out: *mut *mut pipit_session,
) -> pipit_status {
    call(|| {
        // SAFETY: the caller's contract.
        unsafe { put(out, "out", std::ptr::null_mut())? };
        // SAFETY: the caller's contract.
        let (m, p) = unsafe { (arg(model, "model")?, arg(params, "params")?) };
        let params = session_params(p)?;
        if p.flags & PIPIT_SESSION_CHECK_MEMORY != 0 {
            session::check_memory(&m.model, &params, session::available_memory())?;
        }
        let session = Session::new(Arc::clone(&m.model), params)?;
        let s = pipit_session {
            lock: Mutex::new(Lock::default()),
            cancel: session.cancel_handle(),
            n_past: AtomicU32::new(0),
            inner: UnsafeCell::new(Inner {
                session,
                sampler: None,
            }),
        };
        // SAFETY: checked writable above.
        unsafe { out.write(Box::into_raw(Box::new(s))) };
        Ok(())
    })
}

/// Frees a session. NULL is a no-op; a session still running a call on another thread is
/// not freed (that is a caller bug: the call is cancelled and the session leaked).
///
/// # Safety
/// `session` is NULL or came from `pipit_session_new` and is not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn pipit_session_free(session: *mut pipit_session) {
    if session.is_null() {
        return;
    }
    call_quiet((), || {
        // SAFETY: non-NULL; the caller promises a live session.
        let s = unsafe { &*session };
        if s.lock().busy {
            s.cancel.store(true, Ordering::Release);
            set_last_error(
                "pipit_session_free: the session is in use by another thread; not freed",
            );
            return;
        }
        // SAFETY: the caller hands back ownership of a pointer from Box::into_raw, and no
        // call is running on it.
        drop(unsafe { Box::from_raw(session) });
    });
}

/// Empties the session's context.
///
/// # Safety
/// `session` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn pipit_session_reset(session: *mut pipit_session) -> pipit_status {
    call(|| {
        // SAFETY: the caller's contract.
        let mut b = unsafe { session_arg(session)? }.enter()?;
        let inner = b.inner();
        inner.session.reset();
        inner.sampler = None;
        Ok(())
    })
}

/// Tokens in the context (as of the last finished call); 0 for NULL.
///
/// # Safety
/// `session` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn pipit_session_n_past(session: *const pipit_session) -> u32 {
    // SAFETY: the caller's contract.
    call_quiet(0, || {
        unsafe { session.as_ref() }.map_or(0, |s| s.n_past.load(Ordering::Acquire))
    })
}

/// Appends `n` tokens to the context and leaves the logits of the last one.
///
/// # Safety
/// `session` is NULL or live; `tokens` is NULL or `n` readable ids.
#[no_mangle]
pub unsafe extern "C" fn pipit_session_eval(
    session: *mut pipit_session,
    tokens: *const i32,
    n: usize,
) -> pipit_status {
    call(|| {
        // SAFETY: the caller's contract.
        let mut b = unsafe { session_arg(session)? }.enter()?;
        // SAFETY: the caller's contract.
        let ids = token_ids(unsafe { slice(tokens, n, "tokens")? })?;
        b.inner().session.eval(ids)?;
        Ok(())
    })
}

/// The logits after the last evaluated token; valid until the next call on the session.
///
/// # Safety
/// Each pointer is NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn pipit_session_logits(
    session: *const pipit_session,
    logits: *mut *const f32,
    n_vocab: *mut usize,
) -> pipit_status {
    call(|| {
        // SAFETY: the caller's contract.
        let mut b = unsafe { session_arg(session)? }.enter()?;
        if logits.is_null() || n_vocab.is_null() {
            return Err(null_arg(if logits.is_null() {
                "logits"
            } else {
                "n_vocab"
            })
            .into());
        }
        let l = b.inner().session.logits().ok_or_else(|| {
            Error::InvalidArgument("nothing evaluated yet: the session has no logits".into())
        })?;
        // SAFETY: checked non-NULL; the caller promises they are writable.
        unsafe {
            put(logits, "logits", l.as_ptr())?;
            put(n_vocab, "n_vocab", l.len())?;
        }
        Ok(())
    })
}

/// Writes the default sampler parameters. NULL is a no-op.
///
/// # Safety
/// `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn pipit_sampler_params_default(out: *mut pipit_sampler_params) {
    call_quiet((), || {
        let d = SamplerParams::default();
        let p = pipit_sampler_params {
            temperature: d.temperature,
            top_k: d.top_k,
            top_p: d.top_p,
            min_p: d.min_p,
            repeat_penalty: d.repeat_penalty,
            repeat_last_n: d.repeat_last_n,
            seed: d.seed,
        };
        // SAFETY: the caller's contract; a NULL or misaligned pointer is ignored.
        let _ = unsafe { put(out, "out", p) };
    });
}

fn sampler_params(p: &pipit_sampler_params) -> SamplerParams {
    SamplerParams {
        temperature: p.temperature,
        top_k: p.top_k,
        top_p: p.top_p,
        min_p: p.min_p,
        repeat_penalty: p.repeat_penalty,
        repeat_last_n: p.repeat_last_n,
        seed: p.seed,
    }
}

/// Samples the next token from the current logits without appending it. Consecutive calls
/// with the same parameters continue one random stream (seeded by `seed`); new parameters
/// or a reset start a new one.
///
/// # Safety
/// Each pointer is NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn pipit_session_sample(
    session: *mut pipit_session,
    params: *const pipit_sampler_params,
    token: *mut i32,
) -> pipit_status {
    call(|| {
        // SAFETY: the caller's contract.
        let mut b = unsafe { session_arg(session)? }.enter()?;
        // SAFETY: the caller's contract.
        let p = sampler_params(unsafe { arg(params, "params")? });
        if token.is_null() {
            return Err(null_arg("token").into());
        }
        let inner = b.inner();
        let n_vocab = inner.session.model().hparams().n_vocab;
        if inner.sampler.as_ref().is_none_or(|s| *s.params() != p) {
            inner.sampler = Some(Sampler::new(p, n_vocab)?);
        }
        let Some(sampler) = inner.sampler.as_mut() else {
            return Err(Error::Internal("sampler missing".into()).into());
        };
        let id = inner.session.sample(sampler)?;
        let id = i32::try_from(id)
            .map_err(|_| Error::Internal(format!("token id {id} exceeds int32")))?;
        // SAFETY: the caller's contract.
        unsafe { put(token, "token", id)? };
        Ok(())
    })
}

/// The sum of log P(`tokens[i]` | context, `tokens[..i]`), appending the tokens; on an
/// empty context `tokens[0]` is given, not scored.
///
/// # Safety
/// Each pointer is NULL or valid; `tokens` holds `n` ids.
#[no_mangle]
pub unsafe extern "C" fn pipit_session_score(
    session: *mut pipit_session,
    tokens: *const i32,
    n: usize,
    logprob: *mut f64,
) -> pipit_status {
    call(|| {
        // SAFETY: the caller's contract.
        let mut b = unsafe { session_arg(session)? }.enter()?;
        if logprob.is_null() {
            return Err(null_arg("logprob").into());
        }
        // SAFETY: the caller's contract.
        let ids = token_ids(unsafe { slice(tokens, n, "tokens")? })?;
        let lp = b.inner().session.score(ids)?;
        // SAFETY: the caller's contract.
        unsafe { put(logprob, "logprob", lp)? };
        Ok(())
    })
}

/// Tokenizes and evaluates `prompt`, then samples, streams and appends tokens until the end
/// of text, `max_tokens`, a nonzero callback return (PIPIT_OK), a cancel or a full context.
///
/// # Safety
/// `session` and `params` are NULL or valid; `prompt` is NULL or `len` readable bytes;
/// `callback` is NULL or a function safe to call with `user`.
#[no_mangle]
pub unsafe extern "C" fn pipit_generate(
    session: *mut pipit_session,
    prompt: *const c_char,
    len: usize,
    params: *const pipit_sampler_params,
    max_tokens: u32,
    callback: pipit_token_callback,
    user: *mut c_void,
) -> pipit_status {
    call(|| {
        // SAFETY: the caller's contract.
        let mut b = unsafe { session_arg(session)? }.enter()?;
        // SAFETY: the caller's contract.
        let p = sampler_params(unsafe { arg(params, "params")? });
        // SAFETY: the caller's contract.
        let bytes = unsafe { slice(prompt.cast::<u8>(), len, "prompt")? };
        let prompt = std::str::from_utf8(bytes).map_err(|e| {
            Error::InvalidArgument(format!(
                "prompt is not valid UTF-8 (byte {})",
                e.valid_up_to()
            ))
        })?;
        let session = &mut b.inner().session;
        let model = Arc::clone(session.model());
        let tok = model.tokenizer();
        let mut ids = Vec::new();
        // BOS only opens a conversation; a prompt that continues one is appended as is.
        tok.encode(prompt, tok.add_bos() && session.n_past() == 0, &mut ids);
        let emit = |piece: &[u8], token: u32| -> bool {
            match callback {
                // SAFETY: the caller's contract on `callback` and `user`; the piece is
                // valid for the duration of the call.
                Some(f) => unsafe {
                    f(piece.as_ptr().cast(), piece.len(), token as i32, user) != 0
                },
                None => false,
            }
        };
        generate(session, &ids, p, max_tokens, emit)?;
        Ok(())
    })
}

/// Why a generation ended, when not by an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The model produced an end-of-generation token (not appended).
    EndOfText,
    /// `max_tokens` were generated.
    MaxTokens,
    /// The callback asked to stop.
    Callback,
}

/// The loop behind `pipit_generate`: evaluates `prompt` (empty: continue from the current
/// logits), then samples, appends and streams up to `max_tokens` tokens. Every streamed
/// token is in the context; `emit(piece, token)` gets whole UTF-8 characters and returns
/// true to stop. On an error the tokens generated so far stay in the context.
pub fn generate(
    session: &mut Session,
    prompt: &[u32],
    params: SamplerParams,
    max_tokens: u32,
    mut emit: impl FnMut(&[u8], u32) -> bool,
) -> Result<Stop> {
    let model = Arc::clone(session.model());
    let tok = model.tokenizer();
    let mut sampler = Sampler::new(params, model.hparams().n_vocab)?;
    if !prompt.is_empty() {
        session.eval(prompt)?;
    } else if session.logits().is_none() {
        return Err(Error::InvalidArgument(
            "the prompt is empty and the session has no context to continue".into(),
        ));
    }
    let mut stream = Utf8Stream::new();
    let mut stop = false;
    let mut last = 0u32;
    for _ in 0..max_tokens {
        // On an error, the held-back bytes of tokens already in the context still go out.
        let next = match session.sample(&mut sampler) {
            Ok(next) => next,
            Err(e) => {
                stream.finish(|piece| stop = stop || emit(piece, last));
                return Err(e);
            }
        };
        if tok.is_eog(next) {
            stream.finish(|piece| stop = stop || emit(piece, last));
            return Ok(Stop::EndOfText);
        }
        if let Err(e) = session.eval(&[next]) {
            stream.finish(|piece| stop = stop || emit(piece, last));
            return Err(e);
        }
        last = next;
        stream.push(tok.piece(next), |piece| stop = stop || emit(piece, next));
        if stop {
            return Ok(Stop::Callback);
        }
    }
    stream.finish(|piece| stop = stop || emit(piece, last));
    Ok(Stop::MaxTokens)
}

/// Stops the call running on the session (it returns `PIPIT_ERR_CANCELLED` after at most
/// one more token); does nothing when no call is running. Any thread may call it.
///
/// # Safety
/// `session` is NULL or live (not being freed).
#[no_mangle]
pub unsafe extern "C" fn pipit_session_cancel(session: *mut pipit_session) -> pipit_status {
    call(|| {
        // SAFETY: the caller's contract.
        let s = unsafe { session_arg(session)? };
        let l = s.lock();
        if l.busy {
            s.cancel.store(true, Ordering::Release);
        }
        Ok(())
    })
}
