"""Issue 16: the policy language says what the letters say - token restrictions by class and fail-closed,
each FCM's own phase clock (Letter 26-05), phases by class, business days (SIFMA calendar).

Each measured point is decided through the CLI, the Python door (``rules.app.Dacp``) and HTTP, on the
shipped bundle or an edited copy of it."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from rules.app import Dacp, comparable
from rules.cli.run import main
from rules.engine.query import parse_query
from rules.errors import PolicyError
from rules.http.app import create_app
from rules.http.auth import Token, hash_token
from rules.http.config import ServiceConfig
from rules.policy.calendar import business_days_between, is_business_day
from rules.policy.loader import load_bundle
from rules.settings import Settings
from tests.support import ROOT

EXAMPLES = ROOT / "examples" / "queries"
TOKEN = "clearing-token-" + "x" * 32
CONFIG = ServiceConfig(tokens=(Token("clearing-1", "clearing", hash_token(TOKEN)),))
PYUSD = """
  - symbol: PYUSD
    name: PayPal USD (Paxos)
    class: payment_stablecoin
    chain: ethereum
    network: 1
    contract: "0x6c3ea9036406852006290770BEdFcAbA0e23A0e8"
    decimals: 6
    issuer: Paxos Trust Company
    restrictions:
      blacklist: isFrozen
"""


def example(name: str, **changes) -> dict:
    q = json.loads((EXAMPLES / name).read_text())
    for k, v in changes.items():
        q[k] = {**q[k], **v} if isinstance(v, dict) else v
    return q


@pytest.fixture
def policies(tmp_path) -> Path:
    d = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", d, ignore=shutil.ignore_patterns("tests", "approvals"))
    return d


def edit(d: Path, file: str, old: str, new: str) -> None:
    p = d / file
    text = p.read_text()
    assert old in text, old
    p.write_text(text.replace(old, new, 1))


def line_of(d: Path, file: str, needle: str) -> int:
    return next(i + 1 for i, line in enumerate((d / file).read_text().splitlines()) if needle in line)


def three_doors(policies: Path, tmp_path: Path, q: dict, capsys) -> dict:
    """The decision of ``q`` from the CLI, the Python door and HTTP: the same answer from each."""
    settings = Settings(policies=policies, log=tmp_path / "log.sqlite", sections={"approvals": {"required": False}})
    py = Dacp(settings, log_enabled=False).evaluate([parse_query(q)])[0].to_json()
    f = tmp_path / "q.json"
    f.write_text(json.dumps(q))
    code = main(["evaluate", "--policies", str(policies), "--no-log", str(f)])
    out, err = capsys.readouterr()
    assert code == 0, err
    cli = json.loads(out)
    with TestClient(create_app(settings, CONFIG)) as c:
        r = c.post("/v1/eligibility", json=q, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    assert comparable(cli) == comparable(py) == comparable(r.json())
    return py


def reason(d: dict, rule: str) -> dict:
    return next(r for r in d["reasons"] if r["rule"] == rule)


# -- 2. token restrictions by class, checked against the adapter's ABI ---------------------------------
def pyusd_bundle(policies: Path) -> Path:
    edit(policies, "assets.yaml", "\n  - symbol: BUIDL", PYUSD + "\n  - symbol: BUIDL")
    return policies


def test_a_second_stablecoin_paused_and_frozen_is_refused(policies, tmp_path, capsys, monkeypatch):
    """Measured: a PYUSD entry with token_paused: true, address_frozen: true came out eligible (the
    checks were scoped to USDC). They apply to the class now, whatever its tokens."""
    monkeypatch.setenv("DACP_APPROVALS_REQUIRED", "false")
    pyusd_bundle(policies)
    base = example("usdc-eligible.json", asset="PYUSD",
                   evidence={"stablecoin": {"issuer": "Paxos Trust Company", "reserve_attestation_date": "2026-10-31"}})
    assert three_doors(policies, tmp_path, base, capsys)["eligible"] is True
    d = three_doors(policies, tmp_path, example("usdc-eligible.json", asset="PYUSD", evidence=base["evidence"],
                                                custody={"token_paused": True, "address_frozen": True}), capsys)
    assert d["eligible"] is False
    assert {"custody.token-not-paused", "custody.address-not-frozen"} <= set(d["failed_rules"])


def test_pyusd_takes_its_class_restrictions_and_its_own_override(policies):
    b = load_bundle(pyusd_bundle(policies))
    assert dict(b.assets["PYUSD"].restrictions) == {"pause": "paused", "blacklist": "isFrozen"}
    assert dict(b.assets["USDC"].restrictions) == {"pause": "paused", "blacklist": "isBlacklisted"}
    assert b.assets["BUIDL"].restrictions == {} and "allowlist" in b.assets["BUIDL"].off_chain


def test_a_function_the_adapter_does_not_read_is_a_validation_error_at_its_line(policies):
    pyusd_bundle(policies)
    edit(policies, "assets.yaml", "blacklist: isFrozen", "blacklist: isBanned")
    with pytest.raises(PolicyError) as exc:
        load_bundle(policies)
    (p,) = exc.value.problems
    assert (p.file, p.line) == ("assets.yaml", line_of(policies, "assets.yaml", "isBanned"))
    assert "'isBanned' is not a view function the Ethereum adapter reads" in p.message and "isFrozen" in p.message


def test_a_view_of_the_wrong_shape_is_a_validation_error(policies):
    edit(policies, "assets.yaml", "    pause: paused", "    pause: isFrozen")
    with pytest.raises(PolicyError) as exc:
        load_bundle(policies)
    (p,) = exc.value.problems
    assert p.line == line_of(policies, "assets.yaml", "pause: isFrozen")
    assert "isFrozen() takes address; a pause view takes nothing" in p.message


def test_every_fund_token_must_declare_its_allowlist(policies):
    edit(policies, "assets.yaml", "  tokenized_treasury_fund:\n    allowlist:", "  tokenized_treasury_fund:\n    pause:")
    with pytest.raises(PolicyError) as exc:
        load_bundle(policies)
    (p,) = exc.value.problems
    assert p.line == line_of(policies, "assets.yaml", "- symbol: OUSG")
    assert "OUSG (tokenized_treasury_fund) declares no allowlist restriction" in p.message


def test_a_stablecoin_without_blacklist_is_refused_at_its_entry(policies):
    edit(policies, "assets.yaml", "    blacklist: isBlacklisted\n", "")
    with pytest.raises(PolicyError) as exc:
        load_bundle(policies)
    (p,) = exc.value.problems
    assert p.line == line_of(policies, "assets.yaml", "- symbol: USDC")
    assert "USDC (payment_stablecoin) declares no blacklist restriction" in p.message


# -- 3 and 4. each FCM's phase clock; phases by class ---------------------------------------------------
def test_an_fcm_in_its_own_first_three_months_is_refused_a_fund(tmp_path, capsys, monkeypatch):
    """Measured: FCM-BRAVO, admitted (and accepting) from 2026-01-15, got BUIDL on 2026-03-09 - the
    programme's three months, not its own. Its phase 1 runs to 2026-04-15, and the trace says so."""
    monkeypatch.setenv("DACP_APPROVALS_REQUIRED", "false")
    pol = ROOT / "policies"
    q = example("buidl-eligible.json", participant="FCM-BRAVO", as_of="2026-03-09T14:00:00Z",
                evidence={"price_updated_at": "2026-03-09T13:30:00Z",
                          "fund": {"nav_date": "2026-03-06", "nav_usd": "1", "holder_allowlisted": True, "redemption_days": 1,
                                   "wam_days": 45}})
    d = three_doors(pol, tmp_path, q, capsys)
    assert d["eligible"] is False and d["failed_rules"] == ["programme.asset-in-phase"]
    phase = reason(d, "phase.initial")
    assert phase["outcome"] == "applied"
    assert phase["threshold"] == {"from": "2026-01-15", "to": "2026-04-15", "participant": "FCM-BRAVO"}
    alpha = three_doors(pol, tmp_path, {**q, "participant": "FCM-ALPHA"}, capsys)
    assert alpha["eligible"] is True and reason(alpha, "phase.expanded")["outcome"] == "applied"
    assert reason(alpha, "phase.expanded")["threshold"] == {"from": "2026-03-08", "to": None}
    later = three_doors(pol, tmp_path, {**q, "as_of": "2026-04-15T14:00:00Z"}, capsys)
    assert reason(later, "phase.expanded")["threshold"] == {"from": "2026-04-15", "to": None, "participant": "FCM-BRAVO"}


def test_phase_one_is_btc_eth_and_the_payment_stablecoin_class(policies, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DACP_APPROVALS_REQUIRED", "false")
    b = load_bundle(policies)
    first = b.phases[0]
    assert first.eligible.assets == {"BTC", "ETH"} and first.eligible.classes == {"payment_stablecoin"}
    pyusd_bundle(policies)
    q = example("usdc-eligible.json", asset="PYUSD", as_of="2026-01-20T14:00:00Z",
                evidence={"price_updated_at": "2026-01-20T13:55:00Z",
                          "stablecoin": {"issuer": "Paxos Trust Company", "reserve_attestation_date": "2025-12-31"}})
    d = three_doors(policies, tmp_path, q, capsys)
    assert d["eligible"] is True and reason(d, "phase.initial")["outcome"] == "applied"


def test_a_national_trust_bank_is_a_permitted_issuer(policies):
    b = load_bundle(policies)
    (c,) = [c for c in b.criteria if c.id == "stablecoin.permitted-issuer"]
    assert "Anchorage Digital Bank N.A." in c.check.value


@pytest.mark.parametrize("field, value, words", [
    ("accepting_from", "2026-01-10", "before the participant is admitted (2026-01-15)"),
])
def test_accepting_before_admission_is_refused(policies, field, value, words):
    edit(policies, "programme.yaml", "    accepting_from: 2026-01-15", f"    {field}: {value}")
    with pytest.raises(PolicyError) as exc:
        load_bundle(policies)
    (p,) = exc.value.problems
    assert p.line == line_of(policies, "programme.yaml", f"{field}: {value}") and words in p.message


# -- 5. business days ------------------------------------------------------------------------------------
def test_sifma_business_days():
    assert not is_business_day("XSIF", date(2026, 5, 25))  # Memorial Day
    assert is_business_day("XSIF", date(2026, 5, 26))
    assert business_days_between("XSIF", date(2026, 5, 22), date(2026, 5, 26)) == 1
    assert business_days_between("XSIF", date(2026, 5, 26), date(2026, 5, 22)) == -1
    assert business_days_between("XSIF", date(2026, 11, 20), date(2026, 11, 24)) == 2
    assert business_days_between("XSIF", date(2026, 11, 25), date(2026, 11, 27)) == 1  # Thanksgiving


def test_nav_after_memorial_day_weekend_counts_in_business_days(tmp_path, capsys, monkeypatch):
    """Measured: on Tuesday 2026-05-26 Friday's NAV was 4 calendar days old > 3 and the fund was refused.
    It is 1 business day old (SIFMA: Memorial Day closed), and the fund is accepted."""
    monkeypatch.setenv("DACP_APPROVALS_REQUIRED", "false")
    q = example("buidl-eligible.json", as_of="2026-05-26T14:00:00Z",
                evidence={"price_updated_at": "2026-05-26T13:30:00Z",
                          "fund": {"nav_date": "2026-05-22", "nav_usd": "1", "holder_allowlisted": True, "redemption_days": 1,
                                   "wam_days": 45}})
    d = three_doors(ROOT / "policies", tmp_path, q, capsys)
    assert d["eligible"] is True, d["failed_rules"]
    assert reason(d, "fund.nav-fresh")["observed"] == 1
    q["as_of"], q["evidence"]["price_updated_at"] = "2026-05-27T14:00:00Z", "2026-05-27T13:30:00Z"
    d = three_doors(ROOT / "policies", tmp_path, q, capsys)
    assert d["eligible"] is False and d["failed_rules"] == ["fund.nav-fresh"]
    assert reason(d, "fund.nav-fresh")["observed"] == 2


def test_the_programme_names_its_calendar(policies):
    assert load_bundle(policies).calendar == "XSIF"
    edit(policies, "programme.yaml", "business_days: XSIF", "business_days: TARGET2")
    with pytest.raises(PolicyError) as exc:
        load_bundle(policies)
    assert exc.value.problems[0].line == line_of(policies, "programme.yaml", "business_days: TARGET2")
