//! What every SIMD path (x86 and aarch64) shares to walk a matrix: the operands of a matmul
//! ([`Operands`]) and the register-tile loop ([`drive`]) that hands a layout's micro-kernel
//! ([`Tiler`]) tiles of `R` rows by `T` tokens. The loop only computes indices; the kernels
//! it calls hold the `unsafe` SIMD code and their preconditions.

use std::ops::Range;

/// The operands of a matmul, by tile: row r's weights at `w + r * rb`, token t's
/// activations at `x + t * n` (`n` values of type `X`: f32 values, or int8 blocks),
/// output (t, r) at `out + t * out_stride + r`.
#[derive(Clone, Copy)]
pub(crate) struct Operands<X> {
    pub w: *const u8,
    pub rb: usize,
    pub n: usize,
    pub x: *const X,
    pub out: *mut f32,
    pub out_stride: usize,
}

/// The operands of an f32-activation matmul (`MatmulF32Fn`): `n` is the columns.
pub(crate) type FOperands = Operands<f32>;
/// The operands of an int8-activation matmul (`MatmulQ8aFn`): `n` is the activation blocks
/// of a row.
pub(crate) type QOperands = Operands<super::BlockQ8A>;

impl<X> Operands<X> {
    /// Operands of weights `w` (rows of `rb` bytes), activations `x` (`n` per token) and the
    /// output (`out_stride` apart per token).
    pub(crate) fn new(
        w: &[u8],
        rb: usize,
        n: usize,
        x: &[X],
        out: *mut f32,
        out_stride: usize,
    ) -> Self {
        Operands {
            w: w.as_ptr(),
            rb,
            n,
            x: x.as_ptr(),
            out,
            out_stride,
        }
    }

    /// The weights of row `r`, the activations of token `t` and output (t, r).
    #[inline(always)]
    pub(crate) unsafe fn at(&self, r: usize, t: usize) -> (*const u8, *const X, *mut f32) {
        (
            self.w.add(r * self.rb),
            self.x.add(t * self.n),
            self.out.add(t * self.out_stride + r),
        )
    }
}

/// One matmul's tile kernel, as [`drive`] calls it.
pub(crate) trait Tiler {
    /// The outputs of `R` rows from row `r` by `T` tokens from token `t`.
    ///
    /// # Safety
    /// The implementor's operands meet the preconditions of its table type (`MatmulQ8aFn` or
    /// `MatmulF32Fn`) for the rows and tokens it is driven over, which [`drive`] keeps the
    /// tiles within, and the CPU has the features its kernels were compiled for.
    unsafe fn tile<const R: usize, const T: usize>(&self, r: usize, t: usize);
}

/// The register-tile loop of the SIMD matmuls (x86 and aarch64): `rows` in tiles of `R`, and for
/// each, the tokens `0..n_tok` in tiles of `T` (`T <= 4`), then of 2 and 1 for the tokens left.
/// Rows past the last whole tile (only when the matrix's rows are not a multiple of `R`:
/// `split_rows` hands out multiples of 8) go one row by one token, a shape every kernel has for
/// decode; so each kernel is instantiated for at most four shapes. Kernels compute each output with
/// the same operations whatever its tile, so the shape chosen never changes an output's bits.
#[inline(always)]
pub(crate) unsafe fn drive<K: Tiler, const R: usize, const T: usize>(
    k: &K,
    rows: Range<usize>,
    n_tok: usize,
) {
    const { assert!(R >= 1 && T >= 1 && T <= 4) };
    let mut r = rows.start;
    while r + R <= rows.end {
        let mut t = 0;
        while t < n_tok {
            let left = n_tok - t;
            t += if left >= T {
                k.tile::<R, T>(r, t);
                T
            } else if T > 2 && left >= 2 {
                k.tile::<R, 2>(r, t);
                2
            } else {
                k.tile::<R, 1>(r, t);
                1
            };
        }
        r += R;
    }
    while r < rows.end {
        for t in 0..n_tok {
            k.tile::<1, 1>(r, t);
        }
        r += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Counts how often each (token, row) output is computed, and checks each tile's shape.
    struct Count<'a> {
        seen: &'a RefCell<Vec<u32>>,
        rows: usize,
        shapes: &'a RefCell<Vec<(usize, usize)>>,
    }

    impl Tiler for Count<'_> {
        unsafe fn tile<const R: usize, const T: usize>(&self, r: usize, t: usize) {
            self.shapes.borrow_mut().push((R, T));
            let mut seen = self.seen.borrow_mut();
            for tt in t..t + T {
                for rr in r..r + R {
                    seen[tt * self.rows + rr] += 1;
                }
            }
        }
    }

    /// Every output of the range is computed exactly once, by at most four tile shapes.
    fn check<const R: usize, const T: usize>() {
        for rows in 0..=11 {
            for start in 0..=rows.min(3) {
                for n_tok in 0..=9 {
                    let seen = RefCell::new(vec![0u32; rows * n_tok]);
                    let shapes = RefCell::new(Vec::new());
                    let k = Count {
                        seen: &seen,
                        rows,
                        shapes: &shapes,
                    };
                    // SAFETY: `Count::tile` only counts, for indices `drive` keeps in range.
                    unsafe { drive::<_, R, T>(&k, start..rows, n_tok) };
                    for t in 0..n_tok {
                        for r in 0..rows {
                            let want = u32::from(r >= start);
                            assert_eq!(
                                seen.borrow()[t * rows + r],
                                want,
                                "R={R} T={T} rows={start}..{rows} n_tok={n_tok} t={t} r={r}"
                            );
                        }
                    }
                    let mut kinds = shapes.into_inner();
                    kinds.sort_unstable();
                    kinds.dedup();
                    assert!(kinds.len() <= 4, "R={R} T={T}: {kinds:?}");
                    assert!(kinds
                        .iter()
                        .all(|&(r, t)| (r == R || (r, t) == (1, 1)) && t <= T));
                }
            }
        }
    }

    #[test]
    fn drive_computes_every_output_once() {
        check::<4, 4>();
        check::<4, 2>();
        check::<8, 1>();
        check::<2, 4>();
        check::<1, 4>();
        check::<4, 3>();
    }
}
