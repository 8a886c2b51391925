//! AVX2 + FMA + F16C kernels: one block of 32 per 256-bit register; the same with AVX-VNNI
//! (`vpdpbusd` in VEX form, for CPUs without AVX-512) as the `avxvnni` table.
//!
//! Integer products use `vpmaddubsw` (u8 x i8 -> i16 pairs) + `vpmaddwd` (-> i32 lanes).
//! Q8_0 uses the sign trick (`|w| * sign(a, w)`; `|w| <= 128`, `|a| <= 127`, so pairs stay
//! below 2^15); Q4 nibbles are already unsigned, and Q4_0's `-8` offset is removed exactly by
//! subtracting `8 * a` summed the same way. Per block, the 8 i32 lanes are converted to f32
//! and scaled by `d_w * d_a`; Q4_1's `m_w * s_a` is added in lane 0.
//!
//! # Safety
//! Every `unsafe fn` here requires AVX2, FMA and F16C, and AVX-VNNI when `VNNI = true`
//! (guaranteed by the `#[target_feature]` entry points) and the slice-size preconditions of the table types in `kernels/mod.rs`.

#![allow(clippy::needless_range_loop)] // tiles index rows and tokens in lockstep

use std::arch::x86_64::*;
use std::mem::MaybeUninit;
use std::ops::Range;

use super::super::scalar::{self, Q4_0_BYTES, Q4_1_BYTES, Q8_0_BYTES};
use super::super::{BlockQ8A, Kernels, QK};

const Q8_0: u8 = 0;
const Q4_0: u8 = 1;
const Q4_1: u8 = 2;

/// Integer product selectors: `vpmaddubsw` + `vpmaddwd`; AVX-VNNI's VEX `vpdpbusd`; or the
/// same 256-bit `vpdpbusd` in its AVX-512 VNNI + VL (EVEX) encoding, which only the tests
/// use, to run the AVX-VNNI kernels' arithmetic on CPUs that have AVX-512 but not AVX-VNNI.
const NO_VNNI: u8 = 0;
const VEX_VNNI: u8 = 1;
const EVEX_VNNI: u8 = 2;

const fn block_bytes(dt: u8) -> usize {
    match dt {
        Q8_0 => Q8_0_BYTES,
        Q4_0 => Q4_0_BYTES,
        _ => Q4_1_BYTES,
    }
}

/// The f16 at `p` (unaligned) as f32.
#[inline(always)]
unsafe fn f16_at(p: *const u8) -> f32 {
    let bits = u16::from_le_bytes([*p, *p.add(1)]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
}

/// One weight block of one row.
#[derive(Clone, Copy)]
struct WBlock {
    /// Unsigned bytes: `|w|` (Q8_0) or `w + 128` (Q8_0 with VNNI) or nibbles (Q4).
    u: __m256i,
    /// Q8_0: the signed weights (for the sign of the activations).
    w: __m256i,
    /// `d` in every lane.
    d: __m256,
    /// Q4_1: `m` in lane 0, zero elsewhere (one term per block, in the vector accumulator).
    m: __m256,
}

/// The f16 at `p` (unaligned) in lane 0 of an f32 vector, zero elsewhere.
#[inline(always)]
unsafe fn f16_lane0(p: *const u8) -> __m128 {
    let bits = u16::from_le_bytes([*p, *p.add(1)]);
    _mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits)))
}

#[inline(always)]
unsafe fn load_w<const DT: u8, const VNNI: u8>(p: *const u8) -> WBlock {
    let d = _mm256_broadcastss_ps(f16_lane0(p));
    match DT {
        Q8_0 => {
            let w = _mm256_loadu_si256(p.add(2).cast());
            // VNNI: `w + 128` (unsigned; the offset is removed by `ABlock::init`);
            // otherwise `|w|` for the sign trick.
            let u = if VNNI != NO_VNNI {
                _mm256_xor_si256(w, _mm256_set1_epi8(-128))
            } else {
                _mm256_sign_epi8(w, w)
            };
            WBlock {
                u,
                w,
                d,
                m: _mm256_setzero_ps(),
            }
        }
        _ => {
            let off = if DT == Q4_0 { 2 } else { 4 };
            let q = _mm_loadu_si128(p.add(off).cast());
            let lo = _mm_and_si128(q, _mm_set1_epi8(0x0f));
            let hi = _mm_and_si128(_mm_srli_epi16::<4>(q), _mm_set1_epi8(0x0f));
            let u = _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(lo), hi);
            let m = if DT == Q4_1 {
                _mm256_zextps128_ps256(f16_lane0(p.add(2)))
            } else {
                _mm256_setzero_ps()
            };
            WBlock {
                u,
                w: _mm256_setzero_si256(),
                d,
                m,
            }
        }
    }
}

/// One activation block of one token.
#[derive(Clone, Copy)]
struct ABlock {
    a: __m256i,
    /// `d` and `s` in every lane.
    d: __m256,
    s: __m256,
    /// Initial i32 lanes: minus the weight offset times `a` (Q4_0: 8; Q8_0 with VNNI: 128),
    /// summed as in `isum_lanes`, so the result is exact.
    init: __m256i,
}

#[inline(always)]
unsafe fn load_a<const DT: u8, const VNNI: u8>(x: *const BlockQ8A) -> ABlock {
    let x = &*x;
    let a = _mm256_loadu_si256(x.qs.as_ptr().cast());
    let zero = _mm256_setzero_si256();
    let init = match (DT, VNNI) {
        (Q4_0, _) => _mm256_sub_epi32(zero, dot_acc::<VNNI>(zero, _mm256_set1_epi8(8), a)),
        (Q8_0, VEX_VNNI | EVEX_VNNI) => {
            _mm256_sub_epi32(zero, dot_acc::<VNNI>(zero, _mm256_set1_epi8(-128), a))
        }
        _ => zero,
    };
    ABlock {
        a,
        d: _mm256_set1_ps(x.d),
        s: _mm256_set1_ps(x.s),
        init,
    }
}

/// `acc` + i32 lanes of `u * a` over groups of 4 bytes: `vpdpbusd` (AVX-VNNI) or
/// `vpmaddubsw` + `vpmaddwd`, whose i16 pairs cannot saturate for the operands used here.
#[inline(always)]
unsafe fn dot_acc<const VNNI: u8>(acc: __m256i, u: __m256i, a: __m256i) -> __m256i {
    if VNNI == VEX_VNNI {
        _mm256_dpbusd_avx_epi32(acc, u, a)
    } else if VNNI == EVEX_VNNI {
        _mm256_dpbusd_epi32(acc, u, a)
    } else {
        _mm256_add_epi32(
            acc,
            _mm256_madd_epi16(_mm256_maddubs_epi16(u, a), _mm256_set1_epi16(1)),
        )
    }
}

/// Exact i32 lanes of one weight block times one activation block.
#[inline(always)]
unsafe fn isum_lanes<const DT: u8, const VNNI: u8>(w: &WBlock, a: &ABlock) -> __m256i {
    if DT == Q8_0 && VNNI == NO_VNNI {
        dot_acc::<NO_VNNI>(_mm256_setzero_si256(), w.u, _mm256_sign_epi8(a.a, w.w))
    } else {
        dot_acc::<VNNI>(a.init, w.u, a.a)
    }
}

/// `R` rows x `T` tokens; pointers as in the AVX-512 `tile`.
#[inline(always)]
unsafe fn tile<const DT: u8, const VNNI: u8, const R: usize, const T: usize>(
    w: *const u8,
    rb: usize,
    nb: usize,
    x: *const BlockQ8A,
    out: *mut f32,
    out_stride: usize,
) {
    let bb = block_bytes(DT);
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    for b in 0..nb {
        let zero = ABlock {
            a: _mm256_setzero_si256(),
            d: _mm256_setzero_ps(),
            s: _mm256_setzero_ps(),
            init: _mm256_setzero_si256(),
        };
        let mut ab = [zero; T];
        for (t, a) in ab.iter_mut().enumerate() {
            *a = load_a::<DT, VNNI>(x.add(t * nb + b));
        }
        for r in 0..R {
            let wb = load_w::<DT, VNNI>(w.add(r * rb + b * bb));
            for t in 0..T {
                let i = isum_lanes::<DT, VNNI>(&wb, &ab[t]);
                let scale = _mm256_mul_ps(wb.d, ab[t].d);
                acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), scale, acc[r][t]);
                if DT == Q4_1 {
                    acc[r][t] = _mm256_fmadd_ps(wb.m, ab[t].s, acc[r][t]);
                }
            }
        }
    }
    for r in 0..R {
        for t in 0..T {
            *out.add(t * out_stride + r) = hsum(acc[r][t]);
        }
    }
}

#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Blocks per group of the transposed Q4 layout: i32 lane L of a product holds one block, so
/// one conversion and scale serve 8 blocks instead of 1.
const GRP: usize = 8;
/// Tokens per tile of the grouped path.
const GRP_TOK: usize = 4;

/// The block of a group that lane `l` holds: a 4 x 4 dword transpose by in-lane unpacks of
/// four registers of two blocks each puts block `2i + b` (register i, 128-bit half b) in
/// lane `4b + i`.
const fn grp_block(l: usize) -> usize {
    2 * (l % 4) + l / 4
}

#[repr(align(32))]
struct Lanes([i32; 8]);

/// `grp_block` of each lane.
static GRP_BLOCKS: Lanes = Lanes({
    let mut b = [0; 8];
    let mut l = 0;
    while l < 8 {
        b[l] = grp_block(l) as i32;
        l += 1;
    }
    b
});

/// 8 Q4 weight blocks of one row, transposed: dword lanes of `dw[k]` hold nibble bytes
/// `4k..4k + 3` of block `grp_block(L)`; `d`/`m` that block's scale / minimum.
#[derive(Clone, Copy)]
struct WGroup {
    dw: [__m256i; 4],
    d: __m256,
    m: __m256,
}

/// The 8 f16 at byte offsets `off + bb * grp_block(L)` from `p` (the low half of each
/// gathered dword when `!high`, else the high half), as f32 in lane order.
#[inline(always)]
unsafe fn grp_halves(p: *const u8, bb: usize, high: bool) -> __m256 {
    let ix = _mm256_mullo_epi32(
        _mm256_load_si256(GRP_BLOCKS.0.as_ptr().cast()),
        _mm256_set1_epi32(bb as i32),
    );
    let g = _mm256_i32gather_epi32::<1>(p.cast(), ix);
    let h = if high {
        _mm256_srli_epi32::<16>(g)
    } else {
        _mm256_and_si256(g, _mm256_set1_epi32(0xffff))
    };
    _mm256_cvtph_ps(_mm_packus_epi32(
        _mm256_castsi256_si128(h),
        _mm256_extracti128_si256::<1>(h),
    ))
}

/// The 16 bytes at `p` and the 16 at `p + bb`, as the low and high halves of one register.
#[inline(always)]
unsafe fn two_blocks(p: *const u8, bb: usize) -> __m256i {
    _mm256_loadu2_m128i(p.add(bb).cast(), p.cast())
}

#[inline(always)]
unsafe fn load_wg<const DT: u8>(p: *const u8) -> WGroup {
    let bb = block_bytes(DT);
    let off = if DT == Q4_0 { 2 } else { 4 };
    let (p0, p1, p2, p3) = (
        two_blocks(p.add(off), bb),
        two_blocks(p.add(2 * bb + off), bb),
        two_blocks(p.add(4 * bb + off), bb),
        two_blocks(p.add(6 * bb + off), bb),
    );
    let dw = transpose4([p0, p1, p2, p3]);
    // The gathered dword at a block's start is `d` (low half) and, for Q4_1, `m` (high half).
    let d = grp_halves(p, bb, false);
    let m = if DT == Q4_1 {
        grp_halves(p, bb, true)
    } else {
        _mm256_setzero_ps()
    };
    WGroup { dw, d, m }
}

/// 8 activation blocks of one token, transposed like [`WGroup`]: `a[g]` lane L = dword g of
/// block `grp_block(L)`'s values; `init` removes the Q4_0 weight offset.
#[derive(Clone, Copy)]
struct AGroup {
    a: [__m256i; 8],
    d: __m256,
    s: __m256,
    init: __m256i,
}

#[inline(always)]
unsafe fn load_ag<const DT: u8, const VNNI: u8>(x: *const BlockQ8A) -> AGroup {
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
unsafe fn isum_group<const VNNI: u8>(w: &WGroup, a: &AGroup) -> __m256i {
    let mask = _mm256_set1_epi8(0x0f);
    if VNNI != NO_VNNI {
        let mut i = a.init;
        for k in 0..4 {
            let lo = _mm256_and_si256(w.dw[k], mask);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(w.dw[k]), mask);
            i = dot_acc::<VNNI>(i, lo, a.a[k]);
            i = dot_acc::<VNNI>(i, hi, a.a[k + 4]);
        }
        return i;
    }
    // Each `vpmaddubsw` lane is a nibble (<= 15) times two activations (|a| <= 127), so at
    // most 3810 in magnitude: all 8 sum exactly in i16 (<= 30480), and one `vpmaddwd` widens.
    let mut s16 = _mm256_setzero_si256();
    for k in 0..4 {
        let lo = _mm256_and_si256(w.dw[k], mask);
        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(w.dw[k]), mask);
        s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(lo, a.a[k]));
        s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(hi, a.a[k + 4]));
    }
    _mm256_add_epi32(a.init, _mm256_madd_epi16(s16, _mm256_set1_epi16(1)))
}

/// Q8_0 blocks per quad of the transposed Q8_0 layout.
const Q8_QUAD: usize = 4;

/// In each 128-bit half h, the 4 x 4 transpose of the dwords of `r` (in-lane unpacks only):
/// `out[k]` lane `4h + i` = dword `4h + k` of `r[i]`. For four Q8_0 blocks, each block spans
/// lanes i and 4 + i.
#[inline(always)]
unsafe fn transpose4(r: [__m256i; 4]) -> [__m256i; 4] {
    let (t0, t1) = (
        _mm256_unpacklo_epi32(r[0], r[1]),
        _mm256_unpackhi_epi32(r[0], r[1]),
    );
    let (t2, t3) = (
        _mm256_unpacklo_epi32(r[2], r[3]),
        _mm256_unpackhi_epi32(r[2], r[3]),
    );
    [
        _mm256_unpacklo_epi64(t0, t2),
        _mm256_unpackhi_epi64(t0, t2),
        _mm256_unpacklo_epi64(t1, t3),
        _mm256_unpackhi_epi64(t1, t3),
    ]
}

/// Four Q8_0 weight blocks of one row, transposed (see [`transpose4`]): `u` the unsigned
/// operand (`|w|`, or `w + 128` with VNNI), `w` the signed weights (for the sign trick), `d`
/// block i's scale in lanes i and 4 + i.
#[derive(Clone, Copy)]
struct WQuad8 {
    u: [__m256i; 4],
    w: [__m256i; 4],
    d: __m256,
}

#[inline(always)]
unsafe fn load_wq8<const VNNI: u8>(p: *const u8) -> WQuad8 {
    let bb = Q8_0_BYTES;
    let w = transpose4([
        _mm256_loadu_si256(p.add(2).cast()),
        _mm256_loadu_si256(p.add(bb + 2).cast()),
        _mm256_loadu_si256(p.add(2 * bb + 2).cast()),
        _mm256_loadu_si256(p.add(3 * bb + 2).cast()),
    ]);
    let mut u = [_mm256_setzero_si256(); 4];
    for k in 0..4 {
        u[k] = if VNNI != NO_VNNI {
            _mm256_xor_si256(w[k], _mm256_set1_epi8(-128))
        } else {
            _mm256_sign_epi8(w[k], w[k])
        };
    }
    let half = |i: usize| i16::from_le_bytes([*p.add(i * bb), *p.add(i * bb + 1)]);
    let h = _mm_setr_epi16(
        half(0),
        half(1),
        half(2),
        half(3),
        half(0),
        half(1),
        half(2),
        half(3),
    );
    WQuad8 {
        u,
        w,
        d: _mm256_cvtph_ps(h),
    }
}

/// Four activation blocks of one token, transposed like [`WQuad8`].
#[derive(Clone, Copy)]
struct AQuad8 {
    a: [__m256i; 4],
    d: __m256,
    /// VNNI: minus 128 times each block's half-sums (removes the `w + 128` offset).
    init: __m256i,
}

#[inline(always)]
unsafe fn load_aq8<const VNNI: u8>(x: *const BlockQ8A) -> AQuad8 {
    let b = [&*x, &*x.add(1), &*x.add(2), &*x.add(3)];
    let a = transpose4([
        _mm256_loadu_si256(b[0].qs.as_ptr().cast()),
        _mm256_loadu_si256(b[1].qs.as_ptr().cast()),
        _mm256_loadu_si256(b[2].qs.as_ptr().cast()),
        _mm256_loadu_si256(b[3].qs.as_ptr().cast()),
    ]);
    let init = if VNNI != NO_VNNI {
        let mut c = _mm256_setzero_si256();
        for &ak in &a {
            c = dot_acc::<VNNI>(c, _mm256_set1_epi8(-128), ak);
        }
        _mm256_sub_epi32(_mm256_setzero_si256(), c)
    } else {
        _mm256_setzero_si256()
    };
    AQuad8 {
        a,
        d: _mm256_setr_ps(
            b[0].d, b[1].d, b[2].d, b[3].d, b[0].d, b[1].d, b[2].d, b[3].d,
        ),
        init,
    }
}

/// Exact i32 lanes of one Q8_0 quad product: block i in lanes i and 4 + i.
#[inline(always)]
unsafe fn isum_q8<const VNNI: u8>(w: &WQuad8, a: &AQuad8) -> __m256i {
    let mut i = a.init;
    for k in 0..4 {
        i = if VNNI != NO_VNNI {
            dot_acc::<VNNI>(i, w.u[k], a.a[k])
        } else {
            dot_acc::<NO_VNNI>(i, w.u[k], _mm256_sign_epi8(a.a[k], w.w[k]))
        };
    }
    i
}

/// A transposed layout: groups of `BLOCKS` blocks whose products land one block (or half a
/// block) per i32 lane, so one conversion and scale serve the whole group.
trait Layout<const DT: u8, const VNNI: u8> {
    /// Blocks per group.
    const BLOCKS: usize;
    /// One row's group of weights, decoded.
    type W: Copy;
    /// One token's group of activations, arranged.
    type A: Copy;
    unsafe fn load_w(p: *const u8) -> Self::W;
    unsafe fn load_a(x: *const BlockQ8A) -> Self::A;
    /// `acc` plus the group's product, lane by lane.
    unsafe fn accumulate(w: &Self::W, a: &Self::A, acc: __m256) -> __m256;
}

/// Q4_0/Q4_1 in groups of 8 ([`WGroup`], [`AGroup`]).
struct Q4Groups;
/// Q8_0 in quads of 4 ([`WQuad8`], [`AQuad8`]).
struct Q8Quads;

impl<const DT: u8, const VNNI: u8> Layout<DT, VNNI> for Q4Groups {
    const BLOCKS: usize = GRP;
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
        let i = isum_group::<VNNI>(w, a);
        let acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), _mm256_mul_ps(w.d, a.d), acc);
        if DT == Q4_1 {
            _mm256_fmadd_ps(w.m, a.s, acc)
        } else {
            acc
        }
    }
}

impl<const VNNI: u8> Layout<Q8_0, VNNI> for Q8Quads {
    const BLOCKS: usize = Q8_QUAD;
    type W = WQuad8;
    type A = AQuad8;
    #[inline(always)]
    unsafe fn load_w(p: *const u8) -> WQuad8 {
        load_wq8::<VNNI>(p)
    }
    #[inline(always)]
    unsafe fn load_a(x: *const BlockQ8A) -> AQuad8 {
        load_aq8::<VNNI>(x)
    }
    #[inline(always)]
    unsafe fn accumulate(w: &WQuad8, a: &AQuad8, acc: __m256) -> __m256 {
        let i = isum_q8::<VNNI>(w, a);
        _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), _mm256_mul_ps(w.d, a.d), acc)
    }
}

/// Groups per row at most (4096 columns: 16 Q4 groups, 32 Q8_0 quads); wider rows take the
/// per-block tiles.
const GROUPS_MAX: usize = 32;
/// Blocks past the last whole group, at most.
const TAIL_MAX: usize = GRP - 1;

/// The arranged activations of one token tile: token t's group g at `g[t * GROUPS_MAX + g]`,
/// its tail blocks at `tail[t * TAIL_MAX + k]`. Only the entries of the tile's shape are
/// written.
struct Tiles<A> {
    g: [MaybeUninit<A>; GRP_TOK * GROUPS_MAX],
    tail: [MaybeUninit<ABlock>; GRP_TOK * TAIL_MAX],
}

/// The matmul in layout `L` for rows of at most [`GROUPS_MAX`] groups, decode and prefill
/// alike (so an output's bits never depend on the batch): activations are arranged once per
/// tile of up to [`GRP_TOK`] tokens, then every row meets the tile: whole groups, then single
/// blocks.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn matmul_grouped<L: Layout<DT, VNNI>, const DT: u8, const VNNI: u8>(
    w: *const u8,
    rb: usize,
    nb: usize,
    rows: Range<usize>,
    x: *const BlockQ8A,
    n_tok: usize,
    out: *mut f32,
    out_stride: usize,
) {
    let ng = nb / L::BLOCKS;
    let mut tiles = Tiles::<L::A> {
        g: [const { MaybeUninit::uninit() }; GRP_TOK * GROUPS_MAX],
        tail: [const { MaybeUninit::uninit() }; GRP_TOK * TAIL_MAX],
    };
    let mut t = 0;
    while t < n_tok {
        let tn = (n_tok - t).min(GRP_TOK);
        for tt in 0..tn {
            let xt = x.add((t + tt) * nb);
            for gi in 0..ng {
                tiles.g[tt * GROUPS_MAX + gi].write(L::load_a(xt.add(L::BLOCKS * gi)));
            }
            for b in L::BLOCKS * ng..nb {
                let k = tt * TAIL_MAX + b - L::BLOCKS * ng;
                tiles.tail[k].write(load_a::<DT, VNNI>(xt.add(b)));
            }
        }
        let ot = out.add(t * out_stride);
        for r in rows.clone() {
            let (wr, or) = (w.add(r * rb), ot.add(r));
            match tn {
                4 => tile_grouped::<L, DT, VNNI, 4>(wr, nb, &tiles, or, out_stride),
                3 => tile_grouped::<L, DT, VNNI, 3>(wr, nb, &tiles, or, out_stride),
                2 => tile_grouped::<L, DT, VNNI, 2>(wr, nb, &tiles, or, out_stride),
                _ => tile_grouped::<L, DT, VNNI, 1>(wr, nb, &tiles, or, out_stride),
            }
        }
        t += tn;
    }
}

/// One row (at `w`, `nb` blocks) against the first `T` tokens of `tl`.
#[inline(always)]
unsafe fn tile_grouped<L: Layout<DT, VNNI>, const DT: u8, const VNNI: u8, const T: usize>(
    w: *const u8,
    nb: usize,
    tl: &Tiles<L::A>,
    out: *mut f32,
    out_stride: usize,
) {
    let bb = block_bytes(DT);
    let ng = nb / L::BLOCKS;
    let mut acc = [_mm256_setzero_ps(); T];
    // SAFETY (the `assume_init_ref`s below): `matmul_grouped` wrote the groups and tail
    // blocks of the tile's first T tokens for this row width, exactly the entries read here.
    for g in 0..ng {
        let wg = L::load_w(w.add(L::BLOCKS * g * bb));
        for (t, acc_t) in acc.iter_mut().enumerate() {
            *acc_t = L::accumulate(&wg, tl.g[t * GROUPS_MAX + g].assume_init_ref(), *acc_t);
        }
    }
    // Lanes are summed only at the end, so the tail blocks may use the per-block layout.
    for b in L::BLOCKS * ng..nb {
        let wb = load_w::<DT, VNNI>(w.add(b * bb));
        for (t, acc_t) in acc.iter_mut().enumerate() {
            let a = tl.tail[t * TAIL_MAX + b - L::BLOCKS * ng].assume_init_ref();
            let i = isum_lanes::<DT, VNNI>(&wb, a);
            *acc_t = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), _mm256_mul_ps(wb.d, a.d), *acc_t);
            if DT == Q4_1 {
                *acc_t = _mm256_fmadd_ps(wb.m, a.s, *acc_t);
            }
        }
    }
    for (t, acc_t) in acc.iter().enumerate() {
        *out.add(t * out_stride) = hsum(*acc_t);
    }
}

#[inline(always)]
unsafe fn matmul_q8a<const DT: u8, const VNNI: u8>(
    w: &[u8],
    cols: usize,
    rows: Range<usize>,
    xq: &[BlockQ8A],
    n_tok: usize,
    out: *mut f32,
    out_stride: usize,
) {
    let nb = cols / QK;
    let rb = nb * block_bytes(DT);
    let (wp, xp) = (w.as_ptr(), xq.as_ptr());
    if DT != Q8_0 && nb / GRP <= GROUPS_MAX / 2 {
        matmul_grouped::<Q4Groups, DT, VNNI>(wp, rb, nb, rows, xp, n_tok, out, out_stride);
        return;
    }
    if DT == Q8_0 && nb / Q8_QUAD <= GROUPS_MAX {
        matmul_grouped::<Q8Quads, Q8_0, VNNI>(wp, rb, nb, rows, xp, n_tok, out, out_stride);
        return;
    }
    let mut r = rows.start;
    while r < rows.end {
        let four = r + 4 <= rows.end;
        let wr = wp.add(r * rb);
        let mut t = 0;
        while t < n_tok {
            let tn = (n_tok - t).min(2);
            let (x, o) = (xp.add(t * nb), out.add(t * out_stride + r));
            match (four, tn) {
                (true, 2) => tile::<DT, VNNI, 4, 2>(wr, rb, nb, x, o, out_stride),
                (true, _) => tile::<DT, VNNI, 4, 1>(wr, rb, nb, x, o, out_stride),
                (false, 2) => tile::<DT, VNNI, 1, 2>(wr, rb, nb, x, o, out_stride),
                (false, _) => tile::<DT, VNNI, 1, 1>(wr, rb, nb, x, o, out_stride),
            }
            t += tn;
        }
        r += if four { 4 } else { 1 };
    }
}

#[inline(always)]
unsafe fn isums<const DT: u8, const VNNI: u8>(w_row: &[u8], xq: &[BlockQ8A], out: &mut [i32]) {
    let bb = block_bytes(DT);
    let mut b0 = 0;
    if DT != Q8_0 {
        while b0 + GRP <= out.len() {
            let wg = load_wg::<DT>(w_row.as_ptr().add(b0 * bb));
            let ag = load_ag::<DT, VNNI>(xq.as_ptr().add(b0));
            let mut lanes = [0i32; GRP];
            _mm256_storeu_si256(lanes.as_mut_ptr().cast(), isum_group::<VNNI>(&wg, &ag));
            for (l, v) in lanes.into_iter().enumerate() {
                out[b0 + grp_block(l)] = v;
            }
            b0 += GRP;
        }
    } else {
        while b0 + Q8_QUAD <= out.len() {
            let wq = load_wq8::<VNNI>(w_row.as_ptr().add(b0 * bb));
            let aq = load_aq8::<VNNI>(xq.as_ptr().add(b0));
            let mut lanes = [0i32; 8];
            _mm256_storeu_si256(lanes.as_mut_ptr().cast(), isum_q8::<VNNI>(&wq, &aq));
            for i in 0..Q8_QUAD {
                out[b0 + i] = lanes[i] + lanes[4 + i];
            }
            b0 += Q8_QUAD;
        }
    }
    for (b, o) in out.iter_mut().enumerate().skip(b0) {
        let i = isum_lanes::<DT, VNNI>(
            &load_w::<DT, VNNI>(w_row.as_ptr().add(b * bb)),
            &load_a::<DT, VNNI>(xq.as_ptr().add(b)),
        );
        let s = _mm_add_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256::<1>(i));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        *o = _mm_cvtsi128_si32(s);
    }
}

/// Quantizes activations, bit-identical to the scalar rule (`vroundps` to nearest-even, then
/// an exact conversion of the integral value).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_act(x: &[f32], out: &mut [BlockQ8A]) {
    let sign = _mm256_set1_ps(-0.0);
    for (xb, o) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let p = xb.as_ptr();
        let v = [
            _mm256_loadu_ps(p),
            _mm256_loadu_ps(p.add(8)),
            _mm256_loadu_ps(p.add(16)),
            _mm256_loadu_ps(p.add(24)),
        ];
        // Integer max of the magnitudes' bits: a NaN is the largest (scalar::abs_bits).
        let a = v.map(|vk| _mm256_castps_si256(_mm256_andnot_ps(sign, vk)));
        let m = _mm256_max_epi32(_mm256_max_epi32(a[0], a[1]), _mm256_max_epi32(a[2], a[3]));
        let m = _mm_max_epi32(_mm256_castsi256_si128(m), _mm256_extracti128_si256::<1>(m));
        let m = _mm_max_epi32(m, _mm_shuffle_epi32::<0b01_00_11_10>(m));
        let m = _mm_max_epi32(m, _mm_shuffle_epi32::<0b10_11_00_01>(m));
        let (d, id) = scalar::act_scale(f32::from_bits(_mm_cvtsi128_si32(m) as u32));
        if d.is_nan() {
            *o = scalar::NON_FINITE_BLOCK;
            continue;
        }
        let idv = _mm256_set1_ps(id);
        let mut q = [_mm256_setzero_si256(); 4];
        for (qk, &vk) in q.iter_mut().zip(&v) {
            let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm256_mul_ps(vk, idv),
            );
            *qk = _mm256_cvtps_epi32(r);
        }
        let sum = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        let s = _mm_add_epi32(
            _mm256_castsi256_si128(sum),
            _mm256_extracti128_si256::<1>(sum),
        );
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        let p01 = _mm256_packs_epi32(q[0], q[1]);
        let p23 = _mm256_packs_epi32(q[2], q[3]);
        let p = _mm256_packs_epi16(p01, p23);
        let p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(o.qs.as_mut_ptr().cast(), p);
        o.d = d;
        o.s = d * _mm_cvtsi128_si32(s) as f32;
    }
}

/// `R` rows x `T` tokens of an F32/F16-weight matmul; 8 columns per step, scalar tail.
#[inline(always)]
unsafe fn tile_f<const F16: bool, const R: usize, const T: usize>(
    w: *const u8,
    rb: usize,
    cols: usize,
    x: *const f32,
    out: *mut f32,
    out_stride: usize,
) {
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    let mut i = 0;
    while i + 8 <= cols {
        let mut xv = [_mm256_setzero_ps(); T];
        for (t, v) in xv.iter_mut().enumerate() {
            *v = _mm256_loadu_ps(x.add(t * cols + i));
        }
        for r in 0..R {
            let p = w.add(r * rb);
            let wv = if F16 {
                _mm256_cvtph_ps(_mm_loadu_si128(p.add(2 * i).cast()))
            } else {
                _mm256_loadu_ps(p.add(4 * i).cast())
            };
            for t in 0..T {
                acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
            }
        }
        i += 8;
    }
    for r in 0..R {
        let p = w.add(r * rb);
        for t in 0..T {
            let mut tail = 0f32;
            for j in i..cols {
                let wj = if F16 {
                    f16_at(p.add(2 * j))
                } else {
                    f32::from_le_bytes(std::ptr::read_unaligned(p.add(4 * j).cast::<[u8; 4]>()))
                };
                tail += wj * *x.add(t * cols + j);
            }
            *out.add(t * out_stride + r) = hsum(acc[r][t]) + tail;
        }
    }
}

#[inline(always)]
unsafe fn matmul_f<const F16: bool>(
    w: &[u8],
    cols: usize,
    rows: Range<usize>,
    x: &[f32],
    n_tok: usize,
    out: *mut f32,
    out_stride: usize,
) {
    let rb = cols * if F16 { 2 } else { 4 };
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut r = rows.start;
    while r < rows.end {
        let four = r + 4 <= rows.end;
        let wr = wp.add(r * rb);
        let mut t = 0;
        while t < n_tok {
            let tn = (n_tok - t).min(2);
            let (xt, o) = (xp.add(t * cols), out.add(t * out_stride + r));
            match (four, tn) {
                (true, 2) => tile_f::<F16, 4, 2>(wr, rb, cols, xt, o, out_stride),
                (true, _) => tile_f::<F16, 4, 1>(wr, rb, cols, xt, o, out_stride),
                (false, 2) => tile_f::<F16, 1, 2>(wr, rb, cols, xt, o, out_stride),
                (false, _) => tile_f::<F16, 1, 1>(wr, rb, cols, xt, o, out_stride),
            }
            t += tn;
        }
        r += if four { 4 } else { 1 };
    }
}

/// One quantized block dequantized to four 8-lane f32 vectors.
#[inline(always)]
unsafe fn deq_block<const DT: u8>(p: *const u8) -> [__m256; 4] {
    let d = _mm256_set1_ps(f16_at(p));
    let mut v = [_mm256_setzero_ps(); 4];
    match DT {
        Q8_0 => {
            for (k, vk) in v.iter_mut().enumerate() {
                let q = _mm_loadl_epi64(p.add(2 + 8 * k).cast());
                *vk = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)));
            }
        }
        _ => {
            let q = _mm_loadu_si128(p.add(if DT == Q4_0 { 2 } else { 4 }).cast());
            let lo = _mm_and_si128(q, _mm_set1_epi8(0x0f));
            let hi = _mm_and_si128(_mm_srli_epi16::<4>(q), _mm_set1_epi8(0x0f));
            let parts = [lo, _mm_srli_si128::<8>(lo), hi, _mm_srli_si128::<8>(hi)];
            let m = if DT == Q4_1 {
                _mm256_set1_ps(f16_at(p.add(2)))
            } else {
                _mm256_setzero_ps()
            };
            for (vk, &part) in v.iter_mut().zip(&parts) {
                let qf = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(part));
                *vk = if DT == Q4_0 {
                    _mm256_mul_ps(d, _mm256_sub_ps(qf, _mm256_set1_ps(8.0)))
                } else {
                    _mm256_fmadd_ps(d, qf, m)
                };
            }
        }
    }
    v
}

/// `R` rows x `T` tokens of a quantized-weight matmul with f32 activations.
#[inline(always)]
unsafe fn tile_fq<const DT: u8, const R: usize, const T: usize>(
    w: *const u8,
    rb: usize,
    cols: usize,
    x: *const f32,
    out: *mut f32,
    out_stride: usize,
) {
    let bb = block_bytes(DT);
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    for b in 0..cols / QK {
        for r in 0..R {
            let wv = deq_block::<DT>(w.add(r * rb + b * bb));
            for t in 0..T {
                let p = x.add(t * cols + b * QK);
                for (k, &wk) in wv.iter().enumerate() {
                    acc[r][t] = _mm256_fmadd_ps(wk, _mm256_loadu_ps(p.add(8 * k)), acc[r][t]);
                }
            }
        }
    }
    for r in 0..R {
        for t in 0..T {
            *out.add(t * out_stride + r) = hsum(acc[r][t]);
        }
    }
}

#[inline(always)]
unsafe fn matmul_fq<const DT: u8>(
    w: &[u8],
    cols: usize,
    rows: Range<usize>,
    x: &[f32],
    n_tok: usize,
    out: *mut f32,
    out_stride: usize,
) {
    let rb = cols / QK * block_bytes(DT);
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut r = rows.start;
    while r < rows.end {
        let four = r + 4 <= rows.end;
        let wr = wp.add(r * rb);
        let mut t = 0;
        while t < n_tok {
            let tn = (n_tok - t).min(2);
            let (xt, o) = (xp.add(t * cols), out.add(t * out_stride + r));
            match (four, tn) {
                (true, 2) => tile_fq::<DT, 4, 2>(wr, rb, cols, xt, o, out_stride),
                (true, _) => tile_fq::<DT, 4, 1>(wr, rb, cols, xt, o, out_stride),
                (false, 2) => tile_fq::<DT, 1, 2>(wr, rb, cols, xt, o, out_stride),
                (false, _) => tile_fq::<DT, 1, 1>(wr, rb, cols, xt, o, out_stride),
            }
            t += tn;
        }
        r += if four { 4 } else { 1 };
    }
}

macro_rules! fq_fns {
    ($($name:ident, $dt:ident;)*) => {$(
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $name(w: &[u8], cols: usize, rows: Range<usize>, x: &[f32], n_tok: usize, out: *mut f32, out_stride: usize) {
            matmul_fq::<$dt>(w, cols, rows, x, n_tok, out, out_stride)
        }
    )*};
}
fq_fns! {
    matmul_f32_q8_0, Q8_0;
    matmul_f32_q4_0, Q4_0;
    matmul_f32_q4_1, Q4_1;
}

/// Dequantizes one row; bit-identical to the scalar rule (no FMA; exact F16 conversion).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dequant_f16(w: &[u8], out: &mut [f32]) {
    let n = out.len();
    let (p, o) = (w.as_ptr(), out.as_mut_ptr());
    let mut i = 0;
    while i + 8 <= n {
        _mm256_storeu_ps(
            o.add(i),
            _mm256_cvtph_ps(_mm_loadu_si128(p.add(2 * i).cast())),
        );
        i += 8;
    }
    while i < n {
        *o.add(i) = f16_at(p.add(2 * i));
        i += 1;
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dequant_f32(w: &[u8], out: &mut [f32]) {
    std::ptr::copy_nonoverlapping(w.as_ptr(), out.as_mut_ptr().cast::<u8>(), 4 * out.len());
}

#[inline(always)]
unsafe fn dequant_q<const DT: u8>(w: &[u8], out: &mut [f32]) {
    let bb = block_bytes(DT);
    for b in 0..out.len() / QK {
        let p = w.as_ptr().add(b * bb);
        let d = _mm256_set1_ps(f16_at(p));
        let o = out.as_mut_ptr().add(b * QK);
        let mut q = [_mm256_setzero_ps(); 4];
        if DT == Q8_0 {
            for (k, qk) in q.iter_mut().enumerate() {
                *qk = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(
                    p.add(2 + 8 * k).cast(),
                )));
            }
        } else {
            let v = _mm_loadu_si128(p.add(if DT == Q4_0 { 2 } else { 4 }).cast());
            let lo = _mm_and_si128(v, _mm_set1_epi8(0x0f));
            let hi = _mm_and_si128(_mm_srli_epi16::<4>(v), _mm_set1_epi8(0x0f));
            let parts = [lo, _mm_srli_si128::<8>(lo), hi, _mm_srli_si128::<8>(hi)];
            for (qk, &part) in q.iter_mut().zip(&parts) {
                *qk = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(part));
            }
        }
        let m = if DT == Q4_1 {
            _mm256_set1_ps(f16_at(p.add(2)))
        } else {
            _mm256_setzero_ps()
        };
        for (k, &qk) in q.iter().enumerate() {
            let v = match DT {
                Q8_0 => _mm256_mul_ps(d, qk),
                Q4_0 => _mm256_mul_ps(d, _mm256_sub_ps(qk, _mm256_set1_ps(8.0))),
                _ => _mm256_add_ps(_mm256_mul_ps(d, qk), m),
            };
            _mm256_storeu_ps(o.add(8 * k), v);
        }
    }
}

macro_rules! dequant_fns {
    ($($name:ident, $dt:ident;)*) => {$(
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $name(w: &[u8], out: &mut [f32]) {
            dequant_q::<$dt>(w, out)
        }
    )*};
}
dequant_fns! {
    dequant_q8_0, Q8_0;
    dequant_q4_0, Q4_0;
    dequant_q4_1, Q4_1;
}

macro_rules! q8a_fns {
    ($features:literal, $vnni:literal; $($mm:ident, $is:ident, $dt:ident;)*) => {$(
        #[target_feature(enable = $features)]
        unsafe fn $mm(w: &[u8], cols: usize, rows: Range<usize>, xq: &[BlockQ8A], n_tok: usize, out: *mut f32, out_stride: usize) {
            matmul_q8a::<$dt, $vnni>(w, cols, rows, xq, n_tok, out, out_stride)
        }
        #[target_feature(enable = $features)]
        unsafe fn $is(w_row: &[u8], xq: &[BlockQ8A], out: &mut [i32]) {
            isums::<$dt, $vnni>(w_row, xq, out)
        }
    )*};
}
q8a_fns! {
    "avx2,fma,f16c", 0;
    matmul_q8a_q8_0, isums_q8_0, Q8_0;
    matmul_q8a_q4_0, isums_q4_0, Q4_0;
    matmul_q8a_q4_1, isums_q4_1, Q4_1;
}
q8a_fns! {
    "avx2,fma,f16c,avxvnni", 1;
    vnni_matmul_q8a_q8_0, vnni_isums_q8_0, Q8_0;
    vnni_matmul_q8a_q4_0, vnni_isums_q4_0, Q4_0;
    vnni_matmul_q8a_q4_1, vnni_isums_q4_1, Q4_1;
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn matmul_f32_f32(
    w: &[u8],
    cols: usize,
    rows: Range<usize>,
    x: &[f32],
    n_tok: usize,
    out: *mut f32,
    out_stride: usize,
) {
    matmul_f::<false>(w, cols, rows, x, n_tok, out, out_stride)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn matmul_f32_f16(
    w: &[u8],
    cols: usize,
    rows: Range<usize>,
    x: &[f32],
    n_tok: usize,
    out: *mut f32,
    out_stride: usize,
) {
    matmul_f::<true>(w, cols, rows, x, n_tok, out, out_stride)
}

/// The scalar reference's gated activations, vectorized by the compiler for this path's
/// registers: the same IEEE operations in the same order, so the same bits.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn glu_silu(gate: &mut [f32], up: &[f32]) {
    scalar::glu::<false>(gate, up)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn glu_gelu_tanh(gate: &mut [f32], up: &[f32]) {
    scalar::glu::<true>(gate, up)
}

/// The scalar reference's weighted sum, vectorized across the output by the compiler.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn wsum(p: &[f32], p_stride: usize, v: &[f32], out: &mut [f32], n: usize) {
    scalar::wsum_rows(p, p_stride, v, out, n)
}

/// The AVX2 table.
pub(super) static KERNELS: Kernels = Kernels {
    name: "avx2",
    quantize_act,
    matmul_q8a: super::join(
        [matmul_q8a_q8_0, matmul_q8a_q4_0, matmul_q8a_q4_1],
        super::avx2_q5_k::MATMUL_Q8A,
    ),
    isums: super::join(
        [isums_q8_0, isums_q4_0, isums_q4_1],
        super::avx2_q5_k::ISUMS,
    ),
    matmul_f32: scalar::with_head(
        [
            matmul_f32_f32,
            matmul_f32_f16,
            matmul_f32_q8_0,
            matmul_f32_q4_0,
            matmul_f32_q4_1,
        ],
        scalar::KERNELS.matmul_f32,
    ),
    dequant_row: scalar::with_head(
        [
            dequant_f32,
            dequant_f16,
            dequant_q8_0,
            dequant_q4_0,
            dequant_q4_1,
        ],
        scalar::KERNELS.dequant_row,
    ),
    glu: [glu_silu, glu_gelu_tanh],
    wsum,
};

#[cfg(test)]
q8a_fns! {
    "avx2,fma,f16c,avx512f,avx512vl,avx512vnni", 2;
    evex_matmul_q8a_q8_0, evex_isums_q8_0, Q8_0;
    evex_matmul_q8a_q4_0, evex_isums_q4_0, Q4_0;
    evex_matmul_q8a_q4_1, evex_isums_q4_1, Q4_1;
}

/// Tests only: the AVX-VNNI table's arithmetic with the EVEX encoding of the same
/// instruction, so a CPU with AVX-512 VNNI but no AVX-VNNI (like the development machine)
/// checks the `avxvnni` kernels against the scalar reference. Not selectable by name.
#[cfg(test)]
pub(super) static KERNELS_VNNI_EVEX: Kernels = Kernels {
    name: "avxvnni-as-evex",
    matmul_q8a: super::join(
        [
            evex_matmul_q8a_q8_0,
            evex_matmul_q8a_q4_0,
            evex_matmul_q8a_q4_1,
        ],
        super::avx2_q5_k::MATMUL_Q8A,
    ),
    isums: super::join(
        [evex_isums_q8_0, evex_isums_q4_0, evex_isums_q4_1],
        super::avx2_q5_k::ISUMS,
    ),
    ..KERNELS
};

/// The AVX-VNNI table (VEX `vpdpbusd`, CPUs without AVX-512): the AVX2 table with VNNI
/// integer products.
pub(super) static KERNELS_VNNI: Kernels = Kernels {
    name: "avxvnni",
    matmul_q8a: super::join(
        [
            vnni_matmul_q8a_q8_0,
            vnni_matmul_q8a_q4_0,
            vnni_matmul_q8a_q4_1,
        ],
        super::avx2_q5_k::MATMUL_Q8A,
    ),
    isums: super::join(
        [vnni_isums_q8_0, vnni_isums_q4_0, vnni_isums_q4_1],
        super::avx2_q5_k::ISUMS,
    ),
    ..KERNELS
};
