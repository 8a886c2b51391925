//! Regression tests for the defects a hostile-input review found (issue 13), on tiny
//! synthetic models (no real model needed): closed stdout, non-regular model paths, NaN
//! weights, memory checks, a model file truncated while open without mmap, messages.
//! Converter rows are in tools/tests, tokenizer and format rows next to their code.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Tiny;
use pipit::ffi::*;
use pipit::session::Precision;
use pipit::testing::kernels;
use pipit::model::{Model, OpenOptions};
use pipit::session::{self, MemoryReport, Session, SessionParams};
use pipit::Error;
use pipit_format::DType;

/// A fresh directory for one test.
fn tmp(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("hostile").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `bytes` to `dir/name` and returns the path.
fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn pipit() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pipit"))
}

/// Runs `cmd` with a deadline; a hang fails the test instead of blocking it.
fn run_with_deadline(mut cmd: Command, secs: u64) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pipit starts");
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(secs) {
            child.kill().unwrap();
            let _ = child.wait();
            panic!("{cmd:?} still running after {secs} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Row 4: `inspect`, `verify`, `tokenize`, `score`, `bench` and `perplexity` panicked (exit
/// 101, backtrace) when stdout could not be written. Each now fails with exit 1 and one
/// message, for a closed pipe (EPIPE) and a full disk (/dev/full).
#[test]
fn unwritable_stdout_is_an_error_not_a_panic() {
    let dir = tmp("stdout");
    let model = write(&dir, "m.pipit", &common::tiny_llama(1));
    let text = write(&dir, "t.txt", "the cat and the hat sat on the mat ".repeat(4).as_bytes());
    let m = model.to_str().unwrap();
    let commands: [&[&str]; 7] = [
        &["inspect", m],
        &["verify", m],
        &["tokenize", "-m", m, "hi"],
        &["score", "-m", m, "--text", "hello world"],
        &["bench", "-m", m, "-p", "4", "-n", "2", "-r", "1"],
        &["perplexity", "-m", m, "-f", text.to_str().unwrap(), "--ctx", "8"],
        &["run", "-m", m, "-p", "hello", "-n", "4", "--temp", "0"],
    ];
    for args in commands {
        for closed_pipe in [true, false] {
            let stdout = if closed_pipe {
                let (reader, writer) = std::io::pipe().unwrap();
                drop(reader);
                Stdio::from(writer)
            } else {
                Stdio::from(std::fs::File::create("/dev/full").unwrap())
            };
            let mut cmd = pipit();
            cmd.args(args).stdout(stdout);
            let out = run_with_deadline(cmd, 60);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{args:?} pipe={closed_pipe}: {err}");
            assert!(
                err.contains("stdout:") && !err.contains("panicked"),
                "{args:?} pipe={closed_pipe}: {err}"
            );
        }
    }
}

/// Rows 8 and 12: a FIFO with no writer blocked `open()` forever; a directory, /dev/null or
/// /dev/urandom gave "No such device (os error 19)". Each is now refused at once, naming
/// what the path is, by every command that opens a model and by the C ABI.
#[test]
fn non_regular_model_paths_are_refused_at_once() {
    let dir = tmp("nonregular");
    let fifo = dir.join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let cases = [
        (fifo.clone(), "a FIFO"),
        (dir.clone(), "a directory"),
        (PathBuf::from("/dev/null"), "a character device"),
        (PathBuf::from("/dev/urandom"), "a character device"),
    ];
    for (path, kind) in &cases {
        let p = path.to_str().unwrap();
        for args in [
            vec!["inspect", p],
            vec!["run", "-m", p, "-p", "hi"],
            vec!["run", "-m", p, "-p", "hi", "--no-mmap"],
            vec!["tokenize", "-m", p, "hi"],
        ] {
            let mut cmd = pipit();
            cmd.args(&args).stdout(Stdio::null());
            let out = run_with_deadline(cmd, 20);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
            assert!(
                err.contains(kind) && err.contains("not a regular file"),
                "{args:?}: {err}"
            );
        }
        for mmap in [true, false] {
            let e = Model::open_with(
                path,
                &OpenOptions {
                    mmap,
                    ..OpenOptions::default()
                },
            )
            .err()
            .unwrap();
            assert!(matches!(e, Error::Io { .. }), "{e}");
            assert_eq!(status_of(&e), PIPIT_ERR_IO);
        }
    }
}

/// Row 12: `--temp inf` said "must be >= 0".
#[test]
fn infinite_sampling_values_are_named_as_such() {
    let dir = tmp("temp-inf");
    let model = write(&dir, "m.pipit", &common::tiny_llama(1));
    for (flag, value) in [("--temp", "inf"), ("--repeat-penalty", "inf")] {
        let out = pipit()
            .args(["run", "-m", model.to_str().unwrap(), "-p", "hi", flag, value])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("must be a finite number") && err.contains("got inf"), "{err}");
    }
}

/// A tiny llama whose tensor `name` has `value` at element `at` (F32 tensors) or whose
/// block `at` has scale `value` (quantized tensors, patched in the file bytes).
fn tiny_with(dtype: DType, name: &str, at: usize, value: f32) -> Vec<u8> {
    let tiny = Tiny::llama(dtype, 3);
    let mut tensors = tiny.tensors();
    let t = tensors.iter_mut().find(|t| t.name == name).unwrap();
    if t.dtype == DType::F32 {
        t.values[at] = value;
        return common::assemble(&tiny.metadata(), &tensors);
    }
    let bytes = common::assemble(&tiny.metadata(), &tensors);
    let file = pipit_format::PipitFile::parse(&bytes).unwrap();
    let info = file.tensors.iter().find(|t| t.name == name).unwrap();
    let block = match dtype {
        DType::Q8_0 => 34,
        DType::Q4_0 => 18,
        _ => 20,
    };
    let off = info.offset as usize + at * block;
    let mut bytes = bytes;
    bytes[off..off + 2].copy_from_slice(&half::f16::from_f32(value).to_bits().to_le_bytes());
    // The tensor checksums no longer match: open without verifying them.
    bytes
}

/// Row 9: NaN or Inf in weights or scales came out as zeros on the int8 path (exit 0,
/// "generated 0 tokens"; score reported ln(n_vocab)). Now every precision and every kernel
/// path reports `Error::Numeric` (PIPIT_ERR_NUMERIC), and the CLI exits 1 with a message.
#[test]
fn non_finite_weights_are_a_numeric_error_everywhere() {
    let dir = tmp("nan");
    let cases = [
        (DType::Q8_0, "output_norm", 5, f32::NAN),
        (DType::Q8_0, "blk.0.attn_norm", 0, f32::INFINITY),
        (DType::Q8_0, "blk.1.ffn_down", 3, f32::NAN),
        (DType::Q4_0, "blk.0.attn_q", 1, f32::INFINITY),
        (DType::Q4_1, "token_embd", 80, f32::NAN), // row 40, the prompt's first token
        (DType::Q4_1, "blk.1.ffn_up", 7, f32::NEG_INFINITY),
    ];
    let prompt: Vec<u32> = (0..12).map(|i| 40 + 7 * i).collect();
    for (i, &(dtype, name, at, value)) in cases.iter().enumerate() {
        let path = write(&dir, &format!("m{i}.pipit"), &tiny_with(dtype, name, at, value));
        let model = Arc::new(Model::open(&path).unwrap());
        for k in kernels::available() {
            // Only this test's sessions read PIPIT_KERNELS while it is set; any path is valid
            // for the others.
            std::env::set_var("PIPIT_KERNELS", k.name);
            for precision in [Precision::Int8, Precision::F32] {
                let params = SessionParams {
                    n_ctx: 64,
                    n_threads: 2,
                    precision,
                    ..SessionParams::default()
                };
                let mut s = Session::new(Arc::clone(&model), params).unwrap();
                assert_eq!(s.kernel_name(), k.name);
                let e = s.eval(&prompt).err().unwrap_or_else(|| {
                    panic!("{name} = {value} ({dtype}), {} {precision:?}: no error", k.name)
                });
                assert!(
                    matches!(e, Error::Numeric(_)),
                    "{name} = {value} ({dtype}), {} {precision:?}: {e}",
                    k.name
                );
                assert_eq!(status_of(&e), PIPIT_ERR_NUMERIC);
                assert_eq!(s.n_past(), 0, "a failed eval changes nothing");
                let e = s.score(&prompt).unwrap_err();
                assert!(matches!(e, Error::Numeric(_)), "score: {e}");
            }
        }
        std::env::remove_var("PIPIT_KERNELS");
        let p = path.to_str().unwrap();
        for args in [
            vec!["run", "-m", p, "-p", "the %cat", "-n", "8"], // % is token 40
            vec!["score", "-m", p, "--text", "the %cat and the hat"],
        ] {
            let out = pipit().args(&args).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
            assert!(err.contains("numeric error"), "{args:?}: {err}");
        }
    }
}

/// Reads the `VmRSS` of this process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// A tiny llama claiming a trained context of 2^32 - 1 tokens.
fn huge_context_model() -> Vec<u8> {
    let tiny = Tiny {
        n_ctx_train: u32::MAX as usize,
        ..Tiny::llama(DType::Q8_0, 1)
    };
    tiny.bytes()
}

/// Row 7: a model claiming n_ctx_train = 2^32 - 1 let `--ctx 1000000000` zero-fill a cache
/// larger than the machine. The CLI now checks the estimate against MemAvailable by
/// default, naming both figures and the override; the C ABI does with
/// PIPIT_SESSION_CHECK_MEMORY; and the cache is filled lazily, so a large one costs nothing
/// until used.
#[test]
fn sessions_larger_than_memory_are_refused_and_caches_fill_lazily() {
    let dir = tmp("memory");
    let path = write(&dir, "m.pipit", &huge_context_model());
    let p = path.to_str().unwrap();
    let out = pipit()
        .args(["run", "-m", p, "--ctx", "1000000000", "-p", "hi"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("out of memory")
            && err.contains("MiB of memory available (MemAvailable")
            && err.contains("KV cache")
            && err.contains("--no-mem-check"),
        "{err}"
    );

    let model = Arc::new(Model::open(&path).unwrap());
    let big = SessionParams {
        n_ctx: 1_000_000_000,
        ..SessionParams::default()
    };
    let e = session::check_memory(&model, &big, Some(1 << 30)).unwrap_err();
    assert!(matches!(e, Error::OutOfMemory(_)), "{e}");
    let small = SessionParams {
        n_ctx: 64,
        ..SessionParams::default()
    };
    session::check_memory(&model, &small, Some(1 << 30)).unwrap();
    session::check_memory(&model, &big, None).unwrap();

    // C ABI: opt-in flag; unknown flags are refused.
    let cpath = std::ffi::CString::new(p).unwrap();
    let mut m = std::ptr::null_mut();
    // SAFETY: valid pointers throughout; every object is freed once.
    unsafe {
        assert_eq!(pipit_model_open(cpath.as_ptr(), &mut m), PIPIT_OK);
        let mut params = std::mem::zeroed::<pipit_session_params>();
        pipit_session_params_default(&mut params);
        params.n_ctx = 1_000_000_000;
        params.flags = PIPIT_SESSION_CHECK_MEMORY;
        let mut s = std::ptr::null_mut();
        assert_eq!(pipit_session_new(m, &params, &mut s), PIPIT_ERR_OUT_OF_MEMORY);
        assert!(s.is_null());
        let msg = std::ffi::CStr::from_ptr(pipit_last_error()).to_string_lossy().into_owned();
        assert!(msg.contains("MemAvailable"), "{msg}");
        params.flags = 2;
        assert_eq!(pipit_session_new(m, &params, &mut s), PIPIT_ERR_INVALID_ARGUMENT);
        params.n_ctx = 256;
        params.flags = PIPIT_SESSION_CHECK_MEMORY;
        assert_eq!(pipit_session_new(m, &params, &mut s), PIPIT_OK);
        pipit_session_free(s);
        pipit_model_free(m);
    }

    // Lazy fill: a session whose buffers take about 1 GB adds far less to the resident set.
    let hp_bytes = |n_ctx| {
        MemoryReport::estimate(
            &model,
            &SessionParams {
                n_ctx,
                n_threads: 1,
                ..SessionParams::default()
            },
        )
        .unwrap()
    };
    let mut n_ctx = 1 << 16;
    while hp_bytes(n_ctx * 2).kv_cache + hp_bytes(n_ctx * 2).scratch < 1 << 30 {
        n_ctx *= 2;
    }
    let report = hp_bytes(n_ctx);
    let before = rss();
    let mut s = Session::new(
        Arc::clone(&model),
        SessionParams {
            n_ctx,
            n_threads: 1,
            ..SessionParams::default()
        },
    )
    .unwrap();
    s.eval(&[40, 41, 42]).unwrap();
    let grew = rss().saturating_sub(before);
    assert!(
        grew < (report.kv_cache + report.scratch) / 8,
        "resident set grew by {grew} bytes for a {} byte session",
        report.kv_cache + report.scratch
    );
}

/// Row 2: a mapped model file truncated under a running model raises SIGBUS; a model opened
/// without mmap (`--no-mmap`, `PIPIT_OPEN_NO_MMAP`) holds its own copy and keeps generating.
#[test]
fn no_mmap_model_keeps_generating_after_its_file_is_truncated() {
    let dir = tmp("truncate");
    let bytes = common::tiny_llama(5);
    let path = write(&dir, "m.pipit", &bytes);
    let model = Arc::new(
        Model::open_with(
            &path,
            &OpenOptions {
                mmap: false,
                ..OpenOptions::default()
            },
        )
        .unwrap(),
    );
    assert!(!model.is_mapped());
    let mut s = Session::new(Arc::clone(&model), SessionParams::default()).unwrap();
    s.eval(&[40, 41]).unwrap();
    let before = s.logits().unwrap().to_vec();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(bytes.len() as u64 / 2)
        .unwrap();
    let mut sampler =
        pipit::sampler::Sampler::new(pipit::sampler::SamplerParams::greedy(), model.hparams().n_vocab)
            .unwrap();
    for _ in 0..16 {
        let t = s.sample(&mut sampler).unwrap();
        s.eval(&[t]).unwrap();
    }
    assert_eq!(s.n_past(), 18);
    // The same logits as a fresh model from the original bytes.
    let fresh = Arc::new(Model::from_bytes(bytes).unwrap());
    let mut f = Session::new(fresh, SessionParams::default()).unwrap();
    f.eval(&[40, 41]).unwrap();
    assert_eq!(f.logits().unwrap(), &before[..]);

    // The same through the C ABI, the file emptied this time.
    let path2 = write(&dir, "m2.pipit", &common::tiny_llama(5));
    let c = std::ffi::CString::new(path2.to_str().unwrap()).unwrap();
    // SAFETY: valid pointers; objects freed once.
    unsafe {
        let mut m = std::ptr::null_mut();
        assert_eq!(pipit_model_open_ex(c.as_ptr(), PIPIT_OPEN_NO_MMAP, &mut m), PIPIT_OK);
        std::fs::File::create(&path2).unwrap().flush().unwrap();
        assert_eq!(std::fs::metadata(&path2).unwrap().len(), 0);
        let mut params = std::mem::zeroed::<pipit_session_params>();
        pipit_session_params_default(&mut params);
        params.n_ctx = 64;
        let mut s = std::ptr::null_mut();
        assert_eq!(pipit_session_new(m, &params, &mut s), PIPIT_OK);
        let toks = [40i32, 41, 42];
        assert_eq!(pipit_session_eval(s, toks.as_ptr(), toks.len()), PIPIT_OK);
        let mut sp = std::mem::zeroed::<pipit_sampler_params>();
        pipit_sampler_params_default(&mut sp);
        for _ in 0..8 {
            let mut t = 0i32;
            assert_eq!(pipit_session_sample(s, &sp, &mut t), PIPIT_OK);
            assert_eq!(pipit_session_eval(s, &t, 1), PIPIT_OK);
        }
        assert_eq!(pipit_session_n_past(s), 11);
        pipit_session_free(s);
        pipit_model_free(m);
    }
}
