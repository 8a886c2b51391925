"""The core API on the real SmolLM2 model: every function of Model and Session, streaming
against the CLI, threads and cancellation."""

from __future__ import annotations

import gc
import json
import math
import subprocess
import threading
import time
from array import array
from pathlib import Path
from typing import List

import pytest

import pipit

# A prompt SmolLM2 answers at length (the one tests/ffi.rs compares with `pipit run`).
STORY = (
    "<|im_start|>user\nWrite a short story about a robot who learns to paint.<|im_end|>\n"
    "<|im_start|>assistant\n"
)


def cli(pipit_bin: Path, *args: str, stdin: str = "") -> str:
    out = subprocess.run(
        [str(pipit_bin), *args], input=stdin.encode(), capture_output=True, check=True
    )
    return out.stdout.decode("utf-8")


def greedy(session: pipit.Session, prompt: str, n: int) -> str:
    return "".join(session.generate(prompt, max_tokens=n, temperature=0))


def test_info(model: pipit.Model) -> None:
    info = model.info
    assert info.architecture == "llama"
    assert (info.n_vocab, info.n_layer, info.d_model, info.n_ctx_train) == (49152, 30, 576, 8192)
    assert info.bos_token == 1 and info.eos_token == 2
    assert info.name and info.weights_bytes > 50_000_000
    assert "pipit.Model" in repr(model)


def test_tokenize_and_detokenize(model: pipit.Model, pipit_bin: Path, model_path: Path) -> None:
    text = "Hello, world! The capital of France is Paris. Ünïcödé ✓"
    ids = model.tokenize(text)
    # As `pipit tokenize` prints them (SmolLM2 opens a context without BOS).
    assert json.loads(cli(pipit_bin, "tokenize", "-m", str(model_path), text)) == ids
    assert model.detokenize(ids) == text
    assert model.tokenize(text, add_bos=False) == ids
    assert model.tokenize("") == []
    assert model.detokenize([]) == ""
    assert model.token_bytes(ids[0]) == text[: len(model.detokenize(ids[:1]))].encode()
    with pytest.raises(pipit.InvalidArgumentError):
        model.detokenize([model.info.n_vocab])
    with pytest.raises(pipit.InvalidArgumentError):
        model.token_bytes(-1)


def test_memory_estimate(model: pipit.Model) -> None:
    r = model.memory_estimate()
    assert r.total == r.weights_mapped + r.kv_cache + r.scratch
    # The cache is pages of 32 positions plus a spare page: about, not exactly, twice.
    kv_4k = model.memory_estimate(n_ctx=4096).kv_cache
    assert 1.9 * r.kv_cache < kv_4k <= 2 * r.kv_cache
    assert model.memory_estimate(kv_type="f32").kv_cache == 2 * r.kv_cache
    assert model.memory_estimate(kv_type="int8").kv_cache < r.kv_cache
    with pytest.raises(pipit.InvalidArgumentError):
        model.memory_estimate(kv_type="f8")
    with pytest.raises(pipit.InvalidArgumentError):
        model.memory_estimate(n_ctx=-1)


def test_eval_logits_sample_reset(model: pipit.Model, session: pipit.Session) -> None:
    ids = model.tokenize("The capital of France is")
    assert session.n_past == 0
    with pytest.raises(pipit.InvalidArgumentError):
        session.logits()  # nothing evaluated yet
    session.eval(ids)
    assert session.n_past == len(ids)
    logits = session.logits()
    assert isinstance(logits, array) and logits.typecode == "f"
    assert len(logits) == model.info.n_vocab
    assert all(math.isfinite(x) for x in logits)
    best = max(range(len(logits)), key=logits.__getitem__)
    assert model.detokenize([best]) == " Paris"
    # Greedy sampling without penalties is the argmax; sampling appends nothing.
    assert session.sample(temperature=0, repeat_penalty=1.0) == best
    assert session.n_past == len(ids)
    assert 0 <= session.sample(temperature=1.0, seed=7) < model.info.n_vocab
    # The copy does not change when the session moves on.
    kept = array("f", logits)
    session.eval([best])
    assert logits == kept and session.logits() != kept
    session.reset()
    assert session.n_past == 0
    session.eval(ids)
    assert session.logits() == kept  # the same prompt gives the same logits


def test_logits_wrap_in_numpy(session: pipit.Session, model: pipit.Model) -> None:
    np = pytest.importorskip("numpy")
    session.eval(model.tokenize("Hello"))
    logits = session.logits()
    x = np.frombuffer(logits, dtype=np.float32)
    assert x.shape == (model.info.n_vocab,)
    assert x.ctypes.data == logits.buffer_info()[0]  # no second copy


def test_streaming_joins_to_pipit_run(
    session: pipit.Session, pipit_bin: Path, model_path: Path
) -> None:
    n = 48
    expected = cli(pipit_bin, "run", "-m", str(model_path), "-p", STORY, "-n", str(n), "--temp", "0", "--ctx", "1024")
    pieces = list(session.generate(STORY, max_tokens=n, temperature=0))
    assert len(pieces) > n // 2  # streamed, not one block
    assert "".join(pieces) + "\n" == expected


def test_generate_continues_the_context(model: pipit.Model, session: pipit.Session) -> None:
    with pytest.raises(pipit.InvalidArgumentError):
        list(session.generate("", max_tokens=4))  # nothing to continue
    whole = greedy(session, "The capital of France is", 16)
    session.reset()
    first = greedy(session, "The capital of France is", 6)
    n = session.n_past
    rest = greedy(session, "", 10)
    assert first + rest == whole
    assert session.n_past > n
    # Sampled generation is reproducible from its seed.
    session.reset()
    a = "".join(session.generate("Once upon a time", max_tokens=12, temperature=1.0, seed=3))
    session.reset()
    b = "".join(session.generate("Once upon a time", max_tokens=12, temperature=1.0, seed=3))
    assert a == b


def test_three_threads_three_sessions_identical(model: pipit.Model) -> None:
    with model.session(n_ctx=512, n_threads=1) as s:
        want = greedy(s, STORY, 24)
    results: List[str] = [""] * 3
    errors: List[BaseException] = []

    def work(i: int) -> None:
        try:
            with model.session(n_ctx=512, n_threads=1) as s:
                results[i] = greedy(s, STORY, 24)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == [want] * 3


def test_cancel_from_another_thread(model: pipit.Model, session: pipit.Session) -> None:
    n0 = len(model.tokenize(STORY))
    it = session.generate(STORY, max_tokens=500, temperature=0)
    got = [next(it)]
    canceller = threading.Thread(target=session.cancel)
    canceller.start()
    canceller.join()
    with pytest.raises(pipit.CancelledError) as e:
        for piece in it:
            got.append(piece)
    assert e.value.status == 9
    assert session.n_past < n0 + 100
    # The session works on.
    assert greedy(session, "", 2)
    session.cancel()  # nothing running: no effect
    assert greedy(session, "", 2)


def test_leaving_the_loop_stops_the_generation(model: pipit.Model, session: pipit.Session) -> None:
    n0 = len(model.tokenize(STORY))
    for _ in session.generate(STORY, max_tokens=1000, temperature=0):
        break
    # The loop's iterator was dropped: the call ended (not after 1000 tokens).
    assert session.n_past < n0 + 50  # a token or two after the pieces already queued
    session.eval(model.tokenize(" more"))  # not busy
    session.reset()
    it = session.generate(STORY, max_tokens=1000, temperature=0)
    next(it)
    del it
    gc.collect()
    assert session.n_past < n0 + 50
    # An unfinished stream of this thread ends when the thread makes another call.
    session.reset()
    kept = session.generate(STORY, max_tokens=1000, temperature=0)
    next(kept)
    session.eval(model.tokenize(" more"))
    assert list(kept) == []
    with session.generate("", max_tokens=1000, temperature=0) as s2:
        next(s2)
    assert session.n_past < n0 + 100


def test_a_session_used_by_two_threads_is_busy(model: pipit.Model, session: pipit.Session) -> None:
    it = session.generate(STORY, max_tokens=400, temperature=0)
    next(it)
    caught: List[BaseException] = []

    def other() -> None:
        try:
            session.eval(model.tokenize(" x"))
        except BaseException as e:
            caught.append(e)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    it.close()
    assert len(caught) == 1 and isinstance(caught[0], pipit.BusyError), caught
    assert caught[0].status == 8 and "use" in str(caught[0])


def test_score(model: pipit.Model, session: pipit.Session, pipit_bin: Path, model_path: Path) -> None:
    text = "The capital of France is Paris, and the capital of Germany is Berlin."
    lp = session.score(text)
    out = cli(pipit_bin, "score", "-m", str(model_path), "--text", text)
    fields = dict(f.split("=") for f in out.split())
    assert abs(-lp - float(fields["total_nll"])) < 1e-4
    assert session.n_past == len(model.tokenize(text))
    prompt = "The capital of France is"
    scores = {}
    for option in (" Paris", " Berlin", " London"):
        session.reset()
        scores[option] = session.score(option, prompt=prompt)
        assert session.n_past == len(model.tokenize(prompt)) + len(model.tokenize(option))
    assert max(scores, key=scores.__getitem__) == " Paris"
    assert all(v < 0 for v in scores.values())


def test_chat_renders_and_replies_as_the_cli(
    model: pipit.Model, session: pipit.Session, pipit_bin: Path, model_path: Path
) -> None:
    question = "What is the capital of France?"
    rendered = model.render_chat([{"role": "user", "content": question}])
    assert rendered == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
        f"<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    )
    conv = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"},
    ]
    assert model.render_chat(conv).startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    assert model.render_chat(conv, template="gemma").startswith("<start_of_turn>user\nBe brief.")
    expected = cli(pipit_bin, "chat", "-m", str(model_path), "--temp", "0", "-n", "24", stdin=question + "\n")
    reply = session.chat([{"role": "user", "content": question}], max_tokens=24, temperature=0)
    assert isinstance(reply, str) and reply + "\n" == expected
    streamed = session.chat([{"role": "user", "content": question}], max_tokens=24, temperature=0, stream=True)
    assert "".join(streamed) == reply
    for bad in (
        [],
        [{"role": "assistant", "content": "Hi"}],
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
        [{"role": "user"}],
        [{"role": "user", "content": "a\0b"}],
        "Hi",
    ):
        with pytest.raises(pipit.InvalidArgumentError):
            session.chat(bad)  # type: ignore[arg-type]
    with pytest.raises(pipit.InvalidArgumentError):
        model.render_chat(conv, template="jinja")


def test_closing(model_path: Path) -> None:
    m = pipit.Model(model_path)
    s = m.session(n_ctx=256)
    m.close()
    # The session keeps what it needs; the closed model refuses work.
    assert s.score(" world", prompt="Hello") < 0
    with pytest.raises(ValueError):
        m.tokenize("x")
    with pytest.raises(ValueError):
        m.session()
    s.close()
    s.close()
    with pytest.raises(ValueError):
        s.eval([1])
    with pytest.raises(ValueError):
        _ = s.n_past


def test_long_calls_release_the_gil(model: pipit.Model) -> None:
    ids = model.tokenize(STORY * 10, add_bos=False)[:256]
    with model.session(n_ctx=1024, n_threads=1) as s:
        worker = threading.Thread(target=s.eval, args=(ids,))
        ticks = 0
        worker.start()
        while worker.is_alive():
            time.sleep(0.001)
            ticks += 1
        worker.join()
        assert s.n_past == len(ids)
    # Python ran all along the evaluation (at least 0.1 s even on a fast machine); a call
    # holding the GIL would have stopped this loop for its whole length.
    assert ticks > 30
