#!/usr/bin/env python3
"""Tiny random-weight models, one per architecture family, as llama.cpp GGUF files.

Each model is seeded (numpy RandomState, whose streams are stable across numpy versions),
F32, 2 layers of width 128, with the real vocabulary copied from the matching vocab-only
GGUF of llama.cpp's source tree (models/ggml-vocab-*.gguf) and weights scaled so attention
and logits are peaked. Every feature of a family is exercised inside a 128-token context:
Llama 3 RoPE factors that differ per pair (LLAMA3_SCALING), Phi-3 LongRoPE with an original context of 64,
Gemma 2's 32-token window on its sliding layer and soft-caps that bite, Gemma 3's 32-token
window on layer 0 (a sliding-window period of 2, so layer 1 is global) with its own RoPE
base, Qwen 3's head_dim that is not d_model / n_head. The files are written with the `gguf` package of the same
tree, so every key and tensor name is llama.cpp's.

usage: make_tiny_models.py LLAMA_CPP_DIR OUT_DIR [FAMILY ...]

Writes OUT_DIR/<family>.gguf and prints one line per file with its sha256 (the same seed
gives the same bytes: tests check the hash).
"""
import hashlib
import os
import sys

import numpy as np

FAMILIES = {
    # name: (architecture, vocab file, seed, options)
    "llama3": ("llama", "llama-bpe", 1, {"rope_freqs": True, "tied": True}),
    "mistral": ("llama", "llama-spm", 2, {}),
    "qwen2": ("qwen2", "qwen2", 3, {"bias": True, "tied": True}),
    "qwen3": ("qwen3", "qwen2", 4, {"qk_norm": True, "head_dim": 48, "tied": True}),
    "phi3": ("phi3", "phi-3", 5, {"fused": True, "longrope": True}),
    "gemma2": ("gemma2", "llama-spm", 6, {"gemma2": True, "tied": True}),
    "gemma3": ("gemma3", "llama-spm", 7, {"gemma3": True, "qk_norm": True, "tied": True}),
}

D_MODEL, N_LAYER, N_HEAD, N_KV_HEAD, D_FF = 128, 2, 4, 2, 256

# Llama 3 RoPE scaling with an original context of 256: with base 10000 and 32 rotated
# dimensions the pairs' divisors are 1 (5 pairs), two smooth values and 8 (9 pairs), so
# they differ inside a 128-token context. The Hugging Face export writes these parameters
# as config.json's rope_scaling.
LLAMA3_SCALING = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 256}


def llama3_factors(theta, rope_dim, factor, low_freq_factor, high_freq_factor,
                   original_max_position_embeddings):
    """Meta's Llama 3.1 per-pair divisors of the RoPE frequencies (GGUF's rope_freqs)."""
    orig = original_max_position_embeddings
    low_wavelen, high_wavelen = orig / low_freq_factor, orig / high_freq_factor
    out = []
    for i in range(rope_dim // 2):
        wavelen = 2 * np.pi / theta ** (-2.0 * i / rope_dim)
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (orig / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def copy_tokenizer(reader, writer, gguf):
    """Every tokenizer.* key of the vocab GGUF, with its type."""
    for name, f in reader.fields.items():
        if not name.startswith("tokenizer."):
            continue
        t = f.types[0]
        v = f.contents()
        if t == gguf.GGUFValueType.ARRAY:
            sub = f.types[1] if len(f.types) > 1 else None
            writer.add_key_value(name, v, t, sub_type=sub)
        else:
            writer.add_key_value(name, v, t)


def make(llama_cpp: str, out_dir: str, family: str) -> str:
    sys.path.insert(0, os.path.join(llama_cpp, "gguf-py"))
    import gguf

    arch, vocab, seed, o = FAMILIES[family]
    rs = np.random.RandomState(seed)
    reader = gguf.GGUFReader(os.path.join(llama_cpp, "models", f"ggml-vocab-{vocab}.gguf"))
    n_vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    hd = o.get("head_dim", D_MODEL // N_HEAD)
    q, kv = N_HEAD * hd, N_KV_HEAD * hd

    path = os.path.join(out_dir, f"{family}.gguf")
    w = gguf.GGUFWriter(path, arch)
    w.add_name(f"tiny-{family}")
    w.add_block_count(N_LAYER)
    w.add_context_length(4096)
    w.add_embedding_length(D_MODEL)
    w.add_feed_forward_length(D_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_KV_HEAD)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(1e6 if o.get("gemma3") else 10000.0)
    if "head_dim" in o:
        w.add_key_length(hd)
        w.add_value_length(hd)
    if o.get("longrope"):
        w.add_rope_scaling_orig_ctx_len(64)
        # As llama.cpp's converter (and the HF path) derive it from the two contexts.
        w.add_rope_scaling_attn_factors(np.sqrt(1 + np.log(4096 / 64) / np.log(64)))
    if o.get("gemma2"):
        w.add_sliding_window(32)
        w.add_attn_logit_softcapping(8.0)
        w.add_final_logit_softcapping(15.0)
    if o.get("gemma3"):
        w.add_sliding_window(32)
        w.add_sliding_window_pattern(2)
        w.add_rope_freq_base_swa(10000.0)
    copy_tokenizer(reader, w, gguf)

    def mat(rows, cols, gain=1.0):
        return (rs.standard_normal((rows, cols)) * (gain / np.sqrt(cols))).astype(np.float32)

    def norm(n):
        return (1.0 + 0.2 * rs.standard_normal(n)).astype(np.float32)

    # Logits of standard deviation about 3.4 (tied: 0.3 * sqrt(128); untied: gain 3): peaked
    # enough that greedy choices are clear, moderate enough that the perplexity of real text
    # stays around 1e6 rather than overflowing every digit of agreement.
    tensors = [("token_embd.weight", (0.3 * rs.standard_normal((n_vocab, D_MODEL))).astype(np.float32))]
    if o.get("rope_freqs"):
        tensors.append(("rope_freqs.weight", llama3_factors(10000.0, hd, **LLAMA3_SCALING)))
    if o.get("longrope"):
        tensors.append(("rope_factors_short.weight", (1.0 + rs.rand(hd // 2)).astype(np.float32)))
        tensors.append(("rope_factors_long.weight", (1.0 + 6.0 * rs.rand(hd // 2)).astype(np.float32)))
    for l in range(N_LAYER):
        b = f"blk.{l}."
        tensors.append((b + "attn_norm.weight", norm(D_MODEL)))
        wq, wk, wv = mat(q, D_MODEL, 3.0), mat(kv, D_MODEL, 3.0), mat(kv, D_MODEL)
        if o.get("fused"):
            tensors.append((b + "attn_qkv.weight", np.concatenate([wq, wk, wv])))
        else:
            tensors += [(b + "attn_q.weight", wq), (b + "attn_k.weight", wk), (b + "attn_v.weight", wv)]
        if o.get("bias"):
            tensors.append((b + "attn_q.bias", (0.5 * rs.standard_normal(q)).astype(np.float32)))
            tensors.append((b + "attn_k.bias", (0.5 * rs.standard_normal(kv)).astype(np.float32)))
            tensors.append((b + "attn_v.bias", (0.5 * rs.standard_normal(kv)).astype(np.float32)))
        if o.get("qk_norm"):
            tensors.append((b + "attn_q_norm.weight", norm(hd)))
            tensors.append((b + "attn_k_norm.weight", norm(hd)))
        tensors.append((b + "attn_output.weight", mat(D_MODEL, q)))
        if o.get("gemma2") or o.get("gemma3"):
            tensors.append((b + "post_attention_norm.weight", norm(D_MODEL)))
        tensors.append((b + "ffn_norm.weight", norm(D_MODEL)))
        gate, up = mat(D_FF, D_MODEL, 2.0), mat(D_FF, D_MODEL, 2.0)
        if o.get("fused"):
            tensors.append((b + "ffn_up.weight", np.concatenate([gate, up])))
        else:
            tensors += [(b + "ffn_gate.weight", gate), (b + "ffn_up.weight", up)]
        tensors.append((b + "ffn_down.weight", mat(D_MODEL, D_FF)))
        if o.get("gemma2") or o.get("gemma3"):
            tensors.append((b + "post_ffw_norm.weight", norm(D_MODEL)))
    tensors.append(("output_norm.weight", norm(D_MODEL)))
    if not o.get("tied"):
        tensors.append(("output.weight", mat(n_vocab, D_MODEL, 3.0)))
    for name, t in tensors:
        w.add_tensor(name, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    llama_cpp, out_dir, names = sys.argv[1], sys.argv[2], sys.argv[3:] or list(FAMILIES)
    os.makedirs(out_dir, exist_ok=True)
    for f in names:
        path = make(llama_cpp, out_dir, f)
        digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
        print(f"{f} {digest} {path}")


if __name__ == "__main__":
    main()
