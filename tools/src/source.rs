//! What every input reader produces: the `.pipit` metadata and the source tensors under
//! their pipit names, plus the checks and helpers shared by the GGUF and Hugging Face paths.

use crate::error::{ConvertError, Result};
use crate::gguf::GgmlType;
use pipit_format::arch::HParams;
use pipit_format::Metadata;
use std::borrow::Cow;

/// One tensor of the input, renamed to its pipit name.
#[derive(Debug)]
pub struct SrcTensor<'a> {
    /// Pipit name (`blk.0.attn_q`).
    pub name: String,
    /// Name in the input (`blk.0.attn_q.weight`, `model.layers.0.self_attn.q_proj.weight`).
    pub source_name: String,
    /// Shape, outermost first.
    pub shape: Vec<u64>,
    /// Element type of `data` (Hugging Face F32/F16/BF16 map to the ggml types of the same name).
    pub ggml_type: GgmlType,
    /// Raw little-endian data, rows already in the order the output uses.
    pub data: Cow<'a, [u8]>,
}

/// A model read from the input, ready to convert.
#[derive(Debug)]
pub struct Source<'a> {
    /// Every `.pipit` metadata key (SPEC.md), in the order they are written.
    pub meta: Metadata,
    /// Input tensors, in input order.
    pub tensors: Vec<SrcTensor<'a>>,
}

/// Token texts that end a turn in the chat formats pipit knows.
pub const EOT_TOKENS: [&str; 4] = ["<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|endoftext|>"];

/// `tokenizer.eot_ids`: `explicit` ids followed by the ids of [`EOT_TOKENS`] present in
/// `tokens`, without `eos` and without repeats.
pub fn eot_ids(tokens: &[String], eos: i32, explicit: &[i32]) -> Vec<i32> {
    let mut out: Vec<i32> = Vec::new();
    let named = EOT_TOKENS
        .iter()
        .filter_map(|t| tokens.iter().position(|s| s == t))
        .filter_map(|i| i32::try_from(i).ok());
    for id in explicit.iter().copied().chain(named) {
        if id != eos && id >= 0 && !out.contains(&id) {
            out.push(id);
        }
    }
    out
}

/// A special token id as stored: `-1` when absent, else checked against the vocabulary.
pub fn special_id(key: &str, id: Option<i64>, n_vocab: usize) -> Result<i32> {
    match id {
        None => Ok(-1),
        Some(id) => match i32::try_from(id) {
            Ok(v) if id >= 0 && (id as u64) < n_vocab as u64 => Ok(v),
            _ => Err(ConvertError::BadValue {
                key: key.to_string(),
                value: id.to_string(),
                reason: format!("token id outside the vocabulary of {n_vocab} tokens"),
            }),
        },
    }
}

/// Validates `meta` by the runtime's rules ([`HParams::from_metadata`]) and checks that
/// `n_tensors` input tensors can hold its layers: the converter never writes a file the
/// runtime refuses.
pub fn validate(meta: &Metadata, n_tensors: usize) -> Result<HParams> {
    let fmt = |e| ConvertError::Format {
        context: "hyper-parameters".into(),
        source: e,
    };
    let hp = HParams::from_metadata(meta).map_err(fmt)?;
    hp.check_tensor_count(n_tensors).map_err(fmt)?;
    Ok(hp)
}

/// Maps a [`pipit_format::FormatError`] about an input value to a converter error.
pub fn input_error(e: pipit_format::FormatError) -> ConvertError {
    ConvertError::Format {
        context: "input".into(),
        source: e,
    }
}

/// Checks `src` against the architecture's table ([`HParams::tensors`]: every tensor
/// known, every one present, every shape right, the output head present exactly when not
/// tied) and returns the tensors in output order.
pub fn order_and_check<'a>(src: Source<'a>) -> Result<(Metadata, Vec<SrcTensor<'a>>)> {
    let hp = validate(&src.meta, src.tensors.len())?;
    let expected = hp.tensors();
    let mut by_name: std::collections::HashMap<String, SrcTensor<'a>> =
        std::collections::HashMap::new();
    for t in src.tensors {
        if !expected.iter().any(|e| e.name == t.name) {
            return Err(ConvertError::UnexpectedTensor {
                tensor: t.source_name,
            });
        }
        by_name.insert(t.name.clone(), t);
    }
    let mut out = Vec::with_capacity(by_name.len());
    for spec in expected {
        let shape: Vec<u64> = spec.shape.iter().map(|&d| d as u64).collect();
        match by_name.remove(&spec.name) {
            Some(t) if t.shape != shape => {
                return Err(ConvertError::ShapeMismatch {
                    tensor: t.source_name,
                    expected: shape,
                    found: t.shape,
                })
            }
            Some(t) => out.push(t),
            None => return Err(ConvertError::MissingTensor { tensor: spec.name }),
        }
    }
    Ok((src.meta, out))
}

/// Splits the rows of a `[rows, row_bytes]` buffer into consecutive parts of `parts[i]`
/// rows (a fused `attn_qkv` or gate/up matrix).
pub fn split_rows<'a>(
    t: &SrcTensor<'a>,
    names: &[&str],
    parts: &[u64],
) -> Result<Vec<SrcTensor<'a>>> {
    let total: u64 = parts.iter().sum();
    let rows = t.shape.first().copied().unwrap_or(0);
    if t.shape.len() != 2 || rows != total || !(t.data.len() as u64).is_multiple_of(rows.max(1)) {
        return Err(ConvertError::ShapeMismatch {
            tensor: t.source_name.clone(),
            expected: vec![total, t.shape.get(1).copied().unwrap_or(0)],
            found: t.shape.clone(),
        });
    }
    let rb = (t.data.len() as u64 / rows) as usize;
    let mut first = 0usize;
    let mut out = Vec::with_capacity(parts.len());
    for (&name, &n) in names.iter().zip(parts) {
        let n = n as usize;
        out.push(SrcTensor {
            name: name.to_string(),
            source_name: t.source_name.clone(),
            shape: vec![n as u64, t.shape[1]],
            ggml_type: t.ggml_type,
            data: Cow::Owned(t.data[first * rb..(first + n) * rb].to_vec()),
        });
        first += n;
    }
    Ok(out)
}

/// Permutes the rows of a `[rows, row_bytes]` buffer from the split-half RoPE layout
/// (Hugging Face: pair (i, i + hd/2) of each head) to the adjacent-pair layout (GGUF:
/// pair (2i, 2i+1)), for `n_heads` heads of `rows / n_heads` rows each:
/// new row `h*hd + 2i + j` = old row `h*hd + j*hd/2 + i`.
pub fn half_to_adjacent(data: &[u8], rows: usize, n_heads: usize, tensor: &str) -> Result<Vec<u8>> {
    let bad = || ConvertError::BadValue {
        key: format!("rows of {tensor}"),
        value: rows.to_string(),
        reason: format!("not a multiple of 2 * {n_heads} heads"),
    };
    if n_heads == 0
        || rows == 0
        || !rows.is_multiple_of(n_heads)
        || !(rows / n_heads).is_multiple_of(2)
        || !data.len().is_multiple_of(rows)
    {
        return Err(bad());
    }
    let hd = rows / n_heads;
    let rb = data.len() / rows;
    let mut out = Vec::with_capacity(data.len());
    for h in 0..n_heads {
        for i in 0..hd / 2 {
            for j in 0..2 {
                let old = h * hd + j * (hd / 2) + i;
                out.extend_from_slice(&data[old * rb..(old + 1) * rb]);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_interleaves_halves_per_head() {
        // 2 heads of 4 rows, one byte per row: head rows [a0 a1 b0 b1] -> [a0 b0 a1 b1].
        let out = half_to_adjacent(&[0, 1, 2, 3, 4, 5, 6, 7], 8, 2, "t").unwrap();
        assert_eq!(out, [0, 2, 1, 3, 4, 6, 5, 7]);
        assert!(half_to_adjacent(&[0, 1, 2], 3, 1, "t").is_err());
        assert!(half_to_adjacent(&[], 0, 1, "t").is_err());
    }

    #[test]
    fn eot_ids_skip_eos_and_repeats() {
        let toks: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(eot_ids(&toks, 2, &[]), [0]);
        assert_eq!(eot_ids(&toks, -1, &[0]), [0, 2]);
    }
}
