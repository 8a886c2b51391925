//! Dequantize-matmul kernels: a scalar reference (the specification, compiled everywhere) and
//! SIMD paths chosen once at run time through one dispatch table, [`Kernels`].
//!
//! # Numerics (every path follows these rules)
//! - **Activation quantization** ([`Kernels::quantize_act`]): per block of 32,
//!   `amax = max |x_i|`, `d = amax / 127` (one IEEE division). If `amax` is NaN or infinite
//!   (some `x_i` is not finite) the block is `d = s = NaN`, `qs = 0`, so that the non-finite
//!   value reaches the output (and becomes a numeric error) instead of vanishing; the max
//!   must therefore not skip NaN (`f32::max` does: paths take an integer max of the
//!   magnitudes' bits). Else, if `d` is not a normal f32 (zero, subnormal), the block is all
//!   zero (`d = s = 0`, `qs = 0`). Otherwise
//!   `id = 1 / d` and `q_i = round_ties_even(x_i * id)` (one multiply, no FMA; ties to even is
//!   what `cvtps2dq`/`fcvtns` do in the default rounding mode), which lies in `-127..=127`;
//!   `s = d * (sum q_i as f32)`. Every path produces bit-identical blocks for any input.
//! - **Integer block dot products**: one activation block meets one sub-block of 32 weights
//!   (a whole block for the 32-value types, sub-block `j` of a 256-value K-quant block):
//!   `isum = sum_i w_i * a_i`, exact in i32, where `w_i` is the integer weight: `qs[i]` for
//!   Q8_0, `q - 8` for Q4_0, `q - 16` for Q5_0, the raw `q` for Q4_1 and Q5_1, `sc_j * q` for
//!   Q4_K/Q5_K (`sc_j` the sub-block's 6-bit scale), and `sc_g * (q - 32)` for Q6_K (`sc_g`
//!   the i8 scale of the half of 16 the value is in). Identical on every path (tested
//!   through the test hook `Kernels::block_isums`). Activation blocks must hold `qs` in
//!   `-127..=127` (as [`Kernels::quantize_act`] produces).
//! - **f32 combination** (scalar reference, `scalar::term`): per output, `acc = 0.0`, then for
//!   each sub-block in order `acc += (d_w * d_a) * isum as f32`, plus `m_w * s_a` for
//!   Q4_1/Q5_1, minus `(dmin * m_j) * s_a` for Q4_K/Q5_K (`d_w` is the block's f16 scale, the
//!   super-block's `d` for the K-quants). SIMD paths sum the same terms in another
//!   order (partial sums within a block, fused multiply-adds): they agree with the reference
//!   to within `1e-5 * sum_b |d_w * d_a| * sum_i |w_i * a_i|` (+ the minimum terms' sizes),
//!   the scale of the rounding error of any summation order (the tests' stated tolerance).
//! - **f32 activations** ([`Kernels::matmul_f32`]): reference is the
//!   sequential sum `acc += w_i * x_i`; SIMD within `1e-5 * sum_i |w_i * x_i|`.
//! - **Dequantization** ([`Kernels::dequant_row`]) is bit-identical on every path:
//!   `d * q` (Q8_0), `d * (q - 8)` (Q4_0), `d * q + m` (Q4_1, no FMA), exact for F16/F32;
//!   the other types follow `pipit_format::blocks::dequantize`.
//!
//! Weights are plain `&[u8]` in the file layout of `formats/SPEC.md`, read unaligned: no
//! kernel assumes any alignment of the weight bytes.
//!
//! # Adding a path
//! Each architecture module builds `static` [`Kernels`] tables (`..scalar::KERNELS` fills what
//! it does not vectorize) and a detection function; [`select`] and [`available`] list them.
//! Every SIMD function is a `#[target_feature]` `unsafe fn`, reachable only through a table
//! that [`select`]/[`kernels`] hand out after detecting the feature.

use std::ops::Range;
use std::sync::OnceLock;

use bytemuck::{Pod, Zeroable};

pub use pipit_format::DType;

use crate::threadpool::ThreadPool;
use crate::{Error, Result};

/// The `#[target_feature]` entry points of every SIMD table (x86 and aarch64): each
/// `kind name = kernel;` defines an `unsafe fn name` of the table type `kind` names (`q8a`:
/// `MatmulQ8aFn`, `isums`: `IsumsFn` (test builds only), `f32`: `MatmulF32Fn`, `dequant`:
/// `DequantFn`, `glu`: `GluFn`, `wsum`: `WsumFn`, `lse`: `LseFn`, `softmax`: `SoftmaxFn`)
/// that calls the `#[inline(always)]` generic `kernel` with `features` enabled.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
macro_rules! entries {
    ($features:literal; $($kind:ident $name:ident = $kernel:expr;)*) => {$(
        entries!(@$kind $features, $name, $kernel);
    )*};
    (@q8a $features:literal, $name:ident, $kernel:expr) => {
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $name(w: &[u8], cols: usize, rows: std::ops::Range<usize>, xq: &[$crate::kernels::BlockQ8A], n_tok: usize, out: *mut f32, out_stride: usize) {
            ($kernel)(w, cols, rows, xq, n_tok, out, out_stride)
        }
    };
    (@isums $features:literal, $name:ident, $kernel:expr) => {
        #[cfg(test)]
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $name(w_row: &[u8], xq: &[$crate::kernels::BlockQ8A], out: &mut [i32]) {
            ($kernel)(w_row, xq, out)
        }
    };
    (@f32 $features:literal, $name:ident, $kernel:expr) => {
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $name(w: &[u8], cols: usize, rows: std::ops::Range<usize>, x: &[f32], n_tok: usize, out: *mut f32, out_stride: usize) {
            ($kernel)(w, cols, rows, x, n_tok, out, out_stride)
        }
    };
    (@dequant $features:literal, $name:ident, $kernel:expr) => {
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $name(w: &[u8], out: &mut [f32]) {
            ($kernel)(w, out)
        }
    };
    (@glu $features:literal, $name:ident, $kernel:expr) => {
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $name(gate: &mut [f32], up: &[f32]) {
            ($kernel)(gate, up)
        }
    };
    (@lse $features:literal, $name:ident, $kernel:expr) => {
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $name(row: &[f32]) -> f64 {
            ($kernel)(row)
        }
    };
    (@softmax $features:literal, $name:ident, $kernel:expr) => {
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $name(row: &mut [f32], scale: f32) {
            ($kernel)(row, scale)
        }
    };
    (@wsum $features:literal, $name:ident, $kernel:expr) => {
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $name(p: &[f32], p_stride: usize, v: &[f32], out: &mut [f32], n: usize) {
            ($kernel)(p, p_stride, v, out, n)
        }
    };
}

#[cfg(target_arch = "aarch64")]
mod aarch64;
pub mod scalar;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod tiles;
#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod tests;

/// Elements per quantization block (all quantized dtypes and [`BlockQ8A`]).
pub const QK: usize = 32;

/// One block of 32 activations quantized to i8 for integer dot products.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct BlockQ8A {
    /// Scale: `value_i = d * qs[i]`.
    pub d: f32,
    /// `d * sum(qs)`, used by the minimum terms (Q4_1, Q5_1, Q4_K, Q5_K).
    pub s: f32,
    /// Quantized values, in `-127..=127`.
    pub qs: [i8; QK],
}
const _: () = assert!(size_of::<BlockQ8A>() == 40);

/// A weight matrix in file layout: `rows` rows of `cols` elements, row-major, each row a whole
/// number of blocks.
#[derive(Clone, Copy, Debug)]
pub struct QMatrix<'a> {
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
}

impl<'a> QMatrix<'a> {
    /// Checks that `data` holds exactly `rows` rows of `cols` elements of `dtype`.
    pub fn new(dtype: DType, rows: usize, cols: usize, data: &'a [u8]) -> Result<Self> {
        let row_bytes = row_bytes(dtype, cols).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "matrix of {dtype}: cols = {cols} is not a whole number of blocks"
            ))
        })?;
        let need = rows.checked_mul(row_bytes).ok_or_else(|| {
            Error::InvalidArgument(format!("matrix of {rows} x {cols} {dtype}: size overflows"))
        })?;
        if data.len() != need {
            return Err(Error::InvalidArgument(format!(
                "matrix of {rows} x {cols} {dtype}: {} bytes given, {need} expected",
                data.len()
            )));
        }
        Ok(QMatrix {
            dtype,
            rows,
            cols,
            data,
        })
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        row_bytes(self.dtype, self.cols).unwrap_or(0)
    }

    /// Panics unless the fields are consistent (what [`QMatrix::new`] checks); the SIMD
    /// kernels rely on this before reading `data`.
    fn validate(&self) -> usize {
        let rb = row_bytes(self.dtype, self.cols).unwrap_or_else(|| {
            panic!(
                "QMatrix: cols = {} is not whole {} blocks",
                self.cols, self.dtype
            )
        });
        let need = self.rows.checked_mul(rb).expect("QMatrix: size overflows");
        assert!(
            self.data.len() >= need,
            "QMatrix: {} bytes for {} x {} {}, need {need}",
            self.data.len(),
            self.rows,
            self.cols,
            self.dtype
        );
        rb
    }
}

/// Bytes of one row of `cols` elements, `None` if `cols` is not a whole number of blocks.
pub fn row_bytes(dtype: DType, cols: usize) -> Option<usize> {
    if !cols.is_multiple_of(dtype.block_elems()) {
        return None;
    }
    (cols / dtype.block_elems()).checked_mul(dtype.block_bytes())
}

/// `x.len() == 32 * out.len()`.
pub(crate) type QuantizeFn = unsafe fn(x: &[f32], out: &mut [BlockQ8A]);
/// `out[t * out_stride + r] = dot(W[r], x_t)`. Preconditions (checked by the safe wrappers):
/// `w` holds at least `rows.end` rows of `cols` elements, `xq.len() >= n_tok * cols / 32`,
/// and `out` is valid for writes at every `t * out_stride + r` (t < n_tok, r in rows) that
/// no other thread accesses meanwhile.
pub(crate) type MatmulQ8aFn = unsafe fn(
    w: &[u8],
    cols: usize,
    rows: Range<usize>,
    xq: &[BlockQ8A],
    n_tok: usize,
    out: *mut f32,
    out_stride: usize,
);
/// As [`MatmulQ8aFn`] with f32 activations: `x.len() >= n_tok * cols`, token t at `x[t * cols..]`.
pub(crate) type MatmulF32Fn = unsafe fn(
    w: &[u8],
    cols: usize,
    rows: Range<usize>,
    x: &[f32],
    n_tok: usize,
    out: *mut f32,
    out_stride: usize,
);
/// Per-block integer sums of one row: `out.len() == xq.len()` blocks, `w_row` that many blocks
/// (test hooks: compiled in test builds only).
#[cfg(test)]
pub(crate) type IsumsFn = unsafe fn(w_row: &[u8], xq: &[BlockQ8A], out: &mut [i32]);
/// One row: `w_row` holds exactly `out.len()` elements.
pub(crate) type DequantFn = unsafe fn(w_row: &[u8], out: &mut [f32]);
/// `gate[i] = act(gate[i]) * up[i]`; `gate.len() == up.len()`.
pub(crate) type GluFn = unsafe fn(gate: &mut [f32], up: &[f32]);
/// Output row q: `sum_j p[q * p_stride + j] * v[j * n..]`; checked by [`Kernels::wsum`].
pub(crate) type WsumFn =
    unsafe fn(p: &[f32], p_stride: usize, v: &[f32], out: &mut [f32], n: usize);
/// `log(sum(exp(row)))` (any length).
pub(crate) type LseFn = unsafe fn(row: &[f32]) -> f64;
/// Softmax of `scale * row` in place (any length).
pub(crate) type SoftmaxFn = unsafe fn(row: &mut [f32], scale: f32);

/// One set of kernels for one instruction-set level. Obtain it from [`kernels`], [`select`]
/// or [`available`]; the table exists only for paths this CPU supports.
pub struct Kernels {
    /// Path name as accepted by `PIPIT_KERNELS` (`scalar`, `avx2`, `avx512vnni`, ...).
    pub name: &'static str,
    pub(crate) quantize_act: QuantizeFn,
    /// Indexed by [`qindex`]: the order of [`DType::QUANTIZED`].
    pub(crate) matmul_q8a: [MatmulQ8aFn; N_QUANT],
    /// Indexed by [`qindex`]; test builds only.
    #[cfg(test)]
    pub(crate) isums: [IsumsFn; N_QUANT],
    /// Indexed by `DType::code()`: the order of [`DType::ALL`].
    pub(crate) matmul_f32: [MatmulF32Fn; N_DTYPE],
    /// Indexed by `DType::code()`.
    pub(crate) dequant_row: [DequantFn; N_DTYPE],
    /// Indexed by [`Glu`]: the gated activations of the feed-forward block.
    pub(crate) glu: [GluFn; 2],
    pub(crate) wsum: WsumFn,
    pub(crate) log_sum_exp: LseFn,
    pub(crate) softmax: SoftmaxFn,
}

/// The gated activation of a feed-forward block (see [`Kernels::glu`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Glu {
    /// SwiGLU: `silu(gate) * up`.
    Silu = 0,
    /// GeGLU with the tanh approximation of GELU: `gelu_tanh(gate) * up`.
    GeluTanh = 1,
}

impl std::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernels")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Number of dtypes (entries of the per-dtype tables).
pub(crate) const N_DTYPE: usize = DType::ALL.len();
/// Number of quantized dtypes (entries of the int8-activation tables).
pub(crate) const N_QUANT: usize = DType::QUANTIZED.len();

/// Weight dtype selectors of the const-generic kernels, on every path: the dtype's index in
/// [`DType::QUANTIZED`], the order of the `matmul_q8a`/`isums` tables.
const Q8_0: u8 = selector(DType::Q8_0);
const Q4_0: u8 = selector(DType::Q4_0);
const Q4_1: u8 = selector(DType::Q4_1);
// x86's Q5 kernels take a bool (Q5_1 or not) instead; aarch64's take these.
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
const Q5_0: u8 = selector(DType::Q5_0);
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
const Q5_1: u8 = selector(DType::Q5_1);
const Q4_K: u8 = selector(DType::Q4_K);
const Q5_K: u8 = selector(DType::Q5_K);
const Q6_K: u8 = selector(DType::Q6_K);

/// The selector of quantized dtype `d`: its index in [`DType::QUANTIZED`] (a compile error
/// for a float dtype).
const fn selector(d: DType) -> u8 {
    match d.quant_index() {
        Some(i) => i as u8,
        None => panic!("a float dtype has no selector"),
    }
}

/// Bytes of one block of each selector.
const BLOCK_BYTES: [usize; N_QUANT] = {
    let mut b = [0; N_QUANT];
    let mut i = 0;
    while i < N_QUANT {
        b[i] = DType::QUANTIZED[i].block_bytes();
        i += 1;
    }
    b
};

/// Bytes of one block of selector `dt`.
#[inline(always)]
const fn block_bytes(dt: u8) -> usize {
    BLOCK_BYTES[dt as usize]
}

/// Index of a quantized dtype in the `matmul_q8a`/`isums` tables; panics for float dtypes.
fn qindex(dtype: DType) -> usize {
    dtype
        .quant_index()
        .unwrap_or_else(|| panic!("matmul_q8a: {dtype} weights need f32 activations (matmul_f32)"))
}

fn dindex(dtype: DType) -> usize {
    dtype.code() as usize
}

/// Panics unless `out` can hold `out[t * out_stride + r]` for every t < n_tok, r in rows,
/// with distinct (t, r) at distinct positions.
fn check_out(out_len: usize, n_tok: usize, out_stride: usize, rows: &Range<usize>) {
    if n_tok == 0 || rows.is_empty() {
        return;
    }
    assert!(
        n_tok == 1 || out_stride >= rows.end,
        "out_stride {out_stride} < rows.end {} with {n_tok} tokens",
        rows.end
    );
    let need = (n_tok - 1)
        .checked_mul(out_stride)
        .and_then(|v| v.checked_add(rows.end))
        .expect("output size overflows");
    assert!(out_len >= need, "out has {out_len} elements, need {need}");
}

impl Kernels {
    /// Quantizes activations to [`BlockQ8A`] (rounding rule in the module docs).
    /// Panics unless `x.len() == 32 * out.len()`.
    pub fn quantize_act(&self, x: &[f32], out: &mut [BlockQ8A]) {
        assert_eq!(
            x.len(),
            QK * out.len(),
            "quantize_act: x.len() != 32 * out.len()"
        );
        // SAFETY: lengths checked above; the table exists only when its CPU features were
        // detected (see `select`).
        unsafe { (self.quantize_act)(x, out) }
    }

    /// `out[t * out_stride + r] = dot(W[r], x_t)` for r in `rows`, t in `0..n_tok`, with
    /// token t's activations at `xq[t * cols / 32..]`. Any quantized weight dtype.
    /// Panics on inconsistent shapes or a float weight dtype.
    pub fn matmul_q8a(
        &self,
        w: &QMatrix,
        xq: &[BlockQ8A],
        n_tok: usize,
        out: &mut [f32],
        out_stride: usize,
        rows: Range<usize>,
    ) {
        let f = self.matmul_q8a[qindex(w.dtype)];
        check_q8a(w, xq, n_tok, out.len(), out_stride, &rows);
        // SAFETY: shapes checked by `check_q8a`; `out` is exclusively borrowed; the table's
        // CPU features were detected before it was handed out.
        unsafe {
            f(
                w.data,
                w.cols,
                rows,
                xq,
                n_tok,
                out.as_mut_ptr(),
                out_stride,
            )
        }
    }

    /// [`Kernels::matmul_q8a`] over all rows of `w`, split across `pool`'s threads by rows.
    pub fn matmul_q8a_par(
        &self,
        pool: &ThreadPool,
        w: &QMatrix,
        xq: &[BlockQ8A],
        n_tok: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        let f = self.matmul_q8a[qindex(w.dtype)];
        let all = 0..w.rows;
        check_q8a(w, xq, n_tok, out.len(), out_stride, &all);
        let out = SyncOut(out.as_mut_ptr());
        split_rows(pool, w.rows, n_tok, |rows| {
            // SAFETY: shapes checked above for all rows; each task gets a disjoint row range
            // and `check_out` ensured distinct (t, r) map to distinct elements of `out`, which
            // is exclusively borrowed for the duration of `pool.run`.
            unsafe { f(w.data, w.cols, rows, xq, n_tok, out.get(), out_stride) }
        });
    }

    /// Like [`Kernels::matmul_q8a`] with f32 activations, token t at `x[t * cols..]`; any
    /// weight dtype (F32/F16 rows or quantized blocks dequantized on the fly).
    pub fn matmul_f32(
        &self,
        w: &QMatrix,
        x: &[f32],
        n_tok: usize,
        out: &mut [f32],
        out_stride: usize,
        rows: Range<usize>,
    ) {
        let f = self.matmul_f32[dindex(w.dtype)];
        check_f32(w, x, n_tok, out.len(), out_stride, &rows);
        // SAFETY: as in `matmul_q8a`.
        unsafe { f(w.data, w.cols, rows, x, n_tok, out.as_mut_ptr(), out_stride) }
    }

    /// [`Kernels::matmul_f32`] over all rows of `w`, split across `pool`'s threads by rows.
    pub fn matmul_f32_par(
        &self,
        pool: &ThreadPool,
        w: &QMatrix,
        x: &[f32],
        n_tok: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        let f = self.matmul_f32[dindex(w.dtype)];
        let all = 0..w.rows;
        check_f32(w, x, n_tok, out.len(), out_stride, &all);
        let out = SyncOut(out.as_mut_ptr());
        split_rows(pool, w.rows, n_tok, |rows| {
            // SAFETY: as in `matmul_q8a_par`.
            unsafe { f(w.data, w.cols, rows, x, n_tok, out.get(), out_stride) }
        });
    }

    /// Row `row` of `w` dequantized to f32 (embedding lookup). Panics unless
    /// `row < w.rows` and `out.len() == w.cols`.
    pub fn dequant_row(&self, w: &QMatrix, row: usize, out: &mut [f32]) {
        let rb = w.validate();
        assert!(row < w.rows, "dequant_row: row {row} >= {}", w.rows);
        assert_eq!(out.len(), w.cols, "dequant_row: out.len() != cols");
        let bytes = &w.data[row * rb..(row + 1) * rb];
        // SAFETY: `bytes` holds exactly `cols` elements; CPU features detected.
        unsafe { (self.dequant_row[dindex(w.dtype)])(bytes, out) }
    }

    /// Every row of `w` dequantized to f32, row after row, in one call: the values
    /// [`Kernels::dequant_row`] gives row by row (the rows' bytes are whole blocks, so they
    /// read as one long row). Panics unless `out.len() == w.rows * w.cols`.
    pub fn dequant_rows(&self, w: &QMatrix, out: &mut [f32]) {
        let rb = w.validate();
        let n = w.rows.checked_mul(w.cols).expect("dequant_rows: size overflows");
        assert_eq!(out.len(), n, "dequant_rows: out.len() != rows * cols");
        let bytes = &w.data[..w.rows * rb];
        // SAFETY: `bytes` holds exactly `rows * cols` elements in whole blocks; CPU features
        // detected.
        unsafe { (self.dequant_row[dindex(w.dtype)])(bytes, out) }
    }

    /// `gate[i] = act(gate[i]) * up[i]`, bit-identical on every path (the scalar reference's
    /// operations, vectorized). Panics if the lengths differ.
    pub fn glu(&self, act: Glu, gate: &mut [f32], up: &[f32]) {
        assert_eq!(gate.len(), up.len(), "glu: lengths differ");
        // SAFETY: lengths checked; CPU features detected.
        unsafe { (self.glu[act as usize])(gate, up) }
    }

    /// Attention's weighted sums of value rows: `v` holds `v.len() / n` rows of `n`, `out`
    /// holds `out.len() / n` rows of `n`, and output row q is `sum_j p[q * p_stride + j] *
    /// v_j`. Each output element is summed in row order with separate multiplies and adds,
    /// so the bits are the same on every path and depend only on that row's weights and the
    /// value rows (not on the other output rows or any padding). Panics unless `n > 0`
    /// divides `v.len()` and `out.len()`, and `p` holds every weight read.
    pub fn wsum(&self, p: &[f32], p_stride: usize, v: &[f32], out: &mut [f32], n: usize) {
        assert!(
            n > 0 && v.len().is_multiple_of(n) && out.len().is_multiple_of(n),
            "wsum: v or out is not whole rows of {n}"
        );
        let (len, m) = (v.len() / n, out.len() / n);
        if m > 0 {
            let need = (m - 1)
                .checked_mul(p_stride)
                .and_then(|x| x.checked_add(len))
                .expect("wsum: weight size overflows");
            assert!(
                p.len() >= need,
                "wsum: p has {} weights, need {need}",
                p.len()
            );
        }
        // SAFETY: shapes checked; CPU features detected.
        unsafe { (self.wsum)(p, p_stride, v, out, n) }
    }

    /// `log(sum(exp(row)))` in f64, stable: a lane-wise max, then runs of 64 exponentials
    /// summed in eight f32 lanes and the runs in f64 (`scalar::log_sum_exp_row`). The same
    /// operations in the same order on every path, so the same bits; `-inf` for an empty row.
    pub fn log_sum_exp(&self, row: &[f32]) -> f64 {
        // SAFETY: any slice is valid; the table's CPU features were detected.
        unsafe { (self.log_sum_exp)(row) }
    }

    /// Softmax of `scale * row`, in place: the scaled values, a lane-wise max, the
    /// exponentials summed in eight f32 lanes, then one multiply by the inverse of the sum
    /// (`scalar::softmax_row`). The same operations in the same order on every path, so the
    /// same bits.
    pub fn softmax(&self, row: &mut [f32], scale: f32) {
        // SAFETY: any slice is valid; the table's CPU features were detected.
        unsafe { (self.softmax)(row, scale) }
    }

    /// Test hook: the exact per-block integer sums of row `row` of `w` (one per 32 weights)
    /// against `xq`, computed with the same integer primitive as this path's matmul.
    #[cfg(test)]
    pub fn block_isums(&self, w: &QMatrix, row: usize, xq: &[BlockQ8A], out: &mut [i32]) {
        let f = self.isums[qindex(w.dtype)];
        let rb = w.validate();
        assert!(row < w.rows);
        assert_eq!(xq.len(), w.cols / QK);
        assert_eq!(out.len(), xq.len());
        // SAFETY: `w_row` holds `xq.len()` blocks; CPU features detected.
        unsafe { f(&w.data[row * rb..(row + 1) * rb], xq, out) }
    }
}

fn check_q8a(
    w: &QMatrix,
    xq: &[BlockQ8A],
    n_tok: usize,
    out_len: usize,
    out_stride: usize,
    rows: &Range<usize>,
) {
    w.validate();
    assert!(
        rows.start <= rows.end && rows.end <= w.rows,
        "rows {rows:?} outside 0..{}",
        w.rows
    );
    let need = n_tok
        .checked_mul(w.cols / QK)
        .expect("activation size overflows");
    assert!(xq.len() >= need, "xq has {} blocks, need {need}", xq.len());
    check_out(out_len, n_tok, out_stride, rows);
}

fn check_f32(
    w: &QMatrix,
    x: &[f32],
    n_tok: usize,
    out_len: usize,
    out_stride: usize,
    rows: &Range<usize>,
) {
    w.validate();
    assert!(
        rows.start <= rows.end && rows.end <= w.rows,
        "rows {rows:?} outside 0..{}",
        w.rows
    );
    let need = n_tok
        .checked_mul(w.cols)
        .expect("activation size overflows");
    assert!(x.len() >= need, "x has {} elements, need {need}", x.len());
    check_out(out_len, n_tok, out_stride, rows);
}

/// The output pointer shared by the tasks of one parallel matmul.
#[derive(Clone, Copy)]
struct SyncOut(*mut f32);
// SAFETY: the tasks of one `split_rows` call write disjoint elements (disjoint rows, and
// `check_out` makes distinct (token, row) pairs distinct elements), and the pointee is
// exclusively borrowed by the caller until `ThreadPool::run` has joined every task.
unsafe impl Sync for SyncOut {}
unsafe impl Send for SyncOut {}
impl SyncOut {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Rows per task are a multiple of this (the widest row tile of any kernel).
const ROW_ALIGN: usize = 8;

/// Runs `f` on disjoint row ranges covering `0..rows`, in parallel on `pool`.
fn split_rows(pool: &ThreadPool, rows: usize, n_tok: usize, f: impl Fn(Range<usize>) + Sync) {
    let n = pool.n_threads();
    if n <= 1 || rows <= ROW_ALIGN || n_tok == 0 {
        f(0..rows);
        return;
    }
    // Decode: up to 4 tasks per thread (of at least 16 rows), claimed dynamically, so a thread
    // the OS delays holds up only a small share. Prefill: one task per thread, as each task
    // prepares the activations once (and the work per task is large).
    let per_thread = if n_tok == 1 { 4 } else { 1 };
    let n_tasks = (per_thread * n).min(rows / 16).max(n);
    let chunk = rows.div_ceil(n_tasks).next_multiple_of(ROW_ALIGN);
    let n_tasks = rows.div_ceil(chunk);
    pool.run(n_tasks, &|i| {
        let start = i * chunk;
        f(start..(start + chunk).min(rows))
    });
}

/// The scalar reference table, available on every CPU.
pub fn scalar() -> &'static Kernels {
    &scalar::KERNELS
}

/// Every path this CPU supports, the scalar reference first (for tests and benches).
pub fn available() -> Vec<&'static Kernels> {
    let mut v = vec![scalar()];
    #[cfg(target_arch = "x86_64")]
    v.extend(x86::available());
    #[cfg(target_arch = "aarch64")]
    v.extend(aarch64::available());
    v
}

/// Names `PIPIT_KERNELS` accepts.
pub const PATH_NAMES: [&str; 7] = [
    "scalar",
    "avx2",
    "avxvnni",
    "avx512vnni",
    "neon",
    "dotprod",
    "i8mm",
];

/// The table for path `name`; an error if the name is unknown or this CPU (or build) lacks it.
pub fn select(name: &str) -> Result<&'static Kernels> {
    if !PATH_NAMES.contains(&name) {
        return Err(Error::InvalidArgument(format!(
            "unknown kernel path {name:?}; expected one of {}",
            PATH_NAMES.join(", ")
        )));
    }
    available()
        .into_iter()
        .find(|k| k.name == name)
        .ok_or_else(|| {
            Error::Unsupported(format!(
                "kernel path {name:?} is not available on this CPU/build (available: {})",
                available()
                    .iter()
                    .map(|k| k.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

/// The fastest path this CPU supports.
pub fn best() -> &'static Kernels {
    available().last().copied().unwrap_or(scalar())
}

/// The path named by `PIPIT_KERNELS`, or [`best`] when it is unset or empty; an error for an
/// unknown name or a path this CPU lacks.
pub fn kernels_from_env() -> Result<&'static Kernels> {
    match std::env::var("PIPIT_KERNELS") {
        Ok(name) if !name.is_empty() => select(&name),
        _ => Ok(best()),
    }
}

/// The process-wide kernels, chosen once: `PIPIT_KERNELS` if it names an available path,
/// else [`best`]. An invalid `PIPIT_KERNELS` is ignored here; front ends call
/// [`kernels_from_env`] first to report it.
pub fn kernels() -> &'static Kernels {
    static CHOSEN: OnceLock<&'static Kernels> = OnceLock::new();
    CHOSEN.get_or_init(|| kernels_from_env().unwrap_or_else(|_| best()))
}
