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
use pipit_format::arch::TensorSpec;
use pipit_format::{DType, FormatError, PipitFile};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, OnceLock};

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

pub use pipit_format::arch::{Activation, Arch, HParams, RopePairs, RopeScaling};

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
    /// The vocabulary indexed for constraints, built on first use.
    vocab_index: OnceLock<Arc<crate::tokenizer::vocab_index::VocabIndex>>,
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
            vocab_index: OnceLock::new(),
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

    /// The vocabulary indexed for constraints (a trie over token bytes), built once.
    ///
    /// # Panics
    /// Aborts if the index cannot be allocated; see [`Model::try_vocab_index`].
    pub fn vocab_index(&self) -> &Arc<crate::tokenizer::vocab_index::VocabIndex> {
        self.try_vocab_index()
            .unwrap_or_else(|_| std::alloc::handle_alloc_error(std::alloc::Layout::new::<Self>()))
    }

    /// [`Model::vocab_index`], with allocation failure an error (`OutOfMemory`); a failed
    /// build is tried again on the next call.
    pub fn try_vocab_index(&self) -> Result<&Arc<crate::tokenizer::vocab_index::VocabIndex>> {
        if let Some(v) = self.vocab_index.get() {
            return Ok(v);
        }
        let v = crate::tokenizer::vocab_index::VocabIndex::try_new(&self.tokenizer)?;
        // Another thread may have set it meanwhile: either index is the same.
        Ok(self.vocab_index.get_or_init(|| Arc::new(v)))
    }

    /// The tokenizer built from the file's metadata.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Where the model came from: its path, or a note for one opened from bytes.
    pub fn source(&self) -> &str {
        &self.source
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
        return Err(FormatError::BadValue {
            key: "model.n_vocab".to_string(),
            value: hparams.n_vocab.to_string(),
            rule: format!(
                "must equal the number of tokenizer.tokens ({})",
                tokenizer.n_vocab()
            ),
        }
        .into());
    }
    let weights = resolve_weights(&file, &hparams, bytes.len())?;
    Ok((file, hparams, tokenizer, weights))
}

/// Views of the tensors of a file, by name.
struct Resolver<'a> {
    file: &'a PipitFile,
    file_len: usize,
    found: HashMap<&'a str, Tensor>,
}

impl Resolver<'_> {
    /// Checks the tensor `spec` describes (presence, shape, dtype, bounds) and keeps its view.
    fn resolve(&mut self, spec: &TensorSpec) -> Result<()> {
        let name = spec.name.as_str();
        let Some(info) = self.file.tensor(name) else {
            return Err(FormatError::MissingTensor {
                name: name.to_string(),
            }
            .into());
        };
        let expected: Vec<u64> = spec.shape.iter().map(|&d| d as u64).collect();
        if info.shape != expected {
            return Err(FormatError::ShapeMismatch {
                tensor: name.to_string(),
                expected,
                found: info.shape.clone(),
            }
            .into());
        }
        if spec.vector && info.dtype != DType::F32 {
            return Err(FormatError::WrongDType {
                tensor: name.to_string(),
                found: info.dtype,
                expected: "F32",
            }
            .into());
        }
        let (rows, cols) = match *spec.shape {
            [cols] => (1, cols),
            [rows, cols] => (rows, cols),
            _ => {
                return Err(Error::Internal(format!(
                    "tensor '{name}': expected rank {}",
                    spec.shape.len()
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
        self.found.insert(
            info.name.as_str(),
            Tensor {
                dtype: info.dtype,
                rows,
                cols,
                offset,
                len,
            },
        );
        Ok(())
    }

    /// The view of `name`, resolved before; `None` when the architecture has no such tensor.
    fn get(&self, name: &str) -> Option<Tensor> {
        self.found.get(name).copied()
    }

    fn take(&self, name: &str) -> Result<Tensor> {
        self.get(name)
            .ok_or_else(|| Error::Internal(format!("tensor '{name}' not in the table")))
    }
}

/// Finds, checks and views every tensor of the architecture's table
/// ([`HParams::tensors`]); rejects every other tensor.
fn resolve_weights(file: &PipitFile, hp: &HParams, file_len: usize) -> Result<Weights> {
    hp.check_tensor_count(file.tensors.len())?;
    let specs = hp.try_tensors()?;
    let mut found = HashMap::new();
    crate::mem::reserved(found.try_reserve(specs.len()), specs.len())?;
    let mut r = Resolver {
        file,
        file_len,
        found,
    };
    for spec in &specs {
        r.resolve(spec)?;
    }
    if let Some(extra) = file
        .tensors
        .iter()
        .find(|t| !r.found.contains_key(t.name.as_str()))
    {
        let reason = if extra.name == "output" && hp.tied {
            "model.tied_embeddings is true".to_string()
        } else {
            format!(
                "not used by a {} model with n_layer = {} and these features",
                hp.arch.name(),
                hp.n_layer
            )
        };
        return Err(FormatError::UnexpectedTensor {
            name: extra.name.clone(),
            reason,
        }
        .into());
    }
    let token_embd = r.take("token_embd")?;
    let output = if hp.tied {
        token_embd
    } else {
        r.take("output")?
    };
    let mut layers = crate::mem::try_vec(hp.n_layer)?;
    for l in 0..hp.n_layer {
        let n = |suffix: &str| format!("blk.{l}.{suffix}");
        layers.push(LayerWeights {
            attn_norm: r.take(&n("attn_norm"))?,
            wq: r.take(&n("attn_q"))?,
            wk: r.take(&n("attn_k"))?,
            wv: r.take(&n("attn_v"))?,
            wo: r.take(&n("attn_output"))?,
            bq: r.get(&n("attn_q_bias")),
            bk: r.get(&n("attn_k_bias")),
            bv: r.get(&n("attn_v_bias")),
            q_norm: r.get(&n("attn_q_norm")),
            k_norm: r.get(&n("attn_k_norm")),
            post_attn_norm: r.get(&n("post_attention_norm")),
            ffn_norm: r.take(&n("ffn_norm"))?,
            w_gate: r.take(&n("ffn_gate"))?,
            w_up: r.take(&n("ffn_up"))?,
            w_down: r.take(&n("ffn_down"))?,
            post_ffw_norm: r.get(&n("post_ffw_norm")),
        });
    }
    Ok(Weights {
        token_embd,
        output_norm: r.take("output_norm")?,
        output,
        layers,
    })
}
