//! Tokenizer against llama.cpp's ids for the two reference models (loaded from the converted
//! `.pipit` files), decoding round trips, streaming UTF-8 reassembly, pathological inputs,
//! and the generated Unicode tables.

#[path = "support/json.rs"]
mod json;

use json::Json;
use pipit::tokenizer::{Tokenizer, Utf8Stream};
use pipit_format::PipitFile;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const SMOLLM: &str = "models/SmolLM2-135M-Instruct.pipit";
const GEMMA: &str = "models/gemma-3-270m.pipit";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Loads the tokenizer of a converted model; a missing file fails the test.
fn load(rel: &str) -> Tokenizer {
    let path = root().join(rel);
    assert!(
        path.exists(),
        "{} is missing: run tools/test-models.sh (fetches and converts the reference models)",
        path.display()
    );
    let file = std::fs::File::open(&path).unwrap();
    // SAFETY: the model file is only read, and nothing in this test process writes it
    // while the map is alive.
    let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
    let pf = PipitFile::parse(&map).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Tokenizer::from_metadata(&pf.metadata).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn smollm() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| load(SMOLLM))
}

fn gemma() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| load(GEMMA))
}

fn model(file: &str) -> &'static Tokenizer {
    match file {
        SMOLLM => smollm(),
        GEMMA => gemma(),
        other => panic!("no reference model {other}"),
    }
}

fn encode(t: &Tokenizer, text: &str, add_bos: bool) -> Vec<u32> {
    let mut out = vec![12345];
    t.encode(text, add_bos, &mut out);
    out
}

fn decode(t: &Tokenizer, ids: &[u32]) -> Vec<u8> {
    ids.iter()
        .flat_map(|&id| t.piece(id).iter().copied())
        .collect()
}

fn reference() -> Json {
    Json::load("tokenizer_reference.json")
}

// ---- reference ids ----

fn check_reference(file: &str) {
    let refs = reference();
    let m = refs
        .get("models")
        .arr()
        .iter()
        .find(|m| m.get("file").str() == file)
        .unwrap();
    let t = model(file);
    let cases = m.get("cases").arr();
    assert!(cases.len() >= 7);
    let mut failures = Vec::new();
    for case in cases {
        let text = case.get("text").str();
        let add_bos = match case.get("add_bos") {
            Json::Bool(b) => *b,
            other => panic!("add_bos is not a bool: {other:?}"),
        };
        let want = case.get("ids").ids();
        let got = encode(t, text, add_bos);
        if got != want {
            failures.push(format!("text {text:?}\n  want {want:?}\n  got  {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{}: {} mismatches:\n{}",
        file,
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn smollm_matches_llama_cpp() {
    check_reference(SMOLLM);
}

#[test]
fn gemma_matches_llama_cpp() {
    check_reference(GEMMA);
}

#[test]
fn smollm_model_settings() {
    let t = smollm();
    assert_eq!(t.n_vocab(), 49152);
    assert!(!t.add_bos());
    assert_eq!(t.bos(), Some(1));
    assert_eq!(t.eos(), Some(2));
    assert!(t.is_eog(2));
    assert!(!t.is_eog(1));
    assert_eq!(t.token_text(1), "<|im_start|>");
    assert_eq!(t.piece(1), b"");
    assert_eq!(t.piece(216), b" ");
    assert_eq!(t.piece(198), b"\n");
    assert_eq!(t.token_text(216), "Ġ");
    assert_eq!(t.piece(u32::MAX), b"");
    assert_eq!(t.token_text(u32::MAX), "");
}

#[test]
fn gemma_model_settings() {
    let t = gemma();
    assert_eq!(t.n_vocab(), 262144);
    assert!(t.add_bos());
    assert_eq!(t.bos(), Some(2));
    assert_eq!(t.eos(), Some(1));
    assert!(t.is_eog(1));
    let eot = t.token_id("<end_of_turn>").unwrap();
    assert!(t.is_eog(eot), "<end_of_turn> must end generation");
    assert_eq!(t.piece(2), b"");
    assert_eq!(t.piece(1902), b" world");
    assert_eq!(t.piece(t.token_id("<0x0A>").unwrap()), b"\n");
    assert_eq!(t.piece(138), b"  ");
    assert_eq!(encode(t, "", true), [2]);
    assert_eq!(encode(t, "Hi", true)[0], 2);
}

// ---- special tokens, empty text ----

#[test]
fn empty_text() {
    for t in [smollm(), gemma()] {
        assert_eq!(encode(t, "", false), Vec::<u32>::new());
    }
    assert_eq!(encode(smollm(), "", true), [1]);
}

#[test]
fn only_specials() {
    let t = smollm();
    assert_eq!(
        encode(t, "<|im_start|><|im_end|><|endoftext|>", false),
        [1, 2, 0]
    );
    assert_eq!(encode(t, "<|im_start|><|im_start|>", true), [1, 1, 1]);
    let g = gemma();
    let sot = g.token_id("<start_of_turn>").unwrap();
    let eot = g.token_id("<end_of_turn>").unwrap();
    assert_eq!(encode(g, "<start_of_turn><end_of_turn>", false), [sot, eot]);
    assert_eq!(encode(g, "<bos><eos>", false), [2, 1]);
    // Partial special tokens are text.
    let partial = encode(t, "<|im_start", false);
    assert!(!partial.contains(&1), "{partial:?}");
}

// ---- round trips ----

fn samples() -> Vec<String> {
    let mut v: Vec<String> = [
        "",
        " ",
        "a",
        "Hello, world!",
        "  two leading, two trailing  ",
        "tabs\tand\nnewlines\r\n\r\nand\u{b}vertical",
        "numbers 0 12 345 6789 3.14159 -1e-5 1_000_000",
        "ünïcödé façade naïve Ærøskøbing",
        "中文文本，标点。日本語のテキスト、カタカナ。한국어 텍스트",
        "emoji 🦀🚀👍🏽👨‍👩‍👧‍👦 flags 🇫🇷🇯🇵",
        "Ελληνικά русский עברית العربية हिन्दी ไทย",
        "combining e\u{301} a\u{308} and zero\u{200b}width and nbsp\u{a0}here",
        "code: fn main() { println!(\"{}\", x[i] + y->z); } // done",
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
        "<start_of_turn>user\nhi<end_of_turn>\n",
        "<table><tr><td>html</td></tr></table>",
        "\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n",
        "x                                                      y",
        "'s 're 've 'm 'll 'd 'S 'RE don't I'm",
        "\u{feff}BOM and \u{fffd} replacement and \u{10ffff} max and \u{e000} private",
        "control chars \u{1}\u{2}\u{7f}\u{80}\u{9f}",
        "superscripts x² y³ ½ Ⅻ ٣",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut state = 0x9E3779B97F4A7C15u64;
    let alphabet: Vec<char> = "ab cZ9 \t\n.,'!é你🦀\u{301}<|>_-".chars().collect();
    for len in [1, 2, 3, 7, 31, 64, 200] {
        for _ in 0..10 {
            let mut s = String::new();
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                s.push(alphabet[(state % alphabet.len() as u64) as usize]);
            }
            v.push(s);
        }
    }
    v
}

/// Whether `text` contains a control token, which decodes to nothing.
fn has_control(t: &Tokenizer, ids: &[u32]) -> bool {
    ids.iter()
        .any(|&id| t.token_type(id) == Some(pipit::tokenizer::token_type::CONTROL))
}

#[test]
fn round_trip_smollm() {
    round_trip(smollm());
}

#[test]
fn round_trip_gemma() {
    round_trip(gemma());
}

fn round_trip(t: &Tokenizer) {
    for text in samples() {
        let ids = encode(t, &text, false);
        if has_control(t, &ids) {
            continue;
        }
        assert_eq!(
            String::from_utf8_lossy(&decode(t, &ids)),
            text,
            "ids {ids:?}"
        );
    }
    let ids = encode(t, "<|im_start|>user\nhi<|im_end|>", false);
    let ctl = if has_control(t, &ids) {
        "user\nhi"
    } else {
        "<|im_start|>user\nhi<|im_end|>"
    };
    assert_eq!(String::from_utf8_lossy(&decode(t, &ids)), ctl);
}

#[test]
fn streaming_decode_reassembles_characters() {
    for t in [smollm(), gemma()] {
        for text in samples() {
            let ids = encode(t, &text, false);
            let mut stream = Utf8Stream::new();
            let mut out = Vec::new();
            for &id in &ids {
                stream.push(t.piece(id), |b| {
                    assert!(
                        std::str::from_utf8(b).is_ok(),
                        "emitted invalid UTF-8 {b:?}"
                    );
                    out.extend_from_slice(b);
                });
            }
            stream.finish(|b| out.extend_from_slice(b));
            assert_eq!(out, decode(t, &ids), "{text:?}");
        }
    }
}

// ---- pathological and large inputs ----

fn timed(t: &Tokenizer, text: &str) -> (Vec<u32>, Duration) {
    let start = Instant::now();
    let ids = encode(t, text, false);
    (ids, start.elapsed())
}

/// Far above what an optimized build needs (tens of ms), so the test fails only on
/// quadratic behaviour, even in an unoptimized build.
const SLOW: Duration = Duration::from_secs(5);

#[test]
fn pathological_inputs_finish_fast() {
    let inputs = [
        " ".repeat(100_000),
        "a".repeat(100_000),
        "\n".repeat(100_000),
        "1".repeat(100_000),
        "!".repeat(100_000),
        "你".repeat(50_000),
        "🦀".repeat(30_000),
        "<|im_start|".repeat(10_000),
        "<start_of_turn".repeat(10_000),
        "\t \n".repeat(40_000),
    ];
    for t in [smollm(), gemma()] {
        for text in &inputs {
            let (ids, took) = timed(t, text);
            assert!(
                took < SLOW,
                "{} bytes of {:?}... took {took:?}",
                text.len(),
                &text[..4]
            );
            assert!(!ids.is_empty());
            assert_eq!(decode(t, &ids), text.as_bytes());
        }
    }
}

#[test]
fn large_text_is_fast() {
    let base = samples().join(" ");
    let mut text = String::new();
    while text.len() < 100_000 {
        text.push_str(&base);
    }
    for t in [smollm(), gemma()] {
        let (ids, took) = timed(t, &text);
        assert!(took < SLOW, "100 KB took {took:?}");
        assert_eq!(
            String::from_utf8_lossy(&decode(t, &ids)).len(),
            decode(t, &ids).len()
        );
    }
}

// ---- Utf8Stream ----

fn stream_pieces(pieces: &[&[u8]]) -> Vec<u8> {
    let mut s = Utf8Stream::new();
    let mut out = Vec::new();
    for p in pieces {
        s.push(p, |b| {
            assert!(std::str::from_utf8(b).is_ok());
            assert!(!b.is_empty());
            out.extend_from_slice(b);
        });
    }
    s.finish(|b| out.extend_from_slice(b));
    assert!(!s.has_pending());
    out
}

#[test]
fn utf8_stream_split_characters() {
    for text in ["é", "€", "🦀", "aé€🦀b", "你好"] {
        let b = text.as_bytes();
        for cut in 0..=b.len() {
            assert_eq!(
                stream_pieces(&[&b[..cut], &b[cut..]]),
                b,
                "{text:?} cut at {cut}"
            );
        }
        let singles: Vec<&[u8]> = b.chunks(1).collect();
        assert_eq!(stream_pieces(&singles), b);
    }
    assert_eq!(stream_pieces(&[]), b"");
    assert_eq!(stream_pieces(&[b"", b"", b""]), b"");
    let crab = "🦀".as_bytes();
    assert_eq!(
        stream_pieces(&[&crab[..1], b"", &crab[1..2], b"", &crab[2..]]),
        crab
    );
}

#[test]
fn utf8_stream_holds_back_without_emitting() {
    let mut s = Utf8Stream::new();
    let mut n = 0;
    s.push(&"€".as_bytes()[..2], |_| n += 1);
    assert_eq!(n, 0);
    assert!(s.has_pending());
    let mut out = Vec::new();
    s.push(&"€".as_bytes()[2..], |b| out.extend_from_slice(b));
    assert_eq!(out, "€".as_bytes());
}

#[test]
fn utf8_stream_invalid_bytes() {
    let fffd = "\u{FFFD}".as_bytes();
    assert_eq!(stream_pieces(&[b"\xff"]), fffd);
    assert_eq!(stream_pieces(&[b"a\x80b"]), "a\u{FFFD}b".as_bytes());
    // Truncated character at the end of the stream.
    assert_eq!(stream_pieces(&[b"a\xe2\x82"]), "a\u{FFFD}".as_bytes());
    // Truncated character followed by ASCII in the next piece.
    assert_eq!(stream_pieces(&[b"\xe2\x82", b"x"]), "\u{FFFD}x".as_bytes());
    assert_eq!(
        stream_pieces(&[b"\xf0", b"\x9f", b"A"]),
        "\u{FFFD}A".as_bytes()
    );
    // Overlong encoding and surrogates.
    assert_eq!(
        stream_pieces(&[b"\xc0", b"\xaf"]),
        String::from_utf8_lossy(b"\xc0\xaf").as_bytes()
    );
    assert_eq!(
        stream_pieces(&[b"\xed", b"\xa0\x80"]),
        String::from_utf8_lossy(b"\xed\xa0\x80").as_bytes()
    );
}

#[test]
fn utf8_stream_equals_lossy_decoding() {
    let mut state = 88172645463325252u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let atoms: [&[u8]; 12] = [
        b"a",
        "é".as_bytes(),
        "€".as_bytes(),
        "🦀".as_bytes(),
        b"\x80",
        b"\xff",
        b"\xe2",
        b"\xf0\x9f",
        b"\xc3",
        b"\xed\xa0",
        b"\xf4\x90",
        b" ",
    ];
    for _ in 0..3000 {
        let mut bytes = Vec::new();
        for _ in 0..(next() % 12) {
            bytes.extend_from_slice(atoms[(next() % atoms.len() as u64) as usize]);
        }
        let mut pieces = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let n = ((next() % 5) as usize).min(bytes.len() - at);
            pieces.push(&bytes[at..at + n]);
            at += n;
        }
        assert_eq!(
            stream_pieces(&pieces),
            String::from_utf8_lossy(&bytes).as_bytes(),
            "{bytes:x?} as {pieces:x?}"
        );
    }
}

// ---- generated tables ----

#[test]
fn unicode_tables_match_generator() {
    let script = root().join("tools/gen_unicode_tables.py");
    let out = match std::process::Command::new("python3").arg(&script).output() {
        Ok(out) => out,
        Err(e) => {
            eprintln!("python3 not available ({e}); generator check not run");
            return;
        }
    };
    assert!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let checked_in =
        std::fs::read_to_string(root().join("src/tokenizer/unicode_tables.rs")).unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout) == checked_in,
        "src/tokenizer/unicode_tables.rs differs from the output of {}: regenerate it with \
         `python3 tools/gen_unicode_tables.py src/tokenizer/unicode_tables.rs`",
        script.display()
    );
    assert_eq!(pipit::tokenizer::UNICODE_VERSION, "15.1.0");
}

#[test]
fn tokenizer_is_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<Tokenizer>();
    check::<Utf8Stream>();
}
