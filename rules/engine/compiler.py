"""Compile a checked bundle into conditions (a small IR), and those into durable_rules definitions.

Conditions are tuples, data only:

    ("eq", key, value) ("neq", key, value) ("ge", key, n) ("gt", key, n) ("le", key, n) ("lt", key, n)
    ("ex", key) ("nex", key) ("and", (c, ...)) ("or", (c, ...))

Each testable rule (criterion, or haircut add-on with a ``when``) becomes two durable_rules rules:
``r<i>p`` (applies and passes) and ``r<i>n`` (does not apply). Facts are asserted (not posted), so a
fact is not consumed by the first rule it matches: every rule sees it. A rule for which neither fired
*failed* - so missing evidence fails closed by construction. A sentinel rule ``seen`` matches every
fact and proves the evaluation ran. The ruleset is named by the bundle hash.

Every durable rule is guarded by ``$ex q__id``: after each action durable_rules writes the session
*state* back, and the state is matched like a fact. An unguarded ``$nex``/``$neq`` rule matches that
state, fires, rewrites the state, and loops forever (found the hard way; see the regression test).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from rules.policy.facts import DAY_KEY, FACTS
from rules.policy.model import AppliesTo, Bundle, Check, Dated, Src

Cond = tuple
QID = "q__id"  # every evaluation fact carries this key (unique per evaluation)
SHARD_SIZE = 40  # rules per durable ruleset: at most 81 durable rules under the shared root (limit 128)
EPOCH = date(1970, 1, 1)

_NEGATE = {"eq": "neq", "neq": "eq", "ge": "lt", "lt": "ge", "le": "gt", "gt": "le", "ex": "nex", "nex": "ex"}
_DURABLE_OP = {"neq": "$neq", "ge": "$gte", "gt": "$gt", "le": "$lte", "lt": "$lt"}


def day_number(d: date) -> int:
    return (d - EPOCH).days


def negate(c: Cond) -> Cond:
    """Logical negation by De Morgan's laws (durable_rules has no 'not' over a sub-expression)."""
    op = c[0]
    if op == "and":
        return ("or", tuple(negate(x) for x in c[1]))
    if op == "or":
        return ("and", tuple(negate(x) for x in c[1]))
    return (_NEGATE[op],) + tuple(c[1:])


def _any_of(conds: list[Cond]) -> Cond:
    return conds[0] if len(conds) == 1 else ("or", tuple(conds))


def _all_of(conds: list[Cond]) -> Cond:
    conds = [c for c in conds if c != ("ex", QID)] or [("ex", QID)]
    return conds[0] if len(conds) == 1 else ("and", tuple(conds))


def applies_cond(a: AppliesTo) -> Cond:
    if a.everything:
        return ("ex", QID)
    parts: list[Cond] = [("eq", FACTS["asset"].key, s) for s in sorted(a.assets)]
    parts += [("eq", FACTS["asset.class"].key, c) for c in sorted(a.classes)]
    parts += [("eq", FACTS["asset.chain"].key, c) for c in sorted(a.chains)]
    return _any_of(parts)


def dated_cond(d: Dated) -> Cond:
    parts: list[Cond] = []
    if d.effective_from:
        parts.append(("ge", DAY_KEY, day_number(d.effective_from)))
    if d.effective_to:
        parts.append(("lt", DAY_KEY, day_number(d.effective_to)))
    return _all_of(parts)


def check_cond(check: Check, bundle: Bundle) -> Cond:
    key = FACTS[check.fact].key
    if check.op == "equals":
        return ("eq", key, check.value)
    if check.op == "one_of":
        return _any_of([("eq", key, v) for v in check.value])
    if check.op == "at_least":
        return ("ge", key, check.value)
    if check.op == "at_most":
        return ("le", key, check.value)
    if check.value == "participants":
        return _any_of([_all_of([("eq", key, p.id), dated_cond(p.admitted)]) for p in bundle.participants])
    if check.value == "custodians":
        chain = FACTS["asset.chain"].key
        return _any_of([_all_of([("eq", key, c.id), _any_of([("eq", chain, ch) for ch in sorted(c.chains)])])
                     for c in bundle.custodians])
    if check.value == "phase_assets":
        phase = FACTS["programme.phase"].key
        return _any_of([_all_of([("eq", phase, p.id), applies_cond(p.eligible)]) for p in bundle.phases])
    raise ValueError(f"unknown check {check}")  # pragma: no cover - the schema forbids it


@dataclass(frozen=True)
class CompiledRule:
    """A rule the evaluators decide: applies? passes?"""

    index: int
    id: str
    kind: str  # criterion | add_on
    description: str
    check: Check
    applies: Cond
    passes: Cond
    src: Src

    @property
    def pass_name(self) -> str:
        return f"r{self.index}p"

    @property
    def na_name(self) -> str:
        return f"r{self.index}n"


@dataclass(frozen=True)
class CompiledBundle:
    bundle: Bundle
    rules: tuple[CompiledRule, ...]
    ruleset_name: str

    def durable_definition(self, rules: tuple[CompiledRule, ...] | None = None) -> dict[str, Any]:
        """The durable_rules ruleset definition (JSON-able data; actions are attached by the engine)."""
        out: dict[str, Any] = {}
        for r in self.rules if rules is None else rules:
            out[r.pass_name] = {"all": [{"m": to_durable(guarded(_all_of([r.applies, r.passes])))}]}
            if r.applies != ("ex", QID):  # a rule that applies to everything is never 'not applicable'
                out[r.na_name] = {"all": [{"m": to_durable(guarded(negate(r.applies)))}]}
        out["seen"] = {"all": [{"m": to_durable(("ex", QID))}]}
        return out


    def durable_shards(self, size: int = SHARD_SIZE) -> list[tuple[str, dict[str, Any]]]:
        """The ruleset split into shards of at most ``size`` rules, each named ``<ruleset>_<k>``.

        durable_rules 2.0.28 keeps the non-equality children of one network node in a list of 128
        (NEXT_LIST_LENGTH); every rule here shares the ``$ex q__id`` root, so a ruleset of more than
        about 60 criteria fails to compile (error 107). A decision asserts its fact into every shard."""
        chunks = [self.rules[i:i + size] for i in range(0, len(self.rules), size)] or [()]
        return [(f"{self.ruleset_name}_{k}", self.durable_definition(chunk)) for k, chunk in enumerate(chunks)]


def guarded(c: Cond) -> Cond:
    """``c`` and 'this is an evaluation fact' (never the session state)."""
    if c == ("ex", QID):
        return c
    parts = c[1] if c[0] == "and" else (c,)
    return ("and", (("ex", QID),) + tuple(parts))


def to_durable(c: Cond) -> dict[str, Any]:
    """IR -> durable_rules JSON expression."""
    op = c[0]
    if op == "and":
        return {"$and": [to_durable(x) for x in c[1]]}
    if op == "or":
        return {"$or": [to_durable(x) for x in c[1]]}
    if op == "eq":
        return {c[1]: c[2]}
    if op == "ex":
        return {"$ex": {c[1]: 1}}
    if op == "nex":
        return {"$nex": {c[1]: 1}}
    return {_DURABLE_OP[op]: {c[1]: c[2]}}


def compile_bundle(bundle: Bundle) -> CompiledBundle:
    rules: list[CompiledRule] = []
    for c in bundle.criteria:
        rules.append(CompiledRule(len(rules), c.id, "criterion", c.description, c.check,
                                  _all_of([applies_cond(c.applies), dated_cond(c.dated)]), check_cond(c.check, bundle), c.src))
    for h in bundle.haircuts:
        for a in h.add_ons:
            if a.when is not None:
                rules.append(CompiledRule(len(rules), a.id, "add_on", a.description, a.when,
                                          _all_of([applies_cond(h.applies), dated_cond(h.dated)]),
                                          check_cond(a.when, bundle), a.src))
    return CompiledBundle(bundle, tuple(rules), "dacp_" + bundle.hash[:32])
