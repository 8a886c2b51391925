//! Arbitrary text through the tokenizers of the converted reference models (set
//! PIPIT_FUZZ_MODEL to a .pipit file): encode never panics and decoding the ids of text
//! without special tokens gives the text back (unless a byte became the unknown token).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pipit::model::Model;

fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        let path = std::env::var("PIPIT_FUZZ_MODEL")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../models/SmolLM2-135M-Instruct.pipit").into());
        Model::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    })
}

fuzz_target!(|text: &str| {
    let tok = model().tokenizer();
    let mut ids = Vec::new();
    tok.encode(text, false, &mut ids);
    // Text without special tokens decodes back to itself, unless some byte had no token of
    // its own and became the unknown token (SmolLM2 has none for most C0 controls).
    if !text.contains('<') && !tok.unk().is_some_and(|unk| ids.contains(&unk)) {
        let bytes: Vec<u8> = ids.iter().flat_map(|&id| tok.piece(id).iter().copied()).collect();
        assert_eq!(bytes, text.as_bytes());
    }
});
