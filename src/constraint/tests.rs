//! Engine tests on a small synthetic vocabulary: every byte, plus multi-byte tokens.

use super::*;

/// Bytes 0..=255 as tokens 0..=255, then some longer pieces, then EOS = last id.
fn vocab() -> Arc<VocabIndex> {
    let mut pieces: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    for p in [
        "ab", "abc", "\"", "\",", "\":", "\"}", "{\"", "true", "false", "null", "12", "2025", "-0",
        "hello", " world", "},{\"", "[]", "a\"", "ab\":\"", "é",
    ] {
        pieces.push(p.as_bytes().to_vec());
    }
    pieces.push(Vec::new());
    let refs: Vec<&[u8]> = pieces.iter().map(|p| p.as_slice()).collect();
    let eos = refs.len() as u32 - 1;
    Arc::new(VocabIndex::from_pieces(&refs, &[eos]))
}

fn accepts(c: &Constraint, text: &[u8]) -> bool {
    let mut st = c.start();
    for &b in text {
        if c.advance(&mut st, u32::from(b)).is_err() {
            return false;
        }
    }
    c.is_accepting(&st)
}

/// The mask must equal what advancing each token separately says (the brute-force spec).
fn check_mask(c: &Constraint, st: &ConstraintState, budget: Option<usize>) {
    let mut m = TokenMask::new();
    c.mask(st, budget, &mut m);
    let v = &c.vocab;
    for t in 0..v.n_vocab as u32 {
        let mut s = st.clone();
        let ok = c.advance(&mut s, t).is_ok()
            && budget.is_none_or(|b| v.piece(t).len() + c.min_completion_bytes(&s) <= b);
        assert_eq!(
            m.allowed(t),
            ok,
            "token {t} {:?}",
            String::from_utf8_lossy(v.piece(t))
        );
    }
}

fn regex(p: &str) -> Arc<Constraint> {
    Constraint::new(vocab(), &regex::grammar(p).unwrap()).unwrap()
}

#[test]
fn regex_matches_exactly() {
    let c = regex(r"\d{4}-(0[1-9]|1[0-2])");
    assert!(accepts(&c, b"2025-12"));
    assert!(!accepts(&c, b"2025-13"));
    assert!(!accepts(&c, b"2025-1"));
    let c = regex(r"(yes|no)");
    assert!(accepts(&c, b"yes") && accepts(&c, b"no") && !accepts(&c, b"yesno"));
    let c = regex(r"[A-Z][a-z]+( [A-Z][a-z]+)?");
    assert!(accepts(&c, b"Ada Lovelace") && !accepts(&c, b"ada"));
    let c = regex(r#""[^"\\]*""#);
    assert!(accepts(&c, "\"héllo\"".as_bytes()) && !accepts(&c, b"\"a\"b\""));
    let c = regex(r"a{2,3}b?");
    assert!(
        accepts(&c, b"aa") && accepts(&c, b"aaab") && !accepts(&c, b"a") && !accepts(&c, b"aaaa")
    );
}

#[test]
fn masks_equal_brute_force_along_a_path() {
    for (pat, text) in [
        (r"\d{4}-\d\d", &b"2025-12"[..]),
        (r#"\{"a":(true|false|null|-?\d+)\}"#, b"{\"a\":-12}"),
        (r"(ab|abc)+", b"abcab"),
    ] {
        let c = regex(pat);
        let mut st = c.start();
        for &b in text {
            for budget in [None, Some(3), Some(8), Some(40)] {
                check_mask(&c, &st, budget);
            }
            c.advance(&mut st, u32::from(b)).unwrap();
        }
        check_mask(&c, &st, None);
        assert!(c.is_accepting(&st));
    }
}

#[test]
fn recursive_grammar_masks_equal_brute_force() {
    let g = gbnf::grammar(
        "root ::= value\nvalue ::= \"[\" (value (\",\" value)*)? \"]\" | \"null\" | [0-9]+\n",
    )
    .unwrap();
    let c = Constraint::new(vocab(), &g).unwrap();
    let text = b"[[1,null],[],[[2]]]";
    let mut st = c.start();
    for &b in text {
        for budget in [None, Some(4), Some(12)] {
            check_mask(&c, &st, budget);
        }
        c.advance(&mut st, u32::from(b)).unwrap();
    }
    assert!(c.is_accepting(&st));
    assert_eq!(c.min_completion_bytes(&c.start()), 1, "a digit");
}

#[test]
fn json_schema_masks_equal_brute_force() {
    let schema = r#"{"type":"object","properties":{"ab":{"type":"string"},"n":{"type":"integer","minimum":-5,"maximum":120},"t":{"type":"boolean"}},"required":["ab"]}"#;
    let c = Constraint::new(vocab(), &json::grammar(schema).unwrap()).unwrap();
    let text = br#"{"ab":"x\"y","n":-5}"#;
    let mut st = c.start();
    for &b in text.iter() {
        for budget in [None, Some(5), Some(30)] {
            check_mask(&c, &st, budget);
        }
        c.advance(&mut st, u32::from(b)).unwrap();
    }
    assert!(c.is_accepting(&st));
    for bad in [
        &br#"{"n":1}"#[..],
        br#"{"ab":"x","n":121}"#,
        br#"{"ab":"x","t":true,"n":1}"#,
    ] {
        assert!(!accepts(&c, bad), "{}", String::from_utf8_lossy(bad));
    }
    assert!(accepts(&c, br#"{"ab":"","t":false}"#));
}

#[test]
fn integer_ranges_are_exact() {
    for (lo, hi) in [
        (0, 0),
        (-5, 120),
        (7, 1234),
        (-1000, -17),
        (99, 101),
        (10, 19),
    ] {
        let mut g = ir::Grammar::default();
        g.root = g.add("root", json::int_range(lo, hi));
        let c = Constraint::new(vocab(), &g).unwrap();
        for x in -1500i128..1500 {
            assert_eq!(
                accepts(&c, x.to_string().as_bytes()),
                lo <= x && x <= hi,
                "{x} in {lo}..={hi}"
            );
        }
        assert!(!accepts(&c, b"007"));
    }
}

#[test]
fn errors_before_generation() {
    let v = vocab();
    assert!(Constraint::new(
        v.clone(),
        &json::grammar(r#"{"if":{}}"#).unwrap_or_default()
    )
    .is_err());
    let e = json::grammar(r#"{"type":"string","if":{}}"#).unwrap_err();
    assert!(e.to_string().contains("\"if\""), "{e}");
    // Empty language.
    let g = regex::grammar("[^\\x00-\\x{10FFFF}]").unwrap_or_default();
    let _ = Constraint::new(v.clone(), &g);
    let g = gbnf::grammar("root ::= root \"a\" | \"b\"\n").unwrap();
    assert!(Constraint::new(v.clone(), &g).is_err(), "left recursion");
    assert!(gbnf::grammar("root ::= foo\n").is_err());
    let g = json::grammar(r#"{"type":"integer","minimum":5,"maximum":4}"#).unwrap();
    assert!(Constraint::new(v, &g).is_err());
}

#[test]
fn eos_only_when_accepting_and_forbidden_tokens_change_nothing() {
    let c = regex("ab?");
    let eos = c.vocab.n_vocab as u32 - 1;
    let mut st = c.start();
    assert!(c.advance(&mut st, eos).is_err());
    assert!(c.advance(&mut st, u32::from(b'x')).is_err());
    assert_eq!(c.min_completion_bytes(&st), 1);
    c.advance(&mut st, u32::from(b'a')).unwrap();
    let mut m = TokenMask::new();
    c.mask(&st, None, &mut m);
    assert!(m.allowed(eos) && m.allowed(u32::from(b'b')) && m.count() == 2);
}

#[test]
fn depth_is_bounded_and_steered_to_close() {
    let g = gbnf::grammar("root ::= \"[\" root? \"]\"\n").unwrap();
    let c = Constraint::new(vocab(), &g).unwrap();
    let mut st = c.start();
    for _ in 0..MAX_DEPTH {
        c.advance(&mut st, u32::from(b'[')).unwrap();
    }
    assert!(c.advance(&mut st.clone(), u32::from(b'[')).is_err());
    for _ in 0..MAX_DEPTH {
        c.advance(&mut st, u32::from(b']')).unwrap();
    }
    assert!(c.is_accepting(&st));
}

/// What fuzz/fuzz_targets/constraint.rs does, on mutated seeds, in the normal suite: the
/// compilers return errors, never panic, and compiled constraints mask and advance.
#[test]
fn compilers_survive_mutated_inputs() {
    let seeds = [
        r"\d{4}-(0[1-9]|1[0-2])|[^a-c]+(x{2,5})?",
        r##"{"type":"object","properties":{"a":{"type":"array","items":{"$ref":"#"},"maxItems":3},"b":{"enum":[1,"x",null]}},"required":["a"]}"##,
        "root ::= (expr \"=\" ws term \"\\n\")+\nexpr ::= term ([-+*/] term)*\nterm ::= [a-z]+ | \"(\" expr \")\"\nws ::= [ ]*\n",
    ];
    let v = vocab();
    let eog = v.eog[0];
    let mut rng = crate::sampler::Rng::new(11);
    let t0 = std::time::Instant::now();
    for i in 0..3000 {
        let kind = i % 3;
        let mut b = seeds[kind].as_bytes().to_vec();
        for _ in 0..1 + rng.next_u64() % 4 {
            let at = (rng.next_u64() as usize) % (b.len() + 1);
            match rng.next_u64() % 4 {
                0 if at < b.len() => {
                    b.remove(at);
                }
                1 => b.insert(at, b"(){}[]*+?|\\\"^-,:9a{"[(rng.next_u64() % 19) as usize]),
                2 if at < b.len() => b[at] = rng.next_u64() as u8,
                _ => {
                    let n = (rng.next_u64() % 8) as usize;
                    let piece: Vec<u8> = b[at.saturating_sub(n)..at].to_vec();
                    b.splice(at..at, piece);
                }
            }
        }
        let Ok(text) = std::str::from_utf8(&b) else {
            continue;
        };
        let g = match kind {
            0 => regex::grammar(text),
            1 => json::grammar(text),
            _ => gbnf::grammar(text),
        };
        let Ok(g) = g else { continue };
        let Ok(c) = Constraint::new(v.clone(), &g) else {
            continue;
        };
        let mut st = c.start();
        let mut m = TokenMask::new();
        for step in 0..8 {
            c.mask(&st, Some(40 - step), &mut m);
            let Some(t) = (0..m.n_vocab() as u32).find(|&t| m.allowed(t) && t != eog) else {
                break;
            };
            c.advance(&mut st, t).unwrap();
        }
    }
    assert!(
        t0.elapsed().as_secs() < 120,
        "compiling mutated inputs took {:?}",
        t0.elapsed()
    );
}
