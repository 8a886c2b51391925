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

use crate::chat::Template;
use crate::constraint::Constraint;
use crate::generate::{GenerateOptions, StopReason};
use crate::model::{Model, OpenOptions};
use crate::sampler::{Sampler, SamplerParams};
use crate::session::{self, KvType, MemoryReport, Session, SessionParams};
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
/// A constrained output cannot be completed within the remaining budget; the message says
/// how many more bytes were needed.
pub const PIPIT_ERR_INCOMPLETE: pipit_status = 12;

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

/// `pipit_session_stop_reason`: no `pipit_generate` has finished on the session since it was
/// created or reset, or the last one failed.
pub const PIPIT_STOP_NONE: i32 = 0;
/// The model produced an end-of-generation token (not appended).
pub const PIPIT_STOP_END_OF_TEXT: i32 = 1;
/// `max_tokens` tokens were generated.
pub const PIPIT_STOP_MAX_TOKENS: i32 = 2;
/// The output ended with a stop string (`pipit_session_set_stop`).
pub const PIPIT_STOP_STOP_STRING: i32 = 3;
/// The callback returned nonzero.
pub const PIPIT_STOP_CALLBACK: i32 = 4;
/// The context is full.
pub const PIPIT_STOP_CONTEXT_FULL: i32 = 5;

/// The `PIPIT_STOP_*` value of a stop reason.
fn stop_code(r: Option<StopReason>) -> i32 {
    match r {
        None => PIPIT_STOP_NONE,
        Some(StopReason::EndOfText) => PIPIT_STOP_END_OF_TEXT,
        Some(StopReason::MaxTokens) => PIPIT_STOP_MAX_TOKENS,
        Some(StopReason::StopString) => PIPIT_STOP_STOP_STRING,
        Some(StopReason::Callback) => PIPIT_STOP_CALLBACK,
        Some(StopReason::ContextFull) => PIPIT_STOP_CONTEXT_FULL,
    }
}

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
        Error::State(_) => PIPIT_ERR_INVALID_ARGUMENT,
        Error::Internal(_) => PIPIT_ERR_INTERNAL,
        Error::Incomplete { .. } => PIPIT_ERR_INCOMPLETE,
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
        PIPIT_ERR_INCOMPLETE => c"incomplete output",
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
            // A NUL inside the text ends the C string there. Room for the terminator is
            // reserved with the text (a name may be large), so `CString::new` adds it in place.
            let end = s.find('\0').unwrap_or(s.len());
            let mut bytes = crate::mem::try_vec(end + 1)?;
            bytes.extend_from_slice(&s.as_bytes()[..end]);
            Ok(CString::new(bytes).unwrap_or_default())
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

/// A C `uint32_t` count as a `usize`.
fn usize_of(v: u32) -> Result<usize> {
    usize::try_from(v).map_err(|_| Error::InvalidArgument(format!("{v} does not fit in size_t")))
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

/// The session itself, the sampler `pipit_session_sample` keeps between calls, and what
/// `pipit_generate` uses and reports.
struct Inner {
    session: Session,
    sampler: Option<Sampler>,
    /// Stop strings from `pipit_session_set_stop`.
    stops: Vec<String>,
    /// Why the last `pipit_generate` ended; `None` before one finished, after a failure or
    /// a reset.
    stop_reason: Option<StopReason>,
    /// The text `pipit_beam_search` returned, NUL-terminated; valid until the next call.
    text: Vec<u8>,
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
        let session = new_checked(m, p, session_params(p)?)?;
        // SAFETY: checked writable above.
        unsafe { out.write(new_session(session)) };
        Ok(())
    })
}

/// A session on `m` with `params`, after the memory check `p.flags` may ask for.
fn new_checked(m: &pipit_model, p: &pipit_session_params, params: SessionParams) -> Result<Session> {
    if p.flags & PIPIT_SESSION_CHECK_MEMORY != 0 {
        session::check_memory(&m.model, &params, session::available_memory())?;
    }
    Session::new(Arc::clone(&m.model), params)
}

/// Wraps a session for the C caller.
fn new_session(session: Session) -> *mut pipit_session {
    let s = pipit_session {
            lock: Mutex::new(Lock::default()),
            cancel: session.cancel_handle(),
            n_past: AtomicU32::new(0),
            inner: UnsafeCell::new(Inner {
                session,
                sampler: None,
                stops: Vec::new(),
                stop_reason: None,
                text: Vec::new(),
            }),
        };
    Box::into_raw(Box::new(s))
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
        inner.stop_reason = None;
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

/// A UTF-8 text argument of `len` bytes.
///
/// # Safety
/// `ptr` is NULL or points to `len` readable bytes that live for `'a`.
unsafe fn utf8_arg<'a>(ptr: *const c_char, len: usize, name: &str) -> Result<&'a str> {
    // SAFETY: the caller's contract.
    let bytes = unsafe { slice(ptr.cast::<u8>(), len, name)? };
    std::str::from_utf8(bytes).map_err(|e| {
        Error::InvalidArgument(format!(
            "{name} is not valid UTF-8 (byte {})",
            e.valid_up_to()
        ))
    })
}

/// Tokens of a prompt appended to a session: BOS only opens a conversation.
fn prompt_ids(session: &Session, prompt: &str) -> Vec<u32> {
    let tok = session.model().tokenizer();
    let mut ids = Vec::new();
    tok.encode(prompt, tok.add_bos() && session.n_past() == 0, &mut ids);
    ids
}

/// Tokenizes and evaluates `prompt`, then samples, streams and appends tokens until the end
/// of text, `max_tokens`, a stop string, a nonzero callback return, a full context (all
/// PIPIT_OK; `pipit_session_stop_reason` tells which) or a cancel.
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
        let prompt = unsafe { utf8_arg(prompt, len, "prompt")? };
        let inner = b.inner();
        inner.stop_reason = None;
        let ids = prompt_ids(&inner.session, prompt);
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
        let opts = GenerateOptions {
            sampling: p,
            max_tokens: max_tokens as usize,
            stop: &inner.stops,
            ignore_eos: false,
        };
        inner.stop_reason = Some(inner.session.generate(&ids, &opts, emit)?);
        Ok(())
    })
}

/// Sets the stop strings `pipit_generate` honours from now on (`n` NUL-terminated UTF-8
/// strings, none empty); NULL/0 clears them.
///
/// # Safety
/// `session` is NULL or live; `stops` is NULL or `n` pointers, each NULL or a
/// NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn pipit_session_set_stop(
    session: *mut pipit_session,
    stops: *const *const c_char,
    n: usize,
) -> pipit_status {
    call(|| {
        // SAFETY: the caller's contract.
        let mut b = unsafe { session_arg(session)? }.enter()?;
        let ptrs = if stops.is_null() {
            &[][..]
        } else {
            // SAFETY: the caller's contract.
            unsafe { slice(stops, n, "stops")? }
        };
        let mut list = Vec::new();
        for (i, &p) in ptrs.iter().enumerate() {
            if p.is_null() {
                return Err(Error::InvalidArgument(format!("stops[{i}] is NULL")).into());
            }
            // SAFETY: non-NULL; the caller promises a NUL-terminated string.
            let bytes = unsafe { CStr::from_ptr(p) }.to_bytes();
            let text = std::str::from_utf8(bytes).map_err(|e| {
                Error::InvalidArgument(format!(
                    "stops[{i}] is not valid UTF-8 (byte {})",
                    e.valid_up_to()
                ))
            })?;
            if text.is_empty() {
                return Err(Error::InvalidArgument(format!("stops[{i}] is empty")).into());
            }
            list.push(text.to_string());
        }
        b.inner().stops = list;
        Ok(())
    })
}

/// Why the last `pipit_generate` on the session ended: one of `PIPIT_STOP_*`.
///
/// # Safety
/// `session` is NULL or live; `reason` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn pipit_session_stop_reason(
    session: *const pipit_session,
    reason: *mut i32,
) -> pipit_status {
    call(|| {
        // SAFETY: the caller's contract.
        let mut b = unsafe { session_arg(session)? }.enter()?;
        let r = stop_code(b.inner().stop_reason);
        // SAFETY: the caller's contract.
        unsafe { put(reason, "reason", r)? };
        Ok(())
    })
}

/// Rewinds the context to its first `n_past` tokens (at most the current count); the logits
/// become those after token `n_past - 1`, or none at 0.
///
/// # Safety
/// `session` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn pipit_session_truncate(
    session: *mut pipit_session,
    n_past: u32,
) -> pipit_status {
    call(|| {
        // SAFETY: the caller's contract.
        let mut b = unsafe { session_arg(session)? }.enter()?;
        let n = usize::try_from(n_past)
            .map_err(|_| Error::InvalidArgument(format!("{n_past} does not fit in size_t")))?;
        b.inner().session.truncate(n)?;
        Ok(())
    })
}

/// Writes the session's state (tokens, KV cache, logits; tagged with the model, KV type and
/// n_ctx, checksummed) to `buf`. `*needed` gets its size; a `capacity` below it is
/// PIPIT_ERR_BUFFER_TOO_SMALL (`buf` may then be NULL).
///
/// # Safety
/// `session` is NULL or live; `buf` is NULL or `capacity` writable bytes; `needed` is NULL
/// or writable.
#[no_mangle]
pub unsafe extern "C" fn pipit_session_save(
    session: *const pipit_session,
    buf: *mut c_void,
    capacity: usize,
    needed: *mut usize,
) -> pipit_status {
    call(|| {
        // SAFETY: the caller's contract.
        let mut b = unsafe { session_arg(session)? }.enter()?;
        let session = &b.inner().session;
        let len = session.state_len();
        // SAFETY: the caller's contract.
        unsafe { put(needed, "needed", len)? };
        if capacity < len {
            return Err(BufferTooSmall(format!(
                "the state takes {len} bytes; the buffer holds {capacity}"
            ))
            .into());
        }
        if buf.is_null() {
            return Err(null_arg("buf").into());
        }
        let mut state = Vec::new();
        session.save(&mut state)?;
        if state.len() != len {
            return Err(Error::Internal("state length differs from state_len".into()).into());
        }
        // SAFETY: `buf` is non-NULL with `capacity` >= len writable bytes (the caller's
        // contract); `state` is our own buffer, so they do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(state.as_ptr(), buf.cast::<u8>(), len) };
        Ok(())
    })
}

/// Replaces the session's context with a state from `pipit_session_save`. A state from
/// another model, KV type or n_ctx, or a truncated or altered buffer, is
/// PIPIT_ERR_INVALID_ARGUMENT and changes nothing.
///
/// # Safety
/// `session` is NULL or live; `buf` is NULL or `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn pipit_session_load(
    session: *mut pipit_session,
    buf: *const c_void,
    len: usize,
) -> pipit_status {
    call(|| {
        // SAFETY: the caller's contract.
        let mut b = unsafe { session_arg(session)? }.enter()?;
        // SAFETY: the caller's contract.
        let bytes = unsafe { slice(buf.cast::<u8>(), len, "buf")? };
        let inner = b.inner();
        inner.session.load(bytes)?;
        inner.sampler = None;
        inner.stop_reason = None;
        Ok(())
    })
}

/// Appends `prompt` to the context (as `pipit_generate` does) and scores each option as its
/// continuation: `logprobs[i]` is the sum of the option's token log-probabilities, `*best`
/// the index of the largest. Afterwards the context holds the prompt and nothing of the
/// options; on error nothing changes.
///
/// # Safety
/// `session` is NULL or live; `prompt` is NULL or `len` readable bytes; `options` is NULL or
/// `n_options` NUL-terminated strings; `logprobs` is NULL or `n_options` writable doubles;
/// `best` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn pipit_choose(
    session: *mut pipit_session,
    prompt: *const c_char,
    len: usize,
    options: *const *const c_char,
    n_options: usize,
    logprobs: *mut f64,
    best: *mut usize,
) -> pipit_status {
    call(|| {
        // SAFETY: the caller's contract.
        let mut b = unsafe { session_arg(session)? }.enter()?;
        // SAFETY: the caller's contract.
        let prompt = unsafe { utf8_arg(prompt, len, "prompt")? };
        // SAFETY: the caller's contract.
        let ptrs = unsafe { slice(options, n_options, "options")? };
        if ptrs.is_empty() {
            return Err(Error::InvalidArgument("no options".into()).into());
        }
        if logprobs.is_null() || best.is_null() {
            return Err(null_arg(if logprobs.is_null() {
                "logprobs"
            } else {
                "best"
            })
            .into());
        }
        if !logprobs.is_aligned() {
            return Err(Error::InvalidArgument("logprobs is not aligned".into()).into());
        }
        let inner = b.inner();
        let model = Arc::clone(inner.session.model());
        let tok = model.tokenizer();
        let mut ids = Vec::with_capacity(ptrs.len());
        for (i, &p) in ptrs.iter().enumerate() {
            if p.is_null() {
                return Err(Error::InvalidArgument(format!("options[{i}] is NULL")).into());
            }
            // SAFETY: non-NULL; the caller promises a NUL-terminated string.
            let bytes = unsafe { CStr::from_ptr(p) }.to_bytes();
            let text = std::str::from_utf8(bytes).map_err(|e| {
                Error::InvalidArgument(format!(
                    "options[{i}] is not valid UTF-8 (byte {})",
                    e.valid_up_to()
                ))
            })?;
            let mut o = Vec::new();
            tok.encode(text, false, &mut o);
            ids.push(o);
        }
        let prompt = prompt_ids(&inner.session, prompt);
        let mut lps = vec![0.0; ids.len()];
        let i = inner.session.choose(&prompt, &ids, &mut lps)?;
        // SAFETY: non-NULL and aligned; the caller promises `n_options` writable doubles,
        // and `lps` has exactly that many.
        unsafe { std::ptr::copy_nonoverlapping(lps.as_ptr(), logprobs, lps.len()) };
        // SAFETY: the caller's contract.
        unsafe { put(best, "best", i)? };
        Ok(())
    })
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

/// Creates a session on `model` that can run searches of up to `n_seq_max` sequences side by
/// side (beam search with that many beams); their memory is reserved now.
/// `pipit_session_new` is this with `n_seq_max` = 1.
///
/// # Safety
/// Each pointer is NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn pipit_session_new_ex(
    model: *const pipit_model,
    params: *const pipit_session_params,
    n_seq_max: u32,
    out: *mut *mut pipit_session,
) -> pipit_status {
    call(|| {
        // SAFETY: `out` is NULL or writable (the caller's contract).
        unsafe { put(out, "out", std::ptr::null_mut())? };
        // SAFETY: `model` and `params` are NULL or valid (the caller's contract).
        let (m, p) = unsafe { (arg(model, "model")?, arg(params, "params")?) };
        let mut params = session_params(p)?;
        params.n_seq_max = usize_of(n_seq_max)?;
        let session = new_checked(m, p, params)?;
        // SAFETY: checked writable above.
        unsafe { out.write(new_session(session)) };
        Ok(())
    })
}

/// Beam search: appends `prompt` (empty: continue from the current logits), keeps `beams`
/// hypotheses side by side for up to `max_tokens` tokens and picks the best by
/// `sum of log-probabilities / length^length_penalty`. `*text` points at the best
/// hypothesis's text, owned by the session and valid until the next call on it; `*logprob`
/// gets its sum of log-probabilities. On success the context is the previous context, the
/// prompt and the best hypothesis; on failure nothing changes.
///
/// # Safety
/// `session` is NULL or live; `prompt` is NULL or `len` readable bytes; `text`, `text_len`
/// and `logprob` are NULL or writable.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn pipit_beam_search(
    session: *mut pipit_session,
    prompt: *const c_char,
    len: usize,
    beams: u32,
    length_penalty: f32,
    max_tokens: u32,
    text: *mut *const c_char,
    text_len: *mut usize,
    logprob: *mut f64,
) -> pipit_status {
    call(|| {
        // SAFETY: each output pointer is NULL or writable (the caller's contract).
        unsafe {
            put(text, "text", std::ptr::null())?;
            put(text_len, "text_len", 0)?;
            put(logprob, "logprob", 0.0)?;
        }
        // SAFETY: `session` is NULL or live (the caller's contract).
        let mut b = unsafe { session_arg(session)? }.enter()?;
        // SAFETY: `prompt` is NULL or `len` readable bytes (the caller's contract).
        let bytes = unsafe { slice(prompt.cast::<u8>(), len, "prompt")? };
        let prompt = std::str::from_utf8(bytes).map_err(|e| {
            Error::InvalidArgument(format!(
                "prompt is not valid UTF-8 (byte {})",
                e.valid_up_to()
            ))
        })?;
        let inner = b.inner();
        let model = Arc::clone(inner.session.model());
        let tok = model.tokenizer();
        let mut ids = Vec::new();
        tok.encode(prompt, tok.add_bos() && inner.session.n_past() == 0, &mut ids);
        let p = crate::session::BeamParams {
            beams: usize_of(beams)?,
            length_penalty,
            max_tokens: usize_of(max_tokens)?,
            ignore_eos: false,
        };
        let hyps = inner.session.beam_search(&ids, &p)?;
        let best = &hyps[0];
        let mut out = Vec::new();
        for &t in &best.tokens {
            out.extend_from_slice(tok.piece(t));
        }
        // The text is kept NUL-terminated for C callers that ignore `text_len`.
        let n = out.len();
        out.push(0);
        inner.text = out;
        // SAFETY: checked writable above; the text lives in the session until the next call.
        unsafe {
            text.write(inner.text.as_ptr().cast());
            text_len.write(n);
            logprob.write(best.logprob);
        }
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------
// Chat

/// One message of a conversation for `pipit_chat_render`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct pipit_chat_message {
    /// `"system"`, `"user"` or `"assistant"`, NUL-terminated.
    pub role: *const c_char,
    /// The text, NUL-terminated UTF-8.
    pub content: *const c_char,
}

const _: () =
    assert!(std::mem::size_of::<pipit_chat_message>() == 2 * std::mem::size_of::<usize>());

/// A NUL-terminated UTF-8 string argument; `what` names it in errors.
///
/// # Safety
/// `ptr` is NULL or a NUL-terminated string that lives for `'a`.
unsafe fn c_text<'a>(ptr: *const c_char, what: &str) -> Result<&'a str> {
    if ptr.is_null() {
        return Err(null_arg(what));
    }
    // SAFETY: non-NULL; the caller's promise of a NUL-terminated string.
    let bytes = unsafe { CStr::from_ptr(ptr) }.to_bytes();
    std::str::from_utf8(bytes).map_err(|e| {
        Error::InvalidArgument(format!(
            "{what} is not valid UTF-8 (byte {})",
            e.valid_up_to()
        ))
    })
}

/// The template a `pipit_chat_render` name asks for.
fn template_named(name: &str) -> Result<Template> {
    Template::named(name).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "unknown chat template \"{name}\": expected one of {}",
            Template::NAMES.join(", ")
        ))
    })
}

/// A conversation as the template's arguments.
struct Conversation<'a> {
    system: Option<&'a str>,
    /// Earlier `(user, reply)` turns.
    turns: Vec<(String, String)>,
    /// The message to reply to.
    user: &'a str,
}

/// Splits role/content messages: an optional system message, then user and assistant in
/// turn, ending with a user message.
fn conversation<'a>(msgs: &[(&str, &'a str)]) -> Result<Conversation<'a>> {
    let (system, rest) = match msgs.split_first() {
        Some((&("system", sys), rest)) => (Some(sys), rest),
        _ => (None, msgs),
    };
    let offset = msgs.len() - rest.len();
    for (i, &(role, _)) in rest.iter().enumerate() {
        let want = if i % 2 == 0 { "user" } else { "assistant" };
        if role != want {
            return Err(Error::InvalidArgument(format!(
                "messages[{}] has role \"{role}\" where \"{want}\" is expected (an optional \
                 system message, then user and assistant in turn, ending with user)",
                offset + i
            )));
        }
    }
    let Some((&(_, user), earlier)) = rest.split_last().filter(|_| rest.len() % 2 == 1) else {
        return Err(Error::InvalidArgument(
            "the conversation must end with a user message".into(),
        ));
    };
    let turns = earlier
        .chunks_exact(2)
        .map(|t| (t[0].1.to_string(), t[1].1.to_string()))
        .collect();
    Ok(Conversation {
        system,
        turns,
        user,
    })
}

/// Renders a conversation with the model's chat template (or the one `template_name` names:
/// "chatml", "gemma", "llama3"), exactly as `pipit chat` does, up to the start of the
/// assistant's reply. Writes the text and a NUL to `buf`; `*len` gets the text's length
/// without the NUL, also when `capacity` is short (`PIPIT_ERR_BUFFER_TOO_SMALL`, nothing
/// written).
///
/// # Safety
/// `model` is NULL or live; `messages` is NULL or `n` readable messages whose strings are
/// NUL-terminated; `template_name` is NULL or NUL-terminated; `buf` is NULL or `capacity`
/// writable bytes; `len` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn pipit_chat_render(
    model: *const pipit_model,
    template_name: *const c_char,
    messages: *const pipit_chat_message,
    n: usize,
    buf: *mut c_char,
    capacity: usize,
    len: *mut usize,
) -> pipit_status {
    call(|| {
        // SAFETY: the caller's contract on each pointer.
        let m = unsafe { arg(model, "model")? };
        if len.is_null() {
            return Err(null_arg("len").into());
        }
        // SAFETY: as above.
        let msgs = unsafe { slice(messages, n, "messages")? };
        let msgs = msgs
            .iter()
            .enumerate()
            .map(|(i, msg)| {
                // SAFETY: as above.
                unsafe {
                    Ok((
                        c_text(msg.role, &format!("messages[{i}].role"))?,
                        c_text(msg.content, &format!("messages[{i}].content"))?,
                    ))
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let template = if template_name.is_null() {
            // The library's message names the CLI's --template flag; say what C can do.
            Template::from_model(&m.model).map_err(|e| match e {
                Error::Unsupported(_) => Error::Unsupported(
                    "the model has no chat template pipit knows (ChatML, Gemma, Llama 3); \
                     name one: \"chatml\", \"gemma\" or \"llama3\""
                        .into(),
                ),
                e => e,
            })?
        } else {
            // SAFETY: as above.
            template_named(unsafe { c_text(template_name, "template_name")? })?
        };
        let c = conversation(&msgs)?;
        let text = template.render(c.system, &c.turns, c.user);
        // SAFETY: as above.
        unsafe { put(len, "len", text.len())? };
        if text.len() >= capacity {
            return Err(BufferTooSmall(format!(
                "the rendered conversation takes {} bytes and a NUL; the buffer holds {capacity}",
                text.len()
            ))
            .into());
        }
        if buf.is_null() {
            return Err(null_arg("buf").into());
        }
        // SAFETY: `buf` is non-NULL with `capacity` > text.len() writable bytes (the caller's
        // contract); the text is a separate allocation, so the ranges do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), text.len());
            buf.add(text.len()).write(0);
        }
        Ok(())
    })
}

/// 1 when the model's tokenizer puts BOS before a text that opens a context (as
/// `pipit_generate` and the CLI do), else 0; 0 for NULL.
///
/// # Safety
/// `model` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn pipit_model_adds_bos(model: *const pipit_model) -> c_int {
    // SAFETY: the caller's contract.
    call_quiet(0, || {
        unsafe { model.as_ref() }.map_or(0, |m| {
            let tok = m.model.tokenizer();
            c_int::from(tok.add_bos() && tok.bos().is_some())
        })
    })
}

// ---------------------------------------------------------------------------------------
// Constraints (structured output)

/// A compiled constraint; sessions that use it keep their own reference.
pub struct pipit_constraint {
    c: Arc<Constraint>,
}

/// A NUL-terminated UTF-8 string argument.
///
/// # Safety
/// `p` is NULL or a NUL-terminated string that lives for `'a`.
unsafe fn text_arg<'a>(p: *const c_char, name: &str) -> Result<&'a str> {
    if p.is_null() {
        return Err(null_arg(name));
    }
    // SAFETY: non-NULL; the caller promises a NUL-terminated string.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| Error::InvalidArgument(format!("{name} is not valid UTF-8")))
}

/// Shared body of the `pipit_constraint_*` constructors.
///
/// # Safety
/// `model` is NULL or live; `out` is NULL or writable.
unsafe fn new_constraint(
    model: *const pipit_model,
    out: *mut *mut pipit_constraint,
    build: impl FnOnce(&Model) -> Result<Arc<Constraint>>,
) -> pipit_status {
    call(|| {
        // SAFETY: the caller's contract.
        unsafe { put(out, "out", std::ptr::null_mut())? };
        // SAFETY: the caller's contract.
        let m = unsafe { arg(model, "model")? };
        let c = pipit_constraint {
            c: build(&m.model)?,
        };
        // SAFETY: checked writable above.
        unsafe { out.write(Box::into_raw(Box::new(c))) };
        Ok(())
    })
}

/// A constraint: the whole output matches the regular expression `pattern`.
///
/// # Safety
/// `model` is NULL or live; `pattern` is NULL or a NUL-terminated string; `out` is NULL
/// or writable.
#[no_mangle]
pub unsafe extern "C" fn pipit_constraint_regex(
    model: *const pipit_model,
    pattern: *const c_char,
    out: *mut *mut pipit_constraint,
) -> pipit_status {
    // SAFETY: forwarded under the caller's contract.
    unsafe {
        new_constraint(model, out, |m| {
            Constraint::regex(m, text_arg(pattern, "pattern")?)
        })
    }
}

/// A constraint: JSON valid against the schema `schema_json` ("" = any JSON value).
///
/// # Safety
/// As [`pipit_constraint_regex`].
#[no_mangle]
pub unsafe extern "C" fn pipit_constraint_json_schema(
    model: *const pipit_model,
    schema_json: *const c_char,
    out: *mut *mut pipit_constraint,
) -> pipit_status {
    // SAFETY: forwarded under the caller's contract.
    unsafe {
        new_constraint(model, out, |m| {
            Constraint::json_schema(m, text_arg(schema_json, "schema_json")?)
        })
    }
}

/// A constraint: output derived from the `root` rule of a GBNF grammar.
///
/// # Safety
/// As [`pipit_constraint_regex`].
#[no_mangle]
pub unsafe extern "C" fn pipit_constraint_gbnf(
    model: *const pipit_model,
    grammar: *const c_char,
    out: *mut *mut pipit_constraint,
) -> pipit_status {
    // SAFETY: forwarded under the caller's contract.
    unsafe {
        new_constraint(model, out, |m| {
            Constraint::gbnf(m, text_arg(grammar, "grammar")?)
        })
    }
}

/// A constraint: the output is exactly one of the `n` strings.
///
/// # Safety
/// `choices` is NULL or `n` readable pointers, each NULL or a NUL-terminated string; the
/// rest as [`pipit_constraint_regex`].
#[no_mangle]
pub unsafe extern "C" fn pipit_constraint_choices(
    model: *const pipit_model,
    choices: *const *const c_char,
    n: usize,
    out: *mut *mut pipit_constraint,
) -> pipit_status {
    // SAFETY: forwarded under the caller's contract.
    unsafe {
        new_constraint(model, out, |m| {
            let ptrs = slice(choices, n, "choices")?;
            let texts = ptrs
                .iter()
                .map(|&p| text_arg(p, "choices[i]"))
                .collect::<Result<Vec<&str>>>()?;
            Constraint::choices(m, &texts)
        })
    }
}

/// Drops the caller's reference to a constraint; sessions using it keep theirs. NULL is a
/// no-op.
///
/// # Safety
/// `c` is NULL or came from a `pipit_constraint_*` constructor and is not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn pipit_constraint_free(c: *mut pipit_constraint) {
    if c.is_null() {
        return;
    }
    call_quiet((), || {
        // SAFETY: the caller hands back ownership of a pointer from Box::into_raw.
        drop(unsafe { Box::from_raw(c) });
    });
}

/// Sets the constraint sampling and eval follow, at its start (NULL clears it). The
/// session keeps its own reference. A constraint of another model is INVALID_ARGUMENT.
///
/// # Safety
/// `session` is NULL or live; `c` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn pipit_session_set_constraint(
    session: *mut pipit_session,
    c: *const pipit_constraint,
) -> pipit_status {
    call(|| {
        // SAFETY: the caller's contract.
        let mut b = unsafe { session_arg(session)? }.enter()?;
        // SAFETY: the caller's contract: NULL or live.
        let c = unsafe { c.as_ref() }.map(|c| Arc::clone(&c.c));
        b.inner().session.set_constraint(c)?;
        Ok(())
    })
}
