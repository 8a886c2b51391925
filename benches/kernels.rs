//! Kernel benchmarks: GB/s of weights streamed (decode, one token) and GOP/s (prefill,
//! 64 tokens), for every path this CPU supports. `cargo bench --bench kernels [filter]`.
//!
//! Shapes are SmolLM2-135M's: 1536 x 576 (ffn up/gate), 576 x 1536 (ffn down) and the
//! 49152 x 576 output head, which does not fit in cache and so shows memory bandwidth.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pipit::testing::kernels::{self, BlockQ8A, DType, QMatrix};
use pipit::testing::threadpool::ThreadPool;

/// Deterministic pseudo-random bytes with finite, modest f16 scales.
fn weights(dtype: DType, rows: usize, cols: usize) -> Vec<u8> {
    let n = rows * kernels::row_bytes(dtype, cols).unwrap();
    let mut s = 0x1234_5678_9abc_def1u64;
    let mut v: Vec<u8> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s as u8
        })
        .collect();
    let scale = half::f16::from_f32(0.01).to_le_bytes();
    match dtype {
        DType::F32 => v
            .chunks_exact_mut(4)
            .for_each(|c| c.copy_from_slice(&0.5f32.to_le_bytes())),
        DType::F16 => v
            .chunks_exact_mut(2)
            .for_each(|c| c.copy_from_slice(&scale)),
        DType::Q4_1 | DType::Q5_1 | DType::Q4_K | DType::Q5_K => {
            v.chunks_exact_mut(dtype.block_bytes()).for_each(|b| {
                b[..2].copy_from_slice(&scale);
                b[2..4].copy_from_slice(&scale);
            })
        }
        DType::Q6_K => v
            .chunks_exact_mut(dtype.block_bytes())
            .for_each(|b| b[208..].copy_from_slice(&scale)),
        _ => v
            .chunks_exact_mut(dtype.block_bytes())
            .for_each(|b| b[..2].copy_from_slice(&scale)),
    }
    v
}

fn acts(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1000))
        .sample_size(10)
}

const QTYPES: [DType; 3] = [DType::Q4_0, DType::Q4_1, DType::Q8_0];

fn decode(c: &mut Criterion) {
    for (rows, cols) in [(1536, 576), (576, 1536), (49152, 576)] {
        let mut g = c.benchmark_group(format!("decode_{rows}x{cols}"));
        for dtype in QTYPES {
            let wb = weights(dtype, rows, cols);
            let w = QMatrix::new(dtype, rows, cols, &wb).unwrap();
            let x = acts(cols);
            let mut xq = vec![BlockQ8A::default(); cols / 32];
            let mut out = vec![0f32; rows];
            g.throughput(Throughput::Bytes(wb.len() as u64));
            for k in kernels::available() {
                k.quantize_act(&x, &mut xq);
                g.bench_function(BenchmarkId::new(dtype.name(), k.name), |b| {
                    b.iter(|| k.matmul_q8a(&w, black_box(&xq), 1, &mut out, rows, 0..rows))
                });
            }
        }
        for dtype in [DType::F16, DType::F32] {
            let wb = weights(dtype, rows, cols);
            let w = QMatrix::new(dtype, rows, cols, &wb).unwrap();
            let x = acts(cols);
            let mut out = vec![0f32; rows];
            g.throughput(Throughput::Bytes(wb.len() as u64));
            for k in kernels::available() {
                g.bench_function(BenchmarkId::new(dtype.name(), k.name), |b| {
                    b.iter(|| k.matmul_f32(&w, black_box(&x), 1, &mut out, rows, 0..rows))
                });
            }
        }
        g.finish();
    }
}

/// The 5-bit and K-quant layouts at Gemma 3 270M's shapes (width 640, where llama-quantize
/// falls back to Q5_0/Q5_1) and at a width of 1024 (real K-quant super-blocks): one token,
/// and a 64-token batch.
fn kquants(c: &mut Criterion) {
    for (dtypes, rows, cols) in [
        ([DType::Q5_0, DType::Q5_1].as_slice(), 2048, 640),
        (&[DType::Q4_K, DType::Q5_K, DType::Q6_K], 1024, 1024),
        (&[DType::Q4_K, DType::Q5_K, DType::Q6_K], 4096, 1024),
    ] {
        for n_tok in [1, 64] {
            let mut g = c.benchmark_group(format!("kquant_{rows}x{cols}x{n_tok}"));
            let x = acts(cols * n_tok);
            for &dtype in dtypes {
                let wb = weights(dtype, rows, cols);
                let w = QMatrix::new(dtype, rows, cols, &wb).unwrap();
                let mut xq = vec![BlockQ8A::default(); n_tok * cols / 32];
                let mut out = vec![0f32; rows * n_tok];
                g.throughput(Throughput::Bytes(wb.len() as u64));
                let k = kernels::best();
                k.quantize_act(&x, &mut xq);
                g.bench_function(BenchmarkId::new(dtype.name(), k.name), |b| {
                    b.iter(|| k.matmul_q8a(&w, black_box(&xq), n_tok, &mut out, rows, 0..rows))
                });
            }
            g.finish();
        }
    }
}

fn decode_threads(c: &mut Criterion) {
    let (rows, cols) = (49152, 576);
    let k = kernels::best();
    let mut g = c.benchmark_group(format!("decode_par_{rows}x{cols}_{}", k.name));
    for threads in [1, 2] {
        let pool = ThreadPool::new(threads);
        for dtype in QTYPES {
            let wb = weights(dtype, rows, cols);
            let w = QMatrix::new(dtype, rows, cols, &wb).unwrap();
            let mut xq = vec![BlockQ8A::default(); cols / 32];
            k.quantize_act(&acts(cols), &mut xq);
            let mut out = vec![0f32; rows];
            g.throughput(Throughput::Bytes(wb.len() as u64));
            g.bench_function(BenchmarkId::new(dtype.name(), format!("t{threads}")), |b| {
                b.iter(|| k.matmul_q8a_par(&pool, &w, black_box(&xq), 1, &mut out, rows))
            });
        }
    }
    g.finish();
}

fn prefill(c: &mut Criterion) {
    let (rows, cols, n_tok) = (1536, 576, 64);
    let mut g = c.benchmark_group(format!("prefill_{rows}x{cols}x{n_tok}"));
    g.throughput(Throughput::Elements((2 * rows * cols * n_tok) as u64));
    let x = acts(cols * n_tok);
    for dtype in QTYPES {
        let wb = weights(dtype, rows, cols);
        let w = QMatrix::new(dtype, rows, cols, &wb).unwrap();
        let mut xq = vec![BlockQ8A::default(); n_tok * cols / 32];
        let mut out = vec![0f32; rows * n_tok];
        for k in kernels::available() {
            k.quantize_act(&x, &mut xq);
            g.bench_function(BenchmarkId::new(dtype.name(), k.name), |b| {
                b.iter(|| k.matmul_q8a(&w, black_box(&xq), n_tok, &mut out, rows, 0..rows))
            });
        }
    }
    for dtype in [DType::F16] {
        let wb = weights(dtype, rows, cols);
        let w = QMatrix::new(dtype, rows, cols, &wb).unwrap();
        let mut out = vec![0f32; rows * n_tok];
        for k in kernels::available() {
            g.bench_function(BenchmarkId::new(dtype.name(), k.name), |b| {
                b.iter(|| k.matmul_f32(&w, black_box(&x), n_tok, &mut out, rows, 0..rows))
            });
        }
    }
    g.finish();
}

fn small_ops(c: &mut Criterion) {
    let n = 1536;
    let x = acts(n);
    let mut g = c.benchmark_group(format!("ops_{n}"));
    g.throughput(Throughput::Bytes((n * 4) as u64));
    let mut xq = vec![BlockQ8A::default(); n / 32];
    for k in kernels::available() {
        g.bench_function(BenchmarkId::new("quantize_act", k.name), |b| {
            b.iter(|| k.quantize_act(black_box(&x), &mut xq))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = decode, kquants, decode_threads, prefill, small_ops
}
criterion_main!(benches);
