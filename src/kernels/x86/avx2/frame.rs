//! The AVX2 tile frame: how an int8-activation matmul walks rows and tokens, for every block
//! layout.
//!
//! A layout supplies a micro-kernel ([`Micro`]): one weight block of `R` rows against `T`
//! tokens, added into `R x T` accumulators of 8 f32 lanes. [`matmul_tiles`] walks the tiles
//! (through the x86 tile loop, `drive`) and each tile's blocks in order, and sums each
//! accumulator's lanes once at the end ([`hsum`]). Each output sees the same
//! operations in the same order whatever its tile, so its bits depend neither on the batch
//! nor on the thread split.
//!
//! The transposed layouts of Q4 and Q8_0 ([`Layout`]) take [`matmul_grouped`] instead, through the
//! x86 tile loop of arranged layouts (`drive_arranged`): the activations of up to [`GRP_TOK`]
//! tokens are arranged once, then each row meets them group by group. The blocks past the last
//! whole group go, into the same accumulators, through the layout's [`Layout::Tail`] (pairs of
//! blocks), and a last block left over through the per-block step of the same dtype
//! (`Block32::accumulate`).
//!
//! # Safety
//! As in `avx2/mod.rs`: the entry points' CPU features, and the slice-size preconditions of
//! `MatmulQ8aFn` (`w` holds `rows.end` rows of `cols` values, `xq` `n_tok` rows of activation
//! blocks, `out` writable at every `t * out_stride + r`).

use std::arch::x86_64::*;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::ops::Range;

use super::super::super::{BlockQ8A, QK};
use super::super::{block_bytes, drive, drive_arranged, Ahead, Arranged, QOperands, Tiler};
use super::block32::{load_w, ABlock, Block32};
use super::hsum;

/// A block layout's micro-kernel: `R` rows x `T` tokens of one weight block.
pub(in crate::kernels::x86) trait Micro {
    /// Bytes of one weight block.
    const BLOCK_BYTES: usize;
    /// Sub-blocks of 32 values per weight block (one activation block each).
    const SUBS: usize;
    /// Rows per batch tile: 2, or 4 for layouts whose per-row unpacking is worth sharing
    /// among more tokens than the registers then hold (measured per layout).
    const BATCH_ROWS: usize = 2;
    /// One token's activations for one weight block, prepared once for all rows of a tile.
    type A: Copy;
    /// The activations of the block whose first activation block is at `x`.
    unsafe fn load_a(x: *const BlockQ8A) -> Self::A;
    /// `acc[r][t] +=` the block at `w + r * rb` times `a[t]`, lane by lane.
    unsafe fn block<const R: usize, const T: usize>(
        w: *const u8,
        rb: usize,
        a: &[Self::A; T],
        acc: &mut [[__m256; T]; R],
    );
}

/// The matmul of `MatmulQ8aFn` in layout `M`: decode in tiles of 4 rows, so that each
/// activation load serves 4 rows; batches in tiles of `M::BATCH_ROWS` rows by 4 tokens, so
/// that each unpacked weight block serves 4 tokens.
#[inline(always)]
pub(in crate::kernels::x86) unsafe fn matmul_tiles<M: Micro>(
    w: &[u8],
    cols: usize,
    rows: Range<usize>,
    xq: &[BlockQ8A],
    n_tok: usize,
    out: *mut f32,
    out_stride: usize,
) {
    let nsub = cols / QK;
    let nb = nsub / M::SUBS;
    let tiles = MicroTiles::<M> {
        o: QOperands::new(w, nb * M::BLOCK_BYTES, nsub, xq, out, out_stride),
        nb,
        layout: PhantomData,
    };
    const { assert!(M::BATCH_ROWS == 2 || M::BATCH_ROWS == 4) };
    if n_tok == 1 {
        drive::<_, 4, 1>(&tiles, rows, n_tok);
    } else if M::BATCH_ROWS == 4 {
        drive::<_, 4, 4>(&tiles, rows, n_tok);
    } else {
        drive::<_, 2, 4>(&tiles, rows, n_tok);
    }
}

/// A matmul in layout `M`: rows of `nb` weight blocks (`o.n` activation blocks).
struct MicroTiles<M> {
    o: QOperands,
    nb: usize,
    layout: PhantomData<M>,
}

impl<M: Micro> Tiler for MicroTiles<M> {
    #[inline(always)]
    unsafe fn tile<const R: usize, const T: usize>(&self, r: usize, t: usize) {
        let (w, x, out) = self.o.at(r, t);
        tile::<M, R, T>(w, self.o.rb, self.nb, x, self.o.n, out, self.o.out_stride)
    }
}

/// `R` rows (at `w`, `rb` bytes apart, `nb` blocks each) x `T` tokens (at `x`, `nsub`
/// activation blocks apart), written at `out[t * out_stride + r]`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<M: Micro, const R: usize, const T: usize>(
    w: *const u8,
    rb: usize,
    nb: usize,
    x: *const BlockQ8A,
    nsub: usize,
    out: *mut f32,
    out_stride: usize,
) {
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    for b in 0..nb {
        let xb = x.add(b * M::SUBS);
        let mut a = [M::load_a(xb); T];
        for (t, at) in a.iter_mut().enumerate().skip(1) {
            *at = M::load_a(xb.add(t * nsub));
        }
        M::block::<R, T>(w.add(b * M::BLOCK_BYTES), rb, &a, &mut acc);
    }
    for (r, acc_r) in acc.iter().enumerate() {
        for (t, acc_rt) in acc_r.iter().enumerate() {
            *out.add(t * out_stride + r) = hsum(*acc_rt);
        }
    }
}

/// A transposed layout: groups of `BLOCKS` blocks whose products land one block (or half a
/// block) per i32 lane, so one conversion and scale serve the whole group.
pub(super) trait Layout<const DT: u8, const VNNI: u8> {
    /// Blocks per group.
    const BLOCKS: usize;
    /// The layout of the blocks past the last whole group, at most 2 blocks at a time (a
    /// block left over after those takes `Block32`).
    type Tail: Layout<DT, VNNI>;
    /// One row's group of weights, decoded.
    type W: Copy;
    /// One token's group of activations, arranged.
    type A: Copy;
    unsafe fn load_w(p: *const u8) -> Self::W;
    unsafe fn load_a(x: *const BlockQ8A) -> Self::A;
    /// `acc` plus the group's product, lane by lane.
    unsafe fn accumulate(w: &Self::W, a: &Self::A, acc: __m256) -> __m256;
}

/// Tokens per tile of the grouped path.
pub(super) const GRP_TOK: usize = 4;
/// Groups per row at most (4096 columns: 16 Q4 groups, 32 Q8_0 quads); wider rows take
/// [`matmul_tiles`].
pub(super) const GROUPS_MAX: usize = 32;
/// Tail groups past the last whole group, at most (groups have at most 8 blocks).
const TAIL_MAX: usize = 7;

/// The arranged activations of one token tile: token t's group g at `g[t * GROUPS_MAX + g]`,
/// its tail group k at `tail[t * TAIL_MAX + k]`, its last single block at `last[t]`. Only the
/// entries of the tile's shape are written.
struct Tiles<A, P> {
    g: [MaybeUninit<A>; GRP_TOK * GROUPS_MAX],
    tail: [MaybeUninit<P>; GRP_TOK * TAIL_MAX],
    last: [MaybeUninit<ABlock>; GRP_TOK],
}

/// Where a row's blocks go: `ng` whole groups, then `nt` tail groups from block `tail0`, then
/// the single blocks from `last` (at most one).
#[derive(Clone, Copy)]
struct Split {
    ng: usize,
    tail0: usize,
    nt: usize,
    last: usize,
}

impl Split {
    #[inline(always)]
    fn new<L: Layout<DT, VNNI>, const DT: u8, const VNNI: u8>(nb: usize) -> Split {
        const { assert!(<L::Tail as Layout<DT, VNNI>>::BLOCKS <= 2) };
        let tb = <L::Tail as Layout<DT, VNNI>>::BLOCKS;
        let ng = nb / L::BLOCKS;
        let tail0 = L::BLOCKS * ng;
        let nt = (nb - tail0) / tb;
        Split {
            ng,
            tail0,
            nt,
            last: tail0 + tb * nt,
        }
    }
}

/// The matmul in layout `L` for rows of at most [`GROUPS_MAX`] groups, through
/// `drive_arranged`, decode and prefill alike (so an output's bits never depend on the
/// batch): activations are arranged once per tile of up to [`GRP_TOK`] tokens, then every
/// row meets the tile: whole groups, then single blocks.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn matmul_grouped<L: Layout<DT, VNNI>, const DT: u8, const VNNI: u8>(
    w: *const u8,
    rb: usize,
    nb: usize,
    rows: Range<usize>,
    x: *const BlockQ8A,
    n_tok: usize,
    out: *mut f32,
    out_stride: usize,
) {
    let sp = Split::new::<L, DT, VNNI>(nb);
    debug_assert!(sp.ng <= GROUPS_MAX && sp.nt <= TAIL_MAX && nb - sp.last <= 1);
    let l = Grouped::<L, DT, VNNI> {
        o: QOperands {
            w,
            rb,
            n: nb,
            x,
            out,
            out_stride,
        },
        sp,
        layout: PhantomData,
    };
    drive_arranged(l, rows, n_tok)
}

/// A matmul in layout `L` (its rows of `o.n` blocks split as `sp`).
struct Grouped<L, const DT: u8, const VNNI: u8> {
    o: QOperands,
    sp: Split,
    layout: PhantomData<L>,
}

impl<L, const DT: u8, const VNNI: u8> Clone for Grouped<L, DT, VNNI> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<L, const DT: u8, const VNNI: u8> Copy for Grouped<L, DT, VNNI> {}

/// The tiles of layout `L`.
type TilesOf<L, const DT: u8, const VNNI: u8> =
    Tiles<<L as Layout<DT, VNNI>>::A, <<L as Layout<DT, VNNI>>::Tail as Layout<DT, VNNI>>::A>;

impl<L: Layout<DT, VNNI>, const DT: u8, const VNNI: u8> Arranged for Grouped<L, DT, VNNI> {
    type Tiles = TilesOf<L, DT, VNNI>;
    /// 8 rows at a time, whose lanes [`hsum8`] sums together.
    const ROWS: usize = 8;
    #[inline(always)]
    fn tiles(&self) -> Self::Tiles {
        Tiles {
            g: [const { MaybeUninit::uninit() }; GRP_TOK * GROUPS_MAX],
            tail: [const { MaybeUninit::uninit() }; GRP_TOK * TAIL_MAX],
            last: [const { MaybeUninit::uninit() }; GRP_TOK],
        }
    }
    #[inline(always)]
    fn tile_tokens(&self, left: usize) -> usize {
        left.min(GRP_TOK)
    }
    #[inline(always)]
    fn weights(&self) -> (*const u8, usize) {
        (self.o.w, self.o.rb)
    }
    #[inline(always)]
    unsafe fn arrange(&self, tiles: &mut Self::Tiles, t: usize, tn: usize) {
        let (sp, nb) = (self.sp, self.o.n);
        let tb = <L::Tail as Layout<DT, VNNI>>::BLOCKS;
        for tt in 0..tn {
            let xt = self.o.x.add((t + tt) * nb);
            for gi in 0..sp.ng {
                tiles.g[tt * GROUPS_MAX + gi].write(L::load_a(xt.add(L::BLOCKS * gi)));
            }
            for k in 0..sp.nt {
                let a = <L::Tail as Layout<DT, VNNI>>::load_a(xt.add(sp.tail0 + tb * k));
                tiles.tail[tt * TAIL_MAX + k].write(a);
            }
            if sp.last < nb {
                tiles.last[tt].write(<Block32<DT, VNNI> as Micro>::load_a(xt.add(sp.last)));
            }
        }
    }
    #[inline(always)]
    unsafe fn rows(&self, tl: &Self::Tiles, r: usize, n: usize, t: usize, tn: usize, pf: &Ahead) {
        match tn {
            4 => self.rows_t::<4>(tl, r, n, t, pf),
            3 => self.rows_t::<3>(tl, r, n, t, pf),
            2 => self.rows_t::<2>(tl, r, n, t, pf),
            _ => self.rows_t::<1>(tl, r, n, t, pf),
        }
    }
}

impl<L: Layout<DT, VNNI>, const DT: u8, const VNNI: u8> Grouped<L, DT, VNNI> {
    /// Rows `r0..r0 + n` (`n <= 8`) against the first `T` tokens of `tl`, which start at
    /// token `t`.
    #[inline(always)]
    unsafe fn rows_t<const T: usize>(
        &self,
        tl: &TilesOf<L, DT, VNNI>,
        r0: usize,
        n: usize,
        t: usize,
        pf: &Ahead,
    ) {
        // acc[t][i]: row r0 + i, token t; the rows past `n` stay zero.
        let mut acc = [[_mm256_setzero_ps(); 8]; T];
        for i in 0..n {
            pf.row(r0 + i);
            let w = self.o.w.add((r0 + i) * self.o.rb);
            let a = tile_grouped::<L, DT, VNNI, T>(w, self.o.n, self.sp, tl);
            for (acc_t, a_t) in acc.iter_mut().zip(a) {
                acc_t[i] = a_t;
            }
        }
        for (tt, acc_t) in acc.iter().enumerate() {
            let o = self.o.out.add((t + tt) * self.o.out_stride + r0);
            if n == 8 {
                _mm256_storeu_ps(o, hsum8(acc_t));
            } else {
                let mut s = [0f32; 8];
                _mm256_storeu_ps(s.as_mut_ptr(), hsum8(acc_t));
                std::ptr::copy_nonoverlapping(s.as_ptr(), o, n);
            }
        }
    }
}

/// Lane i: the sum of the 8 lanes of `v[i]`, as `((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 +
/// l7))`. Every row goes through it, in a full set of 8 or not, so its bits never depend on
/// its neighbours. One call replaces 8 [`hsum`]s: 9 operations instead of 48.
#[inline(always)]
unsafe fn hsum8(v: &[__m256; 8]) -> __m256 {
    let h01 = _mm256_hadd_ps(v[0], v[1]);
    let h23 = _mm256_hadd_ps(v[2], v[3]);
    let h45 = _mm256_hadd_ps(v[4], v[5]);
    let h67 = _mm256_hadd_ps(v[6], v[7]);
    // Lane i (i < 4) of h03: v[i]'s lanes 0..3 summed; lane 4 + i: its lanes 4..7.
    let h03 = _mm256_hadd_ps(h01, h23);
    let h47 = _mm256_hadd_ps(h45, h67);
    _mm256_add_ps(
        _mm256_permute2f128_ps::<0x20>(h03, h47),
        _mm256_permute2f128_ps::<0x31>(h03, h47),
    )
}

/// One row (at `w`, `nb` blocks, split as `sp`) against the first `T` tokens of `tl`: its
/// 8-lane accumulators, one per token.
#[inline(always)]
unsafe fn tile_grouped<L: Layout<DT, VNNI>, const DT: u8, const VNNI: u8, const T: usize>(
    w: *const u8,
    nb: usize,
    sp: Split,
    tl: &Tiles<L::A, <L::Tail as Layout<DT, VNNI>>::A>,
) -> [__m256; T] {
    let bb = block_bytes(DT);
    let tb = <L::Tail as Layout<DT, VNNI>>::BLOCKS;
    let mut acc = [_mm256_setzero_ps(); T];
    // SAFETY (the reads of `tl` below): `matmul_grouped` wrote the groups, tail groups and
    // last block of the tile's first T tokens for this row width, exactly the entries read
    // here.
    for g in 0..sp.ng {
        let wg = L::load_w(w.add(L::BLOCKS * g * bb));
        for (t, acc_t) in acc.iter_mut().enumerate() {
            *acc_t = L::accumulate(&wg, tl.g[t * GROUPS_MAX + g].assume_init_ref(), *acc_t);
        }
    }
    // Lanes are summed only at the end, so the tail may use other layouts.
    for k in 0..sp.nt {
        let wk = <L::Tail as Layout<DT, VNNI>>::load_w(w.add((sp.tail0 + tb * k) * bb));
        for (t, acc_t) in acc.iter_mut().enumerate() {
            let a = tl.tail[t * TAIL_MAX + k].assume_init_ref();
            *acc_t = <L::Tail as Layout<DT, VNNI>>::accumulate(&wk, a, *acc_t);
        }
    }
    if sp.last < nb {
        let wb = load_w::<DT, VNNI>(w.add(sp.last * bb));
        for (t, acc_t) in acc.iter_mut().enumerate() {
            *acc_t = <Block32<DT, VNNI>>::accumulate(&wb, tl.last[t].assume_init_ref(), *acc_t);
        }
    }
    acc
}
