#!/usr/bin/env python3
"""Streaming through the Python package against `pipit run`, side by side.

Each round runs `pipit run -p PROMPT -n N --temp 0` (its own timing: prompt evaluation plus
generation, from its stderr report) and then, in this process, `Session.generate` of the
same prompt and N tokens, timed from the call to the last piece (tokenizing, the worker
thread and the queue included). Rounds alternate so that both see the same machine load;
the medians are compared. Both must produce the same N tokens.

Wall time on a shared machine swings between rounds, so the script also measures, in this
process, the CPU time of the bare C call (pipit_generate with no callback) against the same
generation streamed through Session.generate: the cost of the Python layer alone.

    PIPIT_LIB=target/release/libpipit.so python3 tools/bench-python.py \\
        models/SmolLM2-135M-Instruct.pipit --pipit target/release/pipit -n 64 -t 2 -r 9
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

import ctypes  # noqa: E402

import pipit  # noqa: E402
from pipit._lib import TOKEN_CALLBACK, SamplerParams, lib  # noqa: E402

PROMPT = (
    "<|im_start|>user\nWrite a short story about a robot who learns to paint.<|im_end|>\n"
    "<|im_start|>assistant\n"
)
REPORT = re.compile(
    r"prompt (\d+) tokens at ([\d.]+) tok/s; generated (\d+) tokens at ([\d.]+) tok/s"
)


def cli_round(args: argparse.Namespace) -> "tuple[float, str]":
    out = subprocess.run(
        [args.pipit, "run", "-m", args.model, "-p", PROMPT, "-n", str(args.n), "--temp", "0",
         "-t", str(args.threads), "--ctx", "1024"],
        capture_output=True, check=True, text=True,
    )
    m = REPORT.search(out.stderr)
    if m is None:
        sys.exit(f"cannot read pipit run's report: {out.stderr}")
    n_prompt, pp, n_gen, tg = int(m[1]), float(m[2]), int(m[3]), float(m[4])
    if n_gen != args.n:
        sys.exit(f"pipit run generated {n_gen} tokens, not {args.n}")
    return n_prompt / pp + n_gen / tg, out.stdout


def python_round(model: pipit.Model, args: argparse.Namespace) -> "tuple[float, str]":
    with model.session(n_ctx=1024, n_threads=args.threads) as s:
        t0 = time.perf_counter()
        text = "".join(s.generate(PROMPT, max_tokens=args.n, temperature=0))
        secs = time.perf_counter() - t0
        if s.n_past != len(model.tokenize(PROMPT)) + args.n:
            sys.exit("the Python generation did not produce every token")
    return secs, text + "\n"


def cpu_rounds(model: pipit.Model, args: argparse.Namespace) -> "tuple[float, float]":
    """Median process CPU seconds of the bare C generation and of the Python stream."""
    params = SamplerParams()
    lib.pipit_sampler_params_default(ctypes.byref(params))
    params.temperature = 0
    prompt = PROMPT.encode()
    want = len(model.tokenize(PROMPT)) + args.n
    bare, streamed = [], []
    for _ in range(args.rounds):
        with model.session(n_ctx=1024, n_threads=args.threads) as s:
            t0 = time.process_time()
            lib.check(lib.pipit_generate(s._ptr, prompt, len(prompt), ctypes.byref(params), args.n, TOKEN_CALLBACK(), None))
            bare.append(time.process_time() - t0)
            assert s.n_past == want
        with model.session(n_ctx=1024, n_threads=args.threads) as s:
            t0 = time.process_time()
            "".join(s.generate(PROMPT, max_tokens=args.n, temperature=0))
            streamed.append(time.process_time() - t0)
            assert s.n_past == want
    return statistics.median(bare), statistics.median(streamed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--pipit", default="target/release/pipit")
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-r", "--rounds", type=int, default=9)
    args = ap.parse_args()
    model = pipit.Model(args.model)
    python_round(model, args)  # warm the page cache and the CPU
    cli, py = [], []
    for _ in range(args.rounds):
        c, cli_text = cli_round(args)
        p, py_text = python_round(model, args)
        if cli_text != py_text:
            sys.exit("pipit run and Session.generate produced different text")
        cli.append(c)
        py.append(p)
    mc, mp = statistics.median(cli), statistics.median(py)
    bc, bp = min(cli), min(py)
    print(f"library: {pipit.library_path()}")
    print(f"pipit run      : median {mc * 1e3:.1f} ms  (rounds: {' '.join(f'{x * 1e3:.0f}' for x in cli)})")
    print(f"Python generate: median {mp * 1e3:.1f} ms  (rounds: {' '.join(f'{x * 1e3:.0f}' for x in py)})")
    print(f"Python / pipit run = {mp / mc:.3f} ({(mp / mc - 1) * 100:+.1f}%) by medians, "
          f"{bp / bc:.3f} by best rounds; {args.n} tokens, {args.threads} threads")
    cb, cs = cpu_rounds(model, args)
    print(f"CPU in-process: C alone {cb * 1e3:.1f} ms, through Python {cs * 1e3:.1f} ms: "
          f"ratio {cs / cb:.3f}, {(cs - cb) / args.n * 1e6:.0f} us per token")


if __name__ == "__main__":
    main()
