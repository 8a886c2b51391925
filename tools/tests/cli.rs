//! The pipit-convert binary: arguments, exit codes, stdout table, stderr progress and errors.

mod common;

use common::*;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pipit-convert"))
}

#[test]
fn help_documents_the_options() {
    let out = bin().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for want in [
        "INPUT",
        "--output",
        "--quant",
        "keep",
        "q4_0",
        "q8",
        "rope_pairs = adjacent",
    ] {
        assert!(text.contains(want), "--help lacks {want:?}:\n{text}");
    }
}

#[test]
fn converts_and_reports() {
    let dir = TempDir::new("cli");
    tiny_llama_gguf().write(&dir.join("m.gguf"));
    let out = bin()
        .arg(dir.join("m.gguf"))
        .arg("-o")
        .arg(dir.join("m.pipit"))
        .args(["--quant", "q4_0"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    // 21 tensors (embedding, 2 x 9 per layer, output norm and head): one progress line each.
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with('[')).count(),
        21,
        "{stderr}"
    );
    assert!(
        stderr.contains("blk.0.ffn_down") && stderr.contains("-> Q4_0"),
        "{stderr}"
    );
    assert!(
        stdout.contains("rel RMSE") && stdout.contains("blk.1.attn_k"),
        "{stdout}"
    );
    let size = std::fs::metadata(dir.join("m.pipit")).unwrap().len();
    assert!(
        stdout.contains(&format!("output size: {size} bytes")),
        "{stdout}"
    );
}

#[test]
fn errors_exit_nonzero_with_a_message() {
    let dir = TempDir::new("cli-err");
    let mut g = tiny_llama_gguf();
    g.kv("general.architecture", s("mamba"));
    g.write(&dir.join("m.gguf"));
    let out = bin()
        .arg(dir.join("m.gguf"))
        .arg("-o")
        .arg(dir.join("m.pipit"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("pipit-convert: error: unknown architecture \"mamba\""),
        "{err}"
    );
    assert!(!dir.join("m.pipit").exists());

    std::fs::write(dir.join("bad.gguf"), b"GGUF\x03\0\0\0").unwrap();
    let out = bin()
        .arg(dir.join("bad.gguf"))
        .arg("-o")
        .arg(dir.join("m.pipit"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("GGUF file truncated: tensor count at byte 8"));

    let out = bin().arg(dir.join("m.gguf")).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "missing -o is a usage error");
    let out = bin()
        .arg(dir.join("m.gguf"))
        .args(["-o", "x.pipit", "--quant", "q3"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "unknown --quant value is a usage error"
    );
}

/// Issue 13 row 1: an output path that exists and is not a regular file (a device reached
/// through a symlink, a FIFO, a directory) is refused before any work and left as it was;
/// the final rename would otherwise replace it with a regular file.
#[test]
fn refuses_an_output_that_is_not_a_regular_file() {
    use std::os::unix::fs::FileTypeExt;
    let dir = TempDir::new("cli-nonregular");
    tiny_llama_gguf().write(&dir.join("m.gguf"));
    // A symlink to /dev/null: were it replaced, only the link in the temp dir would go.
    std::os::unix::fs::symlink("/dev/null", dir.join("null")).unwrap();
    let fifo = dir.join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    std::fs::create_dir(dir.join("sub")).unwrap();
    for (name, kind) in [
        ("null", "a character device"),
        ("fifo", "a FIFO"),
        ("sub", "a directory"),
    ] {
        let out = bin()
            .arg(dir.join("m.gguf"))
            .arg("-o")
            .arg(dir.join(name))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{name}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(
            err.contains(kind) && err.contains("not a regular file"),
            "{name}: {err}"
        );
    }
    let null = std::fs::metadata(dir.join("null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert!(std::fs::symlink_metadata(dir.join("null"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    assert!(std::fs::metadata(dir.join("sub")).unwrap().is_dir());
    // The library writer refuses too (the check also runs just before its rename).
    let e = pipit_format::Writer::new()
        .write_file(dir.join("fifo"))
        .unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
}
