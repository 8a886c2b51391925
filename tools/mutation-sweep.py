#!/usr/bin/env python3
"""Mutation sweep (issue 13): truncated, bit-flipped and overwritten copies of a model file
through `pipit run` and through the C ABI (open, session, tokenize, eval, sample), each in
its own process. Pass: 0 crashes (death by a signal, or exit codes other than 0 and 1),
0 hangs over 20 s, no process above 1 GB resident. Most mutants get their header checksum
recomputed, or the checksum would reject them before the parser sees them.

    tools/mutation-sweep.py [--count 1500] [--base MODEL] [--pipit BIN] [--lib LIBPIPIT]

BASE defaults to the tiny model the test suite writes (target/tmp/hostile/stdout/m.pipit,
from `cargo test --profile ci --test hostile`); BIN and LIB to what `cargo test --profile
ci` builds. CI runs a sample (--count 150). Prints one line per failure and a summary.
"""
import argparse
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEADLINE = 20.0
RSS_LIMIT = 1 << 30

# The C ABI driver, run in a child: open, session, tokenize, eval, sample a few tokens.
DRIVER = r"""
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
c = ctypes
m = c.c_void_p()
st = lib.pipit_model_open(sys.argv[2].encode(), c.byref(m))
if st != 0:
    sys.exit(1)
class SP(c.Structure):
    _fields_ = [("n_ctx", c.c_uint32), ("n_threads", c.c_uint32), ("kv_type", c.c_uint32),
                ("flags", c.c_uint32), ("memory_limit", c.c_uint64)]
class SaP(c.Structure):
    _fields_ = [("temperature", c.c_float), ("top_k", c.c_uint32), ("top_p", c.c_float),
                ("min_p", c.c_float), ("repeat_penalty", c.c_float),
                ("repeat_last_n", c.c_uint32), ("seed", c.c_uint64)]
p = SP(); lib.pipit_session_params_default(c.byref(p)); p.n_ctx = 64; p.n_threads = 1
p.flags = 1  # PIPIT_SESSION_CHECK_MEMORY
s = c.c_void_p()
st = lib.pipit_session_new(m, c.byref(p), c.byref(s))
if st != 0:
    lib.pipit_model_free(m); sys.exit(1)
ids = (c.c_int32 * 64)(); n = c.c_size_t()
text = b"the cat sat on the mat"
st = lib.pipit_tokenize(m, text, len(text), 1, ids, 64, c.byref(n))
if st == 0 and n.value > 0:
    st = lib.pipit_session_eval(s, ids, n.value)
sp = SaP(); lib.pipit_sampler_params_default(c.byref(sp))
for _ in range(4):
    if st != 0:
        break
    t = c.c_int32()
    st = lib.pipit_session_sample(s, c.byref(sp), c.byref(t))
    if st == 0:
        st = lib.pipit_session_eval(s, c.byref(t), 1)
lib.pipit_session_free(s); lib.pipit_model_free(m)
sys.exit(0 if st == 0 else 1)
"""

CRC_TABLE = []
for i in range(256):
    c = i
    for _ in range(8):
        c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    CRC_TABLE.append(c)


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def fix_header_crc(b):
    """SPEC.md: CRC-32C of bytes 0..60 then the meta_len bytes after the header."""
    if len(b) < 64:
        return
    meta_len = int.from_bytes(b[16:24], "little")
    end = min(64 + meta_len, len(b))
    crc = crc32c(bytes(b[64:end]), crc32c(bytes(b[:60])))
    b[60:64] = crc.to_bytes(4, "little")


def mutants(base, count, rng):
    """(kind, bytes) for `count` mutants: truncations, bit flips and overwrites, mostly in
    the header and metadata/directory section, 80% with the header checksum fixed."""
    meta_end = min(len(base), 64 + int.from_bytes(base[16:24], "little"))
    for i in range(count):
        b = bytearray(base)
        kind = ("truncate", "flip", "overwrite")[i % 3]
        # Two thirds of the edits land in the header and metadata, the rest anywhere.
        hi = meta_end if rng.random() < 0.67 else len(b)
        if kind == "truncate":
            b = b[: rng.randrange(0, len(b))]
        elif kind == "flip":
            for _ in range(rng.choice((1, 1, 2, 8))):
                pos = rng.randrange(0, hi)
                b[pos] ^= 1 << rng.randrange(8)
        else:
            pos = rng.randrange(0, hi)
            n = rng.choice((1, 2, 4, 8, 64))
            fill = rng.choice((b"\xff", b"\x00", b"\x7f", bytes([rng.randrange(256)])))
            b[pos : pos + n] = (fill * n)[: len(b[pos : pos + n])]
        fixed = rng.random() < 0.8 and kind != "truncate"
        if fixed:
            fix_header_crc(b)
        yield f"{kind}{'+crc' if fixed else ''}", bytes(b)


def run(cmd):
    """Runs `cmd`: (exit code or -signal, seconds, max RSS bytes, hung)."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    hung = []
    timer = threading.Timer(DEADLINE, lambda: (hung.append(1), p.kill()))
    timer.start()
    _, status, usage = os.wait4(p.pid, 0)
    timer.cancel()
    p.returncode = 0  # reaped by wait4
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    return code, time.monotonic() - t0, usage.ru_maxrss * 1024, bool(hung)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=1500)
    ap.add_argument("--base", default=os.path.join(ROOT, "target/tmp/hostile/stdout/m.pipit"))
    ap.add_argument("--pipit", default=os.path.join(ROOT, "target/ci/pipit"))
    ap.add_argument("--lib", default=os.path.join(ROOT, "target/ci/deps/libpipit.so"))
    ap.add_argument("--seed", type=int, default=13)
    a = ap.parse_args()
    base = open(a.base, "rb").read()
    # The unmutated file must pass both ways, or every mutant would just fail to start.
    for cmd in ([a.pipit, "run", "-m", a.base, "-p", "the cat", "-n", "4", "-t", "1"],
                [sys.executable, "-c", DRIVER, a.lib, a.base]):
        if run(cmd)[0] != 0:
            sys.exit(f"the unmutated model fails: {' '.join(cmd[:2])} ...")
    rng = random.Random(a.seed)
    tmp = tempfile.mkdtemp(prefix="pipit-sweep-")
    path = os.path.join(tmp, "mutant.pipit")
    stats = {}
    failures = 0
    worst_rss = worst_secs = 0
    t0 = time.monotonic()
    for i, (kind, data) in enumerate(mutants(base, a.count, rng)):
        with open(path, "wb") as f:
            f.write(data)
        for via, cmd in (
            ("cli", [a.pipit, "run", "-m", path, "-p", "the cat", "-n", "4", "-t", "1"]),
            ("capi", [sys.executable, "-c", DRIVER, a.lib, path]),
        ):
            code, secs, rss, hung = run(cmd)
            worst_rss, worst_secs = max(worst_rss, rss), max(worst_secs, secs)
            key = (via, "ok" if code == 0 else "error" if code == 1 else "CRASH")
            stats[key] = stats.get(key, 0) + 1
            bad = code not in (0, 1) or hung or rss > RSS_LIMIT
            if bad:
                failures += 1
                keep = os.path.join(tmp, f"fail-{i}-{via}.pipit")
                with open(keep, "wb") as f:
                    f.write(data)
                print(f"FAIL {via} mutant {i} ({kind}): exit {code}, {secs:.1f} s, "
                      f"{rss >> 20} MiB, hung={hung}; kept as {keep}")
    print(f"{a.count} mutants of {a.base} ({len(base)} bytes) in {time.monotonic() - t0:.0f} s")
    print("| path | ok (exit 0) | error (exit 1) | crash |")
    print("|---|---|---|---|")
    for via in ("cli", "capi"):
        print(f"| {via} | {stats.get((via, 'ok'), 0)} | {stats.get((via, 'error'), 0)} | "
              f"{stats.get((via, 'CRASH'), 0)} |")
    print(f"slowest {worst_secs:.2f} s, largest {worst_rss >> 20} MiB resident, "
          f"{failures} failures")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
