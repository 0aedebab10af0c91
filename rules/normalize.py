"""From a checked query (and verified evidence) to typed facts for the evaluators.

Only facts whose evidence is present are set; a missing fact makes every check on it fail (fail
closed). Verified on-chain custody evidence, when given, replaces the query's claims.
"""

from __future__ import annotations

import math
from datetime import timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Any, Sequence

from adapters.evidence import CustodyEvidence, PriceEvidence
from rules.compiler import day_number
from rules.facts import DAY_KEY, FACTS
from rules.model import Asset, Bundle
from rules.query import Query


def _k(name: str) -> str:
    return FACTS[name].key


def peg_deviation_bps(price: Decimal) -> int:
    """|price - 1| in basis points, rounded up (conservative)."""
    return int((abs(price - 1) * 10000).to_integral_value(rounding=ROUND_CEILING))


def normalize(bundle: Bundle, asset: Asset, query: Query,
              evidence: Sequence[CustodyEvidence | PriceEvidence] = ()) -> dict[str, Any]:
    day = query.day
    phase = bundle.phase_at(day)
    facts: dict[str, Any] = {
        DAY_KEY: day_number(day),
        _k("asset"): asset.symbol,
        _k("asset.class"): asset.klass,
        _k("asset.chain"): asset.chain,
        _k("participant"): query.participant,
        _k("programme.phase"): phase.id if phase else "none",
    }
    c = query.custody
    for name, field in (("custody.custodian", "custodian"), ("custody.segregated", "segregated"),
                        ("custody.confirmations", "confirmations"), ("custody.finality", "finality"),
                        ("custody.token_paused", "token_paused"), ("custody.address_frozen", "address_frozen"),
                        ("custody.holder_allowed", "holder_allowed")):
        if field in c:
            facts[_k(name)] = c[field]
    if "balance" in c:
        facts[_k("custody.balance_covers_quantity")] = c["balance"] >= query.quantity

    price_updated_at = query.evidence.get("price_updated_at")
    price = query.price_usd
    for ev in evidence:
        if isinstance(ev, PriceEvidence) and ev.asset == asset.symbol:
            price_updated_at = ev.updated_at
            price = ev.price_usd
    if price_updated_at is not None:
        age = query.as_of - price_updated_at
        facts[_k("price.age_minutes")] = max(0, math.ceil(age / timedelta(minutes=1)))

    if asset.klass == "payment_stablecoin":
        facts[_k("stablecoin.peg_deviation_bps")] = peg_deviation_bps(price)
        sc = query.evidence.get("stablecoin", {})
        if "issuer" in sc:
            facts[_k("stablecoin.issuer")] = sc["issuer"]
            facts[_k("stablecoin.issuer_matches_registry")] = asset.issuer is not None and sc["issuer"] == asset.issuer
        if "reserve_attestation_date" in sc:
            facts[_k("stablecoin.reserve_attestation_age_days")] = (day - sc["reserve_attestation_date"]).days
    fund = query.evidence.get("fund", {})
    if asset.klass in ("tokenized_treasury_fund", "tokenized_money_market_fund"):
        if "nav_date" in fund:
            facts[_k("fund.nav_age_days")] = (day - fund["nav_date"]).days
        for name, field in (("fund.holder_allowlisted", "holder_allowlisted"), ("fund.redemption_days", "redemption_days"),
                            ("fund.wam_days", "wam_days")):
            if field in fund:
                facts[_k(name)] = fund[field]
        if c.get("holder_allowed") is False:  # the custodian says no: that outweighs a transfer agent's yes
            facts[_k("fund.holder_allowlisted")] = False
    for ev in evidence:  # last: on-chain evidence replaces the query's claims
        if isinstance(ev, CustodyEvidence) and ev.asset == asset.symbol:
            _apply_custody_evidence(facts, ev, query)
    return facts


def _apply_custody_evidence(facts: dict[str, Any], ev: CustodyEvidence, query: Query) -> None:
    """On-chain evidence is stronger than the query's claims: it replaces them."""
    facts[_k("custody.balance_covers_quantity")] = ev.quantity >= query.quantity
    if ev.chain == "bitcoin" and ev.confirmations is not None:
        facts[_k("custody.confirmations")] = ev.confirmations
    if ev.chain == "ethereum":
        selector = str(ev.details.get("block_selector", ""))
        facts[_k("custody.finality")] = selector if selector in ("finalized", "safe") else "latest"
        d = ev.details
        if d.get("paused") is not None:
            facts[_k("custody.token_paused")] = bool(d["paused"])
        elif _k("custody.token_paused") in facts:
            del facts[_k("custody.token_paused")]  # the contract could not tell: unknown, not the claim
        if d.get("frozen_addresses") is not None:
            facts[_k("custody.address_frozen")] = bool(d["frozen_addresses"])
        if d.get("not_allowed_addresses") is not None:
            allowed = not d["not_allowed_addresses"]
            facts[_k("custody.holder_allowed")] = allowed
            facts[_k("fund.holder_allowlisted")] = allowed
