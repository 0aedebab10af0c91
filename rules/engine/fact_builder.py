"""From a checked query (and verified evidence) to typed facts for the evaluators.

Only facts whose evidence is present are set; a missing fact makes every check on it fail (fail
closed). Verified on-chain custody evidence, when given, replaces the query's claims.
"""

from __future__ import annotations

import math
from datetime import date, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Any, Sequence

from rules.engine.compiler import day_number
from rules.engine.query import Query
from rules.evidence import CustodyEvidence, PriceEvidence
from rules.policy.calendar import business_days_between
from rules.policy.facts import ALWAYS_PRESENT, DAY_KEY, FACTS
from rules.policy.model import Asset, Bundle


def _key(name: str) -> str:
    return FACTS[name].key


# The keys, once (normalize runs for every decision).
K_ASSET, K_CLASS, K_CHAIN, K_PARTICIPANT, K_PHASE = (_key(n) for n in ALWAYS_PRESENT)
K_COVERS = _key("custody.balance_covers_quantity")
K_PRICE_AGE = _key("price.age_minutes")
K_PEG = _key("stablecoin.peg_deviation_bps")
K_ISSUER, K_ISSUER_OK, K_ATTESTATION_AGE = (_key(n) for n in (
    "stablecoin.issuer", "stablecoin.issuer_matches_registry", "stablecoin.reserve_attestation_age_days"))
K_NAV_AGE, K_ALLOWLISTED = _key("fund.nav_age_days"), _key("fund.holder_allowlisted")
K_DISCOUNT, K_PREMIUM = _key("stablecoin.peg_discount_bps"), _key("stablecoin.peg_premium_bps")
K_NAV_DEV = _key("fund.price_nav_deviation_bps")
K_NAV_BDAYS = _key("fund.nav_age_business_days")
K_REDEMPTION = _key("fund.redemption_days")
K_ATTESTATION_BDAYS = _key("stablecoin.reserve_attestation_age_business_days")
CUSTODY_FIELDS = tuple((f, _key("custody." + f)) for f in (
    "custodian", "segregated", "confirmations", "finality", "token_paused", "address_frozen", "holder_allowed"))
FUND_FIELDS = tuple((f, _key("fund." + f)) for f in ("holder_allowlisted", "redemption_days", "wam_days"))
FUND_CLASSES = frozenset(("tokenized_treasury_fund", "tokenized_money_market_fund"))
MINUTE = timedelta(minutes=1)


def peg_deviation_bps(price: Decimal) -> int:
    """|price - 1| in basis points, rounded up (conservative)."""
    return int((abs(price - 1) * 10000).to_integral_value(rounding=ROUND_CEILING))


def bps_up(d: Decimal) -> int:
    """A non-negative fraction in basis points, rounded up (conservative)."""
    return int((d * 10000).to_integral_value(rounding=ROUND_CEILING))


def base_facts(bundle: Bundle, asset: Asset, day: date, participant: str | None = None) -> dict[str, Any]:
    """The facts that depend only on the bundle, the asset, the day and whose phase clock runs (the
    participant's, Letter 26-05; None: the programme's)."""
    if participant is None:
        phase = bundle.phase_at(day)
    else:
        window = bundle.window_of(participant, day)
        phase = window.phase if window else None
    return {DAY_KEY: day_number(day), K_ASSET: asset.symbol, K_CLASS: asset.klass, K_CHAIN: asset.chain,
            K_PHASE: phase.id if phase else "none"}


def normalize(bundle: Bundle, asset: Asset, query: Query,
              evidence: Sequence[CustodyEvidence | PriceEvidence] = (), base: dict[str, Any] | None = None
              ) -> dict[str, Any]:
    """The facts of ``query`` about ``asset``. ``base``: ``base_facts`` of the query's day, if the
    caller has them (the engine keeps them per asset and day)."""
    facts = dict(base if base is not None else base_facts(bundle, asset, query.day, query.participant))
    facts[K_PARTICIPANT] = query.participant
    c = query.custody
    if c:
        for field, key in CUSTODY_FIELDS:
            if field in c:
                facts[key] = c[field]
        if "balance" in c:
            facts[K_COVERS] = c["balance"] >= query.quantity

    qev = query.evidence
    price_updated_at = qev.get("price_updated_at")
    price = query.price_usd
    for ev in evidence:
        if isinstance(ev, PriceEvidence) and ev.asset == asset.symbol:
            price_updated_at = ev.updated_at
            price = ev.price_usd
    if price_updated_at is not None:
        age = query.as_of - price_updated_at
        facts[K_PRICE_AGE] = max(0, math.ceil(age / MINUTE))

    klass = asset.klass
    if klass == "payment_stablecoin":
        facts[K_PEG] = peg_deviation_bps(price)
        facts[K_DISCOUNT] = bps_up(max(Decimal(0), 1 - price))
        facts[K_PREMIUM] = bps_up(max(Decimal(0), price - 1))
        sc = qev.get("stablecoin", {})
        if "issuer" in sc:
            facts[K_ISSUER] = sc["issuer"]
            facts[K_ISSUER_OK] = asset.issuer is not None and sc["issuer"] == asset.issuer
        if "reserve_attestation_date" in sc:
            facts[K_ATTESTATION_AGE] = (query.day - sc["reserve_attestation_date"]).days
            facts[K_ATTESTATION_BDAYS] = business_days_between(bundle.calendar, sc["reserve_attestation_date"], query.day)
    elif klass in FUND_CLASSES:
        fund = qev.get("fund", {})
        if "nav_date" in fund:
            facts[K_NAV_AGE] = (query.day - fund["nav_date"]).days
            facts[K_NAV_BDAYS] = business_days_between(bundle.calendar, fund["nav_date"], query.day)
        if "nav_usd" in fund:  # the query checked it is > 0
            facts[K_NAV_DEV] = bps_up(abs(price / fund["nav_usd"] - 1))
        for field, key in FUND_FIELDS:
            if field in fund:
                facts[key] = fund[field]
        if "redemption_requested_on" in fund:  # the dates given: counted here, the caller's count never stands
            facts[K_REDEMPTION] = business_days_between(bundle.calendar, fund["redemption_requested_on"],
                                                        fund["redemption_settles_on"])
        if c.get("holder_allowed") is False:  # the custodian says no: that outweighs a transfer agent's yes
            facts[K_ALLOWLISTED] = False
    for ev in evidence:  # last: on-chain evidence replaces the query's claims
        if isinstance(ev, CustodyEvidence) and ev.asset == asset.symbol:
            _apply_custody_evidence(facts, ev, query)
    return facts


# The facts a token restriction decides: under on-chain verification only the chain may set them.
RESTRICTION_KEYS = tuple(_key(n) for n in ("custody.token_paused", "custody.address_frozen", "custody.holder_allowed",
                                           "fund.holder_allowlisted"))


def _apply_custody_evidence(facts: dict[str, Any], ev: CustodyEvidence, query: Query) -> None:
    """On-chain evidence is stronger than the query's claims: it replaces them. The restriction facts
    (paused, frozen, allow-listed) come from the token's views only: a claim never stands in for a view
    that was not read (not declared, off-chain, reverted): the fact is unknown and its checks fail."""
    facts[_key("custody.balance_covers_quantity")] = ev.quantity >= query.quantity
    if ev.chain == "bitcoin" and ev.confirmations is not None:
        facts[_key("custody.confirmations")] = ev.confirmations
    if ev.chain == "ethereum":
        selector = str(ev.details.get("block_selector", ""))
        facts[_key("custody.finality")] = selector if selector in ("finalized", "safe") else "latest"
        for key in RESTRICTION_KEYS:
            facts.pop(key, None)
        d = ev.details
        if d.get("paused") is not None:
            facts[_key("custody.token_paused")] = bool(d["paused"])
        if d.get("frozen_addresses") is not None:
            facts[_key("custody.address_frozen")] = bool(d["frozen_addresses"])
        if d.get("not_allowed_addresses") is not None:
            allowed = not d["not_allowed_addresses"]
            facts[_key("custody.holder_allowed")] = allowed
            facts[_key("fund.holder_allowlisted")] = allowed
