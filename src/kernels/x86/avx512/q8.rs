//! Q8_0 rows of up to 4096 columns: octets of blocks transposed by dwords so that one
//! conversion and scale serve 8 blocks, then pairs and a single block.
//! Safety: as in the `avx512` module documentation.

use std::arch::x86_64::*;
use std::mem::MaybeUninit;

use super::super::super::scalar::Q8_0_BYTES;
use super::super::super::BlockQ8A;
use super::super::Q8_0;
use super::frame::{store_sums, IdxD, Layout, GRP_TOK};
use super::pair::{isum_lanes, load_a, load_w, APair};
use super::q4::transpose4;

/// Blocks per octet of the transposed Q8_0 layout: four registers of two blocks each are
/// transposed by dwords with in-lane unpacks, so lane L holds half of block `oct_block(L)`
/// (dwords `4 * (L / 4 % 2) + k` of it in product k), and one conversion and scale serve 8
/// blocks instead of 2.
pub(super) const OCT: usize = 8;
/// Widest Q8_0 rows the octet path takes (4096 columns).
pub(super) const OCT_MAX: usize = 16;

pub(super) const fn oct_block(l: usize) -> usize {
    2 * (l % 4) + l / 8
}

/// The dword of a block (`d`, `s`, then the 8 dwords of values) that lane L of octet product
/// `k` reads, plus `10 * oct_block(L)`: gather indices into an array of [`BlockQ8A`].
static OCT_ACT: [IdxD; 4] = [oct_act(0), oct_act(1), oct_act(2), oct_act(3)];
/// `10 * oct_block(L)`: the dword of lane L's block scale in an array of [`BlockQ8A`].
static OCT_ACT_D: IdxD = oct_scaled(10);
/// `oct_block(L)`: the lane of each block's scale among 8 side by side.
static OCT_LANE_BLOCK: IdxD = oct_scaled(1);

const fn oct_act(k: u32) -> IdxD {
    let mut ix = [0; 16];
    let mut l = 0;
    while l < 16 {
        ix[l] = 10 * oct_block(l) as u32 + 2 + 4 * ((l as u32 / 4) % 2) + k;
        l += 1;
    }
    IdxD(ix)
}

const fn oct_scaled(m: u32) -> IdxD {
    let mut ix = [0; 16];
    let mut l = 0;
    while l < 16 {
        ix[l] = m * oct_block(l) as u32;
        l += 1;
    }
    IdxD(ix)
}

/// 8 Q8_0 weight blocks of one row, transposed (see [`OCT`]): `u[k]` the unsigned operand
/// `w + 128`, `d` lane L's block scale.
#[derive(Clone, Copy)]
pub(super) struct WOct {
    pub(super) u: [__m512i; 4],
    pub(super) d: __m512,
}

#[inline(always)]
pub(super) unsafe fn load_woct(p: *const u8) -> WOct {
    let bb = Q8_0_BYTES;
    let mut pz = [_mm512_setzero_si512(); 4];
    for (i, pi) in pz.iter_mut().enumerate() {
        let lo = _mm256_loadu_si256(p.add(2 * i * bb + 2).cast());
        let hi = _mm256_loadu_si256(p.add((2 * i + 1) * bb + 2).cast());
        *pi = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
    }
    let w = transpose4(pz);
    let mut u = [_mm512_setzero_si512(); 4];
    for k in 0..4 {
        u[k] = _mm512_xor_si512(w[k], _mm512_set1_epi8(-128));
    }
    // The 8 blocks' f16 scales side by side, as f32, then spread to their lanes: a gather
    // costs more than these 8 loads on the CPUs we measured (Zen 5: T=1 1.3x slower).
    let f16 = |b: usize| i16::from_le_bytes([*p.add(b * bb), *p.add(b * bb + 1)]);
    let d8 = _mm256_cvtph_ps(_mm_setr_epi16(
        f16(0),
        f16(1),
        f16(2),
        f16(3),
        f16(4),
        f16(5),
        f16(6),
        f16(7),
    ));
    let d = _mm512_permutexvar_ps(
        _mm512_load_si512(OCT_LANE_BLOCK.0.as_ptr().cast()),
        _mm512_castps256_ps512(d8),
    );
    WOct { u, d }
}

/// 8 activation blocks of one token, transposed like [`WOct`]; `init` removes the
/// weight offset (`-128` times each lane's activation sum).
#[derive(Clone, Copy)]
pub(super) struct AOct {
    pub(super) a: [__m512i; 4],
    pub(super) d: __m512,
    pub(super) init: __m512i,
}

#[inline(always)]
pub(super) unsafe fn load_aoct(x: *const BlockQ8A) -> AOct {
    let base = x.cast::<i32>();
    let mut a = [_mm512_setzero_si512(); 4];
    for (k, ak) in a.iter_mut().enumerate() {
        *ak = _mm512_i32gather_epi32::<4>(
            _mm512_load_si512(OCT_ACT[k].0.as_ptr().cast()),
            base.cast(),
        );
    }
    let d = _mm512_castsi512_ps(_mm512_i32gather_epi32::<4>(
        _mm512_load_si512(OCT_ACT_D.0.as_ptr().cast()),
        base.cast(),
    ));
    let mut c = _mm512_setzero_si512();
    for &ak in &a {
        c = _mm512_dpbusd_epi32(c, _mm512_set1_epi8(-128), ak);
    }
    let init = _mm512_sub_epi32(_mm512_setzero_si512(), c);
    AOct { a, d, init }
}

/// Exact i32 lanes of one octet product: half of block `oct_block(L)` in lane L.
#[inline(always)]
pub(super) unsafe fn isum_oct(w: &WOct, a: &AOct) -> __m512i {
    let mut i = a.init;
    for k in 0..4 {
        i = _mm512_dpbusd_epi32(i, w.u[k], a.a[k]);
    }
    i
}

/// Arranged Q8_0 activations of one token tile: token t's octet o at `o[t * OCT_MAX + o]`,
/// its tail pairs at `p[t * 4 + k]` (the last may be a single block). Only the entries of
/// the tile's shape are written.
pub(super) struct OctTiles {
    o: [MaybeUninit<AOct>; GRP_TOK * OCT_MAX],
    p: [MaybeUninit<APair>; GRP_TOK * 4],
}

/// One Q8_0 row against the first `T` tokens of `tl`.
#[inline(always)]
unsafe fn tile_q8_octets<const T: usize>(
    w: *const u8,
    nb: usize,
    tl: &OctTiles,
    out: *mut f32,
    out_stride: usize,
) {
    let bb = Q8_0_BYTES;
    let no = nb / OCT;
    let mut acc = [_mm512_setzero_ps(); T];
    // SAFETY (the `assume_init_ref`s below): `Q8Octets::arrange` wrote the octets and tail
    // pairs of the tile's first T tokens for this row width, exactly the entries read here.
    for o in 0..no {
        let wo = load_woct(w.add(OCT * o * bb));
        for (t, acc_t) in acc.iter_mut().enumerate() {
            let a = tl.o[t * OCT_MAX + o].assume_init_ref();
            let i = isum_oct(&wo, a);
            *acc_t = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), _mm512_mul_ps(wo.d, a.d), *acc_t);
        }
    }
    // Lanes are summed only at the end, so the tail may use the pair layout.
    let mut b = OCT * no;
    let mut k = 0;
    while b < nb {
        let two = b + 1 < nb;
        let wp = load_w::<Q8_0>(w.add(b * bb), two);
        for (t, acc_t) in acc.iter_mut().enumerate() {
            let a = tl.p[t * 4 + k].assume_init_ref();
            let i = isum_lanes::<Q8_0>(&wp, a);
            *acc_t = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), _mm512_mul_ps(wp.d, a.d), *acc_t);
        }
        b += 2;
        k += 1;
    }
    store_sums(&acc, out, out_stride);
}

/// Q8_0 in octets, then pairs and a single block.
pub(super) struct Q8Octets;

impl Layout for Q8Octets {
    type Tiles = OctTiles;
    #[inline(always)]
    fn tiles() -> OctTiles {
        OctTiles {
            o: [const { MaybeUninit::uninit() }; GRP_TOK * OCT_MAX],
            p: [const { MaybeUninit::uninit() }; GRP_TOK * 4],
        }
    }
    #[inline(always)]
    unsafe fn arrange(tiles: &mut OctTiles, tt: usize, xt: *const BlockQ8A, nb: usize) {
        let no = nb / OCT;
        for oi in 0..no {
            tiles.o[tt * OCT_MAX + oi].write(load_aoct(xt.add(OCT * oi)));
        }
        let mut b = OCT * no;
        let mut k = 0;
        while b < nb {
            let two = b + 1 < nb;
            tiles.p[tt * 4 + k].write(load_a::<Q8_0>(xt.add(b), two));
            b += 2;
            k += 1;
        }
    }
    #[inline(always)]
    unsafe fn row<const T: usize>(
        w: *const u8,
        nb: usize,
        tiles: &OctTiles,
        out: *mut f32,
        out_stride: usize,
    ) {
        tile_q8_octets::<T>(w, nb, tiles, out, out_stride)
    }
}
