"""Independent oracle for tests/constraint.rs: reads JSON lines from stdin, one sampled
output each, and checks it with Python's own tools:
  {"kind": "regex", "pattern": P, "output": O}   re.fullmatch(P, O)
  {"kind": "schema", "schema": S, "output": O}   jsonschema, with the draft's FormatChecker
  {"kind": "gbnf", "grammar": G, "output": O}    a GBNF recognizer written here (set-of-
                                                 positions matching, no code shared with
                                                 the Rust engine); json.loads too when
                                                 "json": true
Prints each failure; exits 1 if any."""
import json
import re
import sys

import jsonschema


def parse_gbnf(text):
    rules, i = {}, 0
    n = len(text)

    def space(nl):
        nonlocal i
        while i < n:
            c = text[i]
            if c in " \t" or (nl and c in "\r\n"):
                i += 1
            elif c == "#":
                while i < n and text[i] != "\n":
                    i += 1
            else:
                break

    def char():
        nonlocal i
        c = text[i]
        if c != "\\":
            i += 1
            return c
        e = text[i + 1]
        i += 2
        width = {"x": 2, "u": 4, "U": 8}.get(e)
        if width:
            v = int(text[i:i + width], 16)
            i += width
            return chr(v)
        return {"n": "\n", "r": "\r", "t": "\t"}.get(e, e)

    def word():
        nonlocal i
        b = i
        while i < n and (text[i].isalnum() or text[i] in "-_"):
            i += 1
        return text[b:i]

    def alts(nested):
        nonlocal i
        out = [seq(nested)]
        while i < n and text[i] == "|":
            i += 1
            space(True)
            out.append(seq(nested))
        return ("alt", out)

    def seq(nested):
        nonlocal i
        items = []
        while i < n:
            c = text[i]
            if c == '"':
                i += 1
                s = ""
                while text[i] != '"':
                    s += char()
                i += 1
                items.append(("lit", s))
            elif c == "[":
                i += 1
                neg = text[i] == "^"
                if neg:
                    i += 1
                ranges = []
                while text[i] != "]":
                    lo = char()
                    hi = lo
                    if text[i] == "-" and text[i + 1] != "]":
                        i += 1
                        hi = char()
                    ranges.append((lo, hi))
                i += 1
                items.append(("cls", neg, ranges))
            elif c == ".":
                i += 1
                items.append(("cls", True, []))
            elif c == "(":
                i += 1
                space(True)
                items.append(alts(True))
                assert text[i] == ")"
                i += 1
            elif c in "*+?":
                i += 1
                lo, hi = {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
                items.append(("rep", items.pop(), lo, hi))
            elif c == "{":
                j = text.index("}", i)
                parts = text[i + 1:j].split(",")
                lo = int(parts[0])
                hi = lo if len(parts) == 1 else (int(parts[1]) if parts[1].strip() else None)
                i = j + 1
                items.append(("rep", items.pop(), lo, hi))
            elif c.isalnum() or c in "-_":
                items.append(("ref", word()))
            else:
                break
            space(nested)
        return ("seq", items)

    space(True)
    while i < n:
        name = word()
        space(False)
        assert text.startswith("::=", i), text[i:i + 20]
        i += 3
        space(True)
        rules[name] = alts(False)
        space(True)
    return rules


def gbnf_accepts(rules, s):
    sys.setrecursionlimit(100000)
    memo = {}

    def m(e, p):
        k = e[0]
        if k == "lit":
            return {p + len(e[1])} if s.startswith(e[1], p) else set()
        if k == "cls":
            if p >= len(s):
                return set()
            inside = any(lo <= s[p] <= hi for lo, hi in e[2])
            return {p + 1} if inside != e[1] else set()
        if k == "ref":
            key = (e[1], p)
            if key not in memo:
                memo[key] = set()
                memo[key] = m(rules[e[1]], p)
            return memo[key]
        if k == "alt":
            out = set()
            for x in e[1]:
                out |= m(x, p)
            return out
        if k == "seq":
            cur = {p}
            for x in e[1]:
                cur = set().union(*[m(x, q) for q in cur]) if cur else set()
            return cur
        if k == "rep":
            _, x, lo, hi = e
            out, cur, count = set(), {p}, 0
            if lo == 0:
                out |= cur
            seen = set()
            while cur and (hi is None or count < hi):
                cur = set().union(*[m(x, q) for q in cur])
                count += 1
                if hi is None and count >= lo:
                    cur -= seen
                    seen |= cur
                if count >= lo:
                    out |= cur
            return out
        raise ValueError(k)

    return len(s) in m(("ref", "root"), 0)


def main():
    failures = 0
    total = 0
    for line in sys.stdin:
        if not line.strip():
            continue
        case = json.loads(line)
        out = case["output"]
        total += 1
        try:
            if case["kind"] == "regex":
                ok = re.fullmatch(case["pattern"], out) is not None
            elif case["kind"] == "schema":
                v = json.loads(out)
                # The schema's draft (2020-12 by default) with that draft's FormatChecker:
                # `time` is RFC 3339 (offset required), not draft 3's "%H:%M:%S".
                cls = jsonschema.validators.validator_for(case["schema"])
                cls(case["schema"], format_checker=cls.FORMAT_CHECKER).validate(v)
                ok = True
            elif case["kind"] == "gbnf":
                ok = gbnf_accepts(parse_gbnf(case["grammar"]), out)
                if case.get("json"):
                    json.loads(out)
            else:
                raise ValueError(case["kind"])
        except Exception as e:  # noqa: BLE001 - any failure of the oracle is a finding
            print(f"FAIL {case.get('name', '')}: {type(e).__name__}: {e}: {out!r}")
            ok = None
        if ok is False:
            print(f"FAIL {case.get('name', '')}: not accepted: {out!r}")
        failures += ok is not True
    print(f"checked {total}, {failures} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
