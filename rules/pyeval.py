"""A second evaluator of the same compiled conditions, in plain Python.

It interprets the IR of ``rules.compiler`` (closures built from data, never generated source) with
the semantics the durable_rules evaluator has for well-typed facts: a comparison on a missing fact is
false, ``neq`` on a missing fact is true. The differential tests check both agree on every case.
"""

from __future__ import annotations

import operator
from typing import Any, Callable, Mapping

from rules.compiler import QID, CompiledBundle, Cond

Pred = Callable[[Mapping[str, Any]], bool]
_MISSING = object()
_CMP = {"ge": operator.ge, "gt": operator.gt, "le": operator.le, "lt": operator.lt}


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def build(c: Cond) -> Pred:
    op = c[0]
    if op == "and":
        parts = [build(x) for x in c[1]]
        return lambda f: all(p(f) for p in parts)
    if op == "or":
        parts = [build(x) for x in c[1]]
        return lambda f: any(p(f) for p in parts)
    key = c[1]
    if key == QID:  # the guard against durable's session state: every fact here is an evaluation fact
        return (lambda f: True) if op == "ex" else (lambda f: False)
    if op == "ex":
        return lambda f: key in f
    if op == "nex":
        return lambda f: key not in f
    value = c[2]
    if op == "eq":
        return lambda f: _same(f.get(key, _MISSING), value)
    if op == "neq":
        return lambda f: not _same(f.get(key, _MISSING), value)
    cmp = _CMP[op]

    def compare(f: Mapping[str, Any]) -> bool:
        x = f.get(key, _MISSING)
        return type(x) is int and cmp(x, value)
    return compare


class PythonEvaluator:
    name = "python"

    def __init__(self, compiled: CompiledBundle):
        self.compiled = compiled
        self._rules = [(r.index, build(r.applies), build(r.passes)) for r in compiled.rules]

    def outcomes(self, facts: Mapping[str, Any]) -> dict[int, str]:
        out = {}
        for index, applies, passes in self._rules:
            out[index] = ("pass" if passes(facts) else "fail") if applies(facts) else "not_applicable"
        return out
