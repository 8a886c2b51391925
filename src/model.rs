//! Model loader: opens a `.pipit` file (memory-mapped, or read into a 64-byte-aligned
//! buffer), validates it completely before any tensor slice is formed, and exposes the
//! hyper-parameters, borrowed tensor views and the tokenizer.
//!
//! Validation on open: the format's own checks ([`PipitFile::parse`]: header checksum,
//! limits, directory and data layout; tensor checksums too with [`OpenOptions::verify`]),
//! then every hyper-parameter ([`HParams::from_metadata`]), then every tensor's presence,
//! shape and dtype against the hyper-parameters, then the tokenizer. Weight bytes are never
//! copied when mapping.

use crate::tokenizer::Tokenizer;
use crate::{Error, Result};
use pipit_format::{DType, FormatError, Metadata, PipitFile};
use std::collections::HashSet;
use std::io::Read;
use std::path::Path;

/// How to open a model file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenOptions {
    /// Map the file (default). Otherwise read it into a 64-byte-aligned heap buffer.
    pub mmap: bool,
    /// Also recompute every tensor's checksum (reads all weights; default off).
    pub verify: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            mmap: true,
            verify: false,
        }
    }
}

/// Model architecture (`general.architecture`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// `llama`: Llama-family decoder (SmolLM2, Llama 2/3, ...).
    Llama,
    /// `gemma3`: Gemma 3 (q/k norms, post norms, sliding-window layers).
    Gemma3,
}

/// Which elements RoPE rotates together (`model.rope_pairs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopePairs {
    /// `(x[2i], x[2i+1])`: the GGUF / llama.cpp layout of q/k rows.
    Adjacent,
    /// `(x[i], x[i + rope_dim/2])`: the Hugging Face layout.
    Half,
}

/// FFN gate activation (`model.activation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// SwiGLU: `silu(gate) * up`.
    Silu,
    /// GeGLU with the tanh approximation of GELU.
    GeluTanh,
}

/// Validated hyper-parameters (formats/SPEC.md, "Metadata keys").
#[derive(Debug, Clone, PartialEq)]
pub struct HParams {
    /// Architecture.
    pub arch: Arch,
    /// Transformer blocks.
    pub n_layer: usize,
    /// Residual width.
    pub d_model: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads; divides `n_head`.
    pub n_kv_head: usize,
    /// Width of one head of q, k and v.
    pub head_dim: usize,
    /// FFN hidden width.
    pub d_ff: usize,
    /// Vocabulary size (rows of `token_embd`, tokens of the tokenizer).
    pub n_vocab: usize,
    /// Context length the model was trained for.
    pub n_ctx_train: usize,
    /// Rotated dimensions per head: even, `2..=head_dim`.
    pub rope_dim: usize,
    /// RMSNorm epsilon.
    pub norm_eps: f32,
    /// RoPE base (global layers).
    pub rope_theta: f32,
    /// RoPE base of sliding-window layers (`rope_theta` when the file has none).
    pub rope_theta_local: f32,
    /// Positions are divided by this (1 without scaling).
    pub rope_scale: f32,
    /// Which elements RoPE rotates together.
    pub rope_pairs: RopePairs,
    /// FFN gate activation.
    pub activation: Activation,
    /// The output head is `token_embd`.
    pub tied: bool,
    /// Window of sliding layers in tokens; 0 = none.
    pub sliding_window: usize,
    /// `n_layer` entries: whether the layer attends within the sliding window.
    pub layer_sliding: Vec<bool>,
    /// Embeddings are multiplied by this (1 unless the file says otherwise).
    pub embed_scale: f32,
    /// Attention scores are multiplied by this (`1/sqrt(head_dim)` unless the file says).
    pub attn_scale: f32,
    /// Logits become `c * tanh(logit / c)` when set.
    pub final_logit_softcap: Option<f32>,
}

/// A validated view of one tensor inside the model bytes (2-D: rows x cols; 1-D: rows = 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tensor {
    /// Element type.
    pub dtype: DType,
    /// Outer dimension (1 for vectors).
    pub rows: usize,
    /// Inner dimension; a whole number of blocks for quantized dtypes.
    pub cols: usize,
    /// Absolute byte offset in [`Model::bytes`] (a multiple of 64).
    pub offset: usize,
    /// Byte length.
    pub len: usize,
}

/// The tensors of one transformer block.
#[derive(Debug, Clone)]
pub struct LayerWeights {
    /// `blk.L.attn_norm` `[d_model]`, F32.
    pub attn_norm: Tensor,
    /// `blk.L.attn_q` `[q_dim, d_model]`.
    pub wq: Tensor,
    /// `blk.L.attn_k` `[kv_dim, d_model]`.
    pub wk: Tensor,
    /// `blk.L.attn_v` `[kv_dim, d_model]`.
    pub wv: Tensor,
    /// `blk.L.attn_output` `[d_model, q_dim]`.
    pub wo: Tensor,
    /// `blk.L.attn_q_bias` `[q_dim]`, F32, when present.
    pub bq: Option<Tensor>,
    /// `blk.L.attn_k_bias` `[kv_dim]`, F32, when present.
    pub bk: Option<Tensor>,
    /// `blk.L.attn_v_bias` `[kv_dim]`, F32, when present.
    pub bv: Option<Tensor>,
    /// `blk.L.attn_q_norm` `[head_dim]`, F32 (Gemma 3).
    pub q_norm: Option<Tensor>,
    /// `blk.L.attn_k_norm` `[head_dim]`, F32 (Gemma 3).
    pub k_norm: Option<Tensor>,
    /// `blk.L.post_attention_norm` `[d_model]`, F32 (Gemma 3).
    pub post_attn_norm: Option<Tensor>,
    /// `blk.L.ffn_norm` `[d_model]`, F32.
    pub ffn_norm: Tensor,
    /// `blk.L.ffn_gate` `[d_ff, d_model]`.
    pub w_gate: Tensor,
    /// `blk.L.ffn_up` `[d_ff, d_model]`.
    pub w_up: Tensor,
    /// `blk.L.ffn_down` `[d_model, d_ff]`.
    pub w_down: Tensor,
    /// `blk.L.post_ffw_norm` `[d_model]`, F32 (Gemma 3).
    pub post_ffw_norm: Option<Tensor>,
}

/// Every tensor the forward pass reads.
#[derive(Debug, Clone)]
pub struct Weights {
    /// `token_embd` `[n_vocab, d_model]`.
    pub token_embd: Tensor,
    /// `output_norm` `[d_model]`, F32.
    pub output_norm: Tensor,
    /// `output` `[n_vocab, d_model]`; equal to `token_embd` when the embeddings are tied.
    pub output: Tensor,
    /// One entry per layer.
    pub layers: Vec<LayerWeights>,
}

/// The bytes of an open model file.
enum Storage {
    /// Read-only mapping of the file.
    Mapped(memmap2::Mmap),
    /// `buf[start..start + len]`, where `start` makes the bytes 64-byte aligned.
    Heap {
        buf: Vec<u8>,
        start: usize,
        len: usize,
    },
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(m) => m,
            Storage::Heap { buf, start, len } => &buf[*start..*start + *len],
        }
    }

    /// A zeroed heap buffer of `len` bytes starting at a 64-byte-aligned address.
    fn aligned_zeroed(len: usize) -> Result<Storage> {
        let total = len
            .checked_add(63)
            .ok_or_else(|| Error::OutOfMemory(format!("{len} bytes")))?;
        let mut buf = Vec::new();
        buf.try_reserve_exact(total)
            .map_err(|_| Error::OutOfMemory(format!("reading {len} bytes")))?;
        buf.resize(total, 0);
        let start = (64 - buf.as_ptr() as usize % 64) % 64;
        Ok(Storage::Heap { buf, start, len })
    }
}

/// An open, fully validated model. Immutable; `Send + Sync`, so sessions on several
/// threads can share it behind an `Arc`.
pub struct Model {
    storage: Storage,
    file: PipitFile,
    hparams: HParams,
    weights: Weights,
    tokenizer: Tokenizer,
    source: String,
}

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Model>();
};

impl Model {
    /// Opens `path` with the default [`OpenOptions`] (mapped, tensor checksums not read).
    ///
    /// The file must not be modified or truncated while the model is open (it is mapped; a
    /// truncation raises SIGBUS). Where that cannot be guaranteed, open with
    /// `OpenOptions { mmap: false, .. }`: the model then never touches the file again.
    pub fn open(path: impl AsRef<Path>) -> Result<Model> {
        Model::open_with(path, &OpenOptions::default())
    }

    /// Opens `path` as `opts` say.
    pub fn open_with(path: impl AsRef<Path>, opts: &OpenOptions) -> Result<Model> {
        let path = path.as_ref();
        let io = |source: std::io::Error| Error::Io {
            path: path.display().to_string(),
            source,
        };
        let mut file = open_regular(path).map_err(io)?;
        let storage = if opts.mmap {
            // SAFETY: `Mmap::map` is unsafe because the mapped bytes alias the file: if
            // another process writes the file while it is mapped, memory behind the `&[u8]`
            // this model hands out changes (undefined behaviour for Rust's immutable
            // borrows), and if it truncates the file, touching the lost pages raises
            // SIGBUS. The mapping is read-only and shared; pipit never writes model files,
            // and opening requires that nobody else modifies or truncates the file while
            // the model is open (documented on `Model::open`), the contract of every
            // mmap-based loader. A file changed before the map is taken is harmless: all
            // validation runs on the mapped bytes, after mapping.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
            Storage::Mapped(map)
        } else {
            let len = file.metadata().map_err(io)?.len();
            let len = usize::try_from(len).map_err(|_| {
                Error::OutOfMemory(format!(
                    "{}: {len} bytes do not fit in memory",
                    path.display()
                ))
            })?;
            let mut storage = Storage::aligned_zeroed(len)?;
            if let Storage::Heap { buf, start, len } = &mut storage {
                file.read_exact(&mut buf[*start..*start + *len])
                    .map_err(io)?;
            }
            storage
        };
        Model::from_storage(storage, opts.verify, path.display().to_string())
    }

    /// A model from bytes in memory (tests build these with `pipit_format::Writer`). The
    /// bytes are moved in, or copied once if they are not 64-byte aligned. Tensor checksums
    /// are verified.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Model> {
        let storage = if bytes.as_ptr().align_offset(64) == 0 {
            let len = bytes.len();
            Storage::Heap {
                buf: bytes,
                start: 0,
                len,
            }
        } else {
            let mut s = Storage::aligned_zeroed(bytes.len())?;
            if let Storage::Heap { buf, start, len } = &mut s {
                buf[*start..*start + *len].copy_from_slice(&bytes);
            }
            s
        };
        Model::from_storage(storage, true, "<memory>".to_string())
    }

    fn from_storage(storage: Storage, verify: bool, source: String) -> Result<Model> {
        let (file, hparams, tokenizer, weights) = load(storage.bytes(), verify)?;
        Ok(Model {
            storage,
            file,
            hparams,
            weights,
            tokenizer,
            source,
        })
    }

    /// Runs every check opening does (tensor checksums excluded) on `bytes`, without
    /// keeping them: for tools and for tests that try many corrupted variants of a file.
    pub fn validate(bytes: &[u8]) -> Result<()> {
        load(bytes, false).map(|_| ())
    }

    /// Hyper-parameters.
    pub fn hparams(&self) -> &HParams {
        &self.hparams
    }

    /// The parsed file: metadata and tensor directory.
    pub fn file(&self) -> &PipitFile {
        &self.file
    }

    /// All bytes of the file (64-byte aligned).
    pub fn bytes(&self) -> &[u8] {
        self.storage.bytes()
    }

    /// The tensors the forward pass reads.
    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// The tokenizer built from the file's metadata.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Whether the file is memory-mapped (otherwise it was read into memory).
    pub fn is_mapped(&self) -> bool {
        matches!(self.storage, Storage::Mapped(_))
    }

    /// The bytes of `t`.
    ///
    /// # Panics
    /// If `t` is not a tensor of this model (its range was validated at open).
    pub fn data(&self, t: &Tensor) -> &[u8] {
        &self.bytes()[t.offset..t.offset + t.len]
    }

    /// The values of an F32 tensor, borrowed from the file (64-byte aligned).
    ///
    /// # Panics
    /// If `t.dtype` is not F32 or `t` is not a tensor of this model.
    pub fn f32s(&self, t: &Tensor) -> &[f32] {
        assert_eq!(t.dtype, DType::F32, "Model::f32s on a {} tensor", t.dtype);
        bytemuck::cast_slice(self.data(t))
    }
}

/// Opens `path` for reading if it is a regular file. A directory, device (`/dev/null`,
/// `/dev/urandom`), FIFO or socket gets an error naming what it is instead of a confusing
/// OS error from `mmap`, or a hang: opening a FIFO with no writer blocks, so the file is
/// opened non-blocking (which changes nothing for regular files) and checked again after
/// opening, in case the path was swapped in between.
fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    let not_regular = |md: &std::fs::Metadata| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "is {}, not a regular file (a .pipit model)",
                pipit_format::file_kind(&md.file_type())
            ),
        )
    };
    let md = std::fs::metadata(path)?;
    if !md.is_file() {
        return Err(not_regular(&md));
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(all(
        any(target_os = "linux", target_os = "android"),
        any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "arm")
    ))]
    {
        use std::os::unix::fs::OpenOptionsExt;
        /// `O_NONBLOCK` of Linux and Android on these architectures.
        const O_NONBLOCK: i32 = 0o4000;
        opts.custom_flags(O_NONBLOCK);
    }
    let file = opts.open(path)?;
    let md = file.metadata()?;
    if !md.is_file() {
        return Err(not_regular(&md));
    }
    Ok(file)
}

/// Parses and validates a whole model file: format, hyper-parameters, tokenizer, weights.
fn load(bytes: &[u8], verify: bool) -> Result<(PipitFile, HParams, Tokenizer, Weights)> {
    let file = PipitFile::parse(bytes)?;
    if verify {
        file.verify_data(bytes)?;
    }
    let hparams = HParams::from_metadata(&file.metadata)?;
    let tokenizer = Tokenizer::from_metadata(&file.metadata)?;
    // Known text keys that loading itself does not read must still have their type
    // (SPEC.md, "Metadata keys"), so that readers of them later cannot fail.
    for key in ["general.name", "general.source", "tokenizer.chat_template"] {
        file.metadata.opt_str(key)?;
    }
    if tokenizer.n_vocab() != hparams.n_vocab {
        return Err(bad_value(
            "model.n_vocab",
            hparams.n_vocab,
            format!(
                "must equal the number of tokenizer.tokens ({})",
                tokenizer.n_vocab()
            ),
        ));
    }
    let weights = resolve_weights(&file, &hparams, bytes.len())?;
    Ok((file, hparams, tokenizer, weights))
}

fn bad_value(key: &str, value: impl std::fmt::Display, rule: impl Into<String>) -> Error {
    FormatError::BadValue {
        key: key.to_string(),
        value: value.to_string(),
        rule: rule.into(),
    }
    .into()
}

/// A dimension: a `u32` of at least 1.
fn dim(meta: &Metadata, key: &str) -> Result<usize> {
    let v = meta.get_u32(key)?;
    if v == 0 {
        return Err(bad_value(key, v, "must be at least 1"));
    }
    usize::try_from(v)
        .map_err(|_| Error::Unsupported(format!("{key} = {v} exceeds this platform's usize")))
}

/// A finite, strictly positive `f32`.
fn positive(key: &str, v: f32) -> Result<f32> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(bad_value(key, v, "must be finite and greater than 0"))
    }
}

impl HParams {
    /// Reads and validates the `general.architecture` and `model.*` entries.
    pub fn from_metadata(meta: &Metadata) -> Result<HParams> {
        let arch = match meta.get_str("general.architecture")? {
            "llama" => Arch::Llama,
            "gemma3" => Arch::Gemma3,
            other => {
                return Err(Error::Unsupported(format!(
                    "architecture '{other}' (known: llama, gemma3)"
                )))
            }
        };
        let n_layer = dim(meta, "model.n_layer")?;
        let d_model = dim(meta, "model.d_model")?;
        let n_head = dim(meta, "model.n_head")?;
        let n_kv_head = dim(meta, "model.n_kv_head")?;
        let head_dim = dim(meta, "model.head_dim")?;
        let d_ff = dim(meta, "model.d_ff")?;
        let n_vocab = dim(meta, "model.n_vocab")?;
        let n_ctx_train = dim(meta, "model.n_ctx_train")?;
        if n_head % n_kv_head != 0 {
            return Err(bad_value(
                "model.n_kv_head",
                n_kv_head,
                format!("must divide model.n_head ({n_head})"),
            ));
        }
        if n_head.checked_mul(head_dim).is_none() {
            return Err(bad_value(
                "model.head_dim",
                head_dim,
                format!("times model.n_head ({n_head}) overflows"),
            ));
        }
        let rope_dim = meta.get_u32("model.rope_dim")?;
        let rope_dim = usize::try_from(rope_dim).unwrap_or(usize::MAX);
        if rope_dim == 0 || rope_dim % 2 != 0 || rope_dim > head_dim {
            return Err(bad_value(
                "model.rope_dim",
                rope_dim,
                format!("must be even and in 2..={head_dim} (head_dim)"),
            ));
        }
        let norm_eps = positive("model.norm_eps", meta.get_f32("model.norm_eps")?)?;
        let rope_theta = positive("model.rope_theta", meta.get_f32("model.rope_theta")?)?;
        let rope_theta_local = match meta.opt_f32("model.rope_theta_local")? {
            Some(v) => positive("model.rope_theta_local", v)?,
            None => rope_theta,
        };
        let rope_scale = positive("model.rope_scale", meta.get_f32("model.rope_scale")?)?;
        match meta.get_str("model.rope_scaling")? {
            "linear" => {}
            "none" if rope_scale == 1.0 => {}
            "none" => {
                return Err(bad_value(
                    "model.rope_scale",
                    rope_scale,
                    "must be 1 when model.rope_scaling is none",
                ))
            }
            other => {
                return Err(Error::Unsupported(format!(
                    "model.rope_scaling '{other}' (known: none, linear)"
                )))
            }
        }
        let rope_pairs = match meta.get_str("model.rope_pairs")? {
            "adjacent" => RopePairs::Adjacent,
            "half" => RopePairs::Half,
            other => {
                return Err(Error::Unsupported(format!(
                    "model.rope_pairs '{other}' (known: adjacent, half)"
                )))
            }
        };
        let activation = match meta.get_str("model.activation")? {
            "silu" => Activation::Silu,
            "gelu_tanh" => Activation::GeluTanh,
            other => {
                return Err(Error::Unsupported(format!(
                    "model.activation '{other}' (known: silu, gelu_tanh)"
                )))
            }
        };
        let tied = meta.get_bool("model.tied_embeddings")?;
        let sliding_window = meta.get_u32("model.sliding_window")?;
        let sliding_window = usize::try_from(sliding_window).unwrap_or(usize::MAX);
        let flags = meta.get_arr_u8("model.layer_sliding")?;
        if flags.len() != n_layer {
            return Err(FormatError::LengthMismatch {
                key: "model.layer_sliding".to_string(),
                len: flags.len() as u64,
                expected: n_layer as u64,
            }
            .into());
        }
        if let Some((i, &f)) = flags.iter().enumerate().find(|(_, &f)| f > 1) {
            return Err(bad_value(
                &format!("model.layer_sliding[{i}]"),
                f,
                "must be 0 or 1",
            ));
        }
        let layer_sliding: Vec<bool> = flags.iter().map(|&f| f == 1).collect();
        if sliding_window == 0 && layer_sliding.contains(&true) {
            return Err(bad_value(
                "model.sliding_window",
                0,
                "must be at least 1 when a layer is sliding",
            ));
        }
        let embed_scale = match meta.opt_f32("model.embed_scale")? {
            Some(v) => positive("model.embed_scale", v)?,
            None => 1.0,
        };
        let attn_scale = match meta.opt_f32("model.attn_scale")? {
            Some(v) => positive("model.attn_scale", v)?,
            None => 1.0 / (head_dim as f32).sqrt(),
        };
        let final_logit_softcap = match meta.opt_f32("model.final_logit_softcap")? {
            None => None,
            Some(0.0) => None,
            Some(v) => Some(positive("model.final_logit_softcap", v)?),
        };
        Ok(HParams {
            arch,
            n_layer,
            d_model,
            n_head,
            n_kv_head,
            head_dim,
            d_ff,
            n_vocab,
            n_ctx_train,
            rope_dim,
            norm_eps,
            rope_theta,
            rope_theta_local,
            rope_scale,
            rope_pairs,
            activation,
            tied,
            sliding_window,
            layer_sliding,
            embed_scale,
            attn_scale,
            final_logit_softcap,
        })
    }

    /// Width of the concatenated query heads, `n_head * head_dim` (checked at load).
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    /// Width of the concatenated key (or value) heads, `n_kv_head * head_dim`.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_head * self.head_dim
    }
}

/// What a tensor is used as: a weight matrix (any dtype) or a 1-D vector (norm weight or
/// bias, F32 only).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Matrix,
    Vector,
}

/// Looks tensors up by name, checks them, and remembers which ones were used.
struct Resolver<'a> {
    file: &'a PipitFile,
    file_len: usize,
    used: HashSet<&'a str>,
}

impl<'a> Resolver<'a> {
    fn require(&mut self, name: &str, shape: &[usize], role: Role) -> Result<Tensor> {
        self.optional(name, shape, role)?.ok_or_else(|| {
            FormatError::MissingTensor {
                name: name.to_string(),
            }
            .into()
        })
    }

    fn optional(&mut self, name: &str, shape: &[usize], role: Role) -> Result<Option<Tensor>> {
        let Some(info) = self.file.tensor(name) else {
            return Ok(None);
        };
        self.used.insert(info.name.as_str());
        let expected: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
        if info.shape != expected {
            return Err(FormatError::ShapeMismatch {
                tensor: name.to_string(),
                expected,
                found: info.shape.clone(),
            }
            .into());
        }
        if role == Role::Vector && info.dtype != DType::F32 {
            return Err(FormatError::WrongDType {
                tensor: name.to_string(),
                found: info.dtype,
                expected: "F32",
            }
            .into());
        }
        let (rows, cols) = match *shape {
            [cols] => (1, cols),
            [rows, cols] => (rows, cols),
            _ => {
                return Err(Error::Internal(format!(
                    "tensor '{name}': expected rank {}",
                    shape.len()
                )))
            }
        };
        if cols % info.dtype.block_elems() != 0 {
            return Err(FormatError::NotWholeBlocks {
                tensor: name.to_string(),
                dtype: info.dtype,
                cols: cols as u64,
            }
            .into());
        }
        let too_big = || {
            Error::Unsupported(format!(
                "tensor '{name}' lies beyond this platform's address space"
            ))
        };
        let offset = usize::try_from(info.offset).map_err(|_| too_big())?;
        let len = usize::try_from(info.size).map_err(|_| too_big())?;
        if offset % 64 != 0
            || offset
                .checked_add(len)
                .is_none_or(|end| end > self.file_len)
        {
            return Err(Error::Internal(format!(
                "tensor '{name}' passed the format checks out of bounds"
            )));
        }
        Ok(Some(Tensor {
            dtype: info.dtype,
            rows,
            cols,
            offset,
            len,
        }))
    }
}

/// Finds, checks and views every tensor the architecture needs; rejects extra tensors.
fn resolve_weights(file: &PipitFile, hp: &HParams, file_len: usize) -> Result<Weights> {
    use Role::{Matrix, Vector};
    let mut r = Resolver {
        file,
        file_len,
        used: HashSet::new(),
    };
    let (d, q, kv, ff, hd) = (hp.d_model, hp.q_dim(), hp.kv_dim(), hp.d_ff, hp.head_dim);
    let gemma = hp.arch == Arch::Gemma3;
    let token_embd = r.require("token_embd", &[hp.n_vocab, d], Matrix)?;
    let output_norm = r.require("output_norm", &[d], Vector)?;
    let output = if hp.tied {
        if file.tensor("output").is_some() {
            return Err(FormatError::UnexpectedTensor {
                name: "output".to_string(),
                reason: "model.tied_embeddings is true".to_string(),
            }
            .into());
        }
        token_embd
    } else {
        r.require("output", &[hp.n_vocab, d], Matrix)?
    };
    let mut layers = Vec::with_capacity(hp.n_layer.min(file.tensors.len()));
    for l in 0..hp.n_layer {
        let n = |suffix: &str| format!("blk.{l}.{suffix}");
        let gemma_norm = |r: &mut Resolver, suffix: &str, len: usize| -> Result<Option<Tensor>> {
            if gemma {
                r.require(&n(suffix), &[len], Vector).map(Some)
            } else {
                Ok(None)
            }
        };
        layers.push(LayerWeights {
            attn_norm: r.require(&n("attn_norm"), &[d], Vector)?,
            wq: r.require(&n("attn_q"), &[q, d], Matrix)?,
            wk: r.require(&n("attn_k"), &[kv, d], Matrix)?,
            wv: r.require(&n("attn_v"), &[kv, d], Matrix)?,
            wo: r.require(&n("attn_output"), &[d, q], Matrix)?,
            bq: r.optional(&n("attn_q_bias"), &[q], Vector)?,
            bk: r.optional(&n("attn_k_bias"), &[kv], Vector)?,
            bv: r.optional(&n("attn_v_bias"), &[kv], Vector)?,
            q_norm: gemma_norm(&mut r, "attn_q_norm", hd)?,
            k_norm: gemma_norm(&mut r, "attn_k_norm", hd)?,
            post_attn_norm: gemma_norm(&mut r, "post_attention_norm", d)?,
            ffn_norm: r.require(&n("ffn_norm"), &[d], Vector)?,
            w_gate: r.require(&n("ffn_gate"), &[ff, d], Matrix)?,
            w_up: r.require(&n("ffn_up"), &[ff, d], Matrix)?,
            w_down: r.require(&n("ffn_down"), &[d, ff], Matrix)?,
            post_ffw_norm: gemma_norm(&mut r, "post_ffw_norm", d)?,
        });
    }
    if let Some(extra) = file
        .tensors
        .iter()
        .find(|t| !r.used.contains(t.name.as_str()))
    {
        let arch = match hp.arch {
            Arch::Llama => "llama",
            Arch::Gemma3 => "gemma3",
        };
        return Err(FormatError::UnexpectedTensor {
            name: extra.name.clone(),
            reason: format!("not used by a {arch} model with n_layer = {}", hp.n_layer),
        }
        .into());
    }
    Ok(Weights {
        token_embd,
        output_norm,
        output,
        layers,
    })
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The `pipit inspect` report: file and header, hyper-parameters, tokenizer summary, tensor
/// table, and the memory a session needs. `kernels` names the kernel set in use.
pub fn inspect_report(model: &Model, kernels: &str) -> String {
    let f = model.file();
    let hp = model.hparams();
    let meta = &f.metadata;
    let text = |key: &str| meta.opt_str(key).ok().flatten().unwrap_or("");
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };

    let how = if model.is_mapped() {
        "mapped"
    } else {
        "read into memory"
    };
    line(format!(
        "file       {}: {} bytes ({}), {how}",
        model.source,
        f.file_len,
        mib(f.file_len)
    ));
    line(format!(
        "format     version {}, header crc32c {:#010x}, {} tensors, data at byte {}",
        f.version,
        f.header_crc32c,
        f.tensors.len(),
        f.data_offset
    ));
    let arch = match hp.arch {
        Arch::Llama => "llama",
        Arch::Gemma3 => "gemma3",
    };
    line(format!(
        "model      '{}' ({arch}), converted from {}",
        text("general.name"),
        text("general.source")
    ));

    line(format!(
        "hparams    n_layer {}, d_model {}, n_head {}, n_kv_head {}, head_dim {}, d_ff {}, n_vocab {}, n_ctx_train {}",
        hp.n_layer, hp.d_model, hp.n_head, hp.n_kv_head, hp.head_dim, hp.d_ff, hp.n_vocab, hp.n_ctx_train
    ));
    let pairs = match hp.rope_pairs {
        RopePairs::Adjacent => "adjacent",
        RopePairs::Half => "half",
    };
    line(format!(
        "           rope dim {}, theta {}, local theta {}, scale {}, pairs {pairs}",
        hp.rope_dim, hp.rope_theta, hp.rope_theta_local, hp.rope_scale
    ));
    let activation = match hp.activation {
        Activation::Silu => "silu",
        Activation::GeluTanh => "gelu_tanh",
    };
    let softcap = hp
        .final_logit_softcap
        .map_or("none".to_string(), |c| c.to_string());
    line(format!(
        "           norm_eps {:e}, activation {activation}, tied embeddings {}, embed scale {}, attn scale {}, logit softcap {softcap}",
        hp.norm_eps,
        yes_no(hp.tied),
        hp.embed_scale,
        hp.attn_scale
    ));
    let n_sliding = hp.layer_sliding.iter().filter(|&&s| s).count();
    line(if n_sliding == 0 {
        "           sliding window: none".to_string()
    } else {
        format!(
            "           sliding window {} tokens on {n_sliding} of {} layers",
            hp.sliding_window, hp.n_layer
        )
    });

    let tok = model.tokenizer();
    let named = |id: Option<u32>| {
        id.map_or("none".to_string(), |id| {
            format!("{id} {:?}", tok.token_text(id))
        })
    };
    let eog: Vec<String> = (0..tok.n_vocab() as u32)
        .filter(|&id| tok.is_eog(id))
        .map(|id| named(Some(id)))
        .collect();
    let n_merges = meta
        .get("tokenizer.merges")
        .and_then(|v| v.array_len())
        .unwrap_or(0);
    let template = meta.opt_str("tokenizer.chat_template").ok().flatten();
    line(format!(
        "tokenizer  {} (pre {}), {} tokens, {n_merges} merges, bos {}, eos {}, end of generation [{}], add_bos {}, chat template {}",
        text("tokenizer.kind"),
        text("tokenizer.pre"),
        tok.n_vocab(),
        named(tok.bos()),
        named(tok.eos()),
        eog.join(", "),
        yes_no(tok.add_bos()),
        template.map_or("none".to_string(), |t| format!("{} bytes", t.len()))
    ));

    line(format!(
        "tensors    {:<28} {:<5} {:>16} {:>12} {:>12}",
        "name", "dtype", "shape", "bytes", "offset"
    ));
    let mut totals: Vec<(DType, usize, u64)> = Vec::new();
    for t in &f.tensors {
        let shape: Vec<String> = t.shape.iter().map(u64::to_string).collect();
        line(format!(
            "           {:<28} {:<5} {:>16} {:>12} {:>12}",
            t.name,
            t.dtype.name(),
            shape.join(" x "),
            t.size,
            t.offset
        ));
        match totals.iter_mut().find(|(d, _, _)| *d == t.dtype) {
            Some(e) => {
                e.1 += 1;
                e.2 += t.size;
            }
            None => totals.push((t.dtype, 1, t.size)),
        }
    }
    let totals: Vec<String> = totals
        .iter()
        .map(|(d, n, b)| format!("{d} {n} tensors {}", mib(*b)))
        .collect();
    line(format!("           totals: {}", totals.join("; ")));

    // What a session with the default parameters (the CLI's and the C ABI's) would take.
    let params = crate::session::SessionParams::default();
    let kv_per_1k =
        crate::forward::KvCache::bytes_for(hp, 1024, params.kv_type).unwrap_or(0) as u64;
    match crate::session::MemoryReport::estimate(model, &params) {
        Ok(m) => line(format!(
            "memory     weights {} {how}; KV cache ({:?}) {} per 1k tokens of context; a session \
             with n_ctx {} and batches of {}: KV cache {} + scratch {} = {}",
            mib(f.file_len),
            params.kv_type,
            mib(kv_per_1k),
            params.n_ctx,
            params.n_batch,
            mib(m.kv_cache),
            mib(m.scratch),
            mib(m.kv_cache + m.scratch)
        )),
        Err(e) => line(format!(
            "memory     weights {} {how}; session estimate: {e}",
            mib(f.file_len)
        )),
    }
    line(format!("kernels    {kernels}"));
    out
}
