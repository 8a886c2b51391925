#!/usr/bin/env python3
"""Dequantizes a `llama`, `qwen2`, `qwen3`, `phi3`, `gemma2` or `gemma3` GGUF (e.g.
SmolLM2-135M-Instruct, or the tiny family models of make_tiny_models.py) into a Hugging
Face model directory: the
realistic HF test input of pipit-convert. A SentencePiece vocabulary becomes a
byte-fallback BPE tokenizer.json without merges (GGUF keeps scores, not merges), so only a
byte-level BPE vocabulary round-trips exactly; Phi-3's LongRoPE factor tensors become
config.json's rope_scaling.

Writes config.json, tokenizer.json, tokenizer_config.json and model.safetensors (bf16, f16
or f32). Values come from the `gguf` package's reference dequantizers, then are rounded to
the chosen dtype (round to nearest even). The q/k projection rows, which GGUF stores
permuted for adjacent-pair RoPE in `llama` files, are put back in Hugging Face's split-half
order (qwen2/qwen3 GGUFs keep Hugging Face's order). A `rope_freqs` tensor (Llama 3 RoPE
scaling) is not a Hugging Face tensor: pass the parameters it was made from with
--rope-scaling JSON (config.json's rope_scaling).

Gemma: Hugging Face stores each RMSNorm weight w and multiplies by (1 + w), GGUF stores
w + 1, so 1 is subtracted from every `*norm` tensor; the four norms of a block get Gemma's
names (input / post_attention / pre_feedforward / post_feedforward_layernorm); config.json
gets query_pre_attn_scalar (llama.cpp's rule for a GGUF, which does not store it), the
window, the soft-caps, and for Gemma 3 (`gemma3_text`) the RoPE base of sliding layers and
the layers' kinds as `layer_types`.

usage: gguf_to_hf.py MODEL.gguf OUT_DIR [--dtype bf16|f16|f32] [--rope-scaling JSON]
"""
import argparse
import json
import os
import struct
import sys

import numpy as np
from gguf import GGUFReader
from gguf import quants

LAYER_NAMES = {
    "attn_norm": "input_layernorm.weight",
    "attn_q": "self_attn.q_proj.weight",
    "attn_k": "self_attn.k_proj.weight",
    "attn_v": "self_attn.v_proj.weight",
    "attn_output": "self_attn.o_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_q_norm": "self_attn.q_norm.weight",
    "attn_k_norm": "self_attn.k_norm.weight",
    "ffn_norm": "post_attention_layernorm.weight",
    "ffn_gate": "mlp.gate_proj.weight",
    "ffn_up": "mlp.up_proj.weight",
    "ffn_down": "mlp.down_proj.weight",
}


def field(r: GGUFReader, key: str, default=None):
    f = r.fields.get(key)
    return default if f is None else f.contents()


# Gemma's four norms of a block (its `post_attention_layernorm` is the attention output's
# norm, not the FFN input's as in Llama).
GEMMA_LAYER_NAMES = dict(LAYER_NAMES, **{
    "post_attention_norm": "post_attention_layernorm.weight",
    "ffn_norm": "pre_feedforward_layernorm.weight",
    "post_ffw_norm": "post_feedforward_layernorm.weight",
})

# Layers of the largest Gemma checkpoint, whose query_pre_attn_scalar llama.cpp takes as
# d_model / n_head (head_dim for the others), by architecture.
GEMMA_QPAS_D_OVER_HEADS_LAYERS = {"gemma2": 46, "gemma3": 62}


def hf_name(gguf_name: str, gemma: bool = False) -> str:
    base = gguf_name.removesuffix(".weight")
    if base == "token_embd":
        return "model.embed_tokens.weight"
    if base == "output_norm":
        return "model.norm.weight"
    if base == "output":
        return "lm_head.weight"
    parts = base.split(".", 2)
    names = GEMMA_LAYER_NAMES if gemma else LAYER_NAMES
    if len(parts) == 3 and parts[0] == "blk" and parts[2] in names:
        return f"model.layers.{parts[1]}.{names[parts[2]]}"
    raise SystemExit(f"gguf_to_hf: unexpected tensor {gguf_name!r}")


def adjacent_to_half(w: np.ndarray, n_heads: int) -> np.ndarray:
    """GGUF row h*hd + 2i + j  ->  Hugging Face row h*hd + j*hd/2 + i."""
    rows = w.shape[0]
    hd = rows // n_heads
    return w.reshape(n_heads, hd // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    bits = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + (0x7FFF + ((bits >> 16) & 1))) >> 16).astype(np.uint16)


def write_safetensors(path: str, tensors: dict, dtype: str) -> None:
    header = {"__metadata__": {"format": "pt"}}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        x = tensors[name]
        raw = {"bf16": to_bf16_bits, "f16": lambda v: v.astype(np.float16),
               "f32": lambda v: v.astype(np.float32)}[dtype](x).tobytes()
        header[name] = {"dtype": dtype.upper(), "shape": list(x.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path + ".part", "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(path + ".part", path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("gguf")
    ap.add_argument("out_dir")
    ap.add_argument("--dtype", choices=["bf16", "f16", "f32"], default="bf16")
    ap.add_argument("--rope-scaling", help="config.json's rope_scaling, as JSON")
    a = ap.parse_args()

    r = GGUFReader(a.gguf)
    arch = field(r, "general.architecture")
    hf_arch = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
               "phi3": "Phi3ForCausalLM", "gemma2": "Gemma2ForCausalLM",
               "gemma3": "Gemma3ForCausalLM"}
    model_type = {"gemma3": "gemma3_text"}.get(arch, arch)
    gemma = arch in ("gemma2", "gemma3")
    if arch not in hf_arch:
        raise SystemExit(f"gguf_to_hf: architecture {arch!r}: only {', '.join(hf_arch)} are supported")
    spm = field(r, "tokenizer.ggml.model") == "llama"
    k = lambda s, d=None: field(r, f"{arch}.{s}", d)
    n_head = k("attention.head_count")
    n_kv = k("attention.head_count_kv", n_head)
    d_model = k("embedding_length")

    tensors = {}
    rope_factors = {}
    for t in r.tensors:
        if t.name in ("rope_factors_short.weight", "rope_factors_long.weight"):
            rope_factors[t.name.split(".")[0].split("_")[-1]] = [float(v) for v in t.data]
            continue
        if t.name == "rope_freqs.weight":
            if a.rope_scaling is None:
                raise SystemExit("gguf_to_hf: the GGUF has rope_freqs: give --rope-scaling")
            continue
        x = quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        x = x.reshape([int(d) for d in reversed(t.shape)])
        base = t.name.removesuffix(".weight")
        if arch == "llama" and base.endswith(".attn_q"):
            x = adjacent_to_half(x, n_head)
        elif arch == "llama" and base.endswith(".attn_k"):
            x = adjacent_to_half(x, n_kv)
        # Phi-3's fused matrices have the same layout in both formats.
        if arch == "phi3" and base.endswith(".attn_qkv"):
            tensors[f"model.layers.{base.split('.')[1]}.self_attn.qkv_proj.weight"] = x
            continue
        if arch == "phi3" and base.endswith(".ffn_up"):
            tensors[f"model.layers.{base.split('.')[1]}.mlp.gate_up_proj.weight"] = x
            continue
        if gemma and base.endswith("norm"):
            x = x - np.float32(1.0)
        tensors[hf_name(t.name, gemma)] = x
    tied = "lm_head.weight" not in tensors
    n_vocab = tensors["model.embed_tokens.weight"].shape[0]

    tokens = field(r, "tokenizer.ggml.tokens")
    types = field(r, "tokenizer.ggml.token_type")
    merges = field(r, "tokenizer.ggml.merges", [])
    ids = {n: field(r, f"tokenizer.ggml.{n}_token_id") for n in ("bos", "eos", "unknown", "padding")}
    os.makedirs(a.out_dir, exist_ok=True)

    config = {
        "architectures": [hf_arch[arch]],
        "model_type": model_type,
        "hidden_size": d_model,
        "intermediate_size": k("feed_forward_length"),
        "num_hidden_layers": k("block_count"),
        "num_attention_heads": n_head,
        "num_key_value_heads": n_kv,
        "head_dim": k("attention.key_length", d_model // n_head),
        "max_position_embeddings": k("context_length"),
        "rms_norm_eps": float(np.float32(k("attention.layer_norm_rms_epsilon"))),
        "rope_theta": float(k("rope.freq_base", 10000.0)),
        "rope_scaling": None if a.rope_scaling is None else json.loads(a.rope_scaling),
        "hidden_act": "silu",
        "tie_word_embeddings": tied,
        "vocab_size": n_vocab,
        "attention_bias": any(t.name.endswith(".bias") for t in r.tensors),
        "mlp_bias": False,
        "torch_dtype": {"bf16": "bfloat16", "f16": "float16", "f32": "float32"}[a.dtype],
        "bos_token_id": ids["bos"],
        "eos_token_id": ids["eos"],
        "pad_token_id": ids["padding"],
    }
    if gemma:
        n_layer = k("block_count")
        head_dim = config["head_dim"]
        qpas_layers = GEMMA_QPAS_D_OVER_HEADS_LAYERS[arch]
        window = k("attention.sliding_window")
        pattern = k("attention.sliding_window_pattern")
        if pattern is None:  # the family's: Gemma 2 every other layer, Gemma 3 five in six
            pattern = 2 if arch == "gemma2" else 6
        if isinstance(pattern, int):
            sliding = [pattern == 0 or (i + 1) % pattern != 0 for i in range(n_layer)]
        else:
            sliding = [bool(v) for v in pattern]
        config.update({
            "hidden_act": "gelu_pytorch_tanh",
            "hidden_activation": "gelu_pytorch_tanh",
            "query_pre_attn_scalar": d_model // n_head if n_layer == qpas_layers else head_dim,
            "sliding_window": window,
            "attn_logit_softcapping": k("attn_logit_softcapping"),
            "final_logit_softcapping": k("final_logit_softcapping"),
        })
        if arch == "gemma3":
            config["rope_local_base_freq"] = float(k("rope.freq_base_swa", 10000.0))
            config["layer_types"] = ["sliding_attention" if s else "full_attention" for s in sliding]
        elif sliding != [i % 2 == 0 for i in range(n_layer)]:
            raise SystemExit("gguf_to_hf: a gemma2 GGUF whose sliding layers are not the even ones")
    if rope_factors:
        # Phi-3 LongRoPE: the factor tensors become config.json's rope_scaling.
        config["rope_scaling"] = {"type": "longrope", "short_factor": rope_factors["short"],
                                  "long_factor": rope_factors["long"]}
        config["original_max_position_embeddings"] = k("rope.scaling.original_context_length")
    added = [
        {"id": i, "content": tokens[i], "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": types[i] == 3}
        for i in range(len(tokens)) if types[i] in (3, 4)
    ]
    pre = field(r, "tokenizer.ggml.pre", "default")
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    split = lambda regex: {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}
    no_regex = dict(byte_level, use_regex=False)
    if pre == "smollm":
        pre_tokenizer = {"type": "Sequence",
                         "pretokenizers": [{"type": "Digits", "individual_digits": True}, byte_level]}
    elif pre in ("llama-bpe", "llama3"):
        pre_tokenizer = {"type": "Sequence", "pretokenizers": [split(
            "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"),
            no_regex]}
    elif pre == "qwen2":
        pre_tokenizer = {"type": "Sequence", "pretokenizers": [split(
            "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"),
            no_regex]}
    else:
        pre_tokenizer = byte_level
    post_processor = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True}
    decoder = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    normalizer = None
    if spm:
        # A SentencePiece GGUF stores scores, not merges: the export's byte-fallback BPE has
        # no merges, so its tokenizer is not the GGUF's (the weights are what it is for).
        pre_tokenizer, post_processor = None, None
        normalizer = {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                                                         {"type": "Replace", "pattern": {"String": " "},
                                                          "content": "\u2581"}]}
        decoder = {"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Fuse"}]}
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": decoder,
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": spm, "byte_fallback": spm,
            "vocab": {t: i for i, t in enumerate(tokens)},
            "merges": list(merges),
        },
    }
    name = lambda key: None if ids[key] is None else tokens[ids[key]]
    tok_config = {
        "add_bos_token": bool(field(r, "tokenizer.ggml.add_bos_token", spm)),
        "add_prefix_space": False,
        "added_tokens_decoder": {str(t["id"]): {kk: v for kk, v in t.items() if kk != "id"} for t in added},
        "bos_token": name("bos"),
        "eos_token": name("eos"),
        "unk_token": name("unknown"),
        "pad_token": name("padding"),
        "clean_up_tokenization_spaces": False,
        "model_max_length": k("context_length"),
        "tokenizer_class": "GPT2Tokenizer",
    }
    template = field(r, "tokenizer.chat_template")
    if template is not None:
        tok_config["chat_template"] = template

    for fname, obj in (("config.json", config), ("tokenizer.json", tokenizer), ("tokenizer_config.json", tok_config)):
        with open(os.path.join(a.out_dir, fname), "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1, ensure_ascii=False)
    write_safetensors(os.path.join(a.out_dir, "model.safetensors"), tensors, a.dtype)
    print(f"wrote {a.out_dir} ({len(tensors)} tensors, {a.dtype})", file=sys.stderr)


if __name__ == "__main__":
    main()
