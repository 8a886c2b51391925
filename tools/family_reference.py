#!/usr/bin/env python3
"""llama.cpp's numbers on the tiny family models: writes tests/data/families.json.

For each model of make_tiny_models.py (models/tiny/<family>.gguf): its sha256, the
perplexity of `llama-perplexity -c 128` on tests/data/families.txt, and the text of
`llama-simple -n 24` (greedy) on two prompts with the context llama.cpp used (it asks for
n_prompt + 23 and pads it to 256; the padded size decides Phi-3's LongRoPE factor set). llama.cpp runs with flash attention off and its default F16 KV cache, as
pipit's default session does. The file holds facts measured by llama.cpp, not code; rerun
only when the generator or the peer changes.

usage: family_reference.py PEER_BIN_DIR [MODELS_TINY_DIR]
"""
import hashlib
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAMILIES = ["llama3", "mistral", "qwen2", "qwen3", "phi3", "gemma2"]
PROMPTS = ["The capital of France is", "Once upon a time, in a small village,"]
N_PREDICT = 24


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True, errors="surrogateescape")
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr[-3000:]}")
    return p


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    peer = sys.argv[1]
    tiny = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "models", "tiny")
    text = os.path.join(ROOT, "tests", "data", "families.txt")
    out = {}
    for f in FAMILIES:
        gguf = os.path.join(tiny, f"{f}.gguf")
        entry = {"sha256": hashlib.sha256(open(gguf, "rb").read()).hexdigest()}
        p = run([f"{peer}/llama-perplexity", "-m", gguf, "-f", text, "-c", "128", "-b", "128",
                 "-fa", "off", "-t", "2"])
        m = re.search(r"Final estimate: PPL = ([0-9.]+)", p.stdout + p.stderr)
        if not m:
            raise SystemExit(f"{f}: no PPL in llama-perplexity's output")
        entry["ppl"] = float(m.group(1))
        entry["greedy"] = []
        for prompt in PROMPTS:
            p = run([f"{peer}/llama-simple", "-m", gguf, "-n", str(N_PREDICT), prompt])
            at = p.stdout.index(prompt) + len(prompt)
            m = re.search(r"n_ctx_seq\s*=\s*(\d+)", p.stderr)
            entry["greedy"].append({
                "prompt": prompt,
                "n_ctx": int(m.group(1)) if m else None,
                "text": p.stdout[at:],
            })
        out[f] = entry
        print(f, entry["ppl"], [g["text"][:40] for g in entry["greedy"]], file=sys.stderr)
    with open(os.path.join(ROOT, "tests", "data", "families.json"), "w", encoding="utf-8") as fh:
        json.dump(out, fh, indent=1, ensure_ascii=False)
        fh.write("\n")


if __name__ == "__main__":
    main()
