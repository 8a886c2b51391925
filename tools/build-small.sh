#!/usr/bin/env bash
# The smallest libpipit.so, for apps that count their bytes: the release library (same code,
# same speed) linked against a standard library rebuilt without its backtrace symbolizer.
#
#   tools/build-small.sh [TARGET]     (default: this machine's; e.g. aarch64-unknown-linux-gnu)
#
# std's default panic hook can print a symbolized backtrace, so every Rust library that can
# panic carries std's DWARF reader (gimli, addr2line, a zlib inflater): about 185 KB of the
# x86-64 library. Only nightly Cargo can rebuild std without it (-Z build-std). Panics still
# unwind: the C ABI still turns them into PIPIT_ERR_INTERNAL, with the message on stderr and
# no backtrace. Writes target/small/TARGET/libpipit.so, stripped, and prints its size.
# Needs the nightly toolchain and its rust-src component (installed when missing); for
# aarch64, the aarch64-linux-gnu cross linker and strip (tools/test-aarch64.sh's toolchain;
# STRIP names another strip).
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(rustc -vV | sed -n 's/^host: //p')
target=${1:-$host}
if ! rustup component list --toolchain nightly --installed | grep -q '^rust-src'; then
  rustup component add rust-src --toolchain nightly
fi
strip_tool=${STRIP:-strip}
if [ "$target" = aarch64-unknown-linux-gnu ] && [ "$host" != "$target" ]; then
  export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER:-aarch64-linux-gnu-gcc}
  strip_tool=${STRIP:-aarch64-linux-gnu-strip}
fi
cargo +nightly build --release --lib -p pipit --target "$target" \
  -Z build-std=std,panic_unwind -Z build-std-features=panic-unwind
out="target/small/$target"
mkdir -p "$out"
"$strip_tool" -o "$out/libpipit.so" "target/$target/release/libpipit.so"
echo "$out/libpipit.so: $(stat -c %s "$out/libpipit.so") bytes, stripped"
