#!/usr/bin/env bash
# Issue 12's cross-ISA check: the same model and prompt on x86-64 (native) and on aarch64
# (the CLI cross-built and run under qemu user-mode emulation).
#   1. PIPIT_KERNELS=scalar on both: the logits after the prompt (`pipit run --dump-logits`)
#      must be bit-identical (the scalar kernels are the spec, and the rest of the forward
#      pass is plain IEEE arithmetic in the same order on every target).
#   2. Each ISA's best path (x86: this CPU's best; aarch64: -cpu cortex-a76 = dotprod and
#      -cpu max = i8mm): greedy text of N tokens must equal x86's, except at a near-tie; the
#      script prints each best path's top-2 margin after the prompt and the largest logit
#      difference to the scalar logits, to tell the two apart.
# qemu runs a 270M model slowly (minutes per path): keep the prompt short. Not part of
# tools/test-aarch64.sh's default run; `PIPIT_CROSS_ISA=1 tools/test-aarch64.sh` runs it
# after the kernel tests.
#
# Usage: tools/cross-isa-check.sh [MODEL] (default models/gemma-3-270m.pipit).
# Env: PIPIT_CROSS_PROMPT (default "The capital of France is"), PIPIT_CROSS_N (16),
# PIPIT_CROSS_THREADS (2), PIPIT_AARCH64_TARGET_DIR (as tools/test-aarch64.sh).
# Toolchain: as tools/test-aarch64.sh (it must have run once, or its packages be present).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
model=${1:-models/gemma-3-270m.pipit}
prompt=${PIPIT_CROSS_PROMPT:-The capital of France is}
n=${PIPIT_CROSS_N:-16}
threads=${PIPIT_CROSS_THREADS:-2}
[ -f "$model" ] || { echo "cross-isa: $model not found (tools/fetch-models.sh)" >&2; exit 1; }
unset PIPIT_KERNELS

# The native build: this checkout's own target dir and toolchain (tools/test-aarch64.sh,
# which may call this script, exports the cross build's RUSTC and CARGO_TARGET_DIR).
env -u RUSTC -u CARGO_TARGET_DIR cargo build -q --profile ci --bin pipit
x86="$repo/target/ci/pipit"
arm_dir="${PIPIT_AARCH64_TARGET_DIR:-$repo/target/aarch64-cross}"
RUSTC=/usr/bin/rustc CARGO_TARGET_DIR="$arm_dir" \
  CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
  cargo build -q --profile ci --bin pipit --target aarch64-unknown-linux-gnu
arm="$arm_dir/aarch64-unknown-linux-gnu/ci/pipit"

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# run NAME KERNELS CMD...: greedy text of N tokens, logits after the prompt in $out/NAME.f32.
run() {
  local name=$1 kernels=$2
  shift 2
  local t0
  t0=$(date +%s)
  PIPIT_KERNELS=$kernels "$@" run -m "$model" -t "$threads" --ctx 256 -p "$prompt" \
    -n "$n" --temp 0 --ignore-eos --dump-logits "$out/$name.f32" >"$out/$name.txt" \
    2>"$out/$name.err" || { cat "$out/$name.err" >&2; return 1; }
  echo "cross-isa: $name ($(grep -o 'kernels [a-z0-9]*' "$out/$name.err")) in $(( $(date +%s) - t0 )) s: $(head -c 200 "$out/$name.txt" | tr '\n' ' ')"
}
# Top-2 margin of logits file $1, and the largest |difference| to logits file $2.
stats() {
  python3 - "$1" "$2" <<'PY'
import sys, numpy as np
a = np.fromfile(sys.argv[1], dtype="<f4"); b = np.fromfile(sys.argv[2], dtype="<f4")
top = np.sort(a)[-2:]
print(f"top-2 margin {top[1] - top[0]:.5f}, argmax {int(a.argmax())}, "
      f"max |logit - scalar logit| {float(np.abs(a - b).max()):.3g}")
PY
}

status=0
run x86-scalar scalar "$x86"
run a64-scalar scalar qemu-aarch64 -cpu max "$arm"
if cmp -s "$out/x86-scalar.f32" "$out/a64-scalar.f32"; then
  echo "cross-isa: scalar logits bit-identical ($(( $(stat -c %s "$out/x86-scalar.f32") / 4 )) values)"
else
  echo "cross-isa: scalar logits DIFFER: $(stats "$out/a64-scalar.f32" "$out/x86-scalar.f32")"
  status=1
fi
cmp -s "$out/x86-scalar.txt" "$out/a64-scalar.txt" || { echo "cross-isa: scalar text differs"; status=1; }

run x86-best "" "$x86"
echo "cross-isa: x86-best $(stats "$out/x86-best.f32" "$out/x86-scalar.f32")"
for cpu in cortex-a76 max; do
  run "a64-$cpu" "" qemu-aarch64 -cpu "$cpu" "$arm"
  echo "cross-isa: a64-$cpu $(stats "$out/a64-$cpu.f32" "$out/x86-scalar.f32")"
  if cmp -s "$out/x86-best.txt" "$out/a64-$cpu.txt"; then
    echo "cross-isa: a64-$cpu greedy text equals x86-best's"
  else
    echo "cross-isa: a64-$cpu greedy text DIFFERS from x86-best's (a near-tie? see the margins)"
    status=1
  fi
done
exit $status
