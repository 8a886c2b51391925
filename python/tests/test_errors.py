"""Every status maps to its exception class, and real failures raise them."""

from __future__ import annotations

from pathlib import Path

import pytest

import pipit
from pipit.errors import error_for_status

CLASSES = {
    1: pipit.InvalidArgumentError,
    2: pipit.PipitIOError,
    3: pipit.FormatError,
    4: pipit.UnsupportedError,
    5: pipit.OutOfMemoryError,
    6: pipit.ContextFullError,
    7: pipit.BufferTooSmallError,
    8: pipit.BusyError,
    9: pipit.CancelledError,
    10: pipit.NumericError,
    11: pipit.InternalError,
    12: pipit.IncompleteError,
}


def test_every_status_has_its_class() -> None:
    for status, cls in CLASSES.items():
        e = error_for_status(status, "detail")
        assert type(e) is cls and isinstance(e, pipit.PipitError)
        assert e.status == status == cls.status and e.message == "detail" and str(e) == "detail"
        assert cls.__name__ in pipit.__all__ and getattr(pipit, cls.__name__) is cls
    unknown = error_for_status(99, "detail")
    assert type(unknown) is pipit.PipitError and unknown.status == 99


def test_the_library_names_each_status() -> None:
    from pipit._lib import lib

    for status in CLASSES:
        if status <= 11:
            assert lib.pipit_status_string(status).decode() != "unknown status"


def test_files(tmp_path: Path, model_path: Path) -> None:
    with pytest.raises(pipit.PipitIOError) as e:
        pipit.Model(tmp_path / "missing.pipit")
    assert e.value.status == 2 and "missing.pipit" in str(e.value)
    garbage = tmp_path / "garbage.pipit"
    garbage.write_bytes(b"this is not a model file at all, just some text padding it out")
    with pytest.raises(pipit.FormatError):
        pipit.Model(garbage)
    truncated = tmp_path / "truncated.pipit"
    truncated.write_bytes(model_path.read_bytes()[:1_000_000])
    for mmap in (True, False):
        with pytest.raises(pipit.FormatError):
            pipit.Model(truncated, mmap=mmap)
    with pipit.Model(model_path, mmap=False, verify=True) as m:
        assert m.info.n_layer == 30


def test_session_failures(model: pipit.Model) -> None:
    with pytest.raises(pipit.OutOfMemoryError):
        model.session(memory_limit=1)
    with pytest.raises(pipit.InvalidArgumentError):
        model.session(n_ctx=model.info.n_ctx_train + 1)
    with pytest.raises(pipit.InvalidArgumentError):
        model.session(kv_type="q4")
    with pytest.raises(pipit.InvalidArgumentError):
        model.session(n_seq_max=0)
    with model.session(n_ctx=16) as s:
        ids = model.tokenize(" ".join(f"word{i}" for i in range(20)))
        assert len(ids) > 16
        with pytest.raises(pipit.ContextFullError) as e:
            s.eval(ids)
        assert s.n_past == 0  # nothing changed
        assert "context" in e.value.message
        with pytest.raises(pipit.InvalidArgumentError):
            s.eval([-1])
        with pytest.raises(pipit.InvalidArgumentError):
            s.eval([1 << 40])
        with pytest.raises(pipit.InvalidArgumentError):
            s.eval([model.info.n_vocab])
        s.eval(ids[:4])
        with pytest.raises(pipit.InvalidArgumentError):
            s.sample(temperature=-1)
        with pytest.raises(pipit.InvalidArgumentError):
            s.sample(top_k=-1)
        with pytest.raises(pipit.InvalidArgumentError):
            s.generate("x", max_tokens=-1)
        with pytest.raises(pipit.InvalidArgumentError):
            s.generate("x", regex="a", choices=["a"])
