//! x86-64 paths: AVX2+FMA+F16C and AVX-VNNI ([`avx2`]), AVX-512 F/BW/VL ([`avx512`]), AVX-512 VNNI
//! ([`avx512vnni`]). Each table is handed out only after its features are detected here.

use super::Kernels;

mod avx2;
mod avx2_q5_k;
mod avx512;
mod avx512vnni;

fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

fn has_avx512() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
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
        if has_avx512() && is_x86_feature_detected!("avx512vnni") {
            v.push(&avx2::KERNELS_VNNI_EVEX);
        }
    }
    if has_avx512() {
        v.push(&avx512::KERNELS);
        if is_x86_feature_detected!("avx512vnni") {
            v.push(&avx512vnni::KERNELS);
        }
    }
    v
}

/// `a` followed by `b`, for a per-dtype table assembled from the files that hold each layout.
pub(super) const fn join<T: Copy, const A: usize, const B: usize, const N: usize>(
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
    /// The `avxvnni` kernels cannot run on a CPU without AVX-VNNI; with AVX-512 VNNI the
    /// tests still run their arithmetic (EVEX encoding) against the scalar reference.
    #[test]
    fn avxvnni_arithmetic_is_under_test_where_possible() {
        let names: Vec<_> = super::super::available().iter().map(|k| k.name).collect();
        if super::has_avx512() && is_x86_feature_detected!("avx512vnni") {
            assert!(names.contains(&"avxvnni-as-evex"), "{names:?}");
        }
        if is_x86_feature_detected!("avxvnni") && super::has_avx2() {
            assert!(names.contains(&"avxvnni"), "{names:?}");
        }
    }
}
