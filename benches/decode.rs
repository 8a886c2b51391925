//! One decode step (a token through the whole model, logits included) and a 64-token prefill
//! batch, on the real SmolLM2-135M file made by tools/test-models.sh.
//! `cargo bench --bench decode`; `PIPIT_BENCH_MODEL=path` picks another .pipit file.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pipit::model::Model;
use pipit::session::{Session, SessionParams};

fn model() -> Arc<Model> {
    let path = std::env::var("PIPIT_BENCH_MODEL").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/models/SmolLM2-135M-Instruct.pipit"
        )
        .into()
    });
    Arc::new(
        Model::open(&path)
            .unwrap_or_else(|e| panic!("{path}: {e}; run tools/test-models.sh first")),
    )
}

fn bench(c: &mut Criterion) {
    let model = model();
    let n_vocab = model.hparams().n_vocab;
    let tokens: Vec<u32> = (0..64)
        .map(|i| ((i * 7919 + 13) % n_vocab) as u32)
        .collect();
    let mut g = c.benchmark_group("smollm2");
    g.measurement_time(Duration::from_secs(5)).sample_size(20);
    for threads in [1, 2] {
        let params = SessionParams {
            n_ctx: 512,
            n_threads: threads,
            ..SessionParams::default()
        };
        let mut s = Session::new(Arc::clone(&model), params).unwrap();
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("decode_step/{threads}t"), |b| {
            s.reset();
            s.eval(&tokens[..16]).unwrap();
            b.iter(|| {
                if s.n_past() + 1 > 512 {
                    s.reset();
                    s.eval(&tokens[..16]).unwrap();
                }
                s.eval(black_box(&tokens[16..17])).unwrap();
            })
        });
        g.throughput(Throughput::Elements(64));
        g.bench_function(format!("prefill64/{threads}t"), |b| {
            b.iter(|| {
                s.reset();
                s.eval(black_box(&tokens)).unwrap();
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
