"""Valuation guards (issue 16, item 6): a payment stablecoin is valued at no more than par unless the
registry says ``valuation: {above_par: true}``. Measured before: 1,000,000 USDC at 1.004 had a market
value of 1,004,000.00. Every case is held to both evaluators and the reference by ``check_cases``."""

from __future__ import annotations

import json

import pytest

from rules.engine.evaluators.reference import decide_reference
from rules.engine.query import parse_query
from rules.errors import PolicyError
from rules.policy.loader import load_bundle_from_sources
from tests.engine.test_reference import Case, check_cases, shipped
from tests.support import ROOT
from tests.support.bundles import shipped_sources

USDC = json.loads((ROOT / "examples" / "queries" / "usdc-eligible.json").read_text())


def _at(price: str) -> dict:
    return {**USDC, "quantity": "1000000", "price_usd": price}


@pytest.mark.parametrize("price,market,valued", [("1.004", "1000000.00", "1"), ("1.0000", "1000000.00", None),
                                                 ("0.9998", "999800.00", None)])
def test_a_stablecoin_is_valued_at_no_more_than_par(price, market, valued):
    d = decide_reference(shipped(), parse_query(_at(price)))
    assert (d["price_usd"], d["market_value_usd"], d.get("valued_at_usd")) == (price, market, valued)
    check_cases(shipped(), [Case(_at(price), parse_query(_at(price)))])


def test_the_policy_may_value_a_stablecoin_above_par():
    s = shipped_sources()
    s["assets.yaml"] = s["assets.yaml"].replace(
        "    issuer: Circle Internet Financial\n",
        "    issuer: Circle Internet Financial\n    valuation: {above_par: true, rationale: Redeemable above par.}\n", 1)
    bundle = load_bundle_from_sources(s)
    d = decide_reference(bundle, parse_query(_at("1.004")))
    assert (d["market_value_usd"], d.get("valued_at_usd")) == ("1004000.00", None)
    check_cases(bundle, [Case(_at("1.004"), parse_query(_at("1.004")))])


def test_the_par_cap_is_for_stablecoins_only():
    s = shipped_sources()
    s["assets.yaml"] = s["assets.yaml"].replace(
        "    class: digital_commodity\n",
        "    class: digital_commodity\n    valuation: {above_par: true, rationale: Not a stablecoin.}\n", 1)
    with pytest.raises(PolicyError) as e:
        load_bundle_from_sources(s)
    (p,) = [p for p in e.value.problems if "valuation" in p.message]
    assert p.file == "assets.yaml" and p.line is not None and "payment stablecoins" in p.message


BUIDL = json.loads((ROOT / "examples" / "queries" / "buidl-eligible.json").read_text())


def _buidl(price: str, nav: str | None = "1.00") -> dict:
    fund = {**BUIDL["evidence"]["fund"], "nav_usd": nav}
    if nav is None:
        del fund["nav_usd"]
    return {**BUIDL, "price_usd": price, "evidence": {**BUIDL["evidence"], "fund": fund}}


@pytest.mark.parametrize("price,nav,bps,eligible", [("0.90", "1.00", 1000, False), ("5.00", "1.00", 40000, False),
                                                    ("1.0050", "1.00", 50, True), ("1.00", "1.00", 0, True),
                                                    ("1.00", None, None, False)])
def test_a_fund_token_is_priced_against_its_nav(price, nav, bps, eligible):
    """Measured before: BUIDL at 0.90 or 5.00 (NAV 1.00) was accepted."""
    q = _buidl(price, nav)
    d = decide_reference(shipped(), parse_query(q))
    (r,) = [r for r in d["reasons"] if r["rule"] == "fund.price-within-nav-band"]
    assert r["outcome"] == ("pass" if eligible else "fail") and d["eligible"] is eligible
    assert r["observed"] == ("missing" if bps is None else bps)
    check_cases(shipped(), [Case(q, parse_query(q))])


def test_the_peg_band_has_its_two_sides_apart():
    """A bundle with a 25 bp premium limit beside the 50 bp discount limit: 1.0030 is refused, 0.9970 is not."""
    s = shipped_sources()
    s["eligibility.yaml"] = s["eligibility.yaml"].replace("check: {fact: stablecoin.peg_premium_bps, at_most: 50}",
                                                          "check: {fact: stablecoin.peg_premium_bps, at_most: 25}", 1)
    bundle = load_bundle_from_sources(s)
    above, below = _at("1.0030"), _at("0.9970")
    da, db = decide_reference(bundle, parse_query(above)), decide_reference(bundle, parse_query(below))
    assert da["failed_rules"] == ["stablecoin.peg-premium-within-band"] and db["eligible"] is True
    check_cases(bundle, [Case(above, parse_query(above)), Case(below, parse_query(below))])


def test_a_nav_that_is_not_a_positive_decimal_is_bad_input():
    from rules.errors import InputError
    for bad in ("0", "-1", "1e3", 1):
        with pytest.raises(InputError, match="nav_usd"):
            parse_query(_buidl("1.00", bad))
