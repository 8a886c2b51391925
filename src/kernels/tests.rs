//! Unit tests: every path this CPU supports against the scalar reference (`cargo test -p
//! pipit --lib` runs them, including under qemu for aarch64).
//!
//! Integer results and quantized activations must be identical; f32 outputs must agree
//! within `TOL * sum of |terms|` (see the module docs of `kernels`).

use super::scalar::{
    Q4_0_BYTES, Q4_1_BYTES, Q4_K_BYTES, Q5_0_BYTES, Q5_1_BYTES, Q5_K_BYTES, Q6_K_BYTES, Q8_0_BYTES,
};
use super::*;
use half::f16;
use pipit_format::blocks::k_scale_min;

const TOL: f64 = 1e-5;

/// xorshift64*: deterministic, dependency-free.
pub(crate) struct Rng(u64);
impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// Uniform in [-1, 1).
    pub(crate) fn f(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// Scale styles for weights.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Scales {
    Normal,
    Zero,
    Huge,
    Subnormal,
    Mixed,
}

fn scale(rng: &mut Rng, s: Scales) -> f16 {
    match s {
        Scales::Normal => f16::from_f32(rng.f() * 0.05),
        Scales::Zero => f16::ZERO,
        Scales::Huge => f16::from_f32(if rng.below(2) == 0 { 65504.0 } else { -60000.0 }),
        Scales::Subnormal => f16::from_bits(1 + rng.below(0x3ff) as u16),
        Scales::Mixed => match rng.below(5) {
            0 => scale(rng, Scales::Zero),
            1 => scale(rng, Scales::Huge),
            2 => scale(rng, Scales::Subnormal),
            3 => f16::from_f32(rng.f()),
            _ => scale(rng, Scales::Normal),
        },
    }
}

/// Random weight bytes for `rows x cols` of `dtype`, with finite scales in style `s`.
pub(crate) fn weights(rng: &mut Rng, dtype: DType, rows: usize, cols: usize, s: Scales) -> Vec<u8> {
    let n = rows * row_bytes(dtype, cols).unwrap();
    let mut v: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
    let bb = dtype.block_bytes();
    match dtype {
        DType::F32 => {
            for c in v.chunks_exact_mut(4) {
                c.copy_from_slice(&(rng.f() * 2.0).to_le_bytes());
            }
        }
        DType::F16 => {
            for c in v.chunks_exact_mut(2) {
                let x = match s {
                    Scales::Normal => f16::from_f32(rng.f() * 2.0),
                    _ => scale(rng, s),
                };
                c.copy_from_slice(&x.to_le_bytes());
            }
        }
        _ => {
            for b in v.chunks_exact_mut(bb) {
                for &o in scale_offsets(dtype) {
                    b[o..o + 2].copy_from_slice(&scale(rng, s).to_le_bytes());
                }
            }
        }
    }
    v
}

/// Byte offsets of the f16 scale fields in one block of a quantized `dtype`.
fn scale_offsets(dtype: DType) -> &'static [usize] {
    match dtype {
        DType::Q8_0 | DType::Q4_0 | DType::Q5_0 => &[0],
        DType::Q4_1 | DType::Q5_1 | DType::Q4_K | DType::Q5_K => &[0, 2],
        DType::Q6_K => &[208],
        DType::F32 | DType::F16 => &[],
    }
}

/// `cols` rounded up to whole blocks of `dtype`.
fn fit(dtype: DType, cols: usize) -> usize {
    cols.next_multiple_of(dtype.block_elems())
}

/// Activations of `n` elements in one of several styles.
pub(crate) fn acts(rng: &mut Rng, n: usize, style: usize) -> Vec<f32> {
    (0..n)
        .map(|i| match style {
            0 => rng.f() * 3.0,
            1 => 0.0,
            2 => 0.75,
            3 => (rng.f() * 1e29).clamp(-1e29, 1e29),
            4 => rng.f() * 1e-39,
            5 => {
                if i % 7 == 0 {
                    rng.f() * 100.0
                } else {
                    rng.f() * 1e-3
                }
            }
            // Exact ties of the rounding rule: multiples of d/2 with amax = 127 * d.
            _ => {
                if i % 32 == 0 {
                    127.0
                } else {
                    (rng.below(255) as f32 - 127.0) + 0.5
                }
            }
        })
        .collect()
}

/// A copy of `bytes` placed at byte offset `off` of a fresh buffer, to test unaligned reads.
fn at_offset(bytes: &[u8], off: usize) -> Vec<u8> {
    let mut v = vec![0u8; off];
    v.extend_from_slice(bytes);
    v
}

/// Sub-block `j` (32 weights) of block `b`, decoded independently of the kernels:
/// `(d, w, off)` with the block's f16 scale `d`, the integer weights `w_i` of the module docs,
/// and the offset `off` each value gets (`m` of Q4_1/Q5_1, `-dmin * m_j` of Q4_K/Q5_K).
fn sub_block(dtype: DType, b: &[u8], j: usize) -> (f64, [i32; 32], f64) {
    let h = |o: usize| f64::from(scalar::f16_at(b, o));
    let nib = |qs: &[u8], i: usize| i32::from(if i < 16 { qs[i] & 15 } else { qs[i - 16] >> 4 });
    let bit5 = |o: usize, i: usize| {
        let qh = u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        ((qh >> i) & 1) as i32 * 16
    };
    let mut q = [0i32; 32];
    let (mut d, mut off) = (h(0), 0.0);
    for (i, v) in q.iter_mut().enumerate() {
        *v = match dtype {
            DType::Q8_0 => i32::from(b[2 + i] as i8),
            DType::Q4_0 => nib(&b[2..], i) - 8,
            DType::Q4_1 => nib(&b[4..], i),
            DType::Q5_0 => nib(&b[6..], i) + bit5(2, i) - 16,
            DType::Q5_1 => nib(&b[8..], i) + bit5(4, i),
            DType::Q4_K | DType::Q5_K => {
                let (sc, _) = k_scale_min(&b[4..16], j);
                let qs = if dtype == DType::Q5_K {
                    &b[48..]
                } else {
                    &b[16..]
                };
                let mut n = i32::from((qs[32 * (j / 2) + i] >> (4 * (j % 2))) & 15);
                if dtype == DType::Q5_K {
                    n += i32::from((b[16 + i] >> j) & 1) * 16;
                }
                i32::from(sc) * n
            }
            DType::Q6_K => {
                let e = 32 * j + i;
                let (hh, k, l) = (e / 128, (e % 128) / 32, e % 32);
                let low = (b[64 * hh + 32 * (k & 1) + l] >> (4 * (k / 2))) & 15;
                let high = (b[128 + 32 * hh + l] >> (2 * k)) & 3;
                i32::from(b[192 + e / 16] as i8) * (i32::from(low | (high << 4)) - 32)
            }
            DType::F32 | DType::F16 => unreachable!(),
        };
    }
    match dtype {
        DType::Q4_1 | DType::Q5_1 => off = h(2),
        DType::Q4_K | DType::Q5_K => off = -h(2) * f64::from(k_scale_min(&b[4..16], j).1),
        DType::Q6_K => d = h(208),
        _ => {}
    }
    (d, q, off)
}

/// Sum of |elementwise terms| in f64, `sum_b |d_w d_a| sum_i |w_i a_i|` (+ `|off * s_a|`):
/// the scale of the rounding error of any summation order.
fn q8a_magnitude(w: &QMatrix, row: usize, xq: &[BlockQ8A]) -> f64 {
    let rb = w.row_bytes();
    let bb = w.dtype.block_bytes();
    let subs = w.dtype.block_elems() / 32;
    let wr = &w.data[row * rb..(row + 1) * rb];
    let mut m = 0f64;
    for (b, xs) in wr.chunks_exact(bb).zip(xq.chunks_exact(subs)) {
        for (j, a) in xs.iter().enumerate() {
            let (d, iw, off) = sub_block(w.dtype, b, j);
            let abs: i64 = iw
                .iter()
                .zip(&a.qs)
                .map(|(&q, &x)| i64::from(q * i32::from(x)).abs())
                .sum();
            m += (d * f64::from(a.d)).abs() * abs as f64 + (off * f64::from(a.s)).abs();
        }
    }
    m
}

fn f32_magnitude(w: &QMatrix, row: usize, x: &[f32]) -> f64 {
    let mut wr = vec![0f32; w.cols];
    scalar().dequant_row(w, row, &mut wr);
    wr.iter()
        .zip(x)
        .map(|(&a, &b)| (f64::from(a) * f64::from(b)).abs())
        .sum()
}

fn close(got: f32, want: f32, mag: f64) -> bool {
    if !want.is_finite() || !got.is_finite() {
        return got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan());
    }
    (f64::from(got) - f64::from(want)).abs() <= TOL * mag + 1e-35
}

const QTYPES: [DType; N_QUANT] = DType::QUANTIZED;

#[test]
fn block_sizes_match_format() {
    assert_eq!(DType::Q8_0.block_bytes(), Q8_0_BYTES);
    assert_eq!(DType::Q4_0.block_bytes(), Q4_0_BYTES);
    assert_eq!(DType::Q4_1.block_bytes(), Q4_1_BYTES);
    assert_eq!(DType::Q5_0.block_bytes(), Q5_0_BYTES);
    assert_eq!(DType::Q5_1.block_bytes(), Q5_1_BYTES);
    assert_eq!(DType::Q4_K.block_bytes(), Q4_K_BYTES);
    assert_eq!(DType::Q5_K.block_bytes(), Q5_K_BYTES);
    assert_eq!(DType::Q6_K.block_bytes(), Q6_K_BYTES);
}

/// The scalar integer sums and f32 terms against the independent decoder of this file.
#[test]
fn scalar_isums_match_independent_decoding() {
    let mut rng = Rng::new(17);
    for dtype in QTYPES {
        let cols = fit(dtype, 64);
        let wb = weights(&mut rng, dtype, 1, cols, Scales::Normal);
        let w = QMatrix::new(dtype, 1, cols, &wb).unwrap();
        let mut xq = vec![BlockQ8A::default(); cols / 32];
        scalar().quantize_act(&acts(&mut rng, cols, 0), &mut xq);
        let mut got = vec![0; cols / 32];
        scalar().block_isums(&w, 0, &xq, &mut got);
        let subs = dtype.block_elems() / 32;
        for (k, (g, a)) in got.iter().zip(&xq).enumerate() {
            let b = &wb[(k / subs) * dtype.block_bytes()..];
            let (_, iw, _) = sub_block(dtype, b, k % subs);
            let want: i32 = iw.iter().zip(&a.qs).map(|(&q, &x)| q * i32::from(x)).sum();
            assert_eq!(*g, want, "{dtype} sub-block {k}");
        }
    }
}

#[test]
fn scalar_quantize_rule() {
    let mut x = [0f32; 32];
    x[0] = 127.0;
    x[1] = 2.5; // tie -> 2
    x[2] = 3.5; // tie -> 4
    x[3] = -2.5; // tie -> -2
    x[4] = -127.0;
    x[5] = 0.49;
    let mut q = [BlockQ8A::default()];
    scalar().quantize_act(&x, &mut q);
    assert_eq!(q[0].d, 1.0);
    assert_eq!(&q[0].qs[..6], &[127, 2, 4, -2, -127, 0]);
    assert_eq!(q[0].s, 4.0);
    // Zero and subnormal blocks quantize to all-zero blocks (non-finite ones: see below).
    for v in [0.0, 1e-40, -1e-38] {
        scalar().quantize_act(&[v; 32], &mut q);
        assert_eq!(q[0], BlockQ8A::default(), "v = {v}");
    }
}

#[test]
fn scalar_matmul_matches_float_math() {
    // The reference itself against f64 math on dequantized weights and activations.
    let mut rng = Rng::new(1);
    for dtype in QTYPES {
        let (rows, cols) = (5, fit(dtype, 96));
        let wb = weights(&mut rng, dtype, rows, cols, Scales::Normal);
        let w = QMatrix::new(dtype, rows, cols, &wb).unwrap();
        let x = acts(&mut rng, cols, 0);
        let mut xq = vec![BlockQ8A::default(); cols / 32];
        scalar().quantize_act(&x, &mut xq);
        let xd: Vec<f32> = xq
            .iter()
            .flat_map(|b| b.qs.map(|q| b.d * f32::from(q)))
            .collect();
        let mut out = vec![0f32; rows];
        scalar().matmul_q8a(&w, &xq, 1, &mut out, rows, 0..rows);
        let mut out_f = vec![0f32; rows];
        scalar().matmul_f32(&w, &xd, 1, &mut out_f, rows, 0..rows);
        let mut wr = vec![0f32; cols];
        for r in 0..rows {
            scalar().dequant_row(&w, r, &mut wr);
            let exact: f64 = wr
                .iter()
                .zip(&xd)
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum();
            let mag = f32_magnitude(&w, r, &xd);
            assert!(
                (f64::from(out[r]) - exact).abs() <= 1e-5 * mag,
                "{dtype} q8a row {r}"
            );
            assert!(
                (f64::from(out_f[r]) - exact).abs() <= 1e-5 * mag,
                "{dtype} f32 row {r}"
            );
            // And the quantized activations are close to the originals.
            let orig: f64 = wr
                .iter()
                .zip(&x)
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum();
            assert!(
                (orig - exact).abs() <= 0.02 * f32_magnitude(&w, r, &x) + 1e-6,
                "{dtype} row {r}"
            );
        }
    }
}

#[test]
fn select_by_name() {
    assert!(matches!(select("nope"), Err(Error::InvalidArgument(_))));
    // Every table but the test-only ones (names outside PATH_NAMES) is selectable by name.
    for k in available()
        .into_iter()
        .filter(|k| PATH_NAMES.contains(&k.name))
    {
        assert_eq!(select(k.name).unwrap().name, k.name);
    }
    let names: Vec<_> = available().iter().map(|k| k.name).collect();
    for n in PATH_NAMES {
        if !names.contains(&n) {
            assert!(matches!(select(n), Err(Error::Unsupported(_))), "{n}");
        }
    }
    assert_eq!(scalar().name, "scalar");
    assert!(names.contains(&kernels().name));
}

#[test]
fn quantize_act_bit_identical() {
    let mut rng = Rng::new(2);
    for k in available() {
        for nb in [0, 1, 2, 3, 5, 8, 17] {
            for style in 0..7 {
                for off in [0, 1, 3] {
                    let x = acts(&mut rng, nb * 32 + off, style);
                    let x = &x[off..];
                    let mut want = vec![BlockQ8A::default(); nb];
                    let mut got = vec![
                        BlockQ8A {
                            d: 9.0,
                            s: 9.0,
                            qs: [9; 32]
                        };
                        nb
                    ];
                    scalar().quantize_act(x, &mut want);
                    k.quantize_act(x, &mut got);
                    for (b, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert_eq!(
                            g.d.to_bits(),
                            w.d.to_bits(),
                            "{} nb={nb} style={style} block {b}",
                            k.name
                        );
                        assert_eq!(
                            g.s.to_bits(),
                            w.s.to_bits(),
                            "{} nb={nb} style={style} block {b}",
                            k.name
                        );
                        assert_eq!(g.qs, w.qs, "{} nb={nb} style={style} block {b}", k.name);
                    }
                }
            }
        }
    }
}

#[test]
fn block_isums_exact() {
    let mut rng = Rng::new(3);
    for k in available() {
        for dtype in QTYPES {
            for nb in [1, 2, 3, 4, 7, 16, 17, 19, 22, 35] {
                let unit = dtype.block_elems();
                let nb = nb * unit / 32;
                let wb = weights(&mut rng, dtype, 2, nb * 32, Scales::Normal);
                let mut wb2 = wb.clone();
                if dtype == DType::Q8_0 {
                    // Extreme weights: -128 and 127.
                    for b in wb2.chunks_exact_mut(Q8_0_BYTES) {
                        for (i, q) in b[2..].iter_mut().enumerate() {
                            *q = if i % 2 == 0 { 0x80 } else { 0x7f };
                        }
                    }
                } else {
                    wb2.iter_mut().skip(4).for_each(|q| *q = 0xff);
                }
                for (bytes, style) in [(&wb, 0), (&wb2, 6), (&wb2, 0)] {
                    let bytes = at_offset(bytes, 1);
                    let w = QMatrix::new(dtype, 2, nb * 32, &bytes[1..]).unwrap();
                    let mut xq = vec![BlockQ8A::default(); nb];
                    scalar().quantize_act(&acts(&mut rng, nb * 32, style), &mut xq);
                    for row in 0..2 {
                        let mut want = vec![0; nb];
                        let mut got = vec![7; nb];
                        scalar().block_isums(&w, row, &xq, &mut want);
                        k.block_isums(&w, row, &xq, &mut got);
                        assert_eq!(got, want, "{} {dtype} nb={nb} row={row}", k.name);
                    }
                }
            }
        }
    }
}

/// The K-quant paths sum several products in i16 lanes: the largest magnitudes (Q4_K/Q5_K's
/// top values with scale 63, Q6_K's `q - 32 = -32` with scales -128 and 127) against
/// activations of +-127 everywhere stay exact, in decode and in batches.
#[test]
fn kquant_isums_exact_at_the_extremes() {
    for k in available() {
        for dtype in [DType::Q4_K, DType::Q5_K, DType::Q6_K] {
            let bb = dtype.block_bytes();
            let mut wb = vec![0u8; 2 * bb];
            for b in wb.chunks_exact_mut(bb) {
                if dtype == DType::Q6_K {
                    // ql and qh zero: every q is 0; scales alternate -128 and 127.
                    for (i, sc) in b[192..208].iter_mut().enumerate() {
                        *sc = if i % 2 == 0 { 0x80 } else { 0x7f };
                    }
                } else {
                    // Scales, minimums, qh and qs all ones: q = 15 (31) with sc_j = 63.
                    b[4..].fill(0xff);
                }
                // d = 1 (f16), so that the matmuls below see the sums.
                let d = if dtype == DType::Q6_K { 208 } else { 0 };
                b[d..d + 2].copy_from_slice(&0x3c00u16.to_le_bytes());
            }
            let w = QMatrix::new(dtype, 1, 512, &wb).unwrap();
            for v in [0.75f32, -0.75] {
                let mut xq = vec![BlockQ8A::default(); 16];
                scalar().quantize_act(&[v; 512], &mut xq);
                assert!(xq.iter().all(|b| b.qs.iter().all(|&q| i32::from(q).abs() == 127)));
                let (mut want, mut got) = (vec![0; 16], vec![7; 16]);
                scalar().block_isums(&w, 0, &xq, &mut want);
                k.block_isums(&w, 0, &xq, &mut got);
                assert_eq!(got, want, "{} {dtype} a = {v}", k.name);
                // The batch kernels sum their products another way (arranged super-blocks,
                // VNNI): five copies of the token give decode's bits in every slot.
                let (mut one, mut five) = ([0f32; 1], [0f32; 5]);
                k.matmul_q8a(&w, &xq, 1, &mut one, 1, 0..1);
                k.matmul_q8a(&w, &xq.repeat(5), 5, &mut five, 1, 0..1);
                assert!(five.iter().all(|o| o.to_bits() == one[0].to_bits()), "{} {dtype}", k.name);
            }
        }
    }
}

/// Checks one q8a matmul shape on every path against the scalar reference.
#[allow(clippy::too_many_arguments)]
fn check_q8a_shape(
    rng: &mut Rng,
    dtype: DType,
    rows: usize,
    cols: usize,
    n_tok: usize,
    s: Scales,
    style: usize,
    off: usize,
) {
    let wb = at_offset(&weights(rng, dtype, rows, cols, s), off);
    let w = QMatrix::new(dtype, rows, cols, &wb[off..]).unwrap();
    let nb = cols / 32;
    let x = acts(rng, n_tok * cols, style);
    let mut xq = vec![BlockQ8A::default(); n_tok * nb];
    scalar().quantize_act(&x, &mut xq);
    let stride = rows + 3;
    let mut want = vec![f32::NAN; n_tok * stride];
    scalar().matmul_q8a(&w, &xq, n_tok, &mut want, stride, 0..rows);
    for k in available() {
        let mut got = vec![f32::NAN; n_tok * stride];
        k.matmul_q8a(&w, &xq, n_tok, &mut got, stride, 0..rows);
        for t in 0..n_tok {
            for r in 0..rows {
                let (g, e) = (got[t * stride + r], want[t * stride + r]);
                let mag = q8a_magnitude(&w, r, &xq[t * nb..(t + 1) * nb]);
                assert!(
                    close(g, e, mag),
                    "{} {dtype} rows={rows} cols={cols} n_tok={n_tok} {s:?} style={style}: out[{t}][{r}] = {g}, want {e} (mag {mag})",
                    k.name
                );
            }
            for r in rows..stride {
                assert!(
                    got[t * stride + r].is_nan(),
                    "{} wrote outside rows",
                    k.name
                );
            }
        }
    }
}

#[test]
fn matmul_q8a_tails() {
    let mut rng = Rng::new(4);
    for dtype in QTYPES {
        for rows in 1..=9 {
            for n_tok in (1..=9).chain([17, 64]) {
                let cols = dtype.block_elems() * (1 + rng.below(5));
                let off = rng.below(3);
                check_q8a_shape(&mut rng, dtype, rows, cols, n_tok, Scales::Normal, 0, off);
            }
        }
        for nb in 1..=12 {
            check_q8a_shape(
                &mut rng,
                dtype,
                5,
                nb * dtype.block_elems(),
                3,
                Scales::Normal,
                0,
                1,
            );
        }
    }
}

#[test]
fn matmul_q8a_extremes() {
    let mut rng = Rng::new(5);
    for dtype in QTYPES {
        for s in [Scales::Zero, Scales::Huge, Scales::Subnormal, Scales::Mixed] {
            for style in 0..7 {
                check_q8a_shape(&mut rng, dtype, 6, fit(dtype, 160), 11, s, style, 1);
            }
        }
    }
}

#[test]
fn matmul_q8a_random_shapes() {
    let mut rng = Rng::new(6);
    for _ in 0..40 {
        let dtype = QTYPES[rng.below(QTYPES.len())];
        let rows = 1 + rng.below(40);
        let cols = fit(dtype, 32 * (1 + rng.below(20)));
        let n_tok = 1 + rng.below(20);
        let off = rng.below(4);
        check_q8a_shape(&mut rng, dtype, rows, cols, n_tok, Scales::Normal, 0, off);
    }
}

#[test]
fn matmul_q8a_large_shapes() {
    // Row chunks of the prefill paths (more than 64 rows) and rows wider than 4096 columns.
    let mut rng = Rng::new(13);
    for dtype in QTYPES {
        check_q8a_shape(&mut rng, dtype, 150, 256, 6, Scales::Normal, 0, 1);
        check_q8a_shape(
            &mut rng,
            dtype,
            131,
            fit(dtype, 352),
            23,
            Scales::Normal,
            0,
            3,
        );
        // Rows of whole 16-block groups plus every tail (quads, a pair, a single block), with
        // every token-tile size.
        for (cols, n_tok) in [
            (512, 8),
            (544, 13),
            (576, 23),
            (608, 3),
            (640, 2),
            (1536, 17),
        ] {
            check_q8a_shape(
                &mut rng,
                dtype,
                7,
                fit(dtype, cols),
                n_tok,
                Scales::Normal,
                0,
                1,
            );
        }
        for s in [Scales::Zero, Scales::Huge, Scales::Subnormal, Scales::Mixed] {
            for style in 0..7 {
                check_q8a_shape(&mut rng, dtype, 3, fit(dtype, 544), 9, s, style, 2);
            }
        }
        check_q8a_shape(
            &mut rng,
            dtype,
            9,
            fit(dtype, 4096 + 160),
            5,
            Scales::Normal,
            0,
            0,
        );
        check_q8a_shape(&mut rng, dtype, 5, 4096, 2, Scales::Normal, 0, 0);
    }
}

#[test]
fn matmul_q8a_row_subranges_and_zero_sizes() {
    let mut rng = Rng::new(7);
    for dtype in QTYPES {
        let (rows, cols, n_tok) = (13, fit(dtype, 64), 3);
        let nb = cols / 32;
        let wb = weights(&mut rng, dtype, rows, cols, Scales::Normal);
        let w = QMatrix::new(dtype, rows, cols, &wb).unwrap();
        let mut xq = vec![BlockQ8A::default(); n_tok * nb];
        scalar().quantize_act(&acts(&mut rng, n_tok * cols, 0), &mut xq);
        let mut full = vec![0f32; n_tok * rows];
        scalar().matmul_q8a(&w, &xq, n_tok, &mut full, rows, 0..rows);
        for k in available() {
            for range in [0..0, 0..1, 3..11, 12..13, 5..13] {
                let mut got = vec![f32::NAN; n_tok * rows];
                k.matmul_q8a(&w, &xq, n_tok, &mut got, rows, range.clone());
                for t in 0..n_tok {
                    for r in 0..rows {
                        let g = got[t * rows + r];
                        if range.contains(&r) {
                            let mag = q8a_magnitude(&w, r, &xq[t * nb..(t + 1) * nb]);
                            assert!(
                                close(g, full[t * rows + r], mag),
                                "{} {dtype} {range:?}",
                                k.name
                            );
                        } else {
                            assert!(g.is_nan(), "{} {dtype} {range:?} wrote row {r}", k.name);
                        }
                    }
                }
            }
            // No tokens, no rows, empty matrix: nothing written, no panic.
            let mut none: Vec<f32> = Vec::new();
            k.matmul_q8a(&w, &xq, 0, &mut none, rows, 0..rows);
            let empty = QMatrix::new(dtype, 0, cols, &[]).unwrap();
            k.matmul_q8a(&empty, &xq, 2, &mut none, 0, 0..0);
        }
    }
}

fn check_f32_shape(
    rng: &mut Rng,
    dtype: DType,
    rows: usize,
    cols: usize,
    n_tok: usize,
    s: Scales,
    off: usize,
) {
    let wb = at_offset(&weights(rng, dtype, rows, cols, s), off);
    let w = QMatrix::new(dtype, rows, cols, &wb[off..]).unwrap();
    let x = acts(rng, n_tok * cols + 1, 0);
    let x = &x[1..];
    let stride = rows + 1;
    let mut want = vec![f32::NAN; n_tok * stride];
    scalar().matmul_f32(&w, x, n_tok, &mut want, stride, 0..rows);
    for k in available() {
        let mut got = vec![f32::NAN; n_tok * stride];
        k.matmul_f32(&w, x, n_tok, &mut got, stride, 0..rows);
        for t in 0..n_tok {
            for r in 0..rows {
                let (g, e) = (got[t * stride + r], want[t * stride + r]);
                let mag = f32_magnitude(&w, r, &x[t * cols..(t + 1) * cols]);
                assert!(
                    close(g, e, mag),
                    "{} f32 x {dtype} rows={rows} cols={cols} n_tok={n_tok} {s:?}: out[{t}][{r}] = {g}, want {e}",
                    k.name
                );
            }
            assert!(
                got[t * stride + rows].is_nan(),
                "{} wrote outside rows",
                k.name
            );
        }
    }
}

#[test]
fn matmul_f32_all_dtypes() {
    let mut rng = Rng::new(8);
    for dtype in DType::ALL {
        let unit = dtype.block_elems();
        for rows in 1..=9 {
            for n_tok in [1, 2, 3, 4, 5, 9, 17] {
                let cols = if unit == 1 {
                    1 + rng.below(80)
                } else {
                    unit * (1 + rng.below(4))
                };
                let off = rng.below(4);
                check_f32_shape(&mut rng, dtype, rows, cols, n_tok, Scales::Normal, off);
            }
        }
        for s in [Scales::Zero, Scales::Huge, Scales::Subnormal, Scales::Mixed] {
            check_f32_shape(&mut rng, dtype, 5, fit(dtype, 64), 3, s, 1);
        }
    }
}

#[test]
fn dequant_row_bit_identical() {
    let mut rng = Rng::new(10);
    for k in available() {
        for dtype in DType::ALL {
            for s in [
                Scales::Normal,
                Scales::Zero,
                Scales::Huge,
                Scales::Subnormal,
                Scales::Mixed,
            ] {
                for cols in [32, 64, 96, 160, 32 * 17] {
                    let cols = fit(dtype, cols);
                    let wb = at_offset(&weights(&mut rng, dtype, 3, cols, s), 1);
                    let w = QMatrix::new(dtype, 3, cols, &wb[1..]).unwrap();
                    for row in 0..3 {
                        let mut want = vec![0f32; cols];
                        let mut got = vec![f32::NAN; cols];
                        scalar().dequant_row(&w, row, &mut want);
                        k.dequant_row(&w, row, &mut got);
                        let (wb, gb): (Vec<u32>, Vec<u32>) = (
                            want.iter().map(|v| v.to_bits()).collect(),
                            got.iter().map(|v| v.to_bits()).collect(),
                        );
                        assert_eq!(gb, wb, "{} {dtype} {s:?} cols={cols}", k.name);
                    }
                    // All rows in one call: the same bits.
                    let mut all = vec![f32::NAN; 3 * cols];
                    k.dequant_rows(&w, &mut all);
                    for row in 0..3 {
                        let mut want = vec![0f32; cols];
                        scalar().dequant_row(&w, row, &mut want);
                        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                        assert_eq!(
                            bits(&all[row * cols..(row + 1) * cols]),
                            bits(&want),
                            "{} {dtype} {s:?} cols={cols} all rows",
                            k.name
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn parallel_matmuls_equal_serial() {
    let mut rng = Rng::new(11);
    for n_threads in [1, 2, 3] {
        let pool = ThreadPool::new(n_threads);
        for k in available() {
            for dtype in DType::ALL {
                for (rows, n_tok) in [(1, 1), (7, 2), (100, 1), (257, 5)] {
                    let cols = fit(dtype, 96);
                    let wb = weights(&mut rng, dtype, rows, cols, Scales::Normal);
                    let w = QMatrix::new(dtype, rows, cols, &wb).unwrap();
                    let x = acts(&mut rng, n_tok * cols, 0);
                    let mut a = vec![0f32; n_tok * rows];
                    let mut b = vec![1f32; n_tok * rows];
                    k.matmul_f32(&w, &x, n_tok, &mut a, rows, 0..rows);
                    k.matmul_f32_par(&pool, &w, &x, n_tok, &mut b, rows);
                    assert_eq!(a, b, "{} f32 x {dtype} threads={n_threads}", k.name);
                    if dtype.is_quantized() {
                        let mut xq = vec![BlockQ8A::default(); n_tok * cols / 32];
                        k.quantize_act(&x, &mut xq);
                        k.matmul_q8a(&w, &xq, n_tok, &mut a, rows, 0..rows);
                        k.matmul_q8a_par(&pool, &w, &xq, n_tok, &mut b, rows);
                        assert_eq!(a, b, "{} q8a x {dtype} threads={n_threads}", k.name);
                    }
                }
            }
        }
    }
}

#[test]
fn glu_bit_identical() {
    let mut rng = Rng::new(21);
    let special = [
        0.0f32,
        -0.0,
        1.0,
        -1.0,
        86.9,
        -86.9,
        87.0,
        -87.0,
        88.5,
        -88.5,
        1e30,
        -1e30,
        f32::MAX,
        f32::MIN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MIN_POSITIVE,
        1e-40,
    ];
    for k in available() {
        for act in [Glu::Silu, Glu::GeluTanh] {
            for n in (0..=40).chain([63, 64, 65, 200, 1537]) {
                // Misaligned by one element; values across the whole range of exp's input.
                let mut g0: Vec<f32> = (0..n + 1).map(|_| rng.f() * 30.0).collect();
                for (i, v) in special.iter().enumerate().take(n + 1) {
                    g0[(i * 7) % (n + 1)] = *v;
                }
                let up: Vec<f32> = (0..n + 1).map(|_| rng.f() * 4.0).collect();
                let mut want = g0[1..].to_vec();
                let mut got = g0[1..].to_vec();
                scalar().glu(act, &mut want, &up[1..]);
                k.glu(act, &mut got, &up[1..]);
                for i in 0..n {
                    assert!(
                        got[i].to_bits() == want[i].to_bits()
                            || (got[i].is_nan() && want[i].is_nan()),
                        "{} {act:?} n={n} i={i} x={}: {} vs {}",
                        k.name,
                        g0[1 + i],
                        got[i],
                        want[i]
                    );
                }
            }
        }
    }
}

#[test]
#[should_panic(expected = "glu: lengths differ")]
fn glu_checks_lengths() {
    scalar().glu(Glu::Silu, &mut [0.0; 3], &[0.0; 2]);
}

/// Each output depends only on its row and its token: a batch gives bit-for-bit the results
/// of its tokens one at a time, and row ranges split at the thread split's alignment those
/// of the whole (so scoring or prefilling in any chunks, with any thread count, gives the
/// same logits).
#[test]
fn matmul_results_do_not_depend_on_batch_or_rows() {
    let mut rng = Rng::new(31);
    for k in available() {
        for dtype in DType::ALL {
            for (rows, cols, n_tok) in [
                (37, 96, 13),
                (19, 512, 9),
                (17, 576, 23),
                (5, 544, 3),
                (6, 608, 4),
                (21, 640, 17),
                (3, 1536, 10),
                (9, 4096 + 160, 5),
            ] {
                let cols = fit(dtype, cols);
                let wb = weights(&mut rng, dtype, rows, cols, Scales::Normal);
                let w = QMatrix::new(dtype, rows, cols, &wb).unwrap();
                let x = acts(&mut rng, n_tok * cols, 0);
                let nb = cols / 32;
                let mut xq = vec![BlockQ8A::default(); n_tok * nb];
                k.quantize_act(&x, &mut xq);
                let mut whole = vec![0f32; n_tok * rows];
                let mut one = vec![1f32; rows];
                let mut part = vec![2f32; n_tok * rows];
                let mut ctx = format!("{} {dtype} {rows}x{cols}", k.name);
                if dtype.is_quantized() {
                    k.matmul_q8a(&w, &xq, n_tok, &mut whole, rows, 0..rows);
                } else {
                    k.matmul_f32(&w, &x, n_tok, &mut whole, rows, 0..rows);
                }
                for t in 0..n_tok {
                    if dtype.is_quantized() {
                        k.matmul_q8a(&w, &xq[t * nb..(t + 1) * nb], 1, &mut one, rows, 0..rows);
                    } else {
                        k.matmul_f32(&w, &x[t * cols..(t + 1) * cols], 1, &mut one, rows, 0..rows);
                    }
                    ctx = format!("{} {dtype} {rows}x{cols} token {t}", k.name);
                    assert_eq!(
                        one.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        whole[t * rows..(t + 1) * rows]
                            .iter()
                            .map(|v| v.to_bits())
                            .collect::<Vec<_>>(),
                        "{ctx}: one token vs batch"
                    );
                }
                // Each row of token 0 alone (a one-row tile) gives its bits in a whole tile.
                for r in 0..rows {
                    if dtype.is_quantized() {
                        k.matmul_q8a(&w, &xq[..nb], 1, &mut one, rows, r..r + 1);
                    } else {
                        k.matmul_f32(&w, &x[..cols], 1, &mut one, rows, r..r + 1);
                    }
                    let ctx = format!("{} {dtype} {rows}x{cols} row {r}", k.name);
                    assert_eq!(one[r].to_bits(), whole[r].to_bits(), "{ctx}: row alone");
                }
                // Tokens 1.. as a batch of their own, rows in two ranges split where
                // `split_rows` splits (a multiple of its row alignment).
                let m = (rows / 2) / ROW_ALIGN * ROW_ALIGN;
                for r in [0..m, m..rows] {
                    if dtype.is_quantized() {
                        k.matmul_q8a(&w, &xq[nb..], n_tok - 1, &mut part, rows, r);
                    } else {
                        k.matmul_f32(&w, &x[cols..], n_tok - 1, &mut part, rows, r);
                    }
                }
                assert_eq!(
                    part[..(n_tok - 1) * rows]
                        .iter()
                        .map(|v| v.to_bits())
                        .collect::<Vec<_>>(),
                    whole[rows..]
                        .iter()
                        .map(|v| v.to_bits())
                        .collect::<Vec<_>>(),
                    "{ctx}: sub-batch in row ranges"
                );
            }
        }
    }
}

#[test]
fn wsum_bit_identical_and_independent_of_neighbours() {
    let mut rng = Rng::new(41);
    for k in available() {
        for n in [1, 15, 16, 17, 32, 64, 80] {
            for len in [0, 1, 3, 4, 5, 17, 40] {
                for m in 1..=6 {
                    let stride = len + rng.below(3);
                    // One element of offset: no alignment assumed.
                    let p: Vec<f32> = (0..m * stride + 1).map(|_| rng.f().abs()).collect();
                    let v: Vec<f32> = (0..len * n + 1).map(|_| rng.f() * 3.0).collect();
                    let (p, v) = (&p[1..], &v[1..]);
                    let mut want = vec![f32::NAN; m * n];
                    let mut got = vec![f32::NAN; m * n];
                    scalar().wsum(p, stride, v, &mut want, n);
                    k.wsum(p, stride, v, &mut got, n);
                    let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    let ctx = format!("{} n={n} len={len} m={m}", k.name);
                    assert_eq!(bits(&got), bits(&want), "{ctx}");
                    for q in 0..m {
                        // Alone, row q gets the same bits.
                        let mut one = vec![f32::NAN; n];
                        k.wsum(&p[q * stride..], stride, v, &mut one, n);
                        assert_eq!(bits(&one), bits(&got[q * n..(q + 1) * n]), "{ctx} q={q}");
                        for i in 0..n {
                            let exact: f64 = (0..len)
                                .map(|j| f64::from(p[q * stride + j]) * f64::from(v[j * n + i]))
                                .sum();
                            let mag: f64 = (0..len)
                                .map(|j| {
                                    (f64::from(p[q * stride + j]) * f64::from(v[j * n + i])).abs()
                                })
                                .sum();
                            assert!(
                                close(got[q * n + i], exact as f32, mag),
                                "{ctx} q={q} i={i}"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn log_sum_exp_bit_identical_and_exact() {
    let mut rng = Rng::new(43);
    for k in available() {
        for len in [0, 1, 7, 8, 9, 63, 64, 65, 1000] {
            // One element of offset: no alignment assumed.
            let mut row: Vec<f32> = (0..len + 1).map(|_| rng.f() * 30.0).collect();
            if len > 3 {
                row[2] = f32::NEG_INFINITY;
            }
            let row = &row[1..];
            let (got, want) = (k.log_sum_exp(row), scalar().log_sum_exp(row));
            let ctx = format!("{} len={len}", k.name);
            assert_eq!(got.to_bits(), want.to_bits(), "{ctx}");
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exact = f64::from(max)
                + row
                    .iter()
                    .map(|&x| (f64::from(x) - f64::from(max)).exp())
                    .sum::<f64>()
                    .ln();
            if len == 0 {
                assert_eq!(got, f64::NEG_INFINITY, "{ctx}");
            } else {
                let tol = 1e-5 * exact.abs().max(1.0);
                assert!((got - exact).abs() <= tol, "{ctx}: {got} vs {exact}");
            }
        }
    }
}

/// Attention's softmax gives the scalar reference's bits on every path, at lengths 0, 1,
/// odd, tails and misaligned, with a masked (-inf) score and scores far from zero; its rows
/// sum to one and match softmax in f64.
#[test]
fn softmax_bit_identical_and_exact() {
    let mut rng = Rng::new(47);
    for k in available() {
        for len in [0, 1, 7, 8, 9, 63, 64, 65, 1000] {
            for (scale, offset) in [(0.125f32, 0.0f32), (1.0, 1000.0), (0.3, -1000.0)] {
                // One element of offset: no alignment assumed.
                let mut row: Vec<f32> = (0..len + 1).map(|_| rng.f() * 30.0 + offset).collect();
                if len > 3 {
                    row[2] = f32::NEG_INFINITY;
                }
                let input = row[1..].to_vec();
                let (mut got, mut want) = (row.clone(), row);
                k.softmax(&mut got[1..], scale);
                scalar().softmax(&mut want[1..], scale);
                let ctx = format!("{} len={len} scale={scale} offset={offset}", k.name);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "{ctx}");
                let scaled: Vec<f64> = input.iter().map(|&x| f64::from(x * scale)).collect();
                let max = scaled.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = scaled.iter().map(|x| (x - max).exp()).sum();
                for (&g, x) in got[1..].iter().zip(&scaled) {
                    let exact = (x - max).exp() / sum;
                    assert!((f64::from(g) - exact).abs() <= 1e-6, "{ctx}: {g} vs {exact}");
                }
                if len > 0 {
                    let total: f64 = got[1..].iter().map(|&g| f64::from(g)).sum();
                    assert!((total - 1.0).abs() <= 1e-5, "{ctx}: sums to {total}");
                }
            }
        }
    }
}

#[test]
#[should_panic(expected = "wsum: p has")]
fn wsum_checks_weights() {
    scalar().wsum(&[1.0; 5], 4, &[0.0; 8], &mut [0.0; 4], 2);
}

/// Issue 13 row 9: a NaN or infinity among a block's activations gives the block `d = s =
/// NaN`, `qs = 0` on every path (bit for bit), so it reaches every output of a matmul instead
/// of quantizing to zeros. Each position of the block, each non-finite value, any neighbours.
#[test]
fn quantize_act_non_finite_propagates_on_every_path() {
    let mut rng = Rng::new(13);
    for bad in [f32::NAN, -f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        for pos in 0..32 {
            for style in [0, 1, 3, 4] {
                // Three blocks; only the middle one holds the bad value.
                let mut x = acts(&mut rng, 96, style);
                x[32 + pos] = bad;
                let mut want = vec![BlockQ8A::default(); 3];
                scalar().quantize_act(&x, &mut want);
                assert!(want[1].d.is_nan() && want[1].s.is_nan(), "{bad} at {pos}");
                assert_eq!(want[1].qs, [0; 32]);
                assert!(!want[0].d.is_nan() && !want[2].d.is_nan());
                for k in available() {
                    let mut got = vec![BlockQ8A::default(); 3];
                    k.quantize_act(&x, &mut got);
                    for (g, w) in got.iter().zip(&want) {
                        assert_eq!(g.d.to_bits(), w.d.to_bits(), "{} {bad} at {pos}", k.name);
                        assert_eq!(g.s.to_bits(), w.s.to_bits(), "{} {bad} at {pos}", k.name);
                        assert_eq!(g.qs, w.qs, "{} {bad} at {pos}", k.name);
                    }
                }
            }
        }
    }
    // Every integer matmul output that reads the bad block is NaN, on every path and dtype.
    for dtype in QTYPES {
        // A whole super-block for the K-quants, three blocks for the others.
        let cols = dtype.block_elems().max(96);
        let rows = 3;
        let wb = weights(&mut rng, dtype, rows, cols, Scales::Normal);
        let w = QMatrix::new(dtype, rows, cols, &wb).unwrap();
        let mut x = acts(&mut rng, cols, 0);
        x[40] = f32::NAN;
        let mut xq = vec![BlockQ8A::default(); cols / 32];
        scalar().quantize_act(&x, &mut xq);
        for k in available() {
            let mut out = vec![0f32; rows];
            k.matmul_q8a(&w, &xq, 1, &mut out, rows, 0..rows);
            assert!(out.iter().all(|v| v.is_nan()), "{} {dtype}: {out:?}", k.name);
        }
    }
}
