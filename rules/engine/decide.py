"""Eligibility decisions: criteria through the evaluator, then haircut and limits in exact Decimal.

A decision is a value: the same query, evidence and bundle give the same decision apart from its id.
Every rule of the bundle appears in the trace (``reasons``) with its outcome:
``pass``, ``fail``, ``not_applicable`` or ``applied`` (a haircut or limit that changed the value).

Fast by construction, because clearing re-decides whole books when prices move:

* what depends only on the bundle, the asset and the day (the facts of the day, the phases,
  schedules and limits in force, the trace entries they give) is worked out once per (asset, day):
  a *plan*;
* criteria outcomes depend only on the *class* of the facts (``rules.engine.fast.fact_classes``: how each fact
  compares with the constants the rules compare it with), so the evaluator - durable_rules by
  default - decides each class once per engine and every decision of that class reuses its
  outcomes; the trace still shows each decision's own observed values;
* the trace is built compact (``rules.engine.trace``) and expanded to the public form only when asked for.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal, localcontext
from typing import Any, Callable, Protocol, Sequence

import orjson

from rules.evidence import CustodyEvidence, PriceEvidence
from rules.engine.compiler import CompiledBundle, compile_bundle
from rules.errors import InputError
from rules.engine.fast.fact_classes import FactClasses, PlanClasses, keys_of
from rules.policy.facts import DAY_KEY, FACTS
from rules.collector import gc_paused
from rules.engine.ids import new_id, new_ids
from rules.policy.model import Asset, Bundle, HaircutSchedule
from rules.engine.fact_builder import K_PHASE, base_facts, normalize
from rules.engine.query import Query, as_of_text
from rules.engine.trace import (CODE, IN_FORCE, MISSING, REGISTERED, SCHEDULE, VERIFIED, Statics, copy_json, expand, plain,
                         statics_for)

CENT = Decimal("0.01")
ZERO = Decimal(0)
ONE = Decimal(1)
PRECISION = 80  # digits: quantity (<= 10**12, 18 places) x price (<= 10**9, 18 places) stays exact
MEMO_SIZE = 4096  # plans and fact classes remembered per engine
_ABSENT = object()


class Evaluator(Protocol):
    name: str

    def outcomes(self, facts: dict[str, Any]) -> dict[int, str]: ...


class Decision:
    """One decision: ``head`` (verdict, values, policy) and the compact trace.

    ``to_json()`` is the public form, with the trace expanded into ``reasons`` (fresh objects each
    call); the decision log stores its compact form (``rules.audit.entry_format``)."""

    __slots__ = ("head", "trace", "statics")

    def __init__(self, head: dict[str, Any], trace: list[Any], statics: Statics):
        self.head = head
        self.trace = trace
        self.statics = statics

    @property
    def id(self) -> str:
        return self.head["decision_id"]

    @property
    def eligible(self) -> bool:
        return self.head["eligible"]

    @property
    def data(self) -> dict[str, Any]:
        return self.to_json()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in self.head.items():
            if k == "failed_rules":
                out["reasons"] = expand(self.trace, self.statics)
            out[k] = copy_json(v) if type(v) in (dict, list) else v  # parts are shared with the plan
        return out

    def to_json_bytes(self) -> bytes:
        """``orjson.dumps(self.to_json())``, without building the public dicts: each trace entry's JSON
        is kept per bundle (most entries recur across a book: the plan's, and criteria with the same
        observed value), so printing a batch costs a fraction of expanding it."""
        head = self.head
        before = {}
        after = {}
        part = before
        for k, v in head.items():
            if k == "failed_rules":
                part = after
            part[k] = v
        entry = self.statics.entry_json
        reasons = b",".join([entry(item) for item in self.trace])
        return b"".join((orjson.dumps(before)[:-1], b',"reasons":[', reasons, b"],", orjson.dumps(after)[1:]))


@dataclass(frozen=True)
class _Plan:
    """What a decision needs that depends only on the bundle, the asset and the day."""

    asset: Asset | None
    lead: tuple  # trace entries: bundle in force, asset registered
    lead_failed: tuple  # ids of the lead rules that failed
    base: dict[str, Any] | None  # facts of the asset and the day
    phases: tuple  # trace entries of the phases
    schedule: HaircutSchedule | None
    other_haircuts: tuple  # trace entries of the schedules (and their add-ons) that do not apply
    fixed_base: tuple | None  # (base, decided_by, components, trace entry) for schedules by sources
    add_ons: tuple  # (haircut, compiled rule index or None, ref, fact key or None, share above or None,
    #                  its component not applied / applied)
    limits: tuple  # (Limit in force, member symbols, ref, max value, max share, 1 - share, min total)
    #                 or (None, trace entry)
    schedule_missing: tuple | None  # the trace entry when no schedule applies
    quantum: Decimal | None  # the asset's smallest unit
    statics: Statics
    classes: PlanClasses | None = None  # the classes of the decisions' facts (rules.engine.fast.fact_classes)


@dataclass
class Engine:
    """A compiled bundle with its evaluator: the thing that decides."""

    compiled: CompiledBundle
    evaluator: Evaluator
    check: Evaluator | None = None  # optional second evaluator; a disagreement raises
    reuse_facts: bool = True  # evaluate each class of facts once (see rules.engine.fast.fact_classes)
    stats: dict[str, int] = field(default_factory=lambda: {"decisions": 0, "evaluations": 0})

    def __post_init__(self) -> None:
        self.statics = statics_for(self.bundle)
        self.classes = FactClasses(self.compiled)
        self._plans: dict[tuple[str, Any], _Plan] = {}
        self._by_class: dict[tuple, tuple] = {}
        self._as_of: dict[Any, str] = {}
        ref = self.statics.ref
        self._criteria = tuple((r.index, ref[r.id], FACTS[r.check.fact].key)
                               for r in self.compiled.rules if r.kind == "criterion")
        self._add_on_rules = {r.id: r for r in self.compiled.rules if r.kind == "add_on"}
        # Whether a rule applies depends on the asset and the day only - the same for every decision
        # of a plan - when its conditions test nothing else; then a plan's classes need only the facts
        # its applicable rules test (checked against the evaluator's outcomes on every new class).
        base = set(base_facts(self.bundle, next(iter(self.bundle.assets.values())), self.bundle.start_date)) \
            if self.bundle.assets else set()
        self._plan_local = all(keys_of(r.applies) <= base for r in self.compiled.rules)
        self._serial = itertools.count()
        self._classes_by_day: dict[tuple, PlanClasses] = {}
        # classes remembered: each holds an outcome per compiled rule, so fewer for a large bundle (~64 MB)
        self._class_limit = max(256, min(4 * MEMO_SIZE, 500_000 // max(1, len(self.compiled.rules))))
        b = self.bundle
        self._policy = {"bundle": b.hash, "name": b.name, "version": b.version}
        self._name = self.evaluator.name

    @property
    def bundle(self) -> Bundle:
        return self.compiled.bundle

    @classmethod
    def for_bundle(cls, bundle: Bundle, evaluator: str = "durable_rules", reuse_facts: bool = True) -> "Engine":
        from rules.engine.evaluators.durable import DurableEvaluator
        from rules.engine.evaluators.python import PythonEvaluator

        compiled = compile_bundle(bundle)
        if evaluator == "durable_rules":
            return cls(compiled, DurableEvaluator(compiled), reuse_facts=reuse_facts)
        if evaluator == "python":
            return cls(compiled, PythonEvaluator(compiled), reuse_facts=reuse_facts)
        if evaluator == "checked":
            return cls(compiled, DurableEvaluator(compiled), PythonEvaluator(compiled), reuse_facts=reuse_facts)
        raise InputError(f"unknown evaluator {evaluator!r} (use durable_rules, python or checked)", "engine")

    def decide(self, query: Query, evidence: Sequence[CustodyEvidence | PriceEvidence] = (),
               decision_id: str | None = None, verification: dict[str, Any] | None = None) -> Decision:
        """Decide ``query``. ``verification`` reports an on-chain custody check that was asked for:
        ``{"status": "verified"}`` or ``{"status": "failed", "reason": code, "message": words}``;
        a failed one makes the decision ineligible (fail closed)."""
        self.check_inputs((query,))
        self.stats["decisions"] += 1
        with localcontext() as ctx:
            ctx.prec = PRECISION
            head, trace = _decide(self, query, evidence, decision_id or new_id(), verification)
        return Decision(head, trace, self.statics)

    def check_inputs(self, queries: Sequence[Query]) -> None:
        """Refuse what the bundle makes bad input (``InputError``): more decimal places than the asset
        has, a portfolio holding of an asset the registry does not know. Every query of a batch is
        checked before any is decided, so a bad one means nothing is decided or logged."""
        assets = self.bundle.assets
        n = len(queries)
        for i, q in enumerate(queries):
            asset = assets.get(q.asset)
            if asset is not None:  # an unknown asset itself is not bad input: it is refused, with its reason
                try:
                    _check_quantity_precision(q, asset)
                    _check_portfolio(q, self.bundle)
                except InputError as e:
                    if n == 1:
                        raise
                    # in a batch, which query: its position (and id), so the line can be found
                    raise InputError(e.message, f"query {i + 1} of {n}{f' (id {q.id})' if q.id else ''}, {e.where}"
                                     ) from None

    def decide_many(self, queries: Sequence[Query], evidence: Sequence[Sequence[Any]] | None = None,
                    verifications: Sequence[dict[str, Any] | None] | None = None,
                    progress: Callable[[int], None] | None = None, checked: bool = False) -> list[Decision]:
        """``decide`` for each query (with its evidence and verification, if given), in order; all of
        them are checked first (``check_inputs``) unless the caller has (``checked``)."""
        if not checked:
            self.check_inputs(queries)
        out = []
        statics = self.statics
        stats = self.stats
        ids = new_ids(len(queries))
        with gc_paused(), localcontext() as ctx:
            ctx.prec = PRECISION
            for i, q in enumerate(queries):
                stats["decisions"] += 1
                head, trace = _decide(self, q, evidence[i] if evidence else (), ids[i],
                                      verifications[i] if verifications else None)
                out.append(Decision(head, trace, statics))
                if progress:
                    progress(i + 1)
        return out

    # -- what depends only on the bundle, the asset and the day ---------------------------------
    def plan(self, symbol: str, day: Any) -> _Plan:
        key = (symbol, day)
        p = self._plans.get(key)
        if p is None:
            if len(self._plans) >= MEMO_SIZE:
                self._plans.clear()
            p = self._plans[key] = _make_plan(self, symbol, day)
        return p

    def as_of_text(self, as_of: Any) -> str:
        t = self._as_of.get(as_of)
        if t is None:
            if len(self._as_of) >= MEMO_SIZE:
                self._as_of.clear()
            t = self._as_of[as_of] = as_of_text(as_of)
        return t

    # -- criteria: through the evaluator once per class of facts ---------------------------------
    def criteria(self, facts: dict[str, Any], plan: _Plan | None = None, trace: list | None = None
                 ) -> tuple[dict[int, str], tuple]:
        """(outcomes by compiled rule index, failed criteria ids); the criteria's trace entries are
        appended to ``trace``."""
        if trace is None:
            trace = []
        if not self.reuse_facts:
            outcomes = self._evaluate(facts)
            template, varying, failed = self._template(facts, outcomes, set())
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
                _check_applicability(self, plan, outcomes)
            hit = self._by_class[cls] = (outcomes, *self._template(facts, outcomes,
                                                                   classes.pinned(cls) if classes else set()))
        outcomes, template, varying, failed = hit
        start = len(trace)
        trace.extend(template)
        get = facts.get
        for pos, ref, code, key in varying:  # observed values the class does not pin down: this decision's
            v = get(key, _ABSENT)
            trace[start + pos] = (ref, code) if v is _ABSENT or (v == MISSING and type(v) is str) else (ref, code, v)
        return outcomes, failed

    def _template(self, facts: dict[str, Any], outcomes: dict[int, str], pinned: set[str]
                  ) -> tuple[tuple, tuple, tuple]:
        """The criteria trace entries for ``facts``, which of them carry a value that other facts of
        the same class may differ in (all but ``pinned``), and the failed criteria."""
        items, varying, failed = [], [], []
        for pos, (index, ref, key) in enumerate(self._criteria):
            code = CODE[outcomes[index]]
            v = facts.get(key, _ABSENT)
            items.append((ref, code) if v is _ABSENT or (v == MISSING and type(v) is str) else (ref, code, v))
            if key not in pinned:
                varying.append((pos, ref, code, key))
            if code == "f":
                failed.append(self.statics.rules[ref] if isinstance(ref, int) else ref)
        return tuple(items), tuple(varying), tuple(failed)

    def _evaluate(self, facts: dict[str, Any]) -> dict[int, str]:
        self.stats["evaluations"] += 1
        out = self.evaluator.outcomes(facts)
        if self.check is not None:
            other = self.check.outcomes(facts)
            if other != out:
                from rules.errors import EngineError

                diff = {self.compiled.rules[i].id: (out[i], other.get(i)) for i in out if out[i] != other.get(i)}
                raise EngineError(f"evaluators disagree: {diff}")
        return out


def _make_plan(engine: Engine, symbol: str, day: Any) -> _Plan:
    bundle = engine.bundle
    st = engine.statics
    asset = bundle.assets.get(symbol)
    d = day.isoformat()
    in_force = bundle.dated.in_force(day)
    lead = (st.item(IN_FORCE[0], "pass" if in_force else "fail", d),
            st.item(REGISTERED[0], "pass" if asset else "fail", symbol))
    lead_failed = tuple(r for r, ok in ((IN_FORCE[0], in_force), (REGISTERED[0], asset is not None)) if not ok)
    if asset is None:
        return _Plan(None, lead, lead_failed, None, (), None, (), None, (), (), None, None, st)
    phase = bundle.phase_at(day)
    phases = tuple(st.item(p.id, "applied" if p is phase else "not_applicable", d) for p in bundle.phases)
    sched = _schedule(bundle, asset, day)
    others: list[tuple] = []
    for h in bundle.haircuts:
        if h is not sched:
            others.append(st.item(h.id, "not_applicable", None))
            others.extend(st.item(a.id, "not_applicable", None, None) for a in h.add_ons)
    fixed = None
    add_ons: list[tuple] = []
    missing = None
    if sched is None:
        missing = st.item(SCHEDULE[0], "fail", asset.symbol, None,
                          {"policy": {"file": asset.src.file, "line": asset.src.line}})
    else:
        if sched.sources:
            top = max(sched.sources, key=lambda s: s.haircut)
            components = [{"rule": s.id, "kind": "source", "haircut": plain(s.haircut), "source": s.source,
                           "decisive": s is top} for s in sched.sources]
            base, decided_by = _floor(sched, top.haircut, top.id, components)
            fixed = (base, decided_by, tuple(components),
                     st.item(sched.id, "applied", {s.id: plain(s.haircut) for s in sched.sources},
                             {"base": plain(base), "decided_by": decided_by}))
        for a in sched.add_ons:
            # the add-on's component in the decision, applied or not (shared: Decision.to_json copies)
            shown = tuple({"rule": a.id, "kind": "add_on", "haircut": plain(a.haircut), "applied": hit}
                          for hit in (False, True))
            if a.when is not None:
                rule = engine._add_on_rules[a.id]
                add_ons.append((a.haircut, rule.index, st.ref[a.id], FACTS[rule.check.fact].key, None, shown))
            else:
                add_ons.append((a.haircut, None, st.ref[a.id], None, a.when_share_above, shown))
    limits: list[tuple] = []
    for lim in bundle.limits:
        if not (lim.applies.matches(asset) and lim.dated.in_force(day)):
            limits.append((None, st.item(lim.id, "not_applicable", None, None)))
            continue
        members = (asset.symbol,) if lim.scope == "asset" else tuple(
            s for s, a in bundle.assets.items() if lim.applies.matches(a))
        share = lim.max_share if lim.max_share is not None and lim.max_share < 1 else None
        limits.append((lim, members, st.ref[lim.id], lim.max_value_usd, share,
                       ONE - share if share is not None else None, lim.min_total_usd or ZERO))
    base = base_facts(bundle, asset, day)
    classes = _plan_classes(engine, asset, base) if engine._plan_local else None
    return _Plan(asset, lead, lead_failed, base, phases, sched, tuple(others), fixed, tuple(add_ons), tuple(limits),
                 missing, Decimal(1).scaleb(-asset.decimals), st, classes)


def _plan_classes(engine: Engine, asset: Asset, base: dict[str, Any]) -> PlanClasses:
    """The fact classes for ``base``, shared by every day whose day number compares alike with every
    date the rules name (same asset, same phase): their rules fold to the same formulas."""
    key = (asset.symbol, base[K_PHASE], engine.classes.kind(DAY_KEY, base[DAY_KEY]))
    found = engine._classes_by_day.get(key)
    if found is None:
        if len(engine._classes_by_day) >= MEMO_SIZE:
            engine._classes_by_day.clear()
        found = engine._classes_by_day[key] = PlanClasses(engine.compiled, base, tag=next(engine._serial))
    return found


def _check_applicability(engine: Engine, plan: _Plan, outcomes: dict[int, str]) -> None:
    """The evaluator must agree with the plan on which rules apply (else classes could merge facts
    that differ in what a rule tests): a disagreement is an engine error, never a decision."""
    for index, applicable in plan.classes.applies if plan.classes else ():
        if (outcomes[index] != "not_applicable") != applicable:
            from rules.errors import EngineError

            rule = engine.compiled.rules[index]
            raise EngineError(f"rule {rule.id}: the plan for {plan.asset.symbol if plan.asset else '?'} says it "
                              f"{'applies' if applicable else 'does not apply'}, the evaluator says {outcomes[index]}")


def _floor(sched: HaircutSchedule, base: Decimal, decided_by: str, components: list) -> tuple[Decimal, str]:
    if sched.floor is not None:
        floor_decides = sched.floor > base
        components.append({"rule": sched.id, "kind": "floor", "haircut": plain(sched.floor), "decisive": floor_decides})
        if floor_decides:
            return sched.floor, f"{sched.id}.floor"
    return base, decided_by


def _decide(engine: Engine, query: Query, evidence: Sequence[Any], decision_id: str,
            verification: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[Any]]:
    """The decision's head and its compact trace."""
    plan = engine.plan(query.asset, query.day)
    price = query.price_usd
    quantity = query.quantity
    trace: list[Any] = list(plan.lead)
    asset = plan.asset
    if asset is None:
        return _head(engine, query, decision_id, price, False, None, None, None, "0", None, "0",
                     list(plan.lead_failed), verification, evidence), trace

    for ev in evidence:
        if isinstance(ev, PriceEvidence) and ev.asset == asset.symbol:
            price = ev.price_usd
    facts = normalize(engine.bundle, asset, query, evidence, plan.base)
    trace.extend(plan.phases)
    outcomes, failed_criteria = engine.criteria(facts, plan, trace)
    failed = list(plan.lead_failed)
    failed.extend(failed_criteria)
    if verification is not None:
        ok = verification.get("status") == "verified"
        custody = next((e for e in evidence if isinstance(e, CustodyEvidence)), None)
        observed = ({"block": custody.block_number, "block_hash": custody.block_hash, "balance": plain(custody.quantity)}
                    if ok and custody else {k: v for k, v in verification.items() if k != "status"})
        trace.append(engine.statics.item(VERIFIED[0], "pass" if ok and custody else "fail", observed))
        if not (ok and custody):
            failed.append(VERIFIED[0])

    # Money from here on, in the caller's context of PRECISION digits (exact; rounded down at the end).
    by_asset: dict[str, Decimal] = {}
    total_before = ZERO
    for h in query.portfolio:
        v = h.collateral_value_usd
        by_asset[h.asset] = by_asset[h.asset] + v if h.asset in by_asset else v
        total_before += v
    market_value = quantity * price
    haircut, total = _haircut(plan, trace, failed, facts, outcomes, market_value, by_asset, total_before)
    eligible = not failed
    after_haircut = market_value * (ONE - total) if haircut else ZERO
    counted = _limits(plan, trace, after_haircut, by_asset, total_before)
    if eligible:
        collateral = _cents(counted)
        counted_qty = quantity * counted / after_haircut if after_haircut else ZERO
        counted_qty = plain(counted_qty.quantize(plan.quantum, ROUND_DOWN))
    else:
        collateral = counted_qty = "0"
    return _head(engine, query, decision_id, price, eligible, _cents(market_value), haircut, _cents(after_haircut),
                 counted_qty, _cents(after_haircut - counted), collateral, failed, verification, evidence), trace


def _head(engine: Engine, query: Query, decision_id: str, price: Decimal, eligible: bool, market_value: str | None,
          haircut: dict[str, Any] | None, after_haircut: str | None, counted_qty: str, excluded: str | None,
          collateral: str, failed: list[str], verification: dict[str, Any] | None,
          evidence: Sequence[Any]) -> dict[str, Any]:
    out = {
        "decision_id": decision_id,
        "query_id": query.id,
        "eligible": eligible,
        "account": query.account,
        "participant": query.participant,
        "asset": query.asset,
        "quantity": plain(query.quantity),
        "price_usd": plain(price),
        "as_of": engine.as_of_text(query.as_of),
        "policy": engine._policy,  # shared: Decision.to_json copies it
        "engine": engine._name,
        "market_value_usd": market_value,
        "haircut": haircut,
        "value_after_haircut_usd": after_haircut,
        "counted_quantity": counted_qty,
        "excluded_by_limits_usd": excluded,
        "collateral_value_usd": collateral,
        "failed_rules": failed,
    }
    if verification is not None:
        out["verification"] = dict(verification)
    if evidence:
        out["evidence"] = [e.to_json() for e in evidence]
    return out


def _check_quantity_precision(query: Query, asset: Asset) -> None:
    exp = query.quantity.as_tuple().exponent
    if isinstance(exp, int) and -exp > asset.decimals:
        raise InputError(f"{plain(query.quantity)} has more decimal places than {asset.symbol} has ({asset.decimals})",
                         "quantity")


def _check_portfolio(query: Query, bundle: Bundle) -> None:
    assets = bundle.assets
    for i, h in enumerate(query.portfolio):
        if h.asset not in assets:
            raise InputError(f"unknown asset {h.asset!r} (known: {', '.join(sorted(assets))})",
                             f"portfolio[{i}].asset")


def _schedule(bundle: Bundle, asset: Asset, day: Any) -> HaircutSchedule | None:
    mine = [h for h in bundle.haircuts if h.applies.matches(asset) and h.dated.in_force(day)]
    return mine[0] if mine else None  # the loader guarantees at most one in force per day


def _haircut(plan: _Plan, trace: list, failed: list, facts: dict[str, Any], outcomes: dict[int, str],
             market_value: Decimal, by_asset: dict[str, Decimal], total_before: Decimal
             ) -> tuple[dict[str, Any] | None, Decimal]:
    """The haircut and its exact total, with their trace entries; ``None`` (and a failed rule) when
    there is none."""
    sched = plan.schedule
    # Schedules that do not apply to this asset still appear in the trace, with their add-ons.
    trace.extend(plan.other_haircuts)
    if sched is None:
        trace.append(plan.schedule_missing)
        failed.append(SCHEDULE[0])
        return None, ZERO
    if plan.fixed_base is not None:
        base, decided_by, fixed_components, entry = plan.fixed_base
        components = list(fixed_components)  # shared with the plan: Decision.to_json copies them
        trace.append(entry)
    else:
        key = FACTS[sched.bucket_fact].key
        value = facts.get(key)
        st = plan.statics
        if value is None:
            trace.append(st.item(sched.id, "fail", {sched.bucket_fact: "missing"}, "a bucket needs this fact"))
            failed.append(sched.id)
            return None, ZERO
        bucket = next(b for b in sched.buckets if b.up_to is None or value <= b.up_to)
        base = bucket.haircut
        decided_by = f"{sched.id}[{sched.bucket_fact}<={bucket.up_to}]" if bucket.up_to is not None \
            else f"{sched.id}[{sched.bucket_fact}>{sched.buckets[-2].up_to if len(sched.buckets) > 1 else 0}]"
        components = [{"rule": sched.id, "kind": "bucket", "haircut": plain(bucket.haircut), "fact": sched.bucket_fact,
                       "observed": value, "up_to": bucket.up_to, "decisive": True}]
        base, decided_by = _floor(sched, base, decided_by, components)
        trace.append(st.item(sched.id, "applied", {sched.bucket_fact: value}, {"base": plain(base),
                                                                              "decided_by": decided_by}))
    total = base
    if plan.add_ons:
        value_after_base = market_value * (ONE - base)
        for haircut, index, ref, key, share_above, shown in plan.add_ons:
            if index is not None:
                hit = outcomes[index] == "pass"
                obs = facts.get(key, _ABSENT)
                item = (ref, "a" if hit else "n") if obs is _ABSENT else (ref, "a" if hit else "n", obs)
            else:
                mine = by_asset.get(plan.asset.symbol, ZERO) + value_after_base
                everything = total_before + value_after_base
                hit = mine > share_above * everything if everything else ZERO > share_above
                item = (ref, "a" if hit else "n", _share(mine, everything))
            if hit:
                total += haircut
            components.append(shown[hit])
            trace.append(item)
    if total > ONE:
        total = ONE
    return {"total": plain(total), "base": plain(base), "decided_by": decided_by, "schedule": sched.id,
            "components": components}, total


def _share(part: Decimal, whole: Decimal) -> str:
    """part / whole as a fraction rounded down to the basis point, e.g. '0.4137' (exact: an integer
    division, no rounded quotient in between)."""
    n = part * 10000 // whole if whole else ZERO
    return str(n.scaleb(-4)) if n else "0.0000"  # 0 would print as 0E-4


def _cents(d: Decimal) -> str:
    """Money rounded down to the cent, as text (a value quantized to cents never prints an exponent)."""
    return str(d.quantize(CENT, ROUND_DOWN))


def _limits(plan: _Plan, trace: list, value: Decimal, by_asset: dict[str, Decimal], total_before: Decimal) -> Decimal:
    """Apply every limit in force: the counted value is the least any limit allows."""
    counted = value
    requested = None
    everything = total_before + value
    for step in plan.limits:
        lim = step[0]
        if lim is None:
            trace.append(step[1])
            continue
        _, members, ref, max_value, share, rest, min_total = step
        if requested is None:
            requested = _cents(value)
        group = ZERO
        for symbol in members:
            if symbol in by_asset:
                group += by_asset[symbol]
        # the largest new value x <= value that keeps the group within the limit
        allowed = value
        if max_value is not None:
            room = max_value - group
            if room < allowed:
                allowed = room if room > ZERO else ZERO
        if share is not None and everything > min_total:
            # (group + x) / (total + x) <= s  <=>  x <= cap = (s*total - group) / (1 - s), and below the
            # threshold the share limit does not bite: x may reach min_total - total whatever the share.
            # The division only when the cap binds (rest > 0: cap < allowed <=> s*total - group < allowed*rest).
            excess = share * total_before - group
            floor = min_total - total_before
            if allowed > ZERO and allowed > floor and excess < allowed * rest:
                cap = excess / rest
                if cap < ZERO:
                    cap = ZERO
                if floor > cap:
                    cap = floor
                allowed = cap
        if allowed < ZERO:
            allowed = ZERO
        binding = allowed < counted
        if binding:
            counted = allowed
        observed = [_cents(group), _share(group + value, everything), requested]  # rules.engine.trace: LIMIT_OBSERVED
        trace.append((ref, "a", observed, _cents(allowed)) if binding else (ref, "p", observed))
    return counted if counted > ZERO else ZERO
