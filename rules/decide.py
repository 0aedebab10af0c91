"""Eligibility decisions: criteria through the evaluator, then haircut and limits in exact Decimal.

A decision is a value: the same query, evidence and bundle give the same decision apart from its id.
Every rule of the bundle appears in the trace (``reasons``) with its outcome:
``pass``, ``fail``, ``not_applicable`` or ``applied`` (a haircut or limit that changed the value).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal, localcontext
from typing import Any, Protocol, Sequence

from adapters.evidence import CustodyEvidence, PriceEvidence
from rules.compiler import CompiledBundle, CompiledRule, compile_bundle
from rules.errors import InputError
from rules.facts import FACTS
from rules.model import Asset, Bundle, HaircutSchedule, Limit, Src
from rules.normalize import normalize
from rules.query import Query

CENT = Decimal("0.01")
PRECISION = 80  # digits: quantity (<= 10**12, 18 places) x price (<= 10**9, 18 places) stays exact


class Evaluator(Protocol):
    name: str

    def outcomes(self, facts: dict[str, Any]) -> dict[int, str]: ...


def _s(d: Decimal) -> str:
    """Decimal to a plain string without exponent."""
    return format(Decimal(d), "f")  # policy numbers may be int: format(1000000, "f") is '1000000.000000'


def _iso(d: Any) -> str | None:
    return None if d is None else d.isoformat()


def reason(rule: str, outcome: str, description: str, src: Src | None, observed: Any = None,
           threshold: Any = None, **extra: Any) -> dict[str, Any]:
    r = {"rule": rule, "outcome": outcome, "description": description, "observed": observed,
         "threshold": threshold, "policy": src.to_json() if src else None}
    r.update(extra)
    return r


@dataclass
class Decision:
    data: dict[str, Any]

    @property
    def id(self) -> str:
        return self.data["decision_id"]

    @property
    def eligible(self) -> bool:
        return self.data["eligible"]

    def to_json(self) -> dict[str, Any]:
        return self.data


@dataclass
class Engine:
    """A compiled bundle with its evaluator: the thing that decides."""

    compiled: CompiledBundle
    evaluator: Evaluator
    check: Evaluator | None = None  # optional second evaluator; a disagreement raises
    stats: dict[str, int] = field(default_factory=lambda: {"decisions": 0})

    @property
    def bundle(self) -> Bundle:
        return self.compiled.bundle

    @classmethod
    def for_bundle(cls, bundle: Bundle, evaluator: str = "durable_rules") -> "Engine":
        from rules.durable_engine import DurableEvaluator
        from rules.pyeval import PythonEvaluator

        compiled = compile_bundle(bundle)
        if evaluator == "durable_rules":
            return cls(compiled, DurableEvaluator(compiled))
        if evaluator == "python":
            return cls(compiled, PythonEvaluator(compiled))
        if evaluator == "checked":
            return cls(compiled, DurableEvaluator(compiled), PythonEvaluator(compiled))
        raise InputError(f"unknown evaluator {evaluator!r} (use durable_rules, python or checked)", "engine")

    def decide(self, query: Query, evidence: Sequence[CustodyEvidence | PriceEvidence] = (),
               decision_id: str | None = None, verification: dict[str, Any] | None = None) -> Decision:
        """Decide ``query``. ``verification`` reports an on-chain custody check that was asked for:
        ``{"status": "verified"}`` or ``{"status": "failed", "reason": code, "message": words}``;
        a failed one makes the decision ineligible (fail closed)."""
        self.stats["decisions"] += 1
        return Decision(_decide(self, query, evidence, decision_id or str(uuid.uuid4()), verification))


def _outcomes(engine: Engine, facts: dict[str, Any]) -> dict[int, str]:
    out = engine.evaluator.outcomes(facts)
    if engine.check is not None:
        other = engine.check.outcomes(facts)
        if other != out:
            from rules.durable_engine import EngineError

            diff = {engine.compiled.rules[i].id: (out[i], other.get(i)) for i in out if out[i] != other.get(i)}
            raise EngineError(f"evaluators disagree: {diff}")
    return out


def _observed(rule: CompiledRule, facts: dict[str, Any]) -> Any:
    key = FACTS[rule.check.fact].key
    return facts.get(key, "missing")


def _threshold(rule: CompiledRule) -> Any:
    v = rule.check.value
    return {"op": rule.check.op, "value": list(v) if isinstance(v, tuple) else v}


def _decide(engine: Engine, query: Query, evidence: Sequence[Any], decision_id: str,
            verification: dict[str, Any] | None = None) -> dict[str, Any]:
    bundle = engine.bundle
    day = query.day
    out: dict[str, Any] = {
        "decision_id": decision_id,
        "query_id": query.id,
        "eligible": False,
        "account": query.account,
        "participant": query.participant,
        "asset": query.asset,
        "quantity": _s(query.quantity),
        "price_usd": _s(query.price_usd),
        "as_of": query.as_of.isoformat().replace("+00:00", "Z"),
        "policy": {"bundle": bundle.hash, "name": bundle.name, "version": bundle.version},
        "engine": engine.evaluator.name,
    }
    reasons: list[dict[str, Any]] = []
    in_force = bundle.dated.in_force(day)
    reasons.append(reason("bundle.in-force", "pass" if in_force else "fail",
                          "The policy bundle must be in force on the query date.", bundle.programme_src,
                          observed=day.isoformat(),
                          threshold={"from": _iso(bundle.dated.effective_from), "to": _iso(bundle.dated.effective_to)}))
    asset = bundle.assets.get(query.asset)
    asset_src = next(iter(bundle.assets.values())).src
    reasons.append(reason("registry.asset-registered", "pass" if asset else "fail",
                          "The asset must be in the asset registry.", Src(asset_src.file, None),
                          observed=query.asset, threshold={"op": "one_of", "value": sorted(bundle.assets)}))
    if asset is None:
        out.update(_zero(query, "0"), reasons=reasons, failed_rules=[r["rule"] for r in reasons if r["outcome"] == "fail"])
        return out
    _check_quantity_precision(query, asset)
    _check_portfolio(query, bundle)

    price = query.price_usd
    for ev in evidence:
        if isinstance(ev, PriceEvidence) and ev.asset == asset.symbol:
            price = ev.price_usd
            out["price_usd"] = _s(price)
    facts = normalize(bundle, asset, query, evidence)
    outcomes = _outcomes(engine, facts)
    phase = bundle.phase_at(day)
    for p in bundle.phases:
        reasons.append(reason(p.id, "applied" if p is phase else "not_applicable", p.description, p.src,
                              observed=day.isoformat(), threshold={"from": _iso(p.starts), "to": _iso(p.ends)}))
    for r in engine.compiled.rules:
        if r.kind == "criterion":
            reasons.append(reason(r.id, outcomes[r.index], r.description, r.src,
                                  observed=_observed(r, facts), threshold=_threshold(r)))
    if verification is not None:
        ok = verification.get("status") == "verified"
        custody = next((e for e in evidence if isinstance(e, CustodyEvidence)), None)
        observed = ({"block": custody.block_number, "block_hash": custody.block_hash, "balance": _s(custody.quantity)}
                    if ok and custody else {k: v for k, v in verification.items() if k != "status"})
        reasons.append(reason("custody.onchain-verification", "pass" if ok and custody else "fail",
                              "The custody balance must be verified on-chain when verification is asked for.", None,
                              observed=observed))

    with localcontext() as ctx:
        ctx.prec = PRECISION
        market_value = query.quantity * price
        haircut, h_reasons, h_fail = _haircut(engine, asset, query, facts, outcomes, market_value, day)
        reasons.extend(h_reasons)
        eligible = not any(r["outcome"] == "fail" for r in reasons) and not h_fail
        after_haircut = market_value * (1 - haircut["total_exact"]) if haircut else Decimal(0)
        counted, l_reasons = _limits(bundle, asset, query, after_haircut, day)
        reasons.extend(l_reasons)
        collateral = counted.quantize(CENT, rounding=ROUND_DOWN) if eligible else Decimal(0)
        counted_qty = (query.quantity * counted / after_haircut if after_haircut else Decimal(0))
        counted_qty = counted_qty.quantize(Decimal(1).scaleb(-asset.decimals), rounding=ROUND_DOWN)
        out.update({
            "eligible": eligible,
            "market_value_usd": _s(market_value.quantize(CENT, rounding=ROUND_DOWN)),
            "haircut": {k: v for k, v in haircut.items() if k != "total_exact"} if haircut else None,
            "value_after_haircut_usd": _s(after_haircut.quantize(CENT, rounding=ROUND_DOWN)),
            "counted_quantity": _s(counted_qty if eligible else Decimal(0)),
            "excluded_by_limits_usd": _s((after_haircut - counted).quantize(CENT, rounding=ROUND_DOWN)),
            "collateral_value_usd": _s(collateral),
        })
    out["reasons"] = reasons
    out["failed_rules"] = [r["rule"] for r in reasons if r["outcome"] == "fail"]
    if verification is not None:
        out["verification"] = dict(verification)
    if evidence:
        out["evidence"] = [e.to_json() for e in evidence]
    return out


def _zero(query: Query, value: str) -> dict[str, Any]:
    return {"market_value_usd": None, "haircut": None, "value_after_haircut_usd": None,
            "counted_quantity": value, "excluded_by_limits_usd": None, "collateral_value_usd": value}


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


def _share_after(query: Query, bundle: Bundle, asset: Asset, new_value: Decimal) -> Decimal:
    total = sum((h.collateral_value_usd for h in query.portfolio), Decimal(0)) + new_value
    mine = sum((h.collateral_value_usd for h in query.portfolio if h.asset == asset.symbol), Decimal(0)) + new_value
    return mine / total if total else Decimal(0)


def _haircut(engine: Engine, asset: Asset, query: Query, facts: dict[str, Any], outcomes: dict[int, str],
             market_value: Decimal, day: Any) -> tuple[dict[str, Any] | None, list[dict[str, Any]], bool]:
    bundle = engine.bundle
    reasons: list[dict[str, Any]] = []
    sched = _schedule(bundle, asset, day)
    # Schedules that do not apply to this asset still appear in the trace, with their add-ons.
    for h in bundle.haircuts:
        if h is not sched:
            reasons.append(reason(h.id, "not_applicable", h.description, h.src))
            reasons.extend(reason(a.id, "not_applicable", a.description, a.src) for a in h.add_ons)
    if sched is None:
        reasons.append(reason("haircut.schedule", "fail", "A haircut schedule must apply to the asset on the query date.",
                              Src(asset.src.file, asset.src.line), observed=asset.symbol))
        return None, reasons, True
    components: list[dict[str, Any]] = []
    if sched.sources:
        top = max(sched.sources, key=lambda s: s.haircut)
        base, decided_by = top.haircut, top.id
        components += [{"rule": s.id, "kind": "source", "haircut": _s(s.haircut), "source": s.source,
                        "decisive": s is top} for s in sched.sources]
        observed: Any = {s.id: _s(s.haircut) for s in sched.sources}
    else:
        key = FACTS[sched.bucket_fact].key
        value = facts.get(key)
        if value is None:
            reasons.append(reason(sched.id, "fail", sched.description, sched.src, observed={sched.bucket_fact: "missing"},
                                  threshold="a bucket needs this fact"))
            return None, reasons, True
        bucket = next(b for b in sched.buckets if b.up_to is None or value <= b.up_to)
        base, decided_by = bucket.haircut, f"{sched.id}[{sched.bucket_fact}<={bucket.up_to}]" if bucket.up_to is not None \
            else f"{sched.id}[{sched.bucket_fact}>{sched.buckets[-2].up_to if len(sched.buckets) > 1 else 0}]"
        components.append({"rule": sched.id, "kind": "bucket", "haircut": _s(bucket.haircut), "fact": sched.bucket_fact,
                           "observed": value, "up_to": bucket.up_to, "decisive": True})
        observed = {sched.bucket_fact: value}
    if sched.floor is not None:
        floor_decides = sched.floor > base
        components.append({"rule": sched.id, "kind": "floor", "haircut": _s(sched.floor), "decisive": floor_decides})
        if floor_decides:
            base, decided_by = sched.floor, f"{sched.id}.floor"
    reasons.append(reason(sched.id, "applied", sched.description, sched.src, observed=observed,
                          threshold={"base": _s(base), "decided_by": decided_by}))
    total = base
    by_index = {r.id: r for r in engine.compiled.rules if r.kind == "add_on"}
    value_after_base = market_value * (1 - base)
    for a in sched.add_ons:
        if a.when is not None:
            rule = by_index[a.id]
            hit = outcomes[rule.index] == "pass"
            obs: Any = _observed(rule, facts)
            thr: Any = _threshold(rule)
        else:
            share = _share_after(query, bundle, asset, value_after_base)
            hit = share > a.when_share_above
            obs, thr = _s(share.quantize(Decimal("0.0001"), rounding=ROUND_DOWN)), {"op": "share_above",
                                                                                  "value": _s(a.when_share_above)}
        if hit:
            total += a.haircut
        components.append({"rule": a.id, "kind": "add_on", "haircut": _s(a.haircut), "applied": hit})
        reasons.append(reason(a.id, "applied" if hit else "not_applicable", a.description, a.src, observed=obs,
                              threshold=thr))
    total = min(total, Decimal(1))
    return ({"total": _s(total), "base": _s(base), "decided_by": decided_by, "schedule": sched.id,
             "components": components, "total_exact": total}, reasons, False)


def _limits(bundle: Bundle, asset: Asset, query: Query, value: Decimal, day: Any) -> tuple[Decimal, list[dict]]:
    """Apply every limit in force: the counted value is the least any limit allows."""
    reasons = []
    counted = value
    total_before = sum((h.collateral_value_usd for h in query.portfolio), Decimal(0))
    for lim in bundle.limits:
        if not (lim.applies.matches(asset) and lim.dated.in_force(day)):
            reasons.append(reason(lim.id, "not_applicable", lim.description, lim.src))
            continue
        group = _group_value(bundle, lim, asset, query)
        allowed = _allowed(lim, group, total_before, value)
        binding = allowed < counted
        counted = min(counted, allowed)
        share_after = (group + value) / (total_before + value) if total_before + value else Decimal(0)
        reasons.append(reason(lim.id, "applied" if binding else "pass", lim.description, lim.src,
                              observed={"group_value_usd": _s(group.quantize(CENT, rounding=ROUND_DOWN)),
                                        "share_after": _s(share_after.quantize(Decimal("0.0001"), rounding=ROUND_DOWN)),
                                        "requested_usd": _s(value.quantize(CENT, rounding=ROUND_DOWN))},
                              threshold={k: _s(v) for k, v in (("max_share", lim.max_share),
                                                                ("max_value_usd", lim.max_value_usd),
                                                                ("min_total_usd", lim.min_total_usd)) if v is not None},
                              counted_usd=_s(max(allowed, Decimal(0)).quantize(CENT, rounding=ROUND_DOWN)) if binding
                              else None))
    return max(counted, Decimal(0)), reasons


def _group_value(bundle: Bundle, lim: Limit, asset: Asset, query: Query) -> Decimal:
    def member(symbol: str) -> bool:
        if lim.scope == "asset":
            return symbol == asset.symbol
        return lim.applies.matches(bundle.assets[symbol])
    return sum((h.collateral_value_usd for h in query.portfolio if member(h.asset)), Decimal(0))


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
