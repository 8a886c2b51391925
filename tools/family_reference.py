#!/usr/bin/env python3
"""llama.cpp's numbers on the tiny family models: writes tests/data/families.json.

For each model of make_tiny_models.py (models/tiny/<family>.gguf): its sha256, the
perplexity of `llama-perplexity -c 128` on tests/data/families.txt, and the greedy text of
24 tokens on two prompts with the context llama.cpp used (it asks for n_prompt + 23 and pads
it to 256; the padded size decides Phi-3's LongRoPE factor set), with the smallest margin
between the top logit and the runner-up over those steps.

llama.cpp runs with flash attention off and an F32 KV cache (`-fa off -ctk f32 -ctv f32`):
its plain f32 arithmetic, the reference the issue asks for. llama-simple cannot be told so
(its CPU default is flash attention with an F16 cache, whose rounding decided a near-tie on
Mistral's first prompt: a margin of 0.007 in f32, 0.0007 under flash attention), so the
greedy text comes from tools/llama_greedy.c, llama-simple's loop over llama.cpp's C API
with those settings, compiled here against the static libraries the peer build leaves in
PEER_DIR/src/llama_cpp_python-*/vendor/llama.cpp/build.

The file holds facts measured by llama.cpp, not code; rerun only when the generator or the
peer changes.

usage: family_reference.py PEER_BIN_DIR [MODELS_TINY_DIR]
"""
import glob
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAMILIES = ["llama3", "mistral", "qwen2", "qwen3", "phi3", "gemma2", "gemma3"]
PROMPTS = ["The capital of France is", "Once upon a time, in a small village,"]
N_PREDICT = 24


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True, errors="surrogateescape")
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr[-3000:]}")
    return p


def build_oracle(peer_bin: str, out_dir: str) -> str:
    """tools/llama_greedy.c linked against the peer's llama.cpp build; returns its path."""
    srcs = glob.glob(os.path.join(os.path.dirname(os.path.abspath(peer_bin)), "src",
                                  "llama_cpp_python-*", "vendor", "llama.cpp"))
    if len(srcs) != 1:
        raise SystemExit(f"expected one llama.cpp source tree beside {peer_bin}, found {srcs}")
    src, build = srcs[0], os.path.join(srcs[0], "build")
    exe = os.path.join(out_dir, "llama_greedy")
    libs = [os.path.join(build, p) for p in
            ["src/libllama.a", "ggml/src/libggml.a", "ggml/src/libggml-cpu.a",
             "ggml/src/libggml-base.a"]]
    obj = exe + ".o"
    run(["cc", "-O2", "-c", os.path.join(ROOT, "tools", "llama_greedy.c"), "-o", obj,
         "-I", os.path.join(src, "include"), "-I", os.path.join(src, "ggml", "include")])
    # The libraries are C++ with OpenMP (the peer's default build).
    run(["c++", obj, *libs, "-fopenmp", "-lpthread", "-ldl", "-lm", "-o", exe])
    return exe


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    peer = sys.argv[1]
    tiny = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "models", "tiny")
    text = os.path.join(ROOT, "tests", "data", "families.txt")
    with tempfile.TemporaryDirectory(prefix="family-reference-") as tmp:
        out = measure(peer, build_oracle(peer, tmp), tiny, text)
    with open(os.path.join(ROOT, "tests", "data", "families.json"), "w", encoding="utf-8") as fh:
        json.dump(out, fh, indent=1, ensure_ascii=False)
        fh.write("\n")


def measure(peer: str, oracle: str, tiny: str, text: str) -> dict:
    """Every family's entry of families.json."""
    out = {}
    for f in FAMILIES:
        gguf = os.path.join(tiny, f"{f}.gguf")
        entry = {"sha256": hashlib.sha256(open(gguf, "rb").read()).hexdigest()}
        p = run([f"{peer}/llama-perplexity", "-m", gguf, "-f", text, "-c", "128", "-b", "128",
                 "-fa", "off", "-ctk", "f32", "-ctv", "f32", "-t", "2"])
        m = re.search(r"Final estimate: PPL = ([0-9.]+)", p.stdout + p.stderr)
        if not m:
            raise SystemExit(f"{f}: no PPL in llama-perplexity's output")
        entry["ppl"] = float(m.group(1))
        entry["greedy"] = []
        for prompt in PROMPTS:
            p = run([oracle, gguf, str(N_PREDICT), prompt])
            n_ctx = re.search(r"^n_ctx_seq (\d+)$", p.stderr, re.M)
            margins = [float(m) for m in re.findall(r"^step \d+ token \d+ margin (\S+)$",
                                                    p.stderr, re.M)]
            if not n_ctx or not margins:
                raise SystemExit(f"{f}: unexpected output of llama_greedy:\n{p.stderr[-2000:]}")
            entry["greedy"].append({
                "prompt": prompt,
                "n_ctx": int(n_ctx.group(1)),
                "text": p.stdout,
                "min_margin": round(min(margins), 4),
            })
        out[f] = entry
        print(f, entry["ppl"], [g["text"][:40] for g in entry["greedy"]], file=sys.stderr)
    return out


if __name__ == "__main__":
    main()
