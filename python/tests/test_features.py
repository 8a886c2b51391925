"""Features whose C functions land with other issues (generation strategies, structured
output): each is tested for real when the loaded library has its function, and must raise
UnsupportedError (never AttributeError) when it does not."""

from __future__ import annotations

import json
import re
from typing import Callable

import pytest

import pipit

PROMPT = "The capital of France is"


def feature(c_function: str, session: pipit.Session, call: Callable[[], object]) -> bool:
    """True when the library has `c_function`; otherwise checks that `call` raises
    UnsupportedError naming it and the session is untouched, and returns False."""
    if pipit.has_feature(c_function):
        return True
    n = session.n_past
    with pytest.raises(pipit.UnsupportedError) as e:
        call()
    assert c_function in str(e.value) and e.value.status == 4
    assert session.n_past == n
    return False


def greedy(session: pipit.Session, prompt: str, n: int, **kw: object) -> str:
    return "".join(session.generate(prompt, max_tokens=n, temperature=0, **kw))  # type: ignore[arg-type]


def test_truncate(model: pipit.Model, session: pipit.Session) -> None:
    ids = model.tokenize(PROMPT)
    session.eval(ids)
    if not feature("pipit_session_truncate", session, lambda: session.truncate(2)):
        return
    after_all = session.logits()
    session.truncate(len(ids) - 1)
    assert session.n_past == len(ids) - 1
    session.eval(ids[-1:])
    assert session.logits() == after_all  # bit-identical
    session.truncate(0)
    assert session.n_past == 0
    with pytest.raises(pipit.InvalidArgumentError):
        session.truncate(1)


def test_save_and_load(model: pipit.Model, session: pipit.Session) -> None:
    session.eval(model.tokenize(PROMPT))
    if not feature("pipit_session_save", session, session.save):
        return
    n = session.n_past
    logits = session.logits()
    state = session.save()
    assert isinstance(state, bytes) and len(state) > 0
    first = greedy(session, "", 12)
    session.load(state)
    assert session.n_past == n and session.logits() == logits
    assert greedy(session, "", 12) == first
    # A damaged state is refused and changes nothing.
    session.load(state)
    for bad in (state[: len(state) // 2], state[:-1], state[:40] + bytes([state[40] ^ 1]) + state[41:]):
        with pytest.raises(pipit.PipitError):
            session.load(bad)
        assert session.n_past == n and session.logits() == logits


def test_choose(model: pipit.Model, session: pipit.Session) -> None:
    options = [" Berlin", " Paris", " London"]
    if not feature("pipit_choose", session, lambda: session.choose(PROMPT, options)):
        return
    ranked = session.choose(PROMPT, options)
    assert [o for o, _ in ranked][0] == " Paris"
    assert sorted(o for o, _ in ranked) == sorted(options)
    assert session.n_past == len(model.tokenize(PROMPT))  # the prompt stays, the options not
    for option, lp in ranked:
        with model.session(n_ctx=256) as fresh:
            assert abs(fresh.score(option, prompt=PROMPT) - lp) < 1e-4


def test_beam_search(model: pipit.Model, session: pipit.Session) -> None:
    if not feature("pipit_beam_search", session, lambda: session.beam_search(PROMPT)):
        return
    # One beam is greedy (beam search applies no repetition penalty).
    with model.session(n_ctx=256) as g:
        want = greedy(g, PROMPT, 16, repeat_penalty=1.0)
    assert session.beam_search(PROMPT, beams=1, max_tokens=16) == want
    session.reset()
    text = session.beam_search(PROMPT, beams=4, max_tokens=16, length_penalty=0.0)
    assert isinstance(text, str) and text
    assert session.last_logprob is not None and session.last_logprob < 0
    with pytest.raises(pipit.InvalidArgumentError):
        session.beam_search(PROMPT, beams=session.n_seq_max + 1)


def test_stop_strings(session: pipit.Session) -> None:
    if not feature("pipit_session_set_stop", session, lambda: session.generate(PROMPT, stop=".")):
        return
    whole = greedy(session, PROMPT, 32)
    stop = whole[3:7]
    cut = whole.index(stop)
    session.reset()
    assert greedy(session, PROMPT, 32, stop=[stop, "never appears"]) == whole[:cut]
    # The stop strings last one call.
    session.reset()
    assert greedy(session, PROMPT, 32) == whole


def test_regex(session: pipit.Session) -> None:
    pattern = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    if not feature("pipit_constraint_regex", session, lambda: session.generate("Date:", regex=pattern)):
        return
    for seed in range(5):
        session.reset()
        out = "".join(session.generate("Today's date:", max_tokens=32, temperature=1.0, seed=seed, regex=pattern))
        assert re.fullmatch(pattern, out), out
    with pytest.raises(pipit.IncompleteError):
        session.reset()
        list(session.generate("Letters:", max_tokens=2, regex=r"[a-z]{200}"))


def test_json_schema(session: pipit.Session) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer", "minimum": 0, "maximum": 120}},
        "required": ["name", "age"],
    }
    if not feature("pipit_constraint_json_schema", session, lambda: session.generate("x", json_schema=schema)):
        return
    for spec in (schema, json.dumps(schema)):
        session.reset()
        out = "".join(session.generate("A person as JSON:", max_tokens=64, temperature=0.8, json_schema=spec))
        jsonschema.validate(json.loads(out), schema)


def test_grammar(session: pipit.Session) -> None:
    gbnf = 'root ::= "yes" | "no"'
    if not feature("pipit_constraint_gbnf", session, lambda: session.generate("x", grammar=gbnf)):
        return
    out = "".join(session.generate("Is Paris in France? Answer:", max_tokens=8, grammar=gbnf))
    assert out in ("yes", "no")


def test_choices(session: pipit.Session) -> None:
    options = [" Paris", " Berlin", " Par"]
    if not feature("pipit_constraint_choices", session, lambda: session.generate(PROMPT, choices=options)):
        return
    for seed in range(5):
        session.reset()
        out = "".join(session.generate(PROMPT, max_tokens=8, temperature=1.0, seed=seed, choices=options))
        assert out in options


def test_stop_reason(model: pipit.Model, session: pipit.Session) -> None:
    if not feature("pipit_session_stop_reason", session, lambda: session.stop_reason):
        return
    assert session.stop_reason is None
    greedy(session, PROMPT, 4)
    assert session.stop_reason == "max_tokens"
    for _ in session.generate("", max_tokens=200, temperature=0):
        break
    assert session.stop_reason == "callback"
    n_ctx = len(model.tokenize(PROMPT)) + 3
    with model.session(n_ctx=n_ctx) as small:
        greedy(small, PROMPT, 50)
        assert small.n_past == n_ctx and small.stop_reason == "context_full"


def test_chat_keeps_the_shared_prompt(model: pipit.Model, session: pipit.Session) -> None:
    q1 = [{"role": "user", "content": "What is the capital of France?"}]
    r1 = session.chat(q1, max_tokens=12, temperature=0)
    q2 = q1 + [{"role": "assistant", "content": r1}, {"role": "user", "content": "And of Italy?"}]
    r2 = session.chat(q2, max_tokens=12, temperature=0)
    if pipit.has_feature("pipit_session_truncate"):
        # The system message and the first question stayed in the KV cache.
        assert session._chat_kept > 20
    else:
        assert session._chat_kept == 0
    with model.session(n_ctx=1024, n_threads=2) as fresh:
        assert fresh.chat(q2, max_tokens=12, temperature=0) == r2
    # Anything else on the session in between: the next chat starts over.
    session.eval(model.tokenize(" x", add_bos=False))
    assert session.chat(q2, max_tokens=12, temperature=0) == r2
    assert session._chat_kept == 0
