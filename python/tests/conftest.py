"""Test setup: the package from this checkout, the library cargo built, the real SmolLM2.

`PIPIT_LIB` picks the library; unset, the first of target/ci and target/release that has
one (tools/test.sh builds target/ci). `PIPIT_BIN` likewise picks the `pipit` CLI, whose
output some tests compare with.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SMOLLM2 = REPO / "models" / "SmolLM2-135M-Instruct.pipit"


def _first_built(name: str) -> Path:
    for profile in ("ci", "release"):
        p = REPO / "target" / profile / name
        if p.is_file():
            return p
    raise RuntimeError(f"no {name} in target/ci or target/release: build it with cargo first")


if not os.environ.get("PIPIT_LIB"):
    os.environ["PIPIT_LIB"] = str(_first_built("libpipit.so" if sys.platform != "darwin" else "libpipit.dylib"))
sys.path.insert(0, str(REPO / "python"))

import pipit  # noqa: E402


@pytest.fixture(scope="session")
def pipit_bin() -> Path:
    env = os.environ.get("PIPIT_BIN")
    return Path(env) if env else _first_built("pipit")


@pytest.fixture(scope="session")
def model_path() -> Path:
    assert SMOLLM2.is_file(), f"{SMOLLM2} is missing: run tools/test-models.sh"
    return SMOLLM2


@pytest.fixture(scope="session")
def model(model_path: Path) -> "pipit.Model":
    with pipit.Model(model_path) as m:
        yield m


@pytest.fixture
def session(model: "pipit.Model") -> "pipit.Session":
    with model.session(n_ctx=1024, n_threads=2) as s:
        yield s
