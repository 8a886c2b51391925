#!/usr/bin/env bash
# Hardening checks after the test suite (issue 13), run by .ci/run:
#   1. AddressSanitizer over the unsafe-heavy tests: kernels (SIMD against scalar), model
#      mapping and loading, the C ABI called from Rust, the thread pool, the forward pass.
#      Nightly, its own target dir; doctests skipped (ASan doctests need -Zbuild-std). The
#      C programs of tests/ffi.rs are not built with ASan (they link the plain library).
#   2. Each cargo-fuzz target for FUZZ_SECONDS (default 60) from the seeds in fuzz/seeds,
#      new inputs kept outside the tree; a crash fails CI and leaves its input in
#      target/fuzz-artifacts/TARGET/ (make it a regression test, see fuzz/README.md).
#   3. The small library (tools/build-small.sh: std rebuilt without its backtrace
#      symbolizer) through the Python package's tests, which call the whole C ABI.
# Needs the nightly toolchain; installs cargo-fuzz and nightly's rust-src when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
step() { printf '\n== %s\n' "$*" >&2; }
t0=$(date +%s)

step "AddressSanitizer: kernels, loader, C ABI, thread pool, forward pass"
RUSTFLAGS="-Zsanitizer=address -Cunsafe-allow-abi-mismatch=sanitizer" \
ASAN_OPTIONS="detect_leaks=1:abort_on_error=1" \
CARGO_TARGET_DIR=target/asan \
  cargo +nightly test --profile ci --target x86_64-unknown-linux-gnu -p pipit \
    --lib --test kernels --test loader --test forward --test hostile --test faults
t1=$(date +%s)
echo "CI: ASan tests in $(( t1 - t0 )) s" >&2

step "fuzz targets, ${FUZZ_SECONDS} s each"
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo +nightly install cargo-fuzz --locked
fi
export PIPIT_FUZZ_MODEL=${PIPIT_FUZZ_MODEL:-$PWD/models/SmolLM2-135M-Instruct.pipit}
for target in parse model mutate tokenize capi constraint; do
  corpus="target/fuzz-corpus/$target"
  artifacts="target/fuzz-artifacts/$target/"
  mkdir -p "$corpus" "$artifacts" "fuzz/seeds/$target"
  step "fuzz $target"
  cargo +nightly fuzz run --release "$target" "$corpus" "fuzz/seeds/$target" -- \
    -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 -timeout=20 \
    -artifact_prefix="$artifacts" -print_final_stats=1 2>&1 | tail -n 12
done
step "small library: tools/build-small.sh, then the Python package's tests over it"
tools/build-small.sh
PIPIT_LIB=target/small/x86_64-unknown-linux-gnu/libpipit.so PIPIT_BIN=target/ci/pipit \
  python3 -m pytest -q python/tests

echo "CI: hardening checks in $(( $(date +%s) - t0 )) s (ASan $(( t1 - t0 )) s)" >&2
