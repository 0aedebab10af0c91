"""Eligibility decisions: criteria through the evaluator, then haircut and limits in exact Decimal.

A decision is a value: the same query, evidence and bundle give the same decision apart from its id.
Every rule of the bundle appears in the trace (``reasons``) with its outcome:
``pass``, ``fail``, ``not_applicable`` or ``applied`` (a haircut or limit that changed the value).

Fast by construction, because clearing re-decides whole books when prices move:

* what depends only on the bundle, the asset and the day (applicable rules, phases, schedules and
  limits in force, the trace entries they give) is worked out once per (asset, day): a *plan*;
* criteria outcomes depend only on the facts, so a batch reuses them for identical facts (bounded
  memo; every distinct fact set still goes through the evaluator, durable_rules included);
* the trace is built compact (``rules.trace``) and expanded to the public form only when asked for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal, localcontext
from typing import Any, Callable, Protocol, Sequence

from adapters.evidence import CustodyEvidence, PriceEvidence
from rules.compiler import CompiledBundle, CompiledRule, compile_bundle
from rules.errors import InputError
from rules.facts import FACTS
from rules.model import Asset, Bundle, HaircutSchedule, Limit
from rules.normalize import normalize
from rules.query import Query
from rules.trace import IN_FORCE, REGISTERED, SCHEDULE, VERIFIED, Statics, copy_json, expand, statics_for

CENT = Decimal("0.01")
ZERO = Decimal(0)
ONE = Decimal(1)
PRECISION = 80  # digits: quantity (<= 10**12, 18 places) x price (<= 10**9, 18 places) stays exact


class Evaluator(Protocol):
    name: str

    def outcomes(self, facts: dict[str, Any]) -> dict[int, str]: ...


MEMO_SIZE = 4096  # distinct fact sets remembered per engine (about 2 KB each)
QUARTER_BP = Decimal("0.0001")


def _s(d: Decimal | int) -> str:
    """Decimal to a plain string without exponent."""
    if type(d) is not Decimal:  # policy numbers may be int: format(1000000, "f") is '1000000.000000'
        d = Decimal(d)
    t = str(d)  # the same digits as format(d, "f") unless it chose an exponent; 3x cheaper
    return format(d, "f") if "E" in t else t


def _iso(d: Any) -> str | None:
    return None if d is None else d.isoformat()


class Decision:
    """One decision: ``head`` (verdict, values, policy) and the compact trace.

    ``to_json()`` is the public form, with the trace expanded into ``reasons``; ``to_log()`` is what the
    decision log stores (the compact trace; the rest comes from the stored bundle, see ``rules.trace``)."""

    __slots__ = ("head", "trace", "statics", "_json")

    def __init__(self, head: dict[str, Any], trace: list[Any], statics: Statics):
        self.head = head
        self.trace = trace
        self.statics = statics
        self._json: dict[str, Any] | None = None

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
        if self._json is None:
            out: dict[str, Any] = {}
            for k, v in self.head.items():
                if k == "failed_rules":
                    out["reasons"] = expand(self.trace, self.statics)
                out[k] = copy_json(v) if k == "haircut" else v  # its components are shared with the plan
            self._json = out
        return self._json

    def to_log(self) -> dict[str, Any]:
        out = dict(self.head)
        out["trace"] = self.trace
        return out


def _threshold(rule: CompiledRule) -> Any:
    v = rule.check.value
    return {"op": rule.check.op, "value": list(v) if isinstance(v, tuple) else v}


@dataclass(frozen=True)
class _Plan:
    """What a decision needs that depends only on the bundle, the asset and the day."""

    asset: Asset | None
    day: str
    lead: tuple  # trace entries: bundle in force, asset registered
    phases: tuple  # trace entries of the phases
    schedule: HaircutSchedule | None
    other_haircuts: tuple  # trace entries of the schedules (and their add-ons) that do not apply
    fixed_base: tuple | None  # (base, decided_by, components, observed, threshold) for schedules by sources
    add_ons: tuple  # (AddOn, trace threshold, fact key or None, compiled rule index or None)
    limits: tuple  # (Limit in force, member symbols, trace threshold) or (None, trace entry)
    schedule_src: dict[str, Any] | None
    quantum: Decimal | None  # the asset's smallest unit


@dataclass
class Engine:
    """A compiled bundle with its evaluator: the thing that decides."""

    compiled: CompiledBundle
    evaluator: Evaluator
    check: Evaluator | None = None  # optional second evaluator; a disagreement raises
    reuse_facts: bool = True  # remember criteria outcomes per distinct fact set (bounded)
    stats: dict[str, int] = field(default_factory=lambda: {"decisions": 0, "evaluations": 0})

    def __post_init__(self) -> None:
        self.statics = statics_for(self.bundle)
        self._plans: dict[tuple[str, Any], _Plan] = {}
        self._memo: dict[Any, tuple] = {}
        self._criteria = tuple((r.index, r.id, FACTS[r.check.fact].key, _threshold(r))
                               for r in self.compiled.rules if r.kind == "criterion")
        self._add_on_rules = {r.id: r for r in self.compiled.rules if r.kind == "add_on"}

    @property
    def bundle(self) -> Bundle:
        return self.compiled.bundle

    @classmethod
    def for_bundle(cls, bundle: Bundle, evaluator: str = "durable_rules", reuse_facts: bool = True) -> "Engine":
        from rules.durable_engine import DurableEvaluator
        from rules.pyeval import PythonEvaluator

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
        self.stats["decisions"] += 1
        with localcontext() as ctx:
            ctx.prec = PRECISION
            head, trace = _decide(self, query, evidence, decision_id or _new_id(), verification)
        return Decision(head, trace, self.statics)

    def decide_many(self, queries: Sequence[Query], evidence: Sequence[Sequence[Any]] | None = None,
                    verifications: Sequence[dict[str, Any] | None] | None = None,
                    progress: Callable[[int], None] | None = None) -> list[Decision]:
        """``decide`` for each query (with its evidence and verification, if given), in order."""
        out = []
        statics = self.statics
        stats = self.stats
        with localcontext() as ctx:
            ctx.prec = PRECISION
            for i, q in enumerate(queries):
                stats["decisions"] += 1
                head, trace = _decide(self, q, evidence[i] if evidence else (), _new_id(),
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

    # -- criteria: through the evaluator once per distinct fact set ------------------------------
    def criteria(self, facts: dict[str, Any]) -> tuple[dict[int, str], tuple, tuple]:
        """(outcomes by compiled rule index, criteria trace entries, failed criteria ids)."""
        if not self.reuse_facts:
            return self._evaluate(facts)
        # bool is an int in Python (True == 1): the types are part of the key
        key = (tuple(facts.items()), tuple(map(type, facts.values())))
        hit = self._memo.get(key)
        if hit is None:
            if len(self._memo) >= MEMO_SIZE:
                self._memo.clear()
            hit = self._memo[key] = self._evaluate(facts)
        return hit

    def _evaluate(self, facts: dict[str, Any]) -> tuple[dict[int, str], tuple, tuple]:
        self.stats["evaluations"] += 1
        out = self.evaluator.outcomes(facts)
        if self.check is not None:
            other = self.check.outcomes(facts)
            if other != out:
                from rules.durable_engine import EngineError

                diff = {self.compiled.rules[i].id: (out[i], other.get(i)) for i in out if out[i] != other.get(i)}
                raise EngineError(f"evaluators disagree: {diff}")
        items = tuple((rid, out[i], facts.get(k, "missing"), thr) for i, rid, k, thr in self._criteria)
        return out, items, tuple(it[0] for it in items if it[1] == "fail")


_IDS: list[str] = []


def _new_id() -> str:
    """A random (version 4) UUID, as ``str(uuid.uuid4())``; drawn from the OS in blocks (cheaper)."""
    while True:
        try:
            return _IDS.pop()  # atomic; another thread may empty the list between a check and a pop
        except IndexError:
            _IDS.extend(_uuid4_block(512))


def _uuid4_block(n: int) -> list[str]:
    h = os.urandom(16 * n).hex()
    out = []
    for i in range(0, 32 * n, 32):
        u = h[i:i + 32]
        variant = "89ab"[int(u[16], 16) & 3]  # RFC 4122: version nibble 4, variant bits 10xx
        out.append(f"{u[:8]}-{u[8:12]}-4{u[13:16]}-{variant}{u[17:20]}-{u[20:]}")
    return out


def _make_plan(engine: Engine, symbol: str, day: Any) -> _Plan:
    bundle = engine.bundle
    asset = bundle.assets.get(symbol)
    d = day.isoformat()
    in_force = bundle.dated.in_force(day)
    lead = ((IN_FORCE[0], "pass" if in_force else "fail", d,
             {"from": _iso(bundle.dated.effective_from), "to": _iso(bundle.dated.effective_to)}),
            (REGISTERED[0], "pass" if asset else "fail", symbol, {"op": "one_of", "value": sorted(bundle.assets)}))
    if asset is None:
        return _Plan(None, d, lead, (), None, (), None, (), (), None, None)
    phase = bundle.phase_at(day)
    phases = tuple((p.id, "applied" if p is phase else "not_applicable", d, {"from": _iso(p.starts), "to": _iso(p.ends)})
                   for p in bundle.phases)
    sched = _schedule(bundle, asset, day)
    others: list[tuple] = []
    for h in bundle.haircuts:
        if h is not sched:
            others.append((h.id, "not_applicable", None, None))
            others.extend((a.id, "not_applicable", None, None) for a in h.add_ons)
    fixed = None
    add_ons: list[tuple] = []
    if sched is not None:
        if sched.sources:
            top = max(sched.sources, key=lambda s: s.haircut)
            base, decided_by = top.haircut, top.id
            components = [{"rule": s.id, "kind": "source", "haircut": _s(s.haircut), "source": s.source,
                           "decisive": s is top} for s in sched.sources]
            base, decided_by = _floor(sched, base, decided_by, components)
            fixed = (base, decided_by, tuple(components), {s.id: _s(s.haircut) for s in sched.sources},
                     {"base": _s(base), "decided_by": decided_by})
        for a in sched.add_ons:
            if a.when is not None:
                rule = engine._add_on_rules[a.id]
                add_ons.append((a, _threshold(rule), FACTS[rule.check.fact].key, rule.index, _s(a.haircut)))
            else:
                add_ons.append((a, {"op": "share_above", "value": _s(a.when_share_above)}, None, None, _s(a.haircut)))
    limits: list[tuple] = []
    for lim in bundle.limits:
        if not (lim.applies.matches(asset) and lim.dated.in_force(day)):
            limits.append((None, (lim.id, "not_applicable", None, None)))
            continue
        members = (asset.symbol,) if lim.scope == "asset" else tuple(
            s for s, a in bundle.assets.items() if lim.applies.matches(a))
        limits.append((lim, members, _limit_threshold(lim)))
    return _Plan(asset, d, lead, phases, sched, tuple(others), fixed, tuple(add_ons), tuple(limits),
                 {"file": asset.src.file, "line": asset.src.line}, Decimal(1).scaleb(-asset.decimals))


def _floor(sched: HaircutSchedule, base: Decimal, decided_by: str, components: list) -> tuple[Decimal, str]:
    if sched.floor is not None:
        floor_decides = sched.floor > base
        components.append({"rule": sched.id, "kind": "floor", "haircut": _s(sched.floor), "decisive": floor_decides})
        if floor_decides:
            return sched.floor, f"{sched.id}.floor"
    return base, decided_by


def _decide(engine: Engine, query: Query, evidence: Sequence[Any], decision_id: str,
            verification: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[Any]]:
    """The decision's head and its compact trace."""
    bundle = engine.bundle
    day = query.day
    plan = engine.plan(query.asset, day)
    price = query.price_usd
    out: dict[str, Any] = {
        "decision_id": decision_id,
        "query_id": query.id,
        "eligible": False,
        "account": query.account,
        "participant": query.participant,
        "asset": query.asset,
        "quantity": _s(query.quantity),
        "price_usd": _s(price),
        "as_of": query.as_of.isoformat().replace("+00:00", "Z"),
        "policy": {"bundle": bundle.hash, "name": bundle.name, "version": bundle.version},
        "engine": engine.evaluator.name,
    }
    trace: list[Any] = list(plan.lead)
    asset = plan.asset
    if asset is None:
        out.update(market_value_usd=None, haircut=None, value_after_haircut_usd=None, counted_quantity="0",
                   excluded_by_limits_usd=None, collateral_value_usd="0",
                   failed_rules=[it[0] for it in trace if it[1] == "fail"])
        return out, trace
    _check_quantity_precision(query, asset)
    _check_portfolio(query, bundle)

    for ev in evidence:
        if isinstance(ev, PriceEvidence) and ev.asset == asset.symbol:
            price = ev.price_usd
            out["price_usd"] = _s(price)
    facts = normalize(bundle, asset, query, evidence, day)
    outcomes, criteria, failed_criteria = engine.criteria(facts)
    trace.extend(plan.phases)
    trace.extend(criteria)
    failed = [it[0] for it in plan.lead if it[1] == "fail"]
    failed.extend(failed_criteria)
    if verification is not None:
        ok = verification.get("status") == "verified"
        custody = next((e for e in evidence if isinstance(e, CustodyEvidence)), None)
        observed = ({"block": custody.block_number, "block_hash": custody.block_hash, "balance": _s(custody.quantity)}
                    if ok and custody else {k: v for k, v in verification.items() if k != "status"})
        trace.append((VERIFIED[0], "pass" if ok and custody else "fail", observed, None))
        if not (ok and custody):
            failed.append(VERIFIED[0])

    # Money from here on, in the caller's context of PRECISION digits (exact; rounded down at the end).
    by_asset: dict[str, Decimal] = {}
    total_before = ZERO
    for h in query.portfolio:
        by_asset[h.asset] = by_asset.get(h.asset, ZERO) + h.collateral_value_usd
        total_before += h.collateral_value_usd
    market_value = query.quantity * price
    haircut = _haircut(plan, trace, failed, facts, outcomes, market_value, by_asset, total_before)
    eligible = not failed
    after_haircut = market_value * (1 - haircut.pop("total_exact")) if haircut else ZERO
    counted = _limits(plan, trace, after_haircut, by_asset, total_before)
    collateral = counted.quantize(CENT, ROUND_DOWN) if eligible else ZERO
    if eligible:
        counted_qty = query.quantity * counted / after_haircut if after_haircut else ZERO
        counted_qty = counted_qty.quantize(plan.quantum, ROUND_DOWN)
    else:
        counted_qty = ZERO
    out["eligible"] = eligible
    out["market_value_usd"] = _s(market_value.quantize(CENT, ROUND_DOWN))
    out["haircut"] = haircut
    out["value_after_haircut_usd"] = _s(after_haircut.quantize(CENT, ROUND_DOWN))
    out["counted_quantity"] = _s(counted_qty)
    out["excluded_by_limits_usd"] = _s((after_haircut - counted).quantize(CENT, ROUND_DOWN))
    out["collateral_value_usd"] = _s(collateral)
    out["failed_rules"] = failed
    if verification is not None:
        out["verification"] = dict(verification)
    if evidence:
        out["evidence"] = [e.to_json() for e in evidence]
    return out, trace


def _check_quantity_precision(query: Query, asset: Asset) -> None:
    exp = query.quantity.as_tuple().exponent
    if isinstance(exp, int) and -exp > asset.decimals:
        raise InputError(f"{_s(query.quantity)} has more decimal places than {asset.symbol} has ({asset.decimals})",
                         "quantity")


def _check_portfolio(query: Query, bundle: Bundle) -> None:
    for i, h in enumerate(query.portfolio):
        if h.asset not in bundle.assets:
            raise InputError(f"unknown asset {h.asset!r} (known: {', '.join(sorted(bundle.assets))})",
                             f"portfolio[{i}].asset")


def _schedule(bundle: Bundle, asset: Asset, day: Any) -> HaircutSchedule | None:
    mine = [h for h in bundle.haircuts if h.applies.matches(asset) and h.dated.in_force(day)]
    return mine[0] if mine else None  # the loader guarantees at most one in force per day


def _haircut(plan: _Plan, trace: list, failed: list, facts: dict[str, Any], outcomes: dict[int, str],
             market_value: Decimal, by_asset: dict[str, Decimal], total_before: Decimal) -> dict[str, Any] | None:
    """The haircut and its trace entries; ``None`` (and a failed rule) when there is none."""
    sched = plan.schedule
    # Schedules that do not apply to this asset still appear in the trace, with their add-ons.
    trace.extend(plan.other_haircuts)
    if sched is None:
        trace.append((SCHEDULE[0], "fail", plan.asset.symbol, None, {"policy": plan.schedule_src}))
        failed.append(SCHEDULE[0])
        return None
    if plan.fixed_base is not None:
        base, decided_by, fixed_components, observed, threshold = plan.fixed_base
        components = list(fixed_components)  # shared with the plan: Decision.to_json copies them
    else:
        key = FACTS[sched.bucket_fact].key
        value = facts.get(key)
        if value is None:
            trace.append((sched.id, "fail", {sched.bucket_fact: "missing"}, "a bucket needs this fact"))
            failed.append(sched.id)
            return None
        bucket = next(b for b in sched.buckets if b.up_to is None or value <= b.up_to)
        base, decided_by = bucket.haircut, f"{sched.id}[{sched.bucket_fact}<={bucket.up_to}]" if bucket.up_to is not None \
            else f"{sched.id}[{sched.bucket_fact}>{sched.buckets[-2].up_to if len(sched.buckets) > 1 else 0}]"
        components = [{"rule": sched.id, "kind": "bucket", "haircut": _s(bucket.haircut), "fact": sched.bucket_fact,
                       "observed": value, "up_to": bucket.up_to, "decisive": True}]
        observed = {sched.bucket_fact: value}
        base, decided_by = _floor(sched, base, decided_by, components)
        threshold = {"base": _s(base), "decided_by": decided_by}
    trace.append((sched.id, "applied", observed, threshold))
    total = base
    value_after_base = market_value * (1 - base)
    for a, thr, key, index, haircut_text in plan.add_ons:
        if index is not None:
            hit = outcomes[index] == "pass"
            obs: Any = facts.get(key, "missing")
        else:
            mine = by_asset.get(plan.asset.symbol, ZERO) + value_after_base
            everything = total_before + value_after_base
            share = mine / everything if everything else ZERO
            hit = share > a.when_share_above
            obs = _s(share.quantize(QUARTER_BP, ROUND_DOWN))
        if hit:
            total += a.haircut
        components.append({"rule": a.id, "kind": "add_on", "haircut": haircut_text, "applied": hit})
        trace.append((a.id, "applied" if hit else "not_applicable", obs, thr))
    if total > ONE:
        total = ONE
    return {"total": _s(total), "base": _s(base), "decided_by": decided_by, "schedule": sched.id,
            "components": components, "total_exact": total}


def _limits(plan: _Plan, trace: list, value: Decimal, by_asset: dict[str, Decimal], total_before: Decimal) -> Decimal:
    """Apply every limit in force: the counted value is the least any limit allows."""
    counted = value
    requested = None
    for step in plan.limits:
        lim = step[0]
        if lim is None:
            trace.append(step[1])
            continue
        if requested is None:
            requested = _s(value.quantize(CENT, ROUND_DOWN))
        group = ZERO
        for symbol in step[1]:
            if symbol in by_asset:
                group += by_asset[symbol]
        allowed = _allowed(lim, group, total_before, value)
        binding = allowed < counted
        if binding:
            counted = allowed
        everything = total_before + value
        share_after = (group + value) / everything if everything else ZERO
        trace.append((lim.id, "applied" if binding else "pass",
                      {"group_value_usd": _s(group.quantize(CENT, ROUND_DOWN)),
                       "share_after": _s(share_after.quantize(QUARTER_BP, ROUND_DOWN)),
                       "requested_usd": requested},
                      step[2],
                      {"counted_usd": _s(allowed.quantize(CENT, ROUND_DOWN)) if binding else None}))
    return counted if counted > ZERO else ZERO


def _limit_threshold(lim: Limit) -> dict[str, str]:
    return {k: _s(v) for k, v in (("max_share", lim.max_share), ("max_value_usd", lim.max_value_usd),
                                  ("min_total_usd", lim.min_total_usd)) if v is not None}


def _allowed(lim: Limit, group: Decimal, total: Decimal, value: Decimal) -> Decimal:
    """Largest new value x <= value that keeps the group within the limit."""
    allowed = value
    if lim.max_value_usd is not None:
        allowed = min(allowed, max(lim.max_value_usd - group, Decimal(0)))
    if lim.max_share is not None and lim.max_share < 1:
        threshold = lim.min_total_usd or Decimal(0)
        if total + value > threshold:
            # (group + x) / (total + x) <= s  <=>  x <= (s*total - group) / (1 - s)
            cap = max((lim.max_share * total - group) / (1 - lim.max_share), Decimal(0))
            cap = max(cap, threshold - total)  # below the threshold the share limit does not bite
            allowed = min(allowed, cap)
    return max(allowed, Decimal(0))
