"""Eligibility decisions: criteria through the evaluator, then haircut and limits in exact Decimal.

A decision is a value: the same query, evidence and bundle give the same decision apart from its id.
Every rule of the bundle appears in the trace (``reasons``) with its outcome:
``pass``, ``fail``, ``not_applicable`` or ``applied`` (a haircut or limit that changed the value).

Fast by construction, because clearing re-decides whole books when prices move:

* what depends only on the bundle, the asset and the day (the facts of the day, the phases,
  schedules and limits in force, the trace entries they give) is worked out once per (asset, day):
  a *plan* (``rules.engine.fast.plans``);
* criteria outcomes depend only on the *class* of the facts (``rules.engine.fast.fact_classes``: how each fact
  compares with the constants the rules compare it with), so the evaluator - durable_rules by
  default - decides each class once per engine and every decision of that class reuses its
  outcomes (``rules.engine.criteria``); the trace still shows each decision's own observed values;
* the trace is built compact (``rules.engine.trace``) and expanded to the public form only when asked for.

This module is the flow: plan, facts, criteria, on-chain verification, haircut (``rules.engine.haircut``),
limits (``rules.engine.limits``), the decision's head.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal, localcontext
from typing import Any, Callable, Sequence

from rules.engine.compiler import CompiledBundle, compile_bundle
from rules.engine.criteria import Criteria, Evaluator
from rules.engine.decision import Decision
from rules.engine.evaluators.python import PythonEvaluator
from rules.engine.fact_builder import normalize
from rules.engine.fast.fact_classes import FactClasses
from rules.engine.fast.plans import MEMO_SIZE, Plan, Planner
from rules.engine.haircut import apply_haircut
from rules.engine.ids import new_id, new_ids
from rules.engine.limits import Whole, apply_limits
from rules.engine.money import ONE, PRECISION, ZERO, cents
from rules.engine.query import Query, as_of_text
from rules.engine.trace import plain, statics_for
from rules.errors import InputError
from rules.evidence import WHAT_IF, CustodyEvidence, Held, Holdings, PriceEvidence
from rules.policy.model import Asset, Bundle
from rules.policy.reserved import VERIFIED

__all__ = ["Decision", "Engine", "Evaluator", "what_if_holdings"]


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
        self.planner = Planner(self.compiled, self.statics, self.classes)
        self._criteria = Criteria(self.compiled, self.statics, self.classes, self.evaluator, self.check, self.stats)
        self._as_of: dict[Any, str] = {}
        b = self.bundle
        self._policy = {"bundle": b.hash, "name": b.name, "version": b.version}
        # a decision's "engine" field: the evaluator, or "checked" when a second one must agree with it
        self._evaluator_name = "checked" if self.check is not None else self.evaluator.name

    @property
    def bundle(self) -> Bundle:
        return self.compiled.bundle

    @classmethod
    def for_bundle(cls, bundle: Bundle, evaluator: str = "durable_rules", reuse_facts: bool = True) -> "Engine":
        """The engine for ``bundle`` with the evaluator named as in the settings' ``engine`` key:
        ``durable_rules``, ``python`` or ``checked`` (both, which must agree)."""
        # Imported here for start-up time only (durable_rules takes ~40 ms to import): commands that
        # never decide, and engines with the Python evaluator, do not load it.
        from rules.engine.evaluators.durable import DurableEvaluator

        compiled = compile_bundle(bundle)
        if evaluator == "durable_rules":
            return cls(compiled, DurableEvaluator(compiled), reuse_facts=reuse_facts)
        if evaluator == "python":
            return cls(compiled, PythonEvaluator(compiled), reuse_facts=reuse_facts)
        if evaluator == "checked":
            return cls(compiled, DurableEvaluator(compiled), PythonEvaluator(compiled), reuse_facts=reuse_facts)
        raise InputError(f"unknown evaluator {evaluator!r} (use durable_rules, python or checked)", "engine")

    def decide(self, query: Query, evidence: Sequence[CustodyEvidence | PriceEvidence] = (),
               decision_id: str | None = None, verification: dict[str, Any] | None = None,
               holdings: Holdings | None = None) -> Decision:
        """Decide ``query``. ``verification`` reports an on-chain custody check that was asked for:
        ``{"status": "verified"}`` or ``{"status": "failed", "reason": code, "message": words}``;
        a failed one makes the decision ineligible (fail closed). ``holdings``: what the account and the
        reaches of the limits already hold (``rules.evidence.Holdings``; the ledger's for a credit);
        without them the query's ``portfolio`` is the caller's what-if (``what_if_holdings``), and the
        decision says so."""
        self.check_inputs((query,))
        self.stats["decisions"] += 1
        with localcontext() as ctx:
            ctx.prec = PRECISION
            head, trace = _decide(self, query, evidence, decision_id or new_id(), verification, holdings)
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
                    progress: Callable[[int], None] | None = None, checked: bool = False,
                    holdings: Sequence[Holdings | None] | None = None) -> list[Decision]:
        """``decide`` for each query (with its evidence and verification, if given), in order; all of
        them are checked first (``check_inputs``) unless the caller has (``checked``).

        The cyclic garbage collector is left as it is: the batch doors (``rules.app.Dacp.evaluate`` and
        ``evaluate_stream``, ``dacp evaluate``) pause it around a whole batch (``rules.collector``); a
        direct call decides the same, only without that pause."""
        if not checked:
            self.check_inputs(queries)
        out = []
        statics = self.statics
        stats = self.stats
        ids = new_ids(len(queries))
        with localcontext() as ctx:
            ctx.prec = PRECISION
            for i, q in enumerate(queries):
                stats["decisions"] += 1
                head, trace = _decide(self, q, evidence[i] if evidence else (), ids[i],
                                      verifications[i] if verifications else None, holdings[i] if holdings else None)
                out.append(Decision(head, trace, statics))
                if progress:
                    progress(i + 1)
        return out

    def plan(self, symbol: str, day: Any, participant: str | None = None) -> Plan:
        """What decisions about ``symbol`` on ``day`` by ``participant`` share (``rules.engine.fast.plans``)."""
        return self.planner.plan(symbol, day, participant)

    def criteria(self, facts: dict[str, Any], plan: Plan | None = None, trace: list | None = None
                 ) -> tuple[dict[int, str], tuple[str, ...]]:
        """(outcomes by compiled rule index, failed criteria ids); the criteria's trace entries are
        appended to ``trace`` (``rules.engine.criteria``)."""
        return self._criteria.decide(facts, plan, [] if trace is None else trace, self.reuse_facts)

    def as_of_text(self, as_of: Any) -> str:
        t = self._as_of.get(as_of)
        if t is None:
            if len(self._as_of) >= MEMO_SIZE:
                self._as_of.clear()
            t = self._as_of[as_of] = as_of_text(as_of)
        return t


def what_if_holdings(query: Query) -> Holdings:
    """The query's ``portfolio`` as holdings: the caller's claim, decided as a what-if (each line a
    holding of the account at its collateral value, no quantity, no custodian)."""
    return Holdings(WHAT_IF, tuple(Held(h.asset, h.collateral_value_usd) for h in query.portfolio))


def _decide(engine: Engine, query: Query, evidence: Sequence[Any], decision_id: str,
            verification: dict[str, Any] | None = None, holdings: Holdings | None = None
            ) -> tuple[dict[str, Any], list[Any]]:
    """The decision's head and its compact trace."""
    if holdings is None:
        holdings = what_if_holdings(query)
    plan = engine.planner.plan(query.asset, query.day, query.participant)
    price = query.price_usd
    quantity = query.quantity
    trace: list[Any] = list(plan.lead)
    asset = plan.asset
    if asset is None:
        return _head(engine, query, decision_id, price, False, None, None, None, "0", None, "0",
                     list(plan.lead_failed), verification, evidence, {"source": holdings.source}), trace

    for ev in evidence:
        if isinstance(ev, PriceEvidence) and ev.asset == asset.symbol:
            price = ev.price_usd
    facts = normalize(engine.bundle, asset, query, evidence, plan.base)
    trace.extend(plan.phases)
    outcomes, failed_criteria = engine._criteria.decide(facts, plan, trace, engine.reuse_facts)
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
    symbol = asset.symbol
    own_fixed = own_qty = others = ZERO
    for h in holdings.account:
        if h.asset != symbol:
            others += h.value_usd
        elif h.quantity is None:
            own_fixed += h.value_usd
        else:
            own_qty += h.quantity
    value_price = asset.value_price(price)  # a payment stablecoin above par is valued at par
    market_value = quantity * value_price
    own_market = own_qty * value_price
    haircut, total, total_without = apply_haircut(plan.haircut, trace, failed, facts, outcomes, market_value,
                                                  own_fixed, own_market, others)
    eligible = not failed
    if haircut:
        after_haircut = market_value * (ONE - total)
        unit_value = value_price * (ONE - total)
        whole_without = own_fixed + own_market * (ONE - total_without)
        whole_with = own_fixed + (own_market + market_value) * (ONE - total)
    else:
        after_haircut = unit_value = ZERO
        whole_without = whole_with = own_fixed
    fixed_qty = own_fixed / unit_value if own_fixed and unit_value else ZERO
    whole = Whole(whole_without, whole_with, own_qty + fixed_qty, own_qty + fixed_qty + quantity)
    c_without, c_with = apply_limits(plan.limits, trace, whole, after_haircut, symbol,
                                     query.custody.get("custodian"), holdings, unit_value)
    market_text, after_text = cents(market_value), cents(after_haircut)
    held = {"source": holdings.source, "counted_before_usd": cents(c_without), "counted_after_usd": cents(c_with)}
    if not eligible:  # nothing counts, and nothing is excluded by limits: the failed rules refuse it all
        counted_qty, excluded, collateral = "0", "0.00", "0"
    else:
        counted_qty, excluded, collateral = footing(after_haircut, after_text, c_without, c_with, quantity,
                                                    plan.quantum)
    haircut_usd = None if haircut is None else cents(Decimal(market_text) - Decimal(after_text))
    head = _head(engine, query, decision_id, price, eligible, market_text, haircut, after_text,
                 counted_qty, excluded, collateral, failed, verification, evidence, held, haircut_usd)
    if value_price != price:
        head["valued_at_usd"] = plain(value_price)
    return head, trace


def footing(after: Decimal, after_text: str, c_without: Decimal, c_with: Decimal, quantity: Decimal,
            quantum: Decimal) -> tuple[str, str, str]:
    """(counted quantity, excluded, counted value) of an eligible deposit, to the cent (README "One
    rounding rule"): the counted value is the holding's counted value with the deposit minus without,
    each rounded down to the cent, within 0 and the value after haircut (itself rounded down); the
    excluded value is the difference, so value after haircut = counted + excluded exactly. The counted
    quantity is the whole quantity when nothing is excluded, else the quantity the counted cents are
    worth, rounded down to the asset's unit (0.00 counted is 0 counted)."""
    after_cents = Decimal(after_text)
    counted = Decimal(cents(c_with)) - Decimal(cents(c_without))
    if counted > after_cents:
        counted = after_cents
    if counted < ZERO:
        counted = ZERO
    excluded = after_cents - counted
    qty = quantity if not excluded else quantity * counted / after if after and counted else ZERO
    return plain(qty.quantize(quantum, ROUND_DOWN)), cents(excluded), cents(counted)


def _head(engine: Engine, query: Query, decision_id: str, price: Decimal, eligible: bool, market_value: str | None,
          haircut: dict[str, Any] | None, after_haircut: str | None, counted_qty: str, excluded: str | None,
          collateral: str, failed: list[str], verification: dict[str, Any] | None,
          evidence: Sequence[Any], held: dict[str, Any], haircut_usd: str | None = None) -> dict[str, Any]:
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
        "engine": engine._evaluator_name,  # the public field keeps its name
        "market_value_usd": market_value,
        "haircut": haircut,
        "haircut_usd": haircut_usd,
        "value_after_haircut_usd": after_haircut,
        "counted_quantity": counted_qty,
        "excluded_by_limits_usd": excluded,
        "collateral_value_usd": collateral,
        "holdings": held,
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
