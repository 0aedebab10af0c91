"""Issue 16, what was left: money-market fund shares take Rule 15c3-1(c)(2)(vi)(D)(1)'s 2%, Treasury funds
the maturity table; each participant's phase clock shown by ``dacp bundle show`` and GET /v1/policy."""

from __future__ import annotations

import json
from decimal import Decimal

from fastapi.testclient import TestClient

from rules.app import Dacp
from rules.cli.run import main
from rules.engine.query import parse_query
from rules.http.app import create_app
from rules.policy.analysis import analyse
from rules.policy.loader import load_bundle
from rules.settings import Settings
from tests.policy.test_letters import CONFIG, TOKEN, example
from tests.support import ROOT


def _schedule_of(bundle, symbol: str):
    (h,) = [h for h in bundle.haircuts if h.applies.matches(bundle.assets[symbol])]
    return h


def test_money_market_fund_shares_take_the_2_percent_of_15c3_1_d_1_with_its_source():
    b = load_bundle(ROOT / "policies")
    mmf = _schedule_of(b, "BUIDL")
    assert mmf.id == "haircut.money-market-funds" and not mmf.buckets
    (src,) = mmf.sources
    assert src.haircut == Decimal("0.02") and "15c3-1(c)(2)(vi)(D)(1)" in src.source and "2a-7" in src.source
    treasury = _schedule_of(b, "OUSG")
    assert treasury.id == "haircut.tokenized-funds" and treasury.bucket_fact == "fund.wam_days"
    assert not [f for f in analyse(b) if f.check == "schedule-gap"]


def test_a_money_market_fund_ignores_its_wam_a_treasury_fund_does_not(tmp_path, monkeypatch):
    monkeypatch.setenv("DACP_APPROVALS_REQUIRED", "false")
    dacp = Dacp(Settings(policies=ROOT / "policies", log=tmp_path / "log.sqlite",
                         sections={"approvals": {"required": False}}), log_enabled=False)
    for wam in (45, 9000):
        q = example("buidl-eligible.json")
        q["evidence"]["fund"]["wam_days"] = wam
        d = dacp.evaluate([parse_query(q)])[0].to_json()
        assert d["eligible"] is True and Decimal(d["haircut"]["total"]) == Decimal("0.04"), d["haircut"]
    q = example("ousg-eligible.json")
    q["evidence"]["fund"]["wam_days"] = 9000
    d = dacp.evaluate([parse_query(q)])[0].to_json()
    assert Decimal(d["haircut"]["total"]) == Decimal("0.055") + Decimal("0.02") + Decimal("0.01")


def test_bundle_show_and_the_policy_route_list_each_participants_phase_clock(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DACP_APPROVALS_REQUIRED", "false")
    b = load_bundle(ROOT / "policies")
    clocks = {c["participant"]: c for c in b.phase_clocks()}
    assert clocks["FCM-BRAVO"] == {"participant": "FCM-BRAVO", "accepting_from": "2026-01-15", "phases": [
        {"id": "phase.initial", "starts": "2026-01-15", "ends": "2026-04-15"},
        {"id": "phase.expanded", "starts": "2026-04-15", "ends": None}]}
    assert clocks["FCM-CHARLIE"]["accepting_from"] is None  # the programme's clock
    assert clocks["FCM-CHARLIE"]["phases"][0] == {"id": "phase.initial", "starts": "2025-12-08", "ends": "2026-03-08"}

    assert main(["bundle", "show", "--policies", str(ROOT / "policies")]) == 0
    out = capsys.readouterr().out
    assert ("FCM-BRAVO        accepting from 2026-01-15: phase.initial 2026-01-15 .. 2026-04-15, "
            "phase.expanded 2026-04-15 .. open") in out

    settings = Settings(policies=ROOT / "policies", log=tmp_path / "log.sqlite", sections={"approvals": {"required": False}})
    with TestClient(create_app(settings, CONFIG)) as c:
        r = c.get("/v1/policy", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    assert r.json()["phase_clocks"] == json.loads(json.dumps(b.phase_clocks()))
