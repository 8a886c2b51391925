//! NEON kernels (Armv8-A Advanced SIMD: Cortex-A53/A72, Raspberry Pi 3/4), and the generic
//! integer tiles the `dotprod` and `i8mm` paths instantiate with their own product.
//!
//! Integer products ([`Idot`]): one weight block (two 16-byte vectors of signed integers:
//! Q8_0 `qs`, Q4_0 `nibble - 8`, Q4_1 the raw nibble, Q5_0/Q5_1 likewise with the fifth bit
//! (`q5.rs`); low nibbles pair with activations 0..16, high nibbles with 16..32) times one
//! activation block, as four exact i32 lanes. NEON uses SMULL/SMLAL2 into i16 lanes and
//! SADALP into i32: Q8_0 puts two products in an i16 lane (`2 * 128 * 127 < 2^15`), the
//! types of at most 6 bits four (`4 * 32 * 127 < 2^15`). The K-quants have tiles of their
//! own (`kquant.rs`) on the same products; [`matmul_q8a`] and [`isums`] dispatch to them.
//! Tiles of 4 rows reduce the four rows' lanes with ADDP into one vector `[row0..row3]`,
//! scale it by `d_w * d_a` (FCVTL converts the four f16 scales at once) and accumulate with
//! FMLA, so a tile ends with one store per token and no horizontal sums. Block sums are below
//! `2^24`, so their conversion to f32 is exact.
//!
//! # Safety
//! Every `unsafe fn` here requires NEON (the baseline of every aarch64 Linux target; the
//! entry points also enable it explicitly), the CPU features of the [`Idot`] it is
//! instantiated with, and the slice-size preconditions of the table types in
//! `kernels/mod.rs`. All loads read inside the rows, blocks and slices those preconditions
//! guarantee; weight bytes are read with byte loads (no alignment assumed).

#![allow(clippy::needless_range_loop)] // tiles index rows and tokens in lockstep

use std::arch::aarch64::*;
use std::marker::PhantomData;
use std::ops::Range;

use super::super::scalar;
use super::super::tiles::{drive, FOperands, QOperands, Tiler};
use super::super::{block_bytes, BlockQ8A, Kernels, QK};
use super::super::{Q4_0, Q4_1, Q4_K, Q5_0, Q5_1, Q5_K, Q6_K, Q8_0};
use super::kquant::{self, matmul_f32 as matmul_fk};
use super::{f16_bits, f16_to_f32, f16x4_to_f32, f16x8_to_f32, q5};

/// Whether a 32-value selector has a minimum (`m * s_a` term): Q4_1, Q5_1.
pub(super) const fn has_min(dt: u8) -> bool {
    dt == Q4_1 || dt == Q5_1
}

/// Whether a selector is a 256-value K-quant (served by `kquant`).
pub(super) const fn is_k(dt: u8) -> bool {
    dt >= Q4_K
}

/// An exact integer product of one weight block and one activation block.
pub(super) trait Idot {
    /// Most tokens per 4-row Q8_0 tile that fit the 32 vector registers without spills.
    const Q8_0_TOKENS: usize;
    /// Four i32 lanes whose sum is `sum_i w_i * a_i`. For `DT != Q8_0` the weights must lie
    /// in `-32..=31` (four products share an i16 lane in `Smull`).
    ///
    /// # Safety
    /// The CPU features of the implementing path.
    unsafe fn dot<const DT: u8>(w: &[int8x16_t; 2], a: &[int8x16_t; 2]) -> int32x4_t;
    /// Four i32 lanes whose sum is the 16-value product `sum_i w_i * a_i` (any i8 `w`,
    /// `a` in `-127..=127`).
    ///
    /// # Safety
    /// The CPU features of the implementing path.
    unsafe fn dot16(w: int8x16_t, a: int8x16_t) -> int32x4_t;
}

/// The NEON product: SMULL/SMLAL2 to i16, SADALP to i32.
pub(super) struct Smull;

impl Idot for Smull {
    const Q8_0_TOKENS: usize = 2;
    #[inline(always)]
    unsafe fn dot<const DT: u8>(w: &[int8x16_t; 2], a: &[int8x16_t; 2]) -> int32x4_t {
        let p0 = vmlal_high_s8(vmull_s8(vget_low_s8(w[0]), vget_low_s8(a[0])), w[0], a[0]);
        if DT == Q8_0 {
            let p1 = vmlal_high_s8(vmull_s8(vget_low_s8(w[1]), vget_low_s8(a[1])), w[1], a[1]);
            vpadalq_s16(vpaddlq_s16(p0), p1)
        } else {
            let p = vmlal_high_s8(
                vmlal_s8(p0, vget_low_s8(w[1]), vget_low_s8(a[1])),
                w[1],
                a[1],
            );
            vpaddlq_s16(p)
        }
    }
    #[inline(always)]
    unsafe fn dot16(w: int8x16_t, a: int8x16_t) -> int32x4_t {
        vpaddlq_s16(vmlal_high_s8(
            vmull_s8(vget_low_s8(w), vget_low_s8(a)),
            w,
            a,
        ))
    }
}

/// The integer weights of the block at `p`.
#[inline(always)]
pub(super) unsafe fn load_w<const DT: u8>(p: *const u8) -> [int8x16_t; 2] {
    match DT {
        Q8_0 => [vld1q_s8(p.add(2).cast()), vld1q_s8(p.add(18).cast())],
        Q5_0 | Q5_1 => q5::load_w(p, DT == Q5_1),
        _ => {
            let q = vld1q_u8(p.add(if DT == Q4_0 { 2 } else { 4 }));
            let lo = vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0f)));
            let hi = vreinterpretq_s8_u8(vshrq_n_u8::<4>(q));
            if DT == Q4_0 {
                let eight = vdupq_n_s8(8);
                [vsubq_s8(lo, eight), vsubq_s8(hi, eight)]
            } else {
                [lo, hi]
            }
        }
    }
}

/// The quantized values of one activation block.
#[inline(always)]
pub(super) unsafe fn load_a(x: &BlockQ8A) -> [int8x16_t; 2] {
    [vld1q_s8(x.qs.as_ptr()), vld1q_s8(x.qs.as_ptr().add(16))]
}

/// The f16 at byte `off` of four blocks, converted together (lane k from `p[k]`).
#[inline(always)]
pub(super) unsafe fn f16x4_at(p: [*const u8; 4], off: usize) -> float32x4_t {
    let mut bits = 0u64;
    for (k, pk) in p.iter().enumerate() {
        bits |= u64::from(f16_bits(pk.add(off))) << (16 * k);
    }
    f16x4_to_f32(bits)
}

/// 4 rows x `T` tokens: `out[t * out_stride + k] = dot(row k, token t)`, `w` at the first
/// row (rows `rb` bytes apart), `x` at the first token (tokens `nb` blocks apart).
#[inline(always)]
pub(super) unsafe fn tile4<D: Idot, const DT: u8, const T: usize>(
    w: *const u8,
    rb: usize,
    nb: usize,
    x: *const BlockQ8A,
    out: *mut f32,
    out_stride: usize,
) {
    let bb = block_bytes(DT);
    let mut acc = [vdupq_n_f32(0.0); T];
    for b in 0..nb {
        let p = [
            w.add(b * bb),
            w.add(rb + b * bb),
            w.add(2 * rb + b * bb),
            w.add(3 * rb + b * bb),
        ];
        let dw = f16x4_at(p, 0);
        let mw = if has_min(DT) {
            f16x4_at(p, 2)
        } else {
            vdupq_n_f32(0.0)
        };
        let wv = [
            load_w::<DT>(p[0]),
            load_w::<DT>(p[1]),
            load_w::<DT>(p[2]),
            load_w::<DT>(p[3]),
        ];
        for t in 0..T {
            let xa = &*x.add(t * nb + b);
            let a = load_a(xa);
            let i01 = vpaddq_s32(D::dot::<DT>(&wv[0], &a), D::dot::<DT>(&wv[1], &a));
            let i23 = vpaddq_s32(D::dot::<DT>(&wv[2], &a), D::dot::<DT>(&wv[3], &a));
            let s = vcvtq_f32_s32(vpaddq_s32(i01, i23));
            acc[t] = vfmaq_f32(acc[t], s, vmulq_n_f32(dw, xa.d));
            if has_min(DT) {
                acc[t] = vfmaq_n_f32(acc[t], mw, xa.s);
            }
        }
    }
    for t in 0..T {
        vst1q_f32(out.add(t * out_stride), acc[t]);
    }
}

/// 1 row x `T` tokens; arguments as in [`tile4`]. Each output takes [`tile4`]'s steps in
/// its order (the block's exact integer sum, then the fused multiply-adds of the scale and of
/// the min term), so a row's bits do not depend on whether it was computed alone.
#[inline(always)]
pub(super) unsafe fn tile1<D: Idot, const DT: u8, const T: usize>(
    w: *const u8,
    nb: usize,
    x: *const BlockQ8A,
    out: *mut f32,
    out_stride: usize,
) {
    let bb = block_bytes(DT);
    let mut acc = [0f32; T];
    for b in 0..nb {
        let p = w.add(b * bb);
        let dw = f16_to_f32(f16_bits(p));
        let mw = if has_min(DT) {
            f16_to_f32(f16_bits(p.add(2)))
        } else {
            0.0
        };
        let wv = load_w::<DT>(p);
        for t in 0..T {
            let xa = &*x.add(t * nb + b);
            let s = vaddvq_s32(D::dot::<DT>(&wv, &load_a(xa))) as f32;
            acc[t] = s.mul_add(dw * xa.d, acc[t]);
            if has_min(DT) {
                acc[t] = mw.mul_add(xa.s, acc[t]);
            }
        }
    }
    for t in 0..T {
        *out.add(t * out_stride) = acc[t];
    }
}

/// The q8a matmul (preconditions of `MatmulQ8aFn`), with product `D`, through the shared
/// register-tile loop: tiles of 4 rows ([`tile4`]) by up to 4 tokens (Q8_0: up to
/// `D::Q8_0_TOKENS`), single rows ([`tile1`]) past the last whole tile.
#[inline(always)]
pub(super) unsafe fn matmul_q8a<D: Idot, const DT: u8>(
    w: &[u8],
    cols: usize,
    rows: Range<usize>,
    xq: &[BlockQ8A],
    n_tok: usize,
    out: *mut f32,
    out_stride: usize,
) {
    if is_k(DT) {
        return kquant::matmul::<D, DT>(w, cols, rows, xq, n_tok, out, out_stride);
    }
    let nb = cols / QK;
    let tiles = Q8aTiles::<D, DT> {
        o: QOperands::new(w, nb * block_bytes(DT), nb, xq, out, out_stride),
        product: PhantomData,
    };
    if DT == Q8_0 && D::Q8_0_TOKENS == 2 {
        drive::<_, 4, 2>(&tiles, rows, n_tok);
    } else {
        drive::<_, 4, 4>(&tiles, rows, n_tok);
    }
}

/// The q8a matmul's tiles with product `D`.
struct Q8aTiles<D, const DT: u8> {
    o: QOperands,
    product: PhantomData<D>,
}

impl<D: Idot, const DT: u8> Tiler for Q8aTiles<D, DT> {
    #[inline(always)]
    unsafe fn tile<const R: usize, const T: usize>(&self, r: usize, t: usize) {
        let (w, x, out) = self.o.at(r, t);
        let (rb, nb, os) = (self.o.rb, self.o.n, self.o.out_stride);
        if R == 4 {
            tile4::<D, DT, T>(w, rb, nb, x, out, os)
        } else {
            tile1::<D, DT, T>(w, nb, x, out, os)
        }
    }
}

/// Per-block integer sums of one row with product `D` (preconditions of `IsumsFn`).
#[inline(always)]
#[cfg(test)]
pub(super) unsafe fn isums<D: Idot, const DT: u8>(w_row: &[u8], xq: &[BlockQ8A], out: &mut [i32]) {
    if is_k(DT) {
        return kquant::isums::<D, DT>(w_row, xq, out);
    }
    let bb = block_bytes(DT);
    for (b, o) in out.iter_mut().enumerate() {
        let w = load_w::<DT>(w_row.as_ptr().add(b * bb));
        *o = vaddvq_s32(D::dot::<DT>(&w, &load_a(&xq[b])));
    }
}

/// The q8a entry points of a path (`entries!`), one pair per dtype: `matmul_q8a_*` through
/// `$matmul` (a generic `fn<const DT: u8>` with the `MatmulQ8aFn` signature) and `isums_*`
/// through `$isums`, and the path's two tables of them in `DType::QUANTIZED` order,
/// `Q8A_MATMULS` and `Q8A_ISUMS`.
macro_rules! q8a_entry_points {
    ($features:literal, $matmul:ident, $isums:ident) => {
        entries! {
            $features;
            q8a matmul_q8a_q8_0 = $matmul::<{ $crate::kernels::Q8_0 }>;
            q8a matmul_q8a_q4_0 = $matmul::<{ $crate::kernels::Q4_0 }>;
            q8a matmul_q8a_q4_1 = $matmul::<{ $crate::kernels::Q4_1 }>;
            q8a matmul_q8a_q5_0 = $matmul::<{ $crate::kernels::Q5_0 }>;
            q8a matmul_q8a_q5_1 = $matmul::<{ $crate::kernels::Q5_1 }>;
            q8a matmul_q8a_q4_k = $matmul::<{ $crate::kernels::Q4_K }>;
            q8a matmul_q8a_q5_k = $matmul::<{ $crate::kernels::Q5_K }>;
            q8a matmul_q8a_q6_k = $matmul::<{ $crate::kernels::Q6_K }>;
            isums isums_q8_0 = $isums::<{ $crate::kernels::Q8_0 }>;
            isums isums_q4_0 = $isums::<{ $crate::kernels::Q4_0 }>;
            isums isums_q4_1 = $isums::<{ $crate::kernels::Q4_1 }>;
            isums isums_q5_0 = $isums::<{ $crate::kernels::Q5_0 }>;
            isums isums_q5_1 = $isums::<{ $crate::kernels::Q5_1 }>;
            isums isums_q4_k = $isums::<{ $crate::kernels::Q4_K }>;
            isums isums_q5_k = $isums::<{ $crate::kernels::Q5_K }>;
            isums isums_q6_k = $isums::<{ $crate::kernels::Q6_K }>;
        }
        /// This path's `matmul_q8a` entries, in `DType::QUANTIZED` order.
        const Q8A_MATMULS: [$crate::kernels::MatmulQ8aFn; $crate::kernels::N_QUANT] = [
            matmul_q8a_q8_0,
            matmul_q8a_q4_0,
            matmul_q8a_q4_1,
            matmul_q8a_q5_0,
            matmul_q8a_q5_1,
            matmul_q8a_q4_k,
            matmul_q8a_q5_k,
            matmul_q8a_q6_k,
        ];
        /// This path's `isums` entries (test hooks), in `DType::QUANTIZED` order.
        #[cfg(test)]
        const Q8A_ISUMS: [$crate::kernels::IsumsFn; $crate::kernels::N_QUANT] = [
            isums_q8_0, isums_q4_0, isums_q4_1, isums_q5_0, isums_q5_1, isums_q4_k, isums_q5_k,
            isums_q6_k,
        ];
    };
}
pub(super) use q8a_entry_points;

#[inline(always)]
unsafe fn matmul_q8a_smull<const DT: u8>(
    w: &[u8],
    cols: usize,
    rows: Range<usize>,
    xq: &[BlockQ8A],
    n_tok: usize,
    out: *mut f32,
    out_stride: usize,
) {
    matmul_q8a::<Smull, DT>(w, cols, rows, xq, n_tok, out, out_stride)
}

#[inline(always)]
#[cfg(test)]
unsafe fn isums_smull<const DT: u8>(w_row: &[u8], xq: &[BlockQ8A], out: &mut [i32]) {
    isums::<Smull, DT>(w_row, xq, out)
}

q8a_entry_points!("neon", matmul_q8a_smull, isums_smull);

/// Quantizes activations, bit-identical to the scalar rule: the same `act_scale`, one FMUL
/// by `1/d`, FCVTNS (ties to even), saturating narrows (as `as i8` saturates).
#[target_feature(enable = "neon")]
unsafe fn quantize_act(x: &[f32], out: &mut [BlockQ8A]) {
    for (xb, o) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let p = xb.as_ptr();
        let mut v = [vdupq_n_f32(0.0); 8];
        for (k, vk) in v.iter_mut().enumerate() {
            *vk = vld1q_f32(p.add(4 * k));
        }
        // Integer max of the magnitudes' bits: a NaN is the largest (scalar::abs_bits).
        let mut m = [vdupq_n_u32(0); 4];
        for k in 0..4 {
            m[k] = vmaxq_u32(
                vreinterpretq_u32_f32(vabsq_f32(v[k])),
                vreinterpretq_u32_f32(vabsq_f32(v[k + 4])),
            );
        }
        let amax = f32::from_bits(vmaxvq_u32(vmaxq_u32(
            vmaxq_u32(m[0], m[1]),
            vmaxq_u32(m[2], m[3]),
        )));
        let (d, id) = scalar::act_scale(amax);
        if d.is_nan() {
            *o = scalar::NON_FINITE_BLOCK;
            continue;
        }
        let mut q = [vdup_n_s16(0); 8];
        for k in 0..8 {
            q[k] = vqmovn_s32(vcvtnq_s32_f32(vmulq_n_f32(v[k], id)));
        }
        let q0 = vcombine_s8(
            vqmovn_s16(vcombine_s16(q[0], q[1])),
            vqmovn_s16(vcombine_s16(q[2], q[3])),
        );
        let q1 = vcombine_s8(
            vqmovn_s16(vcombine_s16(q[4], q[5])),
            vqmovn_s16(vcombine_s16(q[6], q[7])),
        );
        vst1q_s8(o.qs.as_mut_ptr(), q0);
        vst1q_s8(o.qs.as_mut_ptr().add(16), q1);
        let sum = i32::from(vaddlvq_s8(q0)) + i32::from(vaddlvq_s8(q1));
        o.d = d;
        o.s = d * sum as f32;
    }
}

/// Eight F32 (`F16 = false`) or F16 weights at `p` (unaligned) as f32.
#[inline(always)]
unsafe fn load_f8<const F16: bool>(p: *const u8) -> [float32x4_t; 2] {
    if F16 {
        f16x8_to_f32(vld1q_u8(p))
    } else {
        [
            vreinterpretq_f32_u8(vld1q_u8(p)),
            vreinterpretq_f32_u8(vld1q_u8(p.add(16))),
        ]
    }
}

/// One F32/F16 weight at element `j` of the row at `p`.
#[inline(always)]
unsafe fn load_f1<const F16: bool>(p: *const u8, j: usize) -> f32 {
    if F16 {
        f16_to_f32(f16_bits(p.add(2 * j)))
    } else {
        f32::from_le_bytes(std::ptr::read_unaligned(p.add(4 * j).cast::<[u8; 4]>()))
    }
}

/// `R` rows x `T` tokens of an F32/F16-weight matmul: 8 columns per step, scalar tail.
#[inline(always)]
unsafe fn tile_f<const F16: bool, const R: usize, const T: usize>(
    w: *const u8,
    rb: usize,
    cols: usize,
    x: *const f32,
    out: *mut f32,
    out_stride: usize,
) {
    let eb = if F16 { 2 } else { 4 };
    let mut acc = [[vdupq_n_f32(0.0); T]; R];
    let mut i = 0;
    while i + 8 <= cols {
        let mut xv = [[vdupq_n_f32(0.0); 2]; T];
        for (t, v) in xv.iter_mut().enumerate() {
            *v = [
                vld1q_f32(x.add(t * cols + i)),
                vld1q_f32(x.add(t * cols + i + 4)),
            ];
        }
        for r in 0..R {
            let wv = load_f8::<F16>(w.add(r * rb + eb * i));
            for t in 0..T {
                acc[r][t] = vfmaq_f32(acc[r][t], wv[0], xv[t][0]);
                acc[r][t] = vfmaq_f32(acc[r][t], wv[1], xv[t][1]);
            }
        }
        i += 8;
    }
    for r in 0..R {
        let p = w.add(r * rb);
        for t in 0..T {
            let mut tail = 0f32;
            for j in i..cols {
                tail += load_f1::<F16>(p, j) * *x.add(t * cols + j);
            }
            *out.add(t * out_stride + r) = vaddvq_f32(acc[r][t]) + tail;
        }
    }
}

#[inline(always)]
unsafe fn matmul_f<const F16: bool>(
    w: &[u8],
    cols: usize,
    rows: Range<usize>,
    x: &[f32],
    n_tok: usize,
    out: *mut f32,
    out_stride: usize,
) {
    let rb = cols * if F16 { 2 } else { 4 };
    drive::<_, 4, 2>(
        &FTiles::<F16>(FOperands::new(w, rb, cols, x, out, out_stride)),
        rows,
        n_tok,
    )
}

/// The tiles of an F32 or F16 (`F16`) weight matmul with f32 activations.
struct FTiles<const F16: bool>(FOperands);

impl<const F16: bool> Tiler for FTiles<F16> {
    #[inline(always)]
    unsafe fn tile<const R: usize, const T: usize>(&self, r: usize, t: usize) {
        let (w, x, out) = self.0.at(r, t);
        tile_f::<F16, R, T>(w, self.0.rb, self.0.n, x, out, self.0.out_stride)
    }
}

/// The 16 bytes of `q` sign-extended to four i32 vectors (bytes 0-3, 4-7, 8-11, 12-15).
#[inline(always)]
pub(super) unsafe fn widen(q: int8x16_t) -> [int32x4_t; 4] {
    let (lo, hi) = (vmovl_s8(vget_low_s8(q)), vmovl_high_s8(q));
    [
        vmovl_s16(vget_low_s16(lo)),
        vmovl_high_s16(lo),
        vmovl_s16(vget_low_s16(hi)),
        vmovl_high_s16(hi),
    ]
}

/// The 32 weights of the quantized block at `p` as f32: `d * q` (Q8_0), `d * (q - 8)`
/// (Q4_0), `d * q + m` (Q4_1, multiply then add): bit-identical to the scalar dequantizer.
#[inline(always)]
unsafe fn deq_block<const DT: u8>(p: *const u8) -> [float32x4_t; 8] {
    let d = f16_to_f32(f16_bits(p));
    let q = load_w::<DT>(p);
    let mut v = [vdupq_n_f32(0.0); 8];
    for h in 0..2 {
        for (k, ints) in widen(q[h]).into_iter().enumerate() {
            v[4 * h + k] = vmulq_n_f32(vcvtq_f32_s32(ints), d);
        }
    }
    if has_min(DT) {
        let m = vdupq_n_f32(f16_to_f32(f16_bits(p.add(2))));
        for vk in v.iter_mut() {
            *vk = vaddq_f32(*vk, m);
        }
    }
    v
}

/// `R` rows x `T` tokens of a quantized-weight matmul with f32 activations.
#[inline(always)]
unsafe fn tile_fq<const DT: u8, const R: usize, const T: usize>(
    w: *const u8,
    rb: usize,
    cols: usize,
    x: *const f32,
    out: *mut f32,
    out_stride: usize,
) {
    let bb = block_bytes(DT);
    let mut acc = [[vdupq_n_f32(0.0); T]; R];
    for b in 0..cols / QK {
        for r in 0..R {
            let wv = deq_block::<DT>(w.add(r * rb + b * bb));
            for t in 0..T {
                let p = x.add(t * cols + b * QK);
                for (k, &wk) in wv.iter().enumerate() {
                    acc[r][t] = vfmaq_f32(acc[r][t], wk, vld1q_f32(p.add(4 * k)));
                }
            }
        }
    }
    for r in 0..R {
        for t in 0..T {
            *out.add(t * out_stride + r) = vaddvq_f32(acc[r][t]);
        }
    }
}

#[inline(always)]
unsafe fn matmul_fq<const DT: u8>(
    w: &[u8],
    cols: usize,
    rows: Range<usize>,
    x: &[f32],
    n_tok: usize,
    out: *mut f32,
    out_stride: usize,
) {
    let rb = cols / QK * block_bytes(DT);
    let tiles = FqTiles::<DT>(FOperands::new(w, rb, cols, x, out, out_stride));
    drive::<_, 4, 2>(&tiles, rows, n_tok)
}

/// The tiles of a quantized-weight matmul with f32 activations.
struct FqTiles<const DT: u8>(FOperands);

impl<const DT: u8> Tiler for FqTiles<DT> {
    #[inline(always)]
    unsafe fn tile<const R: usize, const T: usize>(&self, r: usize, t: usize) {
        let (w, x, out) = self.0.at(r, t);
        tile_fq::<DT, R, T>(w, self.0.rb, self.0.n, x, out, self.0.out_stride)
    }
}

entries! {
    "neon";
    f32 matmul_f32_f32 = matmul_f::<false>;
    f32 matmul_f32_f16 = matmul_f::<true>;
    f32 matmul_f32_q8_0 = matmul_fq::<Q8_0>;
    f32 matmul_f32_q4_0 = matmul_fq::<Q4_0>;
    f32 matmul_f32_q4_1 = matmul_fq::<Q4_1>;
    f32 matmul_f32_q5_0 = matmul_fq::<Q5_0>;
    f32 matmul_f32_q5_1 = matmul_fq::<Q5_1>;
    f32 matmul_f32_q4_k = matmul_fk::<Q4_K>;
    f32 matmul_f32_q5_k = matmul_fk::<Q5_K>;
    f32 matmul_f32_q6_k = matmul_fk::<Q6_K>;
}

#[target_feature(enable = "neon")]
unsafe fn dequant_f16(w: &[u8], out: &mut [f32]) {
    let n = out.len();
    let (p, o) = (w.as_ptr(), out.as_mut_ptr());
    let mut i = 0;
    while i + 8 <= n {
        let [lo, hi] = f16x8_to_f32(vld1q_u8(p.add(2 * i)));
        vst1q_f32(o.add(i), lo);
        vst1q_f32(o.add(i + 4), hi);
        i += 8;
    }
    while i < n {
        *o.add(i) = f16_to_f32(f16_bits(p.add(2 * i)));
        i += 1;
    }
}

#[inline(always)]
unsafe fn dequant_q<const DT: u8>(w: &[u8], out: &mut [f32]) {
    let bb = block_bytes(DT);
    for (b, o) in out.chunks_exact_mut(QK).enumerate() {
        let v = deq_block::<DT>(w.as_ptr().add(b * bb));
        for (k, &vk) in v.iter().enumerate() {
            vst1q_f32(o.as_mut_ptr().add(4 * k), vk);
        }
    }
}

#[target_feature(enable = "neon")]
unsafe fn dequant_q8_0(w: &[u8], out: &mut [f32]) {
    dequant_q::<Q8_0>(w, out)
}
#[target_feature(enable = "neon")]
unsafe fn dequant_q4_0(w: &[u8], out: &mut [f32]) {
    dequant_q::<Q4_0>(w, out)
}
#[target_feature(enable = "neon")]
unsafe fn dequant_q4_1(w: &[u8], out: &mut [f32]) {
    dequant_q::<Q4_1>(w, out)
}
#[target_feature(enable = "neon")]
unsafe fn dequant_q5_0(w: &[u8], out: &mut [f32]) {
    dequant_q::<Q5_0>(w, out)
}
#[target_feature(enable = "neon")]
unsafe fn dequant_q5_1(w: &[u8], out: &mut [f32]) {
    dequant_q::<Q5_1>(w, out)
}
#[target_feature(enable = "neon")]
unsafe fn dequant_q4_k(w: &[u8], out: &mut [f32]) {
    kquant::dequant::<Q4_K>(w, out)
}
#[target_feature(enable = "neon")]
unsafe fn dequant_q5_k(w: &[u8], out: &mut [f32]) {
    kquant::dequant::<Q5_K>(w, out)
}
#[target_feature(enable = "neon")]
unsafe fn dequant_q6_k(w: &[u8], out: &mut [f32]) {
    kquant::dequant::<Q6_K>(w, out)
}

/// The NEON table.
pub(super) static KERNELS: Kernels = Kernels {
    name: "neon",
    quantize_act,
    matmul_q8a: Q8A_MATMULS,
    #[cfg(test)]
    isums: Q8A_ISUMS,
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
        scalar::KERNELS.dequant_row[0],
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
    // Baseline aarch64 already vectorizes the reference with NEON.
    glu: scalar::KERNELS.glu,
    wsum: scalar::KERNELS.wsum,
    log_sum_exp: scalar::KERNELS.log_sum_exp,
    softmax: scalar::KERNELS.softmax,
};
