//! Forward-pass invariants on tiny synthetic models (no real model needed): a prompt gives
//! the same logits whether it goes in one batch, in uneven batches or a token at a time
//! (causal and sliding-window masks agree between prefill and decode), and the KV cache
//! types agree with each other within their precision.

mod common;

use std::sync::Arc;

use pipit::model::Model;
use pipit::session::{KvType, Precision};
use pipit::session::{Session, SessionParams};
use pipit_format::DType;

/// Logits after each token of `tokens`, fed in batches of `n_batch`.
fn logits_per_token(
    model: &Arc<Model>,
    tokens: &[u32],
    n_batch: usize,
    kv_type: KvType,
) -> Vec<Vec<f32>> {
    logits_with(model, tokens, n_batch, kv_type, Precision::F32)
}

fn logits_with(
    model: &Arc<Model>,
    tokens: &[u32],
    n_batch: usize,
    kv_type: KvType,
    precision: Precision,
) -> Vec<Vec<f32>> {
    let params = SessionParams {
        n_ctx: 128,
        n_threads: 2,
        n_batch,
        precision,
        kv_type,
        ..SessionParams::default()
    };
    let mut s = Session::new(Arc::clone(model), params).unwrap();
    let mut out = Vec::new();
    for chunk in tokens.chunks(n_batch) {
        s.eval_all(chunk, |_, l| out.push(l.to_vec())).unwrap();
    }
    out
}

fn max_rel_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    let scale = a.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

/// `t` with every matrix row a whole number of 256-value blocks (for the K-quants).
fn wide(mut t: common::Tiny) -> common::Tiny {
    (t.d_model, t.head_dim, t.d_ff) = (256, 64, 256);
    t
}

#[test]
fn batching_does_not_change_logits() {
    // 50 tokens: longer than the tiny gemma3's sliding window (8) and than one attention
    // work item (16 tokens), so every mask boundary is crossed.
    let tokens: Vec<u32> = (0..50).map(|i| (i * 37 + 5) % 250 + 3).collect();
    for tiny in [
        common::Tiny::llama(DType::Q8_0, 7),
        common::Tiny::gemma3(DType::Q4_1, 7),
    ] {
        let model = Arc::new(Model::from_bytes(tiny.bytes()).unwrap());
        let one_batch = logits_per_token(&model, &tokens, 64, KvType::F32);
        assert_eq!(one_batch.len(), tokens.len());
        for n_batch in [1, 7, 16, 17] {
            let other = logits_per_token(&model, &tokens, n_batch, KvType::F32);
            let d = max_rel_diff(&one_batch, &other);
            assert!(
                d < 1e-4,
                "{}: batches of {n_batch} differ from one batch by {d}",
                tiny.arch
            );
        }
        for (kv, tol) in [(KvType::F16, 2e-3), (KvType::Int8, 3e-2)] {
            if kv == KvType::Int8 && tiny.head_dim % 32 != 0 {
                continue;
            }
            let d = max_rel_diff(&one_batch, &logits_per_token(&model, &tokens, 16, kv));
            assert!(d < tol, "{}: {kv:?} KV differs from f32 by {d}", tiny.arch);
        }
    }
}

/// On the default int8-activation path, every kernel computes an output the same way
/// whatever the batch, so logits are bit-for-bit the same for any batching: the int8
/// rounding of activations would otherwise amplify tiny summation-order differences into
/// visibly different logits (scoring a text in two calls must equal one call).
#[test]
fn int8_logits_are_bit_identical_whatever_the_batching() {
    let tokens: Vec<u32> = (0..50).map(|i| (i * 37 + 5) % 250 + 3).collect();
    for tiny in [
        common::Tiny::llama(DType::Q8_0, 7),
        common::Tiny::llama(DType::Q4_0, 8),
        common::Tiny::gemma3(DType::Q4_1, 7),
        common::Tiny::llama(DType::Q5_0, 9),
        common::Tiny::gemma3(DType::Q5_1, 9),
        wide(common::Tiny::gemma3(DType::Q4_K, 10)),
        wide(common::Tiny::llama(DType::Q5_K, 10)),
        wide(common::Tiny::llama(DType::Q6_K, 11)),
    ] {
        let model = Arc::new(Model::from_bytes(tiny.bytes()).unwrap());
        let bits = |n_batch| -> Vec<u32> {
            logits_with(&model, &tokens, n_batch, KvType::F16, Precision::Int8)
                .iter()
                .flatten()
                .map(|v| v.to_bits())
                .collect()
        };
        let one_batch = bits(64);
        for n_batch in [1, 7, 16, 17] {
            assert!(
                bits(n_batch) == one_batch,
                "{}: int8 logits with batches of {n_batch} differ from one batch",
                tiny.arch
            );
        }
    }
}
