//! `pipit chat` driven through a pipe: one message per line on stdin, replies on stdout,
//! statistics on stderr. On the real SmolLM2 model (missing is a failure) and on the tiny
//! synthetic model for the paths that need no sensible text.

mod clib;
mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clib::{real_model, run_ok, tmp_dir};

fn pipit() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pipit"))
}

/// Runs `pipit chat -m model args...` with `input` piped to stdin.
fn chat(model: &Path, args: &[&str], input: &str) -> Output {
    let mut child = pipit()
        .arg("chat")
        .arg("-m")
        .arg(model)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The program may exit before reading everything (an error at start-up).
    let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    child.wait_with_output().unwrap()
}

fn chat_ok(model: &Path, args: &[&str], input: &str) -> (String, String) {
    let out = chat(model, args, input);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "pipit chat failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

/// One statistics line per reply: (prompt tokens, reply tokens, context after the reply).
fn stats(stderr: &str) -> Vec<(usize, usize, usize)> {
    let num = |s: &str, key: &str| -> usize {
        let at = s.find(key).unwrap_or_else(|| panic!("no {key:?} in {s:?}")) + key.len();
        s[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap()
    };
    stderr
        .lines()
        .filter(|l| l.starts_with("[prompt "))
        .map(|l| (num(l, "[prompt "), num(l, "reply "), num(l, "context ")))
        .collect()
}

const SYSTEM: &str = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

#[test]
fn piped_conversation_keeps_earlier_turns_in_the_cache() {
    let model = real_model();
    let (stdout, stderr) = chat_ok(
        &model,
        &["--temp", "0", "-n", "24"],
        "What is the capital of France?\n\nName a color.\n/quit\nnot sent\n",
    );
    let s = stats(&stderr);
    assert_eq!(s.len(), 2, "two messages, two replies:\n{stderr}");
    // The first reply is what `pipit run` writes for the prompt the template renders.
    let rendered = format!(
        "<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    );
    let run = run_ok(
        pipit()
            .args(["run", "-m"])
            .arg(&model)
            .args(["--temp", "0", "-n", "24", "-p", &rendered]),
    );
    let first = String::from_utf8(run.stdout).unwrap();
    assert!(
        stdout.starts_with(&first),
        "chat wrote\n{stdout}\nrun wrote\n{first}"
    );
    // The second turn evaluates only its own tokens: the context grows by the end of the
    // first reply (`<|im_end|>\n`, 2 tokens), the new turn and its reply.
    let ((p1, r1, c1), (p2, r2, c2)) = (s[0], s[1]);
    assert_eq!(c1, p1 + r1);
    assert_eq!(c2, c1 + 2 + p2 + r2, "{stderr}");
    assert!(p2 < p1, "{stderr}");
    assert!(stderr.contains("tok/s"));
    assert!(!stdout.contains("not sent"));
}

#[test]
fn stop_strings_end_a_reply_and_the_chat_goes_on() {
    let model = real_model();
    let input = "What is the capital of France?\nName a color.\n";
    let (full, _) = chat_ok(&model, &["--temp", "0", "-n", "24"], input);
    let first = full.lines().next().unwrap();
    // Four ASCII bytes from the middle of the first reply, found nowhere before.
    let at = (first.len() / 2..first.len() - 4)
        .find(|&i| {
            first.is_char_boundary(i)
                && first.is_char_boundary(i + 4)
                && first[i..i + 4].is_ascii()
                && first.find(&first[i..i + 4]) == Some(i)
        })
        .expect("a stop string in the first reply");
    let stop = &first[at..at + 4];
    let args = [
        "--temp",
        "0",
        "-n",
        "24",
        "--stop",
        stop,
        "--stop",
        "never said",
    ];
    let (stdout, stderr) = chat_ok(&model, &args, input);
    // The first reply stops before the stop string; its tokens stay in the context (the
    // reply's token count covers them) and the second turn follows.
    assert_eq!(stdout.lines().next().unwrap(), &first[..at], "{stdout}");
    let s = stats(&stderr);
    assert_eq!(s.len(), 2, "{stderr}");
    assert_eq!(s[0].2, s[0].0 + s[0].1);
    assert!(s[0].1 >= 1);
}

#[test]
fn reset_starts_the_conversation_over() {
    let model = real_model();
    let (stdout, stderr) = chat_ok(
        &model,
        &["--temp", "0", "-n", "12"],
        "Say hi.\n/reset\nSay hi.\n",
    );
    let s = stats(&stderr);
    assert_eq!(s.len(), 2, "{stderr}");
    assert_eq!(
        s[0], s[1],
        "the same message after /reset is the same first turn"
    );
    assert!(stderr.contains("[conversation cleared]"));
    let replies: Vec<&str> = stdout.lines().collect();
    assert!(replies.len() >= 2 && stdout.len() % 2 == 0, "{stdout:?}");
    let (a, b) = stdout.split_at(stdout.len() / 2);
    assert_eq!(a, b, "the same reply twice");
}

#[test]
fn a_full_context_drops_the_oldest_turns_or_resets() {
    let model = real_model();
    let input =
        "Tell me about cats.\nTell me about dogs.\nTell me about birds.\nTell me about fish.\n";
    let (_, stderr) = chat_ok(&model, &["--temp", "0", "-n", "40", "--ctx", "160"], input);
    let s = stats(&stderr);
    assert_eq!(s.len(), 4, "every message is answered:\n{stderr}");
    assert!(
        stderr.contains(
            "context full (160 tokens): dropped the 1 oldest turn(s), re-evaluating 1 kept"
        ),
        "{stderr}"
    );
    assert!(s.iter().all(|&(_, _, c)| c <= 160), "{stderr}");
    // After a drop, the prompt holds the system message and the kept turn again
    // (re-evaluated), so it is longer than the first prompt.
    let dropped_at = stderr
        .lines()
        .filter(|l| l.starts_with("[prompt ") || l.contains("context full"))
        .position(|l| l.contains("context full"))
        .unwrap();
    assert!(s[dropped_at].0 > s[0].0, "{stderr}");
    assert_eq!(
        s[dropped_at].2,
        s[dropped_at].0 + s[dropped_at].1,
        "{stderr}"
    );

    let (_, stderr) = chat_ok(
        &model,
        &[
            "--temp",
            "0",
            "-n",
            "40",
            "--ctx",
            "160",
            "--on-full",
            "reset",
        ],
        input,
    );
    let s = stats(&stderr);
    assert_eq!(s.len(), 4, "{stderr}");
    assert!(
        stderr.contains("context full (160 tokens): conversation reset"),
        "{stderr}"
    );
    // A reset turn is a first turn again: the system message and the message, nothing else.
    let reset_at = stderr
        .lines()
        .filter(|l| l.starts_with("[prompt ") || l.contains("context full"))
        .position(|l| l.contains("context full"))
        .unwrap();
    assert_eq!(s[reset_at].2, s[reset_at].0 + s[reset_at].1);
}

#[test]
fn ctrl_c_stops_the_reply_not_the_program() {
    let model = real_model();
    let mut child = pipit()
        .args(["chat", "-m"])
        .arg(&model)
        // Bounded replies: after an early stop the second reply must not run into a full
        // context, whatever point the first one was stopped at.
        .args(["--temp", "0", "-n", "200"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"Write a long story about a dragon and a knight.\n")
        .unwrap();
    stdin.flush().unwrap();
    // Collect stdout on a thread; interrupt once the reply has started.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = child.stdout.take().unwrap();
    let reader = {
        let seen = Arc::clone(&seen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            while let Ok(n @ 1..) = stdout.read(&mut buf) {
                seen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let t0 = Instant::now();
    while seen.lock().unwrap().len() < 20 {
        assert!(t0.elapsed() < Duration::from_secs(300), "no reply started");
        std::thread::sleep(Duration::from_millis(20));
    }
    run_ok(Command::new("kill").args(["-INT", &child.id().to_string()]));
    // The program goes on: a second message is answered, then /quit ends it cleanly.
    stdin.write_all(b"Say hi.\n/quit\n").unwrap();
    drop(stdin);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    assert!(status.success(), "{status}\n{stderr}");
    let s = stats(&stderr);
    assert_eq!(s.len(), 2, "{stderr}");
    assert!(
        stderr
            .lines()
            .find(|l| l.starts_with("[prompt "))
            .unwrap()
            .contains("stopped"),
        "{stderr}"
    );
}

/// The tiny model, with or without its chat template.
fn tiny(with_template: bool) -> PathBuf {
    let t = common::Tiny::llama(pipit_format::DType::Q8_0, 3);
    let mut meta = t.metadata();
    if !with_template {
        meta.retain(|(k, _)| k != "tokenizer.chat_template");
    }
    let path = tmp_dir().join(format!("chat-tiny-{with_template}.pipit"));
    std::fs::write(&path, common::assemble(&meta, &t.tensors())).unwrap();
    path
}

#[test]
fn a_model_without_a_template_needs_template_flag() {
    let model = tiny(false);
    let out = chat(&model, &["--temp", "0", "-n", "4"], "hello\n");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--template"));
    let (_, stderr) = chat_ok(
        &model,
        &["--temp", "0", "-n", "4", "--template", "chatml"],
        "hello\n",
    );
    assert_eq!(stats(&stderr).len(), 1, "{stderr}");
}

#[test]
fn chat_on_the_synthetic_model_survives_odd_input() {
    let model = tiny(true);
    let long = "the cat ".repeat(200);
    let input = format!("hello\n   \n\u{e9}t\u{e9} \u{1F600}\n{long}\n/reset\nhello\n");
    let (_, stderr) = chat_ok(&model, &["--temp", "0", "-n", "8", "--ctx", "128"], &input);
    assert!(
        stderr.contains("not sent"),
        "a message longer than the context is refused:\n{stderr}"
    );
    assert_eq!(stats(&stderr).len(), 3, "{stderr}");
}

/// Phi-3's and Mistral's templates, detected from the markers of their Jinja text.
#[test]
fn phi3_and_mistral_templates() {
    use pipit::chat::Template;
    let phi3 = "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}";
    let t = Template::detect(phi3).unwrap();
    assert_eq!(t, Template::Phi3);
    assert_eq!(
        t.render(Some("Be brief."), &[("Hi".into(), "Hello!".into())], "Bye"),
        "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n<|user|>\nBye<|end|>\n<|assistant|>\n"
    );
    let mistral = "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% endif %}{% endfor %}";
    let t = Template::detect(mistral).unwrap();
    assert_eq!(t, Template::Mistral);
    assert_eq!(
        t.render(Some("Be brief."), &[("Hi".into(), "Hello!".into())], "Bye"),
        "[INST] Be brief.\n\nHi [/INST]Hello!</s>[INST] Bye [/INST]"
    );
}
