"""A reference decider: the decision worked out straight from the policy model, slowly and plainly.

``decide_reference(bundle, query)`` gives the public decision JSON (the shape of ``Decision.to_json()``)
without the compiler, durable_rules, plans, fact classes or any helper of the fast path
(``rules.engine.decide``, ``trace``, ``fast``): each criterion is read from the model, each fact
computed from the query and its evidence (``reference_facts``), each operator evaluated by its
documented meaning, then the haircut and the limits in exact arithmetic (``reference_haircut``). The
differential tests (``tests/engine/test_reference.py``) hold every fast path to it, field by field and
trace entry by trace entry; where the engine and a plain reading of the README differ, the comment at
the rule says which is followed and why.

Not covered: the decision log's compact form, ``explain``/``replay`` and the ledger (they read the public
decision this reproduces), and the adapters that produce evidence (given here as evidence objects).
"""

from __future__ import annotations

from datetime import date, timezone
from fractions import Fraction
from decimal import Decimal
from math import floor
from typing import Any, Sequence

from rules.engine.evaluators.reference_facts import facts_of, phase_in_force, phase_windows, price_used, query_day
from rules.engine.evaluators.reference_haircut import Held as Held_
from rules.engine.evaluators.reference_haircut import (cents, entry, haircut, in_force, limits, matches, text,
                                                       threshold_of)
from rules.engine.query import Query
from rules.errors import InputError
from rules.evidence import WHAT_IF, CustodyEvidence, Held, Holdings
from rules.policy.model import Asset, Bundle, Check, Criterion, Src

ENGINE = "reference"
# The engine's own rules (README "Queries and decisions"; their words are part of the decision).
IN_FORCE = ("bundle.in-force", "The policy bundle must be in force on the query date.")
REGISTERED = ("registry.asset-registered", "The asset must be in the asset registry.")
VERIFIED = ("custody.onchain-verification",
            "The custody balance must be verified on-chain when verification is asked for.")


# -- bad input: refused before anything is decided --------------------------------------------------
def check_input(bundle: Bundle, query: Query) -> None:
    """What the bundle makes bad input (README: exit 3, "nothing decided"): a quantity with more
    decimal places than the asset has, and a portfolio holding of an asset the registry does not
    know. An unknown asset itself is not bad input: it is decided, and refused with its reason."""
    asset = bundle.assets.get(query.asset)
    if asset is None:
        return
    places = -query.quantity.as_tuple().exponent
    if isinstance(places, int) and places > asset.decimals:
        raise InputError(f"{text(query.quantity)} has more decimal places than {asset.symbol} has ({asset.decimals})",
                         "quantity")
    for i, h in enumerate(query.portfolio):
        if h.asset not in bundle.assets:
            raise InputError(f"unknown asset {h.asset!r}", f"portfolio[{i}].asset")


# -- criteria: each operator by its documented meaning ----------------------------------------------
def listed(name: str, bundle: Bundle, asset: Asset, day: date, participant: str | None = None) -> set[str]:
    """README: in_list - "`participants` admitted on the query date, `custodians` approved for the
    asset's chain, `phase_assets` eligible in the phase in force"."""
    if name == "participants":
        return {p.id for p in bundle.participants if in_force(p.admitted, day)}
    if name == "custodians":
        return {c.id for c in bundle.custodians if asset.chain in c.chains}
    if name == "phase_assets":
        phase = phase_in_force(bundle, day, participant)
        return {s for s, a in bundle.assets.items() if phase is not None and matches(phase.eligible, a)}
    raise ValueError(f"unknown list {name!r}")


def holds(check: Check, facts: dict[str, Any], bundle: Bundle, asset: Asset, day: date) -> bool:
    """Whether the fact passes the check. README: "A rule whose fact is missing fails (fail closed)".
    equals compares like with like (true is not 1); at_least / at_most compare whole numbers."""
    if check.fact not in facts:
        return False
    v, want = facts[check.fact], check.value
    if check.op == "equals":
        return type(v) is type(want) and v == want
    if check.op == "one_of":
        return type(v) is str and v in want
    if check.op == "at_least":
        return type(v) is int and v >= want
    if check.op == "at_most":
        return type(v) is int and v <= want
    if check.op == "in_list":
        return type(v) is str and v in listed(want, bundle, asset, day, facts.get("participant"))
    raise ValueError(f"unknown operator {check.op!r}")


def criterion_outcome(c: Criterion, facts: dict[str, Any], bundle: Bundle, asset: Asset, day: date) -> str:
    """README "Criteria": a criterion applies to the assets of its applies_to on the days it is in
    force (effective_to exclusive); elsewhere it is not applicable. Where it applies it passes or fails."""
    if not (matches(c.applies, asset) and in_force(c.dated, day)):
        return "not_applicable"
    return "pass" if holds(c.check, facts, bundle, asset, day) else "fail"


def criterion_entry(c: Criterion, outcome: str, facts: dict[str, Any]) -> dict[str, Any]:
    """The criterion in the trace: the fact's value as observed (the word "missing" when the query and
    its evidence did not give it), whatever the outcome, and the check as threshold."""
    return entry(c.id, outcome, c.description, facts.get(c.check.fact, "missing"), threshold_of(c.check), c.src)


# -- the engine's own rules and the programme's phases ---------------------------------------------
def lead_entries(bundle: Bundle, query: Query, day: date) -> tuple[list[dict[str, Any]], list[str]]:
    """The bundle must be in force on the query date (programme.yaml bundle.effective_from/_to); the
    asset must be registered (its threshold: every registered symbol, sorted)."""
    ok_date, ok_asset = in_force(bundle.dated, day), query.asset in bundle.assets
    first = next(iter(bundle.assets.values()), None)
    trace = [
        entry(IN_FORCE[0], "pass" if ok_date else "fail", IN_FORCE[1], day.isoformat(),
              {"from": _iso(bundle.dated.effective_from), "to": _iso(bundle.dated.effective_to)}, bundle.programme_src),
        entry(REGISTERED[0], "pass" if ok_asset else "fail", REGISTERED[1], query.asset,
              {"op": "one_of", "value": sorted(bundle.assets)}, Src(first.src.file, None) if first else None),
    ]
    failed = [rule for rule, ok in ((IN_FORCE[0], ok_date), (REGISTERED[0], ok_asset)) if not ok]
    return trace, failed


def phase_entries(bundle: Bundle, day: date, participant: str | None = None) -> list[dict[str, Any]]:
    """Every phase of the programme: the one in force on the query date for the participant 'applied',
    the others not. The threshold is the phase's window on the participant's clock, naming the
    participant where that clock is not the programme's (Letter 26-05: each FCM's own three months)."""
    now = phase_in_force(bundle, day, participant)
    mine = {p.id: (frm, to) for p, frm, to in phase_windows(bundle, participant)}
    out = []
    for p in bundle.phases:
        frm, to = mine.get(p.id, (p.starts, p.ends))
        threshold: dict[str, Any] = {"from": _iso(frm), "to": _iso(to)}
        if (frm, to) != (p.starts, p.ends):
            threshold["participant"] = participant
        out.append(entry(p.id, "applied" if p is now else "not_applicable", p.description, day.isoformat(),
                         threshold, p.src))
    return out


def verification_entry(verification: dict[str, Any], evidence: Sequence[Any]) -> dict[str, Any]:
    """README "Settings": with --verify, a failed on-chain check makes the decision ineligible with its
    reason; a verified one shows the block and the balance read (the first custody evidence)."""
    custody = next((e for e in evidence if isinstance(e, CustodyEvidence)), None)
    ok = verification.get("status") == "verified" and custody is not None
    observed = ({"block": custody.block_number, "block_hash": custody.block_hash, "balance": text(custody.quantity)}
                if ok and custody is not None else {k: v for k, v in verification.items() if k != "status"})
    return entry(VERIFIED[0], "pass" if ok else "fail", VERIFIED[1], observed, None, None)


def _iso(d: date | None) -> str | None:
    return None if d is None else d.isoformat()


# -- the decision ------------------------------------------------------------------------------------
def decide_reference(bundle: Bundle, query: Query, evidence: Sequence[Any] = (), decision_id: str = "reference",
                     verification: dict[str, Any] | None = None, holdings: Holdings | None = None) -> dict[str, Any]:
    """The public decision for ``query`` under ``bundle`` (README "Queries and decisions"), with
    ``engine`` = "reference". Raises ``InputError`` for what the bundle makes bad input."""
    check_input(bundle, query)
    day = query_day(query)
    trace, failed = lead_entries(bundle, query, day)
    asset = bundle.assets.get(query.asset)
    if asset is None:
        # An unregistered asset has no class and no chain, so no rule can say whether it applies; the
        # engine stops at the registry rule and the trace holds the two rules above only. README says
        # the trace names "every rule" - loose for this case; the engine's early refusal is followed.
        return _head(bundle, query, decision_id, query.price_usd, False, trace, failed, verification, evidence,
                     holdings=holdings or Holdings(WHAT_IF))
    facts = facts_of(bundle, asset, query, evidence)
    price, _ = price_used(query, asset, evidence)
    # README "Valuation": a payment stablecoin is valued at no more than par unless the registry says
    # valuation.above_par; the decision shows the price it was valued at beside the observed one.
    valued = Decimal(1) if asset.klass == "payment_stablecoin" and not asset.value_above_par and price > 1 else price
    trace += phase_entries(bundle, day, query.participant)
    for c in bundle.criteria:
        outcome = criterion_outcome(c, facts, bundle, asset, day)
        trace.append(criterion_entry(c, outcome, facts))
        if outcome == "fail":
            failed.append(c.id)
    if verification is not None:
        trace.append(verification_entry(verification, evidence))
        if trace[-1]["outcome"] == "fail":
            failed.append(VERIFIED[0])

    # The holdings: the given ones (the ledger's), else the query's portfolio as the caller's what-if
    # (README "Queries and decisions": each line a holding of the account at its value).
    if holdings is None:
        holdings = Holdings(WHAT_IF, tuple(Held(h.asset, h.collateral_value_usd) for h in query.portfolio))
    mine = [h for h in holdings.account if h.asset == asset.symbol]
    others = sum((Fraction(h.value_usd) for h in holdings.account if h.asset != asset.symbol), Fraction(0))
    held_qty = sum((Fraction(h.quantity) for h in mine if h.quantity is not None), Fraction(0))
    held = Held_(sum((Fraction(h.value_usd) for h in mine if h.quantity is None), Fraction(0)), held_qty,
                 held_qty * Fraction(valued))
    market = Fraction(query.quantity) * Fraction(valued)
    hc, total, total_before, hc_trace, hc_failed = haircut(bundle, asset, day, facts,
                                                           lambda ch: holds(ch, facts, bundle, asset, day),
                                                           market, held, others)
    trace += hc_trace
    failed += hc_failed
    # No haircut (no schedule, no bucket): nothing is worth anything as collateral (fail closed).
    keep, keep_before = (1 - Fraction(total), 1 - Fraction(total_before)) if hc is not None else (0, 0)
    after = market * keep
    unit = Fraction(valued) * keep
    fixed_qty = held.fixed / unit if held.fixed and unit else Fraction(0)
    whole = (held.fixed + held.market * keep_before, held.fixed + (held.market + market) * keep,
             held.quantity + fixed_qty, held.quantity + fixed_qty + Fraction(query.quantity))
    c_before, c_after, lim_trace = limits(bundle, asset, day, after, whole, holdings,
                                          query.custody.get("custodian"), unit)
    trace += lim_trace
    # Eligible only when no rule failed. An ineligible position counts nothing and excludes nothing by
    # limits (README "One rounding rule"), yet its values, haircut and limits are still worked out and
    # shown - what it would be worth.
    eligible = not failed
    after_cents = Fraction(cents(after))
    # The deposit counts the holding's counted value with it minus without, each rounded down to the
    # cent, kept within 0 and the value after haircut; the excluded value is the rest.
    counted = min(max(Fraction(cents(c_after)) - Fraction(cents(c_before)), Fraction(0)), after_cents)
    market_cents = Fraction(cents(market))
    money = {"market_value_usd": cents(market), "haircut": hc,
             "haircut_usd": None if hc is None else cents(market_cents - after_cents),
             "value_after_haircut_usd": cents(after),
             "counted_quantity": counted_quantity(query, asset, counted, after, after_cents) if eligible else "0",
             "excluded_by_limits_usd": cents(after_cents - counted) if eligible else "0.00",
             "collateral_value_usd": cents(counted) if eligible else "0",
             "holdings": {"source": holdings.source, "counted_before_usd": cents(c_before),
                          "counted_after_usd": cents(c_after)}}
    if valued != price:
        money["valued_at_usd"] = text(valued)
    return _head(bundle, query, decision_id, price, eligible, trace, failed, verification, evidence, money, holdings)


def counted_quantity(query: Query, asset: Asset, counted: Fraction, after: Fraction, after_cents: Fraction) -> str:
    """README: "The decision states the counted quantity": all of it when nothing is excluded, else the
    share of the quantity the counted cents are worth, rounded down to the asset's smallest unit and
    written with all its decimal places (0 when nothing counts)."""
    qty = Fraction(query.quantity) if counted == after_cents else (
        Fraction(query.quantity) * counted / after if after else Fraction(0))
    units = floor(qty * 10**asset.decimals)
    if asset.decimals == 0:
        return str(units)
    whole, part = divmod(units, 10**asset.decimals)
    return f"{whole}.{part:0{asset.decimals}d}"


def _head(bundle: Bundle, query: Query, decision_id: str, price: Any, eligible: bool, trace: list[dict[str, Any]],
          failed: list[str], verification: dict[str, Any] | None, evidence: Sequence[Any],
          money: dict[str, Any] | None = None, holdings: Any = None) -> dict[str, Any]:
    """The decision's fields in the order ``Decision.to_json()`` writes them. Without a registered asset
    there is no value: market value, haircut and the values after it are null, the quantity counted 0."""
    money = money or {"market_value_usd": None, "haircut": None, "haircut_usd": None, "value_after_haircut_usd": None,
                      "counted_quantity": "0", "excluded_by_limits_usd": None, "collateral_value_usd": "0",
                      "holdings": {"source": holdings.source}}
    out: dict[str, Any] = {
        "decision_id": decision_id, "query_id": query.id, "eligible": eligible, "account": query.account,
        "participant": query.participant, "asset": query.asset, "quantity": text(query.quantity),
        "price_usd": text(price), "as_of": query.as_of.astimezone(timezone.utc).isoformat().replace("+00:00", "Z"),
        "policy": {"bundle": bundle.hash, "name": bundle.name, "version": bundle.version}, "engine": ENGINE,
        **money, "reasons": trace, "failed_rules": failed,
    }
    if verification is not None:
        out["verification"] = dict(verification)
    if evidence:
        out["evidence"] = [e.to_json() for e in evidence]
    return out
