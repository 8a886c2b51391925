#!/usr/bin/env bash
# Converter tests on the real models: fetches them, builds pipit-convert (--profile ci),
# converts SmolLM2-135M-Instruct Q4_1 and Gemma 3 270M Q4_K_M, exports SmolLM2 as Hugging
# Face directories (bf16 and f16) and converts those, then checks everything against the
# `gguf` Python package (tools/check_oracle.py). Outputs go to models/ (git-ignored); a
# conversion is skipped when its output is newer than both its input and the converter.
# Any failure stops the script with a non-zero exit and a message.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
models="$root/models"
target="${CARGO_TARGET_DIR:-$root/target}"
conv="$target/ci/pipit-convert"
trap 'echo "test-models.sh: FAILED (line $LINENO)" >&2' ERR

"$root/tools/fetch-models.sh" all >/dev/null
(cd "$root" && cargo build --quiet -p pipit-convert --profile ci)

fresh() { # fresh OUT INPUT...: OUT exists and is newer than every INPUT
  local out=$1; shift
  [ -e "$out" ] || return 1
  for dep in "$@"; do [ "$out" -nt "$dep" ] || return 1; done
}

# convert INPUT OUT [DEP...]: runs pipit-convert, keeping its table in OUT.convert.txt.
convert() {
  local in=$1 out=$2; shift 2
  if fresh "$out" "$in" "$conv" "$@"; then
    echo "up to date: $out"
    return 0
  fi
  echo "converting $in -> $out"
  "$conv" "$in" -o "$out" >"$out.convert.txt" 2>"$out.convert.log" \
    || { cat "$out.convert.log" >&2; return 1; }
  tail -n 3 "$out.convert.txt"
}

convert "$models/SmolLM2-135M-Instruct.Q4_1.gguf" "$models/SmolLM2-135M-Instruct.pipit"
convert "$models/gemma-3-270m-q4_k_m.gguf" "$models/gemma-3-270m.pipit"
echo "Gemma 3 270M per-tensor relative RMSE: $models/gemma-3-270m.pipit.convert.txt"

for dt in bf16 f16; do
  dir="$models/hf-smollm2-$dt"
  if ! fresh "$dir/model.safetensors" "$models/SmolLM2-135M-Instruct.Q4_1.gguf" "$root/tools/gguf_to_hf.py"; then
    python3 "$root/tools/gguf_to_hf.py" "$models/SmolLM2-135M-Instruct.Q4_1.gguf" "$dir" --dtype "$dt"
  fi
  convert "$dir" "$models/hf-smollm2-$dt.pipit" "$dir/model.safetensors" "$dir/tokenizer.json" "$dir/config.json"
done

# Tiny random models of every family (tools/make_tiny_models.py) with the real vocabularies
# of llama.cpp's source tree, plus its tokenizer test vectors: the inputs of
# tests/families.rs. Only the source is needed (the llama-cpp-python sdist from PyPI, where
# ../shared/scripts/peer-llama-cpp.sh also unpacks it before building the peer's tools).
peer_src="${PEER_DIR:-$HOME/.cache/pipit-peer}/src"
if [ ! -d "$peer_src/llama_cpp_python-0.3.36/vendor/llama.cpp" ]; then
  mkdir -p "$peer_src"
  # pip prepares the sdist's metadata with CMake (scikit-build-core).
  command -v cmake >/dev/null || { apt-get update -qq && apt-get install -y -qq cmake >/dev/null; }
  (cd "$peer_src" \
    && { [ -f llama_cpp_python-0.3.36.tar.gz ] || python3 -m pip download -q --no-deps \
           --no-binary :all: -d . llama-cpp-python==0.3.36; } \
    && tar xzf llama_cpp_python-0.3.36.tar.gz)
fi
llama_cpp="$peer_src/llama_cpp_python-0.3.36/vendor/llama.cpp"
tiny="$models/tiny"
mkdir -p "$tiny"
for v in llama-bpe qwen2 phi-3 llama-spm; do
  cp "$llama_cpp/models/ggml-vocab-$v.gguf.inp" "$llama_cpp/models/ggml-vocab-$v.gguf.out" "$tiny/"
done
for f in llama3 mistral qwen2 qwen3 phi3 gemma2 gemma3; do
  fresh "$tiny/$f.gguf" "$root/tools/make_tiny_models.py" \
    || python3 "$root/tools/make_tiny_models.py" "$llama_cpp" "$tiny" "$f"
  convert "$tiny/$f.gguf" "$tiny/$f.pipit"
done
# The seeded generator reproduces the bytes llama.cpp's reference numbers were measured on
# (tests/data/families.json, from tools/family_reference.py).
python3 - "$tiny" "$root/tests/data/families.json" <<'PY'
import hashlib, json, os, sys
if not os.path.exists(sys.argv[2]):
    sys.exit(f"{sys.argv[2]} is missing: run tools/family_reference.py PEER_BIN_DIR")
ref = json.load(open(sys.argv[2]))
for f, r in ref.items():
    got = hashlib.sha256(open(f"{sys.argv[1]}/{f}.gguf", "rb").read()).hexdigest()
    if got != r["sha256"]:
        sys.exit(f"{f}.gguf: sha256 {got}, tests/data/families.json has {r['sha256']}")
PY
# Their Hugging Face exports (f32; Llama 3's RoPE scaling as the parameters
# make_tiny_models.py used; Gemma's norms as w with 1 + w applied), converted:
# tests/families.rs compares the logits.
llama3_scaling=$(python3 -c "import sys, json; sys.path.insert(0, '$root/tools'); import make_tiny_models as m; print(json.dumps(dict(rope_type='llama3', **m.LLAMA3_SCALING)))")
for f in llama3 mistral qwen2 qwen3 phi3 gemma2 gemma3; do
  dir="$tiny/hf-$f"
  extra=()
  [ "$f" = llama3 ] && extra=(--rope-scaling "$llama3_scaling")
  fresh "$dir/model.safetensors" "$tiny/$f.gguf" "$root/tools/gguf_to_hf.py" \
    || python3 "$root/tools/gguf_to_hf.py" "$tiny/$f.gguf" "$dir" --dtype f32 "${extra[@]}"
  convert "$dir" "$tiny/hf-$f.pipit" "$dir/model.safetensors" "$dir/config.json"
done

python3 "$root/tools/check_oracle.py"
echo "test-models.sh: all model conversions checked"
