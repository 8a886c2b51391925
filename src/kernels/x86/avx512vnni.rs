//! AVX-512 VNNI: the AVX-512 kernels with `vpdpbusd` as the integer product (see
//! `avx512.rs` for the layout and the offset correction).

use std::ops::Range;

use super::super::{BlockQ8A, Kernels};

super::avx512::entry_points!("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c", true);

/// The AVX-512 VNNI table: VNNI integer products, the rest from the AVX-512 table.
pub(super) static KERNELS: Kernels = Kernels {
    name: "avx512vnni",
    matmul_q8a: super::join(
        [matmul_q8a_q8_0, matmul_q8a_q4_0, matmul_q8a_q4_1],
        super::avx2_q5_k::MATMUL_Q8A,
    ),
    isums: super::join(
        [isums_q8_0, isums_q4_0, isums_q4_1],
        super::avx2_q5_k::ISUMS,
    ),
    ..super::avx512::KERNELS
};
