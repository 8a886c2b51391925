//! Sequences of C ABI calls on a tiny model: NULL pointers, calls in the wrong order,
//! repeated calls, odd sizes and flags. Every call must return a status (never panic or
//! abort); use after free and double free are the caller's error by contract, so a freed
//! handle is set to NULL here, as a correct caller would.
#![no_main]

use std::ffi::{c_char, CString};
use std::ptr::{null, null_mut};
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use pipit::ffi::*;

#[path = "../../tests/common/mod.rs"]
mod common;

/// The tiny model, written once to a temporary file.
fn model_path() -> &'static CString {
    static PATH: OnceLock<CString> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("pipit-fuzz-capi-{}.pipit", std::process::id()));
        std::fs::write(&path, common::tiny_llama(1)).unwrap();
        CString::new(path.to_str().unwrap()).unwrap()
    })
}

#[derive(Debug, Arbitrary)]
enum Call {
    Open { null_path: bool, bad_path: bool, flags: u32 },
    FreeModel,
    Info { null_out: bool },
    Tokenize { text: String, add_bos: bool, cap: u8, null_out: bool },
    Piece { token: i32 },
    ParamsDefault,
    Estimate { n_ctx: u32 },
    SessionNew { n_ctx: u32, n_threads: u8, kv_type: u32, flags: u32, limit: u64, null_params: bool },
    FreeSession,
    Reset,
    NPast,
    Eval { tokens: Vec<i32>, null_tokens: bool },
    Logits,
    Sample { temperature: f32, top_k: u32, top_p: f32, min_p: f32, penalty: f32, seed: u64 },
    Score { tokens: Vec<i32> },
    Generate { prompt: String, max: u8, stop_after: u8 },
    Cancel,
    Status { status: i32 },
}

struct State {
    model: *mut pipit_model,
    session: *mut pipit_session,
    params: pipit_session_params,
}

extern "C" fn on_token(_piece: *const c_char, _len: usize, _token: i32, user: *mut std::ffi::c_void) -> i32 {
    // SAFETY: `user` is the `u8` counter passed by the Generate call below.
    let left = unsafe { &mut *user.cast::<u8>() };
    if *left == 0 {
        return 1;
    }
    *left -= 1;
    0
}

fuzz_target!(|calls: Vec<Call>| {
    // SAFETY: pipit_session_params is a repr(C) struct of integers, for which all-zero
    // bytes are a valid value.
    let params = unsafe { std::mem::zeroed() };
    let mut st = State { model: null_mut(), session: null_mut(), params };
    // SAFETY (every call below): pointers are NULL or valid for the call; handles are live
    // or NULL (freed ones are set to NULL).
    unsafe {
        pipit_session_params_default(&mut st.params);
        for call in calls.into_iter().take(64) {
            match call {
                Call::Open { null_path, bad_path, flags } => {
                    let bad = CString::new("/nonexistent/pipit.pipit").unwrap();
                    let path = if null_path { null() } else if bad_path { bad.as_ptr() } else { model_path().as_ptr() };
                    let mut m = null_mut();
                    if pipit_model_open_ex(path, flags, &mut m) == PIPIT_OK {
                        if !st.session.is_null() {
                            pipit_session_free(st.session);
                            st.session = null_mut();
                        }
                        pipit_model_free(st.model);
                        st.model = m;
                    } else {
                        assert!(m.is_null());
                    }
                }
                Call::FreeModel => {
                    // A session keeps its model alive (documented); freeing both is fine.
                    pipit_model_free(st.model);
                    st.model = null_mut();
                }
                Call::Info { null_out } => {
                    let mut info = std::mem::zeroed::<pipit_model_info>();
                    let out = if null_out { null_mut() } else { &mut info as *mut _ };
                    let _ = pipit_model_get_info(st.model, out);
                }
                Call::Tokenize { text, add_bos, cap, null_out } => {
                    let Ok(text) = CString::new(text) else { continue };
                    let mut ids = vec![0i32; usize::from(cap)];
                    let mut n = 0usize;
                    let out = if null_out { null_mut() } else { ids.as_mut_ptr() };
                    let _ = pipit_tokenize(st.model, text.as_ptr(), text.as_bytes().len(), i32::from(add_bos), out, ids.len(), &mut n);
                }
                Call::Piece { token } => {
                    let (mut p, mut len) = (null(), 0usize);
                    let _ = pipit_token_to_piece(st.model, token, &mut p, &mut len);
                }
                Call::ParamsDefault => pipit_session_params_default(&mut st.params),
                Call::Estimate { n_ctx } => {
                    let mut r = std::mem::zeroed::<pipit_memory_report>();
                    let mut p = st.params;
                    p.n_ctx = n_ctx;
                    let _ = pipit_memory_estimate(st.model, &p, &mut r);
                }
                Call::SessionNew { n_ctx, n_threads, kv_type, flags, limit, null_params } => {
                    st.params.n_ctx = n_ctx % 4096;
                    st.params.n_threads = u32::from(n_threads % 4);
                    st.params.kv_type = kv_type;
                    st.params.flags = flags;
                    st.params.memory_limit = limit;
                    let p = if null_params { null() } else { &st.params as *const _ };
                    let mut s = null_mut();
                    if pipit_session_new(st.model, p, &mut s) == PIPIT_OK {
                        pipit_session_free(st.session);
                        st.session = s;
                    } else {
                        assert!(s.is_null());
                    }
                }
                Call::FreeSession => {
                    pipit_session_free(st.session);
                    st.session = null_mut();
                }
                Call::Reset => {
                    let _ = pipit_session_reset(st.session);
                }
                Call::NPast => {
                    let _ = pipit_session_n_past(st.session);
                }
                Call::Eval { tokens, null_tokens } => {
                    let p = if null_tokens { null() } else { tokens.as_ptr() };
                    let _ = pipit_session_eval(st.session, p, tokens.len().min(64));
                }
                Call::Logits => {
                    let (mut l, mut n) = (null(), 0usize);
                    let _ = pipit_session_logits(st.session, &mut l, &mut n);
                }
                Call::Sample { temperature, top_k, top_p, min_p, penalty, seed } => {
                    let mut sp = std::mem::zeroed::<pipit_sampler_params>();
                    pipit_sampler_params_default(&mut sp);
                    sp.temperature = temperature;
                    sp.top_k = top_k;
                    sp.top_p = top_p;
                    sp.min_p = min_p;
                    sp.repeat_penalty = penalty;
                    sp.seed = seed;
                    let mut t = 0i32;
                    let _ = pipit_session_sample(st.session, &sp, &mut t);
                }
                Call::Score { tokens } => {
                    let mut lp = 0f64;
                    let _ = pipit_session_score(st.session, tokens.as_ptr(), tokens.len().min(64), &mut lp);
                }
                Call::Generate { prompt, max, stop_after } => {
                    let mut sp = std::mem::zeroed::<pipit_sampler_params>();
                    pipit_sampler_params_default(&mut sp);
                    let mut left = stop_after;
                    let _ = pipit_generate(
                        st.session,
                        prompt.as_ptr().cast(),
                        prompt.len(),
                        &sp,
                        u32::from(max % 16),
                        Some(on_token),
                        (&mut left as *mut u8).cast(),
                    );
                }
                Call::Cancel => {
                    let _ = pipit_session_cancel(st.session);
                }
                Call::Status { status } => {
                    let _ = pipit_status_string(status);
                    let _ = pipit_last_error();
                }
            }
        }
        pipit_session_free(st.session);
        pipit_model_free(st.model);
    }
});
