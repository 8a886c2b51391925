//! The constraint compilers on arbitrary input: the first byte picks regex, JSON Schema or
//! GBNF, the rest is the text. Compiling must return Ok or an error (never panic or hang:
//! states, rules and work are bounded); a compiled constraint then takes a few mask and
//! advance steps over a small byte-level vocabulary.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use pipit::tokenizer::vocab_index::VocabIndex;
use pipit::constraint::{gbnf, json, regex, Constraint, TokenMask};

fn vocab() -> Arc<VocabIndex> {
    static V: OnceLock<Arc<VocabIndex>> = OnceLock::new();
    V.get_or_init(|| {
        let mut pieces: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        for p in [
            "{\"", "\":", "\",\"", "true", "null", "12", "ab", "abc", "\"}", "é", "",
        ] {
            pieces.push(p.as_bytes().to_vec());
        }
        let refs: Vec<&[u8]> = pieces.iter().map(|p| p.as_slice()).collect();
        Arc::new(VocabIndex::from_pieces(&refs, &[refs.len() as u32 - 1]))
    })
    .clone()
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let g = match kind % 3 {
        0 => regex::grammar(text),
        1 => json::grammar(text),
        _ => gbnf::grammar(text),
    };
    let Ok(g) = g else { return };
    let Ok(c) = Constraint::new(vocab(), &g) else {
        return;
    };
    let mut st = c.start();
    let mut m = TokenMask::new();
    let eog = vocab().eog[0];
    for step in 0..16u32 {
        c.mask(&st, Some(64 - step as usize), &mut m);
        let Some(t) = (0..m.n_vocab() as u32).find(|&t| m.allowed(t) && t != eog) else {
            break;
        };
        c.advance(&mut st, t)
            .expect("a token the mask allows must advance");
    }
});
