#!/usr/bin/env bash
# Side-by-side speed of pipit and llama.cpp (the peer) on the same GGUF files, each converted
# losslessly (--quant keep) to .pipit. Prints a markdown table of pp and tg tokens/s, the
# ratios, pipit's effective weight bandwidth in decode and the share of the memory's read
# bandwidth that is (`pipit bench --roofline`, measured in every round with the same threads). Two sets of files (SET, default smollm2):
# - smollm2: SmolLM2-135M's Q4_1 GGUF from PyPI, and Q4_0 / Q8_0 made from it by the peer's
#   llama-quantize;
# - kquants: Gemma 3 270M's Q4_K_M from PyPI; SmolLM2 requantized to Q4_K_M by llama-quantize;
#   and a random-weight model of width 1024 (tools/make_bench_model.py) that llama-quantize
#   turns into real Q4_K / Q6_K tensors.
#
# Usage: SET=smollm2|kquants tools/bench-vs-llama.sh [THREADS] [REPS] [ROUNDS]
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
case "${SET:-smollm2}" in
  smollm2)
    for q in Q4_0 Q8_0; do
      [ -f "$m.$q.gguf" ] || "$peer/llama-quantize" --allow-requantize "$m.Q4_1.gguf" "$m.$q.gguf" "$q" >/dev/null 2>&1
    done
    files="$m.Q4_1 $m.Q4_0 $m.Q8_0" ;;
  kquants)
    tools/fetch-models.sh gemma3 >/dev/null
    [ -f "$m.Q4_K_M.gguf" ] || "$peer/llama-quantize" --allow-requantize "$m.Q4_1.gguf" "$m.Q4_K_M.gguf" Q4_K_M >/dev/null 2>&1
    b=models/bench-1024
    if [ ! -f "$b.Q4_K_M.gguf" ]; then
      llama_cpp=$(ls -d "$peer"/../src/llama_cpp_python-*/vendor/llama.cpp | head -1)
      python3 tools/make_bench_model.py "$llama_cpp" "$b.f32.gguf" >/dev/null
      "$peer/llama-quantize" "$b.f32.gguf" "$b.Q4_K_M.gguf" Q4_K_M >/dev/null 2>&1
    fi
    files="models/gemma-3-270m-q4_k_m $m.Q4_K_M $b.Q4_K_M" ;;
  *) echo "SET must be smollm2 or kquants" >&2; exit 2 ;;
esac
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for f in $files; do
  q=$(basename "$f")
  out="$f.keep.pipit"
  [ "$out" -nt "$f.gguf" ] || "$bin/pipit-convert" "$f.gguf" --quant keep -o "$out" >/dev/null 2>&1
  for _ in $(seq "$rounds"); do
    ours=$("$bin/pipit" bench -m "$out" -p 128 -n 64 -r "$reps" -t "$threads" --json --roofline)
    theirs=$("${PEER_BENCH:-$peer/llama-bench}" -m "$f.gguf" -p 128 -n 64 -r "$reps" -t "$threads" -o csv 2>/dev/null)
    python3 - "$q" "$ours" "$theirs" >>"$log" <<'PY'
import csv, io, json, sys
q, ours, peer = sys.argv[1], json.loads(sys.argv[2]), list(csv.DictReader(io.StringIO(sys.argv[3])))
pp = next(float(r["avg_ts"]) for r in peer if r["n_prompt"] == "128" and r["n_gen"] == "0")
tg = next(float(r["avg_ts"]) for r in peer if r["n_gen"] == "64" and r["n_prompt"] == "0")
print(json.dumps({"q": q, "pp": ours["pp_tps"], "tg": ours["tg_tps"], "gbps": ours["tg_weight_gbps"],
                  "roof": ours["roofline_gbps"],
                  "peer_pp": pp, "peer_tg": tg, "kernel": ours["kernel"]}))
PY
  done
done
python3 - "$log" "$threads" "$reps" "$rounds" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
files = list(dict.fromkeys(r["q"] for r in rows))
med = lambda q, k: statistics.median(r[k] for r in rows if r["q"] == q)
print("| file | pipit pp128 | llama.cpp pp128 | ratio | pipit tg64 | llama.cpp tg64 | ratio | pipit weights GB/s | roofline GB/s | % of roofline |")
print("|---|---|---|---|---|---|---|---|---|---|")
for q in files:
    pp, ppp, tg, ptg = med(q, "pp"), med(q, "peer_pp"), med(q, "tg"), med(q, "peer_tg")
    print(f"| {q} | {pp:.1f} | {ppp:.1f} | {pp/ppp:.2f}x | {tg:.1f} | {ptg:.1f} | {tg/ptg:.2f}x | {med(q, 'gbps'):.1f} | {med(q, 'roof'):.1f} | {100 * med(q, 'gbps') / med(q, 'roof'):.0f}% |")
print(f"\npipit kernel path: {rows[0]['kernel']}, threads: {sys.argv[2]}, repetitions: {sys.argv[3]}, "
      f"rounds: {sys.argv[4]} (medians over rounds)\n\nper round (pipit pp / llama.cpp pp, pipit tg / llama.cpp tg):")
for q in files:
    print(f"- {q}: " + "; ".join(f"{r['pp']:.0f}/{r['peer_pp']:.0f}, {r['tg']:.0f}/{r['peer_tg']:.0f}"
                                 for r in rows if r["q"] == q))
PY
