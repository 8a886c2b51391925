//! Building and running the C test programs against the libraries cargo just built.
//!
//! `cargo test` builds `libpipit.so` and `libpipit.a` next to the test binaries
//! (target/<profile>/deps); every program is linked twice, once against each.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, PoisonError};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where the test programs and files go.
pub fn tmp_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ffi");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// How a program links pipit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Shared,
    Static,
}

impl Link {
    pub const BOTH: [Link; 2] = [Link::Shared, Link::Static];

    pub fn name(self) -> &'static str {
        match self {
            Link::Shared => "shared",
            Link::Static => "static",
        }
    }
}

/// The directory holding the libraries built with these tests.
pub fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .expect("test executable directory")
        .to_path_buf();
    for lib in ["libpipit.so", "libpipit.a"] {
        assert!(
            dir.join(lib).is_file(),
            "{} is missing: cargo test should build the cdylib and staticlib crate types of pipit",
            dir.join(lib).display()
        );
    }
    dir
}

/// System libraries the static library needs (as `rustc --print native-static-libs` lists).
pub const NATIVE_STATIC_LIBS: &[&str] = &[
    "-lgcc_s",
    "-lutil",
    "-lrt",
    "-lpthread",
    "-lm",
    "-ldl",
    "-lc",
];

/// Runs a command, panicking with its output unless it succeeds.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Compiles tests/c/`name`.c with the system `cc`, warnings as errors, linked against the
/// library in `lib_dir` as `link` says; once per test process (`tag` names the library).
pub fn compile_in(name: &str, link: Link, lib_dir: &Path, tag: &str) -> PathBuf {
    static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    let key = format!("{name}-{tag}-{}", link.name());
    if let Some(exe) = built.get(&key) {
        return exe.clone();
    }
    let src = root().join("tests/c").join(format!("{name}.c"));
    let exe = tmp_dir().join(format!("{name}-{tag}-{}", link.name()));
    let mut cmd = Command::new("cc");
    cmd.args([
        "-std=c11",
        "-O1",
        "-g",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-pedantic",
        "-pthread",
    ])
    .arg("-I")
    .arg(root().join("include"))
    .arg(&src)
    .arg("-o")
    .arg(&exe);
    match link {
        Link::Shared => {
            cmd.arg("-L")
                .arg(lib_dir)
                .arg("-lpipit")
                .arg(format!("-Wl,-rpath,{}", lib_dir.display()));
        }
        Link::Static => {
            cmd.arg(lib_dir.join("libpipit.a")).args(NATIVE_STATIC_LIBS);
        }
    }
    cmd.arg("-lm");
    run_ok(&mut cmd);
    built.insert(key, exe.clone());
    exe
}

/// [`compile_in`] against the libraries built with these tests.
pub fn compile(name: &str, link: Link) -> PathBuf {
    compile_in(name, link, &lib_dir(), "main")
}

/// Checks that a program links the library the way it was meant to: the shared build needs
/// libpipit.so at run time, the static one does not.
pub fn assert_linkage(exe: &Path, link: Link) {
    let out = run_ok(Command::new("readelf").arg("-d").arg(exe));
    let dynamic = String::from_utf8_lossy(&out.stdout);
    let needs_so = dynamic.contains("[libpipit.so]");
    assert_eq!(
        needs_so,
        link == Link::Shared,
        "{}: NEEDED entries:\n{dynamic}",
        exe.display()
    );
}

/// Runs a test program; panics with its output unless it exits 0. The shared library is
/// found through the program's rpath only (cargo's LD_LIBRARY_PATH would take precedence).
pub fn run_program(exe: &Path, args: &[&std::ffi::OsStr]) -> Output {
    run_ok(Command::new(exe).args(args).env_remove("LD_LIBRARY_PATH"))
}

/// The real SmolLM2 model, converted by tools/test-models.sh. Missing is a failure.
pub fn real_model() -> PathBuf {
    let path = root().join("models/SmolLM2-135M-Instruct.pipit");
    assert!(
        path.is_file(),
        "{} is missing: run tools/test-models.sh (it fetches and converts the test models)",
        path.display()
    );
    path
}
