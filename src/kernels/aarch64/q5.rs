//! Q5_0 and Q5_1 weights for the NEON tiles: a block's 5-bit values unpacked into the two
//! signed vectors of `neon::load_w` (values 0..16, then 16..32), after which Q5_0 is Q4_0
//! with offset 16 and Q5_1 is Q4_1: the same tiles, products, scales and minimum terms
//! (`neon.rs`, `i8mm.rs`). The values lie in `-16..=15` (Q5_0) and `0..=31` (Q5_1), inside
//! the bound of the four-products-per-i16 NEON product (`4 * 32 * 127 < 2^15`).
//!
//! # Safety
//! As in `neon.rs`: NEON, and `p` at a whole block.

use std::arch::aarch64::*;

/// The 32 values of the Q5_0 (`one = false`: `q - 16`) or Q5_1 (`q`) block at `p`; value i
/// is nibble i of `qs` (low nibbles first) plus bit i of `qh` as `0x10`.
#[inline(always)]
pub(super) unsafe fn load_w(p: *const u8, one: bool) -> [int8x16_t; 2] {
    let qh = p.add(if one { 4 } else { 2 });
    let qs = vld1q_u8(qh.add(4));
    // Byte i of a half tests bit i % 8 of the half's qh byte i / 8.
    let bit = vreinterpretq_u8_u64(vdupq_n_u64(0x8040_2010_0804_0201));
    let fifth = |k: usize| {
        let h = vcombine_u8(vdup_n_u8(*qh.add(2 * k)), vdup_n_u8(*qh.add(2 * k + 1)));
        vandq_u8(vtstq_u8(h, bit), vdupq_n_u8(0x10))
    };
    let lo = vorrq_u8(vandq_u8(qs, vdupq_n_u8(0x0f)), fifth(0));
    let hi = vorrq_u8(vshrq_n_u8::<4>(qs), fifth(1));
    let (lo, hi) = (vreinterpretq_s8_u8(lo), vreinterpretq_s8_u8(hi));
    if one {
        [lo, hi]
    } else {
        let sixteen = vdupq_n_s8(16);
        [vsubq_s8(lo, sixteen), vsubq_s8(hi, sixteen)]
    }
}
