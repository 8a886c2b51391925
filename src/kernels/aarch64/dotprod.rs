//! dotprod kernels (Armv8.2 SDOT: Cortex-A76/A78/X1, Raspberry Pi 5, most phones): the NEON
//! tiles of `neon.rs` with SDOT as the integer product, two SDOTs per block (i8 x i8 summed
//! in fours into i32 lanes, exact). Every other entry is NEON's.
//!
//! # Safety
//! Every `unsafe fn` here requires NEON and dotprod, which `available` checks before
//! handing out [`KERNELS`], plus the preconditions of the table types in `kernels/mod.rs`.

use std::arch::aarch64::*;
use std::arch::asm;
use std::ops::Range;

use super::super::{BlockQ8A, Kernels};
use super::neon::{self, Idot};

/// `acc` plus SDOT of `a` and `b`: lane k gains `sum_{j<4} a[4k + j] * b[4k + j]`.
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn sdot(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // SAFETY: the caller guarantees the CPU has dotprod (this fn is reachable only from
    // tables handed out after detecting it); SDOT touches only the named registers.
    unsafe {
        asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    acc
}

/// The dotprod product: two SDOTs per block.
pub(super) struct Sdot;

impl Idot for Sdot {
    const Q8_0_TOKENS: usize = 4;
    #[inline(always)]
    unsafe fn dot<const DT: u8>(w: &[int8x16_t; 2], a: &[int8x16_t; 2]) -> int32x4_t {
        sdot(sdot(vdupq_n_s32(0), w[0], a[0]), w[1], a[1])
    }
    #[inline(always)]
    unsafe fn dot16(w: int8x16_t, a: int8x16_t) -> int32x4_t {
        sdot(vdupq_n_s32(0), w, a)
    }
}

#[inline(always)]
unsafe fn matmul_q8a_sdot<const DT: u8>(
    w: &[u8],
    cols: usize,
    rows: Range<usize>,
    xq: &[BlockQ8A],
    n_tok: usize,
    out: *mut f32,
    out_stride: usize,
) {
    neon::matmul_q8a::<Sdot, DT>(w, cols, rows, xq, n_tok, out, out_stride)
}

#[inline(always)]
#[cfg(test)]
unsafe fn isums_sdot<const DT: u8>(w_row: &[u8], xq: &[BlockQ8A], out: &mut [i32]) {
    neon::isums::<Sdot, DT>(w_row, xq, out)
}

neon::q8a_entry_points!("neon,dotprod", matmul_q8a_sdot, isums_sdot);

/// The dotprod table: SDOT integer products, the rest from NEON.
pub(super) static KERNELS: Kernels = Kernels {
    name: "dotprod",
    matmul_q8a: Q8A_MATMULS,
    #[cfg(test)]
    isums: Q8A_ISUMS,
    ..neon::KERNELS
};
