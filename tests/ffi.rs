//! The C ABI, exercised from C: the programs in tests/c are compiled with the system `cc`,
//! linked once against libpipit.so and once against libpipit.a, and run on a tiny synthetic
//! model and on the real SmolLM2 model (models/SmolLM2-135M-Instruct.pipit, made by
//! tools/test-models.sh; missing is a failure).

mod clib;
mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use clib::{assert_linkage, compile, compile_in, real_model, run_ok, run_program, tmp_dir, Link};

/// A prompt SmolLM2 answers at length, in plain ASCII.
const REAL_PROMPT: &str = "<|im_start|>user\nWrite a short story about a robot who learns to paint.<|im_end|>\n<|im_start|>assistant\n";

/// The tiny model, a malformed file and a path that does not exist.
struct Files {
    model: PathBuf,
    malformed: PathBuf,
    missing: PathBuf,
    /// Well-formed, but one tensor's data does not match its checksum.
    bad_crc: PathBuf,
}

/// Written once per test process.
fn synthetic_files() -> &'static Files {
    static FILES: OnceLock<Files> = OnceLock::new();
    FILES.get_or_init(write_synthetic_files)
}

/// The context the tiny model was trained for.
fn tiny_n_ctx_train() -> u32 {
    common::Tiny::llama(pipit_format::DType::Q8_0, 7).n_ctx_train as u32
}

fn write_synthetic_files() -> Files {
    let dir = tmp_dir();
    let bytes = common::tiny_llama(7);
    let model = dir.join("tiny-llama.pipit");
    std::fs::write(&model, &bytes).unwrap();
    // Cut inside the tensor data: the header promises more bytes than the file has.
    let malformed = dir.join("truncated.pipit");
    std::fs::write(&malformed, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let mut corrupt = bytes.clone();
    let file = pipit_format::PipitFile::parse(&bytes).unwrap();
    corrupt[usize::try_from(file.tensors[0].offset).unwrap()] ^= 0x01;
    let bad_crc = dir.join("bad-crc.pipit");
    std::fs::write(&bad_crc, &corrupt).unwrap();
    Files {
        model,
        malformed,
        missing: dir.join("no-such-model.pipit"),
        bad_crc,
    }
}

fn os<P: AsRef<OsStr> + ?Sized>(p: &P) -> &OsStr {
    p.as_ref()
}

/// Runs api.c; `stop_checked`: its stop-string check must have found two tokens to span.
fn api_on(model: &Path, text: &str, stop_checked: bool) {
    let f = synthetic_files();
    for link in Link::BOTH {
        let exe = compile("api", link);
        assert_linkage(&exe, link);
        let out = run_program(
            &exe,
            &[
                os(model),
                os(&f.malformed),
                os(&f.missing),
                os(text),
                os(&f.bad_crc),
            ],
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("all checks passed"));
        if stop_checked {
            assert!(
                stdout.contains("stop string across tokens checked"),
                "{stdout}"
            );
        }
    }
}

#[test]
fn c_api_on_the_synthetic_model() {
    let f = synthetic_files();
    api_on(&f.model, "the cat and the hat sat on the mat", false);
}

#[test]
fn c_api_on_smollm2() {
    api_on(
        &real_model(),
        "Hello, world! The capital of France is Paris.",
        true,
    );
}

#[test]
fn other_malformed_files_are_format_errors_from_c() {
    // api.c opens its malformed file with and without mmap; run it on two more kinds.
    let f = synthetic_files();
    let dir = tmp_dir();
    let garbage = dir.join("garbage.pipit");
    std::fs::write(
        &garbage,
        b"this is not a model file at all, just some text padding it out",
    )
    .unwrap();
    let mut bad_magic = std::fs::read(&f.model).unwrap();
    bad_magic[1] ^= 0x20;
    let bad_magic_path = dir.join("bad-magic.pipit");
    std::fs::write(&bad_magic_path, &bad_magic).unwrap();
    let exe = compile("api", Link::Shared);
    for bad in [&garbage, &bad_magic_path] {
        run_program(
            &exe,
            &[os(&f.model), os(bad), os(&f.missing), os("the cat")],
        );
    }
}

/// `pipit run --temp 0` output for a prompt.
fn pipit_run(model: &Path, prompt: &str, n: u32, ctx: u32) -> Vec<u8> {
    let out = run_ok(Command::new(env!("CARGO_BIN_EXE_pipit")).args([
        os("run"),
        os("-m"),
        os(model),
        os("-p"),
        os(prompt),
        os("-n"),
        os(&n.to_string()),
        os("--temp"),
        os("0"),
        os("--ctx"),
        os(&ctx.to_string()),
    ]));
    out.stdout
}

/// example.c clamps the default context of 2048 to what the model was trained for.
fn greedy_matches_run(model: &Path, prompt: &str, n: u32, n_ctx_train: u32) {
    let expected = pipit_run(model, prompt, n, n_ctx_train.min(2048));
    assert!(expected.len() > 1, "pipit run wrote nothing");
    for link in Link::BOTH {
        let exe = compile("example", link);
        let out = run_program(&exe, &[os(model), os(prompt), os(&n.to_string())]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&expected),
            "pipit_generate ({}) and pipit run --temp 0 differ",
            link.name()
        );
    }
}

#[test]
fn greedy_generate_equals_pipit_run_on_smollm2() {
    greedy_matches_run(&real_model(), REAL_PROMPT, 48, 8192);
}

#[test]
fn greedy_generate_equals_pipit_run_on_the_synthetic_model() {
    greedy_matches_run(&synthetic_files().model, "the cat", 40, tiny_n_ctx_train());
}

#[test]
fn threads_busy_and_cancel_on_smollm2() {
    let model = real_model();
    for link in Link::BOTH {
        let exe = compile("threads", link);
        let out = run_program(&exe, &[os(&model), os(REAL_PROMPT), os("24")]);
        assert!(String::from_utf8_lossy(&out.stdout).contains("all checks passed"));
    }
}

#[test]
fn beam_search_from_c_on_smollm2() {
    let model = real_model();
    for link in Link::BOTH {
        let exe = compile("beam", link);
        let out = run_program(&exe, &[os(&model), os(REAL_PROMPT), os("16")]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        eprintln!("{stdout}");
        assert!(stdout.contains("all checks passed"));
    }
}

#[test]
fn constraints_from_c_on_smollm2() {
    let model = real_model();
    let gemma = clib::root().join("models/gemma-3-270m.pipit");
    for link in Link::BOTH {
        let exe = compile("constraint", link);
        let out = run_program(&exe, &[os(&model), os(&gemma), os(REAL_PROMPT)]);
        assert!(String::from_utf8_lossy(&out.stdout).contains("all checks passed"));
    }
}

/// The library built with the `ffi-test-panic` feature: this build when it has it,
/// otherwise a separate debug build.
fn panic_lib_dir() -> PathBuf {
    if cfg!(feature = "ffi-test-panic") {
        return clib::lib_dir();
    }
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ffi-test-panic");
    run_ok(
        Command::new(env!("CARGO"))
            .current_dir(clib::root())
            .args([
                "build",
                "--offline",
                "--lib",
                "-p",
                "pipit",
                "--features",
                "ffi-test-panic",
                "--target-dir",
            ])
            .arg(&target),
    );
    target.join("debug")
}

#[test]
fn a_panic_inside_the_library_is_an_internal_error_and_the_process_lives() {
    let f = synthetic_files();
    let dir = panic_lib_dir();
    for link in Link::BOTH {
        let exe = compile_in("panic", link, &dir, "panic");
        let out = run_program(&exe, &[os(&f.model)]);
        assert!(String::from_utf8_lossy(&out.stdout).contains("the process lives"));
        // The panic message reaches stderr through the default hook; nothing aborted.
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("forced by the ffi-test-panic feature")
        );
    }
}

#[test]
fn pipit_pc_builds_the_example() {
    // Install into a prefix as pipit.pc.in describes, then build example.c with
    // `cc example.c $(pkg-config --cflags --libs pipit)`.
    let prefix = tmp_dir().join("prefix");
    let (inc, lib, pc_dir) = (
        prefix.join("include"),
        prefix.join("lib"),
        prefix.join("lib/pkgconfig"),
    );
    for d in [&inc, &lib, &pc_dir] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::copy(clib::root().join("include/pipit.h"), inc.join("pipit.h")).unwrap();
    for l in ["libpipit.so", "libpipit.a"] {
        std::fs::copy(clib::lib_dir().join(l), lib.join(l)).unwrap();
    }
    let template = std::fs::read_to_string(clib::root().join("pipit.pc.in")).unwrap();
    let pc = template
        .replace("@PREFIX@", prefix.to_str().unwrap())
        .replace("@VERSION@", env!("CARGO_PKG_VERSION"));
    std::fs::write(pc_dir.join("pipit.pc"), pc).unwrap();

    let pkg_config = |args: &[&str]| -> String {
        let out = run_ok(
            Command::new("pkg-config")
                .args(args)
                .arg("pipit")
                .env("PKG_CONFIG_PATH", &pc_dir),
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    assert_eq!(pkg_config(&["--modversion"]), env!("CARGO_PKG_VERSION"));
    assert!(pkg_config(&["--static", "--libs"]).ends_with(&clib::NATIVE_STATIC_LIBS.join(" ")));
    let flags = pkg_config(&["--cflags", "--libs"]);
    let exe = tmp_dir().join("example-pkg-config");
    run_ok(
        Command::new("cc")
            .arg(clib::root().join("tests/c/example.c"))
            .args(flags.split_whitespace())
            .arg(format!("-Wl,-rpath,{}", lib.display()))
            .arg("-o")
            .arg(&exe),
    );
    let out = run_program(
        &exe,
        &[os(&synthetic_files().model), os("the cat"), os("8")],
    );
    assert_eq!(
        out.stdout,
        pipit_run(&synthetic_files().model, "the cat", 8, tiny_n_ctx_train())
    );
}

#[test]
fn chat_render_from_c_gives_the_cli_chat_reply() {
    let model = real_model();
    let message = "What is the capital of France?";
    // The tiny model without a chat template, opening contexts with BOS.
    let tiny = common::Tiny::llama(pipit_format::DType::Q8_0, 7);
    let mut meta = tiny.metadata();
    meta.retain(|(k, _)| k != "tokenizer.chat_template");
    for (k, v) in &mut meta {
        if k == "tokenizer.add_bos" {
            *v = pipit_format::Value::Bool(true);
        }
    }
    let bare = tmp_dir().join("tiny-no-template.pipit");
    std::fs::write(&bare, common::assemble(&meta, &tiny.tensors())).unwrap();
    let n = "24";
    let cli = Command::new(env!("CARGO_BIN_EXE_pipit"))
        .args([
            os("chat"),
            os("-m"),
            os(&model),
            os("--temp"),
            os("0"),
            os("-n"),
            os(n),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    cli.stdin
        .as_ref()
        .unwrap()
        .write_all(format!("{message}\n").as_bytes())
        .unwrap();
    let cli = cli.wait_with_output().unwrap();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert!(cli.stdout.len() > 2, "pipit chat replied nothing");
    for link in Link::BOTH {
        let exe = compile("chat", link);
        let out = run_program(&exe, &[os(&model), os(&bare), os(message), os(n)]);
        assert!(String::from_utf8_lossy(&out.stderr).contains("all checks passed"));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&cli.stdout),
            "pipit_chat_render + pipit_generate ({}) and pipit chat --temp 0 differ",
            link.name()
        );
    }
}
