"""pipit: a small, fast runtime for quantized language models, from Python.

A thin typed layer over libpipit's C ABI (ctypes, no dependencies)::

    import pipit

    with pipit.Model("models/SmolLM2-135M-Instruct.pipit") as model:
        session = model.session(n_ctx=2048)
        for piece in session.generate("The capital of France is", max_tokens=32, temperature=0):
            print(piece, end="", flush=True)

``PIPIT_LIB=/path/libpipit.so`` loads another build of the library than the bundled one.
"""

from ._api import MemoryReport, Model, ModelInfo, Session, TokenStream
from ._lib import lib as _loaded
from .errors import (
    BufferTooSmallError,
    BusyError,
    CancelledError,
    ContextFullError,
    FormatError,
    IncompleteError,
    InternalError,
    InvalidArgumentError,
    NumericError,
    OutOfMemoryError,
    PipitError,
    PipitIOError,
    UnsupportedError,
)

__version__ = "0.1.0"


def library_path() -> str:
    """The path of the libpipit this package loaded."""
    return _loaded.path


def has_feature(c_function: str) -> bool:
    """Whether the loaded library has the C function ``c_function`` (features that land in
    later versions raise ``UnsupportedError`` when it does not)."""
    return _loaded.has(c_function)


__all__ = [
    "Model",
    "Session",
    "ModelInfo",
    "MemoryReport",
    "TokenStream",
    "library_path",
    "has_feature",
    "PipitError",
    "InvalidArgumentError",
    "PipitIOError",
    "FormatError",
    "UnsupportedError",
    "OutOfMemoryError",
    "ContextFullError",
    "BufferTooSmallError",
    "BusyError",
    "CancelledError",
    "NumericError",
    "IncompleteError",
    "InternalError",
]
