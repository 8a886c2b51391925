#!/usr/bin/env bash
# The Python package as a user gets it: `pip wheel ./python` (its build hook runs cargo and
# bundles libpipit), the wheel installed into a fresh virtual environment without the Rust
# toolchain on PATH and with PIPIT_LIB unset, then the README's Python example run from it.
# PIPIT_CARGO_PROFILE picks the cargo profile the hook builds (here `ci` unless set: the
# suite has just built it; users get `release`).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

PIPIT_CARGO_PROFILE=${PIPIT_CARGO_PROFILE:-ci} \
  python3 -m pip wheel --quiet --disable-pip-version-check ./python -w "$work/dist"
wheel=$(echo "$work"/dist/pipit-*.whl)
platform=$(python3 -c 'import sysconfig; print(sysconfig.get_platform().replace("-", "_").replace(".", "_"))')
[ "$(basename "$wheel")" = "pipit-0.1.0-py3-none-$platform.whl" ] || {
  echo "unexpected wheel name: $(basename "$wheel") (want py3-none-$platform)" >&2
  exit 1
}
python3 - "$wheel" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
if not {"pipit/libpipit.so", "pipit/libpipit.dylib"} & set(names):
    sys.exit(f"the wheel does not contain the library: {names}")
PY

# A machine without Rust: no cargo on PATH, no PIPIT_LIB, nothing from PyPI.
python3 -m venv "$work/venv"
no_rust() { env -u PIPIT_LIB -u PYTHONPATH PATH=/usr/local/bin:/usr/bin:/bin "$@"; }
no_rust "$work/venv/bin/pip" install --quiet --no-index --disable-pip-version-check "$wheel"

lib=$(cd "$work" && no_rust "$work/venv/bin/python" -c 'import pipit; print(pipit.library_path())')
case "$lib" in
  "$work"/venv/*/site-packages/pipit/libpipit.*) ;;
  *) echo "the installed package loads $lib, not its bundled library" >&2; exit 1 ;;
esac

# The README's Python example (the first python block of its "Python" section), run from
# the checkout so that its model path resolves.
awk '/^## Python/ { s = 1 } s && /^```python/ { p = 1; next } p && /^```/ { exit } p' README.md >"$work/example.py"
[ -s "$work/example.py" ] || { echo "README.md has no Python example" >&2; exit 1; }
out=$(cd "$root" && no_rust "$work/venv/bin/python" "$work/example.py")
printf '%s\n' "$out"
[ "$(printf '%s' "$out" | tr -d '[:space:]' | wc -c)" -gt 20 ] || {
  echo "the README example printed (almost) nothing" >&2
  exit 1
}
echo "python wheel: $(basename "$wheel") installs and runs without Rust"
