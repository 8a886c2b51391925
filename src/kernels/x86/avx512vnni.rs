//! AVX-512 VNNI: the AVX-512 kernels with `vpdpbusd` as the integer product (see
//! `avx512.rs` for the layout and the offset correction).

use super::super::Kernels;
use super::avx512::{isums, matmul_q8a};
use super::{isums_entries, q8a_entries, Q4_0, Q4_1, Q8_0};

entries! {
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c";
    q8a matmul_q8a_q8_0 = matmul_q8a::<Q8_0, true>;
    q8a matmul_q8a_q4_0 = matmul_q8a::<Q4_0, true>;
    q8a matmul_q8a_q4_1 = matmul_q8a::<Q4_1, true>;
    isums isums_q8_0 = isums::<Q8_0, true>;
    isums isums_q4_0 = isums::<Q4_0, true>;
    isums isums_q4_1 = isums::<Q4_1, true>;
}

/// The AVX-512 VNNI table: VNNI integer products, the rest from the AVX-512 table.
pub(super) static KERNELS: Kernels = Kernels {
    name: "avx512vnni",
    matmul_q8a: q8a_entries([matmul_q8a_q8_0, matmul_q8a_q4_0, matmul_q8a_q4_1]),
    isums: isums_entries([isums_q8_0, isums_q4_0, isums_q4_1]),
    ..super::avx512::KERNELS
};
