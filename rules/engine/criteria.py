"""Criteria outcomes: through the evaluator once per class of facts, reused for the rest of the class.

The evaluator - durable_rules by default - costs about 0.2 ms an evaluation, so each *class* of facts
(``rules.engine.fast.fact_classes``) is evaluated once and remembered with its criteria's trace
entries; every other decision of the class reuses them, with its own observed values filled in where
the class does not pin the value down. The evaluator's outcomes are checked against the plan's
applicability on every new class, and a second evaluator (``check``), when given, must agree.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

from rules.engine.compiler import CompiledBundle
from rules.engine.fast.fact_classes import FactClasses
from rules.engine.fast.plans import MEMO_SIZE, Plan
from rules.engine.trace import CODE, MISSING, Item, Statics
from rules.errors import EngineError
from rules.policy.facts import FACTS

_ABSENT = object()


class Evaluator(Protocol):
    name: str

    def outcomes(self, facts: dict[str, Any]) -> dict[int, str]: ...


class CriterionSlot(NamedTuple):
    index: int  # the compiled rule
    ref: int | str  # its trace reference
    key: str  # the fact it tests


class Varying(NamedTuple):
    """A criterion's trace entry whose observed value other decisions of the class may differ in (kept
    as an exact tuple: see ``rules.engine.fast.plans``)."""

    pos: int  # its position among the criteria's entries
    ref: int | str
    code: str  # its outcome code (the class's)
    key: str  # the fact whose value it shows


class ClassOutcomes(NamedTuple):
    """What a class of facts decides (kept as an exact tuple: see ``rules.engine.fast.plans``)."""

    outcomes: dict[int, str]  # by compiled rule index
    template: tuple[Item, ...]  # the criteria's trace entries for the class's first facts
    varying: tuple[tuple, ...]  # Varyings
    failed: tuple[str, ...]  # ids of the criteria that failed


class Criteria:
    """The criteria of one compiled bundle, decided by ``evaluator`` (and ``check``, if given)."""

    def __init__(self, compiled: CompiledBundle, statics: Statics, classes: FactClasses, evaluator: Evaluator,
                 check: Evaluator | None, stats: dict[str, int]):
        self.compiled = compiled
        self.statics = statics
        self.classes = classes
        self.evaluator = evaluator
        self.check = check
        self.stats = stats  # the engine's: evaluations are counted there
        ref = statics.ref
        self._slots = tuple(CriterionSlot(r.index, ref[r.id], FACTS[r.check.fact].key)
                            for r in compiled.rules if r.kind == "criterion")
        self._by_class: dict[tuple, tuple] = {}  # class -> ClassOutcomes
        # classes remembered: each holds an outcome per compiled rule, so fewer for a large bundle (~64 MB)
        self._class_limit = max(256, min(4 * MEMO_SIZE, 500_000 // max(1, len(compiled.rules))))

    def decide(self, facts: dict[str, Any], plan: Plan | None, trace: list, reuse: bool = True
               ) -> tuple[dict[int, str], tuple[str, ...]]:
        """(outcomes by compiled rule index, failed criteria ids); the criteria's trace entries are
        appended to ``trace``. Without ``reuse``, every call goes through the evaluator."""
        if not reuse:
            outcomes = self._evaluate(facts)
            template, _, failed = self._template(facts, outcomes, set())
            trace.extend(template)
            return outcomes, failed
        classes = plan.classes if plan is not None else None
        cls = classes.of(facts) if classes is not None else self.classes.of(facts)
        hit = self._by_class.get(cls)
        if hit is None:
            if len(self._by_class) >= self._class_limit:
                self._by_class.clear()
            outcomes = self._evaluate(facts)
            if classes is not None:
                self._check_applicability(plan, outcomes)
            hit = self._by_class[cls] = tuple(ClassOutcomes(outcomes, *self._template(
                facts, outcomes, classes.pinned(cls) if classes else set())))
        outcomes, template, varying, failed = hit
        start = len(trace)
        trace.extend(template)
        get = facts.get
        for pos, ref, code, key in varying:  # observed values the class does not pin down: this decision's
            v = get(key, _ABSENT)
            trace[start + pos] = (ref, code) if v is _ABSENT or (v == MISSING and type(v) is str) else (ref, code, v)
        return outcomes, failed

    def _template(self, facts: dict[str, Any], outcomes: dict[int, str], pinned: set[str]
                  ) -> tuple[tuple[Item, ...], tuple[tuple, ...], tuple[str, ...]]:
        """The criteria trace entries for ``facts``, which of them carry a value that other facts of
        the same class may differ in (all but ``pinned``), and the failed criteria."""
        items: list[Item] = []
        varying: list[tuple] = []  # Varyings
        failed: list[str] = []
        for pos, (index, ref, key) in enumerate(self._slots):
            code = CODE[outcomes[index]]
            v = facts.get(key, _ABSENT)
            items.append((ref, code) if v is _ABSENT or (v == MISSING and type(v) is str) else (ref, code, v))
            if key not in pinned:
                varying.append(tuple(Varying(pos, ref, code, key)))
            if code == "f":
                failed.append(self.statics.rules[ref] if isinstance(ref, int) else ref)
        return tuple(items), tuple(varying), tuple(failed)

    def _evaluate(self, facts: dict[str, Any]) -> dict[int, str]:
        self.stats["evaluations"] += 1
        out = self.evaluator.outcomes(facts)
        if self.check is not None:
            other = self.check.outcomes(facts)
            if other != out:
                diff = {self.compiled.rules[i].id: (out[i], other.get(i)) for i in out if out[i] != other.get(i)}
                raise EngineError(f"evaluators disagree: {diff}")
        return out

    def _check_applicability(self, plan: Plan, outcomes: dict[int, str]) -> None:
        """The evaluator must agree with the plan on which rules apply (else classes could merge facts
        that differ in what a rule tests): a disagreement is an engine error, never a decision."""
        for index, applicable in plan.classes.applies if plan.classes else ():
            if (outcomes[index] != "not_applicable") != applicable:
                rule = self.compiled.rules[index]
                raise EngineError(f"rule {rule.id}: the plan for {plan.asset.symbol if plan.asset else '?'} says it "
                                  f"{'applies' if applicable else 'does not apply'}, the evaluator says {outcomes[index]}")
