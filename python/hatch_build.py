"""Hatchling build hook: builds libpipit with cargo and bundles it in a platform wheel.

`pip install ./python` and `pip wheel ./python` run `cargo build --release -p pipit --lib`
in the checkout this directory belongs to, copy the shared library into the `pipit`
package and tag the wheel `py3-none-<platform>` (pure Python over ctypes: any Python 3,
one platform). `PIPIT_CARGO_PROFILE` builds another cargo profile (the test suite uses
`ci`, which skips the slow fat LTO); `CARGO` and `CARGO_TARGET_DIR` are honoured as cargo
does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any, Dict

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


def library_filename() -> str:
    if sys.platform == "darwin":
        return "libpipit.dylib"
    if sys.platform == "win32":
        return "pipit.dll"
    return "libpipit.so"


def platform_tag() -> str:
    """This machine's wheel platform tag, e.g. `linux_x86_64`, `linux_aarch64`."""
    return sysconfig.get_platform().replace("-", "_").replace(".", "_")


def build_library(checkout: Path, profile: str) -> Path:
    """Runs cargo and returns the path of the cdylib it produced."""
    cargo = os.environ.get("CARGO", "cargo")
    cmd = [
        cargo,
        "build",
        "--locked",
        "-p",
        "pipit",
        "--lib",
        "--message-format=json-render-diagnostics",
    ]
    cmd += ["--release"] if profile == "release" else ["--profile", profile]
    print(f"pipit build hook: {' '.join(cmd)} (in {checkout})", file=sys.stderr, flush=True)
    try:
        proc = subprocess.run(
            cmd, cwd=checkout, stdout=subprocess.PIPE, stderr=None, text=True, check=False
        )
    except FileNotFoundError:
        raise RuntimeError(
            f"pipit: building the library needs cargo ({cargo!r} was not found); install Rust "
            "from https://rustup.rs, or install a prebuilt wheel"
        ) from None
    if proc.returncode != 0:
        raise RuntimeError(f"pipit: `{' '.join(cmd)}` failed (exit {proc.returncode})")
    name = library_filename()
    for line in proc.stdout.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        target = msg.get("target") or {}
        if msg.get("reason") == "compiler-artifact" and target.get("name") == "pipit":
            for f in msg.get("filenames", []):
                if Path(f).name == name:
                    return Path(f)
    raise RuntimeError(f"pipit: cargo finished but reported no {name}")


class CargoBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: Dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        checkout = Path(self.root).resolve().parent
        if not (checkout / "Cargo.toml").is_file() or not (checkout / "include/pipit.h").is_file():
            raise RuntimeError(
                f"pipit: {self.root} is not inside a pipit checkout (no ../Cargo.toml); "
                "build the package from the repository's python/ directory"
            )
        profile = os.environ.get("PIPIT_CARGO_PROFILE", "release")
        lib = build_library(checkout, profile)
        build_data["force_include"][str(lib)] = f"pipit/{library_filename()}"
        build_data["pure_python"] = False
        build_data["tag"] = f"py3-none-{platform_tag()}"
