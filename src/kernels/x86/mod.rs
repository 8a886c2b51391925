//! x86-64 paths: AVX2+FMA+F16C and AVX-VNNI ([`avx2`]), AVX-512 F/BW/VL with VNNI
//! ([`avx512`]). Each table is handed out only after its features are detected here.
//!
//! What every x86 table shares lives here (the dtype selectors, the entry-point macro and the
//! register-tile loop are the kernels' own, shared with aarch64): the float entries' macro, the
//! tile loop of the arranged layouts ([`drive_arranged`]: tiles of tokens arranged once, then met
//! by every row; register tiles go through the loop every path shares, `tiles::drive`), the weight
//! prefetch distances, and the assembly of a table ([`table`]: its float entries and the
//! int8-activation entries of the 5-bit and K-quant layouts, kernels of `avx2/q5.rs` and
//! `avx2/kquant.rs` that the AVX-512 table compiles with its own features, and batches K-quants two
//! tokens per register there).

use std::ops::Range;

use super::scalar;
use super::{
    DequantFn, GluFn, Kernels, LseFn, MatmulF32Fn, MatmulQ8aFn, QuantizeFn, SoftmaxFn,
    WsumFn,
};
// The weight dtype selectors and their block sizes, the operands and the register-tile loop,
// for every x86 kernel file.
use super::tiles::{drive, FOperands, QOperands, Tiler};
use super::{block_bytes, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K, Q8_0};

/// The float entries of an x86 table, compiled with `$features`: module `$float`'s
/// f32-activation matmuls (`matmul_f`, `matmul_fq`) and row dequantization (`dequant_f32`,
/// `dequant_f16`, `dequant_q`) of the F32, F16, Q8_0, Q4_0 and Q4_1 dtypes, its
/// `quantize_act`, and the scalar reference's gated activations, weighted sum, log-sum-exp
/// and softmax (the same operations, vectorized by the compiler for these features, so the
/// same bits). Defines the entry points and `FLOAT`, which [`table`] takes.
macro_rules! float_entries {
    ($features:literal, $float:ident) => {
        entries! {
            $features;
            f32 matmul_f32_f32 = $float::matmul_f::<false>;
            f32 matmul_f32_f16 = $float::matmul_f::<true>;
            f32 matmul_f32_q8_0 = $float::matmul_fq::<{ $crate::kernels::Q8_0 }>;
            f32 matmul_f32_q4_0 = $float::matmul_fq::<{ $crate::kernels::Q4_0 }>;
            f32 matmul_f32_q4_1 = $float::matmul_fq::<{ $crate::kernels::Q4_1 }>;
            dequant dequant_f32 = $float::dequant_f32;
            dequant dequant_f16 = $float::dequant_f16;
            dequant dequant_q8_0 = $float::dequant_q::<{ $crate::kernels::Q8_0 }>;
            dequant dequant_q4_0 = $float::dequant_q::<{ $crate::kernels::Q4_0 }>;
            dequant dequant_q4_1 = $float::dequant_q::<{ $crate::kernels::Q4_1 }>;
            glu glu_silu = $crate::kernels::scalar::glu::<false>;
            glu glu_gelu_tanh = $crate::kernels::scalar::glu::<true>;
            wsum wsum = $crate::kernels::scalar::wsum_rows;
            lse log_sum_exp = $crate::kernels::scalar::log_sum_exp_row;
            softmax softmax = $crate::kernels::scalar::softmax_row;
        }

        /// This table's float entries (see `float_entries!`).
        const FLOAT: $crate::kernels::x86::Float = $crate::kernels::x86::Float {
            quantize_act: $float::quantize_act,
            matmul_f32: [
                matmul_f32_f32,
                matmul_f32_f16,
                matmul_f32_q8_0,
                matmul_f32_q4_0,
                matmul_f32_q4_1,
            ],
            dequant_row: [
                dequant_f32,
                dequant_f16,
                dequant_q8_0,
                dequant_q4_0,
                dequant_q4_1,
            ],
            glu: [glu_silu, glu_gelu_tanh],
            wsum,
            log_sum_exp,
            softmax,
        };
    };
}

mod avx2;
mod avx512;

/// The float entries of a table (`float_entries!`): F32, F16, Q8_0, Q4_0 and Q4_1 (the first
/// five of [`DType::ALL`](super::DType::ALL)) for the matmuls and dequantization.
pub(super) struct Float {
    pub quantize_act: QuantizeFn,
    pub matmul_f32: [MatmulF32Fn; 5],
    pub dequant_row: [DequantFn; 5],
    pub glu: [GluFn; 2],
    pub wsum: WsumFn,
    pub log_sum_exp: LseFn,
    pub softmax: SoftmaxFn,
}

/// The x86 table `name`: its own Q8_0, Q4_0 and Q4_1 int8 kernels (`q8a`, `isums`), the
/// matmuls `q5k` of the 5-bit and K-quant layouts (AVX2's, or the AVX-512 table's forms of
/// them), the AVX2 `isums` of those, and the float entries `f`, with the scalar reference's for the
/// dtypes it has none of.
pub(super) const fn table(
    name: &'static str,
    q8a: [MatmulQ8aFn; 3],
    isums: Isums3,
    q5k: [MatmulQ8aFn; 5],
    f: Float,
) -> Kernels {
    #[cfg(not(test))]
    let () = isums;
    Kernels {
        name,
        quantize_act: f.quantize_act,
        matmul_q8a: join(q8a, q5k),
        #[cfg(test)]
        isums: isums_entries(isums),
        matmul_f32: scalar::with_head(f.matmul_f32, scalar::KERNELS.matmul_f32),
        dequant_row: scalar::with_head(f.dequant_row, scalar::KERNELS.dequant_row),
        glu: f.glu,
        wsum: f.wsum,
        log_sum_exp: f.log_sum_exp,
        softmax: f.softmax,
    }
}

/// How many rows ahead the row loops ask for the weights ([`prefetch`]): a decode step
/// streams every weight from memory once, and the hardware prefetchers alone leave the loads
/// of each row's first blocks waiting (thread CPU time of a 1-thread SmolLM2 decode step:
/// -10% with AVX2; SmolLM2 Q8_0 decode with AVX-512 VNNI on Zen 5: 180 -> 202 tokens/s).
pub(super) const PREFETCH_ROWS: usize = 8;

/// How far ahead the block-by-block micro-kernels (Q5 and K-quant tiles) ask for the
/// weights: the same block this many bytes of rows below, at least one tile (`r_tile` rows)
/// down. One tile (2-4 KB on these models) was too close for DRAM at one thread: on Zen 5 the
/// 1024-wide Q4_K_M decode went from 195 tokens/s to 270 (4 KB ahead), 300 (8 KB), 330
/// (16 KB) and back to 305 (32 KB).
pub(super) const PREFETCH_BYTES: usize = 16384;

/// The rows ahead of [`PREFETCH_BYTES`] for rows of `rb` bytes in tiles of `r_tile` rows
/// (a one-row tile may be handed `rb = 0`).
#[inline(always)]
pub(super) fn prefetch_rows(rb: usize, r_tile: usize) -> usize {
    PREFETCH_BYTES.checked_div(rb).unwrap_or(0).max(r_tile)
}

/// Asks for the `len > 0` bytes at `p` to be brought into the cache: every 64-byte line
/// they touch. A prefetch never faults and has no architectural effect, so `p` may point
/// past the matrix (the row after the last).
#[inline(always)]
pub(super) unsafe fn prefetch(p: *const u8, len: usize) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    for off in (0..len).step_by(64) {
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off).cast());
    }
    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(len - 1).cast());
}

/// One matmul in a layout whose activations are arranged once per tile of tokens and then
/// met by every row, as [`drive_arranged`] calls it: the transposed Q4/Q8_0 groups, the
/// Q5 quads and K-quant super-blocks. The layout holds the operands; the driver walks them.
///
/// # Safety
/// For `arrange` and `rows`: the layout's operands meet the preconditions of `MatmulQ8aFn`
/// for the rows and tokens driven, the CPU has the features its kernels were compiled for,
/// and `rows` reads only a tile `arrange` wrote for the same tokens ([`drive_arranged`]
/// calls them so).
pub(super) trait Arranged: Copy {
    /// One token tile's arranged activations, uninitialised until [`Arranged::arrange`].
    type Tiles;
    /// Rows each [`Arranged::rows`] call takes (fewer at the end of the range).
    const ROWS: usize = 1;
    /// Storage for one tile.
    fn tiles(&self) -> Self::Tiles;
    /// Tokens of the next tile when `left` tokens remain (`1..=left`).
    fn tile_tokens(&self, left: usize) -> usize;
    /// The weights and the bytes of one row.
    fn weights(&self) -> (*const u8, usize);
    /// How many rows ahead the weights are asked for.
    fn ahead(&self) -> usize {
        PREFETCH_ROWS
    }
    /// Arranges the matmul's tokens `t..t + tn` into `tiles`.
    unsafe fn arrange(&self, tiles: &mut Self::Tiles, t: usize, tn: usize);
    /// The outputs of rows `r..r + n` (`n <= ROWS`) by the tile's `tn` tokens, which start at
    /// the matmul's token `t`; `pf.row(i)` as each row `i` begins.
    unsafe fn rows(&self, tiles: &Self::Tiles, r: usize, n: usize, t: usize, tn: usize, pf: &Ahead);
}

/// The weight prefetch of [`drive_arranged`]: as row `r` begins, row `r + ahead` is asked
/// for, if it is in the range being walked. (Asking for a whole set of rows before the set
/// cost 15% in a 1536 x 576 Q4_0 decode from cache; one row at a time, spread between the
/// rows' work, does not.)
pub(super) struct Ahead {
    w: *const u8,
    rb: usize,
    ahead: usize,
    end: usize,
}

impl Ahead {
    /// Asks for the weights `ahead` rows below row `r`.
    #[inline(always)]
    pub(super) unsafe fn row(&self, r: usize) {
        if r + self.ahead < self.end {
            prefetch(self.w.wrapping_add((r + self.ahead) * self.rb), self.rb);
        }
    }
}

/// The tile loop of every arranged layout: the tokens in tiles ([`Arranged::tile_tokens`]),
/// each arranged once, then every row of `rows` meets the tile, `ROWS` at a time, with its
/// weights asked for [`Arranged::ahead`] rows before. The layout is taken by value, so its
/// operands stay in registers while outputs are stored through raw pointers. An output's
/// bits depend only on its row and its token, as long as the layout computes each with the
/// same operations whatever the tile (every one here does), never on the batch or the
/// thread split.
#[inline(always)]
pub(super) unsafe fn drive_arranged<L: Arranged>(l: L, rows: Range<usize>, n_tok: usize) {
    let (w, rb) = l.weights();
    let pf = Ahead {
        w,
        rb,
        ahead: l.ahead(),
        end: rows.end,
    };
    let mut tiles = l.tiles();
    let mut t = 0;
    while t < n_tok {
        let tn = l.tile_tokens(n_tok - t);
        l.arrange(&mut tiles, t, tn);
        let mut r = rows.start;
        while r < rows.end {
            let n = (rows.end - r).min(L::ROWS);
            l.rows(&tiles, r, n, t, tn, &pf);
            r += n;
        }
        t += tn;
    }
}

/// A table's own `isums` test hooks (Q8_0, Q4_0, Q4_1): [`isums3`] builds them, as `()` in
/// builds without tests, which compile no `isums`.
#[cfg(test)]
pub(super) type Isums3 = [super::IsumsFn; 3];
#[cfg(not(test))]
pub(super) type Isums3 = ();

/// The [`Isums3`] of three `isums` entries.
#[cfg(test)]
macro_rules! isums3 {
    ($($f:expr),*) => { [$($f),*] };
}
#[cfg(not(test))]
macro_rules! isums3 {
    ($($f:expr),*) => { () };
}
pub(super) use isums3;

/// A table's `isums` entries: its own of Q8_0, Q4_0 and Q4_1, then the AVX2 ones of the
/// 5-bit and K-quant layouts (in [`DType::QUANTIZED`](super::DType::QUANTIZED) order).
#[cfg(test)]
const fn isums_entries(head: Isums3) -> [super::IsumsFn; super::N_QUANT] {
    join(head, avx2::ISUMS_Q5_AND_K)
}

fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

fn has_avx512_vnni() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
        && is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// The x86 tables this CPU supports, slowest first.
pub(crate) fn available() -> Vec<&'static Kernels> {
    let mut v = Vec::new();
    if has_avx2() {
        v.push(&avx2::KERNELS);
        if is_x86_feature_detected!("avxvnni") {
            v.push(&avx2::KERNELS_VNNI);
        }
        #[cfg(test)]
        if has_avx512_vnni() {
            v.push(&avx2::KERNELS_VNNI_EVEX);
        }
    }
    if has_avx512_vnni() {
        v.push(&avx512::KERNELS);
    }
    v
}

/// `a` followed by `b`, for a per-dtype table assembled from the files that hold each layout.
const fn join<T: Copy, const A: usize, const B: usize, const N: usize>(
    a: [T; A],
    b: [T; B],
) -> [T; N] {
    assert!(A > 0 && A + B == N, "join: lengths do not add up");
    let mut out = [a[0]; N];
    let mut i = 0;
    while i < N {
        out[i] = if i < A { a[i] } else { b[i - A] };
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{drive_arranged, Ahead, Arranged};
    use std::cell::RefCell;

    /// Counts how often each (token, row) output is computed, and checks that every `rows`
    /// call meets the tile `arrange` wrote for its tokens.
    struct Count<'a, const ROWS: usize> {
        seen: &'a RefCell<Vec<u32>>,
        rows: usize,
        tile_max: usize,
        w: *const u8,
    }

    impl<const ROWS: usize> Clone for Count<'_, ROWS> {
        fn clone(&self) -> Self {
            *self
        }
    }
    impl<const ROWS: usize> Copy for Count<'_, ROWS> {}

    impl<const ROWS: usize> Arranged for Count<'_, ROWS> {
        type Tiles = Vec<usize>;
        const ROWS: usize = ROWS;
        fn tiles(&self) -> Vec<usize> {
            Vec::new()
        }
        fn tile_tokens(&self, left: usize) -> usize {
            left.min(self.tile_max)
        }
        fn weights(&self) -> (*const u8, usize) {
            (self.w, 1)
        }
        unsafe fn arrange(&self, tiles: &mut Vec<usize>, t: usize, tn: usize) {
            *tiles = (t..t + tn).collect();
        }
        unsafe fn rows(&self, tl: &Vec<usize>, r: usize, n: usize, t: usize, k: usize, pf: &Ahead) {
            assert_eq!(*tl, (t..t + k).collect::<Vec<_>>());
            assert!((1..=ROWS).contains(&n) && (1..=self.tile_max).contains(&k));
            let mut seen = self.seen.borrow_mut();
            for i in r..r + n {
                pf.row(i);
                for tt in t..t + k {
                    seen[tt * self.rows + i] += 1;
                }
            }
        }
    }

    fn check<const ROWS: usize>(tile_max: usize) {
        let w = [0u8; 64];
        for rows in 0..=19 {
            for start in 0..=rows.min(3) {
                for n_tok in 0..=17 {
                    let seen = RefCell::new(vec![0u32; rows * n_tok]);
                    let l = Count::<ROWS> {
                        seen: &seen,
                        rows,
                        tile_max,
                        w: w.as_ptr(),
                    };
                    // SAFETY: `Count` only counts; the prefetches it asks for never fault.
                    unsafe { drive_arranged(l, start..rows, n_tok) };
                    for t in 0..n_tok {
                        for r in 0..rows {
                            let want = u32::from(r >= start);
                            let got = seen.borrow()[t * rows + r];
                            let at = format!("rows {start}..{rows}, {n_tok} tokens, t={t} r={r}");
                            assert_eq!(got, want, "ROWS={ROWS}, tiles of {tile_max}: {at}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn drive_arranged_computes_every_output_once() {
        check::<1>(8);
        check::<1>(1);
        check::<8>(4);
        check::<8>(16);
    }

    /// The `avxvnni` kernels cannot run on a CPU without AVX-VNNI; with AVX-512 VNNI the
    /// tests still run their arithmetic (EVEX encoding) against the scalar reference.
    #[test]
    fn avxvnni_arithmetic_is_under_test_where_possible() {
        let names: Vec<_> = super::super::available().iter().map(|k| k.name).collect();
        if super::has_avx512_vnni() {
            assert!(names.contains(&"avxvnni-as-evex"), "{names:?}");
        }
        if is_x86_feature_detected!("avxvnni") && super::has_avx2() {
            assert!(names.contains(&"avxvnni"), "{names:?}");
        }
    }
}
