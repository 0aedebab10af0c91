"""Plans: what a decision needs that depends only on the bundle, the asset and the day.

A book is re-decided whole when prices move, and its positions share a handful of (asset, day) pairs.
Everything those determine is worked out once per pair - the facts of the asset and the day, the
trace entries of the lead rules and the phases, the haircut schedule in force and its fixed parts
(``rules.engine.haircut``), the limits in force with their members and thresholds
(``rules.engine.limits``), the fact classes of the day (``rules.engine.fast.fact_classes``) - and kept
(``MEMO_SIZE`` plans per engine).

The parts a decision unpacks (add-on and limit steps, a fixed base, a fact's kinds, a class's
outcomes) are laid out by ``NamedTuple`` classes and kept as exact tuples: CPython 3.11 specialises
``a, b, c = x`` only for an exact tuple, and unpacks a tuple subclass through the iterator protocol,
about 2.5x slower (measured: +2 % instructions a logged decision with the named forms kept).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from rules.engine.compiler import CompiledBundle
from rules.engine.fact_builder import K_PHASE, base_facts
from rules.engine.fast.fact_classes import FactClasses, PlanClasses, keys_of
from rules.engine.haircut import HaircutPlan, haircut_plan
from rules.engine.limits import limit_plan
from rules.engine.trace import Item, Statics
from rules.policy.facts import DAY_KEY
from rules.policy.model import Asset
from rules.policy.reserved import IN_FORCE, REGISTERED

MEMO_SIZE = 4096  # plans, fact classes and as-of texts remembered per engine


@dataclass(frozen=True, slots=True)
class Plan:
    """What a decision needs that depends only on the bundle, the asset and the day."""

    asset: Asset | None  # None: not in the registry (the decision is refused by the lead rules)
    lead: tuple[Item, ...]  # trace entries: bundle in force, asset registered
    lead_failed: tuple[str, ...]  # ids of the lead rules that failed
    base: dict[str, Any] | None  # facts of the asset and the day
    phases: tuple[Item, ...]  # trace entries of the phases
    haircut: HaircutPlan | None
    limits: tuple[tuple, ...]  # every limit, in order: a LimitStep, or (None, its trace entry)
    quantum: Decimal | None  # the asset's smallest unit
    classes: PlanClasses | None = None  # the classes of the decisions' facts, when the plan decides applicability


def phase_items(bundle: Any, st: Statics, day: date, participant: str | None) -> tuple[Item, ...]:
    """The phases' trace entries: the one in force on ``day`` for ``participant`` 'applied'. Its
    threshold is the participant's own window (Letter 26-05 counts from the FCM's notice) where that
    differs from the programme's, with the participant named."""
    d = day.isoformat()
    if participant is None:
        now = bundle.phase_at(day)
        return tuple(st.item(p.id, "applied" if p is now else "not_applicable", d) for p in bundle.phases)
    windows = {w.phase.id: w for w in bundle.clock_of(participant)}
    out = []
    for p in bundle.phases:
        w = windows.get(p.id)
        applied = w is not None and w.holds(day)
        if w is not None and (w.starts, w.ends) != (p.starts, p.ends):
            threshold: Any = {"from": w.starts.isoformat(), "to": w.ends.isoformat() if w.ends else None,
                              "participant": participant}
            out.append(st.item(p.id, "applied" if applied else "not_applicable", d, threshold))
        else:
            out.append(st.item(p.id, "applied" if applied else "not_applicable", d))
    return tuple(out)


class Planner:
    """The plans of one compiled bundle, made on first use and remembered."""

    def __init__(self, compiled: CompiledBundle, statics: Statics, classes: FactClasses):
        self.compiled = compiled
        self.bundle = bundle = compiled.bundle
        self.statics = statics
        self.classes = classes
        self._plans: dict[tuple[str, date, str | None], Plan] = {}
        self._classes_by_day: dict[tuple, PlanClasses] = {}
        self._serial = itertools.count()
        self._add_on_rules = {r.id: r for r in compiled.rules if r.kind == "add_on"}
        # Whether a rule applies depends on the asset and the day only - the same for every decision
        # of a plan - when its conditions test nothing else; then a plan's classes need only the facts
        # its applicable rules test (checked against the evaluator's outcomes on every new class).
        base = set(base_facts(bundle, next(iter(bundle.assets.values())), bundle.start_date)) if bundle.assets else set()
        self.local = all(keys_of(r.applies) <= base for r in compiled.rules)

    def plan(self, symbol: str, day: date, participant: str | None = None) -> Plan:
        """The plan of ``symbol`` on ``day`` for ``participant`` (whose clock says the phase; None: the
        programme's own clock)."""
        key = (symbol, day, participant)
        p = self._plans.get(key)
        if p is None:
            if len(self._plans) >= MEMO_SIZE:
                self._plans.clear()
            p = self._plans[key] = self._make(symbol, day, participant)
        return p

    def _make(self, symbol: str, day: date, participant: str | None = None) -> Plan:
        bundle = self.bundle
        st = self.statics
        asset = bundle.assets.get(symbol)
        d = day.isoformat()
        in_force = bundle.dated.in_force(day)
        lead = (st.item(IN_FORCE[0], "pass" if in_force else "fail", d),
                st.item(REGISTERED[0], "pass" if asset else "fail", symbol))
        lead_failed = tuple(r for r, ok in ((IN_FORCE[0], in_force), (REGISTERED[0], asset is not None)) if not ok)
        if asset is None:
            return Plan(None, lead, lead_failed, None, (), None, (), None)
        phases = phase_items(bundle, st, day, participant)
        base = base_facts(bundle, asset, day, participant)
        return Plan(asset, lead, lead_failed, base, phases, haircut_plan(bundle, asset, day, st, self._add_on_rules),
                    limit_plan(bundle, asset, day, st), Decimal(1).scaleb(-asset.decimals),
                    self._classes_for(asset, base) if self.local else None)

    def _classes_for(self, asset: Asset, base: dict[str, Any]) -> PlanClasses:
        """The fact classes for ``base``, shared by every day whose day number compares alike with every
        date the rules name (same asset, same phase): their rules fold to the same formulas."""
        key = (asset.symbol, base[K_PHASE], self.classes.kind(DAY_KEY, base[DAY_KEY]))
        found = self._classes_by_day.get(key)
        if found is None:
            if len(self._classes_by_day) >= MEMO_SIZE:
                self._classes_by_day.clear()
            found = self._classes_by_day[key] = PlanClasses(self.compiled, base, tag=next(self._serial))
        return found
