//! What every AVX-512 layout shares: permute-index tables, the fixed-order lane sums, the
//! [`Layout`] trait of the transposed row layouts and their [`Arranged`] form for the x86
//! tile loop of arranged layouts (`drive_arranged`), and the q8a matmul and `isums` entries
//! that pick a layout by row width.
//! Safety: as in the `avx512` module documentation.

use std::arch::x86_64::*;
use std::marker::PhantomData;
use std::ops::Range;

use super::super::super::{BlockQ8A, QK};
use super::super::{block_bytes, drive, drive_arranged, Ahead, Arranged, QOperands, Q8_0};
use super::q4::{Q4Groups, GRP, GRP_MAX};
use super::q8::{Q8Octets, OCT, OCT_MAX};
use super::wide::RowTiles;

/// Word-permute indices (`vpermw`), 64-byte aligned for one load.
#[repr(align(64))]
pub(super) struct Idx(pub(super) [u16; 32]);

/// The indices of `i` in one register.
#[inline(always)]
pub(super) unsafe fn idx(i: &Idx) -> __m512i {
    _mm512_load_si512(i.0.as_ptr().cast())
}

/// Dword-permute indices (`vpermd`), 64-byte aligned for one load.
#[repr(align(64))]
pub(super) struct IdxD(pub(super) [u32; 16]);

/// Tokens per tile of the grouped path: one row's decoded group meets this many tokens.
pub(super) const GRP_TOK: usize = 8;

/// The sum of the 16 lanes in one fixed order: halves (lanes i + 8), then quarters (i + 4),
/// then pairs (i + 2), then the last two. Every reduction of an output here uses this order
/// (or [`store_sums`]'s tree, which adds the same pairs), so results never depend on tiling.
#[inline(always)]
pub(super) unsafe fn hsum(v: __m512) -> f32 {
    let h = _mm256_add_ps(
        _mm512_castps512_ps256(v),
        _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v))),
    );
    let q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h));
    let p = _mm_add_ps(q, _mm_movehl_ps(q, q));
    _mm_cvtss_f32(_mm_add_ss(p, _mm_movehdup_ps(p)))
}

/// `out[t * out_stride] = hsum(acc[t])`; eight accumulators are summed together by a
/// transposing tree (22 vector operations instead of 8 separate reductions) that adds the
/// same pairs of lanes in the same order as [`hsum`], so the bits are the same.
#[inline(always)]
pub(super) unsafe fn store_sums<const T: usize>(
    acc: &[__m512; T],
    out: *mut f32,
    out_stride: usize,
) {
    if T != 8 {
        for (t, acc_t) in acc.iter().enumerate() {
            *out.add(t * out_stride) = hsum(*acc_t);
        }
        return;
    }
    // Halve twice by 128-bit chunks: w[k] chunk c holds 4 partial sums of acc[4k + c].
    let mut u = [_mm512_setzero_ps(); 4];
    for (i, ui) in u.iter_mut().enumerate() {
        let (a, b) = (acc[2 * i], acc[2 * i + 1]);
        *ui = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b01_00_01_00>(a, b),
            _mm512_shuffle_f32x4::<0b11_10_11_10>(a, b),
        );
    }
    let mut w = [_mm512_setzero_ps(); 2];
    for (k, wk) in w.iter_mut().enumerate() {
        let (a, b) = (u[2 * k], u[2 * k + 1]);
        *wk = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b10_00_10_00>(a, b),
            _mm512_shuffle_f32x4::<0b11_01_11_01>(a, b),
        );
    }
    // Within each chunk c: lane 0 = total of acc[c], lane 1 = total of acc[4 + c].
    let x = _mm512_add_ps(
        _mm512_unpacklo_ps(w[0], w[1]),
        _mm512_unpackhi_ps(w[0], w[1]),
    );
    let y = _mm512_add_ps(x, _mm512_permute_ps::<0b01_00_11_10>(x));
    let mut sums = [0.0f32; 16];
    _mm512_storeu_ps(sums.as_mut_ptr(), y);
    for c in 0..4 {
        *out.add(c * out_stride) = sums[4 * c];
        *out.add((c + 4) * out_stride) = sums[4 * c + 1];
    }
}

/// A transposed row layout of the tiled paths: how a token's activations are arranged for
/// it, and how one row meets a tile of arranged tokens.
pub(super) trait Layout {
    /// Arranged activations of one tile of up to [`GRP_TOK`] tokens, left uninitialised
    /// except for what [`Layout::arrange`] writes.
    type Tiles;
    fn tiles() -> Self::Tiles;
    /// Arranges token `tt` of the tile, whose `nb` blocks start at `x`.
    unsafe fn arrange(tiles: &mut Self::Tiles, tt: usize, x: *const BlockQ8A, nb: usize);
    /// One row (at `w`, `nb` blocks) against the tile's first `T` tokens, all arranged.
    unsafe fn row<const T: usize>(
        w: *const u8,
        nb: usize,
        tiles: &Self::Tiles,
        out: *mut f32,
        out_stride: usize,
    );
}

/// A matmul in the transposed layout `L`, for [`drive_arranged`]: activations are arranged
/// once per tile of up to [`GRP_TOK`] tokens (8, 4, 2 or 1), decode and prefill alike (so an
/// output's bits never depend on the batch), then every row meets the tile.
struct Grouped<L> {
    o: QOperands,
    layout: PhantomData<L>,
}

impl<L> Clone for Grouped<L> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<L> Copy for Grouped<L> {}

impl<L: Layout> Arranged for Grouped<L> {
    type Tiles = L::Tiles;
    #[inline(always)]
    fn tiles(&self) -> L::Tiles {
        L::tiles()
    }
    #[inline(always)]
    fn tile_tokens(&self, left: usize) -> usize {
        match left {
            8.. => 8,
            4..=7 => 4,
            2..=3 => 2,
            _ => 1,
        }
    }
    #[inline(always)]
    fn weights(&self) -> (*const u8, usize) {
        (self.o.w, self.o.rb)
    }
    #[inline(always)]
    unsafe fn arrange(&self, tiles: &mut L::Tiles, t: usize, tn: usize) {
        for tt in 0..tn {
            L::arrange(tiles, tt, self.o.x.add((t + tt) * self.o.n), self.o.n);
        }
    }
    #[inline(always)]
    unsafe fn rows(&self, tiles: &L::Tiles, r: usize, _n: usize, t: usize, tn: usize, pf: &Ahead) {
        pf.row(r);
        let (w, nb, os) = (self.o.w.add(r * self.o.rb), self.o.n, self.o.out_stride);
        let o = self.o.out.add(t * os + r);
        match tn {
            8 => L::row::<8>(w, nb, tiles, o, os),
            4 => L::row::<4>(w, nb, tiles, o, os),
            2 => L::row::<2>(w, nb, tiles, o, os),
            _ => L::row::<1>(w, nb, tiles, o, os),
        }
    }
}

/// The q8a matmul (see `MatmulQ8aFn`): rows of up to 4096 columns by the grouped (Q4) or
/// octet (Q8_0) path; wider rows by row tiles of 8 (decode) or 4, over tokens in tiles of 4.
#[inline(always)]
pub(super) unsafe fn matmul_q8a<const DT: u8>(
    w: &[u8],
    cols: usize,
    rows: Range<usize>,
    xq: &[BlockQ8A],
    n_tok: usize,
    out: *mut f32,
    out_stride: usize,
) {
    let nb = cols / QK;
    let o = QOperands::new(w, nb * block_bytes(DT), nb, xq, out, out_stride);
    if DT != Q8_0 && nb / GRP <= GRP_MAX {
        let l = Grouped::<Q4Groups<DT>> {
            o,
            layout: PhantomData,
        };
        return drive_arranged(l, rows, n_tok);
    }
    if DT == Q8_0 && nb / OCT <= OCT_MAX {
        let l = Grouped::<Q8Octets> {
            o,
            layout: PhantomData,
        };
        return drive_arranged(l, rows, n_tok);
    }
    let tiles = RowTiles::<DT>(o);
    if n_tok == 1 {
        // Decode: 8 rows share each activation load.
        drive::<_, 8, 1>(&tiles, rows, n_tok);
    } else {
        drive::<_, 4, 4>(&tiles, rows, n_tok);
    }
}

/// Per-block exact sums of one row (test hook), with the matmul's own primitives.
#[inline(always)]
#[cfg(test)]
pub(super) unsafe fn isums<const DT: u8>(w_row: &[u8], xq: &[BlockQ8A], out: &mut [i32]) {
    use super::pair::{isum_lanes, load_a, load_w};
    use super::q4::{grp_block, isum_group, isum_lanes4, load_a4, load_ag, load_w4, load_wg};
    use super::q8::{isum_oct, load_aoct, load_woct, oct_block};
    let nb = xq.len();
    let bb = block_bytes(DT);
    let mut b = 0;
    if DT == Q8_0 {
        while b + OCT <= nb {
            let wo = load_woct(w_row.as_ptr().add(b * bb));
            let ao = load_aoct(xq.as_ptr().add(b));
            let mut lanes = [0i32; 16];
            _mm512_storeu_si512(lanes.as_mut_ptr().cast(), isum_oct(&wo, &ao));
            out[b..b + OCT].fill(0);
            for (l, v) in lanes.into_iter().enumerate() {
                out[b + oct_block(l)] += v;
            }
            b += OCT;
        }
    }
    if DT != Q8_0 {
        while b + GRP <= nb {
            let wg = load_wg::<DT>(w_row.as_ptr().add(b * bb));
            let ag = load_ag::<DT>(xq.as_ptr().add(b));
            let mut lanes = [0i32; GRP];
            _mm512_storeu_si512(lanes.as_mut_ptr().cast(), isum_group(&wg, &ag));
            for (l, v) in lanes.into_iter().enumerate() {
                out[b + grp_block(l)] = v;
            }
            b += GRP;
        }
        while b + 4 <= nb {
            let wq = load_w4::<DT>(w_row.as_ptr().add(b * bb));
            let aq = load_a4::<DT>(xq.as_ptr().add(b));
            let i = isum_lanes4(&wq, &aq);
            for k in 0..4 {
                out[b + k] = _mm512_mask_reduce_add_epi32(0xf << (4 * k), i);
            }
            b += 4;
        }
    }
    while b < nb {
        let two = b + 1 < nb;
        let wp = load_w::<DT>(w_row.as_ptr().add(b * bb), two);
        let ap = load_a::<DT>(xq.as_ptr().add(b), two);
        let i = isum_lanes::<DT>(&wp, &ap);
        out[b] = _mm512_mask_reduce_add_epi32(0x00ff, i);
        if two {
            out[b + 1] = _mm512_mask_reduce_add_epi32(0xff00, i);
        }
        b += 2;
    }
}
