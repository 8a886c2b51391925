//! x86-64 paths: AVX2+FMA+F16C, AVX-512 (F/BW/VL), AVX-512 VNNI.

use super::Kernels;

/// The x86 tables this CPU supports, slowest first.
pub(crate) fn available() -> Vec<&'static Kernels> {
    Vec::new()
}
