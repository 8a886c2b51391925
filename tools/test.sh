#!/usr/bin/env bash
# Every test of the project, from a fresh clone: installs the Python oracles, fetches and
# converts the reference models, checks the converter against the `gguf` package, then runs
# the whole Rust test suite (optimized test profile, no LTO), the Python package's tests and
# wheel check, and the aarch64 suite under qemu.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

step() { printf '\n== %s\n' "$*" >&2; }

step "python oracles"
python3 -m pip install --quiet --disable-pip-version-check -r tools/requirements-test.txt

step "models: fetch, convert, check against the gguf package"
tools/test-models.sh

step "rust test suite (profile ci)"
cargo test --profile ci --workspace --no-fail-fast

step "python package: pytest over the C ABI (profile ci library and CLI)"
cargo build --profile ci -p pipit
PIPIT_LIB=target/ci/libpipit.so PIPIT_BIN=target/ci/pipit python3 -m pytest -q python/tests

step "python package: wheel into a fresh venv, no Rust, README example"
tools/test-python-wheel.sh

if [ -x tools/test-aarch64.sh ]; then
  step "aarch64 under qemu"
  tools/test-aarch64.sh
fi
