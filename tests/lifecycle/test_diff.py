"""dacp diff: rule-level differences between bundles and the impact of a change on a portfolio."""

from __future__ import annotations

import json
import shutil
from decimal import Decimal
from pathlib import Path

import pytest

from rules.cli.run import main
from rules.engine.decide import Engine
from rules.audit.log import DecisionLog
from rules.lifecycle.diff import diff_bundles
from rules.lifecycle.portfolio_impact import portfolio_impact, read_portfolio
from rules.errors import InputError
from rules.policy.loader import load_bundle
from tests.support import ROOT

POLICIES = ROOT / "policies"
EXAMPLES = ROOT / "examples" / "queries"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DACP_CONFIG", raising=False)
    monkeypatch.setenv("DACP_POLICIES", str(POLICIES))
    monkeypatch.setenv("DACP_LOG", str(tmp_path / "log.sqlite"))
    return tmp_path


def changed_bundle(tmp_path: Path) -> Path:
    """The shipped bundle with: BTC stricter_own floor 20% -> 30%, the Bitnomial ETH source 20% -> 28%, the BTC account cap
    lowered, the confirmations criterion removed, a new limit added, a participant's admission ended."""
    new = tmp_path / "new"
    shutil.copytree(POLICIES, new, ignore=shutil.ignore_patterns("tests", "approvals"))
    hc = new / "haircuts.yaml"
    hc.write_text(hc.read_text().replace("floor: 0.20", "floor: 0.30").replace("        haircut: 0.20\n", "        haircut: 0.28\n"))
    lim = new / "limits.yaml"
    lim.write_text(lim.read_text().replace("max_value_usd: 100000000", "max_value_usd: 50000000") + """
  - id: limit.usdc-share
    description: USDC may make up at most 90% of an account's collateral value.
    rationale: Test limit.
    scope: asset
    applies_to: {assets: [USDC]}
    max_share: 0.90
    min_total_usd: 1000000
""")
    el = new / "eligibility.yaml"
    text = el.read_text()
    start = text.index("  - id: custody.btc-confirmations")
    end = text.index("  - id: custody.ethereum-finalized")
    el.write_text(text[:start] + text[end:])
    pr = new / "programme.yaml"
    pr.write_text(pr.read_text().replace("    admitted_from: 2026-01-15\n", "    admitted_from: 2026-01-15\n    admitted_to: 2027-01-01\n"))
    return new


def test_rule_level_differences_in_plain_words_with_file_and_line(tmp_path):
    old, new = load_bundle(POLICIES), load_bundle(changed_bundle(tmp_path))
    changes = {c.item.key: c for c in diff_bundles(old, new)}
    btc = changes["haircut.btc"]
    assert btc.kind == "changed" and ("stricter_own", "20%", "30%") in btc.fields
    assert str(btc.item.src) == "haircuts.yaml:11"
    assert ("source haircut.eth.bitnomial", "20% (dco Bitnomial: Bitnomial DCO collateral schedule of 2026-01-02)",
            "28% (dco Bitnomial: Bitnomial DCO collateral schedule of 2026-01-02)") in changes["haircut.eth"].fields
    assert ("max value", "100,000,000.00 USD", "50,000,000.00 USD") in changes["limit.btc-fcm-cap"].fields
    assert changes["custody.btc-confirmations"].kind == "removed"
    assert str(changes["custody.btc-confirmations"].item.src).startswith("eligibility.yaml:")
    added = changes["limit.usdc-share"]
    assert added.kind == "added" and "max share 90%" in added.describe()
    assert ("admitted", "2026-01-15 .. open", "2026-01-15 .. 2027-01-01") in changes["participant FCM-BRAVO"].fields
    assert "haircut.usdc" not in changes and "limit.btc-share" not in changes


def test_the_same_bundle_has_no_differences(env, capsys):
    code, out, _ = run(capsys, "diff", str(POLICIES), str(POLICIES), "--exit-code")
    assert code == 0 and "the two bundles are the same" in out


def test_cli_table_json_and_exit_code(env, capsys):
    new = changed_bundle(env)
    code, out, _ = run(capsys, "diff", str(POLICIES), str(new))
    assert code == 0
    assert "CHANGED  haircut.btc  [haircut schedule, haircuts.yaml:11]" in out and "stricter_own: 20% -> 30%" in out
    assert "REMOVED  custody.btc-confirmations" in out and "ADDED    limit.usdc-share" in out
    code, out, _ = run(capsys, "diff", str(POLICIES), str(new), "--json", "--exit-code")
    assert code == 1
    doc = json.loads(out)
    btc = next(c for c in doc["changes"] if c["id"] == "haircut.btc")
    assert btc["policy"] == {"file": "haircuts.yaml", "line": 11}
    assert {"field": "stricter_own", "old": "20%", "new": "30%"} in btc["fields"]


def test_a_stored_bundle_hash_from_the_decision_log(env, capsys):
    new = changed_bundle(env)
    old = load_bundle(POLICIES)
    with DecisionLog(env / "log.sqlite") as log:
        log.store_bundle(old)
    code, out, err = run(capsys, "diff", old.hash, str(new))
    assert code == 0, err
    assert "stored bundle" in out and "stricter_own: 20% -> 30%" in out
    code, _, err = run(capsys, "diff", "ab" * 32, str(new))
    assert code == 5 and "is not stored" in err
    code, _, err = run(capsys, "diff", "nothing-here", str(new))
    assert code == 3 and "neither a policy directory nor a bundle sha256" in err


def portfolio_file(path: Path) -> Path:
    """Two accounts: ACC-1 holds BTC and USDC with a margin requirement; ACC-2 holds ETH, no requirement."""
    btc = json.loads((EXAMPLES / "btc-eligible.json").read_text())
    usdc = json.loads((EXAMPLES / "usdc-eligible.json").read_text())
    eth = json.loads((EXAMPLES / "eth-eligible.json").read_text())
    btc.update(account="ACC-1", margin_requirement_usd="1850000.00")
    usdc.update(account="ACC-1")
    eth.update(account="ACC-2")
    for q in (btc, usdc, eth):
        q.pop("id", None)
    path.write_text("\n".join(json.dumps(q) for q in (btc, usdc, eth)) + "\n")
    return path


def test_portfolio_impact_per_holding_asset_and_account(env):
    new = load_bundle(changed_bundle(env))
    old = load_bundle(POLICIES)
    holdings = read_portfolio(portfolio_file(env / "p.jsonl").read_text(), "p.jsonl")
    imp = portfolio_impact(Engine.for_bundle(old, "python"), Engine.for_bundle(new, "python"), holdings)
    by_asset = {h.asset: h for h in imp.holdings}
    btc, usdc, eth = by_asset["BTC"], by_asset["USDC"], by_asset["ETH"]
    assert btc.changes == ["haircut", "collateral_value_usd"] and btc.before["haircut"] == "0.2"
    assert btc.after["haircut"] == "0.3"
    q = holdings[0].query
    assert Decimal(btc.after["collateral_value_usd"]) == (q.quantity * q.price_usd * Decimal("0.7")).quantize(Decimal("0.01"))
    assert usdc.changes == []
    assert eth.changes == ["haircut", "collateral_value_usd"]  # the 28% source now decides over the 25% stricter own
    acc1 = imp.per_account["ACC-1"]
    assert acc1.requirement == Decimal("1850000.00")
    assert acc1.before == Decimal(btc.before["collateral_value_usd"]) + Decimal(usdc.before["collateral_value_usd"])
    assert acc1.after < acc1.requirement <= acc1.before and acc1.falls_into_deficit
    assert acc1.deficit_after == acc1.requirement - acc1.after
    acc2 = imp.per_account["ACC-2"]  # no requirement: the deficit is against the value before
    assert acc2.requirement is None and acc2.deficit_after == acc2.before - acc2.after > 0 and acc2.falls_into_deficit
    assert imp.per_asset["USDC"].before == imp.per_asset["USDC"].after
    assert sorted(imp.into_deficit) == ["ACC-1", "ACC-2"]


def test_cli_portfolio_table_and_json(env, capsys):
    new = changed_bundle(env)
    p = portfolio_file(env / "p.jsonl")
    code, out, err = run(capsys, "diff", str(POLICIES), str(new), "--portfolio", str(p), "--progress")
    assert code == 0, err
    assert "portfolio: 3 holding(s), 2 affected by the change" in out
    assert "per asset" in out and "per account" in out and "FALLS INTO DEFICIT" in out
    assert "2 account(s) would fall into deficit: ACC-1, ACC-2" in out
    assert "comparing" in err  # the progress bar
    code, out, _ = run(capsys, "diff", str(POLICIES), str(new), "--portfolio", str(p), "--json")
    doc = json.loads(out)["portfolio"]
    assert doc["holdings_changed"] == 2 and doc["accounts_falling_into_deficit"] == ["ACC-1", "ACC-2"]
    assert doc["per_account"]["ACC-1"]["deficit_measured_against"] == "margin requirement"
    assert doc["per_account"]["ACC-2"]["deficit_measured_against"] == "value before"


def test_a_bad_portfolio_is_a_clear_error_and_nothing_is_compared(env, capsys):
    p = portfolio_file(env / "p.jsonl")
    lines = p.read_text().splitlines()
    bad = json.loads(lines[1])
    bad["margin_requirement_usd"] = 5
    p.write_text("\n".join([lines[0], json.dumps(bad), "{not json", lines[2]]) + "\n")
    code, out, err = run(capsys, "diff", str(POLICIES), str(POLICIES), "--portfolio", str(p))
    assert code == 3 and out == ""
    assert "2 invalid portfolio line(s)" in err and "p.jsonl:2" in err and "p.jsonl:3" in err
    code, _, err = run(capsys, "diff", str(POLICIES), "--portfolio", "missing.jsonl")
    assert code == 3 and "no such file" in err


def test_conflicting_requirements_for_one_account_are_refused():
    a = json.loads((EXAMPLES / "btc-eligible.json").read_text())
    a["margin_requirement_usd"] = "1"
    b = dict(a, margin_requirement_usd="2")
    with pytest.raises(InputError, match="differs from"):
        read_portfolio(json.dumps(a) + "\n" + json.dumps(b), "p")


def test_ledger_is_not_available_yet(env, capsys):
    code, out, err = run(capsys, "diff", str(POLICIES), "--ledger")
    assert code == 3 and out == "" and "ledger not available" in err


def test_an_invalid_new_bundle_is_reported_as_a_policy_error(env, capsys):
    new = changed_bundle(env)
    (new / "limits.yaml").write_text((new / "limits.yaml").read_text().replace("max_share: 0.50", "max_share: 1.5"))
    code, out, err = run(capsys, "diff", str(POLICIES), str(new))
    assert code == 2 and out == "" and "limits.yaml:" in err
