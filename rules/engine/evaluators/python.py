"""A second evaluator of the same compiled conditions, in plain Python.

It interprets the IR of ``rules.engine.compiler`` (closures built from data, never generated source) with
the semantics the durable_rules evaluator has for well-typed facts: every comparison on a missing fact
is false, ``neq`` included. The differential tests check both agree on every case.
"""

from __future__ import annotations

import operator
from typing import Any, Callable, Mapping

from rules.engine.compiler import QID, CompiledBundle, Cond, negate

Pred = Callable[[Mapping[str, Any]], bool]
_MISSING = object()
_CMP = {"ge": operator.ge, "gt": operator.gt, "le": operator.le, "lt": operator.lt}


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


_TRUE: Pred = lambda f: True  # noqa: E731


def _flatten(op: str, parts: tuple) -> list[Cond]:
    out: list[Cond] = []
    for x in parts:
        out.extend(_flatten(op, x[1]) if x[0] == op else [x])
    return out


def build(c: Cond) -> Pred:
    op = c[0]
    if op == "and":
        preds = [p for p in (build(x) for x in _flatten("and", c[1])) if p is not _TRUE]
        if not preds:
            return _TRUE
        if len(preds) == 1:
            return preds[0]
        return lambda f: all(p(f) for p in preds)
    if op == "or":
        parts = _flatten("or", c[1])
        keys = {x[1] for x in parts if x[0] == "eq"}
        if len(keys) == 1 and all(x[0] == "eq" and type(x[2]) is str for x in parts):
            # 'one of these words' as a set lookup; the type check keeps durable's no-coercion semantics
            key, words = keys.pop(), frozenset(x[2] for x in parts)
            return lambda f: type(f.get(key)) is str and f[key] in words
        preds = [build(x) for x in parts]
        if any(p is _TRUE for p in preds):
            return _TRUE
        return lambda f: any(p(f) for p in preds)
    key = c[1]
    if key == QID:  # the guard against durable's session state: every fact here is an evaluation fact
        return _TRUE if op == "ex" else (lambda f: False)
    if op == "ex":
        return lambda f: key in f
    if op == "nex":
        return lambda f: key not in f
    value = c[2]
    if op == "eq":
        return lambda f: _same(f.get(key, _MISSING), value)
    if op == "neq":  # like durable_rules: no match when the fact is missing
        return lambda f: key in f and not _same(f[key], value)
    cmp = _CMP[op]

    def compare(f: Mapping[str, Any]) -> bool:
        x = f.get(key, _MISSING)
        return type(x) is int and cmp(x, value)
    return compare


class PythonEvaluator:
    name = "python"

    def __init__(self, compiled: CompiledBundle):
        self.compiled = compiled
        # The same two conditions durable_rules gets per rule: 'applies and passes' and 'does not apply'
        # (the negation by De Morgan, so a missing fact makes neither true: the rule fails, as there).
        self._rules = [(r.index, build(("and", (r.applies, r.passes))), build(negate(r.applies)))
                       for r in compiled.rules]

    def outcomes(self, facts: Mapping[str, Any]) -> dict[int, str]:
        out = {}
        for index, passes, not_applicable in self._rules:
            out[index] = "pass" if passes(facts) else "not_applicable" if not_applicable(facts) else "fail"
        return out
