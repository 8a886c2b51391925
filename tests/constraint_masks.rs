//! Masks on the real vocabularies equal the brute-force spec: at every state of random
//! walks under regexes (counted letter and word runs among them), JSON Schemas and GBNF,
//! each token of SmolLM2's 49k byte-level BPE vocabulary and of Gemma 3's 262k
//! SentencePiece vocabulary is allowed exactly when advancing by it succeeds (and, under a
//! byte budget, when the shortest completion after it still fits). The engine builds
//! masks from token slices taken whole, skipped or walked; this checks the result token by
//! token, never through the slices.

use std::sync::Arc;

use pipit::constraint::{Constraint, TokenMask};
use pipit::model::Model;
use pipit::sampler::Rng;

fn model(name: &str) -> Arc<Model> {
    let path = format!("{}/models/{name}", env!("CARGO_MANIFEST_DIR"));
    match Model::open(&path) {
        Ok(m) => Arc::new(m),
        Err(e) => panic!("{path}: {e}\nrun tools/test-models.sh first"),
    }
}

const REGEXES: &[&str] = &[
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}( [A-Z][a-z]+){0,20}",
    r"\w{1,30}( \w{1,30}){0,3}",
    r"[A-Z][a-z]{2,12}( [A-Z][a-z]{2,12}){0,4}",
    r#""[^"\\\n]{0,40}""#,
];

/// Follows `steps` random allowed tokens from the start (restarting where only the end
/// is allowed), checking every mask against advancing each token; every third step also
/// under a tight byte budget.
fn check_walk(c: &Constraint, model: &Model, steps: usize, seed: u64) {
    let v = model.vocab_index();
    let n = v.n_vocab as u32;
    let mut rng = Rng::new(seed);
    let mut st = c.start();
    let mut probe = c.start();
    let mut m = TokenMask::new();
    for step in 0..steps {
        let budget = (step % 3 == 2).then(|| 4 + c.min_completion_bytes(&st));
        c.mask(&st, budget, &mut m);
        for t in 0..n {
            probe.clone_from(&st);
            let ok = c.advance(&mut probe, t).is_ok()
                && budget.is_none_or(|b| v.piece(t).len() + c.min_completion_bytes(&probe) <= b);
            assert_eq!(
                m.allowed(t),
                ok,
                "step {step} (budget {budget:?}), token {t} {:?}",
                String::from_utf8_lossy(v.piece(t))
            );
        }
        c.mask(&st, None, &mut m);
        let choices: Vec<u32> = (0..n)
            .filter(|&t| m.allowed(t) && !v.eog.contains(&t))
            .collect();
        if choices.is_empty() {
            c.restart(&mut st);
            continue;
        }
        let t = choices[(rng.next_u64() % choices.len() as u64) as usize];
        c.advance(&mut st, t).unwrap();
    }
}

fn check_model(name: &str, steps: usize) {
    let model = model(name);
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/constraint");
    let schema = std::fs::read_to_string(format!("{data}/bench_schema.json")).unwrap();
    let json_gbnf = std::fs::read_to_string(format!("{data}/gbnf/json.gbnf")).unwrap();
    let list_gbnf = std::fs::read_to_string(format!("{data}/gbnf/arithmetic.gbnf")).unwrap();
    let mut constraints: Vec<(String, Arc<Constraint>)> = REGEXES
        .iter()
        .map(|p| (p.to_string(), Constraint::regex(&model, p).unwrap()))
        .collect();
    constraints.push((
        "bench_schema".into(),
        Constraint::json_schema(&model, &schema).unwrap(),
    ));
    constraints.push((
        "any JSON".into(),
        Constraint::json_schema(&model, "").unwrap(),
    ));
    constraints.push((
        "json.gbnf".into(),
        Constraint::gbnf(&model, &json_gbnf).unwrap(),
    ));
    constraints.push((
        "arithmetic.gbnf".into(),
        Constraint::gbnf(&model, &list_gbnf).unwrap(),
    ));
    for (i, (what, c)) in constraints.iter().enumerate() {
        eprintln!("{name}: {what}");
        check_walk(c, &model, steps, 17 + i as u64);
    }
}

#[test]
fn smollm2_masks_equal_brute_force() {
    check_model("SmolLM2-135M-Instruct.pipit", 24);
}

#[test]
fn gemma3_masks_equal_brute_force() {
    check_model("gemma-3-270m.pipit", 10);
}
