//! aarch64 paths, each a `static` [`Kernels`] table listed by [`available`] only after
//! `std::arch::is_aarch64_feature_detected!` confirmed its features:
//!
//! | name      | detect                    | what it adds                                         |
//! |-----------|---------------------------|------------------------------------------------------|
//! | `neon`    | `neon`                    | every entry: SMULL/SADALP integer dots, FMLA floats  |
//! | `dotprod` | `neon`, `dotprod`         | integer dots with SDOT (Cortex-A76, Pi 5, phones)    |
//! | `i8mm`    | `neon`, `dotprod`, `i8mm` | SMMLA 2x2 tiles for `n_tok >= 2` (prefill)           |
//!
//! SDOT and SMMLA are emitted with stable `asm!` inside `#[target_feature]` functions (their
//! intrinsics are not stable). A binary built for generic aarch64 never executes them on a
//! CPU without the feature: the only way to reach them is through a table handed out here.
//! The `dotprod`/`i8mm` target-feature names are stable since Rust 1.61 (MSRV is 1.89).
//!
//! Rounding in `quantize_act` matches the scalar rule bit for bit: FCVTNS
//! (`vcvtnq_s32_f32`) rounds ties to even like `f32::round_ties_even`.

use std::arch::aarch64::*;
use std::arch::asm;
use std::arch::is_aarch64_feature_detected;

use super::Kernels;

mod dotprod;
mod i8mm;
mod kquant;
mod neon;
mod q5;

fn has_neon() -> bool {
    is_aarch64_feature_detected!("neon")
}

fn has_dotprod() -> bool {
    has_neon() && is_aarch64_feature_detected!("dotprod")
}

fn has_i8mm() -> bool {
    has_dotprod() && is_aarch64_feature_detected!("i8mm")
}

/// The aarch64 tables this CPU supports, slowest first.
pub(crate) fn available() -> Vec<&'static Kernels> {
    let mut v = Vec::new();
    if has_neon() {
        v.push(&neon::KERNELS);
    }
    if has_dotprod() {
        v.push(&dotprod::KERNELS);
    }
    if has_i8mm() {
        v.push(&i8mm::KERNELS);
    }
    v
}

/// The little-endian f16 bits at `p` (unaligned).
///
/// # Safety
/// `p..p + 2` must be readable.
#[inline(always)]
unsafe fn f16_bits(p: *const u8) -> u16 {
    u16::from_le(std::ptr::read_unaligned(p.cast::<u16>()))
}

/// f16 bits to f32 with FCVT (exact).
#[inline(always)]
fn f16_to_f32(bits: u16) -> f32 {
    let out: f32;
    // SAFETY: FMOV and FCVT (half to single) are base Armv8-A floating-point instructions,
    // present on every aarch64 CPU; they read and write only the named registers.
    unsafe {
        asm!(
            "fmov {o:s}, {b:w}",
            "fcvt {o:s}, {o:h}",
            b = in(reg) u32::from(bits),
            o = out(vreg) out,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    out
}

/// Four f16 (bits, lane 0 in the low 16 bits) to f32 with FCVTL (exact).
#[inline(always)]
fn f16x4_to_f32(bits: u64) -> float32x4_t {
    let out: float32x4_t;
    // SAFETY: FMOV and FCVTL are base Armv8-A FP/Advanced SIMD instructions; they read and
    // write only the named registers.
    unsafe {
        asm!(
            "fmov {o:d}, {b}",
            "fcvtl {o:v}.4s, {o:v}.4h",
            b = in(reg) bits,
            o = out(vreg) out,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    out
}

/// Eight f16 (the 16 bytes of `v`, little-endian) to two f32 vectors with FCVTL/FCVTL2.
#[inline(always)]
fn f16x8_to_f32(v: uint8x16_t) -> [float32x4_t; 2] {
    let (lo, hi): (float32x4_t, float32x4_t);
    // SAFETY: FCVTL/FCVTL2 are base Advanced SIMD instructions; `lo`/`hi` are outputs
    // distinct from the input register, which is read by both.
    unsafe {
        asm!(
            "fcvtl {lo:v}.4s, {v:v}.4h",
            "fcvtl2 {hi:v}.4s, {v:v}.8h",
            v = in(vreg) v,
            lo = out(vreg) lo,
            hi = out(vreg) hi,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    [lo, hi]
}

#[cfg(test)]
mod tests {
    use super::super::tests::{acts, weights, Rng, Scales};
    use super::super::{available, scalar, select, BlockQ8A, DType, QMatrix};
    use super::*;
    use half::f16;

    /// Which paths this CPU offers. `tools/test-aarch64.sh` sets `PIPIT_EXPECT_KERNELS` to
    /// the list the emulated CPU must produce (e.g. `scalar,neon` for a Cortex-A53).
    #[test]
    fn paths_match_cpu() {
        let names: Vec<&str> = available().iter().map(|k| k.name).collect();
        println!("aarch64 kernel paths under test: {}", names.join(", "));
        assert_eq!(&names[..2], &["scalar", "neon"]);
        assert_eq!(names.contains(&"dotprod"), has_dotprod());
        assert_eq!(names.contains(&"i8mm"), has_i8mm());
        if let Ok(want) = std::env::var("PIPIT_EXPECT_KERNELS") {
            assert_eq!(
                names.join(","),
                want,
                "paths differ from PIPIT_EXPECT_KERNELS"
            );
        }
        for n in ["dotprod", "i8mm"] {
            if !names.contains(&n) {
                let e = select(n).unwrap_err().to_string();
                assert!(e.contains("not available") && e.contains(n), "{e}");
            }
        }
    }

    #[test]
    fn f16_conversions_exact() {
        let mut bits: Vec<u16> = (0..=u16::MAX).step_by(7).collect();
        bits.extend([0, 0x8000, 1, 0x3ff, 0x400, 0x7bff, 0xfbff, 0x7c00, 0xfc00]);
        for chunk in bits.chunks_exact(8) {
            let want: Vec<u32> = chunk
                .iter()
                .map(|&b| f16::from_bits(b).to_f32())
                .filter(|v| !v.is_nan())
                .map(f32::to_bits)
                .collect();
            let mut got = Vec::new();
            let mut got4 = [0f32; 8];
            let mut got8 = [0f32; 8];
            let mut bytes = [0u8; 16];
            for (i, &b) in chunk.iter().enumerate() {
                got.push(f16_to_f32(b));
                bytes[2 * i..2 * i + 2].copy_from_slice(&b.to_le_bytes());
            }
            for (h, o) in chunk.chunks_exact(4).zip(got4.chunks_exact_mut(4)) {
                let b = h
                    .iter()
                    .enumerate()
                    .fold(0u64, |acc, (i, &x)| acc | (u64::from(x) << (16 * i)));
                // SAFETY: `o` holds 4 f32.
                unsafe { vst1q_f32(o.as_mut_ptr(), f16x4_to_f32(b)) };
            }
            // SAFETY: `bytes` holds 16 bytes, `got8` 8 f32.
            unsafe {
                let [lo, hi] = f16x8_to_f32(vld1q_u8(bytes.as_ptr()));
                vst1q_f32(got8.as_mut_ptr(), lo);
                vst1q_f32(got8.as_mut_ptr().add(4), hi);
            }
            for g in [&got[..], &got4[..], &got8[..]] {
                let g: Vec<u32> = g
                    .iter()
                    .filter(|v| !v.is_nan())
                    .map(|v| v.to_bits())
                    .collect();
                assert_eq!(g, want, "{chunk:x?}");
            }
        }
    }

    /// SMMLA's 2x2 tile, checked entry by entry against the scalar integer sums, with the
    /// extreme operands (-128 weights, +-127 activations).
    #[test]
    fn smmla_tile_exact() {
        if !has_i8mm() {
            return;
        }
        let mut rng = Rng::new(21);
        for dtype in [
            DType::Q8_0,
            DType::Q4_0,
            DType::Q4_1,
            DType::Q5_0,
            DType::Q5_1,
        ] {
            for round in 0..6 {
                let mut wb = weights(&mut rng, dtype, 2, 32, Scales::Normal);
                if round % 2 == 1 {
                    let bb = dtype.block_bytes();
                    for b in wb.chunks_exact_mut(bb) {
                        let start = bb - 32 / if dtype == DType::Q8_0 { 1 } else { 2 };
                        b[start..].fill(if dtype == DType::Q8_0 { 0x80 } else { 0xff });
                    }
                }
                let w = QMatrix::new(dtype, 2, 32, &wb).unwrap();
                let mut xq = vec![BlockQ8A::default(); 2];
                scalar().quantize_act(&acts(&mut rng, 64, 6 * (round % 2)), &mut xq);
                if round >= 4 {
                    xq[0].qs = [-127; 32];
                    xq[1].qs = [127; 32];
                }
                let mut want = [0i32; 4];
                for r in 0..2 {
                    for t in 0..2 {
                        let mut o = [0];
                        scalar().block_isums(&w, r, &xq[t..t + 1], &mut o);
                        want[2 * r + t] = o[0];
                    }
                }
                // SAFETY: i8mm (and dotprod/neon) detected above; `wb` holds two blocks.
                let got = unsafe { i8mm::tile_isums(&wb, dtype, &xq[0], &xq[1]) };
                assert_eq!(got, want, "{dtype} round {round}");
            }
        }
    }
}
