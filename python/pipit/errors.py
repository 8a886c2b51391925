"""The library's status codes as exceptions: one class per ``PIPIT_ERR_*`` value."""

from __future__ import annotations

from typing import Dict, Optional, Type

__all__ = [
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
    "error_for_status",
]


class PipitError(Exception):
    """A call into libpipit failed. ``status`` is the ``pipit_status`` value and
    ``message`` the library's detail (``pipit_last_error``)."""

    status: int = -1

    def __init__(self, message: str, status: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class InvalidArgumentError(PipitError):
    """NULL pointer, value out of range, malformed request."""

    status = 1


class PipitIOError(PipitError):
    """A missing or unreadable file."""

    status = 2


class FormatError(PipitError):
    """A malformed or corrupt model file."""

    status = 3


class UnsupportedError(PipitError):
    """A valid request this library cannot do (including a C function it does not have)."""

    status = 4


class OutOfMemoryError(PipitError):
    """An allocation failed, or ``memory_limit`` would be exceeded."""

    status = 5


class ContextFullError(PipitError):
    """The context cannot take the tokens; nothing was changed."""

    status = 6


class BufferTooSmallError(PipitError):
    """A caller's buffer was too small (the package sizes its buffers itself)."""

    status = 7


class BusyError(PipitError):
    """The session is in use by another thread."""

    status = 8


class CancelledError(PipitError):
    """``Session.cancel()`` stopped the call."""

    status = 9


class NumericError(PipitError):
    """NaN or infinity reached the logits."""

    status = 10


class IncompleteError(PipitError):
    """A constrained generation could not complete within its token budget."""

    status = 12


class InternalError(PipitError):
    """A bug in the library, including a caught panic."""

    status = 11


_BY_STATUS: Dict[int, Type[PipitError]] = {
    cls.status: cls
    for cls in (
        InvalidArgumentError,
        PipitIOError,
        FormatError,
        UnsupportedError,
        OutOfMemoryError,
        ContextFullError,
        BufferTooSmallError,
        BusyError,
        CancelledError,
        NumericError,
        InternalError,
        IncompleteError,
    )
}


def error_for_status(status: int, message: str) -> PipitError:
    """The exception for a nonzero status; an unknown one is a plain ``PipitError``."""
    cls = _BY_STATUS.get(status)
    if cls is None:
        return PipitError(f"{message} (status {status})", status)
    return cls(message)
