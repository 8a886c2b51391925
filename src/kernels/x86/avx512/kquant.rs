//! Q4_K, Q5_K and Q6_K batches with AVX-512 VNNI: the AVX2 arranged super-blocks
//! (`avx2/kquant.rs`), two tokens per register. A row's unpacked super-block is the same in both
//! 256-bit halves and each half holds one token's arranged activations, so one `vpdpbusd` (see
//! [`isums`]) serves two tokens and the f32 steps (conversion, the minimum term's FNMA, the scale's
//! FMA) run on both tokens' 8 lanes at once. Every lane sees the AVX2 kernel's operations in the
//! same order, so each output has the same bits as on the AVX2 path: integer sums are exact, and
//! the f32 steps are lane-wise. Decode takes [`KQuantBw`], the AVX2 micro-kernel two sub-blocks per
//! register, with the same integer sums and f32 steps.
//!
//! # Safety
//! As in the `avx512` module documentation: AVX-512 F/BW/VL and VNNI, AVX2, FMA and F16C,
//! and the slice-size preconditions of `MatmulQ8aFn`.

use std::arch::x86_64::*;
use std::mem::MaybeUninit;
use std::ops::Range;

use super::super::super::{BlockQ8A, QK};
use super::super::avx2::arranged::{self, Unit};
use super::super::avx2::frame::{matmul_tiles, Micro};
use super::super::avx2::hsum;
use super::super::avx2::kquant::{self as k2, AUnit, KQuant, KRow, KUnit, WUnit, AK, SUBS};
use super::super::{drive_arranged, Ahead, Arranged, QOperands, Q4_K, Q5_K, Q6_K};

/// Token pairs per tile: 16 tokens in 8 accumulators, beside a unit's 12 weight registers
/// (32 in all), so each unpacked super-block serves twice the AVX2 tile's 8 tokens
/// (width-1024 Q4_K_M pp128 on Zen 5: +5% over 8 tokens). The tile's arranged activations
/// take 104 KB of stack.
const PAIRS: usize = 8;

/// Most bytes of arranged activations a tile holds, so that every row reads them from L1
/// (48 KB on Zen 5; 32 KB on earlier cores, where wide rows then reach into L2). Rows of
/// 1024 columns (4 units) take 8 pairs, of 2816 (11 units, a 1024-wide model's FFN down
/// projection) 4: 16 tokens there read 67 KB per row, and width-1024 Q4_K_M pp128 on
/// Zen 5 was 10% slower at 1 thread.
const TILE_BYTES: usize = 40 << 10;

/// One row's super-block for two tokens: the AVX2 [`WUnit`] in both halves, with the
/// multipliers `sc` as i32 (each i32 lane of `WUnit::sc` holds its scale twice, as i16).
#[derive(Clone, Copy)]
struct W2 {
    x: [__m512i; SUBS],
    sc: [__m512i; 2],
    d: __m512,
    dm: __m512,
}

/// Two tokens' arranged activations of one super-block: token `2p` in the low half, `2p + 1`
/// in the high. Q6_K's `m32` are i32 sums of 16 products `32 * a` per lane.
#[derive(Clone, Copy)]
struct A2 {
    x: [__m512i; SUBS],
    d: __m512,
    s: __m512,
    m32: [__m512i; 2],
}

#[inline(always)]
unsafe fn both(v: __m256i) -> __m512i {
    _mm512_broadcast_i64x4(v)
}

#[inline(always)]
unsafe fn both_ps(v: __m256) -> __m512 {
    _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(v)))
}

#[inline(always)]
unsafe fn join(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

#[inline(always)]
unsafe fn join_ps(lo: __m256, hi: __m256) -> __m512 {
    _mm512_castpd_ps(_mm512_insertf64x4::<1>(
        _mm512_castpd256_pd512(_mm256_castps_pd(lo)),
        _mm256_castps_pd(hi),
    ))
}

#[inline(always)]
unsafe fn widen_w(w: &WUnit) -> W2 {
    // Loops here, not `array::from_fn` or `map`: see `KUnit::load_a` in `avx2/kquant.rs`.
    let mut x = [_mm512_setzero_si512(); SUBS];
    for (xk, &wk) in x.iter_mut().zip(&w.x) {
        *xk = both(wk);
    }
    let sc = [
        _mm512_srai_epi32::<16>(both(w.sc[0])),
        _mm512_srai_epi32::<16>(both(w.sc[1])),
    ];
    W2 {
        x,
        sc,
        d: both_ps(w.d),
        dm: both_ps(w.dm),
    }
}

#[inline(always)]
unsafe fn pair_a<const K: u8>(a: &AUnit, b: &AUnit) -> A2 {
    let mut x = [_mm512_setzero_si512(); SUBS];
    for (k, xk) in x.iter_mut().enumerate() {
        *xk = join(a.x[k], b.x[k]);
    }
    let mut m32 = [join(a.m32[0], b.m32[0]), join(a.m32[1], b.m32[1])];
    if K == Q6_K {
        let m = _mm512_set1_epi8(32);
        for (h, mh) in m32.iter_mut().enumerate() {
            *mh = _mm512_setzero_si512();
            for xk in &x[4 * h..4 * h + 4] {
                *mh = _mm512_dpbusd_epi32(*mh, m, *xk);
            }
        }
    }
    A2 {
        x,
        d: join_ps(a.d, b.d),
        s: join_ps(a.s, b.s),
        m32,
    }
}

/// `acc` plus the super-block's product for both tokens: `avx2::kquant`'s `kunit_isums` and
/// `KUnit::accumulate`, lane for lane.
#[inline(always)]
unsafe fn accumulate<const K: u8>(w: &W2, a: &A2, acc: __m512) -> __m512 {
    let i = isums::<K>(w, a);
    let acc = if K == Q6_K {
        acc
    } else {
        _mm512_fnmadd_ps(w.dm, a.s, acc)
    };
    _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), _mm512_mul_ps(w.d, a.d), acc)
}

/// The exact `isum` of each sub-block for both tokens, sub-block j in lane j of each half:
/// per half of the super-block, the products of its 4 registers summed per lane, Q6_K's
/// `32 * a` removed, then multiplied by the lanes' scales. Where `avx2::kquant`'s
/// `kunit_isums` sums in i16 (`vpmaddubsw`, `vpaddw`, then `vpmaddwd` by the scales),
/// `vpdpbusd` adds each i32 lane's 4 products directly (at most 16 products of 63 and 127 per
/// half, far inside i32) and `vpmulld` applies the scale: the same exact integers, so the
/// outputs keep their bits.
#[inline(always)]
unsafe fn isums<const K: u8>(w: &W2, a: &A2) -> __m512i {
    let half = |h: usize| {
        let mut s = _mm512_setzero_si512();
        for k in 4 * h..4 * h + 4 {
            s = _mm512_dpbusd_epi32(s, w.x[k], a.x[k]);
        }
        s
    };
    let (s0, s1) = (half(0), half(1));
    match K {
        Q4_K => _mm512_mullo_epi32(_mm512_add_epi32(s0, s1), w.sc[0]),
        Q5_K => _mm512_add_epi32(
            _mm512_mullo_epi32(s0, w.sc[0]),
            _mm512_mullo_epi32(s1, w.sc[1]),
        ),
        _ => _mm512_add_epi32(
            _mm512_mullo_epi32(_mm512_sub_epi32(s0, a.m32[0]), w.sc[0]),
            _mm512_mullo_epi32(_mm512_sub_epi32(s1, a.m32[1]), w.sc[1]),
        ),
    }
}

/// A tile's arranged activations: pair p's unit u at `pairs[p * UNITS_MAX + u]`; an odd last
/// token's unit u at `last[u]`. Only the entries of the tile's shape are written.
struct Tile {
    pairs: [MaybeUninit<A2>; PAIRS * arranged::UNITS_MAX],
    last: [MaybeUninit<AUnit>; arranged::UNITS_MAX],
}

/// The matmul of `MatmulQ8aFn` for Q4_K, Q5_K or Q6_K: batches of rows `arranged` takes in
/// token pairs (through `drive_arranged`), decode and the rest through [`KQuantBw`].
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
    if n_tok < 2 || !arranged::fits::<KUnit<K>>(nb) || !nb.is_multiple_of(SUBS) {
        return matmul_tiles::<KQuantBw<K>>(w, cols, rows, xq, n_tok, out, out_stride);
    }
    let nu = nb / SUBS;
    let l = Pairs::<K> {
        o: QOperands::new(w, nu * <KUnit<K> as Unit>::BYTES, nb, xq, out, out_stride),
        nu,
        // Token pairs per tile: at most PAIRS, and no more than fit in TILE_BYTES.
        pairs: (TILE_BYTES / (nu * std::mem::size_of::<A2>())).clamp(1, PAIRS),
    };
    drive_arranged(l, rows, n_tok)
}

/// A K-quant batch in token pairs: rows of `nu` super-blocks (`o.n` activation blocks), in
/// tiles of `pairs` token pairs.
#[derive(Clone, Copy)]
struct Pairs<const K: u8> {
    o: QOperands,
    nu: usize,
    pairs: usize,
}

impl<const K: u8> Arranged for Pairs<K> {
    type Tiles = Tile;
    #[inline(always)]
    fn tiles(&self) -> Tile {
        Tile {
            pairs: [const { MaybeUninit::uninit() }; PAIRS * arranged::UNITS_MAX],
            last: [const { MaybeUninit::uninit() }; arranged::UNITS_MAX],
        }
    }
    #[inline(always)]
    fn tile_tokens(&self, left: usize) -> usize {
        left.min(2 * self.pairs)
    }
    #[inline(always)]
    fn weights(&self) -> (*const u8, usize) {
        (self.o.w, self.o.rb)
    }
    #[inline(always)]
    unsafe fn arrange(&self, tl: &mut Tile, t: usize, tn: usize) {
        let nb = self.o.n;
        for u in 0..self.nu {
            let unit = |tt: usize| KUnit::<K>::load_a(self.o.x.add((t + tt) * nb + SUBS * u));
            for p in 0..tn / 2 {
                let a2 = pair_a::<K>(&unit(2 * p), &unit(2 * p + 1));
                tl.pairs[p * arranged::UNITS_MAX + u].write(a2);
            }
            if tn % 2 == 1 {
                tl.last[u].write(unit(tn - 1));
            }
        }
    }
    #[inline(always)]
    unsafe fn rows(&self, tl: &Tile, r: usize, _n: usize, t: usize, tn: usize, pf: &Ahead) {
        pf.row(r);
        let (np, odd) = (tn / 2, tn % 2 == 1);
        let wr = self.o.w.add(r * self.o.rb);
        let mut acc = [_mm512_setzero_ps(); PAIRS];
        let mut acc1 = _mm256_setzero_ps();
        // SAFETY (the reads of `tl`): `arrange` wrote the pairs and the odd token of this
        // tile for every unit of the row.
        for u in 0..self.nu {
            let wu = KUnit::<K>::load_w(wr.add(u * <KUnit<K> as Unit>::BYTES));
            let w2 = widen_w(&wu);
            for (p, acc_p) in acc.iter_mut().enumerate().take(np) {
                let a2 = tl.pairs[p * arranged::UNITS_MAX + u].assume_init_ref();
                *acc_p = accumulate::<K>(&w2, a2, *acc_p);
            }
            if odd {
                acc1 = KUnit::<K>::accumulate(&wu, tl.last[u].assume_init_ref(), acc1);
            }
        }
        let os = self.o.out_stride;
        let o = self.o.out.add(t * os + r);
        for (p, acc_p) in acc.iter().enumerate().take(np) {
            let lo = _mm512_castps512_ps256(*acc_p);
            let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(*acc_p)));
            *o.add(2 * p * os) = hsum(lo);
            *o.add((2 * p + 1) * os) = hsum(hi);
        }
        if odd {
            *o.add((tn - 1) * os) = hsum(acc1);
        }
    }
}

/// One row's super-block for [`KQuantBw`]: `u[k]` holds sub-block k's values in its low 256
/// bits and sub-block 4 + k's in its high; `sc[0]` the multipliers of `avx2::kquant`'s pairs 0
/// and 2 side by side, `sc[1]` those of pairs 1 and 3.
#[derive(Clone, Copy)]
struct RowBw {
    u: [__m512i; 4],
    sc: [__m512i; 2],
}

/// The super-block at `p` unpacked as `avx2::kquant`'s `unpack` does, two sub-blocks per
/// register (`sc`: Q4_K/Q5_K's scales from `scales_mins`).
#[inline(always)]
unsafe fn unpack_bw<const K: u8>(p: *const u8, sc: u64) -> RowBw {
    let (and, or) = (_mm512_and_si512, _mm512_or_si512);
    let m15 = _mm512_set1_epi8(0x0f);
    let at = |o: usize| k2::load(p.add(o));
    let (u, s) = if K == Q6_K {
        // Half h of the super-block (sub-blocks 4h..4h + 3) in 256-bit half h.
        let m30 = _mm512_set1_epi8(0x30);
        let (l0, l1) = (join(at(0), at(64)), join(at(32), at(96)));
        let qh = _mm512_loadu_si512(p.add(128).cast());
        let u = [
            or(and(l0, m15), and(_mm512_slli_epi16::<4>(qh), m30)),
            or(and(l1, m15), and(_mm512_slli_epi16::<2>(qh), m30)),
            or(and(_mm512_srli_epi16::<4>(l0), m15), and(qh, m30)),
            or(
                and(_mm512_srli_epi16::<4>(l1), m15),
                and(_mm512_srli_epi16::<2>(qh), m30),
            ),
        ];
        (u, k2::q6_scales(p))
    } else {
        // Bytes 32i.. of `qs` hold sub-blocks 2i (low nibbles) and 2i + 1 (high).
        let qs = if K == Q5_K { 48 } else { 16 };
        let (r02, r13) = (join(at(qs), at(qs + 64)), join(at(qs + 32), at(qs + 96)));
        let mut u = [
            and(r02, m15),
            and(_mm512_srli_epi16::<4>(r02), m15),
            and(r13, m15),
            and(_mm512_srli_epi16::<4>(r13), m15),
        ];
        if K == Q5_K {
            // Sub-block j's fifth bits: `qh` shifted left by 4 - j (j <= 4) or right by
            // j - 4, as `unpack` does, for j = k (low half) and 4 + k (high half).
            let qh = _mm512_broadcast_i64x4(at(16));
            let m10 = _mm512_set1_epi8(0x10);
            for (k, uk) in u.iter_mut().enumerate() {
                let left = join(_mm256_set1_epi16(4 - k as i16), _mm256_setzero_si256());
                let right = join(_mm256_setzero_si256(), _mm256_set1_epi16(k as i16));
                let bit = _mm512_srlv_epi16(_mm512_sllv_epi16(qh, left), right);
                *uk = or(*uk, and(bit, m10));
            }
        }
        (u, k2::k_scales(sc))
    };
    RowBw {
        u,
        sc: [join(s[0], s[2]), join(s[1], s[3])],
    }
}

impl<const K: u8> KRow<K> for RowBw {
    type A = AKBw;
    #[inline(always)]
    unsafe fn unpack(p: *const u8, sc: u64) -> RowBw {
        unpack_bw::<K>(p, sc)
    }
    #[inline(always)]
    unsafe fn isum(&self, a: &AKBw) -> __m256i {
        isum_bw::<K>(self, a)
    }
    #[inline(always)]
    fn ak(a: &AKBw) -> &AK {
        &a.k
    }
}

/// One token's activations of one super-block for [`KQuantBw`]: the AVX2 ones (`k`), and the
/// values (`x`) and Q6_K's `32 * a` pair sums (`m32`) of sub-blocks k and 4 + k side by side.
#[derive(Clone, Copy)]
pub(super) struct AKBw {
    k: AK,
    x: [__m512i; 4],
    m32: [__m512i; 4],
}

/// `avx2::kquant`'s `isum_lanes` on the paired registers: the exact `isum` of sub-block j in
/// lane j. Pairs 0 and 2, then 1 and 3, are formed side by side, and their quads (sub-blocks
/// 0-3 and 4-7) too, so the one cross-lane step adds the two 128-bit halves of each.
#[inline(always)]
unsafe fn isum_bw<const K: u8>(row: &RowBw, a: &AKBw) -> __m256i {
    let prod = |k: usize| {
        let p = _mm512_maddubs_epi16(row.u[k], a.x[k]);
        if K == Q6_K {
            _mm512_sub_epi16(p, a.m32[k])
        } else {
            p
        }
    };
    let pair = |i: usize| {
        let (p, q) = (prod(2 * i), prod(2 * i + 1));
        let four = _mm512_add_epi16(_mm512_unpacklo_epi32(p, q), _mm512_unpackhi_epi32(p, q));
        _mm512_madd_epi16(four, row.sc[i])
    };
    let (m, n) = (pair(0), pair(1));
    // 128-bit chunks: quad of sub-blocks 0-3 (halves 0, 1), then of 4-7 (halves 0, 1).
    let z = _mm512_add_epi32(_mm512_unpacklo_epi64(m, n), _mm512_unpackhi_epi64(m, n));
    let s = _mm512_add_epi32(
        _mm512_shuffle_i64x2::<0b00_00_10_00>(z, z),
        _mm512_shuffle_i64x2::<0b00_00_11_01>(z, z),
    );
    _mm512_castsi512_si256(s)
}

/// K-quant decode (and rows too wide for the batch tiles) with AVX-512 BW's byte products
/// (`vpmaddubsw`, as on AVX2): `avx2::kquant`'s
/// micro-kernel `KQuant` with two sub-blocks per register ([`unpack_bw`], [`isum_bw`]):
/// half the instructions for the values and their products, the same exact integer sums, then
/// the same f32 steps, so each output keeps its bits.
pub(super) struct KQuantBw<const K: u8>;

impl<const K: u8> Micro for KQuantBw<K> {
    const BLOCK_BYTES: usize = <KQuant<K> as Micro>::BLOCK_BYTES;
    const SUBS: usize = SUBS;
    const BATCH_ROWS: usize = 4;
    type A = AKBw;
    #[inline(always)]
    unsafe fn load_a(x: *const BlockQ8A) -> AKBw {
        let k = <KQuant<K> as Micro>::load_a(x);
        let qs = |j: usize| k2::load((*x.add(j)).qs.as_ptr().cast());
        let (mut xz, mut m32) = ([_mm512_setzero_si512(); 4], [_mm512_setzero_si512(); 4]);
        for j in 0..4 {
            xz[j] = join(qs(j), qs(j + 4));
            m32[j] = join(k.m32[j], k.m32[j + 4]);
        }
        AKBw { k, x: xz, m32 }
    }
    #[inline(always)]
    unsafe fn block<const R: usize, const T: usize>(
        w: *const u8,
        rb: usize,
        a: &[AKBw; T],
        acc: &mut [[__m256; T]; R],
    ) {
        k2::block_steps::<K, RowBw, R, T>(w, rb, a, acc);
    }
}
