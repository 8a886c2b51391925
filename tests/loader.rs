//! The runtime loader on tiny synthetic models: mapped and read opening, every dtype,
//! hyper-parameter validation, shape/dtype/presence checks per tensor, checksums, I/O errors.

mod common;

use common::{assemble, Tiny, TinyTensor, N_VOCAB};
use pipit::model::{Activation, Arch, Model, OpenOptions, RopePairs, Tensor};
use pipit::Error;
use pipit_format::blocks::{dequantize, quantize};
use pipit_format::{DType, FormatError, Value};
use std::path::PathBuf;

struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str, bytes: &[u8]) -> TempFile {
        let p =
            std::env::temp_dir().join(format!("pipit-loader-{}-{tag}.pipit", std::process::id()));
        std::fs::write(&p, bytes).unwrap();
        TempFile(p)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn format_err(r: Result<Model, Error>) -> FormatError {
    match r {
        Err(Error::Format(e)) => e,
        Err(e) => panic!("expected a format error, got {e}"),
        Ok(_) => panic!("expected a format error, the model loaded"),
    }
}

fn unsupported(r: Result<Model, Error>) -> String {
    match r {
        Err(Error::Unsupported(m)) => m,
        Err(e) => panic!("expected Unsupported, got {e}"),
        Ok(_) => panic!("expected Unsupported, the model loaded"),
    }
}

/// The tiny llama with metadata `key` replaced (or removed when `value` is `None`).
fn with_meta(key: &str, value: Option<Value>) -> Vec<u8> {
    let t = Tiny::llama(DType::Q8_0, 1);
    let mut m = t.metadata();
    m.retain(|(k, _)| k != key);
    if let Some(v) = value {
        m.push((key.to_string(), v));
    }
    assemble(&m, &t.tensors())
}

fn with_tensors(t: &Tiny, edit: impl FnOnce(&mut Vec<TinyTensor>)) -> Vec<u8> {
    let mut tensors = t.tensors();
    edit(&mut tensors);
    assemble(&t.metadata(), &tensors)
}

fn decoded(model: &Model, t: &Tensor) -> Vec<f32> {
    let mut out = vec![0.0; t.rows * t.cols];
    dequantize(t.dtype, model.data(t), &mut out).unwrap();
    out
}

#[test]
fn mapped_read_and_in_memory_models_agree() {
    let tiny = Tiny::llama(DType::Q4_1, 7);
    let bytes = tiny.bytes();
    let file = TempFile::new("agree", &bytes);
    let mapped = Model::open(&file.0).unwrap();
    let read = Model::open_with(
        &file.0,
        &OpenOptions {
            mmap: false,
            verify: true,
        },
    )
    .unwrap();
    let memory = Model::from_bytes(bytes.clone()).unwrap();
    assert!(mapped.is_mapped() && !read.is_mapped() && !memory.is_mapped());
    for m in [&mapped, &read, &memory] {
        assert_eq!(m.bytes(), bytes.as_slice());
        assert_eq!(
            m.bytes().as_ptr() as usize % 64,
            0,
            "model bytes are 64-byte aligned"
        );
        assert_eq!(m.hparams(), mapped.hparams());
        assert_eq!(m.file().tensors, mapped.file().tensors);
        let w = m.weights();
        assert_eq!(w.layers.len(), 2);
        assert_eq!(
            m.data(&w.layers[1].w_down),
            mapped.data(&mapped.weights().layers[1].w_down)
        );
        // F32 norms are borrowed as f32, exactly the values written.
        assert_eq!(m.f32s(&w.output_norm), &tiny.tensors()[1].values[..]);
    }
}

#[test]
fn hyper_parameters_and_weights_of_tiny_llama() {
    let tiny = Tiny::llama(DType::Q8_0, 3);
    let m = Model::from_bytes(tiny.bytes()).unwrap();
    let hp = m.hparams();
    assert_eq!(hp.arch, Arch::Llama);
    assert_eq!(
        (hp.n_layer, hp.d_model, hp.n_head, hp.n_kv_head, hp.head_dim),
        (2, 64, 4, 2, 16)
    );
    assert_eq!(
        (hp.d_ff, hp.n_vocab, hp.n_ctx_train, hp.rope_dim),
        (128, N_VOCAB, 2048, 16)
    );
    assert_eq!((hp.q_dim(), hp.kv_dim()), (64, 32));
    assert_eq!(
        (
            hp.norm_eps,
            hp.rope_theta,
            hp.rope_theta_local,
            hp.rope_scale
        ),
        (1e-5, 1e4, 1e4, 1.0)
    );
    assert_eq!(
        (hp.rope_pairs, hp.activation, hp.tied),
        (RopePairs::Adjacent, Activation::Silu, false)
    );
    assert_eq!(
        (hp.sliding_window, hp.layer_sliding.as_slice()),
        (0, &[false, false][..])
    );
    assert_eq!(
        (hp.embed_scale, hp.attn_scale, hp.final_logit_softcap),
        (1.0, 0.25, None)
    );
    let w = m.weights();
    assert_eq!(
        (w.token_embd.rows, w.token_embd.cols, w.token_embd.dtype),
        (N_VOCAB, 64, DType::Q8_0)
    );
    assert_ne!(w.output, w.token_embd);
    let l = &w.layers[0];
    assert_eq!((l.wq.rows, l.wq.cols), (64, 64));
    assert_eq!((l.wk.rows, l.wk.cols, l.wv.rows), (32, 64, 32));
    assert_eq!((l.wo.rows, l.wo.cols), (64, 64));
    assert_eq!(
        (l.w_gate.rows, l.w_up.rows, l.w_down.rows, l.w_down.cols),
        (128, 128, 64, 128)
    );
    assert_eq!(
        (l.attn_norm.rows, l.attn_norm.cols, l.attn_norm.dtype),
        (1, 64, DType::F32)
    );
    assert!(
        l.bq.is_none()
            && l.q_norm.is_none()
            && l.post_attn_norm.is_none()
            && l.post_ffw_norm.is_none()
    );
    // Every tensor view covers exactly its directory entry.
    for t in [
        w.token_embd,
        w.output,
        w.output_norm,
        l.wq,
        l.w_down,
        l.ffn_norm,
    ] {
        assert_eq!(t.offset % 64, 0);
        let info = m
            .file()
            .tensors
            .iter()
            .find(|i| i.offset as usize == t.offset)
            .unwrap();
        assert_eq!(info.size as usize, t.len);
    }
    let tok = m.tokenizer();
    assert_eq!(tok.n_vocab(), N_VOCAB);
    assert_eq!((tok.bos(), tok.eos()), (Some(1), Some(2)));
    let mut ids = Vec::new();
    tok.encode("the cat<|im_end|>", false, &mut ids);
    assert_eq!(ids.last(), Some(&2));
    assert!(ids.len() < "the cat".len() + 1, "merges apply: {ids:?}");
}

#[test]
fn every_matrix_dtype_loads_with_identical_bytes() {
    for dtype in DType::ALL {
        let mut tiny = Tiny::llama(dtype, 11);
        if dtype.block_elems() > 32 {
            // Every matrix row a whole number of 256-value blocks.
            (tiny.d_model, tiny.head_dim, tiny.d_ff) = (256, 64, 256);
        }
        let m = Model::from_bytes(tiny.bytes()).unwrap();
        let wq = m.weights().layers[1].wq;
        assert_eq!(wq.dtype, dtype);
        let src = tiny
            .tensors()
            .into_iter()
            .find(|t| t.name == "blk.1.attn_q")
            .unwrap();
        assert_eq!(
            m.data(&wq),
            quantize(dtype, &src.values).unwrap(),
            "{dtype}"
        );
        let values = decoded(&m, &wq);
        let max_err = values
            .iter()
            .zip(&src.values)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        let tol = match dtype {
            DType::F32 => 0.0,
            DType::F16 => 1e-3,
            DType::Q8_0 => 2e-3,
            _ => 0.02,
        };
        assert!(max_err <= tol, "{dtype}: max error {max_err}");
    }
}

#[test]
fn tiny_gemma3_loads() {
    let m = Model::from_bytes(Tiny::gemma3(DType::Q4_0, 5).bytes()).unwrap();
    let hp = m.hparams();
    assert_eq!(
        (hp.arch, hp.activation, hp.tied),
        (Arch::Gemma3, Activation::GeluTanh, true)
    );
    assert_eq!(
        (hp.sliding_window, hp.layer_sliding.as_slice()),
        (8, &[true, false][..])
    );
    assert_eq!(
        (hp.rope_theta, hp.rope_theta_local, hp.embed_scale),
        (1e6, 1e4, 8.0)
    );
    assert_eq!(hp.q_dim(), 128);
    let w = m.weights();
    assert_eq!(w.output, w.token_embd);
    let l = &w.layers[1];
    assert_eq!(l.q_norm.map(|t| t.cols), Some(32));
    assert_eq!(l.k_norm.map(|t| t.cols), Some(32));
    assert_eq!(l.post_attn_norm.map(|t| t.cols), Some(64));
    assert_eq!(l.post_ffw_norm.map(|t| t.cols), Some(64));
    assert_eq!(
        (l.wq.rows, l.wq.cols, l.wo.rows, l.wo.cols),
        (128, 64, 64, 128)
    );
}

#[test]
fn biases_are_optional_vectors() {
    let tiny = Tiny {
        biases: true,
        tied: true,
        rope_pairs: "half",
        ..Tiny::llama(DType::Q4_0, 2)
    };
    let m = Model::from_bytes(tiny.bytes()).unwrap();
    let l = &m.weights().layers[0];
    assert_eq!(l.bq.map(|t| t.cols), Some(64));
    assert_eq!(l.bk.map(|t| t.cols), Some(32));
    assert_eq!(l.bv.map(|t| (t.rows, t.cols)), Some((1, 32)));
    assert_eq!(m.hparams().rope_pairs, RopePairs::Half);
    assert_eq!(m.f32s(&l.bv.unwrap()).len(), 32);
}

/// The architecture table decides which tensors a file has: a feature key that disagrees
/// with the family, or with the tensors, is refused naming the key or the tensor.
#[test]
fn features_follow_the_family_table() {
    // Biases without `model.qkv_bias`: unexpected tensors (the key defaults to false).
    let t = Tiny {
        biases: true,
        ..Tiny::llama(DType::Q8_0, 3)
    };
    let mut m = t.metadata();
    m.retain(|(k, _)| k != "model.qkv_bias");
    match format_err(Model::from_bytes(assemble(&m, &t.tensors()))) {
        FormatError::UnexpectedTensor { name, .. } => assert_eq!(name, "blk.0.attn_q_bias"),
        e => panic!("{e:?}"),
    }
    // `model.qkv_bias` true without the tensors: the first is missing.
    let t = Tiny::llama(DType::Q8_0, 3);
    let mut m = t.metadata();
    m.push(("model.qkv_bias".into(), Value::Bool(true)));
    assert_eq!(
        format_err(Model::from_bytes(assemble(&m, &t.tensors()))),
        FormatError::MissingTensor {
            name: "blk.0.attn_q_bias".into()
        }
    );
    // gemma3 always has q/k norms: `model.qk_norm = false` contradicts the family.
    let t = Tiny::gemma3(DType::Q8_0, 3);
    let mut m = t.metadata();
    m.push(("model.qk_norm".into(), Value::Bool(false)));
    match format_err(Model::from_bytes(assemble(&m, &t.tensors()))) {
        FormatError::BadValue { key, .. } => assert_eq!(key, "model.qk_norm"),
        e => panic!("{e:?}"),
    }
    // llama never has post norms.
    let mut m = Tiny::llama(DType::Q8_0, 3).metadata();
    m.push(("model.post_norms".into(), Value::Bool(true)));
    match format_err(Model::from_bytes(assemble(
        &m,
        &Tiny::llama(DType::Q8_0, 3).tensors(),
    ))) {
        FormatError::BadValue { key, .. } => assert_eq!(key, "model.post_norms"),
        e => panic!("{e:?}"),
    }
    // A layer count the tensors cannot hold is refused before the layers are resolved.
    let t = Tiny::llama(DType::Q8_0, 3);
    let mut m = t.metadata();
    m.retain(|(k, _)| k != "model.n_layer" && k != "model.layer_sliding");
    m.push(("model.n_layer".into(), Value::U32(1000)));
    m.push(("model.layer_sliding".into(), Value::ArrU8(vec![0; 1000])));
    match format_err(Model::from_bytes(assemble(&m, &t.tensors()))) {
        FormatError::BadValue { key, rule, .. } => {
            assert_eq!(key, "model.n_layer");
            assert!(rule.contains("at least 9 tensors"), "{rule}");
        }
        e => panic!("{e:?}"),
    }
    // Llama 3 scaling needs its per-pair factors, longrope its two sets.
    let mut m = Tiny::llama(DType::Q8_0, 3).metadata();
    m.retain(|(k, _)| k != "model.rope_scaling");
    m.push(("model.rope_scaling".into(), Value::Str("llama3".into())));
    m.push(("model.rope_factors".into(), Value::ArrF32(vec![2.0; 7])));
    assert_eq!(
        format_err(Model::from_bytes(assemble(
            &m,
            &Tiny::llama(DType::Q8_0, 3).tensors()
        ))),
        FormatError::LengthMismatch {
            key: "model.rope_factors".into(),
            len: 7,
            expected: 8
        }
    );
}

#[test]
fn wrong_shape_is_rejected_naming_the_tensor() {
    let tiny = Tiny::llama(DType::Q8_0, 1);
    let bytes = with_tensors(&tiny, |ts| {
        let t = ts.iter_mut().find(|t| t.name == "blk.1.attn_k").unwrap();
        t.shape = vec![64, 64];
        t.values.resize(64 * 64, 0.0);
    });
    let e = format_err(Model::from_bytes(bytes));
    assert_eq!(
        e,
        FormatError::ShapeMismatch {
            tensor: "blk.1.attn_k".into(),
            expected: vec![32, 64],
            found: vec![64, 64]
        }
    );
    assert!(e.to_string().contains("blk.1.attn_k"));
    // A transposed matrix, and a norm of the wrong length.
    let bytes = with_tensors(&tiny, |ts| {
        let t = ts.iter_mut().find(|t| t.name == "blk.0.ffn_down").unwrap();
        t.shape = vec![128, 64];
    });
    assert!(
        matches!(format_err(Model::from_bytes(bytes)), FormatError::ShapeMismatch { tensor, .. } if tensor == "blk.0.ffn_down")
    );
    let bytes = with_tensors(&tiny, |ts| {
        let t = ts.iter_mut().find(|t| t.name == "output_norm").unwrap();
        t.shape = vec![32];
        t.values.truncate(32);
    });
    assert!(
        matches!(format_err(Model::from_bytes(bytes)), FormatError::ShapeMismatch { tensor, .. } if tensor == "output_norm")
    );
}

#[test]
fn missing_tensor_is_rejected() {
    let tiny = Tiny::llama(DType::Q8_0, 1);
    for name in ["blk.0.ffn_up", "token_embd", "output", "blk.1.attn_norm"] {
        let bytes = with_tensors(&tiny, |ts| ts.retain(|t| t.name != name));
        assert_eq!(
            format_err(Model::from_bytes(bytes)),
            FormatError::MissingTensor { name: name.into() }
        );
    }
    let gemma = Tiny::gemma3(DType::Q8_0, 1);
    let bytes = with_tensors(&gemma, |ts| ts.retain(|t| t.name != "blk.1.attn_k_norm"));
    assert_eq!(
        format_err(Model::from_bytes(bytes)),
        FormatError::MissingTensor {
            name: "blk.1.attn_k_norm".into()
        }
    );
}

#[test]
fn unexpected_tensors_are_rejected() {
    let tiny = Tiny::llama(DType::Q8_0, 1);
    let extra = |name: &str| TinyTensor {
        name: name.into(),
        dtype: DType::F32,
        shape: vec![64],
        values: vec![1.0; 64],
    };
    let bytes = with_tensors(&tiny, |ts| ts.push(extra("blk.2.attn_norm")));
    assert!(
        matches!(format_err(Model::from_bytes(bytes)), FormatError::UnexpectedTensor { name, .. } if name == "blk.2.attn_norm")
    );
    // gemma3 norms in a llama file.
    let bytes = with_tensors(&tiny, |ts| ts.push(extra("blk.0.post_ffw_norm")));
    assert!(
        matches!(format_err(Model::from_bytes(bytes)), FormatError::UnexpectedTensor { name, .. } if name == "blk.0.post_ffw_norm")
    );
    // An output head in a tied model.
    let tied = Tiny {
        tied: true,
        ..Tiny::llama(DType::Q8_0, 1)
    };
    let untied = Tiny::llama(DType::Q8_0, 1).tensors();
    let output = untied.into_iter().find(|t| t.name == "output").unwrap();
    let bytes = with_tensors(&tied, |ts| ts.push(output));
    assert!(
        matches!(format_err(Model::from_bytes(bytes)), FormatError::UnexpectedTensor { name, .. } if name == "output")
    );
}

#[test]
fn norms_and_biases_must_be_f32() {
    let tiny = Tiny {
        biases: true,
        ..Tiny::llama(DType::Q8_0, 1)
    };
    for name in ["blk.0.ffn_norm", "blk.1.attn_v_bias"] {
        let bytes = with_tensors(&tiny, |ts| {
            ts.iter_mut().find(|t| t.name == name).unwrap().dtype = DType::F16
        });
        assert_eq!(
            format_err(Model::from_bytes(bytes)),
            FormatError::WrongDType {
                tensor: name.into(),
                found: DType::F16,
                expected: "F32"
            }
        );
    }
}

fn bad_value(bytes: Vec<u8>, want_key: &str) {
    match format_err(Model::from_bytes(bytes)) {
        FormatError::BadValue { key, .. } => assert_eq!(key, want_key),
        e => panic!("{want_key}: expected BadValue, got {e:?}"),
    }
}

#[test]
fn hyper_parameters_are_validated() {
    bad_value(
        with_meta("model.n_head", Some(Value::U32(0))),
        "model.n_head",
    );
    bad_value(
        with_meta("model.n_layer", Some(Value::U32(0))),
        "model.n_layer",
    );
    bad_value(
        with_meta("model.n_kv_head", Some(Value::U32(3))),
        "model.n_kv_head",
    );
    bad_value(
        with_meta("model.rope_dim", Some(Value::U32(15))),
        "model.rope_dim",
    );
    bad_value(
        with_meta("model.rope_dim", Some(Value::U32(32))),
        "model.rope_dim",
    );
    bad_value(
        with_meta("model.rope_dim", Some(Value::U32(0))),
        "model.rope_dim",
    );
    bad_value(
        with_meta("model.norm_eps", Some(Value::F32(f32::NAN))),
        "model.norm_eps",
    );
    bad_value(
        with_meta("model.norm_eps", Some(Value::F32(0.0))),
        "model.norm_eps",
    );
    bad_value(
        with_meta("model.rope_theta", Some(Value::F32(-1.0))),
        "model.rope_theta",
    );
    bad_value(
        with_meta("model.rope_scale", Some(Value::F32(2.0))),
        "model.rope_scale",
    );
    bad_value(
        with_meta("model.attn_scale", Some(Value::F32(f32::INFINITY))),
        "model.attn_scale",
    );
    bad_value(
        with_meta("model.layer_sliding", Some(Value::ArrU8(vec![0, 2]))),
        "model.layer_sliding[1]",
    );
    bad_value(
        with_meta("model.layer_sliding", Some(Value::ArrU8(vec![1, 0]))),
        "model.sliding_window",
    );
    bad_value(
        with_meta("model.n_vocab", Some(Value::U32(N_VOCAB as u32 + 1))),
        "model.n_vocab",
    );
    assert!(matches!(
        format_err(Model::from_bytes(with_meta(
            "model.layer_sliding",
            Some(Value::ArrU8(vec![0]))
        ))),
        FormatError::LengthMismatch {
            len: 1,
            expected: 2,
            ..
        }
    ));
    assert_eq!(
        format_err(Model::from_bytes(with_meta("model.d_ff", None))),
        FormatError::MissingKey {
            key: "model.d_ff".into()
        }
    );
    assert_eq!(
        format_err(Model::from_bytes(with_meta(
            "model.n_layer",
            Some(Value::Str("2".into()))
        ))),
        FormatError::WrongType {
            key: "model.n_layer".into(),
            expected: "u32",
            found: "str"
        }
    );
    // Optional keys: absent means their documented default.
    let m = Model::from_bytes(with_meta("model.rope_theta_local", None)).unwrap();
    assert_eq!(m.hparams().rope_theta_local, m.hparams().rope_theta);
    let m = Model::from_bytes(with_meta(
        "model.final_logit_softcap",
        Some(Value::F32(30.0)),
    ))
    .unwrap();
    assert_eq!(m.hparams().final_logit_softcap, Some(30.0));
    let m = Model::from_bytes(with_meta(
        "model.final_logit_softcap",
        Some(Value::F32(0.0)),
    ))
    .unwrap();
    assert_eq!(m.hparams().final_logit_softcap, None);
    let m = Model::from_bytes(with_meta(
        "model.rope_scaling",
        Some(Value::Str("linear".into())),
    ))
    .unwrap();
    assert_eq!(m.hparams().rope_scale, 1.0);
}

#[test]
fn unsupported_choices_are_named() {
    let msg = unsupported(Model::from_bytes(with_meta(
        "general.architecture",
        Some(Value::Str("mamba".into())),
    )));
    assert!(msg.contains("mamba"), "{msg}");
    let msg = unsupported(Model::from_bytes(with_meta(
        "model.activation",
        Some(Value::Str("relu".into())),
    )));
    assert!(msg.contains("relu"), "{msg}");
    let msg = unsupported(Model::from_bytes(with_meta(
        "model.rope_pairs",
        Some(Value::Str("x".into())),
    )));
    assert!(msg.contains("rope_pairs"), "{msg}");
    let msg = unsupported(Model::from_bytes(with_meta(
        "model.rope_scaling",
        Some(Value::Str("yarn".into())),
    )));
    assert!(msg.contains("yarn"), "{msg}");
}

#[test]
fn tokenizer_problems_are_reported() {
    assert_eq!(
        format_err(Model::from_bytes(with_meta("tokenizer.kind", None))),
        FormatError::MissingKey {
            key: "tokenizer.kind".into()
        }
    );
    let msg = unsupported(Model::from_bytes(with_meta(
        "tokenizer.pre",
        Some(Value::Str("klingon".into())),
    )));
    assert!(msg.contains("klingon"), "{msg}");
}

/// Every key of SPEC.md's "Metadata keys" table that the format itself does not check: a
/// known key of another type than the table lists makes the runtime refuse the file, naming
/// the key, whether or not loading uses it. (`tokenizer.tokens`, `token_types`, `scores`,
/// the special ids and `eot_ids` are the format's rules: formats/tests.)
#[test]
fn known_keys_of_the_wrong_type_are_refused() {
    const KEYS: [(&str, &str); 39] = [
        ("general.architecture", "str"),
        ("general.name", "str"),
        ("general.source", "str"),
        ("model.n_layer", "u32"),
        ("model.d_model", "u32"),
        ("model.n_head", "u32"),
        ("model.n_kv_head", "u32"),
        ("model.head_dim", "u32"),
        ("model.d_ff", "u32"),
        ("model.n_vocab", "u32"),
        ("model.n_ctx_train", "u32"),
        ("model.norm_eps", "f32"),
        ("model.rope_theta", "f32"),
        ("model.rope_theta_local", "f32"),
        ("model.rope_dim", "u32"),
        ("model.rope_scaling", "str"),
        ("model.rope_scale", "f32"),
        ("model.rope_pairs", "str"),
        ("model.activation", "str"),
        ("model.tied_embeddings", "bool"),
        ("model.sliding_window", "u32"),
        ("model.layer_sliding", "[u8]"),
        ("model.embed_scale", "f32"),
        ("model.attn_scale", "f32"),
        ("model.final_logit_softcap", "f32"),
        ("model.attn_softcap", "f32"),
        ("model.qkv_bias", "bool"),
        ("model.qk_norm", "bool"),
        ("model.post_norms", "bool"),
        ("model.rope_factors", "[f32]"),
        ("model.rope_factors_long", "[f32]"),
        ("model.rope_ctx_orig", "u32"),
        ("model.rope_attn_factor", "f32"),
        ("tokenizer.kind", "str"),
        ("tokenizer.pre", "str"),
        ("tokenizer.merges", "[str]"),
        ("tokenizer.add_bos", "bool"),
        ("tokenizer.add_space_prefix", "bool"),
        ("tokenizer.chat_template", "str"),
    ];
    for (key, expected) in KEYS {
        // No key of the table is a u64.
        let err = format_err(Model::from_bytes(with_meta(key, Some(Value::U64(7)))));
        assert_eq!(
            err,
            FormatError::WrongType {
                key: key.into(),
                expected,
                found: "u64"
            },
            "{key}"
        );
    }
}

#[test]
fn checksums_verified_on_request() {
    let mut bytes = Tiny::llama(DType::Q8_0, 4).bytes();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    let file = TempFile::new("corrupt", &bytes);
    // Opening reads the header and directory only.
    Model::open(&file.0).unwrap();
    Model::open_with(
        &file.0,
        &OpenOptions {
            mmap: false,
            verify: false,
        },
    )
    .unwrap();
    for mmap in [true, false] {
        let e = format_err(Model::open_with(
            &file.0,
            &OpenOptions { mmap, verify: true },
        ));
        assert!(
            matches!(e, FormatError::TensorChecksum { ref tensor, .. } if tensor == "blk.1.ffn_down"),
            "{e:?}"
        );
    }
    assert!(matches!(
        format_err(Model::from_bytes(bytes)),
        FormatError::TensorChecksum { .. }
    ));
    // A corrupted directory byte is caught by the header checksum on every open.
    let mut bytes = Tiny::llama(DType::Q8_0, 4).bytes();
    bytes[200] ^= 1;
    let file = TempFile::new("corrupt-header", &bytes);
    assert!(matches!(
        format_err(Model::open(&file.0)),
        FormatError::HeaderChecksum { .. }
    ));
}

#[test]
fn io_errors_name_the_path() {
    let missing = std::env::temp_dir().join("pipit-loader-no-such-file.pipit");
    for mmap in [true, false] {
        match Model::open_with(
            &missing,
            &OpenOptions {
                mmap,
                verify: false,
            },
        ) {
            Err(e @ Error::Io { .. }) => assert!(e.to_string().contains("no-such-file")),
            Err(e) => panic!("expected an I/O error, got {e}"),
            Ok(_) => panic!("opened a missing file"),
        }
    }
    assert!(Model::open(std::env::temp_dir()).is_err());
    let empty = TempFile::new("empty", &[]);
    for mmap in [true, false] {
        let e = format_err(Model::open_with(
            &empty.0,
            &OpenOptions {
                mmap,
                verify: false,
            },
        ));
        assert!(
            matches!(e, FormatError::Truncated { actual: 0, .. }),
            "{e:?}"
        );
    }
    let short = TempFile::new("short", &Tiny::llama(DType::Q8_0, 4).bytes()[..1000]);
    assert!(matches!(
        format_err(Model::open(&short.0)),
        FormatError::Truncated { .. }
    ));
}

#[test]
fn model_is_send_and_sync() {
    fn shared<T: Send + Sync>(_: &T) {}
    let m = std::sync::Arc::new(Model::from_bytes(common::tiny_llama(9)).unwrap());
    shared(&m);
    let m2 = m.clone();
    let n = std::thread::spawn(move || m2.hparams().n_vocab)
        .join()
        .unwrap();
    assert_eq!(n, N_VOCAB);
}
