//! i8mm kernels (Armv8.6 SMMLA: recent phone cores): matrix-matrix products for `n_tok >= 2`
//! (prefill). SMMLA multiplies a 2x8 i8 matrix by the transpose of another, adding a 2x2 i32
//! tile: with the 64-bit halves of two rows' blocks interleaved (`[row0 k, row1 k]`) and
//! likewise two tokens', four SMMLAs give the exact integer sums of 2 rows x 2 tokens for one
//! block, lanes `[r0 t0, r0 t1, r1 t0, r1 t1]`; these are scaled by `d_w * d_a` lane-wise
//! (`[dw0, dw0, dw1, dw1] * [da0, da1, da0, da1]`) and accumulated with FMLA. Tiles are 4
//! rows x 4 tokens (2 x 2 SMMLA tiles); a lone token, the decode case `n_tok = 1` and rows
//! left over below 4 use the dotprod kernels. The K-quants (`kquant.rs`'s unpacking and
//! scales) scale each sub-block's 2x2 sums by the rows' integer scales before converting
//! them (Q6_K: each half of 16, the first two and last two SMMLAs, by its own), in the
//! operation order of their dotprod tiles. Every other entry is NEON's.
//!
//! # Safety
//! Every `unsafe fn` here requires NEON, dotprod and i8mm, which `available` checks before
//! handing out [`KERNELS`], plus the preconditions of the table types in `kernels/mod.rs`.

#![allow(clippy::needless_range_loop)] // tiles index rows and tokens in lockstep

use std::arch::aarch64::*;
use std::arch::asm;
use std::ops::Range;

use super::super::tiles::{drive, QOperands, Tiler};
use super::super::{block_bytes, Q6_K};
use super::super::{BlockQ8A, Kernels, QK};
use super::dotprod::{self, Sdot};
use super::kquant::{self, Scales, SUBS};
use super::neon::{self, f16x4_at, has_min, is_k, load_a, load_w};

/// `acc` plus SMMLA of `a` (2x8, row-major) and `b` (2x8): lane `2i + j` gains
/// `sum_k a[8i + k] * b[8j + k]`.
#[target_feature(enable = "neon,i8mm")]
#[inline]
unsafe fn smmla(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // SAFETY: the caller guarantees the CPU has i8mm (this fn is reachable only from tables
    // handed out after detecting it); SMMLA touches only the named registers.
    unsafe {
        asm!(
            "smmla {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    acc
}

/// Two blocks (x, y) interleaved by 64-bit halves: `[x0.lo, y0.lo], [x0.hi, y0.hi],
/// [x1.lo, y1.lo], [x1.hi, y1.hi]` (SMMLA operands with x as row 0, y as row 1).
#[inline(always)]
unsafe fn pair(x: &[int8x16_t; 2], y: &[int8x16_t; 2]) -> [int8x16_t; 4] {
    let z = |a: int8x16_t, b: int8x16_t, hi: bool| {
        let (a, b) = (vreinterpretq_s64_s8(a), vreinterpretq_s64_s8(b));
        vreinterpretq_s8_s64(if hi {
            vzip2q_s64(a, b)
        } else {
            vzip1q_s64(a, b)
        })
    };
    [
        z(x[0], y[0], false),
        z(x[0], y[0], true),
        z(x[1], y[1], false),
        z(x[1], y[1], true),
    ]
}

/// The exact 2x2 integer sums of one block: `w` = pair(row0, row1), `a` = pair(tok0, tok1).
#[inline(always)]
unsafe fn mm(w: &[int8x16_t; 4], a: &[int8x16_t; 4]) -> int32x4_t {
    let mut acc = vdupq_n_s32(0);
    for k in 0..4 {
        acc = smmla(acc, w[k], a[k]);
    }
    acc
}

/// `[a, b, a, b]`.
#[inline(always)]
unsafe fn lanes(a: f32, b: f32) -> float32x4_t {
    vld1q_f32([a, b, a, b].as_ptr())
}

/// `2 * RP` rows x `2 * TP` tokens; pointers as in `neon::tile4`.
#[inline(always)]
unsafe fn mm_tile<const DT: u8, const RP: usize, const TP: usize>(
    w: *const u8,
    rb: usize,
    nb: usize,
    x: *const BlockQ8A,
    out: *mut f32,
    out_stride: usize,
) {
    let bb = block_bytes(DT);
    let mut acc = [[vdupq_n_f32(0.0); TP]; RP];
    for b in 0..nb {
        let mut ai = [[vdupq_n_s8(0); 4]; TP];
        let mut da = [vdupq_n_f32(0.0); TP];
        let mut sa = [vdupq_n_f32(0.0); TP];
        for tp in 0..TP {
            let x0 = &*x.add(2 * tp * nb + b);
            let x1 = &*x.add((2 * tp + 1) * nb + b);
            ai[tp] = pair(&load_a(x0), &load_a(x1));
            da[tp] = lanes(x0.d, x1.d);
            if has_min(DT) {
                sa[tp] = lanes(x0.s, x1.s);
            }
        }
        for rp in 0..RP {
            let p0 = w.add(2 * rp * rb + b * bb);
            let p1 = p0.add(rb);
            let wi = pair(&load_w::<DT>(p0), &load_w::<DT>(p1));
            let dw = f16x4_at([p0, p0, p1, p1], 0);
            let mw = if has_min(DT) {
                f16x4_at([p0, p0, p1, p1], 2)
            } else {
                vdupq_n_f32(0.0)
            };
            for tp in 0..TP {
                let i = vcvtq_f32_s32(mm(&wi, &ai[tp]));
                acc[rp][tp] = vfmaq_f32(acc[rp][tp], i, vmulq_f32(dw, da[tp]));
                if has_min(DT) {
                    acc[rp][tp] = vfmaq_f32(acc[rp][tp], mw, sa[tp]);
                }
            }
        }
    }
    store2x2(&acc, out, out_stride);
}

/// Stores `RP x TP` SMMLA accumulators, lanes `[r0 t0, r0 t1, r1 t0, r1 t1]` of row pair
/// `rp` and token pair `tp`, at `out[t * out_stride + r]`.
#[inline(always)]
unsafe fn store2x2<const RP: usize, const TP: usize>(
    acc: &[[float32x4_t; TP]; RP],
    out: *mut f32,
    out_stride: usize,
) {
    for rp in 0..RP {
        for tp in 0..TP {
            let o = out.add(2 * tp * out_stride + 2 * rp);
            let v = acc[rp][tp];
            *o = vgetq_lane_f32::<0>(v);
            *o.add(out_stride) = vgetq_lane_f32::<1>(v);
            *o.add(1) = vgetq_lane_f32::<2>(v);
            *o.add(out_stride + 1) = vgetq_lane_f32::<3>(v);
        }
    }
}

/// `[v0, v0, v1, v1]` (`HI = false`) or `[v2, v2, v3, v3]`: the lanes of row pair 0 or 1
/// of a lane-per-row vector in SMMLA's `[r0 t0, r0 t1, r1 t0, r1 t1]` order.
#[inline(always)]
unsafe fn rows2<const HI: bool>(v: float32x4_t) -> float32x4_t {
    if HI {
        vzip2q_f32(v, v)
    } else {
        vzip1q_f32(v, v)
    }
}

/// As [`rows2`] for i32 lanes.
#[inline(always)]
unsafe fn irows2<const HI: bool>(v: int32x4_t) -> int32x4_t {
    if HI {
        vzip2q_s32(v, v)
    } else {
        vzip1q_s32(v, v)
    }
}

/// The exact 2x2 `isum`s of sub-block `j` of K-quant `K` (row pair `HI` of the 4 rows whose
/// scales are `s`): `w` = pair(row 2 HI, row 2 HI + 1), `a` = pair(tok0, tok1).
#[inline(always)]
unsafe fn isum_k<const K: u8, const HI: bool>(
    w: &[int8x16_t; 4],
    a: &[int8x16_t; 4],
    s: &Scales,
    j: usize,
) -> int32x4_t {
    if K == Q6_K {
        // Values 0..16 (the first two 8-byte chunks) and 16..32 have their own scales.
        let lo = smmla(smmla(vdupq_n_s32(0), w[0], a[0]), w[1], a[1]);
        let hi = smmla(smmla(vdupq_n_s32(0), w[2], a[2]), w[3], a[3]);
        let lo = vmulq_s32(lo, irows2::<HI>(s[2 * j]));
        vmlaq_s32(lo, hi, irows2::<HI>(s[2 * j + 1]))
    } else {
        vmulq_s32(mm(w, a), irows2::<HI>(s[j]))
    }
}

/// 4 rows (super-blocks at `p`) x `2 * TP` tokens of K-quant `K`; the operations of each
/// output are those of `kquant::tile` in the same order, so the two agree bit for bit.
#[inline(always)]
unsafe fn mm_tile_k<const K: u8, const TP: usize>(
    p: [*const u8; 4],
    nb: usize,
    x: *const BlockQ8A,
    nsub: usize,
    out: *mut f32,
    out_stride: usize,
) {
    let bb = block_bytes(K);
    let mut acc = [[vdupq_n_f32(0.0); TP]; 2];
    for b in 0..nb {
        let pb = p.map(|pr| pr.add(b * bb));
        let xb = x.add(b * SUBS);
        let tok = |tp: usize, k: usize, j: usize| &*xb.add((2 * tp + k) * nsub + j);
        let d = f16x4_at(pb, if K == Q6_K { 208 } else { 0 });
        let s = kquant::scales::<K>(pb);
        if K != Q6_K {
            let dmin = f16x4_at(pb, 2);
            for j in 0..SUBS {
                let dm = vmulq_f32(dmin, vcvtq_f32_s32(s[SUBS + j]));
                for tp in 0..TP {
                    let sa = lanes(tok(tp, 0, j).s, tok(tp, 1, j).s);
                    acc[0][tp] = vfmsq_f32(acc[0][tp], rows2::<false>(dm), sa);
                    acc[1][tp] = vfmsq_f32(acc[1][tp], rows2::<true>(dm), sa);
                }
            }
        }
        for j in 0..SUBS {
            let w = pb.map(|pr| kquant::unpack::<K>(pr, j));
            let (w01, w23) = (pair(&w[0], &w[1]), pair(&w[2], &w[3]));
            for tp in 0..TP {
                let (x0, x1) = (tok(tp, 0, j), tok(tp, 1, j));
                let a = pair(&load_a(x0), &load_a(x1));
                let da = lanes(x0.d, x1.d);
                let i01 = vcvtq_f32_s32(isum_k::<K, false>(&w01, &a, &s, j));
                let i23 = vcvtq_f32_s32(isum_k::<K, true>(&w23, &a, &s, j));
                acc[0][tp] = vfmaq_f32(acc[0][tp], i01, vmulq_f32(rows2::<false>(d), da));
                acc[1][tp] = vfmaq_f32(acc[1][tp], i23, vmulq_f32(rows2::<true>(d), da));
            }
        }
    }
    store2x2(&acc, out, out_stride);
}

/// The K-quant matmul, through the shared register-tile loop: 4 rows x 4 (or 2) tokens of
/// SMMLA tiles, dotprod for a last token and for single rows.
#[inline(always)]
unsafe fn matmul_k<const K: u8>(
    w: &[u8],
    cols: usize,
    rows: Range<usize>,
    xq: &[BlockQ8A],
    n_tok: usize,
    out: *mut f32,
    out_stride: usize,
) {
    let tiles = MmK::<K>(kquant::KTiles::new(w, cols, xq, out, out_stride));
    drive::<_, 4, 4>(&tiles, rows, n_tok)
}

/// The K-quant matmul's tiles: SMMLA for 4 rows by 4 or 2 tokens, the dotprod tiles for the
/// other shapes.
struct MmK<const K: u8>(kquant::KTiles<Sdot, K>);

impl<const K: u8> Tiler for MmK<K> {
    #[inline(always)]
    unsafe fn tile<const R: usize, const T: usize>(&self, r: usize, t: usize) {
        if R == 4 && (T == 4 || T == 2) {
            let (p, x, out) = self.0.at::<R>(r, t);
            let (nb, nsub, os) = self.0.dims();
            if T == 4 {
                mm_tile_k::<K, 2>(p, nb, x, nsub, out, os);
            } else {
                mm_tile_k::<K, 1>(p, nb, x, nsub, out, os);
            }
        } else {
            self.0.tile::<R, T>(r, t);
        }
    }
}

/// The q8a matmul, through the shared register-tile loop: 4x4 SMMLA tiles, a 4x2 tile for a
/// token pair, dotprod for the rest.
#[inline(always)]
unsafe fn matmul_q8a_mm<const DT: u8>(
    w: &[u8],
    cols: usize,
    rows: Range<usize>,
    xq: &[BlockQ8A],
    n_tok: usize,
    out: *mut f32,
    out_stride: usize,
) {
    if n_tok < 2 {
        return neon::matmul_q8a::<Sdot, DT>(w, cols, rows, xq, n_tok, out, out_stride);
    }
    if is_k(DT) {
        return matmul_k::<DT>(w, cols, rows, xq, n_tok, out, out_stride);
    }
    let nb = cols / QK;
    let o = QOperands::new(w, nb * block_bytes(DT), nb, xq, out, out_stride);
    drive::<_, 4, 4>(&Mm::<DT>(o), rows, n_tok)
}

/// The q8a matmul's tiles: SMMLA for 4 rows by 4 or 2 tokens, the dotprod tiles for the
/// other shapes.
struct Mm<const DT: u8>(QOperands);

impl<const DT: u8> Tiler for Mm<DT> {
    #[inline(always)]
    unsafe fn tile<const R: usize, const T: usize>(&self, r: usize, t: usize) {
        let (w, x, out) = self.0.at(r, t);
        let (rb, nb, os) = (self.0.rb, self.0.n, self.0.out_stride);
        match (R, T) {
            (4, 4) => mm_tile::<DT, 2, 2>(w, rb, nb, x, out, os),
            (4, 2) => mm_tile::<DT, 2, 1>(w, rb, nb, x, out, os),
            (4, _) => neon::tile4::<Sdot, DT, T>(w, rb, nb, x, out, os),
            _ => neon::tile1::<Sdot, DT, T>(w, nb, x, out, os),
        }
    }
}

/// Per-block sums through SMMLA (each block paired with itself; lane 0 is `w . a`).
#[inline(always)]
#[cfg(test)]
unsafe fn isums_mm<const DT: u8>(w_row: &[u8], xq: &[BlockQ8A], out: &mut [i32]) {
    if is_k(DT) {
        return isums_k::<DT>(w_row, xq, out);
    }
    let bb = block_bytes(DT);
    for (b, o) in out.iter_mut().enumerate() {
        let wv = load_w::<DT>(w_row.as_ptr().add(b * bb));
        let a = load_a(&xq[b]);
        *o = vgetq_lane_s32::<0>(mm(&pair(&wv, &wv), &pair(&a, &a)));
    }
}

/// Per-sub-block K-quant sums through SMMLA (the row and its activations each paired with
/// themselves; lane 0 is the row's `isum`).
#[inline(always)]
#[cfg(test)]
unsafe fn isums_k<const K: u8>(w_row: &[u8], xq: &[BlockQ8A], out: &mut [i32]) {
    let bb = block_bytes(K);
    for b in 0..out.len() / SUBS {
        let p = w_row.as_ptr().add(b * bb);
        let s = kquant::scales::<K>([p; 4]);
        for j in 0..SUBS {
            let w = kquant::unpack::<K>(p, j);
            let a = load_a(&xq[b * SUBS + j]);
            let i = isum_k::<K, false>(&pair(&w, &w), &pair(&a, &a), &s, j);
            out[b * SUBS + j] = vgetq_lane_s32::<0>(i);
        }
    }
}

neon::q8a_entry_points!("neon,dotprod,i8mm", matmul_q8a_mm, isums_mm);

/// Test hook: the 2x2 SMMLA tile of one block of rows 0 and 1 of `w` (one block per row)
/// with tokens `x0`, `x1`, lanes `[r0 t0, r0 t1, r1 t0, r1 t1]`.
#[cfg(test)]
#[target_feature(enable = "neon,dotprod,i8mm")]
pub(super) unsafe fn tile_isums(
    w: &[u8],
    dtype: super::super::DType,
    x0: &BlockQ8A,
    x1: &BlockQ8A,
) -> [i32; 4] {
    use super::super::{DType, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0};
    unsafe fn go<const DT: u8>(w: &[u8], x0: &BlockQ8A, x1: &BlockQ8A) -> [i32; 4] {
        let bb = block_bytes(DT);
        assert!(w.len() >= 2 * bb);
        let wi = pair(&load_w::<DT>(w.as_ptr()), &load_w::<DT>(w.as_ptr().add(bb)));
        let i = mm(&wi, &pair(&load_a(x0), &load_a(x1)));
        let mut o = [0i32; 4];
        vst1q_s32(o.as_mut_ptr(), i);
        o
    }
    match dtype {
        DType::Q8_0 => go::<{ Q8_0 }>(w, x0, x1),
        DType::Q4_0 => go::<{ Q4_0 }>(w, x0, x1),
        DType::Q4_1 => go::<{ Q4_1 }>(w, x0, x1),
        DType::Q5_0 => go::<{ Q5_0 }>(w, x0, x1),
        _ => go::<{ Q5_1 }>(w, x0, x1),
    }
}

/// The i8mm table: SMMLA for `n_tok >= 2`, dotprod for decode, the rest from NEON.
pub(super) static KERNELS: Kernels = Kernels {
    name: "i8mm",
    matmul_q8a: Q8A_MATMULS,
    #[cfg(test)]
    isums: Q8A_ISUMS,
    ..dotprod::KERNELS
};
