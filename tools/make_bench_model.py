#!/usr/bin/env python3
"""A random-weight Llama-style model whose widths are multiples of 256, for speed tests.

SmolLM2 (576) and Gemma 3 270M (640) are not multiples of 256, so llama-quantize's Q4_K_M
of them is mostly Q5_0/Q8_0 fallbacks. This model (d_model 1024, FFN 2816, 8 layers, 16
heads over 4 KV heads, the Llama 2 SentencePiece vocabulary of 32,000 tokens, untied output:
about 126M parameters) quantizes to real Q4_K and Q6_K tensors, so `llama-quantize
bench-1024.f32.gguf bench-1024.Q4_K_M.gguf Q4_K_M` gives a file that measures the K-quant
kernels. Weights are seeded (numpy RandomState) and F32; only speed is measured on it.

usage: make_bench_model.py LLAMA_CPP_DIR OUT.gguf
"""
import os
import sys

import numpy as np

D_MODEL, N_LAYER, N_HEAD, N_KV_HEAD, D_FF = 1024, 8, 16, 4, 2816


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    llama_cpp, path = sys.argv[1], sys.argv[2]
    sys.path.insert(0, os.path.join(llama_cpp, "gguf-py"))
    import gguf

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from make_tiny_models import copy_tokenizer

    rs = np.random.RandomState(1024)
    reader = gguf.GGUFReader(os.path.join(llama_cpp, "models", "ggml-vocab-llama-spm.gguf"))
    n_vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    hd = D_MODEL // N_HEAD
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("bench-1024")
    w.add_block_count(N_LAYER)
    w.add_context_length(4096)
    w.add_embedding_length(D_MODEL)
    w.add_feed_forward_length(D_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_KV_HEAD)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    copy_tokenizer(reader, w, gguf)

    def mat(rows, cols):
        return (rs.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    def norm(n):
        return (1.0 + 0.1 * rs.standard_normal(n)).astype(np.float32)

    w.add_tensor("token_embd.weight", (0.3 * rs.standard_normal((n_vocab, D_MODEL))).astype(np.float32))
    for l in range(N_LAYER):
        b = f"blk.{l}."
        w.add_tensor(b + "attn_norm.weight", norm(D_MODEL))
        w.add_tensor(b + "attn_q.weight", mat(D_MODEL, D_MODEL))
        w.add_tensor(b + "attn_k.weight", mat(N_KV_HEAD * hd, D_MODEL))
        w.add_tensor(b + "attn_v.weight", mat(N_KV_HEAD * hd, D_MODEL))
        w.add_tensor(b + "attn_output.weight", mat(D_MODEL, D_MODEL))
        w.add_tensor(b + "ffn_norm.weight", norm(D_MODEL))
        w.add_tensor(b + "ffn_gate.weight", mat(D_FF, D_MODEL))
        w.add_tensor(b + "ffn_up.weight", mat(D_FF, D_MODEL))
        w.add_tensor(b + "ffn_down.weight", mat(D_MODEL, D_FF))
    w.add_tensor("output_norm.weight", norm(D_MODEL))
    w.add_tensor("output.weight", mat(n_vocab, D_MODEL))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(path)


if __name__ == "__main__":
    main()
