//! Q4_0/Q4_1 in the transposed group layout of AVX2: 8 blocks per group, one block per i32
//! lane of each product, so one conversion and one scale serve 8 blocks. The blocks past the
//! last whole group go in pairs, one block per 128-bit half.
//!
//! # Safety
//! As in `avx2/mod.rs`: AVX2, FMA and F16C (and AVX-VNNI for `VNNI = VEX_VNNI`), and the
//! caller's slice-size preconditions.

use std::arch::x86_64::*;

use super::super::super::BlockQ8A;
use super::super::{block_bytes, Q4_0, Q4_1};
use super::frame::Layout;
use super::{dot_acc, transpose4, NO_VNNI};

/// Blocks per group of the transposed Q4 layout: i32 lane L of a product holds one block, so
/// one conversion and scale serve 8 blocks instead of 1.
pub(super) const GRP: usize = 8;
/// The block of a group that lane `l` holds: a 4 x 4 dword transpose by in-lane unpacks of
/// four registers of two blocks each puts block `2i + b` (register i, 128-bit half b) in
/// lane `4b + i`.
pub(super) const fn grp_block(l: usize) -> usize {
    2 * (l % 4) + l / 4
}

#[repr(align(32))]
pub(super) struct Lanes([i32; 8]);

/// `grp_block` of each lane.
pub(super) static GRP_BLOCKS: Lanes = Lanes({
    let mut b = [0; 8];
    let mut l = 0;
    while l < 8 {
        b[l] = grp_block(l) as i32;
        l += 1;
    }
    b
});

/// 8 Q4 weight blocks of one row, transposed and unpacked: dword lanes of `lo[k]` hold
/// values `4k..4k + 3` of block `grp_block(L)` (the low nibbles of bytes `4k..4k + 3`), of
/// `hi[k]` values `16 + 4k..16 + 4k + 3` (their high nibbles); `d`/`m` that block's scale /
/// minimum. Unpacked once per row and group, they serve every token of a tile.
#[derive(Clone, Copy)]
pub(super) struct WGroup {
    lo: [__m256i; 4],
    hi: [__m256i; 4],
    d: __m256,
    m: __m256,
}

/// The dword at `p + bb * grp_block(L)` in lane L: plain loads and in-lane unpacks (a
/// gather costs more on the CPUs we measured, and this runs once per row and group).
#[inline(always)]
pub(super) unsafe fn grp_dwords(p: *const u8, bb: usize) -> (__m128i, __m128i) {
    let ld = |j: usize| _mm_loadu_si32(p.add(j * bb));
    let pair = |i: usize, j: usize| _mm_unpacklo_epi32(ld(i), ld(j));
    // Lanes 0..3 hold blocks 0, 2, 4, 6 and lanes 4..7 blocks 1, 3, 5, 7 (`grp_block`).
    let lo = _mm_unpacklo_epi64(pair(0, 2), pair(4, 6));
    let hi = _mm_unpacklo_epi64(pair(1, 3), pair(5, 7));
    (lo, hi)
}

/// The f16 halves of [`grp_dwords`] as f32 in lane order: the low halves, or the high
/// halves when `high`.
#[inline(always)]
pub(super) unsafe fn grp_halves((lo, hi): (__m128i, __m128i), high: bool) -> __m256 {
    let h = if high {
        _mm_packus_epi32(_mm_srli_epi32::<16>(lo), _mm_srli_epi32::<16>(hi))
    } else {
        let mask = _mm_set1_epi32(0xffff);
        _mm_packus_epi32(_mm_and_si128(lo, mask), _mm_and_si128(hi, mask))
    };
    _mm256_cvtph_ps(h)
}

/// The 16 bytes at `p` and the 16 at `p + bb`, as the low and high halves of one register.
#[inline(always)]
pub(super) unsafe fn two_blocks(p: *const u8, bb: usize) -> __m256i {
    _mm256_loadu2_m128i(p.add(bb).cast(), p.cast())
}

#[inline(always)]
pub(super) unsafe fn load_wg<const DT: u8>(p: *const u8) -> WGroup {
    let bb = block_bytes(DT);
    let off = if DT == Q4_0 { 2 } else { 4 };
    let (p0, p1, p2, p3) = (
        two_blocks(p.add(off), bb),
        two_blocks(p.add(2 * bb + off), bb),
        two_blocks(p.add(4 * bb + off), bb),
        two_blocks(p.add(6 * bb + off), bb),
    );
    let dw = transpose4([p0, p1, p2, p3]);
    let mask = _mm256_set1_epi8(0x0f);
    let lo = dw.map(|v| _mm256_and_si256(v, mask));
    let hi = dw.map(|v| _mm256_and_si256(_mm256_srli_epi16::<4>(v), mask));
    // The gathered dword at a block's start is `d` (low half) and, for Q4_1, `m` (high half).
    let dm = grp_dwords(p, bb);
    let d = grp_halves(dm, false);
    let m = if DT == Q4_1 {
        grp_halves(dm, true)
    } else {
        _mm256_setzero_ps()
    };
    WGroup { lo, hi, d, m }
}

/// 8 activation blocks of one token, transposed like [`WGroup`]: `a[g]` lane L = dword g of
/// block `grp_block(L)`'s values; `init` removes the Q4_0 weight offset.
#[derive(Clone, Copy)]
pub(super) struct AGroup {
    a: [__m256i; 8],
    d: __m256,
    s: __m256,
    init: __m256i,
}

#[inline(always)]
pub(super) unsafe fn load_ag<const DT: u8, const VNNI: u8>(x: *const BlockQ8A) -> AGroup {
    const _: () = assert!(size_of::<BlockQ8A>() == 40);
    // Dword 10 j + i of the 8 blocks is dword i of block j (d, s, then 8 dwords of values).
    let base = x.cast::<i32>();
    let j10 = _mm256_mullo_epi32(
        _mm256_load_si256(GRP_BLOCKS.0.as_ptr().cast()),
        _mm256_set1_epi32(10),
    );
    let mut a = [_mm256_setzero_si256(); 8];
    for (g, ag) in a.iter_mut().enumerate() {
        let ix = _mm256_add_epi32(j10, _mm256_set1_epi32(2 + g as i32));
        *ag = _mm256_i32gather_epi32::<4>(base, ix);
    }
    let d = _mm256_castsi256_ps(_mm256_i32gather_epi32::<4>(base, j10));
    let s = if DT == Q4_1 {
        let ix = _mm256_add_epi32(j10, _mm256_set1_epi32(1));
        _mm256_castsi256_ps(_mm256_i32gather_epi32::<4>(base, ix))
    } else {
        _mm256_setzero_ps()
    };
    let init = if DT == Q4_0 {
        let e = _mm256_set1_epi8(8);
        let mut c = _mm256_setzero_si256();
        for &ag in &a {
            c = dot_acc::<VNNI>(c, e, ag);
        }
        _mm256_sub_epi32(_mm256_setzero_si256(), c)
    } else {
        _mm256_setzero_si256()
    };
    AGroup { a, d, s, init }
}

/// Exact i32 lanes of one group product: block `grp_block(L)` in lane L.
#[inline(always)]
pub(super) unsafe fn isum_group<const DT: u8, const VNNI: u8>(w: &WGroup, a: &AGroup) -> __m256i {
    if VNNI != NO_VNNI {
        let mut i = a.init;
        for k in 0..4 {
            i = dot_acc::<VNNI>(i, w.lo[k], a.a[k]);
            i = dot_acc::<VNNI>(i, w.hi[k], a.a[k + 4]);
        }
        return i;
    }
    // Each `vpmaddubsw` lane is a nibble (<= 15) times two activations (|a| <= 127), so at
    // most 3810 in magnitude: all 8 sum exactly in i16 (<= 30480), and one `vpmaddwd` widens.
    let mut s16 = _mm256_maddubs_epi16(w.lo[0], a.a[0]);
    s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(w.hi[0], a.a[4]));
    for k in 1..4 {
        s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(w.lo[k], a.a[k]));
        s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(w.hi[k], a.a[k + 4]));
    }
    let i = _mm256_madd_epi16(s16, _mm256_set1_epi16(1));
    // Q4_1 has no offset to remove (`init` is zero).
    if DT == Q4_0 {
        _mm256_add_epi32(a.init, i)
    } else {
        i
    }
}

/// Q4_0/Q4_1 in groups of 8 ([`WGroup`], [`AGroup`]).
pub(super) struct Q4Groups;

impl<const DT: u8, const VNNI: u8> Layout<DT, VNNI> for Q4Groups {
    const BLOCKS: usize = GRP;
    type Tail = Q4Pairs;
    type W = WGroup;
    type A = AGroup;
    #[inline(always)]
    unsafe fn load_w(p: *const u8) -> WGroup {
        load_wg::<DT>(p)
    }
    #[inline(always)]
    unsafe fn load_a(x: *const BlockQ8A) -> AGroup {
        load_ag::<DT, VNNI>(x)
    }
    #[inline(always)]
    unsafe fn accumulate(w: &WGroup, a: &AGroup, acc: __m256) -> __m256 {
        let i = isum_group::<DT, VNNI>(w, a);
        let acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), _mm256_mul_ps(w.d, a.d), acc);
        if DT == Q4_1 {
            _mm256_fmadd_ps(w.m, a.s, acc)
        } else {
            acc
        }
    }
}

/// Two Q4 weight blocks of one row, block k in 128-bit half k: `lo` its values 0..15 (the low
/// nibbles), `hi` its values 16..31 (the high nibbles), `d` its scale in the half's 4 lanes,
/// `m` (Q4_1) its minimum in the half's first lane, zero elsewhere.
#[derive(Clone, Copy)]
pub(super) struct WPair {
    lo: __m256i,
    hi: __m256i,
    d: __m256,
    m: __m256,
}

#[inline(always)]
unsafe fn load_wp<const DT: u8>(p: *const u8) -> WPair {
    let bb = block_bytes(DT);
    let off = if DT == Q4_0 { 2 } else { 4 };
    let q = two_blocks(p.add(off), bb);
    let mask = _mm256_set1_epi8(0x0f);
    // Bytes 0..3 of `dm` are block 0's `d` (and Q4_1's `m`), bytes 4..7 block 1's.
    let dm = _mm_unpacklo_epi32(_mm_loadu_si32(p), _mm_loadu_si32(p.add(bb)));
    let d = _mm_shuffle_epi8(
        dm,
        _mm_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 4, 5, 4, 5, 4, 5, 4, 5),
    );
    let m = if DT == Q4_1 {
        let z = -1;
        let m = _mm_shuffle_epi8(
            dm,
            _mm_setr_epi8(2, 3, z, z, z, z, z, z, 6, 7, z, z, z, z, z, z),
        );
        _mm256_cvtph_ps(m)
    } else {
        _mm256_setzero_ps()
    };
    WPair {
        lo: _mm256_and_si256(q, mask),
        hi: _mm256_and_si256(_mm256_srli_epi16::<4>(q), mask),
        d: _mm256_cvtph_ps(d),
        m,
    }
}

/// Two activation blocks of one token, arranged like [`WPair`]; `s` each block's sum in its
/// half's 4 lanes; `init` removes the Q4_0 weight offset.
#[derive(Clone, Copy)]
pub(super) struct APair {
    lo: __m256i,
    hi: __m256i,
    d: __m256,
    s: __m256,
    init: __m256i,
}

#[inline(always)]
unsafe fn load_ap<const DT: u8, const VNNI: u8>(x: *const BlockQ8A) -> APair {
    let (a, b) = (&*x, &*x.add(1));
    let (qa, qb) = (a.qs.as_ptr(), b.qs.as_ptr());
    let lo = _mm256_loadu2_m128i(qb.cast(), qa.cast());
    let hi = _mm256_loadu2_m128i(qb.add(16).cast(), qa.add(16).cast());
    let init = if DT == Q4_0 {
        let (e, zero) = (_mm256_set1_epi8(8), _mm256_setzero_si256());
        let c = dot_acc::<VNNI>(dot_acc::<VNNI>(zero, e, lo), e, hi);
        _mm256_sub_epi32(zero, c)
    } else {
        _mm256_setzero_si256()
    };
    APair {
        lo,
        hi,
        d: _mm256_setr_ps(a.d, a.d, a.d, a.d, b.d, b.d, b.d, b.d),
        s: _mm256_setr_ps(a.s, a.s, a.s, a.s, b.s, b.s, b.s, b.s),
        init,
    }
}

/// Q4_0/Q4_1 two blocks at a time ([`WPair`], [`APair`]): the tail of [`Q4Groups`].
pub(super) struct Q4Pairs;

impl<const DT: u8, const VNNI: u8> Layout<DT, VNNI> for Q4Pairs {
    const BLOCKS: usize = 2;
    type Tail = Self;
    type W = WPair;
    type A = APair;
    #[inline(always)]
    unsafe fn load_w(p: *const u8) -> WPair {
        load_wp::<DT>(p)
    }
    #[inline(always)]
    unsafe fn load_a(x: *const BlockQ8A) -> APair {
        load_ap::<DT, VNNI>(x)
    }
    #[inline(always)]
    unsafe fn accumulate(w: &WPair, a: &APair, acc: __m256) -> __m256 {
        let i = if VNNI != NO_VNNI {
            dot_acc::<VNNI>(dot_acc::<VNNI>(a.init, w.lo, a.lo), w.hi, a.hi)
        } else {
            // Each `vpmaddubsw` lane is at most 2 * 15 * 127 = 3810 in magnitude, so the two
            // sum exactly in i16, and one `vpmaddwd` widens.
            let s16 = _mm256_add_epi16(
                _mm256_maddubs_epi16(w.lo, a.lo),
                _mm256_maddubs_epi16(w.hi, a.hi),
            );
            let i = _mm256_madd_epi16(s16, _mm256_set1_epi16(1));
            if DT == Q4_0 {
                _mm256_add_epi32(a.init, i)
            } else {
                i
            }
        };
        let acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), _mm256_mul_ps(w.d, a.d), acc);
        if DT == Q4_1 {
            _mm256_fmadd_ps(w.m, a.s, acc)
        } else {
            acc
        }
    }
}
