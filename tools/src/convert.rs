//! The conversion itself: choose each tensor's output dtype, copy or requantize its data,
//! measure the error against the source, and write the file.

use crate::dequant;
use crate::error::{ConvertError, Result};
use crate::gguf::{GgmlType, Gguf};
use crate::source::{order_and_check, Source, SrcTensor};
use crate::{gguf_source, hf};
use pipit_format::{blocks, DType, Writer};
use std::io::Write;
use std::path::{Path, PathBuf};

/// How matrices are stored (`--quant`). 1-D tensors (norms, biases) are always F32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quant {
    /// The nearest pipit type: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K and F16
    /// copied losslessly; F32 and BF16 as F32; every other type (Q2_K, Q3_K, Q8_K)
    /// requantized to Q8_0.
    Keep,
    /// Every matrix as Q4_1.
    Q4,
    /// Every matrix as Q4_0.
    Q4_0,
    /// Every matrix as Q8_0.
    Q8,
    /// llama.cpp's Q4_K_M mix: Q4_K, with Q6_K for the output head (and a tied embedding)
    /// and for attn_v and ffn_down of the layers [`more_bits`] picks; see [`k_mix`].
    Q4KM,
    /// llama.cpp's Q5_K_M mix: as [`Quant::Q4KM`] with Q5_K as the base type.
    Q5KM,
    /// Every matrix as Q6_K (with the width fallback of [`k_mix`]).
    Q6K,
}

impl Quant {
    /// The base type of a K-quant mix, `None` for the other modes.
    fn k_base(self) -> Option<DType> {
        match self {
            Quant::Q4KM => Some(DType::Q4_K),
            Quant::Q5KM => Some(DType::Q5_K),
            Quant::Q6K => Some(DType::Q6_K),
            Quant::Keep | Quant::Q4 | Quant::Q4_0 | Quant::Q8 => None,
        }
    }
}

/// Whether layer `l` of `n` gets more bits in the K-quant mixes: the first and last eighth
/// of the layers, and every third layer in between (the rule of llama.cpp's
/// `llama_tensor_get_type`, which these mixes reproduce so that sizes and quality compare).
fn more_bits(l: u64, n: u64) -> bool {
    l < n / 8 || l >= 7 * n / 8 || (l - n / 8) % 3 == 2
}

/// The layer index of a `blk.L.*` tensor name.
fn layer_of(name: &str) -> Option<u64> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// The dtype of matrix `name` (`cols` wide) in the K-quant mix with base type `base`, for a
/// model of `n_layer` layers whose output head is the embedding when `tied`:
/// - the output head, or the embedding when tied, is Q6_K;
/// - with a Q4_K or Q5_K base, attn_v and ffn_down of the layers [`more_bits`] picks are
///   Q6_K;
/// - everything else is `base`;
/// - then rows that are not whole 256-value blocks fall back to the 32-value type of about
///   the same size: Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0.
pub fn k_mix(base: DType, name: &str, cols: u64, n_layer: u64, tied: bool) -> DType {
    let head = name == "output" || (tied && name == "token_embd");
    let kind = name.rsplit('.').next().unwrap_or(name);
    let bumped = base != DType::Q6_K
        && matches!(kind, "attn_v" | "ffn_down")
        && layer_of(name).is_some_and(|l| more_bits(l, n_layer));
    let dtype = if head || bumped { DType::Q6_K } else { base };
    if cols.is_multiple_of(dtype.block_elems() as u64) {
        return dtype;
    }
    match dtype {
        DType::Q4_K => DType::Q5_0,
        DType::Q5_K => DType::Q5_1,
        _ => DType::Q8_0,
    }
}

/// What happened to one tensor.
#[derive(Debug, Clone)]
pub struct TensorReport {
    /// Pipit name.
    pub name: String,
    /// Element type in the input.
    pub source_type: GgmlType,
    /// Element type in the output.
    pub dtype: DType,
    /// Shape, outermost first.
    pub shape: Vec<u64>,
    /// True when the data bytes were copied unchanged.
    pub copied: bool,
    /// sqrt(sum (out - src)^2 / sum src^2) over the dequantized values (0 when identical).
    pub rel_rmse: f64,
    /// Largest |out - src|.
    pub max_abs_err: f32,
    /// Bytes of data in the output.
    pub bytes: u64,
}

/// The result of a conversion.
#[derive(Debug, Clone)]
pub struct Report {
    /// One entry per output tensor, in file order.
    pub tensors: Vec<TensorReport>,
    /// Size of the input (the GGUF file, or the sum of the safetensors files).
    pub input_bytes: u64,
    /// Size of the written file.
    pub output_bytes: u64,
}

impl Report {
    /// Writes the per-tensor table and the totals.
    pub fn print(&self, w: &mut dyn Write) -> std::io::Result<()> {
        let width = self
            .tensors
            .iter()
            .map(|t| t.name.len())
            .max()
            .unwrap_or(4)
            .max(6);
        writeln!(
            w,
            "{:<width$}  {:>6}  {:>5}  {:<14}  {:>12}  {:>10}",
            "tensor", "source", "out", "shape", "rel RMSE", "max |err|"
        )?;
        for t in &self.tensors {
            let shape = format!("{:?}", t.shape);
            let out = if t.copied {
                format!("{}=", t.dtype)
            } else {
                t.dtype.to_string()
            };
            writeln!(
                w,
                "{:<width$}  {:>6}  {:>5}  {:<14}  {:>12.4e}  {:>10.3e}",
                t.name,
                t.source_type.name(),
                out,
                shape,
                t.rel_rmse,
                t.max_abs_err
            )?;
        }
        let copied = self.tensors.iter().filter(|t| t.copied).count();
        let worst = self
            .tensors
            .iter()
            .max_by(|a, b| a.rel_rmse.total_cmp(&b.rel_rmse));
        writeln!(
            w,
            "{} tensors ({copied} copied unchanged, marked =)",
            self.tensors.len()
        )?;
        match worst {
            Some(t) if t.rel_rmse > 0.0 => {
                writeln!(w, "largest rel RMSE: {:.4e} ({})", t.rel_rmse, t.name)?
            }
            _ => writeln!(w, "every value equals the source's")?,
        }
        let ratio = if self.input_bytes > 0 {
            self.output_bytes as f64 / self.input_bytes as f64 * 100.0
        } else {
            0.0
        };
        writeln!(
            w,
            "output size: {} bytes ({:.1} MiB, {ratio:.1}% of the input's {} bytes)",
            self.output_bytes,
            self.output_bytes as f64 / (1 << 20) as f64,
            self.input_bytes
        )
    }
}

/// The ggml type whose bytes are exactly a pipit dtype's bytes.
fn same_bytes(t: GgmlType) -> Option<DType> {
    match t {
        GgmlType::F32 => Some(DType::F32),
        GgmlType::F16 => Some(DType::F16),
        GgmlType::Q8_0 => Some(DType::Q8_0),
        GgmlType::Q4_0 => Some(DType::Q4_0),
        GgmlType::Q4_1 => Some(DType::Q4_1),
        GgmlType::Q5_0 => Some(DType::Q5_0),
        GgmlType::Q5_1 => Some(DType::Q5_1),
        GgmlType::Q4K => Some(DType::Q4_K),
        GgmlType::Q5K => Some(DType::Q5_K),
        GgmlType::Q6K => Some(DType::Q6_K),
        _ => None,
    }
}

/// The output dtype of a tensor of type `src` and shape `shape` under `quant`.
pub fn target_dtype(src: GgmlType, shape: &[u64], quant: Quant) -> DType {
    if shape.len() < 2 {
        return DType::F32;
    }
    let wanted = match quant {
        Quant::Keep => match src {
            GgmlType::Bf16 | GgmlType::F32 => DType::F32,
            t => same_bytes(t).unwrap_or(DType::Q8_0),
        },
        Quant::Q4 => DType::Q4_1,
        Quant::Q4_0 => DType::Q4_0,
        Quant::Q8 => DType::Q8_0,
        // Without a tensor name the mixes' base type; `write_model` uses `k_mix`.
        Quant::Q4KM => DType::Q4_K,
        Quant::Q5KM => DType::Q5_K,
        Quant::Q6K => DType::Q6_K,
    };
    let cols = shape.last().copied().unwrap_or(0);
    if wanted.is_quantized() && cols % wanted.block_elems() as u64 != 0 {
        // Rows that are not whole blocks cannot be quantized: keep floats.
        return if src == GgmlType::F16 {
            DType::F16
        } else {
            DType::F32
        };
    }
    wanted
}

fn fmt_err(tensor: &str, e: pipit_format::FormatError) -> ConvertError {
    ConvertError::Format {
        context: format!("tensor {tensor:?}"),
        source: e,
    }
}

/// Converts one tensor to `dtype`: returns the output bytes and the report entry.
pub fn convert_tensor(t: &SrcTensor, dtype: DType) -> Result<(Vec<u8>, TensorReport)> {
    if !dequant::supported(t.ggml_type) {
        return Err(ConvertError::UnsupportedDtype {
            tensor: t.source_name.clone(),
            dtype: t.ggml_type.name().into(),
        });
    }
    let too_big = || ConvertError::BadValue {
        key: format!("shape of {}", t.source_name),
        value: format!("{:?}", t.shape),
        reason: "too large for this machine".into(),
    };
    let n_elems = t
        .shape
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .ok_or_else(too_big)?;
    let cols = t.shape.last().copied().unwrap_or(1).max(1);
    let rows = usize::try_from(n_elems / cols).map_err(|_| too_big())?;
    let cols_us = usize::try_from(cols).map_err(|_| too_big())?;
    let src_row = t
        .ggml_type
        .bytes_for(cols)
        .and_then(|b| usize::try_from(b).ok());
    let out_row = dtype.bytes_for(cols).and_then(|b| usize::try_from(b).ok());
    let (Some(src_row), Some(out_row)) = (src_row, out_row) else {
        return Err(ConvertError::ShapeMismatch {
            tensor: t.source_name.clone(),
            expected: vec![],
            found: t.shape.clone(),
        });
    };
    if src_row.checked_mul(rows) != Some(t.data.len()) {
        return Err(ConvertError::BadValue {
            key: format!("data of {}", t.source_name),
            value: format!("{} bytes", t.data.len()),
            reason: format!(
                "{} {:?} needs {} bytes",
                t.ggml_type,
                t.shape,
                src_row.saturating_mul(rows)
            ),
        });
    }
    let copy = same_bytes(t.ggml_type) == Some(dtype);
    let mut out: Vec<u8> = if copy {
        t.data.to_vec()
    } else {
        Vec::with_capacity(out_row.saturating_mul(rows))
    };

    let chunk_rows = (65536 / cols_us).max(1);
    let mut src_vals = Vec::new();
    let mut out_vals = Vec::new();
    let (mut err2, mut ref2, mut max_abs) = (0f64, 0f64, 0f32);
    let mut r0 = 0;
    while r0 < rows {
        let r1 = (r0 + chunk_rows).min(rows);
        let n = (r1 - r0) * cols_us;
        src_vals.resize(n, 0.0);
        out_vals.resize(n, 0.0);
        dequant::dequantize(
            t.ggml_type,
            &t.data[r0 * src_row..r1 * src_row],
            &mut src_vals,
        )
        .map_err(|e| ConvertError::Dequant {
            tensor: t.source_name.clone(),
            source: e,
        })?;
        if !copy {
            out.extend_from_slice(
                &blocks::quantize(dtype, &src_vals).map_err(|e| fmt_err(&t.source_name, e))?,
            );
        }
        blocks::dequantize(dtype, &out[r0 * out_row..r1 * out_row], &mut out_vals)
            .map_err(|e| fmt_err(&t.name, e))?;
        for (&a, &b) in src_vals.iter().zip(&out_vals) {
            if a.to_bits() == b.to_bits() {
                ref2 += f64::from(a) * f64::from(a);
                continue;
            }
            let e = (b - a).abs();
            max_abs = max_abs.max(if e.is_nan() { f32::INFINITY } else { e });
            err2 += f64::from(b - a) * f64::from(b - a);
            ref2 += f64::from(a) * f64::from(a);
        }
        r0 = r1;
    }
    let rel_rmse = if err2 == 0.0 {
        0.0
    } else if ref2 > 0.0 {
        (err2 / ref2).sqrt()
    } else {
        f64::INFINITY
    };
    let bytes = out.len() as u64;
    let report = TensorReport {
        name: t.name.clone(),
        source_type: t.ggml_type,
        dtype,
        shape: t.shape.clone(),
        copied: copy,
        rel_rmse,
        max_abs_err: max_abs,
        bytes,
    };
    Ok((out, report))
}

/// Fails early (before any work) when `output` cannot be created: its directory must exist
/// and accept a new file, and `output`, if it exists, must be a regular file (never a
/// directory, device, FIFO or socket, which the final rename would replace).
pub fn check_output(output: &Path) -> Result<()> {
    let bad = |reason: String| ConvertError::OutputNotWritable {
        path: output.to_path_buf(),
        reason,
    };
    pipit_format::refuse_non_regular(output).map_err(|e| bad(e.to_string()))?;
    let name = output
        .file_name()
        .ok_or_else(|| bad("it has no file name".into()))?;
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(bad(format!("directory {} does not exist", dir.display())));
    }
    let mut probe_name = std::ffi::OsString::from(".");
    probe_name.push(name);
    probe_name.push(format!(".probe{}", std::process::id()));
    let probe = dir.join(probe_name);
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(bad(format!(
            "cannot create a file in {}: {e}",
            dir.display()
        ))),
    }
}

/// Converts the model in `source` and writes it to `output` (temporary file + rename).
/// One progress line per tensor goes to `log`.
pub fn write_model(
    source: Source,
    output: &Path,
    quant: Quant,
    input_bytes: u64,
    log: &mut dyn Write,
) -> Result<Report> {
    let (meta, tensors) = order_and_check(source)?;
    let mut w = Writer::new();
    for (k, v) in meta.iter() {
        w.set(k, v.clone());
    }
    let n = tensors.len();
    let meta_err = |e| ConvertError::Format {
        context: "metadata".into(),
        source: e,
    };
    let n_layer = meta.get_u32("model.n_layer").map_err(meta_err)?;
    let tied = meta.get_bool("model.tied_embeddings").map_err(meta_err)?;
    let mut reports = Vec::with_capacity(n);
    for (i, t) in tensors.iter().enumerate() {
        let cols = t.shape.last().copied().unwrap_or(0);
        let dtype = match quant.k_base() {
            Some(base) if t.shape.len() >= 2 => {
                k_mix(base, &t.name, cols, u64::from(n_layer), tied)
            }
            _ => target_dtype(t.ggml_type, &t.shape, quant),
        };
        let (data, r) = convert_tensor(t, dtype)?;
        let how = if r.copied {
            "copied".to_string()
        } else {
            format!("rel RMSE {:.3e}", r.rel_rmse)
        };
        // Progress output is best effort: a closed stderr must not stop the conversion.
        let _ = writeln!(
            log,
            "[{:>4}/{n}] {:<28} {:>5} {:<14} -> {:<5} {how}",
            i + 1,
            t.name,
            t.ggml_type.name(),
            format!("{:?}", t.shape),
            dtype.name()
        );
        w.add_tensor(&t.name, dtype, &t.shape, data)
            .map_err(|e| fmt_err(&t.name, e))?;
        reports.push(r);
    }
    w.write_file(output)
        .map_err(|e| ConvertError::OutputNotWritable {
            path: output.to_path_buf(),
            reason: e.to_string(),
        })?;
    let output_bytes = std::fs::metadata(output)
        .map_err(|e| ConvertError::OutputNotWritable {
            path: output.to_path_buf(),
            reason: e.to_string(),
        })?
        .len();
    Ok(Report {
        tensors: reports,
        input_bytes,
        output_bytes,
    })
}

/// Converts INPUT (a GGUF file or a Hugging Face model directory) to `output`.
pub fn convert(input: &Path, output: &Path, quant: Quant, log: &mut dyn Write) -> Result<Report> {
    let md = std::fs::metadata(input).map_err(|e| ConvertError::Input {
        path: input.to_path_buf(),
        reason: e.to_string(),
    })?;
    check_output(output)?;
    if md.is_dir() {
        let dir = hf::HfDir::open(input)?;
        let input_bytes = dir.weights_bytes();
        let source = dir.source()?;
        return write_model(source, output, quant, input_bytes, log);
    }
    if !md.is_file() {
        return Err(ConvertError::Input {
            path: input.to_path_buf(),
            reason: "neither a file nor a directory".into(),
        });
    }
    let file = std::fs::File::open(input).map_err(|e| ConvertError::Io {
        path: input.to_path_buf(),
        source: e,
    })?;
    // SAFETY: `Mmap::map` is a read-only *shared* mapping: the `&[u8]` it gives aliases the
    // file, so another process writing the input while we convert changes bytes behind an
    // immutable borrow, and truncating it makes a later read fault (SIGBUS). The converter
    // never writes the input and, like every mmap-based reader, requires that nobody else
    // does during the conversion; every read goes through slices bounds-checked by
    // `Gguf::parse` against the length mapped.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| ConvertError::Io {
        path: input.to_path_buf(),
        source: e,
    })?;
    let g = Gguf::parse(&map)?;
    let name = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let source = gguf_source::build(&g, &name)?;
    write_model(source, output, quant, md.len(), log)
}
