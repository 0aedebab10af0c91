"""Redemption days in business days: when a query gives a redemption's request and settlement dates,
fund.redemption_days is counted on the programme's calendar (SIFMA by default), the same by the engine's
four paths and the reference evaluator, and the caller's stated count does not stand in."""

from __future__ import annotations

import json

import pytest

from rules.engine.evaluators.reference import decide_reference
from rules.engine.query import parse_query
from rules.errors import InputError
from tests.engine.test_reference import PATHS, _dump, engines, shipped
from tests.support import ROOT

BUIDL = json.loads((ROOT / "examples" / "queries" / "buidl-eligible.json").read_text())


def _with_fund(**fund) -> dict:
    q = json.loads(json.dumps(BUIDL))
    q["evidence"]["fund"].update(fund)
    return q


def _reason(d: dict, rule: str) -> dict:
    return next(r for r in d["reasons"] if r["rule"] == rule)


@pytest.mark.parametrize("requested, settles, claimed, days", [
    ("2026-11-25", "2026-11-27", 5, 1),   # Wednesday to Friday over Thanksgiving (SIFMA closed): 1, not the 5 claimed
    ("2026-11-19", "2026-11-19", None, 0),  # same day
    ("2026-11-20", "2026-11-24", 1, 2),   # Friday to Tuesday: 2 business days (the slow-redemption add-on)
    ("2026-11-20", "2026-11-25", 1, 3),   # Friday to Wednesday: 3 > 2, refused though 1 is claimed
])
@pytest.mark.parametrize("evaluator,reuse", PATHS)
def test_redemption_days_are_counted_from_the_dates(requested, settles, claimed, days, evaluator, reuse):
    fund = {"redemption_requested_on": requested, "redemption_settles_on": settles}
    q = _with_fund(**fund)
    if claimed is None:
        q["evidence"]["fund"].pop("redemption_days")
    else:
        q["evidence"]["fund"]["redemption_days"] = claimed
    query = parse_query(q)
    ref = decide_reference(shipped(), query)
    prompt = _reason(ref, "fund.redemption-prompt")
    assert prompt["observed"] == days
    assert prompt["outcome"] == ("pass" if days <= 2 else "fail")
    assert ref["eligible"] is (days <= 2)
    slow = _reason(ref, "haircut.money-market-funds.slow-redemption")
    assert slow["outcome"] == ("applied" if days >= 2 else "not_applicable")
    got = engines(shipped())[(evaluator, reuse)].decide(query).to_json()
    assert _dump(got) == _dump(ref)


def test_without_the_dates_the_stated_count_is_the_fact():
    ref = decide_reference(shipped(), parse_query(_with_fund(redemption_days=2)))
    assert _reason(ref, "fund.redemption-prompt")["observed"] == 2


@pytest.mark.parametrize("fund, field, words", [
    ({"redemption_requested_on": "2026-11-20"}, "redemption_settles_on", "redemption_requested_on needs redemption_settles_on"),
    ({"redemption_settles_on": "2026-11-20"}, "redemption_requested_on", "redemption_settles_on needs redemption_requested_on"),
    ({"redemption_requested_on": "2026-11-20", "redemption_settles_on": "2026-11-19"}, "redemption_settles_on",
     "settles before it is requested"),
    ({"redemption_requested_on": "2026-02-30", "redemption_settles_on": "2026-03-02"}, "redemption_requested_on",
     "not a real calendar date"),
])
def test_bad_redemption_dates_are_refused_naming_the_field(fund, field, words):
    with pytest.raises(InputError) as exc:
        parse_query(_with_fund(**fund))
    assert words in str(exc.value) and f"evidence.fund.{field}" in str(exc.value.where)
