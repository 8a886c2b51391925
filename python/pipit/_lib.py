"""Loading libpipit and declaring its C ABI (include/pipit.h, ABI version 1) for ctypes.

The library is the one bundled in this package, or the one ``PIPIT_LIB`` names. Functions
that later versions of the library add are looked up once here and are ``None`` when the
loaded library lacks them; the API raises ``UnsupportedError`` for those.
"""

from __future__ import annotations

import ctypes
import os
import sys
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_char,
    c_char_p,
    c_double,
    c_float,
    c_int,
    c_int32,
    c_size_t,
    c_uint32,
    c_uint64,
    c_void_p,
)
from pathlib import Path
from typing import Any, Callable, Optional

from .errors import UnsupportedError, error_for_status

ABI_VERSION = 1

OPEN_NO_MMAP = 1
OPEN_VERIFY = 2
KV_TYPES = {"f16": 0, "f32": 1, "int8": 2}

# PIPIT_STOP_*: why the last pipit_generate ended.
STOP_REASONS = {
    0: None,
    1: "end_of_text",
    2: "max_tokens",
    3: "stop_string",
    4: "callback",
    5: "context_full",
}

STATUS_BUFFER_TOO_SMALL = 7
STATUS_CANCELLED = 9


class ModelInfo(Structure):
    _fields_ = [
        ("n_vocab", c_uint32),
        ("n_ctx_train", c_uint32),
        ("n_layer", c_uint32),
        ("d_model", c_uint32),
        ("bos_token", c_int32),
        ("eos_token", c_int32),
        ("weights_bytes", c_uint64),
        ("architecture", c_char_p),
        ("name", c_char_p),
    ]


class SessionParams(Structure):
    _fields_ = [
        ("n_ctx", c_uint32),
        ("n_threads", c_uint32),
        ("kv_type", c_uint32),
        ("flags", c_uint32),
        ("memory_limit", c_uint64),
    ]


class SamplerParams(Structure):
    _fields_ = [
        ("temperature", c_float),
        ("top_k", c_uint32),
        ("top_p", c_float),
        ("min_p", c_float),
        ("repeat_penalty", c_float),
        ("repeat_last_n", c_uint32),
        ("seed", c_uint64),
    ]


class MemoryReport(Structure):
    _fields_ = [
        ("weights_mapped", c_uint64),
        ("kv_cache", c_uint64),
        ("scratch", c_uint64),
        ("total", c_uint64),
    ]


class ChatMessage(Structure):
    _fields_ = [("role", c_char_p), ("content", c_char_p)]


assert ctypes.sizeof(SessionParams) == 24
assert ctypes.sizeof(SamplerParams) == 32
assert ctypes.sizeof(MemoryReport) == 32

# The piece is not NUL-terminated: a void pointer, read with its length.
TOKEN_CALLBACK = CFUNCTYPE(c_int, c_void_p, c_size_t, c_int32, c_void_p)

status = c_int32
model_p = c_void_p
session_p = c_void_p
constraint_p = c_void_p

# name: (restype, argtypes). The functions of ABI version 1, which every library has.
_REQUIRED = {
    "pipit_abi_version": (c_uint32, []),
    "pipit_status_string": (c_char_p, [status]),
    "pipit_last_error": (c_char_p, []),
    "pipit_model_open_ex": (status, [c_char_p, c_uint32, POINTER(model_p)]),
    "pipit_model_free": (None, [model_p]),
    "pipit_model_get_info": (status, [model_p, POINTER(ModelInfo)]),
    "pipit_session_params_default": (None, [POINTER(SessionParams)]),
    "pipit_memory_estimate": (
        status,
        [model_p, POINTER(SessionParams), POINTER(MemoryReport)],
    ),
    "pipit_session_new": (status, [model_p, POINTER(SessionParams), POINTER(session_p)]),
    "pipit_session_free": (None, [session_p]),
    "pipit_session_reset": (status, [session_p]),
    "pipit_session_n_past": (c_uint32, [session_p]),
    "pipit_tokenize": (
        status,
        [model_p, c_char_p, c_size_t, c_int, POINTER(c_int32), c_size_t, POINTER(c_size_t)],
    ),
    "pipit_token_to_piece": (status, [model_p, c_int32, POINTER(c_void_p), POINTER(c_size_t)]),
    "pipit_session_eval": (status, [session_p, POINTER(c_int32), c_size_t]),
    "pipit_session_logits": (status, [session_p, POINTER(POINTER(c_float)), POINTER(c_size_t)]),
    "pipit_sampler_params_default": (None, [POINTER(SamplerParams)]),
    "pipit_session_sample": (status, [session_p, POINTER(SamplerParams), POINTER(c_int32)]),
    "pipit_session_score": (status, [session_p, POINTER(c_int32), c_size_t, POINTER(c_double)]),
    "pipit_generate": (
        status,
        [
            session_p,
            c_char_p,
            c_size_t,
            POINTER(SamplerParams),
            c_uint32,
            TOKEN_CALLBACK,
            c_void_p,
        ],
    ),
    "pipit_session_cancel": (status, [session_p]),
}

# Functions added after the first release of ABI version 1, with their signatures from the
# issues that add them; absent ones are None.
_OPTIONAL = {
    "pipit_chat_render": (
        status,
        [
            model_p,
            c_char_p,
            POINTER(ChatMessage),
            c_size_t,
            POINTER(c_char),
            c_size_t,
            POINTER(c_size_t),
        ],
    ),
    "pipit_model_adds_bos": (c_int, [model_p]),
    "pipit_session_new_ex": (
        status,
        [model_p, POINTER(SessionParams), c_uint32, POINTER(session_p)],
    ),
    "pipit_session_truncate": (status, [session_p, c_uint32]),
    "pipit_session_save": (status, [session_p, c_void_p, c_size_t, POINTER(c_size_t)]),
    "pipit_session_load": (status, [session_p, c_void_p, c_size_t]),
    "pipit_session_set_stop": (status, [session_p, POINTER(c_char_p), c_size_t]),
    "pipit_session_stop_reason": (status, [session_p, POINTER(c_int32)]),
    "pipit_choose": (
        status,
        [
            session_p,
            c_char_p,
            c_size_t,
            POINTER(c_char_p),
            c_size_t,
            POINTER(c_double),
            POINTER(c_size_t),
        ],
    ),
    "pipit_beam_search": (
        status,
        [
            session_p,
            c_char_p,
            c_size_t,
            c_uint32,
            c_float,
            c_uint32,
            POINTER(c_void_p),
            POINTER(c_size_t),
            POINTER(c_double),
        ],
    ),
    "pipit_constraint_regex": (status, [model_p, c_char_p, POINTER(constraint_p)]),
    "pipit_constraint_json_schema": (status, [model_p, c_char_p, POINTER(constraint_p)]),
    "pipit_constraint_gbnf": (status, [model_p, c_char_p, POINTER(constraint_p)]),
    "pipit_constraint_choices": (
        status,
        [model_p, POINTER(c_char_p), c_size_t, POINTER(constraint_p)],
    ),
    "pipit_constraint_free": (None, [constraint_p]),
    "pipit_session_set_constraint": (status, [session_p, constraint_p]),
}


def library_filename() -> str:
    """The file name of the shared library on this platform."""
    if sys.platform == "darwin":
        return "libpipit.dylib"
    if sys.platform == "win32":
        return "pipit.dll"
    return "libpipit.so"


def library_path() -> str:
    """The library this package loads: ``PIPIT_LIB`` when set, else the bundled one."""
    env = os.environ.get("PIPIT_LIB")
    if env:
        return env
    return str(Path(__file__).resolve().with_name(library_filename()))


class Lib:
    """The loaded library: every function as an attribute (``None`` when optional and
    absent)."""

    def __init__(self, path: str) -> None:
        if not os.path.isfile(path):
            how = (
                "PIPIT_LIB names it"
                if os.environ.get("PIPIT_LIB")
                else "install the package with `pip install ./python` from a pipit checkout, "
                "or set PIPIT_LIB to a libpipit built with `cargo build --release`"
            )
            raise ImportError(f"pipit: the library {path} does not exist ({how})")
        self.path = path
        self.dll = ctypes.CDLL(path)
        for name, (restype, argtypes) in _REQUIRED.items():
            try:
                fn = getattr(self.dll, name)
            except AttributeError:
                raise ImportError(
                    f"pipit: {path} has no {name}: not a pipit library of ABI version 1"
                ) from None
            fn.restype, fn.argtypes = restype, argtypes
            setattr(self, name, fn)
        for name, (restype, argtypes) in _OPTIONAL.items():
            fn = getattr(self.dll, name, None)
            if fn is not None:
                fn.restype, fn.argtypes = restype, argtypes
            setattr(self, name, fn)
        version = self.pipit_abi_version()
        if version != ABI_VERSION:
            raise ImportError(
                f"pipit: {path} implements ABI version {version}; this package needs {ABI_VERSION}"
            )

    def __getattr__(self, name: str) -> Any:
        # Only reached for names that are not C functions (those are set in __init__).
        raise AttributeError(name)

    def has(self, name: str) -> bool:
        """Whether the loaded library has the C function ``name``."""
        return getattr(self, name, None) is not None

    def optional(self, name: str, feature: str) -> Callable[..., Any]:
        """The optional function ``name``, or ``UnsupportedError`` naming ``feature``."""
        fn: Optional[Callable[..., Any]] = getattr(self, name, None)
        if fn is None:
            raise UnsupportedError(
                f"{feature} needs {name}, which the library {self.path} does not have"
            )
        return fn

    def check(self, st: int) -> None:
        """Raises the error for a nonzero status. Call it on the thread that made the call:
        the message is thread-local."""
        if st != 0:
            raise self.error(st)

    def error(self, st: int) -> Exception:
        """The exception for status ``st`` with this thread's last error message."""
        raw = self.pipit_last_error()
        message = raw.decode("utf-8", "replace") if raw else ""
        if not message:
            name = self.pipit_status_string(st)
            message = name.decode("utf-8", "replace") if name else f"status {st}"
        return error_for_status(st, message)


lib = Lib(library_path())
