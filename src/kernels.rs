//! Dequantize-matmul kernels.
