//! Rows wider than the transposed layouts take (over 4096 columns): `R` rows by `T` tokens
//! per tile, through the shared [`drive`](super::super::drive), over quads (Q4) and pairs.
//! Safety: as in the `avx512` module documentation.

use std::arch::x86_64::*;

use super::super::super::BlockQ8A;
use super::super::{block_bytes, QOperands, Tiler, Q4_1, Q8_0};
use super::frame::hsum;
use super::pair::{isum_lanes, load_a, load_w, APair};
use super::q4::{isum_lanes4, load_a4, load_w4, AQuad};

/// Four blocks (`b..b + 4`) of an `R` x `T` tile (Q4_0/Q4_1).
#[inline(always)]
unsafe fn step4<const DT: u8, const R: usize, const T: usize>(
    w: *const u8,
    rb: usize,
    nb: usize,
    x: *const BlockQ8A,
    b: usize,
    acc: &mut [[__m512; T]; R],
) {
    let bb = block_bytes(DT);
    let z = _mm512_setzero_si512();
    let zf = _mm512_setzero_ps();
    let mut aq = [AQuad {
        lo: z,
        hi: z,
        d: zf,
        s: zf,
        init: z,
    }; T];
    for (t, a) in aq.iter_mut().enumerate() {
        *a = load_a4::<DT>(x.add(t * nb + b));
    }
    for (r, acc_r) in acc.iter_mut().enumerate() {
        let wq = load_w4::<DT>(w.add(r * rb + b * bb));
        for (a, acc_rt) in aq.iter().zip(acc_r.iter_mut()) {
            let i = isum_lanes4(&wq, a);
            *acc_rt = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), _mm512_mul_ps(wq.d, a.d), *acc_rt);
            if DT == Q4_1 {
                *acc_rt = _mm512_fmadd_ps(wq.m, a.s, *acc_rt);
            }
        }
    }
}

/// One pair of blocks (`b`, and `b + 1` when `two`) of an `R` x `T` tile.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn step<const DT: u8, const R: usize, const T: usize>(
    w: *const u8,
    rb: usize,
    nb: usize,
    x: *const BlockQ8A,
    b: usize,
    two: bool,
    acc: &mut [[__m512; T]; R],
) {
    let bb = block_bytes(DT);
    let zero = APair {
        a: _mm512_setzero_si512(),
        d: _mm512_setzero_ps(),
        s: _mm512_setzero_ps(),
        init: _mm512_setzero_si512(),
    };
    let mut ap = [zero; T];
    for (t, a) in ap.iter_mut().enumerate() {
        *a = load_a::<DT>(x.add(t * nb + b), two);
    }
    for (r, acc_r) in acc.iter_mut().enumerate() {
        let wp = load_w::<DT>(w.add(r * rb + b * bb), two);
        for (a, acc_rt) in ap.iter().zip(acc_r.iter_mut()) {
            let i = isum_lanes::<DT>(&wp, a);
            let scale = _mm512_mul_ps(wp.d, a.d);
            *acc_rt = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), scale, *acc_rt);
            if DT == Q4_1 {
                *acc_rt = _mm512_fmadd_ps(wp.m, a.s, *acc_rt);
            }
        }
    }
}

/// `R` rows x `T` tokens: `w` points at row 0 (rows `rb` bytes apart), `x` at token 0's
/// blocks (tokens `nb` blocks apart), `out` at (token 0, row 0).
#[inline(always)]
pub(super) unsafe fn tile<const DT: u8, const R: usize, const T: usize>(
    w: *const u8,
    rb: usize,
    nb: usize,
    x: *const BlockQ8A,
    out: *mut f32,
    out_stride: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); T]; R];
    let mut b = 0;
    if DT != Q8_0 {
        while b + 4 <= nb {
            step4::<DT, R, T>(w, rb, nb, x, b, &mut acc);
            b += 4;
        }
    }
    while b + 2 <= nb {
        step::<DT, R, T>(w, rb, nb, x, b, true, &mut acc);
        b += 2;
    }
    if b < nb {
        step::<DT, R, T>(w, rb, nb, x, b, false, &mut acc);
    }
    for (r, acc_r) in acc.iter().enumerate() {
        for (t, acc_rt) in acc_r.iter().enumerate() {
            *out.add(t * out_stride + r) = hsum(*acc_rt);
        }
    }
}

/// The row-tile path (rows wider than the grouped paths take) over its operands.
pub(super) struct RowTiles<const DT: u8>(pub(super) QOperands);

impl<const DT: u8> Tiler for RowTiles<DT> {
    #[inline(always)]
    unsafe fn tile<const R: usize, const T: usize>(&self, r: usize, t: usize) {
        let (w, x, out) = self.0.at(r, t);
        tile::<DT, R, T>(w, self.0.rb, self.0.n, x, out, self.0.out_stride)
    }
}
