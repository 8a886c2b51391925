//! Unit tests of the tokenizer on small synthetic vocabularies.

use super::*;
use pipit_format::Value;

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Owned [`TokenizerParts`], for tests to modify.
struct Parts {
    kind: TokenizerKind,
    pre: String,
    tokens: Vec<String>,
    scores: Vec<f32>,
    token_types: Vec<u8>,
    merges: Vec<String>,
    bos: Option<u32>,
    eos: Option<u32>,
    unk: Option<u32>,
    eot_ids: Vec<u32>,
    add_bos: bool,
    add_space_prefix: bool,
}

impl Parts {
    fn build(&self) -> Result<Tokenizer> {
        Tokenizer::from_parts(&TokenizerParts {
            kind: self.kind,
            pre: &self.pre,
            tokens: &self.tokens,
            scores: &self.scores,
            token_types: &self.token_types,
            merges: &self.merges,
            bos: self.bos,
            eos: self.eos,
            unk: self.unk,
            eot_ids: &self.eot_ids,
            add_bos: self.add_bos,
            add_space_prefix: self.add_space_prefix,
        })
    }
}

/// A byte-level BPE vocabulary: the 256 byte symbols, then `extra` tokens.
fn bpe_parts(extra: &[(&str, u8)], merges: &[&str]) -> Parts {
    let mut tokens: Vec<String> = (0..=255u8)
        .map(|b| unicode::byte_to_char(b).to_string())
        .collect();
    let mut types = vec![token_type::NORMAL; 256];
    for &(t, ty) in extra {
        tokens.push(t.to_string());
        types.push(ty);
    }
    Parts {
        kind: TokenizerKind::Bpe,
        pre: "smollm".into(),
        tokens,
        scores: Vec::new(),
        token_types: types,
        merges: strings(merges),
        bos: None,
        eos: None,
        unk: None,
        eot_ids: Vec::new(),
        add_bos: false,
        add_space_prefix: false,
    }
}

fn enc(t: &Tokenizer, text: &str) -> Vec<u32> {
    let mut out = Vec::new();
    t.encode(text, false, &mut out);
    out
}

fn texts(t: &Tokenizer, ids: &[u32]) -> Vec<String> {
    ids.iter().map(|&id| t.token_text(id).to_string()).collect()
}

#[test]
fn bpe_merges_by_rank() {
    // ids: 256 "ab", 257 "bc", 258 "abc", 259 "Ġa", 260 "<s>"
    let t = bpe_parts(
        &[("ab", 1), ("bc", 1), ("abc", 1), ("Ġa", 1), ("<s>", 3)],
        &["b c", "a b", "a bc", "Ġ a"],
    )
    .build()
    .unwrap();
    // "b c" has the better rank: a + bc -> abc.
    assert_eq!(texts(&t, &enc(&t, "abc")), ["abc"]);
    assert_eq!(texts(&t, &enc(&t, "abab")), ["ab", "ab"]);
    // Ties on rank: leftmost first ("bcbc": bc bc).
    assert_eq!(texts(&t, &enc(&t, "bcbc")), ["bc", "bc"]);
    // " abc": "b c" (rank 0) first, then "a bc" (rank 2) before "Ġ a" (rank 3).
    assert_eq!(texts(&t, &enc(&t, "a abc")), ["a", "Ġ", "abc"]);
    assert_eq!(texts(&t, &enc(&t, "a ab")), ["a", "Ġ", "ab"]);
    assert_eq!(texts(&t, &enc(&t, "a ac")), ["a", "Ġa", "c"]);
    assert_eq!(texts(&t, &enc(&t, "x<s>abc")), ["x", "<s>", "abc"]);
    // The special token decodes to nothing; every byte decodes to itself.
    assert_eq!(t.piece(260), b"");
    assert_eq!(t.piece(259), b" a");
    for b in 0..=255u8 {
        assert_eq!(t.piece(u32::from(b)), [b]);
    }
    // Digits one by one (smollm).
    assert_eq!(texts(&t, &enc(&t, "123")), ["1", "2", "3"]);
}

#[test]
fn bpe_merge_through_non_token_text() {
    // "x y" makes "xy", which is no token, but "xy z" makes the token "xyz".
    let t = bpe_parts(&[("xyz", 1)], &["x y", "xy z"]).build().unwrap();
    assert_eq!(texts(&t, &enc(&t, "xyz")), ["xyz"]);
    // A final symbol that is no token falls back to single-byte tokens of its text.
    assert_eq!(texts(&t, &enc(&t, "xy")), ["x", "y"]);
}

#[test]
fn bpe_long_word_is_fast() {
    let t = bpe_parts(
        &[("aa", 1), ("aaaa", 1), ("ĠĠ", 1)],
        &["a a", "aa aa", "Ġ Ġ"],
    )
    .build()
    .unwrap();
    let text = "a".repeat(200_001);
    let start = std::time::Instant::now();
    let ids = enc(&t, &text);
    assert!(start.elapsed().as_secs() < 5);
    assert_eq!(ids.len(), 50_001);
    assert_eq!(texts(&t, &enc(&t, "    ")), ["ĠĠ", "ĠĠ"]);
    let spaces = " ".repeat(100_000);
    assert_eq!(enc(&t, &spaces).len(), 50_000);
}

#[test]
fn bpe_add_bos() {
    let mut p = bpe_parts(&[("<s>", 3)], &[]);
    p.bos = Some(256);
    p.add_bos = true;
    let t = p.build().unwrap();
    assert!(t.add_bos());
    let mut out = vec![7];
    t.encode("a", true, &mut out);
    assert_eq!(out, [256, u32::from(b'a')]);
    t.encode("a", false, &mut out);
    assert_eq!(out, [u32::from(b'a')]);
    t.encode("", true, &mut out);
    assert_eq!(out, [256]);
}

fn spm_parts(vocab: &[(&str, f32, u8)]) -> Parts {
    Parts {
        kind: TokenizerKind::Spm,
        pre: "default".into(),
        tokens: vocab.iter().map(|v| v.0.to_string()).collect(),
        scores: vocab.iter().map(|v| v.1).collect(),
        token_types: vocab.iter().map(|v| v.2).collect(),
        merges: Vec::new(),
        bos: Some(1),
        eos: Some(2),
        unk: Some(0),
        eot_ids: vec![3],
        add_bos: true,
        add_space_prefix: false,
    }
}

fn spm_vocab() -> Vec<(&'static str, f32, u8)> {
    let mut v = vec![
        ("<unk>", 0.0, token_type::CONTROL),
        ("<s>", 0.0, token_type::CONTROL),
        ("</s>", 0.0, token_type::CONTROL),
        ("<eot>", 0.0, token_type::CONTROL),
        ("\n", 0.0, token_type::USER_DEFINED),
        ("▁", -1.0, token_type::NORMAL),
        ("a", -1.0, token_type::NORMAL),
        ("b", -1.0, token_type::NORMAL),
        ("c", -1.0, token_type::NORMAL),
        ("ab", -2.0, token_type::NORMAL),
        ("bc", -1.5, token_type::NORMAL),
        ("abc", -3.0, token_type::NORMAL),
        ("▁a", -0.5, token_type::NORMAL),
        ("▁▁", -0.5, token_type::NORMAL),
    ];
    v.push(("<0xC3>", 0.0, token_type::BYTE));
    v.push(("<0xA9>", 0.0, token_type::BYTE));
    v.push(("<0x20>", 0.0, token_type::BYTE));
    v
}

#[test]
fn spm_merges_by_score() {
    let t = spm_parts(&spm_vocab()).build().unwrap();
    // "bc" (-1.5) beats "ab" (-2), then "a"+"bc" -> "abc".
    assert_eq!(texts(&t, &enc(&t, "abc")), ["abc"]);
    assert_eq!(texts(&t, &enc(&t, "ab")), ["ab"]);
    assert_eq!(texts(&t, &enc(&t, " a b")), ["▁a", "▁", "b"]);
    // "é" is no token: bytes.
    assert_eq!(texts(&t, &enc(&t, "aé")), ["a", "<0xC3>", "<0xA9>"]);
    // A character without byte tokens falls back to <unk>.
    assert_eq!(texts(&t, &enc(&t, "d")), ["<unk>"]);
    // User-defined and control tokens in the text.
    assert_eq!(texts(&t, &enc(&t, "a\n<s>b")), ["a", "\n", "<s>", "b"]);
    let mut out = Vec::new();
    t.encode("a", true, &mut out);
    assert_eq!(out, [1, 6]);
    assert!(t.is_eog(2) && t.is_eog(3) && !t.is_eog(1));
}

#[test]
fn spm_pieces() {
    let t = spm_parts(&spm_vocab()).build().unwrap();
    let id = |s: &str| t.token_id(s).unwrap();
    assert_eq!(t.piece(id("▁a")), b" a");
    assert_eq!(t.piece(id("<0xC3>")), [0xC3]);
    assert_eq!(t.piece(id("\n")), b"\n");
    assert_eq!(t.piece(id("<s>")), b"");
    let ids = enc(&t, "ab  cé\n");
    let bytes: Vec<u8> = ids.iter().flat_map(|&i| t.piece(i).to_vec()).collect();
    assert_eq!(bytes, "ab  cé\n".as_bytes());
}

#[test]
fn spm_space_prefix() {
    let mut p = spm_parts(&spm_vocab());
    p.add_space_prefix = true;
    let t = p.build().unwrap();
    assert_eq!(texts(&t, &enc(&t, "a")), ["▁a"]);
    assert_eq!(texts(&t, &enc(&t, "a<s>a")), ["▁a", "<s>", "▁a"]);
    assert_eq!(texts(&t, &enc(&t, "a\na")), ["▁a", "\n", "▁a"]);
}

#[test]
fn bad_parts_are_errors() {
    let base = || spm_parts(&spm_vocab());
    let mut p = base();
    p.scores.pop();
    assert!(matches!(
        p.build(),
        Err(Error::Format(FormatError::LengthMismatch { .. }))
    ));
    let mut p = base();
    p.token_types.push(1);
    assert!(matches!(
        p.build(),
        Err(Error::Format(FormatError::LengthMismatch { .. }))
    ));
    let mut p = base();
    p.token_types[5] = 9;
    let e = p.build().unwrap_err().to_string();
    assert!(e.contains("tokenizer.token_types[5] = 9"), "{e}");
    let mut p = base();
    p.bos = Some(1000);
    let e = p.build().unwrap_err().to_string();
    assert!(e.contains("tokenizer.bos_id") && e.contains("1000"), "{e}");
    let mut p = base();
    p.eot_ids = vec![17];
    assert!(p.build().is_err());
    let mut p = base();
    p.tokens.clear();
    p.scores.clear();
    p.token_types.clear();
    assert!(p.build().is_err());
    let mut p = bpe_parts(&[], &[]);
    p.pre = "mystery".into();
    let e = p.build().unwrap_err();
    assert!(
        matches!(&e, Error::Unsupported(m) if m.contains("mystery")),
        "{e}"
    );
}

#[test]
fn odd_merges_are_ignored() {
    let t = bpe_parts(&[], &["", "x", " x", "a b c", "a b"])
        .build()
        .unwrap();
    assert_eq!(enc(&t, "ab").len(), 2);
}

fn spm_metadata() -> Metadata {
    let v = spm_vocab();
    let mut m = Metadata::new();
    m.set("tokenizer.kind", Value::Str("spm".into()));
    m.set("tokenizer.pre", Value::Str("default".into()));
    m.set(
        "tokenizer.tokens",
        Value::ArrStr(v.iter().map(|x| x.0.to_string()).collect()),
    );
    m.set(
        "tokenizer.scores",
        Value::ArrF32(v.iter().map(|x| x.1).collect()),
    );
    m.set(
        "tokenizer.token_types",
        Value::ArrU8(v.iter().map(|x| x.2).collect()),
    );
    m.set("tokenizer.bos_id", Value::I32(1));
    m.set("tokenizer.eos_id", Value::I32(2));
    m.set("tokenizer.unk_id", Value::I32(0));
    m.set("tokenizer.pad_id", Value::I32(-1));
    m.set("tokenizer.eot_ids", Value::ArrI32(vec![3]));
    m.set("tokenizer.add_bos", Value::Bool(true));
    m.set("tokenizer.add_space_prefix", Value::Bool(false));
    m
}

#[test]
fn from_metadata() {
    let t = Tokenizer::from_metadata(&spm_metadata()).unwrap();
    assert_eq!(t.kind(), TokenizerKind::Spm);
    assert_eq!(t.n_vocab(), spm_vocab().len());
    assert_eq!((t.bos(), t.eos(), t.add_bos()), (Some(1), Some(2), true));
    assert!(t.is_eog(3));

    let mut m = spm_metadata();
    m.set("tokenizer.kind", Value::Str("wordpiece".into()));
    assert!(matches!(
        Tokenizer::from_metadata(&m),
        Err(Error::Unsupported(_))
    ));
    let mut m = spm_metadata();
    m.set(
        "tokenizer.scores",
        Value::ArrI32(vec![0; spm_vocab().len()]),
    );
    assert!(matches!(
        Tokenizer::from_metadata(&m),
        Err(Error::Format(FormatError::WrongType { .. }))
    ));
    let mut m = spm_metadata();
    m.set("tokenizer.bos_id", Value::I32(-7));
    assert!(matches!(
        Tokenizer::from_metadata(&m),
        Err(Error::Format(FormatError::BadTokenId { .. }))
    ));
    let mut m = spm_metadata();
    m.set("tokenizer.eot_ids", Value::ArrI32(vec![-2]));
    assert!(Tokenizer::from_metadata(&m).is_err());
    let mut m = spm_metadata();
    m.set("tokenizer.bos_id", Value::I32(-1));
    assert_eq!(Tokenizer::from_metadata(&m).unwrap().bos(), None);
    let mut m = Metadata::new();
    m.set("tokenizer.kind", Value::Str("bpe".into()));
    m.set("tokenizer.tokens", Value::ArrStr(strings(&["a"])));
    m.set("tokenizer.token_types", Value::ArrU8(vec![1]));
    assert!(matches!(
        Tokenizer::from_metadata(&m),
        Err(Error::Format(FormatError::MissingKey { .. }))
    ));
    m.set("tokenizer.merges", Value::ArrStr(Vec::new()));
    // One token and no unknown token: every other byte of a text would be lost.
    assert!(matches!(
        Tokenizer::from_metadata(&m),
        Err(Error::Format(FormatError::BadValue { .. }))
    ));
    m.set("tokenizer.unk_id", Value::I32(0));
    assert_eq!(
        Tokenizer::from_metadata(&m).unwrap().kind(),
        TokenizerKind::Bpe
    );
}

#[test]
fn send_sync() {
    fn check<T: Send + Sync>() {}
    check::<Tokenizer>();
}

/// Issue 13 row 11: a byte that no token expresses was silently dropped ("t tt x t" gave 3
/// tokens without "x"). It now becomes the unknown token, and a vocabulary without one is
/// refused at load, naming the byte.
#[test]
fn inexpressible_bytes_become_unk_or_are_refused() {
    // BPE: the byte-level vocabulary without "x", plus "<unk>".
    let mut p = bpe_parts(&[("<unk>", token_type::UNKNOWN), ("Ġt", token_type::NORMAL)], &["Ġ t"]);
    let x = p.tokens.iter().position(|t| t == "x").unwrap();
    p.tokens[x] = "<unused>".into();
    p.unk = Some(256);
    let t = p.build().unwrap();
    assert_eq!(
        texts(&t, &enc(&t, "t tt x t")),
        ["t", "Ġt", "t", "Ġ", "<unk>", "Ġt"]
    );
    p.unk = None;
    let e = p.build().unwrap_err().to_string();
    assert!(e.contains("byte 0x78") && e.contains("unk_id"), "{e}");
    // Bytes that never occur in UTF-8 (0xC0, 0xC1, 0xF5..) need no token.
    let mut p = bpe_parts(&[], &[]);
    for b in [0xC0u8, 0xC1, 0xF5, 0xFF] {
        p.tokens[usize::from(b)] = format!("<unused{b}>");
    }
    assert!(p.build().is_ok());
    // SPM: without byte tokens for "é" and without <unk>.
    let mut p = spm_parts(&spm_vocab());
    p.unk = None;
    let e = p.build().unwrap_err().to_string();
    assert!(e.contains("no token expresses byte"), "{e}");
}
