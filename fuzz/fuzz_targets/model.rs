//! Any bytes through the runtime loader (hyper-parameters, tensor shapes, tokenizer), and a
//! loaded model through one decode step: errors are fine, panics are not.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use pipit::model::Model;
use pipit::session::{Session, SessionParams};

fuzz_target!(|data: &[u8]| {
    let Ok(model) = Model::from_bytes(data.to_vec()) else { return };
    let model = Arc::new(model);
    let params = SessionParams { n_ctx: 8, n_threads: 1, ..SessionParams::default() };
    if let Ok(mut s) = Session::new(Arc::clone(&model), params) {
        let _ = s.eval(&[0, 1]);
    }
});
