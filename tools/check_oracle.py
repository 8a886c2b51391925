#!/usr/bin/env python3
"""Checks converted .pipit files against an independent oracle: the `gguf` package's GGUF
reader and reference dequantizers. The .pipit side is read with the small parser below,
written from formats/SPEC.md (not with pipit's own code).

Expects the files tools/test-models.sh makes in models/:
  SmolLM2-135M-Instruct.pipit   from SmolLM2-135M-Instruct.Q4_1.gguf (--quant keep)
  hf-smollm2-{bf16,f16}.pipit   from the directories tools/gguf_to_hf.py made of that GGUF
  gemma-3-270m.pipit            from gemma-3-270m-q4_k_m.gguf (--quant keep)

What is asserted:
  1. SmolLM2 GGUF -> .pipit: all 272 tensors present with the GGUF's shapes (dims reversed)
     and dtypes, and every dequantized value bit-identical to the gguf package's dequantized
     value; every metadata key as the GGUF says; header CRC-32C right; size within 3%.
  2. "Same model" from the Hugging Face directories: the .pipit made from the bf16 (f16)
     directory has exactly the metadata of the GGUF-made file except general.name and
     general.source (so the same tokenizer: tokens, types, merges, special ids, flags,
     template, hence the same token ids), the same tensors in the same order with the same
     shapes, and every value equal to the GGUF's dequantized value rounded to bf16 (f16) with
     round-to-nearest-even -- the one rounding the export introduced. The q/k permutation
     undone by gguf_to_hf.py and redone by pipit-convert therefore round-trips exactly.
  3. Gemma 3 270M Q4_K_M -> .pipit: metadata as SPEC.md's gemma3 rules say; copied tensors
     (Q8_0, F32) bit-identical; requantized ones (Q4_K, Q5_0, Q6_K -> Q8_0) within 1% relative
     RMSE of the GGUF's values; prints the per-type RMSE summary.
Exits non-zero with a message on the first failed check.
"""
import math
import os
import struct
import sys

import numpy as np
from gguf import GGUFReader, quants

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "models")

MAGIC = b"\x89PIPIT\r\n"
DTYPES = {0: "F32", 1: "F16", 2: "Q8_0", 3: "Q4_0", 4: "Q4_1", 5: "Q5_0", 6: "Q5_1", 7: "Q4_K",
          8: "Q5_K", 9: "Q6_K"}


def fail(msg: str) -> None:
    print(f"check_oracle: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def check(cond: bool, msg: str) -> None:
    if not cond:
        fail(msg)


def _crc_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


CRC_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    t = CRC_TABLE
    for b in data:
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


class Pipit:
    """A .pipit file read per SPEC.md: header, metadata, directory; tensor data on demand."""

    def __init__(self, path: str):
        self.path = path
        self.buf = np.memmap(path, dtype=np.uint8, mode="r")
        head = bytes(self.buf[:64])
        (magic, version, flags, meta_len, data_offset, data_len, file_len, n_tensors) = struct.unpack_from(
            "<8sIIQQQQI", head, 0)
        (crc,) = struct.unpack_from("<I", head, 60)
        check(magic == MAGIC, f"{path}: bad magic {magic!r}")
        check(version == 1 and flags == 0 and head[52:60] == b"\0" * 8, f"{path}: version/flags/reserved")
        check(data_offset == (64 + meta_len + 63) // 64 * 64, f"{path}: data_offset")
        check(file_len == data_offset + data_len == len(self.buf), f"{path}: file_len")
        meta = bytes(self.buf[64:64 + meta_len])
        check(crc32c(head[:60] + meta) == crc, f"{path}: header CRC-32C mismatch")
        self.size = file_len
        self.data_offset = data_offset
        pos = 0

        def take(fmt):
            nonlocal pos
            v = struct.unpack_from("<" + fmt, meta, pos)
            pos += struct.calcsize("<" + fmt)
            return v[0] if len(v) == 1 else v

        def string():
            nonlocal pos
            n = take("I")
            s = meta[pos:pos + n].decode("utf-8")
            pos += n
            return s

        scalar = {0: "B", 1: "I", 2: "i", 3: "Q", 4: "f"}
        np_types = {0: np.uint8, 1: np.uint32, 2: np.int32, 4: np.float32}

        def value(tag):
            nonlocal pos
            if tag in scalar:
                return take(scalar[tag])
            if tag == 5:
                b = take("B")
                check(b in (0, 1), "bool byte")
                return bool(b)
            if tag == 6:
                return string()
            check(tag == 7, f"unknown tag {tag}")
            et = take("B")
            n = take("Q")
            if et == 6:
                return [string() for _ in range(n)]
            arr = np.frombuffer(meta, dtype=np_types[et], count=n, offset=pos).copy()
            pos += arr.nbytes
            return arr.tolist()

        self.meta = {}
        for _ in range(take("I")):
            key = string()
            self.meta[key] = value(take("B"))
        self.tensors = {}
        self.order = []
        for _ in range(n_tensors):
            name = string()
            dtype = take("I")
            rank = take("I")
            dims = [take("Q") for _ in range(rank)]
            off = take("Q")
            size = take("Q")
            take("I")
            self.tensors[name] = (DTYPES[dtype], dims, data_offset + off, size)
            self.order.append(name)
        check(pos == len(meta), f"{path}: {len(meta) - pos} bytes left in the metadata section")

    def values(self, name: str) -> np.ndarray:
        """Dequantized f32 values per SPEC.md's dtype table, shaped outermost first."""
        dtype, dims, off, size = self.tensors[name]
        raw = np.asarray(self.buf[off:off + size])
        if dtype == "F32":
            x = raw.view(np.float32)
        elif dtype == "F16":
            x = raw.view(np.float16).astype(np.float32)
        elif dtype not in ("Q8_0", "Q4_0", "Q4_1"):
            # Q5_0/Q5_1 and the K-quants keep GGUF's block layouts: the gguf package decodes them.
            from gguf.quants import dequantize
            from gguf.constants import GGMLQuantizationType
            x = dequantize(raw, GGMLQuantizationType[dtype]).astype(np.float32)
        else:
            bb = {"Q8_0": 34, "Q4_0": 18, "Q4_1": 20}[dtype]
            blk = raw.reshape(-1, bb)
            d = blk[:, 0:2].copy().view(np.float16).astype(np.float32)
            if dtype == "Q8_0":
                x = blk[:, 2:].copy().view(np.int8).astype(np.float32) * d
            else:
                qs = blk[:, bb - 16:]
                q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32)
                if dtype == "Q4_0":
                    x = d * (q - np.float32(8))
                else:
                    m = blk[:, 2:4].copy().view(np.float16).astype(np.float32)
                    x = d * q + m
        return x.reshape(dims)


def gguf_values(t) -> np.ndarray:
    x = quants.dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32, copy=False)
    return x.reshape([int(d) for d in reversed(t.shape)])


def field(r: GGUFReader, key: str, default=None):
    f = r.fields.get(key)
    return default if f is None else f.contents()


def pipit_name(gguf_name: str) -> str:
    if gguf_name.endswith(".bias"):
        return gguf_name[:-5] + "_bias"
    return gguf_name.removesuffix(".weight")


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def rel_rmse(ref: np.ndarray, x: np.ndarray) -> float:
    ref = ref.astype(np.float64)
    den = float(np.sum(ref * ref))
    num = float(np.sum((x.astype(np.float64) - ref) ** 2))
    return 0.0 if num == 0 else math.sqrt(num / den)


def bf16_round(x: np.ndarray) -> np.ndarray:
    bits = x.view(np.uint32).astype(np.uint64)
    bits = ((bits + (0x7FFF + ((bits >> 16) & 1))) >> 16) << 16
    return bits.astype(np.uint32).view(np.float32)


def check_common_meta(p: Pipit, r: GGUFReader, arch: str) -> None:
    m = p.meta
    k = lambda s, d=None: field(r, f"{arch}.{s}", d)
    n_head = k("attention.head_count")
    expect = {
        "model.n_layer": k("block_count"),
        "model.d_model": k("embedding_length"),
        "model.n_head": n_head,
        "model.n_kv_head": k("attention.head_count_kv", n_head),
        "model.head_dim": k("attention.key_length", k("embedding_length") // n_head),
        "model.d_ff": k("feed_forward_length"),
        "model.n_ctx_train": k("context_length"),
        "model.norm_eps": float(np.float32(k("attention.layer_norm_rms_epsilon"))),
        "model.rope_theta": float(np.float32(k("rope.freq_base", 10000.0))),
        "model.tied_embeddings": not any(t.name == "output.weight" for t in r.tensors),
        "model.rope_scaling": "none",
        "model.rope_scale": 1.0,
        "tokenizer.tokens": list(field(r, "tokenizer.ggml.tokens")),
        "tokenizer.token_types": list(field(r, "tokenizer.ggml.token_type")),
        "tokenizer.bos_id": field(r, "tokenizer.ggml.bos_token_id"),
        "tokenizer.eos_id": field(r, "tokenizer.ggml.eos_token_id"),
        "tokenizer.unk_id": field(r, "tokenizer.ggml.unknown_token_id"),
        "tokenizer.pad_id": field(r, "tokenizer.ggml.padding_token_id"),
        "tokenizer.add_bos": field(r, "tokenizer.ggml.add_bos_token"),
        "tokenizer.add_space_prefix": field(r, "tokenizer.ggml.add_space_prefix"),
        "tokenizer.pre": field(r, "tokenizer.ggml.pre"),
    }
    expect["model.rope_dim"] = k("rope.dimension_count", expect["model.head_dim"])
    expect["model.n_vocab"] = len(expect["tokenizer.tokens"])
    if field(r, "tokenizer.ggml.merges") is not None:
        expect["tokenizer.merges"] = list(field(r, "tokenizer.ggml.merges"))
    if field(r, "tokenizer.ggml.scores") is not None:
        expect["tokenizer.scores"] = [float(np.float32(s)) for s in field(r, "tokenizer.ggml.scores")]
    if field(r, "tokenizer.chat_template") is not None:
        expect["tokenizer.chat_template"] = field(r, "tokenizer.chat_template")
    else:
        check("tokenizer.chat_template" not in m, "chat_template written although the GGUF has none")
    for key, want in expect.items():
        got = m.get(key)
        if isinstance(want, float):
            check(got is not None and float(np.float32(got)) == want, f"{p.path}: {key} = {got!r}, expected {want!r}")
        else:
            check(got == want, f"{p.path}: {key} = {str(got)[:80]}, expected {str(want)[:80]}")


def check_smollm2(pipit_path: str, gguf_path: str) -> Pipit:
    r = GGUFReader(gguf_path)
    p = Pipit(pipit_path)
    check(len(r.tensors) == 272, f"{gguf_path}: {len(r.tensors)} tensors, expected 272")
    check(len(p.tensors) == 272, f"{pipit_path}: {len(p.tensors)} tensors, expected 272")
    for t in r.tensors:
        name = pipit_name(t.name)
        check(name in p.tensors, f"{pipit_path}: tensor {name} missing")
        dtype, dims, _, _ = p.tensors[name]
        check(dims == [int(d) for d in reversed(t.shape)], f"{name}: shape {dims} vs GGUF dims {list(t.shape)}")
        want_dtype = {"Q8_0": "Q8_0", "Q4_1": "Q4_1", "Q4_0": "Q4_0", "F32": "F32", "F16": "F16"}[t.tensor_type.name]
        check(dtype == want_dtype, f"{name}: dtype {dtype}, expected {want_dtype}")
        check(same_bits(p.values(name), gguf_values(t)), f"{name}: dequantized values differ from the gguf package's")
    ratio = p.size / os.path.getsize(gguf_path)
    check(abs(ratio - 1) <= 0.03, f"size {p.size} is {ratio:.3f} x the GGUF's")
    m = p.meta
    check_common_meta(p, r, "llama")
    for key, want in {
        "general.architecture": "llama", "model.rope_pairs": "adjacent", "model.activation": "silu",
        "tokenizer.kind": "bpe", "tokenizer.pre": "smollm", "tokenizer.eot_ids": [0], "tokenizer.add_bos": False,
        "model.sliding_window": 0, "model.layer_sliding": [0] * 30, "model.attn_scale": 0.125,
        "model.embed_scale": 1.0, "general.source": "gguf:" + os.path.basename(gguf_path),
    }.items():
        check(m.get(key) == want, f"{pipit_path}: {key} = {str(m.get(key))[:80]}, expected {want!r}")
    print(f"ok: SmolLM2 GGUF -> pipit: 272/272 tensors bit-identical to gguf.quants, metadata as the GGUF, "
          f"size {p.size} = {100 * ratio:.2f}% of the GGUF")
    return p


def check_hf(hf_pipit: str, ref: Pipit, gguf_path: str, dtype: str) -> None:
    r = GGUFReader(gguf_path)
    p = Pipit(hf_pipit)
    skip = {"general.name", "general.source"}
    for key in set(ref.meta) | set(p.meta):
        if key in skip:
            continue
        check(key in p.meta and key in ref.meta, f"{hf_pipit}: key {key} present in only one of the files")
        check(p.meta[key] == ref.meta[key],
              f"{hf_pipit}: {key} = {str(p.meta[key])[:80]} differs from the GGUF path's {str(ref.meta[key])[:80]}")
    check(p.order == ref.order, f"{hf_pipit}: tensor names/order differ from the GGUF path's")
    rnd = bf16_round if dtype == "bf16" else (lambda x: x.astype(np.float16).astype(np.float32))
    for t in r.tensors:
        name = pipit_name(t.name)
        check(p.tensors[name][1] == ref.tensors[name][1], f"{hf_pipit}: {name} shape")
        want_dtype = "F32" if dtype == "bf16" or len(t.shape) == 1 else "F16"
        check(p.tensors[name][0] == want_dtype, f"{hf_pipit}: {name} is {p.tensors[name][0]}, expected {want_dtype}")
        check(same_bits(p.values(name), rnd(gguf_values(t))),
              f"{hf_pipit}: {name}: values are not the GGUF's values rounded to {dtype}")
    print(f"ok: HF {dtype} dir -> pipit: same metadata and tokenizer as the GGUF path, 272 tensors equal to the "
          f"GGUF values rounded to {dtype}")


def check_gemma(pipit_path: str, gguf_path: str) -> None:
    r = GGUFReader(gguf_path)
    p = Pipit(pipit_path)
    m = p.meta
    check_common_meta(p, r, "gemma3")
    n_layer = m["model.n_layer"]
    for key, want in {
        "general.architecture": "gemma3", "model.rope_pairs": "half", "model.activation": "gelu_tanh",
        "model.sliding_window": field(r, "gemma3.attention.sliding_window"),
        "model.layer_sliding": [0 if (i + 1) % 6 == 0 else 1 for i in range(n_layer)],
        "model.rope_theta_local": 10000.0, "tokenizer.kind": "spm", "tokenizer.eot_ids": [106],
        "model.attn_scale": float(np.float32(1 / math.sqrt(m["model.head_dim"]))),
        "model.embed_scale": float(np.float32(math.sqrt(m["model.d_model"]))),
    }.items():
        got = m.get(key)
        if isinstance(want, float):
            check(got is not None and float(np.float32(got)) == want, f"{pipit_path}: {key} = {got!r}, expected {want!r}")
        else:
            check(got == want, f"{pipit_path}: {key} = {str(got)[:80]}, expected {want!r}")
    check(len(p.tensors) == len(r.tensors), "gemma tensor count")
    by_type = {}
    for t in r.tensors:
        name = pipit_name(t.name)
        src = t.tensor_type.name
        dtype, dims, off, size = p.tensors[name]
        check(dims == [int(d) for d in reversed(t.shape)], f"{name}: shape")
        ref = gguf_values(t)
        got = p.values(name)
        if src in DTYPES.values():
            # `--quant keep` copies every type pipit has, block for block.
            check(dtype == src, f"{name}: {src} became {dtype}")
            check(bytes(p.buf[off:off + size]) == np.asarray(t.data).tobytes(),
                  f"{name}: copied {src} tensor's bytes differ from the GGUF")
            check(same_bits(got, ref), f"{name}: copied {src} tensor differs from the GGUF")
            err = 0.0
        else:
            check(dtype == "Q8_0", f"{name}: {src} became {dtype}, expected Q8_0")
            err = rel_rmse(ref, got)
            check(err < 0.01, f"{name}: relative RMSE {err:.3e} >= 1%")
        by_type.setdefault(src, []).append(err)
    ratio = p.size / os.path.getsize(gguf_path)
    print(f"ok: Gemma 3 270M Q4_K_M -> pipit ({len(p.tensors)} tensors, {p.size} bytes = {100 * ratio:.1f}% of the GGUF)")
    print("    source type  tensors  rel RMSE mean  rel RMSE max")
    for src, errs in sorted(by_type.items()):
        print(f"    {src:<11}  {len(errs):>7}  {np.mean(errs):>13.3e}  {np.max(errs):>12.3e}")


def main() -> None:
    smol_gguf = os.path.join(MODELS, "SmolLM2-135M-Instruct.Q4_1.gguf")
    ref = check_smollm2(os.path.join(MODELS, "SmolLM2-135M-Instruct.pipit"), smol_gguf)
    for dt in ("bf16", "f16"):
        check_hf(os.path.join(MODELS, f"hf-smollm2-{dt}.pipit"), ref, smol_gguf, dt)
    check_gemma(os.path.join(MODELS, "gemma-3-270m.pipit"), os.path.join(MODELS, "gemma-3-270m-q4_k_m.gguf"))
    print("check_oracle: all checks passed")


if __name__ == "__main__":
    main()
