//! Q4_0 and Q4_1 rows of up to 4096 columns: groups of 16 blocks transposed so that lane L
//! of a product is one block, then quads (four blocks, also used by the wide-row path), a
//! pair and a single block.
//! Safety: as in the `avx512` module documentation.

use std::arch::x86_64::*;
use std::mem::MaybeUninit;

use super::super::super::BlockQ8A;
use super::super::{block_bytes, Q4_0, Q4_1};
use super::frame::{idx, store_sums, Idx, IdxD, Layout, GRP_TOK};
use super::pair::{isum_lanes, load_a, load_w, APair};

/// Word indices for quads of Q4 blocks: the 4 x 16 nibble bytes (second source = the 16
/// bytes at `QUAD_TAIL_OFF`), and the scale / minimum of block k into lanes 4k..4k+3 / 4k.
static Q4_0_QUAD_NIB: Idx = Idx([
    1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, //
    19, 20, 21, 22, 23, 24, 25, 26, 32, 33, 34, 35, 36, 37, 38, 39,
]);
static Q4_1_QUAD_NIB: Idx = Idx([
    2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 14, 15, 16, 17, 18, 19, //
    22, 23, 24, 25, 26, 27, 28, 29, 32, 33, 34, 35, 36, 37, 38, 39,
]);
static Q4_0_QUAD_D: Idx = Idx([
    0, 0, 0, 0, 9, 9, 9, 9, 18, 18, 18, 18, 27, 27, 27, 27, //
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
]);
static Q4_1_QUAD_D: Idx = Idx([
    0, 0, 0, 0, 10, 10, 10, 10, 20, 20, 20, 20, 30, 30, 30, 30, //
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
]);
static Q4_1_QUAD_M: Idx = Idx([
    1, 0, 0, 0, 11, 0, 0, 0, 21, 0, 0, 0, 31, 0, 0, 0, //
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
]);
/// Lane k*4 (k = 0..3) of a 16-lane f32 vector built from 4 scalars in lanes 0..3.
static SPREAD4: IdxD = IdxD([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]);

/// Byte offset of the 16 bytes that complete a quad beyond its first 64 (word 32 onwards in
/// the permute indices above): Q4_0 quads are 72 bytes (words 28..35 at offset 56, so index
/// 32 + j is word 28 + j), Q4_1 quads 80 (words 32..39 at offset 64).
const fn quad_tail_off(dt: u8) -> usize {
    if dt == Q4_0 {
        56
    } else {
        64
    }
}

/// Four Q4 weight blocks of one row: `lo`/`hi` hold nibbles 0..15 / 16..31 of block k in
/// bytes 16k..16k+15, so a block's products land in i32 lanes 4k..4k+3.
#[derive(Clone, Copy)]
pub(super) struct WQuad {
    pub(super) lo: __m512i,
    pub(super) hi: __m512i,
    pub(super) d: __m512,
    pub(super) m: __m512,
}

/// The quad at `p`: its first 64 bytes, and its 4 x 16 nibble bytes (block k's in bytes
/// 16k..16k + 15).
#[inline(always)]
unsafe fn quad_raw<const DT: u8>(p: *const u8) -> (__m512i, __m512i) {
    // Both loads lie inside the quad (72 or 80 bytes).
    let z0 = _mm512_loadu_si512(p.cast());
    let t = _mm512_castsi128_si512(_mm_loadu_si128(p.add(quad_tail_off(DT)).cast()));
    let nib = if DT == Q4_0 {
        &Q4_0_QUAD_NIB
    } else {
        &Q4_1_QUAD_NIB
    };
    (z0, _mm512_permutex2var_epi16(z0, idx(nib), t))
}

#[inline(always)]
pub(super) unsafe fn load_w4<const DT: u8>(p: *const u8) -> WQuad {
    let (z0, q) = quad_raw::<DT>(p);
    let di = if DT == Q4_0 {
        &Q4_0_QUAD_D
    } else {
        &Q4_1_QUAD_D
    };
    let mask = _mm512_set1_epi8(0x0f);
    let lo = _mm512_and_si512(q, mask);
    let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(q), mask);
    let d = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(
        idx(di),
        z0,
    )));
    let m = if DT == Q4_1 {
        _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_maskz_permutexvar_epi16(
            0x1111,
            idx(&Q4_1_QUAD_M),
            z0,
        )))
    } else {
        _mm512_setzero_ps()
    };
    WQuad { lo, hi, d, m }
}

/// Four activation blocks of one token, arranged like [`WQuad`].
#[derive(Clone, Copy)]
pub(super) struct AQuad {
    pub(super) lo: __m512i,
    pub(super) hi: __m512i,
    pub(super) d: __m512,
    pub(super) s: __m512,
    pub(super) init: __m512i,
}

#[inline(always)]
pub(super) unsafe fn load_a4<const DT: u8>(x: *const BlockQ8A) -> AQuad {
    let (x0, x1, x2, x3) = (&*x, &*x.add(1), &*x.add(2), &*x.add(3));
    let y = [x0, x1, x2, x3].map(|b| b.qs.as_ptr());
    let u01 = _mm512_inserti64x4::<1>(
        _mm512_castsi256_si512(_mm256_loadu_si256(y[0].cast())),
        _mm256_loadu_si256(y[1].cast()),
    );
    let u23 = _mm512_inserti64x4::<1>(
        _mm512_castsi256_si512(_mm256_loadu_si256(y[2].cast())),
        _mm256_loadu_si256(y[3].cast()),
    );
    let lo = _mm512_shuffle_i64x2::<0b10_00_10_00>(u01, u23);
    let hi = _mm512_shuffle_i64x2::<0b11_01_11_01>(u01, u23);
    let dv = _mm_setr_ps(x0.d, x1.d, x2.d, x3.d);
    let d = _mm512_permutexvar_ps(
        _mm512_load_si512(SPREAD4.0.as_ptr().cast()),
        _mm512_castps128_ps512(dv),
    );
    let s = if DT == Q4_1 {
        let sv = _mm_setr_ps(x0.s, x1.s, x2.s, x3.s);
        _mm512_maskz_permutexvar_ps(
            0x1111,
            _mm512_load_si512(SPREAD4.0.as_ptr().cast()),
            _mm512_castps128_ps512(sv),
        )
    } else {
        _mm512_setzero_ps()
    };
    let init = if DT == Q4_0 {
        let e = _mm512_set1_epi8(8);
        let c = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), e, lo), e, hi);
        _mm512_sub_epi32(_mm512_setzero_si512(), c)
    } else {
        _mm512_setzero_si512()
    };
    AQuad { lo, hi, d, s, init }
}

/// Exact i32 lanes of one quad product: block k in lanes 4k..4k+3.
#[inline(always)]
pub(super) unsafe fn isum_lanes4(w: &WQuad, a: &AQuad) -> __m512i {
    _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(a.init, w.lo, a.lo), w.hi, a.hi)
}

/// Blocks per group of the transposed Q4 layout: i32 lane j of a product vector holds block j
/// of the group, so one float conversion and scale serve 16 blocks (instead of 4 in the quad
/// layout), and 8 integer products cover the group.
pub(super) const GRP: usize = 16;
/// Widest rows the grouped path takes (4096 columns); wider rows take the quad path.
pub(super) const GRP_MAX: usize = 8;

/// Word-permute indices that put the f16 at word `9b` (Q4_0) / `10b` (`10b + 1`: Q4_1's
/// minimum) of a quad's first 64 bytes into words `4b..4b + 3`; merged under the mask of
/// words `4b + i` for quad i, they give lane `4b + i` block `4i + b`'s value.
static Q4_0_GRP_D: Idx = Idx(grp_half_idx(9, 0));
static Q4_1_GRP_D: Idx = Idx(grp_half_idx(10, 0));
static Q4_1_GRP_M: Idx = Idx(grp_half_idx(10, 1));

const fn grp_half_idx(bw: u16, off: u16) -> [u16; 32] {
    let mut ix = [0; 32];
    let mut l = 0;
    while l < 16 {
        ix[l] = bw * (l / 4) as u16 + off;
        l += 1;
    }
    ix
}

/// 16 Q4 weight blocks of one row, transposed: `q[g]` lane L holds weight bytes (unsigned
/// nibbles) `4g..4g + 3` of block `4 * (L % 4) + L / 4` of the group, and `d`/`m` lane L that
/// block's scale / minimum. (That block order is what a 4 x 4 dword transpose of the four
/// quads gives with in-lane unpacks; the activations are arranged to match.)
#[derive(Clone, Copy)]
pub(super) struct WGroup {
    pub(super) q: [__m512i; 8],
    pub(super) d: __m512,
    pub(super) m: __m512,
}

/// The group's block that lane `l` holds (see [`WGroup`]).
pub(super) const fn grp_block(l: usize) -> usize {
    4 * (l % 4) + l / 4
}

/// In each 128-bit lane, the 4 x 4 transpose of the dwords of `r`: dword i of lane h of
/// `out[k]` is dword k of lane h of `r[i]` (in-lane unpacks only).
#[inline(always)]
pub(super) unsafe fn transpose4(r: [__m512i; 4]) -> [__m512i; 4] {
    let (u0, u1) = (
        _mm512_unpacklo_epi32(r[0], r[1]),
        _mm512_unpackhi_epi32(r[0], r[1]),
    );
    let (u2, u3) = (
        _mm512_unpacklo_epi32(r[2], r[3]),
        _mm512_unpackhi_epi32(r[2], r[3]),
    );
    [
        _mm512_unpacklo_epi64(u0, u2),
        _mm512_unpackhi_epi64(u0, u2),
        _mm512_unpacklo_epi64(u1, u3),
        _mm512_unpackhi_epi64(u1, u3),
    ]
}

/// The f16 of every block of a group that `ix` selects (see [`Q4_0_GRP_D`]), in lane order.
#[inline(always)]
unsafe fn grp_halves(quads: &[(__m512i, __m512i); 4], ix: &Idx) -> __m512 {
    let mut h = _mm512_setzero_si512();
    for (i, (z0, _)) in quads.iter().enumerate() {
        h = _mm512_mask_permutexvar_epi16(h, 0x1111 << i, idx(ix), *z0);
    }
    _mm512_cvtph_ps(_mm512_castsi512_si256(h))
}

#[inline(always)]
pub(super) unsafe fn load_wg<const DT: u8>(p: *const u8) -> WGroup {
    let qb = 4 * block_bytes(DT);
    let quads = [
        quad_raw::<DT>(p),
        quad_raw::<DT>(p.add(qb)),
        quad_raw::<DT>(p.add(2 * qb)),
        quad_raw::<DT>(p.add(3 * qb)),
    ];
    // 128-bit lane b of quad i's nibbles is block 4i + b (dwords k = bytes 4k..4k + 3); the
    // unpacks transpose each lane's 4 x 4 dwords, so dwords[k] lane 4b + i = dword k of
    // block 4i + b.
    let dwords = transpose4([quads[0].1, quads[1].1, quads[2].1, quads[3].1]);
    let mask = _mm512_set1_epi8(0x0f);
    let mut q = [_mm512_setzero_si512(); 8];
    for (k, dk) in dwords.into_iter().enumerate() {
        q[k] = _mm512_and_si512(dk, mask);
        q[k + 4] = _mm512_and_si512(_mm512_srli_epi16::<4>(dk), mask);
    }
    let d = grp_halves(&quads, if DT == Q4_0 { &Q4_0_GRP_D } else { &Q4_1_GRP_D });
    let m = if DT == Q4_1 {
        grp_halves(&quads, &Q4_1_GRP_M)
    } else {
        _mm512_setzero_ps()
    };
    WGroup { q, d, m }
}

/// The block of each lane of a group, as i32 lanes (see [`grp_block`]).
static GRP_BLOCKS: IdxD = IdxD({
    let mut b = [0; 16];
    let mut l = 0;
    while l < 16 {
        b[l] = grp_block(l) as u32;
        l += 1;
    }
    b
});

/// 16 activation blocks of one token, transposed like [`WGroup`]; `init` removes the Q4_0
/// weight offset (`-8 * sum` of each block).
#[derive(Clone, Copy)]
pub(super) struct AGroup {
    pub(super) a: [__m512i; 8],
    pub(super) d: __m512,
    pub(super) s: __m512,
    pub(super) init: __m512i,
}

#[inline(always)]
pub(super) unsafe fn load_ag<const DT: u8>(x: *const BlockQ8A) -> AGroup {
    const _: () = assert!(size_of::<BlockQ8A>() == 40);
    // Dword j * 10 + i of the 16 blocks is dword i of block j (d, s, then 8 dwords of qs);
    // lane L gathers block grp_block(L).
    let base = x.cast::<i32>();
    let j10 = _mm512_mullo_epi32(
        _mm512_load_si512(GRP_BLOCKS.0.as_ptr().cast()),
        _mm512_set1_epi32(10),
    );
    let mut a = [_mm512_setzero_si512(); 8];
    for (g, ag) in a.iter_mut().enumerate() {
        let ix = _mm512_add_epi32(j10, _mm512_set1_epi32(2 + g as i32));
        *ag = _mm512_i32gather_epi32::<4>(ix, base.cast());
    }
    let d = _mm512_castsi512_ps(_mm512_i32gather_epi32::<4>(j10, base.cast()));
    let s = if DT == Q4_1 {
        let ix = _mm512_add_epi32(j10, _mm512_set1_epi32(1));
        _mm512_castsi512_ps(_mm512_i32gather_epi32::<4>(ix, base.cast()))
    } else {
        _mm512_setzero_ps()
    };
    let init = if DT == Q4_0 {
        let e = _mm512_set1_epi8(8);
        let mut c = _mm512_setzero_si512();
        for &ag in &a {
            c = _mm512_dpbusd_epi32(c, e, ag);
        }
        _mm512_sub_epi32(_mm512_setzero_si512(), c)
    } else {
        _mm512_setzero_si512()
    };
    AGroup { a, d, s, init }
}

/// Exact i32 lanes of one group product: block `grp_block(L)` in lane L.
#[inline(always)]
pub(super) unsafe fn isum_group(w: &WGroup, a: &AGroup) -> __m512i {
    let mut i = a.init;
    for g in 0..8 {
        i = _mm512_dpbusd_epi32(i, w.q[g], a.a[g]);
    }
    i
}

/// How a row of `nb` blocks splits: `ng` groups of 16, then `nq` (at most 3) quads, then a
/// pair and/or a single block.
#[derive(Clone, Copy)]
struct Shape {
    ng: usize,
    nq: usize,
    pair: bool,
    single: bool,
}

impl Shape {
    fn new(nb: usize) -> Shape {
        let ng = nb / GRP;
        let rest = nb - GRP * ng;
        Shape {
            ng,
            nq: rest / 4,
            pair: rest % 4 >= 2,
            single: rest % 2 == 1,
        }
    }
    /// First block of the tail quads.
    fn quads(self) -> usize {
        GRP * self.ng
    }
    /// First block of the tail pair.
    fn pairs(self) -> usize {
        GRP * self.ng + 4 * self.nq
    }
}

/// The arranged activations of one token tile, for a row [`Shape`]: token t's group g at
/// `g[t * ng + g]`, its tail quads at `q[t * 3..]`, its tail pair at `p[t * 2]` and single
/// block at `p[t * 2 + 1]`. Entries outside the shape stay uninitialized.
pub(super) struct Tiles {
    g: [MaybeUninit<AGroup>; GRP_TOK * GRP_MAX],
    q: [MaybeUninit<AQuad>; GRP_TOK * 3],
    p: [MaybeUninit<APair>; GRP_TOK * 2],
}

/// One row (at `w`) against the first `T` tokens of `tl`, arranged for shape `sh`. Every
/// output's lanes see the same sequence of block products and are summed by `frame::hsum`'s order,
/// whatever `T`.
#[inline(always)]
unsafe fn tile_grouped<const DT: u8, const T: usize>(
    w: *const u8,
    sh: Shape,
    tl: &Tiles,
    out: *mut f32,
    out_stride: usize,
) {
    let bb = block_bytes(DT);
    let mut acc = [_mm512_setzero_ps(); T];
    // SAFETY (the `assume_init_ref`s below): `Q4Groups::arrange` wrote every entry of the
    // tile's first T tokens that shape `sh` uses, which are exactly the entries read here.
    for g in 0..sh.ng {
        let wg = load_wg::<DT>(w.add(GRP * g * bb));
        for (t, acc_t) in acc.iter_mut().enumerate() {
            let a = tl.g[t * sh.ng + g].assume_init_ref();
            let i = isum_group(&wg, a);
            *acc_t = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), _mm512_mul_ps(wg.d, a.d), *acc_t);
            if DT == Q4_1 {
                *acc_t = _mm512_fmadd_ps(wg.m, a.s, *acc_t);
            }
        }
    }
    // Lanes are summed only at the end, so the tail blocks may use the other layouts.
    for qi in 0..sh.nq {
        let wq = load_w4::<DT>(w.add((sh.quads() + 4 * qi) * bb));
        for (t, acc_t) in acc.iter_mut().enumerate() {
            let a = tl.q[t * 3 + qi].assume_init_ref();
            let i = isum_lanes4(&wq, a);
            *acc_t = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), _mm512_mul_ps(wq.d, a.d), *acc_t);
            if DT == Q4_1 {
                *acc_t = _mm512_fmadd_ps(wq.m, a.s, *acc_t);
            }
        }
    }
    let tail = [
        (sh.pair, true, 0, sh.pairs()),
        (sh.single, false, 1, sh.pairs() + 2 * usize::from(sh.pair)),
    ];
    for (used, two, k, b) in tail {
        if used {
            let wp = load_w::<DT>(w.add(b * bb), two);
            for (t, acc_t) in acc.iter_mut().enumerate() {
                let a = tl.p[t * 2 + k].assume_init_ref();
                let i = isum_lanes::<DT>(&wp, a);
                *acc_t = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), _mm512_mul_ps(wp.d, a.d), *acc_t);
                if DT == Q4_1 {
                    *acc_t = _mm512_fmadd_ps(wp.m, a.s, *acc_t);
                }
            }
        }
    }
    store_sums(&acc, out, out_stride);
}

/// Q4_0/Q4_1 in groups of 16, then quads, a pair and a single block.
pub(super) struct Q4Groups<const DT: u8>;

impl<const DT: u8> Layout for Q4Groups<DT> {
    type Tiles = Tiles;
    #[inline(always)]
    fn tiles() -> Tiles {
        Tiles {
            g: [const { MaybeUninit::uninit() }; GRP_TOK * GRP_MAX],
            q: [const { MaybeUninit::uninit() }; GRP_TOK * 3],
            p: [const { MaybeUninit::uninit() }; GRP_TOK * 2],
        }
    }
    #[inline(always)]
    unsafe fn arrange(tiles: &mut Tiles, tt: usize, xt: *const BlockQ8A, nb: usize) {
        let sh = Shape::new(nb);
        for gi in 0..sh.ng {
            tiles.g[tt * sh.ng + gi].write(load_ag::<DT>(xt.add(GRP * gi)));
        }
        for qi in 0..sh.nq {
            tiles.q[tt * 3 + qi].write(load_a4::<DT>(xt.add(sh.quads() + 4 * qi)));
        }
        if sh.pair {
            tiles.p[tt * 2].write(load_a::<DT>(xt.add(sh.pairs()), true));
        }
        if sh.single {
            tiles.p[tt * 2 + 1].write(load_a::<DT>(xt.add(nb - 1), false));
        }
    }
    #[inline(always)]
    unsafe fn row<const T: usize>(
        w: *const u8,
        nb: usize,
        tiles: &Tiles,
        out: *mut f32,
        out_stride: usize,
    ) {
        tile_grouped::<DT, T>(w, Shape::new(nb), tiles, out, out_stride)
    }
}
