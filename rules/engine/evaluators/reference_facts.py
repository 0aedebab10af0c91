"""The reference decider's facts: each fact of README "The policy language" (table "Facts") worked out
from the query, its evidence, the asset registry and the programme, one small function per source.

Independent of ``rules.engine.fact_builder`` on purpose (no keys, no plans, no shared helpers): the
facts are named as the policy language names them (``custody.confirmations``), and a fact the query and
its evidence do not give is simply absent from the dict — README: "A rule whose fact is missing fails".
"""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from typing import Any, Sequence

from rules.engine.query import Query
from rules.evidence import CustodyEvidence, PriceEvidence
from rules.policy.calendar import MAX_SPAN_DAYS, is_business_day
from rules.policy.model import Asset, Bundle, Phase

# The fact catalogue names the asset classes whose facts exist (README table: "stablecoin.*" from
# evidence.stablecoin, "fund.*" from evidence.fund).
STABLECOIN_CLASSES = ("payment_stablecoin",)
FUND_CLASSES = ("tokenized_treasury_fund", "tokenized_money_market_fund")
CUSTODY_CLAIMS = ("custodian", "segregated", "confirmations", "finality", "token_paused", "address_frozen",
                  "holder_allowed")
FUND_CLAIMS = ("holder_allowlisted", "redemption_days", "wam_days")


def query_day(query: Query) -> date:
    """The query date: the UTC calendar day of ``as_of`` (README: criteria and participants are dated
    by day, "effective_from, effective_to, exclusive")."""
    return query.as_of.astimezone(timezone.utc).date()


def phase_windows(bundle: Bundle, participant: str | None) -> list[tuple[Phase, date, date | None]]:
    """The phases as (phase, from, to) on the clock of ``participant``: Letter 26-05 counts its three
    months from the date the FCM starts accepting digital assets, so each participant's phases run from
    its own start (the loader turned each phase's ``months`` into the participant's dates); anyone not
    listed, and None, runs on the programme's clock (its start date)."""
    for pt in bundle.participants:
        if pt.id == participant and pt.clock:
            return [(w.phase, w.starts, w.ends) for w in pt.clock]
    return [(p, p.starts, p.ends) for p in bundle.phases]


def phase_in_force(bundle: Bundle, day: date, participant: str | None = None) -> Phase | None:
    """The phase in force on ``day`` for ``participant``: the phase whose [from, to) holds it (the last
    phase has no end)."""
    found = [p for p, frm, to in phase_windows(bundle, participant) if frm <= day and (to is None or day < to)]
    return found[0] if found else None


def price_used(query: Query, asset: Asset, evidence: Sequence[Any]) -> tuple[Decimal, datetime | None]:
    """The price and the time it was struck: the query's, unless price evidence for the asset was given
    (README "Settings": with --verify, prices come from the configured sources instead of the query;
    the last such evidence wins, as it is the last read)."""
    price, updated = query.price_usd, query.evidence.get("price_updated_at")
    for ev in evidence:
        if isinstance(ev, PriceEvidence) and ev.asset == asset.symbol:
            price, updated = ev.price_usd, ev.updated_at
    return price, updated


def registry_facts(bundle: Bundle, asset: Asset, query: Query) -> dict[str, Any]:
    """asset, asset.class, asset.chain, participant, programme.phase: "query, registry, programme".
    programme.phase is 'none' before the programme starts (facts.py: "('none' before the start)")."""
    phase = phase_in_force(bundle, query_day(query), query.participant)
    return {"asset": asset.symbol, "asset.class": asset.klass, "asset.chain": asset.chain,
            "participant": query.participant, "programme.phase": phase.id if phase else "none"}


def custody_claims(query: Query) -> dict[str, Any]:
    """custody.*: from the query's custody block, each only when given. custody.balance_covers_quantity:
    the balance the custodian attests covers the quantity posted (balance >= quantity)."""
    c = query.custody or {}
    out = {f"custody.{name}": c[name] for name in CUSTODY_CLAIMS if name in c}
    if "balance" in c:
        out["custody.balance_covers_quantity"] = c["balance"] >= query.quantity
    return out


def price_age(query: Query, updated: datetime | None) -> dict[str, Any]:
    """price.age_minutes: the age of the price at as_of in whole minutes. A fact is a whole number, and
    the engine rounds a part-minute UP (never below 0): the conservative rounding, under which
    "at most 60 minutes old" fails for a price 60 minutes and 1 second old - as the words say."""
    if updated is None:
        return {}
    return {"price.age_minutes": max(0, math.ceil((query.as_of - updated) / timedelta(minutes=1)))}


def business_days(bundle: Bundle, start: date, end: date) -> int:
    """Business days of the programme's calendar in (start, end], negative when start is after end:
    every day after ``start`` up to ``end`` that is a weekday and no holiday of the calendar, one by one."""
    if start > end:
        return -business_days(bundle, end, start)
    span = (end - start).days
    days = (start + timedelta(days=n) for n in range(1, span + 1))
    if span > MAX_SPAN_DAYS:  # rules.policy.calendar: beyond ten years, weekdays (holidays not looked up)
        return sum(1 for d in days if d.weekday() < 5)
    return sum(1 for d in days if is_business_day(bundle.calendar, d))


def stablecoin_facts(bundle: Bundle, asset: Asset, query: Query, price: Decimal) -> dict[str, Any]:
    """stablecoin.*, only for a payment stablecoin (the facts describe one; for another asset they are
    missing, so a rule testing them there fails closed):

    * peg_deviation_bps: |price - 1 USD| in basis points, rounded up (README);
    * issuer, as attested; issuer_matches_registry: it is the issuer the registry names (none named:
      no match);
    * reserve_attestation_age_days: calendar days from the attestation date to the query date."""
    if asset.klass not in STABLECOIN_CLASSES:
        return {}
    out: dict[str, Any] = {"stablecoin.peg_deviation_bps": math.ceil(abs(Fraction(price) - 1) * 10000),
                           "stablecoin.peg_discount_bps": math.ceil(max(Fraction(0), 1 - Fraction(price)) * 10000),
                           "stablecoin.peg_premium_bps": math.ceil(max(Fraction(0), Fraction(price) - 1) * 10000)}
    sc = query.evidence.get("stablecoin") or {}
    if "issuer" in sc:
        out["stablecoin.issuer"] = sc["issuer"]
        out["stablecoin.issuer_matches_registry"] = asset.issuer is not None and sc["issuer"] == asset.issuer
    if "reserve_attestation_date" in sc:
        out["stablecoin.reserve_attestation_age_days"] = (query_day(query) - sc["reserve_attestation_date"]).days
        out["stablecoin.reserve_attestation_age_business_days"] = business_days(
            bundle, sc["reserve_attestation_date"], query_day(query))
    return out


def fund_facts(bundle: Bundle, asset: Asset, query: Query, price: Any) -> dict[str, Any]:
    """fund.*, only for tokenized Treasury / money-market fund shares: from evidence.fund; nav_age_days
    in calendar days to the query date. A custodian's ``holder_allowed: false`` makes
    fund.holder_allowlisted false whatever the transfer agent said (the engine does this: a holder that
    cannot hold the token cannot be on a working allow-list - fail closed; the README table is silent)."""
    if asset.klass not in FUND_CLASSES:
        return {}
    fund = query.evidence.get("fund") or {}
    out = {f"fund.{name}": fund[name] for name in FUND_CLAIMS if name in fund}
    if "nav_date" in fund:
        out["fund.nav_age_days"] = (query_day(query) - fund["nav_date"]).days
        out["fund.nav_age_business_days"] = business_days(bundle, fund["nav_date"], query_day(query))
    if "nav_usd" in fund:  # price_nav_deviation_bps: |price / NAV - 1| in basis points, rounded up
        out["fund.price_nav_deviation_bps"] = math.ceil(abs(Fraction(price) / Fraction(fund["nav_usd"]) - 1) * 10000)
    if "redemption_requested_on" in fund:  # README fact table: the dates, when given, replace the stated count
        out["fund.redemption_days"] = business_days(bundle, fund["redemption_requested_on"], fund["redemption_settles_on"])
    if (query.custody or {}).get("holder_allowed") is False:
        out["fund.holder_allowlisted"] = False
    return out


def onchain_custody(facts: dict[str, Any], ev: CustodyEvidence, query: Query) -> None:
    """Verified custody evidence replaces the query's claims (README "Settings": "custody balances ...
    come from the configured nodes ... instead of the query"; docs/ethereum.md for the details):

    * the verified balance decides custody.balance_covers_quantity;
    * Bitcoin: the confirmations counted; Ethereum: the finality of the block read ('finalized' or
      'safe' as selected, anything else 'latest');
    * the token's pause / blacklist / allow-list views, when they answered, and nothing else: on Ethereum
      a query's claim of paused, frozen or allow-listed never stands (README: a caller's claim never
      stands in for evidence the system reads itself); a view not read leaves its fact missing;
    * the allow-list view answers both custody.holder_allowed and fund.holder_allowlisted."""
    facts["custody.balance_covers_quantity"] = ev.quantity >= query.quantity
    if ev.chain == "bitcoin" and ev.confirmations is not None:
        facts["custody.confirmations"] = ev.confirmations
    if ev.chain != "ethereum":
        return
    selector = str(ev.details.get("block_selector", ""))
    facts["custody.finality"] = selector if selector in ("finalized", "safe") else "latest"
    for name in ("custody.token_paused", "custody.address_frozen", "custody.holder_allowed", "fund.holder_allowlisted"):
        facts.pop(name, None)
    if ev.details.get("paused") is not None:
        facts["custody.token_paused"] = bool(ev.details["paused"])
    if ev.details.get("frozen_addresses") is not None:
        facts["custody.address_frozen"] = bool(ev.details["frozen_addresses"])
    if ev.details.get("not_allowed_addresses") is not None:
        allowed = not ev.details["not_allowed_addresses"]
        facts["custody.holder_allowed"] = allowed
        facts["fund.holder_allowlisted"] = allowed


def facts_of(bundle: Bundle, asset: Asset, query: Query, evidence: Sequence[Any] = ()) -> dict[str, Any]:
    """Every fact of the query about ``asset`` that its data gives, by the policy language's names."""
    price, updated = price_used(query, asset, evidence)
    facts = registry_facts(bundle, asset, query)
    facts.update(custody_claims(query))
    facts.update(price_age(query, updated))
    facts.update(stablecoin_facts(bundle, asset, query, price))
    facts.update(fund_facts(bundle, asset, query, price))
    for ev in evidence:  # last: on-chain evidence is stronger than every claim of the query
        if isinstance(ev, CustodyEvidence) and ev.asset == asset.symbol:
            onchain_custody(facts, ev, query)
    return facts
