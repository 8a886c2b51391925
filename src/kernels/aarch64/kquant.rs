//! Q4_K, Q5_K and Q6_K for the `neon` and `dotprod` paths (and the pieces `i8mm.rs` builds
//! its SMMLA tiles from): tiles of 4 rows x up to 4 tokens, generic over the integer product
//! [`Idot`]; and NEON's `dequant_row` and `matmul_f32` entries for them.
//!
//! A super-block of 256 weights is cut into 8 sub-blocks of 32, one per activation block.
//! Per super-block, a tile decodes the 4 rows' scales once ([`scales`]: the 6-bit `sc_j` and
//! `m_j` of Q4_K/Q5_K, or Q6_K's 16 i8 scales, as 16 bytes per row, transposed by ZIP1/ZIP2
//! and widened into one i32 vector per scale), lane k for row k. Per sub-block, each row's
//! 32 values are unpacked once into two signed byte vectors ([`unpack`]: `0..=15`,
//! `0..=31`, Q6_K `q - 32`) and serve every token of the tile. The product of a row with
//! one activation block reduces across the 4 rows with ADDP into `[row0..row3]`
//! ([`isum4`]) and is multiplied by the rows' integer scales in i32 (Q6_K: each half of 16
//! by its own scale), which gives exactly the `isum` of the module docs of `kernels` (below
//! `2^24`, so its conversion to f32 is exact). It is scaled by `d * d_a` with one FMLA; the
//! minimum terms `-(dmin * m_j) * s_a` of Q4_K/Q5_K take one FMLS per sub-block, first in
//! each super-block.
//!
//! A tile of fewer than 4 rows reads its last row again in the missing lanes and stores only
//! its own, so every output sees the same operations in the same order whatever its tile,
//! batch or thread split.
//!
//! # Safety
//! As in `neon.rs`: NEON, the CPU features of the [`Idot`], and the slice-size preconditions
//! of the table types in `kernels/mod.rs`.

#![allow(clippy::needless_range_loop)] // tiles index rows and tokens in lockstep

use std::arch::aarch64::*;
use std::marker::PhantomData;
use std::ops::Range;

use super::super::tiles::{drive, FOperands, QOperands, Tiler};
use super::super::{block_bytes, Q4_1, Q5_K, Q6_K};
use super::super::{BlockQ8A, QK};
use super::neon::{f16x4_at, load_a, widen, Idot};
use super::{f16_bits, f16_to_f32};

/// Sub-blocks of 32 per super-block.
pub(super) const SUBS: usize = 8;

/// The integer scales of 4 rows' super-blocks, lane k for row k: Q4_K/Q5_K `sc_j` in
/// vector j and `m_j` in vector 8 + j for sub-block j; Q6_K the i8 scale of half h of
/// sub-block j in vector 2 j + h.
pub(super) type Scales = [int32x4_t; 16];

/// The 16 scale bytes of the Q4_K/Q5_K super-block at `p`, `[sc_0..sc_7, m_0..m_7]`, from
/// the 12 packed bytes (the layout of `pipit_format::blocks::k_scale_min`): bytes 0-3 (A)
/// hold the low 6 bits of scales 0-3, bytes 4-7 (B) those of minimums 0-3, bytes 8-11 (C)
/// the low nibbles of scales 4-7 and the high nibbles of minimums 4-7, whose top 2 bits
/// are the top 2 bits of A (scales) and B (minimums).
#[inline(always)]
unsafe fn scale_bytes(p: *const u8) -> int8x16_t {
    // Bytes 4..20 of the block: A, B, C and 4 bytes of `qs`/`qh` (unused).
    let v = vld1q_u8(p.add(4));
    let (ab, c) = (vget_low_u8(v), vget_high_u8(v));
    let low = vand_u8(ab, vdup_n_u8(0x3f));
    let nibbles = vzip1_u32(
        vreinterpret_u32_u8(vand_u8(c, vdup_n_u8(0x0f))),
        vreinterpret_u32_u8(vshr_n_u8::<4>(c)),
    );
    let top = vshl_n_u8::<4>(vshr_n_u8::<6>(ab));
    let high = vreinterpret_u32_u8(vorr_u8(vreinterpret_u8_u32(nibbles), top));
    // low = [sc_0..3, m_0..3], high = [sc_4..7, m_4..7].
    let low = vreinterpret_u32_u8(low);
    vreinterpretq_s8_u32(vcombine_u32(vzip1_u32(low, high), vzip2_u32(low, high)))
}

/// The scales of the super-blocks at `p` (one per row) of selector `K`: each row's 16 scale
/// bytes (all in `-128..=127`) transposed and widened to one i32 vector per byte.
#[inline(always)]
pub(super) unsafe fn scales<const K: u8>(p: [*const u8; 4]) -> Scales {
    let r = p.map(|pr| {
        if K == Q6_K {
            vld1q_s8(pr.add(192).cast())
        } else {
            scale_bytes(pr)
        }
    });
    // Byte g of rows 0-3 side by side: `q[g / 4]` holds groups 4i..4i + 3, 4 bytes each.
    let (x0, x1) = (vzip1q_s8(r[0], r[1]), vzip2q_s8(r[0], r[1]));
    let (y0, y1) = (vzip1q_s8(r[2], r[3]), vzip2q_s8(r[2], r[3]));
    let z = |x: int8x16_t, y: int8x16_t, hi: bool| {
        let (x, y) = (vreinterpretq_s16_s8(x), vreinterpretq_s16_s8(y));
        vreinterpretq_s8_s16(if hi {
            vzip2q_s16(x, y)
        } else {
            vzip1q_s16(x, y)
        })
    };
    let q = [
        z(x0, y0, false),
        z(x0, y0, true),
        z(x1, y1, false),
        z(x1, y1, true),
    ];
    let [a, b, c, d] = q.map(|qi| widen(qi));
    [
        a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1], d[2],
        d[3],
    ]
}

/// Sub-block `j` of the super-block at `p`: values 0..16 and 16..32 as signed bytes.
#[inline(always)]
pub(super) unsafe fn unpack<const K: u8>(p: *const u8, j: usize) -> [int8x16_t; 2] {
    let m15 = vdupq_n_u8(0x0f);
    let mut out = [vdupq_n_s8(0); 2];
    if K == Q6_K {
        // Value 32k + l of half h: low nibble in byte 32 (k & 1) + l of the half's 64 bytes
        // of `ql`, shifted by 4 (k / 2); top 2 bits in byte l of its 32 bytes of `qh`,
        // shifted by 2k.
        let (h, k) = (j / 4, j % 4);
        let ql = p.add(64 * h + 32 * (k & 1));
        let qh = p.add(128 + 32 * h);
        let (sl, sh) = (vdupq_n_s8(-4 * (k / 2) as i8), vdupq_n_s8(-2 * k as i8));
        for (i, o) in out.iter_mut().enumerate() {
            let low = vandq_u8(vshlq_u8(vld1q_u8(ql.add(16 * i)), sl), m15);
            let high = vandq_u8(vshlq_u8(vld1q_u8(qh.add(16 * i)), sh), vdupq_n_u8(3));
            let q = vorrq_u8(low, vshlq_n_u8::<4>(high));
            *o = vsubq_s8(vreinterpretq_s8_u8(q), vdupq_n_s8(32));
        }
        return out;
    }
    // Q4_K/Q5_K: sub-blocks 2i and 2i + 1 are the low and high nibbles of bytes
    // 32i..32i + 31 of `qs`; Q5_K's fifth bit of value l of sub-block j is bit j of `qh[l]`.
    let qs = p.add(if K == Q5_K { 48 } else { 16 } + QK * (j / 2));
    for (i, o) in out.iter_mut().enumerate() {
        let raw = vld1q_u8(qs.add(16 * i));
        let mut u = if j % 2 == 0 {
            vandq_u8(raw, m15)
        } else {
            vshrq_n_u8::<4>(raw)
        };
        if K == Q5_K {
            let qh = vld1q_u8(p.add(16 + 16 * i));
            let bit = vtstq_u8(qh, vdupq_n_u8(1 << j));
            u = vorrq_u8(u, vandq_u8(bit, vdupq_n_u8(0x10)));
        }
        *o = vreinterpretq_s8_u8(u);
    }
    out
}

/// `[sum v0, sum v1, sum v2, sum v3]`.
#[inline(always)]
unsafe fn across(v: [int32x4_t; 4]) -> int32x4_t {
    vpaddq_s32(vpaddq_s32(v[0], v[1]), vpaddq_s32(v[2], v[3]))
}

/// The exact `isum` of sub-block `j` of 4 rows (unpacked in `w`, scales in `s`) against the
/// activation values `a`, lane k for row k.
#[inline(always)]
unsafe fn isum4<D: Idot, const K: u8>(
    w: &[[int8x16_t; 2]; 4],
    a: &[int8x16_t; 2],
    s: &Scales,
    j: usize,
) -> int32x4_t {
    if K == Q6_K {
        let half = |h: usize| across([0, 1, 2, 3].map(|r| D::dot16(w[r][h], a[h])));
        vmlaq_s32(vmulq_s32(half(0), s[2 * j]), half(1), s[2 * j + 1])
    } else {
        // Values below 32: the product of the 4-bit types applies (`Idot::dot`).
        let dots = across([0, 1, 2, 3].map(|r| D::dot::<Q4_1>(&w[r], a)));
        vmulq_s32(dots, s[j])
    }
}

/// 4 rows (super-blocks at `p`, `nb` each; only the first `n_rows` are stored) x `T` tokens
/// (at `x`, `nsub` activation blocks apart), written at `out[t * out_stride + k]`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn tile<D: Idot, const K: u8, const T: usize>(
    p: [*const u8; 4],
    n_rows: usize,
    nb: usize,
    x: *const BlockQ8A,
    nsub: usize,
    out: *mut f32,
    out_stride: usize,
) {
    let bb = block_bytes(K);
    let mut acc = [vdupq_n_f32(0.0); T];
    for b in 0..nb {
        let pb = p.map(|pr| pr.add(b * bb));
        let xb = x.add(b * SUBS);
        let d = f16x4_at(pb, if K == Q6_K { 208 } else { 0 });
        let s = scales::<K>(pb);
        if K != Q6_K {
            let dmin = f16x4_at(pb, 2);
            for j in 0..SUBS {
                let dm = vmulq_f32(dmin, vcvtq_f32_s32(s[SUBS + j]));
                for t in 0..T {
                    let sa = vdupq_n_f32((*xb.add(t * nsub + j)).s);
                    acc[t] = vfmsq_f32(acc[t], dm, sa);
                }
            }
        }
        for j in 0..SUBS {
            let w = pb.map(|pr| unpack::<K>(pr, j));
            for t in 0..T {
                let xa = &*xb.add(t * nsub + j);
                let i = vcvtq_f32_s32(isum4::<D, K>(&w, &load_a(xa), &s, j));
                acc[t] = vfmaq_f32(acc[t], i, vmulq_n_f32(d, xa.d));
            }
        }
    }
    for t in 0..T {
        let o = out.add(t * out_stride);
        if n_rows == 4 {
            vst1q_f32(o, acc[t]);
        } else {
            let mut v = [0f32; 4];
            vst1q_f32(v.as_mut_ptr(), acc[t]);
            for k in 0..n_rows {
                *o.add(k) = v[k];
            }
        }
    }
}

/// The q8a matmul of selector `K` (preconditions of `MatmulQ8aFn`) with product `D`, through
/// the shared register-tile loop: tiles of 4 rows by up to 4 tokens, single rows past the
/// last whole tile.
#[inline(always)]
pub(super) unsafe fn matmul<D: Idot, const K: u8>(
    w: &[u8],
    cols: usize,
    rows: Range<usize>,
    xq: &[BlockQ8A],
    n_tok: usize,
    out: *mut f32,
    out_stride: usize,
) {
    drive::<_, 4, 4>(
        &KTiles::<D, K>::new(w, cols, xq, out, out_stride),
        rows,
        n_tok,
    )
}

/// The K-quant q8a matmul's tiles with product `D`: `o.n` activation blocks (`nb`
/// super-blocks) per row.
pub(super) struct KTiles<D, const K: u8> {
    o: QOperands,
    nb: usize,
    product: PhantomData<D>,
}

impl<D: Idot, const K: u8> KTiles<D, K> {
    #[inline(always)]
    pub(super) fn new(
        w: &[u8],
        cols: usize,
        xq: &[BlockQ8A],
        out: *mut f32,
        out_stride: usize,
    ) -> Self {
        let nsub = cols / QK;
        let nb = nsub / SUBS;
        KTiles {
            o: QOperands::new(w, nb * block_bytes(K), nsub, xq, out, out_stride),
            nb,
            product: PhantomData,
        }
    }

    /// The weights of the `R`-row tile from row `r` (`R` is 4 or 1; one row fills all four
    /// lanes, of which only the first is stored) and its activations and output at token `t`.
    #[inline(always)]
    pub(super) unsafe fn at<const R: usize>(
        &self,
        r: usize,
        t: usize,
    ) -> ([*const u8; 4], *const BlockQ8A, *mut f32) {
        let (w, x, out) = self.o.at(r, t);
        let rows = [0, 1, 2, 3].map(|k: usize| w.add(k.min(R - 1) * self.o.rb));
        (rows, x, out)
    }

    /// Super-blocks per row, activation blocks per token, and the output stride.
    #[inline(always)]
    pub(super) fn dims(&self) -> (usize, usize, usize) {
        (self.nb, self.o.n, self.o.out_stride)
    }
}

impl<D: Idot, const K: u8> Tiler for KTiles<D, K> {
    #[inline(always)]
    unsafe fn tile<const R: usize, const T: usize>(&self, r: usize, t: usize) {
        let (p, x, out) = self.at::<R>(r, t);
        tile::<D, K, T>(p, R, self.nb, x, self.o.n, out, self.o.out_stride)
    }
}

/// Per-sub-block exact sums of one row (test hook), through the tile's [`isum4`].
#[inline(always)]
#[cfg(test)]
pub(super) unsafe fn isums<D: Idot, const K: u8>(w_row: &[u8], xq: &[BlockQ8A], out: &mut [i32]) {
    let bb = block_bytes(K);
    for b in 0..out.len() / SUBS {
        let p = w_row.as_ptr().add(b * bb);
        let s = scales::<K>([p; 4]);
        for j in 0..SUBS {
            let w = [unpack::<K>(p, j); 4];
            let i = isum4::<D, K>(&w, &load_a(&xq[b * SUBS + j]), &s, j);
            out[b * SUBS + j] = vgetq_lane_s32::<0>(i);
        }
    }
}

/// Sub-block `j` of the super-block at `p` (scales `s`, lane 0) as f32, bit-identical to the
/// format's dequantizer: Q4_K/Q5_K `(d * sc_j) * q - dmin * m_j`, Q6_K `(d * sc) * (q - 32)`
/// (multiply, then subtract; no fused operations).
#[inline(always)]
unsafe fn deq_sub<const K: u8>(p: *const u8, s: &Scales, j: usize) -> [float32x4_t; 8] {
    let q = unpack::<K>(p, j);
    let lane0 = |v: int32x4_t| vgetq_lane_s32::<0>(v) as f32;
    let d = f16_to_f32(f16_bits(p.add(if K == Q6_K { 208 } else { 0 })));
    let mut v = [vdupq_n_f32(0.0); 8];
    for h in 0..2 {
        let (dl, ml) = if K == Q6_K {
            (d * lane0(s[2 * j + h]), 0.0)
        } else {
            let dmin = f16_to_f32(f16_bits(p.add(2)));
            (d * lane0(s[j]), dmin * lane0(s[SUBS + j]))
        };
        for (k, ints) in widen(q[h]).into_iter().enumerate() {
            let x = vmulq_n_f32(vcvtq_f32_s32(ints), dl);
            v[4 * h + k] = if K == Q6_K {
                x
            } else {
                vsubq_f32(x, vdupq_n_f32(ml))
            };
        }
    }
    v
}

/// One row of K-quant `K` dequantized (preconditions of `DequantFn`).
#[inline(always)]
pub(super) unsafe fn dequant<const K: u8>(w: &[u8], out: &mut [f32]) {
    for (b, o) in out.chunks_exact_mut(SUBS * QK).enumerate() {
        let p = w.as_ptr().add(b * block_bytes(K));
        let s = scales::<K>([p; 4]);
        for j in 0..SUBS {
            for (k, vk) in deq_sub::<K>(p, &s, j).into_iter().enumerate() {
                vst1q_f32(o.as_mut_ptr().add(QK * j + 4 * k), vk);
            }
        }
    }
}

/// One row (super-blocks at `p`, `nb` of them) x `T` tokens (at `x`, `cols` apart) with f32
/// activations: each sub-block dequantized once for all tokens, `acc += w * x` lane-wise.
#[inline(always)]
unsafe fn tile_f32<const K: u8, const T: usize>(
    p: *const u8,
    nb: usize,
    x: *const f32,
    cols: usize,
    out: *mut f32,
    out_stride: usize,
) {
    let mut acc = [vdupq_n_f32(0.0); T];
    for b in 0..nb {
        let pb = p.add(b * block_bytes(K));
        let s = scales::<K>([pb; 4]);
        for j in 0..SUBS {
            let wv = deq_sub::<K>(pb, &s, j);
            for t in 0..T {
                let xs = x.add(t * cols + (b * SUBS + j) * QK);
                for (k, &wk) in wv.iter().enumerate() {
                    acc[t] = vfmaq_f32(acc[t], wk, vld1q_f32(xs.add(4 * k)));
                }
            }
        }
    }
    for t in 0..T {
        *out.add(t * out_stride) = vaddvq_f32(acc[t]);
    }
}

/// The f32-activation matmul of K-quant `K` (preconditions of `MatmulF32Fn`), through the
/// shared register-tile loop: one row by up to 4 tokens at a time.
#[inline(always)]
pub(super) unsafe fn matmul_f32<const K: u8>(
    w: &[u8],
    cols: usize,
    rows: Range<usize>,
    x: &[f32],
    n_tok: usize,
    out: *mut f32,
    out_stride: usize,
) {
    let rb = cols / (SUBS * QK) * block_bytes(K);
    let tiles = FTiles::<K>(FOperands::new(w, rb, cols, x, out, out_stride));
    drive::<_, 1, 4>(&tiles, rows, n_tok)
}

/// The f32-activation matmul's tiles (one row each).
struct FTiles<const K: u8>(FOperands);

impl<const K: u8> Tiler for FTiles<K> {
    #[inline(always)]
    unsafe fn tile<const R: usize, const T: usize>(&self, r: usize, t: usize) {
        const { assert!(R == 1) };
        let (w, x, out) = self.0.at(r, t);
        let nb = self.0.n / (SUBS * QK);
        tile_f32::<K, T>(w, nb, x, self.0.n, out, self.0.out_stride)
    }
}
