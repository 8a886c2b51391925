//! aarch64 paths (to be written). Each fills a `static` [`Kernels`] table, starting from
//! `..scalar::KERNELS` for entries it does not vectorize, and is listed by [`available`]
//! after detection with `std::arch::is_aarch64_feature_detected!`:
//!
//! | name      | detect            | entries to fill                                      |
//! |-----------|-------------------|------------------------------------------------------|
//! | `neon`    | `"neon"`          | quantize_act, matmul_q8a (Q8_0/Q4_0/Q4_1), isums, matmul_f32 (F32/F16), dot_f32, dequant_row |
//! | `dotprod` | `"dotprod"`       | matmul_q8a + isums with SDOT (stable `asm!` inside `#[target_feature(enable = "dotprod")]`) |
//! | `i8mm`    | `"i8mm"`          | matmul_q8a for n_tok >= 2 with SMMLA (2x2 row x token tiles), `asm!` as above |
//!
//! Rounding in quantize_act must match the scalar rule bit for bit: `vcvtnq_s32_f32`
//! (FCVTNS) rounds ties to even like `f32::round_ties_even`. Every table must pass the
//! `kernels::tests` unit tests (`cargo test -p pipit --lib`, run under qemu in CI).

use super::Kernels;

/// The aarch64 tables this CPU supports, slowest first.
pub(crate) fn available() -> Vec<&'static Kernels> {
    Vec::new()
}
