//! Structure-aware model fuzzing: a valid tiny model (tests/common) with one field changed
//! (a metadata value, a tensor's dtype, shape or values, or raw bytes with the header
//! checksum recomputed), then load, a session and 4 decode steps: errors are fine, panics,
//! aborts and hangs are not.
#![no_main]

use std::sync::Arc;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use pipit::model::Model;
use pipit::sampler::{Sampler, SamplerParams};
use pipit::session::{Session, SessionParams};
use pipit_format::{DType, Value};

#[path = "../../tests/common/mod.rs"]
mod common;

/// One change to the valid model.
#[derive(Debug, Arbitrary)]
enum Mutation {
    /// Replace metadata entry `index` (modulo the count) with `value`.
    Meta { index: u16, value: FuzzValue },
    /// Remove metadata entry `index`.
    DropMeta { index: u16 },
    /// Add an entry with a known key (`key` modulo the list) and `value`.
    AddMeta { key: u8, value: FuzzValue },
    /// Give tensor `index` another dtype.
    Dtype { index: u8, dtype: u8 },
    /// Give tensor `index` another shape.
    Shape { index: u8, shape: Vec<u32> },
    /// Set value `at` of tensor `index` (NaN, Inf, huge, ...).
    Value { index: u8, at: u16, value: f32 },
    /// Remove tensor `index`.
    DropTensor { index: u8 },
    /// Overwrite bytes at `at` (modulo the length) of the assembled file, the header checksum
    /// fixed (an edit of tensor data then fails its tensor checksum).
    Bytes { at: u32, bytes: Vec<u8> },
}

#[derive(Debug, Arbitrary)]
enum FuzzValue {
    U8(u8),
    U32(u32),
    I32(i32),
    U64(u64),
    F32(f32),
    Bool(bool),
    Str(String),
    ArrU8(Vec<u8>),
    ArrU32(Vec<u32>),
    ArrI32(Vec<i32>),
    ArrF32(Vec<f32>),
    ArrStr(Vec<String>),
}

impl FuzzValue {
    fn value(self) -> Value {
        match self {
            FuzzValue::U8(v) => Value::U8(v),
            FuzzValue::U32(v) => Value::U32(v),
            FuzzValue::I32(v) => Value::I32(v),
            FuzzValue::U64(v) => Value::U64(v),
            FuzzValue::F32(v) => Value::F32(v),
            FuzzValue::Bool(v) => Value::Bool(v),
            FuzzValue::Str(v) => Value::Str(v),
            FuzzValue::ArrU8(v) => Value::ArrU8(v),
            FuzzValue::ArrU32(v) => Value::ArrU32(v),
            FuzzValue::ArrI32(v) => Value::ArrI32(v),
            FuzzValue::ArrF32(v) => Value::ArrF32(v),
            FuzzValue::ArrStr(v) => Value::ArrStr(v),
        }
    }
}

const KEYS: [&str; 12] = [
    "model.n_layer",
    "model.n_head",
    "model.n_kv_head",
    "model.head_dim",
    "model.n_ctx_train",
    "model.rope_dim",
    "model.sliding_window",
    "model.final_logit_softcap",
    "model.rope_theta_local",
    "tokenizer.unk_id",
    "tokenizer.add_space_prefix",
    "tokenizer.chat_template",
];

const DTYPES: [DType; 5] = [DType::F32, DType::F16, DType::Q8_0, DType::Q4_0, DType::Q4_1];

#[derive(Debug, Arbitrary)]
struct Input {
    gemma: bool,
    dtype: u8,
    mutation: Mutation,
    tokens: [u16; 4],
}

fuzz_target!(|input: Input| {
    let dtype = DTYPES[2 + usize::from(input.dtype) % 3];
    let tiny = if input.gemma {
        common::Tiny::gemma3(dtype, 1)
    } else {
        common::Tiny::llama(dtype, 1)
    };
    let mut meta = tiny.metadata();
    let mut tensors = tiny.tensors();
    let mut raw_edit = None;
    match input.mutation {
        Mutation::Meta { index, value } => {
            let i = usize::from(index) % meta.len();
            meta[i].1 = value.value();
        }
        Mutation::DropMeta { index } => {
            let i = usize::from(index) % meta.len();
            meta.remove(i);
        }
        Mutation::AddMeta { key, value } => {
            let key = KEYS[usize::from(key) % KEYS.len()];
            meta.retain(|(k, _)| k != key);
            meta.push((key.to_string(), value.value()));
        }
        Mutation::Dtype { index, dtype } => {
            let i = usize::from(index) % tensors.len();
            tensors[i].dtype = DTYPES[usize::from(dtype) % DTYPES.len()];
        }
        Mutation::Shape { index, shape } => {
            let i = usize::from(index) % tensors.len();
            let n: u64 = shape.iter().map(|&d| u64::from(d)).product();
            if shape.len() > 4 || n == 0 || n > 1 << 20 {
                return;
            }
            tensors[i].shape = shape.iter().map(|&d| u64::from(d)).collect();
            tensors[i].values.resize(n as usize, 0.5);
        }
        Mutation::Value { index, at, value } => {
            let i = usize::from(index) % tensors.len();
            let len = tensors[i].values.len();
            tensors[i].values[usize::from(at) % len] = value;
        }
        Mutation::DropTensor { index } => {
            let i = usize::from(index) % tensors.len();
            tensors.remove(i);
        }
        Mutation::Bytes { at, bytes } => raw_edit = Some((at, bytes)),
    }
    // A mutation the writer refuses is a file pipit never sees from its own tools; the
    // raw-bytes mutation covers files from elsewhere.
    let Some(mut bytes) = common::try_assemble(&meta, &tensors) else { return };
    if let Some((at, patch)) = raw_edit {
        let at = at as usize % bytes.len();
        let end = (at + patch.len()).min(bytes.len());
        bytes[at..end].copy_from_slice(&patch[..end - at]);
        common::fix_header_crc(&mut bytes);
    }
    let Ok(model) = Model::from_bytes(bytes) else { return };
    let model = Arc::new(model);
    let params = SessionParams { n_ctx: 16, n_threads: 1, ..SessionParams::default() };
    let Ok(mut s) = Session::new(Arc::clone(&model), params) else { return };
    let n_vocab = model.hparams().n_vocab;
    let Ok(mut sampler) = Sampler::new(SamplerParams::default(), n_vocab) else { return };
    let first: Vec<u32> = input.tokens.iter().map(|&t| u32::from(t)).collect();
    if s.eval(&first[..2]).is_err() {
        return;
    }
    for _ in 0..4 {
        let Ok(t) = s.sample(&mut sampler) else { return };
        if s.eval(&[t]).is_err() {
            return;
        }
    }
});
