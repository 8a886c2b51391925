//! The AVX2 arranged layouts (Q5_0/Q5_1 quads, K-quant super-blocks) in the x86 tile loop of
//! arranged layouts (`drive_arranged`): the activations of up to [`QT`] tokens are arranged
//! once into the layout's lane order, then every row meets them unit by unit, each unpacked
//! unit of weights serving up to 8 tokens, and the blocks past the last whole unit go
//! through the layout's single-block micro-kernel, into the same accumulators. Decode and
//! prefill take the same operations per output, so its bits depend neither on the batch nor
//! on the rows.
//!
//! # Safety
//! As in `avx2/mod.rs`: the entry points' CPU features, and the slice-size preconditions of
//! `MatmulQ8aFn`.

use std::arch::x86_64::*;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::ops::Range;

use super::super::super::BlockQ8A;
use super::super::{drive_arranged, Ahead, Arranged, QOperands};
use super::frame::Micro;
use super::hsum;

/// Tokens whose activations are arranged at once: a unit's unpacked weights serve up to 8
/// tokens, whose 8 accumulators fit the 16 ymm registers beside the unit's operands.
pub(super) const QT: usize = 8;
/// Units per row at most; wider rows take the layout's frame tiles.
pub(in crate::kernels::x86) const UNITS_MAX: usize = 16;
/// Blocks past the last whole unit, at most.
const TAIL_MAX: usize = 3;

/// A layout of units of `SUBS` activation blocks, whose products land in the 8 lanes of one
/// f32 accumulator.
pub(in crate::kernels::x86) trait Unit {
    /// Activation blocks (of 32) per unit.
    const SUBS: usize;
    /// Bytes of one unit of one row.
    const BYTES: usize;
    /// One row's unit of weights, unpacked.
    type W: Copy;
    /// One token's unit of activations, arranged.
    type A: Copy;
    /// The single-block micro-kernel of the blocks past the last whole unit (never called
    /// for layouts whose rows are whole units).
    type Tail: Micro;
    unsafe fn load_w(p: *const u8) -> Self::W;
    unsafe fn load_a(x: *const BlockQ8A) -> Self::A;
    /// `acc` plus the unit's product, lane by lane.
    unsafe fn accumulate(w: &Self::W, a: &Self::A, acc: __m256) -> __m256;
}

/// Whether rows of `nb` activation blocks take [`matmul`] in layout `U`: 1 to
/// [`UNITS_MAX`] whole units, and at most `TAIL_MAX` blocks past them.
pub(in crate::kernels::x86) fn fits<U: Unit>(nb: usize) -> bool {
    (1..=UNITS_MAX).contains(&(nb / U::SUBS)) && nb % U::SUBS <= TAIL_MAX
}

/// A token tile's arranged activations: token t's unit u at `u[t * UNITS_MAX + u]`, its tail
/// block k at `tail[k * QT + t]` (the tile's tokens side by side, as the single-block
/// micro-kernel takes them). Only the entries of the tile's shape are written.
struct Tile<U: Unit> {
    u: [MaybeUninit<U::A>; QT * UNITS_MAX],
    tail: [MaybeUninit<<U::Tail as Micro>::A>; QT * TAIL_MAX],
}

/// The matmul of `MatmulQ8aFn` in layout `U` for rows of `nb` activation blocks, which
/// [`fits`] accepts, through `drive_arranged`: activations arranged once per tile of up to
/// [`QT`] tokens, then every row meets the tile.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn matmul<U: Unit>(
    w: *const u8,
    nb: usize,
    rows: Range<usize>,
    x: *const BlockQ8A,
    n_tok: usize,
    out: *mut f32,
    out_stride: usize,
) {
    debug_assert!(fits::<U>(nb));
    let nu = nb / U::SUBS;
    let l = Units::<U> {
        o: QOperands {
            w,
            rb: nu * U::BYTES + (nb - nu * U::SUBS) * <U::Tail as Micro>::BLOCK_BYTES,
            n: nb,
            x,
            out,
            out_stride,
        },
        layout: PhantomData,
    };
    drive_arranged(l, rows, n_tok)
}

/// A matmul in layout `U` (its rows of `o.n` activation blocks).
struct Units<U> {
    o: QOperands,
    layout: PhantomData<U>,
}

impl<U> Clone for Units<U> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<U> Copy for Units<U> {}

impl<U: Unit> Arranged for Units<U> {
    type Tiles = Tile<U>;
    #[inline(always)]
    fn tiles(&self) -> Tile<U> {
        Tile {
            u: [const { MaybeUninit::uninit() }; QT * UNITS_MAX],
            tail: [const { MaybeUninit::uninit() }; QT * TAIL_MAX],
        }
    }
    #[inline(always)]
    fn tile_tokens(&self, left: usize) -> usize {
        left.min(QT)
    }
    #[inline(always)]
    fn weights(&self) -> (*const u8, usize) {
        (self.o.w, self.o.rb)
    }
    #[inline(always)]
    unsafe fn arrange(&self, tl: &mut Tile<U>, t: usize, tn: usize) {
        let (nb, nu) = (self.o.n, self.o.n / U::SUBS);
        for tt in 0..tn {
            let xt = self.o.x.add((t + tt) * nb);
            for u in 0..nu {
                tl.u[tt * UNITS_MAX + u].write(U::load_a(xt.add(U::SUBS * u)));
            }
            for b in U::SUBS * nu..nb {
                let a = <U::Tail as Micro>::load_a(xt.add(b));
                tl.tail[(b - U::SUBS * nu) * QT + tt].write(a);
            }
        }
    }
    #[inline(always)]
    unsafe fn rows(&self, tl: &Tile<U>, r: usize, _n: usize, t: usize, tn: usize, pf: &Ahead) {
        pf.row(r);
        let (wr, os) = (self.o.w.add(r * self.o.rb), self.o.out_stride);
        let or = self.o.out.add(t * os + r);
        // Sub-tiles of 8, 4, 2 and 1 tokens: the same operations per output in each.
        let mut s = 0;
        while s < tn {
            let o = or.add(s * os);
            s += match tn - s {
                8.. => tile::<U, 8>(wr, self.o.n, tl, s, o, os),
                4..=7 => tile::<U, 4>(wr, self.o.n, tl, s, o, os),
                2 | 3 => tile::<U, 2>(wr, self.o.n, tl, s, o, os),
                _ => tile::<U, 1>(wr, self.o.n, tl, s, o, os),
            };
        }
    }
}

/// One row (at `w`, `nb` activation blocks) against tokens `s..s + T` of the arranged tile
/// `tl`, written at `out + t * out_stride` for token `s + t`; returns `T`.
#[inline(always)]
unsafe fn tile<U: Unit, const T: usize>(
    w: *const u8,
    nb: usize,
    tl: &Tile<U>,
    s: usize,
    out: *mut f32,
    out_stride: usize,
) -> usize {
    let nu = nb / U::SUBS;
    let mut acc = [[_mm256_setzero_ps(); T]];
    // SAFETY (the reads of `tl` below): `matmul` wrote the units and tail blocks of the
    // tile's tokens for this row width, and `s + T` is within the tile.
    for u in 0..nu {
        let wu = U::load_w(w.add(u * U::BYTES));
        for (t, acc_t) in acc[0].iter_mut().enumerate() {
            *acc_t = U::accumulate(&wu, tl.u[(s + t) * UNITS_MAX + u].assume_init_ref(), *acc_t);
        }
    }
    // Lanes are summed only at the end, so the tail blocks may use the single-block layout.
    let wt = w.add(nu * U::BYTES);
    for k in 0..nb - U::SUBS * nu {
        // Tokens s..s + T of tail block k, side by side (`MaybeUninit<A>` has `A`'s layout).
        let a = &*tl
            .tail
            .as_ptr()
            .add(k * QT + s)
            .cast::<[<U::Tail as Micro>::A; T]>();
        let bb = <U::Tail as Micro>::BLOCK_BYTES;
        <U::Tail as Micro>::block::<1, T>(wt.add(k * bb), 0, a, &mut acc);
    }
    for (t, acc_t) in acc[0].iter().enumerate() {
        *out.add(t * out_stride) = hsum(*acc_t);
    }
    T
}
