"""Letter 26-05's haircut rule, built into the language (issue 16, point 1).

Where a DCO accepts the asset, the highest accepting DCO's haircut; otherwise the FCM's own, never below the
programme's ``minimum_own_haircut``; a stricter FCM overlay (``stricter_own``) labelled so. Exactly one
component is decisive and the decision says why in words. Each case is held to both evaluators and the
reference by ``check_cases``.
"""

from __future__ import annotations

import pytest

from rules.engine.evaluators.reference import decide_reference
from rules.engine.query import parse_query
from rules.errors import PolicyError
from rules.policy.loader import load_bundle_from_sources
from tests.engine.test_reference import README_QUERY, Case, check_cases
from tests.support.bundles import shipped_sources

ETH_QUERY = {**README_QUERY, "asset": "ETH", "quantity": "10", "price_usd": "3000.00",
             "custody": {"custodian": "anchorage", "addresses": ["0x" + "11" * 20], "segregated": True,
                         "finality": "finalized", "balance": "10"}}

ETH_DCO = """      - id: haircut.eth.bitnomial
        kind: dco
        dco: Bitnomial
        schedule: Bitnomial DCO collateral schedule
        as_of: 2026-01-02
        haircut: 0.20
"""


def _decisive(d: dict) -> list[str]:
    return [c["rule"] for c in d["haircut"]["components"] if c.get("decisive")]


def _eth_own(haircut: str) -> dict[str, str]:
    s = shipped_sources()
    own = f"      - {{id: haircut.eth.own, kind: own, haircut: {haircut}, source: FCM risk policy}}\n"
    s["haircuts.yaml"] = s["haircuts.yaml"].replace(ETH_DCO, own, 1)
    return s


def test_btc_the_stricter_own_overlay_alone_decides():
    """Measured: BTC was 20% decided_by haircut.btc.floor with Bitnomial's 15% and the floor both decisive."""
    from tests.engine.test_reference import shipped
    d = decide_reference(shipped(), parse_query(README_QUERY))
    h = d["haircut"]
    assert (h["total"], h["decided_by"]) == ("0.2", "haircut.btc.stricter_own")
    assert _decisive(d) == ["haircut.btc.stricter_own"]
    assert [c["kind"] for c in h["components"][:2]] == ["dco", "stricter_own"]
    assert h["components"][0]["dco"] == "Bitnomial" and h["components"][0]["decisive"] is False
    assert "stricter own" in h["why"] and "Bitnomial schedule of 2026-01" in h["why"]
    check_cases(shipped(), [Case(README_QUERY, parse_query(README_QUERY))])


def test_the_highest_of_two_accepting_dcos_decides_and_says_so():
    s = shipped_sources()
    two = ETH_DCO + ETH_DCO.replace("haircut.eth.bitnomial", "haircut.eth.other").replace(
        "dco: Bitnomial", "dco: Other DCO").replace("haircut: 0.20", "haircut: 0.22")
    s["haircuts.yaml"] = s["haircuts.yaml"].replace(ETH_DCO, two, 1).replace(
        "      floor: 0.25\n", "      floor: 0.21\n", 1)
    bundle = load_bundle_from_sources(s)
    d = decide_reference(bundle, parse_query(ETH_QUERY))
    assert (d["haircut"]["base"], d["haircut"]["decided_by"]) == ("0.22", "haircut.eth.other")
    assert d["haircut"]["why"] == "Other DCO schedule of 2026-01: highest of 2 accepting DCOs"
    assert _decisive(d) == ["haircut.eth.other"]
    check_cases(bundle, [Case(ETH_QUERY, parse_query(ETH_QUERY))])


def test_an_own_haircut_below_the_programme_minimum_is_refused():
    """Measured: a bundle giving ETH a 10% own haircut and no DCO source validated and decided at 0.10."""
    with pytest.raises(PolicyError) as e:
        load_bundle_from_sources(_eth_own("0.10"))
    (p,) = [p for p in e.value.problems if "minimum_own_haircut" in p.message]
    assert p.file == "haircuts.yaml" and p.line is not None and "at least 20%" in p.message and "10%" in p.message


def test_an_own_haircut_at_the_minimum_decides_where_no_dco_accepts():
    s = _eth_own("0.20")
    eth = s["haircuts.yaml"].index("  - id: haircut.eth\n")
    start = s["haircuts.yaml"].index("    stricter_own:\n", eth)
    end = s["haircuts.yaml"].index("      floor: 0.25\n", start) + len("      floor: 0.25\n")
    s["haircuts.yaml"] = s["haircuts.yaml"][:start] + s["haircuts.yaml"][end:]
    bundle = load_bundle_from_sources(s)
    d = decide_reference(bundle, parse_query(ETH_QUERY))
    assert (d["haircut"]["base"], d["haircut"]["decided_by"]) == ("0.2", "haircut.eth.own")
    assert d["haircut"]["why"] == "FCM risk policy: the FCM's own haircut, no DCO accepts ETH"
    check_cases(bundle, [Case(ETH_QUERY, parse_query(ETH_QUERY))])


def test_an_own_source_beside_a_dco_is_refused():
    s = shipped_sources()
    own = "      - {id: haircut.eth.own, kind: own, haircut: 0.30, source: FCM risk policy}\n"
    s["haircuts.yaml"] = s["haircuts.yaml"].replace(ETH_DCO, ETH_DCO + own, 1)
    with pytest.raises(PolicyError) as e:
        load_bundle_from_sources(s)
    assert any("stricter_own" in p.message and p.rule_id == "haircut.eth.own" for p in e.value.problems)


def test_a_dco_source_needs_its_name_schedule_and_date():
    s = shipped_sources()
    s["haircuts.yaml"] = s["haircuts.yaml"].replace("        dco: Bitnomial\n", "", 1)
    with pytest.raises(PolicyError) as e:
        load_bundle_from_sources(s)
    assert any("dco" in p.message for p in e.value.problems)


WHY_BTC = "the FCM's stricter own haircut 20%, above 15% (Bitnomial schedule of 2026-01: highest of 1 accepting DCO)"


def test_every_door_says_why(tmp_path, capsys):
    """CLI JSON and table, HTTP (the decision and its explanation) and ``dacp explain`` all carry the words."""
    import json
    import shutil

    from fastapi.testclient import TestClient

    from rules.cli.run import main
    from rules.http.app import create_app
    from tests.http.test_service import BTC, CONFIG, NO_APPROVALS, auth
    from rules.settings import Settings
    from tests.support import ROOT

    pol = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", pol, ignore=shutil.ignore_patterns("tests"))
    q = tmp_path / "q.json"
    q.write_text(json.dumps(BTC))
    base = ["--policies", str(pol), "--log", str(tmp_path / "log.sqlite")]
    assert main(["evaluate", *base, str(q), "--no-log"]) == 0
    assert json.loads(capsys.readouterr().out)["haircut"]["why"] == WHY_BTC
    assert main(["evaluate", *base, str(q), "--no-log", "--format", "table"]) == 0
    assert WHY_BTC in capsys.readouterr().out
    settings = Settings(policies=pol, log=tmp_path / "http.sqlite", sections=NO_APPROVALS)
    with TestClient(create_app(settings, CONFIG)) as c:
        d = c.post("/v1/eligibility", json=BTC, headers=auth("clearing")).json()
        assert d["haircut"]["why"] == WHY_BTC
        body = c.get(f"/v1/decisions/{d['decision_id']}", headers=auth("auditor")).json()
        assert f"haircut decided by: {WHY_BTC}" in body["explanation"]


def test_a_bundle_in_the_language_before_issue_16_decides_as_it_did():
    """Stored bundles (decision logs) replay as they decided: sources of no kind and ``floor`` keep their
    meaning and labels (decided_by haircut.btc.floor), and static analysis names them for a new bundle."""
    from rules.policy.analysis import analyse
    from tests.support import ROOT

    s = shipped_sources()  # tests/data/haircuts-before-issue-16.yaml: policies/haircuts.yaml as it was then
    s["haircuts.yaml"] = (ROOT / "tests" / "data" / "haircuts-before-issue-16.yaml").read_text()
    bundle = load_bundle_from_sources(s)
    d = decide_reference(bundle, parse_query(README_QUERY))
    assert (d["haircut"]["total"], d["haircut"]["decided_by"]) == ("0.2", "haircut.btc.floor")
    assert [c["kind"] for c in d["haircut"]["components"][:2]] == ["source", "floor"]
    check_cases(bundle, [Case(README_QUERY, parse_query(README_QUERY))])
    assert {f.check for f in analyse(bundle)} == {"legacy-language"}
