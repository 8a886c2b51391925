//! Q4_K, Q5_K and Q6_K for every x86 table: batches by arranged super-blocks ([`KUnit`],
//! through `arranged`), decode and rows over 16 super-blocks through the frame (the
//! micro-kernel of [`KQuant`]).
//!
//! A super-block of 256 weights is cut into 8 sub-blocks of 32, one per activation block.
//! Per row, the 8 sub-blocks are unpacked once to 32 unsigned bytes `q` each (`0..=15`,
//! `0..=31`, `0..=63`), which meet each token's activations `a` through `vpmaddubsw` (pairs
//! below `2 * 63 * 127 < 2^15`); Q6_K's offset is removed pair by pair by subtracting
//! `32 * a` summed the same way, once per token for all rows. The i16 pair sums of the 8
//! sub-blocks are then reduced together: sub-blocks 2i and 2i + 1 are interleaved by
//! `vpunpck{l,h}dq` and added (`vpaddw`) into sums of 4 products side by side (at most
//! `4 * 32 * 127 < 2^15`: exact), one `vpmaddwd` per pair multiplies them by the integer
//! scales (Q4_K/Q5_K: the 6-bit `sc_j`; Q6_K: the i8 scale of each half of 16) and adds
//! them in pairs, and `vpunpck{l,h}qdq` + `vpaddd` gather the 4 pairs. That leaves per 128-bit
//! lane one i32 per sub-block and half (low lane: values 0-15, high lane: 16-31); adding the
//! two halves gives one i32 lane per sub-block, the exact `isum` of the module docs of
//! `kernels`. The 8 lanes are converted to f32 once per super-block and accumulated by one
//! FMA with the 8 `d * d_a_j`; the minimum terms of Q4_K/Q5_K, `-(dmin * m_j) * s_a`, are
//! one more FMA on the same lanes.
//!
//! Batches arrange the unpacked values of weights and activations alike ([`arrange`]) so that
//! lane j of every register belongs to sub-block j, as in the reduction above: the 8
//! products then add up vertically (`vpaddw`, exact: see [`kunit_isums`]) and one
//! `vpmaddwd` by the lanes' scales gives the same exact `isum`s in the same lanes, without
//! the reduction (thread CPU time at 128 tokens: Q4_K 40 -> 76, Q5_K 36 -> 68, Q6_K 32 -> 58
//! GMAC/s). The f32 steps are the same too, so each output sees the same operations in the
//! same order whatever its path, tile, batch or thread split.
//!
//! # Safety
//! As in `avx2/mod.rs`: AVX2, FMA and F16C, and the caller's slice-size preconditions.

#![allow(clippy::needless_range_loop)] // tiles index rows and tokens in lockstep

use std::arch::x86_64::*;

use std::ops::Range;

use super::super::super::{BlockQ8A, QK};
use super::arranged::{self, Unit};
use super::frame::{matmul_tiles, Micro};
use super::super::{block_bytes, Q4_K, Q5_K, Q6_K};
use super::{f16_lane0, prefetch, prefetch_rows, transpose4};

/// Sub-blocks of 32 per super-block.
pub(in crate::kernels::x86) const SUBS: usize = 8;

/// The 8 six-bit scales and the 8 six-bit minimums packed in the 12 bytes at `p` (the
/// layout of `pipit_format::blocks::k_scale_min`), byte j of each u64 for sub-block j.
/// Bytes 0-3 hold the low 6 bits of scales 0-3, bytes 4-7 those of minimums 0-3; bytes 8-11
/// the low nibbles of scales 4-7 and the high nibbles of minimums 4-7, whose top 2 bits are
/// the top 2 bits of bytes 0-3 (scales) and 4-7 (minimums).
#[inline(always)]
pub(in crate::kernels::x86) unsafe fn scales_mins(p: *const u8) -> (u64, u64) {
    let word = |k: usize| u32::from_le_bytes(std::ptr::read_unaligned(p.add(4 * k).cast()));
    let (a, b, c) = (word(0), word(1), word(2));
    let sc_hi = (c & 0x0f0f_0f0f) | (((a >> 6) & 0x0303_0303) << 4);
    let m_hi = ((c >> 4) & 0x0f0f_0f0f) | (((b >> 6) & 0x0303_0303) << 4);
    let sc = u64::from(a & 0x3f3f_3f3f) | (u64::from(sc_hi) << 32);
    let m = u64::from(b & 0x3f3f_3f3f) | (u64::from(m_hi) << 32);
    (sc, m)
}

/// One row's super-block, unpacked: the unsigned values `u` of its 8 sub-blocks, and the
/// i16 multipliers `sc` of the reduced sums of sub-blocks 0-3 and 4-7 (see [`isum_lanes`]).
#[derive(Clone, Copy)]
struct Row {
    u: [__m256i; SUBS],
    sc: [__m256i; SUBS / 2],
}

/// The 32 bytes at `p`.
#[inline(always)]
pub(in crate::kernels::x86) unsafe fn load(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p.cast())
}

/// The super-block at `p` of selector `K`, unpacked; `sc` holds its scales from
/// [`scales_mins`] (Q4_K/Q5_K; Q6_K reads its own).
#[inline(always)]
unsafe fn unpack<const K: u8>(p: *const u8, sc: u64) -> Row {
    let m15 = _mm256_set1_epi8(0x0f);
    let mut row = Row {
        u: [_mm256_setzero_si256(); SUBS],
        sc: [_mm256_setzero_si256(); SUBS / 2],
    };
    if K == Q6_K {
        // Half h holds sub-blocks 4h..4h + 3 (k = 0..3): value l of sub-block k has its low
        // nibble in byte 32 (k & 1) + l of the half's 64 bytes of `ql` (the high nibble for
        // k >= 2), and its top 2 bits at bits 2k, 2k + 1 of byte l of the half's 32 bytes of
        // `qh`, moved here to bits 4 and 5 (the mask drops what the 16-bit shifts carry over).
        let m30 = _mm256_set1_epi8(0x30);
        for h in 0..2 {
            let (l0, l1, qh) = (
                load(p.add(64 * h)),
                load(p.add(64 * h + 32)),
                load(p.add(128 + 32 * h)),
            );
            let q = [
                _mm256_or_si256(
                    _mm256_and_si256(l0, m15),
                    _mm256_and_si256(_mm256_slli_epi16::<4>(qh), m30),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(l1, m15),
                    _mm256_and_si256(_mm256_slli_epi16::<2>(qh), m30),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(l0), m15),
                    _mm256_and_si256(qh, m30),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(l1), m15),
                    _mm256_and_si256(_mm256_srli_epi16::<2>(qh), m30),
                ),
            ];
            row.u[4 * h..4 * h + 4].copy_from_slice(&q);
        }
        row.sc = q6_scales(p);
        return row;
    }
    // Q4_K/Q5_K: sub-blocks 2i and 2i + 1 are the low and high nibbles of bytes
    // 32i..32i + 31 of `qs`; Q5_K's fifth bit of value l of sub-block j is bit j of `qh[l]`,
    // moved to bit 4 (the mask drops what the 16-bit shifts carry over).
    let qs = if K == Q5_K { 48 } else { 16 };
    for i in 0..SUBS / 2 {
        let raw = load(p.add(qs + 32 * i));
        row.u[2 * i] = _mm256_and_si256(raw, m15);
        row.u[2 * i + 1] = _mm256_and_si256(_mm256_srli_epi16::<4>(raw), m15);
    }
    if K == Q5_K {
        let (qh, m10) = (load(p.add(16)), _mm256_set1_epi8(0x10));
        for j in 0..SUBS {
            let bit = if j <= 4 {
                _mm256_sll_epi16(qh, _mm_cvtsi32_si128(4 - j as i32))
            } else {
                _mm256_srl_epi16(qh, _mm_cvtsi32_si128(j as i32 - 4))
            };
            row.u[j] = _mm256_or_si256(row.u[j], _mm256_and_si256(bit, m10));
        }
    }
    row.sc = k_scales(sc);
    row
}

/// The i16 multipliers of the Q4_K/Q5_K scales `sc` (from [`scales_mins`]) for [`pair`]: pair
/// i (sub-blocks 2i, 2i + 1) takes sc_2i, sc_2i, sc_2i+1, sc_2i+1, twice, in both halves.
#[inline(always)]
pub(in crate::kernels::x86) unsafe fn k_scales(sc: u64) -> [__m256i; SUBS / 2] {
    // A loop, not `array::from_fn`: a closure called from there is compiled without the
    // caller's CPU features, and its intrinsics would become calls.
    let v = _mm256_broadcastsi128_si256(_mm_cvtsi64_si128(sc as i64));
    let mut out = [_mm256_setzero_si256(); SUBS / 2];
    for (i, o) in out.iter_mut().enumerate() {
        let (a, b, z) = (2 * i as i8, 2 * i as i8 + 1, -1);
        let pick = _mm256_setr_epi8(
            a, z, a, z, b, z, b, z, a, z, a, z, b, z, b, z, a, z, a, z, b, z, b, z, a, z, a, z, b,
            z, b, z,
        );
        *o = _mm256_shuffle_epi8(v, pick);
    }
    out
}

/// The i16 multipliers of the Q6_K super-block at `p` for [`pair`]: scale 2j + g is that of
/// half g (values 16g..16g + 15) of sub-block j, so pair i (sub-blocks 2i, 2i + 1) takes scales
/// 4i, 4i + 2 in the low 128 bits and 4i + 1, 4i + 3 in the high, each twice.
#[inline(always)]
pub(in crate::kernels::x86) unsafe fn q6_scales(p: *const u8) -> [__m256i; SUBS / 2] {
    // As i16, scales 0-7 of pairs 0, 1 in `t[0]`.
    let s = _mm256_cvtepi8_epi16(_mm_loadu_si128(p.add(192).cast()));
    let t = [
        _mm256_permute2x128_si256::<0x00>(s, s),
        _mm256_permute2x128_si256::<0x11>(s, s),
    ];
    let pick = [
        _mm256_setr_epi8(
            0, 1, 0, 1, 4, 5, 4, 5, 0, 1, 0, 1, 4, 5, 4, 5, 2, 3, 2, 3, 6, 7, 6, 7, 2, 3, 2, 3, 6,
            7, 6, 7,
        ),
        _mm256_setr_epi8(
            8, 9, 8, 9, 12, 13, 12, 13, 8, 9, 8, 9, 12, 13, 12, 13, 10, 11, 10, 11, 14, 15, 14, 15,
            10, 11, 10, 11, 14, 15, 14, 15,
        ),
    ];
    let mut out = [_mm256_setzero_si256(); SUBS / 2];
    for (i, o) in out.iter_mut().enumerate() {
        *o = _mm256_shuffle_epi8(t[i / 2], pick[i % 2]);
    }
    out
}

/// Sub-block `j` of `row` times its activations `a`: 16 i16 sums of 2 products (values
/// 0-15 in the low 128 bits, 16-31 in the high).
#[inline(always)]
unsafe fn prod<const K: u8>(row: &Row, a: &AK, j: usize) -> __m256i {
    let p = _mm256_maddubs_epi16(
        row.u[j],
        _mm256_loadu_si256((*a.x.add(j)).qs.as_ptr().cast()),
    );
    if K == Q6_K {
        // `q * a - 32 * a` pair by pair: exact, as each side is.
        _mm256_sub_epi16(p, a.m32[j])
    } else {
        p
    }
}

/// Sub-blocks `2i` and `2i + 1` of `row` against their activations, scaled: per 128 bits,
/// i32 lanes 0 and 2 hold parts of sub-block `2i`, lanes 1 and 3 of sub-block `2i + 1`.
#[inline(always)]
unsafe fn pair<const K: u8>(row: &Row, a: &AK, i: usize) -> __m256i {
    let (p, q) = (prod::<K>(row, a, 2 * i), prod::<K>(row, a, 2 * i + 1));
    // i16 pairs of one sub-block side by side, each a sum of 4 products (at most
    // `4 * 32 * 127 < 2^15`: exact), then times the scale and summed in pairs.
    let four = _mm256_add_epi16(_mm256_unpacklo_epi32(p, q), _mm256_unpackhi_epi32(p, q));
    _mm256_madd_epi16(four, row.sc[i])
}

/// Two [`pair`]s summed: per 128 bits, one i32 lane per sub-block, in order.
#[inline(always)]
unsafe fn quad(m: __m256i, n: __m256i) -> __m256i {
    _mm256_add_epi32(_mm256_unpacklo_epi64(m, n), _mm256_unpackhi_epi64(m, n))
}

/// The exact `isum` of each of the 8 sub-blocks of `row` against the 8 activation blocks at
/// `a`, in lanes 0-7.
#[inline(always)]
unsafe fn isum_lanes<const K: u8>(row: &Row, a: &AK) -> __m256i {
    // i32 lane k of 128-bit half g: half g of sub-block k (`lo`) or 4 + k (`hi`).
    let lo = quad(pair::<K>(row, a, 0), pair::<K>(row, a, 1));
    let hi = quad(pair::<K>(row, a, 2), pair::<K>(row, a, 3));
    _mm256_add_epi32(
        _mm256_permute2x128_si256::<0x20>(lo, hi),
        _mm256_permute2x128_si256::<0x31>(lo, hi),
    )
}

/// One token's activations for one super-block: its 8 activation blocks at `x`, their scales
/// `d` and (Q4_K/Q5_K) sums `s`, in lanes 0-7.
#[derive(Clone, Copy)]
pub(in crate::kernels::x86) struct AK {
    pub(in crate::kernels::x86) x: *const BlockQ8A,
    pub(in crate::kernels::x86) d: __m256,
    pub(in crate::kernels::x86) s: __m256,
    /// Q6_K: `32 * a` summed in pairs, as `vpmaddubsw` sums `q * a`, per block.
    pub(in crate::kernels::x86) m32: [__m256i; SUBS],
}

/// `d` and `s` of the activation blocks `x` and `x + 1`: `[d0, s0, d1, s1]`.
#[inline(always)]
unsafe fn ds_pair(x: *const BlockQ8A) -> __m128 {
    let lo = _mm_load_sd(x.cast());
    _mm_castpd_ps(_mm_loadh_pd(lo, x.add(1).cast()))
}

/// The super-block layouts: Q4_K, Q5_K or Q6_K by selector `K`.
pub(in crate::kernels::x86) struct KQuant<const K: u8>;

impl<const K: u8> Micro for KQuant<K> {
    const BLOCK_BYTES: usize = block_bytes(K);
    const SUBS: usize = SUBS;
    const BATCH_ROWS: usize = 4;
    type A = AK;
    #[inline(always)]
    unsafe fn load_a(x: *const BlockQ8A) -> AK {
        // (d, s) of blocks j, j + 1 in one 128-bit lane, then the d and the s apart.
        let (b01, b23) = (ds_pair(x), ds_pair(x.add(2)));
        let (b45, b67) = (ds_pair(x.add(4)), ds_pair(x.add(6)));
        let a = _mm256_set_m128(b45, b01);
        let b = _mm256_set_m128(b67, b23);
        let d = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
        let s = _mm256_shuffle_ps::<0b11_01_11_01>(a, b);
        let mut m32 = [_mm256_setzero_si256(); SUBS];
        if K == Q6_K {
            for (j, m) in m32.iter_mut().enumerate() {
                let a = _mm256_loadu_si256((*x.add(j)).qs.as_ptr().cast());
                *m = _mm256_maddubs_epi16(_mm256_set1_epi8(32), a);
            }
        }
        AK { x, d, s, m32 }
    }
    #[inline(always)]
    unsafe fn block<const R: usize, const T: usize>(
        w: *const u8,
        rb: usize,
        a: &[AK; T],
        acc: &mut [[__m256; T]; R],
    ) {
        block_steps::<K, Row, R, T>(w, rb, a, acc);
    }
}

/// A form of one row's unpacked super-block for [`block_steps`]: the AVX2 [`Row`], or the
/// AVX-512 one with two sub-blocks per register.
pub(in crate::kernels::x86) trait KRow<const K: u8>: Sized {
    /// One token's activations for one super-block.
    type A: Copy;
    /// The super-block at `p` (`sc`: Q4_K/Q5_K's scales from [`scales_mins`]).
    unsafe fn unpack(p: *const u8, sc: u64) -> Self;
    /// The exact `isum` of sub-block j against `a` in lane j.
    unsafe fn isum(&self, a: &Self::A) -> __m256i;
    /// The AVX2 activations within `a` (for `d` and `s`).
    fn ak(a: &Self::A) -> &AK;
}

impl<const K: u8> KRow<K> for Row {
    type A = AK;
    #[inline(always)]
    unsafe fn unpack(p: *const u8, sc: u64) -> Row {
        unpack::<K>(p, sc)
    }
    #[inline(always)]
    unsafe fn isum(&self, a: &AK) -> __m256i {
        isum_lanes::<K>(self, a)
    }
    #[inline(always)]
    fn ak(a: &AK) -> &AK {
        a
    }
}

/// [`KQuant`]'s `Micro::block` for the row form `U`: the f32 steps are these whatever the
/// form, so outputs keep their bits.
#[inline(always)]
pub(in crate::kernels::x86) unsafe fn block_steps<
    const K: u8,
    U: KRow<K>,
    const R: usize,
    const T: usize,
>(
    w: *const u8,
    rb: usize,
    a: &[U::A; T],
    acc: &mut [[__m256; T]; R],
) {
    let ahead = prefetch_rows(rb, R) * rb;
    for r in 0..R {
        let p = w.add(r * rb);
        // The same super-block of a row further down: the tiles stream the matrix in
        // order, and the hardware prefetcher alone leaves decode waiting on DRAM.
        prefetch(p.wrapping_add(ahead), <KQuant<K> as Micro>::BLOCK_BYTES);
        let d = _mm256_broadcastss_ps(f16_lane0(p.add(if K == Q6_K { 208 } else { 0 })));
        let (row, dm) = if K == Q6_K {
            (U::unpack(p, 0), _mm256_setzero_ps())
        } else {
            let (sc, m) = scales_mins(p.add(4));
            (U::unpack(p, sc), mins(p, m))
        };
        for t in 0..T {
            let i = _mm256_cvtepi32_ps(row.isum(&a[t]));
            let ak = U::ak(&a[t]);
            if K != Q6_K {
                acc[r][t] = _mm256_fnmadd_ps(dm, ak.s, acc[r][t]);
            }
            acc[r][t] = _mm256_fmadd_ps(i, _mm256_mul_ps(d, ak.d), acc[r][t]);
        }
    }
}

/// The 8 sub-blocks' values `u` (value l of sub-block j in byte l of `u[j]`) arranged for
/// [`KUnit`]: lane `4h + i` of every register belongs to sub-block `4h + i` (the lane order of
/// [`isum_lanes`]); byte n of that lane of `x[k]` (k < 4) is the sub-block's value
/// `16h + 4k + n`, of `x[4 + k]` its value `16(1 - h) + 4k + n`. The same for weights and
/// activations.
#[inline(always)]
unsafe fn arrange(u: &[__m256i; SUBS]) -> [__m256i; SUBS] {
    // Lane 4h + i of `lo[k]`: dword 4h + k of sub-block i (`hi`: 4 + i).
    let lo = transpose4([u[0], u[1], u[2], u[3]]);
    let hi = transpose4([u[4], u[5], u[6], u[7]]);
    let mut x = [_mm256_setzero_si256(); SUBS];
    for k in 0..4 {
        x[k] = _mm256_blend_epi32::<0xf0>(lo[k], hi[k]);
        x[4 + k] = _mm256_permute2x128_si256::<0x21>(lo[k], hi[k]);
    }
    x
}

/// `dmin * m_j` of the Q4_K/Q5_K super-block at `p` (minimums `m` from [`scales_mins`]), in
/// lanes 0-7.
#[inline(always)]
pub(in crate::kernels::x86) unsafe fn mins(p: *const u8, m: u64) -> __m256 {
    let dmin = _mm256_broadcastss_ps(f16_lane0(p.add(2)));
    let m = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(m as i64)));
    _mm256_mul_ps(dmin, m)
}

/// One row's super-block arranged: the values `x` of [`arrange`], the i16
/// multipliers of each lane's sums (`sc[0]` for `x[0..4]`, `sc[1]` for `x[4..8]`: Q4_K/Q5_K
/// the lane's 6-bit scale; Q6_K the i8 scale of the half of 16 its values are in), `d`, and
/// (Q4_K/Q5_K) `dmin * m_j` per lane.
#[derive(Clone, Copy)]
pub(in crate::kernels::x86) struct WUnit {
    pub(in crate::kernels::x86) x: [__m256i; SUBS],
    pub(in crate::kernels::x86) sc: [__m256i; 2],
    pub(in crate::kernels::x86) d: __m256,
    pub(in crate::kernels::x86) dm: __m256,
}

/// One token's super-block of activations arranged: values `x`, and per lane the block's
/// `d` and `s`; Q6_K: `32 * a` summed as the products of `x[0..4]` and of
/// `x[4..8]` are (i16, wrapping).
#[derive(Clone, Copy)]
pub(in crate::kernels::x86) struct AUnit {
    pub(in crate::kernels::x86) x: [__m256i; SUBS],
    pub(in crate::kernels::x86) d: __m256,
    pub(in crate::kernels::x86) s: __m256,
    pub(in crate::kernels::x86) m32: [__m256i; 2],
}

/// Q4_K, Q5_K or Q6_K by arranged super-blocks, through
/// `arranged::matmul`: the 8 sub-blocks' products add up vertically, one sub-block per i32
/// lane, so one `vpmaddwd` by the scales, one conversion and one FMA serve 256 weights.
pub(in crate::kernels::x86) struct KUnit<const K: u8>;

impl<const K: u8> Unit for KUnit<K> {
    const SUBS: usize = SUBS;
    const BYTES: usize = <KQuant<K> as Micro>::BLOCK_BYTES;
    type W = WUnit;
    type A = AUnit;
    type Tail = KQuant<K>;
    #[inline(always)]
    unsafe fn load_w(p: *const u8) -> WUnit {
        let d = _mm256_broadcastss_ps(f16_lane0(p.add(if K == Q6_K { 208 } else { 0 })));
        if K == Q6_K {
            let row = unpack::<K>(p, 0);
            // Lane j = 4h + i (sub-block j) takes scale 2j + h for `x[0..4]`, 2j + 1 - h for
            // `x[4..8]`, as two i16.
            let s8 = _mm_loadu_si128(p.add(192).cast());
            let pick = |v: [i8; 8]| {
                let b: [i8; 16] = std::array::from_fn(|n| v[n / 2]);
                let idx = _mm_loadu_si128(b.as_ptr().cast());
                _mm256_cvtepi8_epi16(_mm_shuffle_epi8(s8, idx))
            };
            let sc = [
                pick([0, 2, 4, 6, 9, 11, 13, 15]),
                pick([1, 3, 5, 7, 8, 10, 12, 14]),
            ];
            return WUnit {
                x: arrange(&row.u),
                sc,
                d,
                dm: _mm256_setzero_ps(),
            };
        }
        let (sc, m) = scales_mins(p.add(4));
        let row = unpack::<K>(p, sc);
        let twice = _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
        let sc = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(_mm_cvtsi64_si128(sc as i64), twice));
        WUnit {
            x: arrange(&row.u),
            sc: [sc, sc],
            d,
            dm: mins(p, m),
        }
    }
    #[inline(always)]
    unsafe fn load_a(x: *const BlockQ8A) -> AUnit {
        let a = <KQuant<K> as Micro>::load_a(x);
        // Loops, not `array::from_fn` or `map`: a closure called from there is compiled
        // without the entry point's CPU features, and its intrinsics would become calls.
        let mut u = [_mm256_setzero_si256(); SUBS];
        for (j, uj) in u.iter_mut().enumerate() {
            *uj = _mm256_loadu_si256((*x.add(j)).qs.as_ptr().cast());
        }
        let x = arrange(&u);
        let mut m32 = [_mm256_setzero_si256(); 2];
        if K == Q6_K {
            let m = _mm256_set1_epi8(32);
            for (h, mh) in m32.iter_mut().enumerate() {
                for xk in &x[4 * h..4 * h + 4] {
                    *mh = _mm256_add_epi16(*mh, _mm256_maddubs_epi16(m, *xk));
                }
            }
        }
        AUnit {
            x,
            d: a.d,
            s: a.s,
            m32,
        }
    }
    #[inline(always)]
    unsafe fn accumulate(w: &WUnit, a: &AUnit, acc: __m256) -> __m256 {
        let i = kunit_isums::<K>(w, a);
        let acc = if K == Q6_K {
            acc
        } else {
            _mm256_fnmadd_ps(w.dm, a.s, acc)
        };
        _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), _mm256_mul_ps(w.d, a.d), acc)
    }
}

/// The exact `isum` of each sub-block of a super-block, sub-block j in lane j.
#[inline(always)]
unsafe fn kunit_isums<const K: u8>(w: &WUnit, a: &AUnit) -> __m256i {
    let half = |h: usize| {
        let mut s = _mm256_maddubs_epi16(w.x[4 * h], a.x[4 * h]);
        for k in 4 * h + 1..4 * h + 4 {
            s = _mm256_add_epi16(s, _mm256_maddubs_epi16(w.x[k], a.x[k]));
        }
        s
    };
    let (s0, s1) = (half(0), half(1));
    match K {
        // 8 products of a nibble and two activations per i16 lane: at most 8 * 2 * 15 * 127.
        Q4_K => _mm256_madd_epi16(_mm256_add_epi16(s0, s1), w.sc[0]),
        // 4 per half: at most 4 * 2 * 31 * 127.
        Q5_K => _mm256_add_epi32(
            _mm256_madd_epi16(s0, w.sc[0]),
            _mm256_madd_epi16(s1, w.sc[1]),
        ),
        // `q * a - 32 * a` over 4 products per half: at most 4 * 2 * 32 * 127 in magnitude, so
        // the wrapping i16 sums end exact.
        _ => _mm256_add_epi32(
            _mm256_madd_epi16(_mm256_sub_epi16(s0, a.m32[0]), w.sc[0]),
            _mm256_madd_epi16(_mm256_sub_epi16(s1, a.m32[1]), w.sc[1]),
        ),
    }
}

/// The matmul of `MatmulQ8aFn` for Q4_K, Q5_K or Q6_K: batches by arranged super-blocks for
/// the rows `arranged` takes, decode and wider rows through the frame's tiles, which share
/// activation loads among 4 rows instead (thread CPU time of one token at 4096 x 1024 Q4_K:
/// 25 GMAC/s arranged, 30 in tiles). Both compute lane j, sub-block j's, with the same
/// operations in the same order, so an output's bits do not depend on the batch.
///
/// # Safety
/// As `MatmulQ8aFn`, on a CPU with AVX2, FMA and F16C.
#[inline(always)]
pub(super) unsafe fn matmul<const K: u8>(
    w: &[u8],
    cols: usize,
    rows: Range<usize>,
    xq: &[BlockQ8A],
    n_tok: usize,
    out: *mut f32,
    out_stride: usize,
) {
    let nb = cols / QK;
    if n_tok > 1 && arranged::fits::<KUnit<K>>(nb) {
        let (wp, xp) = (w.as_ptr(), xq.as_ptr());
        arranged::matmul::<KUnit<K>>(wp, nb, rows, xp, n_tok, out, out_stride)
    } else {
        matmul_tiles::<KQuant<K>>(w, cols, rows, xq, n_tok, out, out_stride)
    }
}

/// Per-sub-block exact sums of one row (test hook), with the primitives of the path
/// [`matmul`] takes for rows of this width.
#[inline(always)]
#[cfg(test)]
pub(super) unsafe fn isums<const K: u8>(w_row: &[u8], xq: &[BlockQ8A], out: &mut [i32]) {
    let by_units = arranged::fits::<KUnit<K>>(out.len());
    for b in 0..out.len() / SUBS {
        let p = w_row.as_ptr().add(b * <KQuant<K> as Micro>::BLOCK_BYTES);
        let x = xq.as_ptr().add(b * SUBS);
        let i = if by_units {
            kunit_isums::<K>(&KUnit::<K>::load_w(p), &KUnit::<K>::load_a(x))
        } else {
            let sc = if K == Q6_K {
                0
            } else {
                scales_mins(p.add(4)).0
            };
            isum_lanes::<K>(&unpack::<K>(p, sc), &<KQuant<K> as Micro>::load_a(x))
        };
        _mm256_storeu_si256(out.as_mut_ptr().add(b * SUBS).cast(), i);
    }
}
