#!/usr/bin/env python3
"""Writes tools/tests/data/dequant_vectors.bin: random ggml blocks and their values as
dequantized by the `gguf` package (an independent reference), for the Rust dequantizer tests.

Record layout (little-endian), repeated to the end of the file:
  ggml_type: u32, n_bytes: u32, n_elems: u32, bytes[n_bytes], f32[n_elems]
Scale fields are overwritten with finite values so every expected value is finite.
"""
import os
import struct
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants
from gguf.constants import GGML_QUANT_SIZES

# (type, byte offsets of the f16 scales inside one block)
LAYOUTS = [
    (T.Q4_0, [0]),
    (T.Q4_1, [0, 2]),
    (T.Q5_0, [0]),
    (T.Q5_1, [0, 2]),
    (T.Q8_0, [0]),
    (T.Q2_K, [80, 82]),
    (T.Q3_K, [108]),
    (T.Q4_K, [0, 2]),
    (T.Q5_K, [0, 2]),
    (T.Q6_K, [208]),
    (T.BF16, []),
    (T.F16, []),
]


def main() -> None:
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "tests", "data", "dequant_vectors.bin")
    rng = np.random.default_rng(20240611)
    recs = []
    for qtype, f16_offs in LAYOUTS:
        block_elems, block_bytes = GGML_QUANT_SIZES[qtype]
        n_blocks = 3 if block_elems >= 256 else (5 if block_elems == 32 else 64)
        raw = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
        for off in f16_offs:
            scales = rng.uniform(-2.0, 2.0, size=n_blocks).astype(np.float16)
            raw[:, off:off + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
        if qtype == T.BF16:
            vals = rng.normal(size=n_blocks).astype(np.float32)
            raw = (vals.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8).reshape(n_blocks, 2)
        if qtype == T.F16:
            raw = rng.normal(size=n_blocks).astype(np.float16).view(np.uint8).reshape(n_blocks, 2)
        values = quants.dequantize(raw.reshape(-1), qtype).astype(np.float32).reshape(-1)
        assert values.size == n_blocks * block_elems and np.all(np.isfinite(values))
        data = raw.tobytes()
        recs.append(struct.pack("<III", int(qtype), len(data), values.size) + data + values.tobytes())
    with open(out, "wb") as f:
        f.write(b"".join(recs))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
