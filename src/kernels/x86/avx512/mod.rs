//! AVX-512 VNNI kernels (AVX-512 F, BW, VL and VNNI): the `avx512vnni` table.
//!
//! Integer dot products work on pairs of blocks: one 512-bit register holds two blocks of
//! 32 bytes (lanes 0-7: block b, lanes 8-15: block b+1). Weights are turned into unsigned
//! bytes `u` and the activations stay signed, so the product is `vpdpbusd`; the offset this
//! introduces (Q8_0: `u = w + 128`, Q4_0: `u = nibble = w + 8`) is removed exactly by
//! starting the i32 accumulator at `-offset * a` summed the same way.
//! Per pair, the i32 lanes are converted to f32, scaled by `d_w * d_a` and accumulated;
//! each output's 16 lanes are summed once at the end, in one fixed order ([`frame::hsum`]).
//!
//! Q4 rows are cut into groups of 16 blocks (transposed so that lane L of the products is one
//! block), then quads, a pair and a single block; Q8_0 rows into octets (transposed so that
//! lane L holds half a block), then pairs and a single block; the same way for decode and
//! for every batch size. So an output's bits depend only on
//! its row and its token's activations, never on the batch, the tile or the thread split.
//!
//! There is no table for AVX-512 without VNNI: every AVX-512 CPU of the devices pipit is for
//! (Intel since Ice Lake and Cascade Lake, AMD since Zen 4) has VNNI, and the few without it
//! (Skylake-SP/X servers) take the AVX2 table. One AVX-512 table instead of two keeps about
//! 130 KB out of the library.
//!
//! # Safety
//! Every `unsafe fn` here requires AVX-512F/BW/VL and AVX-512 VNNI, which the callers'
//! `#[target_feature]` entry points guarantee, plus the slice-size
//! preconditions of the table types in `kernels/mod.rs`. Reads past a row's end use masked
//! loads, which never touch masked-out bytes.
//!
//! # Files
//! - `frame`: permute tables, lane sums, the [`frame::Layout`] trait in the arranged tile loop, and
//!   the q8a matmul and `isums` that choose a layout by row width;
//! - `pair`: one or two blocks per register, which every layout ends a row with;
//! - `q4`: Q4_0/Q4_1 groups of 16 blocks and quads; `q8`: Q8_0 octets;
//! - `wide`: rows over 4096 columns, in `R` x `T` tiles through the shared `drive`;
//! - `kquant`: K-quant batches, AVX2's arranged super-blocks two tokens per register, with
//!   `vpdpbusd` products;
//! - `q5`: Q5_0/Q5_1 decode two blocks per register (batches: AVX2's quads with the fifth
//!   bits set by mask, `avx2/q5.rs`);
//! - `float`: activation quantization, f32-activation matmuls and row dequantization.

mod float;
mod frame;
mod kquant;
mod pair;
mod q4;
mod q5;
mod q8;
mod wide;

use super::super::Kernels;
use super::{isums3, table, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K, Q8_0};
#[cfg(test)]
use frame::isums;
use frame::matmul_q8a;

entries! {
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c";
    q8a matmul_q8a_q8_0 = matmul_q8a::<Q8_0>;
    q8a matmul_q8a_q4_0 = matmul_q8a::<Q4_0>;
    q8a matmul_q8a_q4_1 = matmul_q8a::<Q4_1>;
    isums isums_q8_0 = isums::<Q8_0>;
    isums isums_q4_0 = isums::<Q4_0>;
    isums isums_q4_1 = isums::<Q4_1>;
    q8a matmul_q8a_q5_0 = q5::matmul::<false>;
    q8a matmul_q8a_q5_1 = q5::matmul::<true>;
    q8a matmul_q8a_q4_k = kquant::matmul::<Q4_K>;
    q8a matmul_q8a_q5_k = kquant::matmul::<Q5_K>;
    q8a matmul_q8a_q6_k = kquant::matmul::<Q6_K>;
}

float_entries!("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c", float);

/// The AVX-512 VNNI table. The gated activations, the weighted sum and log-sum-exp are the
/// scalar reference's code, vectorized by the compiler: the same operations, so the same
/// bits.
pub(super) static KERNELS: Kernels = table(
    "avx512vnni",
    [matmul_q8a_q8_0, matmul_q8a_q4_0, matmul_q8a_q4_1],
    isums3!(isums_q8_0, isums_q4_0, isums_q4_1),
    [
        matmul_q8a_q5_0,
        matmul_q8a_q5_1,
        matmul_q8a_q4_k,
        matmul_q8a_q5_k,
        matmul_q8a_q6_k,
    ],
    FLOAT,
);
