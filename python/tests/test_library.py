"""Finding the library: PIPIT_LIB, and the package's own metadata."""

from __future__ import annotations

import _ctypes
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import pipit

REPO = Path(__file__).resolve().parents[2]


def run_python(code: str, env_lib: "str | None") -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO / "python"))
    env.pop("PIPIT_LIB", None)
    if env_lib is not None:
        env["PIPIT_LIB"] = env_lib
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


def test_pipit_lib_picks_the_library(tmp_path: Path, model_path: Path) -> None:
    copy = tmp_path / "elsewhere" / "libpipit-copy.so"
    copy.parent.mkdir()
    shutil.copy(pipit.library_path(), copy)
    out = run_python(
        "import pipit, sys\n"
        "print(pipit.library_path())\n"
        f"m = pipit.Model({str(model_path)!r})\n"
        "print(m.tokenize('Hello world', add_bos=False))\n",
        str(copy),
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == str(copy)
    assert lines[1] == str(pipit.Model(model_path).tokenize("Hello world", add_bos=False))
    # The copy, not another libpipit, is what the process mapped.
    if sys.platform.startswith("linux"):
        out = run_python("import pipit\nprint(open('/proc/self/maps').read())", str(copy))
        assert str(copy) in out.stdout and "target/ci/libpipit" not in out.stdout


def test_a_missing_library_is_a_clear_import_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "libpipit.so"
    out = run_python("import pipit", str(missing))
    assert out.returncode != 0
    assert "ImportError" in out.stderr and str(missing) in out.stderr
    # Without PIPIT_LIB, a source checkout has no bundled library: the message says how to
    # get one.
    bundled = REPO / "python" / "pipit" / "libpipit.so"
    if not bundled.exists():
        out = run_python("import pipit", None)
        assert out.returncode != 0 and "pip install ./python" in out.stderr


def test_not_a_pipit_library(tmp_path: Path) -> None:
    # A shared library that loads but is not pipit: ctypes' own extension module.
    other = getattr(_ctypes, "__file__", None)
    if other is None:
        pytest.skip("_ctypes is built into this interpreter")
    out = run_python("import pipit", other)
    assert out.returncode != 0 and "not a pipit library" in out.stderr


def test_version_matches_the_crate() -> None:
    cargo = (REPO / "Cargo.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', cargo, re.M)
    assert version is not None
    pyproject = (REPO / "python" / "pyproject.toml").read_text()
    assert f'version = "{version.group(1)}"' in pyproject
    assert pipit.__version__ == version.group(1)


def test_typed() -> None:
    assert (REPO / "python" / "pipit" / "py.typed").is_file()
