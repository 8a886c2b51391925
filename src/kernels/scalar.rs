//! The reference kernels: plain Rust, compiled on every target. These functions *are* the
//! specification the SIMD paths are tested against (rules in the parent module's docs).

use std::ops::Range;

use half::f16;
use pipit_format::blocks::k_scale_min;

use super::{BlockQ8A, DType, Kernels, QK};

/// The scalar table.
pub(crate) const KERNELS: Kernels = Kernels {
    name: "scalar",
    quantize_act,
    matmul_q8a: [
        matmul_q8a_q8_0,
        matmul_q8a_q4_0,
        matmul_q8a_q4_1,
        matmul_q8a_q5_0,
        matmul_q8a_q5_1,
        matmul_q8a_q4_k,
        matmul_q8a_q5_k,
        matmul_q8a_q6_k,
    ],
    #[cfg(test)]
    isums: [
        isums_q8_0, isums_q4_0, isums_q4_1, isums_q5_0, isums_q5_1, isums_q4_k, isums_q5_k,
        isums_q6_k,
    ],
    matmul_f32: [
        matmul_f32_f32,
        matmul_f32_f16,
        matmul_f32_q8_0,
        matmul_f32_q4_0,
        matmul_f32_q4_1,
        matmul_f32_q5_0,
        matmul_f32_q5_1,
        matmul_f32_q4_k,
        matmul_f32_q5_k,
        matmul_f32_q6_k,
    ],
    dequant_row: [
        dequant_f32,
        dequant_f16,
        dequant_q8_0,
        dequant_q4_0,
        dequant_q4_1,
        dequant_q5_0,
        dequant_q5_1,
        dequant_q4_k,
        dequant_q5_k,
        dequant_q6_k,
    ],
    glu: [glu_silu, glu_gelu_tanh],
    wsum,
    log_sum_exp,
    softmax,
};

/// Bytes of one block of each quantized dtype (the format's sizes, as constants).
pub(crate) const Q8_0_BYTES: usize = DType::Q8_0.block_bytes();
pub(crate) const Q4_0_BYTES: usize = DType::Q4_0.block_bytes();
pub(crate) const Q4_1_BYTES: usize = DType::Q4_1.block_bytes();
pub(crate) const Q5_0_BYTES: usize = DType::Q5_0.block_bytes();
pub(crate) const Q5_1_BYTES: usize = DType::Q5_1.block_bytes();
pub(crate) const Q4_K_BYTES: usize = DType::Q4_K.block_bytes();
pub(crate) const Q5_K_BYTES: usize = DType::Q5_K.block_bytes();
pub(crate) const Q6_K_BYTES: usize = DType::Q6_K.block_bytes();

/// e^x from basic arithmetic only, so loops over slices vectorize (libm's expf is a call per
/// element) and every platform gets the same bits. Relative error below 2e-7; 0 below -87.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding 1.5 * 2^23 rounds to the nearest integer k without a libm call, and leaves k in
    // the low bits of the sum's mantissa (read back by integer subtraction, which vectorizes
    // where a float-to-int cast with Rust's saturating semantics does not).
    const ROUND: f32 = 12_582_912.0;
    let xc = x.clamp(-87.0, 88.0);
    let kr = xc * LOG2_E + ROUND;
    let k = kr - ROUND;
    let ki = (kr.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = (xc - k * LN2_HI) - k * LN2_LO;
    // exp(r) for |r| <= ln2/2 by its Taylor series to degree 7.
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // k lies in -126..=127 after the clamp, so 2^k is a normal f32.
    let scale = f32::from_bits((ki.wrapping_add(127) as u32) << 23);
    if x < -87.0 {
        0.0
    } else {
        p * scale
    }
}

/// tanh approximation of GELU, as Gemma uses: tanh(y) = 1 - 2 / (e^(2y) + 1).
#[inline(always)]
pub(crate) fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let y = SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x);
    let tanh = 1.0 - 2.0 / (exp(2.0 * y) + 1.0);
    0.5 * x * (1.0 + tanh)
}

/// x * sigmoid(x).
#[inline(always)]
pub(crate) fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// `gate[i] = act(gate[i]) * up[i]`, written so that a caller compiled with wider vector
/// features vectorizes it with the same IEEE operations (so every path gets the same bits).
#[inline(always)]
pub(crate) fn glu<const GELU: bool>(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = if GELU { gelu_tanh(*g) } else { silu(*g) } * u;
    }
}

/// Weighted sums of the rows of `v` (`v.len() / n` rows of `n`): output row q (of
/// `out.len() / n`) is `sum_j p[q * p_stride + j] * v_j`, each element summed from 0 in row
/// order with one multiply and one add per term (no FMA), `v` read once for up to four
/// output rows, so
/// that a caller compiled with wider vector features vectorizes it across the row with the
/// same bits, and an output row's bits do not depend on the rows computed beside it.
#[inline(always)]
pub(crate) fn wsum_rows(p: &[f32], p_stride: usize, v: &[f32], out: &mut [f32], n: usize) {
    if n == 0 {
        return;
    }
    let m = out.len() / n;
    let mut q = 0;
    while q < m {
        let mq = (m - q).min(4);
        let (pq, oq) = (&p[q * p_stride..], &mut out[q * n..(q + mq) * n]);
        match mq {
            4 => wsum_block::<4>(pq, p_stride, v, oq, n),
            3 => wsum_block::<3>(pq, p_stride, v, oq, n),
            2 => wsum_block::<2>(pq, p_stride, v, oq, n),
            _ => wsum_block::<1>(pq, p_stride, v, oq, n),
        }
        q += mq;
    }
}

/// `M` output rows of [`wsum_rows`], 16 elements at a time: the partial sums of a chunk stay
/// in a fixed-size array (registers, once vectorized) while every value row goes by.
#[inline(always)]
fn wsum_block<const M: usize>(p: &[f32], p_stride: usize, v: &[f32], out: &mut [f32], n: usize) {
    const W: usize = 16;
    let len = v.len() / n;
    let mut i0 = 0;
    while i0 < n {
        let w = (n - i0).min(W);
        let mut acc = [[0.0f32; W]; M];
        if w == W {
            for j in 0..len {
                let vj: &[f32; W] = v[j * n + i0..j * n + i0 + W]
                    .try_into()
                    .unwrap_or(&[0.0; W]);
                for (q, aq) in acc.iter_mut().enumerate() {
                    let pj = p[q * p_stride + j];
                    for (a, &x) in aq.iter_mut().zip(vj) {
                        *a += pj * x;
                    }
                }
            }
        } else {
            for j in 0..len {
                let vj = &v[j * n + i0..j * n + i0 + w];
                for (q, aq) in acc.iter_mut().enumerate() {
                    let pj = p[q * p_stride + j];
                    for (a, &x) in aq.iter_mut().zip(vj) {
                        *a += pj * x;
                    }
                }
            }
        }
        for (q, aq) in acc.iter().enumerate() {
            out[q * n + i0..q * n + i0 + w].copy_from_slice(&aq[..w]);
        }
        i0 += w;
    }
}

/// The largest element of `row` (`-inf` for an empty row), as eight lanes of running maxima
/// (so it vectorizes) folded with the tail.
#[inline(always)]
fn lane_max(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for (m, &v) in lanes.iter_mut().zip(c) {
            *m = if v > *m { v } else { *m };
        }
    }
    chunks
        .remainder()
        .iter()
        .chain(&lanes)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max)
}

/// `log(sum(exp(row)))`, stable, in f64 (`-inf` for an empty row). Written so that it
/// vectorizes with the same bits on every path: a lane-wise max, then runs of 64 exponentials
/// summed in eight f32 lanes, and the runs in f64.
#[inline(always)]
pub(crate) fn log_sum_exp_row(row: &[f32]) -> f64 {
    let max = lane_max(row);
    let mut acc = [0.0f64; 8];
    let mut e = [0.0f32; 64];
    for run in row.chunks(64) {
        let e = &mut e[..run.len()];
        for (e, &v) in e.iter_mut().zip(run) {
            *e = exp(v - max);
        }
        // Lane l sums e[l], e[l + 8], ... in order.
        let mut sum = [0.0f32; 8];
        let mut eights = e.chunks_exact(8);
        for c in &mut eights {
            for (s, &x) in sum.iter_mut().zip(c) {
                *s += x;
            }
        }
        for (s, &x) in sum.iter_mut().zip(eights.remainder()) {
            *s += x;
        }
        for (a, s) in acc.iter_mut().zip(sum) {
            *a += f64::from(s);
        }
    }
    let sum = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    f64::from(max) + sum.ln()
}

/// Softmax of `scale * row` in place. Written so that it vectorizes with the same bits on
/// every path: the scaled values, a lane-wise max, the exponentials, their sum in eight f32
/// lanes (lane l sums elements l, l + 8, ... in order; lanes combined pairwise), then one
/// multiply by the inverse of the sum.
#[inline(always)]
pub(crate) fn softmax_row(row: &mut [f32], scale: f32) {
    row.iter_mut().for_each(|v| *v *= scale);
    let max = lane_max(row);
    row.iter_mut().for_each(|v| *v = exp(*v - max));
    let mut sum = [0.0f32; 8];
    let mut eights = row.chunks_exact(8);
    for c in &mut eights {
        for (s, &x) in sum.iter_mut().zip(c) {
            *s += x;
        }
    }
    for (s, &x) in sum.iter_mut().zip(eights.remainder()) {
        *s += x;
    }
    let sum = ((sum[0] + sum[4]) + (sum[1] + sum[5])) + ((sum[2] + sum[6]) + (sum[3] + sum[7]));
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}

unsafe fn softmax(row: &mut [f32], scale: f32) {
    softmax_row(row, scale)
}

unsafe fn log_sum_exp(row: &[f32]) -> f64 {
    log_sum_exp_row(row)
}

unsafe fn wsum(p: &[f32], p_stride: usize, v: &[f32], out: &mut [f32], n: usize) {
    wsum_rows(p, p_stride, v, out, n)
}

unsafe fn glu_silu(gate: &mut [f32], up: &[f32]) {
    glu::<false>(gate, up)
}

unsafe fn glu_gelu_tanh(gate: &mut [f32], up: &[f32]) {
    glu::<true>(gate, up)
}

/// The little-endian f16 at `b[off..off + 2]`, as f32.
#[inline(always)]
pub(crate) fn f16_at(b: &[u8], off: usize) -> f32 {
    f16::from_le_bytes([b[off], b[off + 1]]).to_f32()
}

#[inline(always)]
fn f32_at(b: &[u8], off: usize) -> f32 {
    f32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// `(d, 1/d)` for a block whose largest magnitude is `amax`: `(NaN, 0)` when `amax` is NaN or
/// infinite (the block holds a non-finite value, which must reach the output), `(0, 0)` when
/// `d` is zero or subnormal. Shared by every path so the scale is bit-identical.
#[inline(always)]
pub(crate) fn act_scale(amax: f32) -> (f32, f32) {
    let d = amax / 127.0;
    if d.is_normal() {
        (d, 1.0 / d)
    } else if amax.is_finite() {
        (0.0, 0.0)
    } else {
        (f32::NAN, 0.0)
    }
}

/// `|x|` as bits: for non-negative floats the integer order is the numeric order, with every
/// NaN above infinity, so an integer max over these never loses a NaN (`f32::max` would).
#[inline(always)]
pub(crate) fn abs_bits(x: f32) -> u32 {
    x.to_bits() & 0x7fff_ffff
}

/// The block a non-finite `amax` quantizes to: NaN scale and sum, zero integers.
pub(crate) const NON_FINITE_BLOCK: BlockQ8A = BlockQ8A {
    d: f32::NAN,
    s: f32::NAN,
    qs: [0; QK],
};

/// Quantizes one block given its `amax` (the rounding rule of the module docs).
#[inline]
pub(crate) fn quantize_block(x: &[f32], amax: f32) -> BlockQ8A {
    let (d, id) = act_scale(amax);
    if d.is_nan() {
        return NON_FINITE_BLOCK;
    }
    let mut qs = [0i8; QK];
    let mut sum = 0i32;
    for (q, &v) in qs.iter_mut().zip(x) {
        // `as` saturates, so this never overflows i8 (`v` is finite here).
        *q = (v * id).round_ties_even() as i8;
        sum += i32::from(*q);
    }
    BlockQ8A {
        d,
        s: d * sum as f32,
        qs,
    }
}

/// Reference activation quantizer.
pub fn quantize_act(x: &[f32], out: &mut [BlockQ8A]) {
    for (xb, o) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let amax = f32::from_bits(xb.iter().map(|&v| abs_bits(v)).max().unwrap_or(0));
        *o = quantize_block(xb, amax);
    }
}

/// Exact dot of one Q8_0 block with one activation block.
#[inline]
pub(crate) fn isum_q8_0(w: &[u8], a: &[i8; QK]) -> i32 {
    w[2..2 + QK]
        .iter()
        .zip(a)
        .map(|(&q, &x)| i32::from(q as i8) * i32::from(x))
        .sum()
}

/// Exact dot of one Q4_0 block (nibble - 8) with one activation block.
#[inline]
pub(crate) fn isum_q4_0(w: &[u8], a: &[i8; QK]) -> i32 {
    let qs = &w[2..18];
    (0..16)
        .map(|j| {
            (i32::from(qs[j] & 15) - 8) * i32::from(a[j])
                + (i32::from(qs[j] >> 4) - 8) * i32::from(a[j + 16])
        })
        .sum()
}

/// Exact dot of one Q4_1 block (raw nibble) with one activation block.
#[inline]
pub(crate) fn isum_q4_1(w: &[u8], a: &[i8; QK]) -> i32 {
    let qs = &w[4..20];
    (0..16)
        .map(|j| {
            i32::from(qs[j] & 15) * i32::from(a[j]) + i32::from(qs[j] >> 4) * i32::from(a[j + 16])
        })
        .sum()
}

/// The reference q8a matmul: `term(block_bytes, j, act)` is the f32 contribution of
/// sub-block `j` (of 32 weights) of one weight block of `bb` bytes and `QK * subs` weights
/// against its activation block, added to the row's accumulator in order.
///
/// # Safety
/// The preconditions of [`super::MatmulQ8aFn`], with `bb` the block size of the weights.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn matmul_q8a_with(
    w: &[u8],
    cols: usize,
    rows: Range<usize>,
    xq: &[BlockQ8A],
    n_tok: usize,
    out: *mut f32,
    out_stride: usize,
    bb: usize,
    subs: usize,
    term: impl Fn(&[u8], usize, &BlockQ8A) -> f32,
) {
    let nb = cols / (QK * subs);
    for t in 0..n_tok {
        let x = &xq[t * nb * subs..(t + 1) * nb * subs];
        for r in rows.clone() {
            let row = &w[r * nb * bb..(r + 1) * nb * bb];
            let mut acc = 0f32;
            for (wb, xs) in row.chunks_exact(bb).zip(x.chunks_exact(subs)) {
                for (j, a) in xs.iter().enumerate() {
                    acc += term(wb, j, a);
                }
            }
            // SAFETY: the caller guarantees `out` is writable at t * out_stride + r.
            unsafe { *out.add(t * out_stride + r) = acc };
        }
    }
}

/// The contribution of sub-block `j` of block `wb` of `dtype` against activation block `a`:
/// the f32 combination rule of the module docs, with [`isum`] as the integer sum.
#[inline(always)]
pub(crate) fn term(dtype: DType, wb: &[u8], j: usize, a: &BlockQ8A) -> f32 {
    let isum = isum(dtype, wb, j, &a.qs) as f32;
    match dtype {
        DType::Q8_0 | DType::Q4_0 | DType::Q5_0 => (f16_at(wb, 0) * a.d) * isum,
        DType::Q4_1 | DType::Q5_1 => (f16_at(wb, 0) * a.d) * isum + f16_at(wb, 2) * a.s,
        DType::Q4_K | DType::Q5_K => {
            let m = f32::from(k_scale_min(&wb[4..16], j).1);
            (f16_at(wb, 0) * a.d) * isum - (f16_at(wb, 2) * m) * a.s
        }
        DType::Q6_K => (f16_at(wb, 208) * a.d) * isum,
        DType::F32 | DType::F16 => 0.0,
    }
}

/// The exact integer sum of sub-block `j` (32 weights) of block `wb` against `a`:
/// `sum_i w_i * a_i` with the integer weights `w_i` of the module docs.
#[inline(always)]
pub(crate) fn isum(dtype: DType, wb: &[u8], j: usize, a: &[i8; QK]) -> i32 {
    match dtype {
        DType::Q8_0 => isum_q8_0(wb, a),
        DType::Q4_0 => isum_q4_0(wb, a),
        DType::Q4_1 => isum_q4_1(wb, a),
        DType::Q5_0 => isum_q5(&wb[2..22], a, 16),
        DType::Q5_1 => isum_q5(&wb[4..24], a, 0),
        DType::Q4_K | DType::Q5_K => isum_q45k(wb, j, a, dtype == DType::Q5_K),
        DType::Q6_K => isum_q6k(wb, j, a),
        DType::F32 | DType::F16 => 0,
    }
}

/// `Q5_0`/`Q5_1` (`qh` then `qs` in `b`): `sum (q_i - off) * a_i`.
#[inline(always)]
fn isum_q5(b: &[u8], a: &[i8; QK], off: i32) -> i32 {
    let qh = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let qs = &b[4..20];
    (0..16)
        .map(|j| {
            let lo = i32::from(qs[j] & 15) | (((qh >> j) & 1) as i32) << 4;
            let hi = i32::from(qs[j] >> 4) | (((qh >> (j + 16)) & 1) as i32) << 4;
            (lo - off) * i32::from(a[j]) + (hi - off) * i32::from(a[j + 16])
        })
        .sum()
}

/// `Q4_K`/`Q5_K` sub-block `j`: `sc_j * sum q_i * a_i` (the minimum enters through `s`).
#[inline(always)]
fn isum_q45k(wb: &[u8], j: usize, a: &[i8; QK], five: bool) -> i32 {
    let (sc, _) = k_scale_min(&wb[4..16], j);
    let qs = if five { &wb[48..176] } else { &wb[16..144] };
    let chunk = &qs[QK * (j / 2)..QK * (j / 2) + QK];
    let shift = 4 * (j % 2);
    let dot: i32 = chunk
        .iter()
        .enumerate()
        .map(|(l, &byte)| {
            let mut q = i32::from((byte >> shift) & 15);
            if five {
                q |= i32::from((wb[16 + l] >> j) & 1) << 4;
            }
            q * i32::from(a[l])
        })
        .sum();
    i32::from(sc) * dot
}

/// `Q6_K` sub-block `j` (two scale groups of 16): `sum_g sc_g * sum (q_i - 32) * a_i`.
#[inline(always)]
fn isum_q6k(wb: &[u8], j: usize, a: &[i8; QK]) -> i32 {
    let (h, k) = (j / 4, j % 4);
    let ql = &wb[64 * h + 32 * (k & 1)..64 * h + 32 * (k & 1) + 32];
    let qh = &wb[128 + 32 * h..128 + 32 * h + 32];
    let q = |l: usize| {
        let low = i32::from((ql[l] >> (4 * (k / 2))) & 15);
        let high = i32::from((qh[l] >> (2 * k)) & 3);
        (low | (high << 4)) - 32
    };
    (0..2)
        .map(|g| {
            let sc = i32::from(wb[192 + 2 * j + g] as i8);
            let dot: i32 = (16 * g..16 * g + 16).map(|l| q(l) * i32::from(a[l])).sum();
            sc * dot
        })
        .sum()
}

macro_rules! matmul_q8a_fns {
    ($($name:ident, $isums:ident: $dtype:ident;)*) => {$(
        unsafe fn $name(w: &[u8], cols: usize, rows: Range<usize>, xq: &[BlockQ8A], n_tok: usize, out: *mut f32, out_stride: usize) {
            const D: DType = DType::$dtype;
            // SAFETY: forwarded preconditions.
            unsafe {
                matmul_q8a_with(w, cols, rows, xq, n_tok, out, out_stride, D.block_bytes(),
                    D.block_elems() / QK, |wb, j, a| term(D, wb, j, a))
            }
        }
        #[cfg(test)]
        fn $isums(w_row: &[u8], xq: &[BlockQ8A], out: &mut [i32]) {
            const D: DType = DType::$dtype;
            let subs = D.block_elems() / QK;
            for ((wb, xs), os) in w_row.chunks_exact(D.block_bytes()).zip(xq.chunks_exact(subs)).zip(out.chunks_exact_mut(subs)) {
                for (j, (a, o)) in xs.iter().zip(os).enumerate() {
                    *o = isum(D, wb, j, &a.qs);
                }
            }
        }
    )*};
}
matmul_q8a_fns! {
    matmul_q8a_q8_0, isums_q8_0: Q8_0;
    matmul_q8a_q4_0, isums_q4_0: Q4_0;
    matmul_q8a_q4_1, isums_q4_1: Q4_1;
    matmul_q8a_q5_0, isums_q5_0: Q5_0;
    matmul_q8a_q5_1, isums_q5_1: Q5_1;
    matmul_q8a_q4_k, isums_q4_k: Q4_K;
    matmul_q8a_q5_k, isums_q5_k: Q5_K;
    matmul_q8a_q6_k, isums_q6_k: Q6_K;
}

/// The reference f32-activation matmul: dequantizes each row into `row_buf` chunks of one
/// block and sums `w_i * x_i` sequentially.
///
/// # Safety
/// The preconditions of [`super::MatmulF32Fn`]; `eb` elements of `bb` bytes per block.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn matmul_f32_with(
    w: &[u8],
    cols: usize,
    rows: Range<usize>,
    x: &[f32],
    n_tok: usize,
    out: *mut f32,
    out_stride: usize,
    eb: usize,
    bb: usize,
    deq: fn(&[u8], &mut [f32]),
) {
    let nb = cols / eb;
    let mut buf = [0f32; pipit_format::blocks::QK_K];
    for t in 0..n_tok {
        let xt = &x[t * cols..(t + 1) * cols];
        for r in rows.clone() {
            let row = &w[r * nb * bb..(r + 1) * nb * bb];
            let mut acc = 0f32;
            for (wb, xb) in row.chunks_exact(bb).zip(xt.chunks_exact(eb)) {
                deq(wb, &mut buf[..eb]);
                for (&wv, &xv) in buf[..eb].iter().zip(xb) {
                    acc += wv * xv;
                }
            }
            // SAFETY: the caller guarantees `out` is writable at t * out_stride + r.
            unsafe { *out.add(t * out_stride + r) = acc };
        }
    }
}

macro_rules! matmul_f32_fns {
    ($($name:ident: $eb:expr, $bb:expr, $deq:ident;)*) => {$(
        unsafe fn $name(w: &[u8], cols: usize, rows: Range<usize>, x: &[f32], n_tok: usize, out: *mut f32, out_stride: usize) {
            // SAFETY: forwarded preconditions.
            unsafe { matmul_f32_with(w, cols, rows, x, n_tok, out, out_stride, $eb, $bb, $deq) }
        }
    )*};
}
matmul_f32_fns! {
    matmul_f32_f32: 1, 4, dequant_f32;
    matmul_f32_f16: 1, 2, dequant_f16;
    matmul_f32_q8_0: QK, Q8_0_BYTES, dequant_q8_0;
    matmul_f32_q4_0: QK, Q4_0_BYTES, dequant_q4_0;
    matmul_f32_q4_1: QK, Q4_1_BYTES, dequant_q4_1;
    matmul_f32_q5_0: QK, Q5_0_BYTES, dequant_q5_0;
    matmul_f32_q5_1: QK, Q5_1_BYTES, dequant_q5_1;
    matmul_f32_q4_k: 256, Q4_K_BYTES, dequant_q4_k;
    matmul_f32_q5_k: 256, Q5_K_BYTES, dequant_q5_k;
    matmul_f32_q6_k: 256, Q6_K_BYTES, dequant_q6_k;
}

fn dequant_f32(w: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(w.chunks_exact(4)) {
        *o = f32_at(c, 0);
    }
}

fn dequant_f16(w: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(w.chunks_exact(2)) {
        *o = f16_at(c, 0);
    }
}

fn dequant_q8_0(w: &[u8], out: &mut [f32]) {
    for (o, b) in out.chunks_exact_mut(QK).zip(w.chunks_exact(Q8_0_BYTES)) {
        let d = f16_at(b, 0);
        for (v, &q) in o.iter_mut().zip(&b[2..]) {
            *v = d * f32::from(q as i8);
        }
    }
}

fn dequant_q4_0(w: &[u8], out: &mut [f32]) {
    for (o, b) in out.chunks_exact_mut(QK).zip(w.chunks_exact(Q4_0_BYTES)) {
        let d = f16_at(b, 0);
        for j in 0..16 {
            o[j] = d * (f32::from(b[2 + j] & 15) - 8.0);
            o[j + 16] = d * (f32::from(b[2 + j] >> 4) - 8.0);
        }
    }
}

fn dequant_q4_1(w: &[u8], out: &mut [f32]) {
    for (o, b) in out.chunks_exact_mut(QK).zip(w.chunks_exact(Q4_1_BYTES)) {
        let d = f16_at(b, 0);
        let m = f16_at(b, 2);
        for j in 0..16 {
            o[j] = d * f32::from(b[4 + j] & 15) + m;
            o[j + 16] = d * f32::from(b[4 + j] >> 4) + m;
        }
    }
}

/// Dequantizes whole blocks of `dtype` with the format crate's rule (the one definition).
fn dequant_format(dtype: DType, w: &[u8], out: &mut [f32]) {
    let r = pipit_format::blocks::dequantize(dtype, w, out);
    debug_assert!(r.is_ok(), "dequant_row: {dtype} length mismatch");
}

macro_rules! dequant_fns {
    ($($name:ident: $dtype:ident;)*) => {$(
        fn $name(w: &[u8], out: &mut [f32]) {
            dequant_format(DType::$dtype, w, out)
        }
    )*};
}
dequant_fns! {
    dequant_q5_0: Q5_0;
    dequant_q5_1: Q5_1;
    dequant_q4_k: Q4_K;
    dequant_q5_k: Q5_K;
    dequant_q6_k: Q6_K;
}

/// The scalar table's entries with the first `N` replaced by `head`: a SIMD table that
/// vectorizes only the leading dtypes of a per-dtype table takes the reference for the rest.
/// (The aarch64 tables fill every entry.)
#[cfg(target_arch = "x86_64")]
pub(crate) const fn with_head<T: Copy, const N: usize, const M: usize>(
    head: [T; N],
    reference: [T; M],
) -> [T; M] {
    let mut out = reference;
    let mut i = 0;
    while i < N {
        out[i] = head[i];
        i += 1;
    }
    out
}
