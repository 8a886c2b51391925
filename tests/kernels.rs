//! Public-API tests of the kernels: path selection, `PIPIT_KERNELS`, shape validation and the
//! parallel matmuls. (Every path against the scalar reference, element by element, is in the
//! library's unit tests, `kernels::tests`, so that `cargo test -p pipit --lib` covers it.)

use pipit::testing::kernels::{self, BlockQ8A, DType, QMatrix};
use pipit::testing::threadpool::ThreadPool;
use pipit::Error;

fn q4_0_weights(rows: usize, cols: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for r in 0..rows {
        for b in 0..cols / 32 {
            v.extend_from_slice(
                &half::f16::from_f32(0.01 * (1 + (r + b) % 5) as f32).to_le_bytes(),
            );
            v.extend((0..16).map(|i| ((i * 7 + r * 3 + b) % 256) as u8));
        }
    }
    v
}

#[test]
fn env_override_selects_or_reports() {
    // The only test in this binary that touches the environment.
    for k in kernels::available() {
        std::env::set_var("PIPIT_KERNELS", k.name);
        assert_eq!(kernels::kernels_from_env().unwrap().name, k.name);
    }
    std::env::set_var("PIPIT_KERNELS", "avx9000");
    let e = kernels::kernels_from_env().unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument(_)) && e.to_string().contains("avx9000"),
        "{e}"
    );
    let names: Vec<_> = kernels::available().iter().map(|k| k.name).collect();
    for n in kernels::PATH_NAMES {
        std::env::set_var("PIPIT_KERNELS", n);
        match kernels::kernels_from_env() {
            Ok(k) => assert!(names.contains(&k.name) && k.name == n),
            Err(e) => {
                assert!(!names.contains(&n));
                assert!(
                    matches!(e, Error::Unsupported(_)) && e.to_string().contains(n),
                    "{e}"
                );
            }
        }
    }
    std::env::set_var("PIPIT_KERNELS", "");
    assert_eq!(
        kernels::kernels_from_env().unwrap().name,
        kernels::best().name
    );
    std::env::remove_var("PIPIT_KERNELS");
    assert_eq!(
        kernels::kernels_from_env().unwrap().name,
        kernels::best().name
    );
}

#[test]
fn detection_lists_scalar_first_and_best_last() {
    let all = kernels::available();
    assert_eq!(all[0].name, "scalar");
    assert_eq!(all.last().unwrap().name, kernels::best().name);
    #[cfg(target_arch = "x86_64")]
    {
        let names: Vec<_> = all.iter().map(|k| k.name).collect();
        assert_eq!(
            names.contains(&"avx2"),
            is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
        );
        assert_eq!(
            names.contains(&"avxvnni"),
            is_x86_feature_detected!("avx2") && is_x86_feature_detected!("avxvnni")
        );
        assert_eq!(
            names.contains(&"avx512vnni"),
            is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512bw")
        );
    }
}

#[test]
fn qmatrix_new_validates() {
    let data = q4_0_weights(3, 64);
    assert!(QMatrix::new(DType::Q4_0, 3, 64, &data).is_ok());
    assert!(matches!(
        QMatrix::new(DType::Q4_0, 3, 65, &data),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        QMatrix::new(DType::Q4_0, 4, 64, &data),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        QMatrix::new(DType::Q4_0, usize::MAX, 64, &data),
        Err(Error::InvalidArgument(_))
    ));
    assert!(QMatrix::new(DType::F16, 2, 3, &[0u8; 12]).is_ok());
}

#[test]
#[should_panic(expected = "out has")]
fn short_output_panics_before_any_unsafe_access() {
    let data = q4_0_weights(4, 32);
    let w = QMatrix::new(DType::Q4_0, 4, 32, &data).unwrap();
    let xq = [BlockQ8A::default(); 2];
    let mut out = [0f32; 7];
    kernels::best().matmul_q8a(&w, &xq, 2, &mut out, 4, 0..4);
}

#[test]
fn parallel_decode_and_prefill_match_single_thread() {
    let (rows, cols) = (300, 128);
    let data = q4_0_weights(rows, cols);
    let w = QMatrix::new(DType::Q4_0, rows, cols, &data).unwrap();
    let pool = ThreadPool::new(2);
    for n_tok in [1, 7] {
        let x: Vec<f32> = (0..n_tok * cols)
            .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
            .collect();
        for k in kernels::available() {
            let mut xq = vec![BlockQ8A::default(); n_tok * cols / 32];
            k.quantize_act(&x, &mut xq);
            let mut a = vec![0f32; n_tok * rows];
            let mut b = vec![0f32; n_tok * rows];
            k.matmul_q8a(&w, &xq, n_tok, &mut a, rows, 0..rows);
            k.matmul_q8a_par(&pool, &w, &xq, n_tok, &mut b, rows);
            assert_eq!(a, b, "{}", k.name);
            k.matmul_f32(&w, &x, n_tok, &mut a, rows, 0..rows);
            k.matmul_f32_par(&pool, &w, &x, n_tok, &mut b, rows);
            assert_eq!(a, b, "{}", k.name);
        }
    }
}
