"""Model and Session: the Python face of pipit's C ABI."""

from __future__ import annotations

import ctypes
import json
import os
import queue
import threading
from array import array
from ctypes import byref, c_char_p, c_double, c_float, c_int32, c_size_t, c_void_p
from dataclasses import dataclass
from typing import (
    Any,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from . import _lib
from ._lib import lib
from .errors import InvalidArgumentError, PipitError

__all__ = ["Model", "Session", "ModelInfo", "MemoryReport", "TokenStream"]

PathLike = Union[str, "os.PathLike[str]", bytes]
Message = Mapping[str, str]


@dataclass(frozen=True)
class ModelInfo:
    """Facts about an open model (``pipit_model_get_info``)."""

    n_vocab: int
    n_ctx_train: int
    n_layer: int
    d_model: int
    bos_token: Optional[int]
    eos_token: Optional[int]
    architecture: str
    name: str
    weights_bytes: int


@dataclass(frozen=True)
class MemoryReport:
    """The memory a session takes, in bytes (``pipit_memory_estimate``)."""

    weights_mapped: int
    kv_cache: int
    scratch: int
    total: int


def _uint(name: str, value: Any, bits: int = 32) -> int:
    """``value`` as an unsigned C integer of ``bits``, or InvalidArgumentError (ctypes would
    silently wrap a negative or oversized value)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentError(f"{name} must be an int, got {type(value).__name__}")
    if not 0 <= value < (1 << bits):
        raise InvalidArgumentError(f"{name} = {value} is outside 0..2^{bits}-1")
    return value


def _text(name: str, value: Any) -> bytes:
    """A str argument as UTF-8."""
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{name} must be a str, got {type(value).__name__}")
    return value.encode("utf-8", "surrogatepass")


def _c_string(name: str, value: Any) -> bytes:
    """A str argument for a NUL-terminated C string."""
    b = _text(name, value)
    if b"\0" in b:
        raise InvalidArgumentError(f"{name} contains a NUL character")
    return b


def _ids(ids: Sequence[int]) -> Tuple[Any, int]:
    """Token ids as a C int32 array (kept alive by the caller) and its length."""
    try:
        a = array("i", ids)
    except (OverflowError, TypeError) as e:
        raise InvalidArgumentError(f"token ids must be int32 values: {e}") from None
    assert a.itemsize == 4
    if not a:
        return None, 0
    return (c_int32 * len(a)).from_buffer(a), len(a)


def _sampler(
    temperature: float,
    top_k: int,
    top_p: float,
    min_p: float,
    repeat_penalty: float,
    repeat_last_n: int,
    seed: int,
) -> _lib.SamplerParams:
    p = _lib.SamplerParams()
    p.temperature = float(temperature)
    p.top_k = _uint("top_k", top_k)
    p.top_p = float(top_p)
    p.min_p = float(min_p)
    p.repeat_penalty = float(repeat_penalty)
    p.repeat_last_n = _uint("repeat_last_n", repeat_last_n)
    p.seed = _uint("seed", seed, 64)
    return p


def _session_params(
    n_ctx: int, n_threads: int, kv_type: str, memory_limit: int
) -> _lib.SessionParams:
    p = _lib.SessionParams()
    lib.pipit_session_params_default(byref(p))
    p.n_ctx = _uint("n_ctx", n_ctx)
    p.n_threads = _uint("n_threads", n_threads)
    if kv_type not in _lib.KV_TYPES:
        raise InvalidArgumentError(
            f"kv_type {kv_type!r} is not one of {', '.join(map(repr, _lib.KV_TYPES))}"
        )
    p.kv_type = _lib.KV_TYPES[kv_type]
    p.memory_limit = _uint("memory_limit", memory_limit, 64)
    return p


class _ModelHandle:
    """Owns one reference to a C model. The Model and each of its Sessions hold the
    handle, so a closed Model's sessions can still tokenize."""

    __slots__ = ("ptr", "adds_bos")

    def __init__(self, ptr: int) -> None:
        self.ptr: Optional[int] = ptr
        # Without pipit_model_adds_bos (an older library), BOS goes wherever it exists.
        self.adds_bos = not lib.has("pipit_model_adds_bos") or bool(lib.pipit_model_adds_bos(ptr))

    def __del__(self) -> None:
        ptr, self.ptr = self.ptr, None
        if ptr and lib is not None:
            lib.pipit_model_free(ptr)

    def tokenize(self, text: str, add_bos: bool) -> List[int]:
        b = _text("text", text)
        n = c_size_t()
        capacity = len(b) + 2
        while True:
            buf = (c_int32 * capacity)()
            bos = int(bool(add_bos) and self.adds_bos)
            st = lib.pipit_tokenize(self.ptr, b, len(b), bos, buf, capacity, byref(n))
            if st == _lib.STATUS_BUFFER_TOO_SMALL and n.value > capacity:
                capacity = n.value
                continue
            lib.check(st)
            return buf[: n.value]

    def piece(self, token: int) -> bytes:
        ptr, n = c_void_p(), c_size_t()
        if isinstance(token, bool) or not isinstance(token, int) or not -(1 << 31) <= token < (1 << 31):
            raise InvalidArgumentError(f"token {token!r} is not an int32")
        lib.check(lib.pipit_token_to_piece(self.ptr, token, byref(ptr), byref(n)))
        return ctypes.string_at(ptr, n.value) if n.value else b""

    def render_chat(self, messages: Sequence[Message], template: Optional[str]) -> str:
        fn = lib.optional("pipit_chat_render", "rendering a chat")
        if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
            raise InvalidArgumentError("messages must be a list of {'role': ..., 'content': ...}")
        arr = (_lib.ChatMessage * max(len(messages), 1))()
        for i, m in enumerate(messages):
            try:
                role, content = m["role"], m["content"]
            except (KeyError, TypeError):
                raise InvalidArgumentError(
                    f"messages[{i}] must be a mapping with 'role' and 'content'"
                ) from None
            arr[i].role = _c_string(f"messages[{i}]['role']", role)
            arr[i].content = _c_string(f"messages[{i}]['content']", content)
        name = None if template is None else _c_string("template", template)
        n = c_size_t()
        st = fn(self.ptr, name, arr, len(messages), None, 0, byref(n))
        if st != _lib.STATUS_BUFFER_TOO_SMALL:
            lib.check(st)
        buf = ctypes.create_string_buffer(n.value + 1)
        lib.check(fn(self.ptr, name, arr, len(messages), buf, n.value + 1, byref(n)))
        return buf.raw[: n.value].decode("utf-8")

    def constraint(self, kind: str, spec: Any) -> int:
        """Compiles a constraint; the caller frees it with ``pipit_constraint_free``."""
        fn = lib.optional(f"pipit_constraint_{kind}", f"the {kind} constraint")
        lib.optional("pipit_session_set_constraint", f"the {kind} constraint")
        lib.optional("pipit_constraint_free", f"the {kind} constraint")
        out = c_void_p()
        if kind == "choices":
            if isinstance(spec, str) or not isinstance(spec, Sequence) or not spec:
                raise InvalidArgumentError("choices must be a non-empty list of strings")
            items = (c_char_p * len(spec))(*(_c_string("choices[]", c) for c in spec))
            lib.check(fn(self.ptr, items, len(spec), byref(out)))
        else:
            lib.check(fn(self.ptr, _c_string(kind, spec), byref(out)))
        assert out.value
        return out.value


class Model:
    """An open ``.pipit`` model: ``pipit.Model(path, mmap=True, verify=False)``.

    Any number of threads may share a model, each with its own :class:`Session`. Use it as
    a context manager or call :meth:`close`; sessions keep what they need alive.
    """

    def __init__(self, path: PathLike, mmap: bool = True, verify: bool = False) -> None:
        flags = (0 if mmap else _lib.OPEN_NO_MMAP) | (_lib.OPEN_VERIFY if verify else 0)
        out = c_void_p()
        lib.check(lib.pipit_model_open_ex(os.fsencode(path), flags, byref(out)))
        assert out.value
        self._h: Optional[_ModelHandle] = _ModelHandle(out.value)
        raw = _lib.ModelInfo()
        lib.check(lib.pipit_model_get_info(out.value, byref(raw)))

        def text(b: Optional[bytes]) -> str:
            return b.decode("utf-8", "replace") if b else ""

        self.path = os.fsdecode(path)
        self.info = ModelInfo(
            n_vocab=raw.n_vocab,
            n_ctx_train=raw.n_ctx_train,
            n_layer=raw.n_layer,
            d_model=raw.d_model,
            bos_token=raw.bos_token if raw.bos_token >= 0 else None,
            eos_token=raw.eos_token if raw.eos_token >= 0 else None,
            architecture=text(raw.architecture),
            name=text(raw.name),
            weights_bytes=raw.weights_bytes,
        )

    def _handle(self) -> _ModelHandle:
        if self._h is None:
            raise ValueError("the model is closed")
        return self._h

    def close(self) -> None:
        """Releases the model; its sessions keep working until they are closed."""
        self._h = None

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._h is None else f"{self.info.n_layer} layers"
        return f"<pipit.Model {self.info.name or self.info.architecture!r} ({state}) {self.path!r}>"

    def tokenize(self, text: str, add_bos: bool = True) -> List[int]:
        """The token ids of ``text``; with ``add_bos``, after the BOS token when the model
        opens a context with one (as ``pipit tokenize`` and generation do)."""
        return self._handle().tokenize(text, add_bos)

    def detokenize(self, ids: Sequence[int]) -> str:
        """The text of token ids (control tokens have none; invalid UTF-8 is replaced)."""
        h = self._handle()
        return b"".join(h.piece(t) for t in ids).decode("utf-8", "replace")

    def token_bytes(self, token: int) -> bytes:
        """The bytes one token stands for."""
        return self._handle().piece(token)

    def memory_estimate(
        self, n_ctx: int = 2048, kv_type: str = "f16", n_threads: int = 0
    ) -> MemoryReport:
        """The memory a session with these parameters would take."""
        p = _session_params(n_ctx, n_threads, kv_type, 0)
        r = _lib.MemoryReport()
        lib.check(lib.pipit_memory_estimate(self._handle().ptr, byref(p), byref(r)))
        return MemoryReport(r.weights_mapped, r.kv_cache, r.scratch, r.total)

    def render_chat(self, messages: Sequence[Message], template: Optional[str] = None) -> str:
        """The prompt ``pipit chat`` evaluates for ``messages`` (an optional system message,
        then user and assistant in turn, ending with user), up to the start of the reply.
        ``template``: None for the model's own, or "chatml", "gemma", "llama3"."""
        return self._handle().render_chat(messages, template)

    def session(self, **params: Any) -> "Session":
        """A new :class:`Session` on this model; ``params`` as for ``Session``."""
        return Session(self, **params)


class _Worker:
    """A ``pipit_generate`` call on its own thread, feeding pieces to a queue. It holds no
    reference to the Python objects that own it, so dropping the stream ends it."""

    def __init__(
        self,
        session_ptr: int,
        prompt: bytes,
        params: _lib.SamplerParams,
        max_tokens: int,
        teardown: List[Any],
    ) -> None:
        self.q: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self.stopping = False
        self.streamed = False
        self.finished = False
        self.owner = threading.get_ident()
        self.session_ptr = session_ptr
        q = self.q
        state = self

        def on_piece(piece: int, n: int, token: int, user: Any) -> int:
            if state.stopping:
                return 1
            state.streamed = True
            q.put(ctypes.string_at(piece, n))
            return 0

        self.callback = _lib.TOKEN_CALLBACK(on_piece)
        callback = self.callback

        def run() -> None:
            err: Optional[BaseException] = None
            try:
                st = lib.pipit_generate(
                    session_ptr, prompt, len(prompt), byref(params), max_tokens, callback, None
                )
                if st != 0 and not (st == _lib.STATUS_CANCELLED and state.stopping):
                    err = lib.error(st)
            except BaseException as e:  # delivered to the consumer
                err = e
            for undo in teardown:
                try:
                    undo()
                except PipitError as e:
                    err = err or e
            q.put(_End(err))

        self.thread = threading.Thread(target=run, name="pipit-generate", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Ends the call and waits for the thread: once pieces flow, the callback refuses
        the next one (the generation ends normally); before that the prompt's evaluation
        is cancelled."""
        if self.finished:
            return
        self.stopping = True
        if not self.streamed:
            lib.pipit_session_cancel(self.session_ptr)
        self.thread.join()
        self.finished = True


class _End:
    __slots__ = ("err",)

    def __init__(self, err: Optional[BaseException]) -> None:
        self.err = err


class TokenStream(Iterator[str]):
    """The pieces of a generation as the model produces them (whole UTF-8 characters).

    Leaving the loop early (``break``), :meth:`close`, leaving a ``with`` block or garbage
    collection stops the generation; the tokens generated so far stay in the context.
    """

    def __init__(self, session: "Session", worker: _Worker) -> None:
        self._session = session
        self._worker = worker

    def __iter__(self) -> "TokenStream":
        return self

    def __next__(self) -> str:
        w = self._worker
        if w.finished and w.stopping:
            raise StopIteration
        item = w.q.get()
        if isinstance(item, bytes):
            return item.decode("utf-8", "replace")
        w.thread.join()
        w.finished = True
        w.stopping = True  # later calls end at once
        if item.err is not None:
            raise item.err
        raise StopIteration

    def close(self) -> None:
        """Stops the generation if it is still running."""
        self._worker.stop()

    def __enter__(self) -> "TokenStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        w = getattr(self, "_worker", None)
        if w is not None and lib is not None:
            w.stop()


class Session:
    """One conversation on a model: its KV cache, its context and its sampler.

    ``pipit.Session(model, n_ctx=2048, n_threads=0, kv_type="f16", memory_limit=0,
    n_seq_max=4)``. One thread uses a session at a time (another gets ``BusyError``);
    :meth:`cancel` may come from any thread. ``n_seq_max`` reserves memory for
    :meth:`beam_search` with up to that many beams, where the library supports it.
    """

    def __init__(
        self,
        model: Model,
        n_ctx: int = 2048,
        n_threads: int = 0,
        kv_type: str = "f16",
        memory_limit: int = 0,
        n_seq_max: int = 4,
    ) -> None:
        self._ptr: Optional[int] = None
        self._worker: Optional[_Worker] = None
        # Calls so far, and the prompt tokens of the last chat with the call count right
        # after it: while nothing else touched the context, the next chat keeps their
        # common prefix in the KV cache.
        self._calls = 0
        self._chat_prompt: Optional[Tuple[List[int], int]] = None
        self._chat_kept = 0
        h = model._handle()
        p = _session_params(n_ctx, n_threads, kv_type, memory_limit)
        n_seq_max = _uint("n_seq_max", n_seq_max)
        if n_seq_max < 1:
            raise InvalidArgumentError("n_seq_max must be at least 1")
        out = c_void_p()
        if lib.has("pipit_session_new_ex"):
            lib.check(lib.pipit_session_new_ex(h.ptr, byref(p), n_seq_max, byref(out)))
        else:
            lib.check(lib.pipit_session_new(h.ptr, byref(p), byref(out)))
        assert out.value
        self._ptr = out.value
        self._model = h
        self.model = model
        self.n_ctx = n_ctx
        self.n_seq_max = n_seq_max
        #: The log-probability of the text the last :meth:`beam_search` returned.
        self.last_logprob: Optional[float] = None

    # -- lifetime --------------------------------------------------------------------

    def close(self) -> None:
        """Stops a running generation and frees the session."""
        w, self._worker = self._worker, None
        if w is not None:
            w.stop()
        ptr, self._ptr = self._ptr, None
        if ptr and lib is not None:
            lib.pipit_session_free(ptr)

    def __del__(self) -> None:
        self.close()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _enter(self) -> int:
        """The session pointer for a call from this thread, after ending a stream this
        thread started and left unfinished."""
        if self._ptr is None:
            raise ValueError("the session is closed")
        self._calls += 1
        w = self._worker
        if w is not None and w.owner == threading.get_ident():
            w.stop()
            self._worker = None
        return self._ptr

    # -- context ---------------------------------------------------------------------

    @property
    def n_past(self) -> int:
        """Tokens in the context (as of the end of the last call)."""
        if self._ptr is None:
            raise ValueError("the session is closed")
        return int(lib.pipit_session_n_past(self._ptr))

    @property
    def stop_reason(self) -> Optional[str]:
        """Why the last generation ended: "end_of_text", "max_tokens", "stop_string",
        "callback" (the stream was left early), "context_full", or None (none finished
        since the session was created or reset, or it failed)."""
        fn = lib.optional("pipit_session_stop_reason", "Session.stop_reason")
        reason = c_int32()
        lib.check(fn(self._enter(), byref(reason)))
        if reason.value not in _lib.STOP_REASONS:
            raise InvalidArgumentError(f"unknown stop reason {reason.value}")
        return _lib.STOP_REASONS[reason.value]

    def eval(self, ids: Sequence[int]) -> None:
        """Appends tokens to the context and computes the logits after the last one."""
        ptr = self._enter()
        arr, n = _ids(ids)
        lib.check(lib.pipit_session_eval(ptr, arr, n))

    def logits(self) -> "array[float]":
        """A copy of the logits after the last evaluated token (``array('f')`` of
        ``n_vocab`` values; ``numpy.frombuffer`` wraps it without copying)."""
        ptr = self._enter()
        data, n = ctypes.POINTER(c_float)(), c_size_t()
        lib.check(lib.pipit_session_logits(ptr, byref(data), byref(n)))
        out = array("f", bytes(4 * n.value))
        if n.value:
            ctypes.memmove(out.buffer_info()[0], data, 4 * n.value)
        return out

    def reset(self) -> None:
        """Empties the context."""
        lib.check(lib.pipit_session_reset(self._enter()))

    def truncate(self, n_past: int) -> None:
        """Rewinds the context to its first ``n_past`` tokens."""
        fn = lib.optional("pipit_session_truncate", "Session.truncate")
        lib.check(fn(self._enter(), _uint("n_past", n_past)))

    def cancel(self) -> None:
        """Stops the call running on this session (from any thread); it raises
        ``CancelledError``. Does nothing when no call is running."""
        if self._ptr is not None:
            lib.check(lib.pipit_session_cancel(self._ptr))

    def save(self) -> bytes:
        """The session's state (tokens, KV cache, logits), for :meth:`load`."""
        fn = lib.optional("pipit_session_save", "Session.save")
        ptr = self._enter()
        needed = c_size_t()
        probe = ctypes.create_string_buffer(1)  # a real buffer of capacity 0: "how much?"
        st = fn(ptr, probe, 0, byref(needed))
        if st != _lib.STATUS_BUFFER_TOO_SMALL:
            lib.check(st)
        buf = ctypes.create_string_buffer(max(needed.value, 1))
        lib.check(fn(ptr, buf, needed.value, byref(needed)))
        return buf.raw[: needed.value]

    def load(self, state: bytes) -> None:
        """Restores a state from :meth:`save` (same model, KV type and context size); a bad
        one raises and changes nothing."""
        fn = lib.optional("pipit_session_load", "Session.load")
        ptr = self._enter()
        data = bytes(state)
        lib.check(fn(ptr, data, len(data)))

    # -- sampling and generation -----------------------------------------------------

    def sample(
        self,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.1,
        repeat_last_n: int = 64,
        seed: int = 0,
    ) -> int:
        """Samples the next token from the logits without appending it. Consecutive calls
        with the same parameters continue one random stream."""
        p = _sampler(temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, seed)
        token = c_int32()
        lib.check(lib.pipit_session_sample(self._enter(), byref(p), byref(token)))
        return token.value

    def generate(
        self,
        prompt: str,
        max_tokens: int = 128,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.1,
        repeat_last_n: int = 64,
        seed: int = 0,
        stop: Union[str, Sequence[str], None] = None,
        regex: Optional[str] = None,
        json_schema: Union[str, Mapping[str, Any], None] = None,
        grammar: Optional[str] = None,
        choices: Optional[Sequence[str]] = None,
    ) -> TokenStream:
        """Streams the continuation of the context plus ``prompt`` (empty: continue the
        context) until end of text, ``max_tokens``, a ``stop`` string (not included) or
        the end of the context. At most one of ``regex``, ``json_schema`` (a dict or a
        JSON string; "" is any JSON value), ``grammar`` (GBNF) and ``choices`` constrains
        the output. Generated tokens stay in the context."""
        ptr = self._enter()
        text = _text("prompt", prompt)
        params = _sampler(temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, seed)
        max_tokens = _uint("max_tokens", max_tokens)
        teardown: List[Any] = []
        try:
            if stop is not None:
                self._set_stop(ptr, [stop] if isinstance(stop, str) else list(stop), teardown)
            constraint = self._constraint(regex, json_schema, grammar, choices)
            if constraint is not None:
                self._set_constraint(ptr, constraint, teardown)
        except BaseException:
            for undo in teardown:
                undo()
            raise
        self._worker = _Worker(ptr, text, params, max_tokens, teardown)
        return TokenStream(self, self._worker)

    @staticmethod
    def _set_stop(ptr: int, stops: List[str], teardown: List[Any]) -> None:
        fn = lib.optional("pipit_session_set_stop", "generate(stop=...)")
        arr = (c_char_p * max(len(stops), 1))(*(_c_string("stop", s) for s in stops))
        lib.check(fn(ptr, arr, len(stops)))
        teardown.append(lambda: lib.check(fn(ptr, None, 0)))

    def _constraint(
        self,
        regex: Optional[str],
        json_schema: Union[str, Mapping[str, Any], None],
        grammar: Optional[str],
        choices: Optional[Sequence[str]],
    ) -> Optional[Tuple[str, Any]]:
        given = [
            (kind, spec)
            for kind, spec in (
                ("regex", regex),
                ("json_schema", json_schema),
                ("gbnf", grammar),
                ("choices", choices),
            )
            if spec is not None
        ]
        if len(given) > 1:
            raise InvalidArgumentError(
                "give at most one of regex, json_schema, grammar and choices"
            )
        if not given:
            return None
        kind, spec = given[0]
        if kind == "json_schema" and not isinstance(spec, str):
            spec = json.dumps(spec)
        return kind, spec

    def _set_constraint(self, ptr: int, constraint: Tuple[str, Any], teardown: List[Any]) -> None:
        kind, spec = constraint
        c = self._model.constraint(kind, spec)
        try:
            # The session keeps its own reference to the compiled constraint.
            lib.check(lib.pipit_session_set_constraint(ptr, c))
        finally:
            lib.pipit_constraint_free(c)
        teardown.append(lambda: lib.check(lib.pipit_session_set_constraint(ptr, None)))

    def chat(
        self,
        messages: Sequence[Message],
        max_tokens: int = 512,
        stream: bool = False,
        template: Optional[str] = None,
        **sampling: Any,
    ) -> Union[str, TokenStream]:
        """The model's reply to a conversation (``[{"role": "user", "content": "Hi"}]``:
        an optional system message, then user and assistant in turn, ending with user),
        rendered with the model's chat template exactly as ``pipit chat`` does. The session
        starts over with the conversation, except that when nothing else used it since the
        last chat and the library can truncate, the KV cache of the prompt the two share is
        kept. ``stream=True`` returns the pieces as :meth:`generate` does; ``sampling``
        takes generate's keyword arguments."""
        prompt = self._model.render_chat(messages, template)
        last, self._chat_prompt = self._chat_prompt, None
        untouched = last is not None and last[1] == self._calls
        ptr = self._enter()
        ids = self._model.tokenize(prompt, add_bos=True)
        keep = 0
        if untouched and last is not None and lib.has("pipit_session_truncate"):
            # The context still starts with the last chat's prompt: keep what this one
            # shares with it (at least one token is evaluated, for fresh logits).
            for a, b in zip(last[0], ids[: len(ids) - 1]):
                if a != b:
                    break
                keep += 1
        if keep:
            lib.check(lib.pipit_session_truncate(ptr, keep))
        else:
            lib.check(lib.pipit_session_reset(ptr))
        arr, n = _ids(ids[keep:])
        lib.check(lib.pipit_session_eval(ptr, arr, n))
        self._chat_kept = keep
        it = self.generate("", max_tokens, **sampling)
        self._chat_prompt = (ids, self._calls)
        return it if stream else "".join(it)

    # -- scoring and search ----------------------------------------------------------

    def score(self, text: str, prompt: str = "") -> float:
        """The total log-probability of ``text`` following the context plus ``prompt``.
        Both stay in the context. On an empty context the first token (BOS, when the model
        adds one) is given, not scored."""
        ptr = self._enter()
        start = self.n_past == 0
        ids: List[int] = []
        if prompt:
            ids = self._model.tokenize(prompt, add_bos=start)
            arr, n = _ids(ids)
            lib.check(lib.pipit_session_eval(ptr, arr, n))
        tids = self._model.tokenize(text, add_bos=start and not prompt)
        arr, n = _ids(tids)
        lp = c_double()
        lib.check(lib.pipit_session_score(ptr, arr, n, byref(lp)))
        return lp.value

    def choose(self, prompt: str, options: Sequence[str]) -> List[Tuple[str, float]]:
        """Each option with its total log-probability after the context plus ``prompt``,
        best first. The prompt stays in the context, the options do not."""
        fn = lib.optional("pipit_choose", "Session.choose")
        ptr = self._enter()
        text = _text("prompt", prompt)
        if isinstance(options, str) or not isinstance(options, Sequence) or not options:
            raise InvalidArgumentError("options must be a non-empty list of strings")
        opts = list(options)
        arr = (c_char_p * len(opts))(*(_c_string("options[]", o) for o in opts))
        logprobs = (c_double * len(opts))()
        best = c_size_t()
        lib.check(fn(ptr, text, len(text), arr, len(opts), logprobs, byref(best)))
        ranked = sorted(range(len(opts)), key=lambda i: (i != best.value, -logprobs[i]))
        return [(opts[i], logprobs[i]) for i in ranked]

    def beam_search(
        self,
        prompt: str,
        beams: int = 4,
        max_tokens: int = 64,
        length_penalty: float = 1.0,
    ) -> str:
        """The best continuation of the context plus ``prompt`` by beam search (score: sum
        of log-probabilities / length ** length_penalty). The context keeps the prompt and
        the result."""
        fn = lib.optional("pipit_beam_search", "Session.beam_search")
        ptr = self._enter()
        text = _text("prompt", prompt)
        out, n, lp = c_void_p(), c_size_t(), c_double()
        lib.check(
            fn(
                ptr,
                text,
                len(text),
                _uint("beams", beams),
                float(length_penalty),
                _uint("max_tokens", max_tokens),
                byref(out),
                byref(n),
                byref(lp),
            )
        )
        self.last_logprob = lp.value
        return ctypes.string_at(out, n.value).decode("utf-8", "replace") if n.value else ""
