"""Margin coverage in the weekly pilot report (``dacp report weekly``): per FCM at the week's end - total
requirement, counted collateral, excess and deficit, accounts in deficit, calls open, issued and met in the
week - in JSON, CSV and the chart's coverage-over-time panel; a week with no requirement on file says so.
On the real ledger (USDC verified on anvil), both backends, through Python and the CLI door."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime, timedelta, timezone

import pytest

from rules.ledger import weekly_report as rep
from rules.margin import weekly as margin_weekly
from tests.margin.test_margin_ledger import _book, _business_day, _import
from tests.support.ledger_workload import fund, usdc_request

pytestmark = pytest.mark.integration


def _week(d: date) -> str:
    y, w, _ = d.isocalendar()
    return f"{y}-W{w:02d}"


def test_the_weekly_report_carries_margin_coverage_per_fcm(ledger, chain, setup, tmp_path, monkeypatch, capsys):
    assert margin_weekly.add_to({}, lambda: ledger.bundle, ledger.store) == []  # no margin records: no section
    book = _book(ledger)
    day = _business_day(book)
    a = fund(chain, usdc=300_000)
    assert ledger.credit(usdc_request("ACC-8", "100000", a, "w-1"))["status"] == "credited"  # 97990.20 counted
    _import(book, f"account,dco,business_day,requirement_usd\nACC-8,CME,{day},150000.00\nACC-9,CME,{day},5000.00\n")
    assert [s["amount_usd"] for s in book.run_calls()] == ["53000.00"]  # ACC-9: 5000 is below the minimum call

    now = datetime.now(timezone.utc)
    week, before = _week(now.date()), _week(now.date() - timedelta(days=7))
    r = rep.weekly(ledger.store, week, prices=ledger.prices, first_week=before, now=now)
    panels = margin_weekly.add_to(r, lambda: ledger.bundle, ledger.store)
    m = r["margin"]
    assert m["status"] == "reported" and m["week"] == week and m["policy"] == "margin.calls"
    assert m["by_participant"] == [
        {"participant": "FCM-ALPHA", "status": "deficit", "accounts": 1, "requirement_usd": "150000.00",
         "collateral_usd": "97990.20", "excess_usd": "0.00", "deficit_usd": "52009.80", "accounts_in_deficit": 1,
         "calls_open": 1, "calls_issued": 1, "calls_met": 0},
        {"participant": "unknown", "status": "deficit", "accounts": 1, "requirement_usd": "5000.00",
         "collateral_usd": "0.00", "excess_usd": "0.00", "deficit_usd": "5000.00", "accounts_in_deficit": 1,
         "calls_open": 0, "calls_issued": 0, "calls_met": 0}]
    assert m["totals"]["requirement_usd"] == "155000.00" and m["totals"]["accounts_in_deficit"] == 2
    assert [s["week"] for s in m["series"]] == [before, week]
    if _week(date.fromisoformat(day)) == week:  # the requirements' day is in this week: the one before had none
        assert m["series"][0] == {"week": before, "status": "no requirements", "as_of": m["series"][0]["as_of"],
                                  "by_participant": []}
    assert m["series"][1]["totals"] == m["totals"]

    rows = list(csv.DictReader(io.StringIO(margin_weekly.margin_csv(r))))
    assert [(x["participant"], x["deficit_usd"], x["calls_open"]) for x in rows] == [
        ("FCM-ALPHA", "52009.80", "1"), ("unknown", "5000.00", "0"), ("ALL", "57009.80", "1")]
    empty = {**r, "margin": m["series"][0]} if m["series"][0]["status"] == "no requirements" else None
    if empty is not None:
        assert margin_weekly.margin_csv(empty).splitlines()[1] == f"{week},yes,ALL,no requirements,,,,,,,,,"
    one = rep.chart(r, tmp_path / "one.png")
    two = rep.chart(r, tmp_path / "two.png", panels)
    assert two.stat().st_size > one.stat().st_size > 10_000  # the coverage panel drawn under the holdings

    # the door: the same section in the JSON, the margin CSV and the chart beside the ledger's files
    from rules.cli.run import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DACP_CONFIG", raising=False)
    for k, v in {"DACP_POLICIES": setup.policies, "DACP_LOG": setup.target, "DACP_PRICES_FILE": setup.prices,
                 "DACP_APPROVALS_REQUIRED": "false"}.items():
        monkeypatch.setenv(k, v)
    assert main(["report", "weekly", "--week", week, "--since-week", before, "--out", "out"]) == 0
    err = capsys.readouterr().err
    assert "-margin.csv" in err
    doc = json.loads((tmp_path / "out" / f"weekly-{week}.json").read_text())
    assert doc["margin"]["by_participant"] == m["by_participant"]
    assert (tmp_path / "out" / f"weekly-{week}-margin.csv").read_text().splitlines()[1].startswith(
        f"{week},yes,FCM-ALPHA,deficit,1,150000.00,97990.20,0.00,52009.80,1,1,1,0")
    assert (tmp_path / "out" / f"weekly-{week}.png").stat().st_size > one.stat().st_size
