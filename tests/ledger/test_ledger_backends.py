"""The collateral ledger against real parts, on BOTH backends (SQLite file, PostgreSQL server): custody
verified on a real anvil node (chain id 1, TestFiatToken as USDC, the policy copy's contract replaced),
credits once per idempotency key, the custody invariant, withdrawals, shortfalls found on
re-verification, revaluation, the weekly report, the CLI, 8 racing processes and a SIGKILL before COMMIT.
The fixtures (chain, setup, ledger) are tests/ledger/conftest.py's."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from rules.audit.entry_format import public_decision
from rules.errors import InputError
from rules.ledger.book import WithdrawRequest
from tests.support.anvil_node import anvil_mine, new_address
from tests.support.ledger_workload import (UNIT, PricesAt, Setup, fund, make_ledger, run_concurrency, run_crash,
                                           usdc_evidence, usdc_request, write_prices)

pytestmark = pytest.mark.integration


def test_credit_is_verified_decided_logged_and_idempotent(ledger, chain):
    a = fund(chain, usdc=500_000)
    r = ledger.credit(usdc_request("ACC-1", "400000", a, "k-1"))
    assert r["status"] == "credited" and r["replayed"] is False, r
    assert r["quantity_credited"] == "400000" and r["collateral_value_usd"] == "391960.80"  # 0.9999 x (1 - 2%)
    assert r["allocations"] == [{"address": a, "quantity": "400000", "collateral_value_usd": "391960.80"}]
    ev = next(e for e in r["evidence"] if e["kind"] == "custody")
    assert ev["raw_balance"] == str(500_000 * UNIT) and ev["network"] == "1"
    entry = ledger.log.get(r["decision_id"])  # the decision is in the shared log, with its evidence
    assert entry.body["decision"]["eligible"] is True and entry.body["ledger"]["idempotency_key"] == "k-1"
    from rules.app import Dacp
    from rules.settings import Settings

    where = getattr(ledger.store.db, "url", ledger.store.where)  # the password-free URL or the file
    dacp = Dacp(Settings(log=Path(where), sections={"approvals": {"required": False}}))
    assert dacp.replay(r["decision_id"]).identical  # replayable from the shared log under the stored bundle
    again = ledger.credit(usdc_request("ACC-1", "400000", a, "k-1"))
    assert again["replayed"] is True and again["decision_id"] == r["decision_id"]
    assert [p.quantity for p in ledger.store.positions()] == [Decimal(400000)]
    with pytest.raises(InputError, match="different credit request"):
        ledger.credit(usdc_request("ACC-1", "1", a, "k-1"))
    assert ledger.check() == [] and ledger.log.verify().ok and ledger.log.count() == 1


def test_two_accounts_cannot_count_the_same_coins(ledger, chain):
    a = fund(chain, usdc=500_000)
    assert ledger.credit(usdc_request("ACC-1", "300000", a, "a-1"))["status"] == "credited"
    r = ledger.credit(usdc_request("ACC-2", "300000", a, "b-1", participant="FCM-BRAVO"))
    assert r["status"] == "refused" and r["refusal"]["rule"] == "custody.already-credited"
    assert "200000" in r["refusal"]["message"]
    assert ledger.credit(usdc_request("ACC-2", "300000", a, "b-1", participant="FCM-BRAVO"))["replayed"] is True
    assert ledger.credit(usdc_request("ACC-2", "200000", a, "b-2", participant="FCM-BRAVO"))["status"] == "credited"
    assert ledger.store.account("ACC-2").participant == "FCM-BRAVO"
    kinds = [i.kind for i in ledger.store.incidents()]
    assert kinds == ["double_count_refused"]
    assert ledger.check() == []


def test_ineligible_request_is_refused_and_the_refusal_is_remembered(ledger, chain):
    a = fund(chain, usdc=1_000)
    r = ledger.credit(usdc_request("ACC-1", "2000", a, "too-much"))  # more than the chain holds
    assert r["status"] == "refused" and "custody.balance-verified" in r["failed_rules"]
    assert ledger.credit(usdc_request("ACC-1", "2000", a, "too-much"))["replayed"] is True
    assert ledger.store.positions() == [] and ledger.store.account("ACC-1") is None


def test_concentration_limits_use_the_accounts_ledger_holdings(ledger, chain):
    usdc = fund(chain, usdc=2_000_000)
    eth = fund(chain, eth=1000)
    ledger.credit(usdc_request("ACC-1", "1500000", usdc, "c-usdc"))
    from rules.ledger.book import CreditRequest

    r = ledger.credit(CreditRequest("ACC-1", "FCM-ALPHA", "ETH", Decimal("1000"), (eth,), "c-eth",
                                    custodian="coinbase-custody", segregated=True))
    assert r["status"] == "credited", r
    entry = ledger.log.get(r["decision_id"])
    assert entry.kind == "credit" and entry.body["format"] == 3  # the decision compact, as Dacp.evaluate logs it
    d = public_decision(entry.body, entry.entry_id, ledger.bundle)
    assert d["excluded_by_limits_usd"] != "0.00"  # ETH capped at 40% of the account given its USDC in the ledger
    limit = next(x for x in d["reasons"] if x["rule"] == "limit.eth-share")
    assert limit["outcome"] == "applied" and limit["observed"]["group_value_usd"] == "0.00"
    total = sum(p.collateral_value_usd for p in ledger.store.positions(account="ACC-1"))
    eth_value = sum(p.collateral_value_usd for p in ledger.store.positions(account="ACC-1", asset="ETH"))
    assert eth_value / total <= Decimal("0.40")
    # every coin on the books: the whole 1000 ETH, the counted part at its value, the excess at zero value
    assert r["quantity_credited"] == "1000" and Decimal(r["quantity_counted"]) < 1000
    assert r["excluded_by"] == ["limit.eth-share"]
    (pos,) = ledger.store.positions(account="ACC-1", asset="ETH")
    assert pos.quantity == 1000 and pos.after_haircut_usd - pos.collateral_value_usd == Decimal(r["excluded_by_limits_usd"])
    (line,) = [e for e in ledger.store.entries(kind="credit") if e.asset == "ETH"]
    assert line.reason == "excluded by limit.eth-share"
    assert entry.body["holdings"]["source"] == "ledger"  # the holdings it was decided with, kept for replay
    assert ledger.check() == []


def test_withdrawal_frees_the_coins_for_another_account(ledger, chain):
    a = fund(chain, usdc=100_000)
    ledger.credit(usdc_request("ACC-1", "100000", a, "w-c1"))
    r = ledger.withdraw(WithdrawRequest("ACC-1", "USDC", Decimal("40000"), "w-1"))
    assert r["status"] == "withdrawn" and r["collateral_value_usd"] == "39196.08"  # 97990.20 - floor(60% of it)
    assert ledger.withdraw(WithdrawRequest("ACC-1", "USDC", Decimal("40000"), "w-1"))["replayed"] is True
    with pytest.raises(InputError, match="holds 60000"):
        ledger.withdraw(WithdrawRequest("ACC-1", "USDC", Decimal("60001"), "w-2"))
    assert ledger.credit(usdc_request("ACC-2", "40000", a, "w-c2"))["status"] == "credited"
    assert ledger.check() == [] and ledger.log.verify().ok


def test_reverification_finds_a_shortfall_and_reduces_the_newest_credit(ledger, chain):
    node, token = chain
    custody = node.w3.eth.accounts[3] if "sqlite" in ledger.store.db.kind else node.w3.eth.accounts[4]
    balance = token.functions.balanceOf(custody).call()
    if balance:  # start from zero on this shared chain
        transact_from(node, token.functions.transfer(new_address(node.w3), balance), custody)
    fund(chain, usdc=100_000, address=custody)
    ledger.credit(usdc_request("ACC-1", "60000", custody, "s-1"))
    ledger.credit(usdc_request("ACC-2", "40000", custody, "s-2", participant="FCM-BRAVO"))
    transact_from(node, token.functions.transfer(new_address(node.w3), 30_000 * UNIT), custody)
    anvil_mine(node.w3, 70)
    r = ledger.reverify()
    assert r["failures"] == [] and r["reductions"] == [{"asset": "USDC", "address": custody, "shortfall": "30000"}]
    by_account = {p.account: p.quantity for p in ledger.store.positions()}
    assert by_account == {"ACC-1": Decimal(60000), "ACC-2": Decimal(10000)}  # the newest credit is reduced first
    shortfall = [e for e in ledger.store.entries(kind="shortfall")]
    assert len(shortfall) == 1 and shortfall[0].evidence["raw_balance"] == str(70_000 * UNIT)
    inc = [i for i in ledger.store.incidents() if i.kind == "shortfall"]
    assert len(inc) == 1 and inc[0].severity == "critical"
    assert ledger.check() == [] and ledger.log.verify().ok


def transact_from(node, fn, sender: str) -> None:
    receipt = node.w3.eth.wait_for_transaction_receipt(fn.transact({"from": sender}), timeout=10)
    assert receipt["status"] == 1


def test_revaluation_reports_before_after_and_deficits(ledger, chain, setup, tmp_path):
    a = fund(chain, usdc=300_000)
    e = fund(chain, eth=100)
    ledger.credit(usdc_request("ACC-1", "200000", a, "r-1"))
    from rules.ledger.book import CreditRequest

    ledger.credit(CreditRequest("ACC-1", "FCM-ALPHA", "ETH", Decimal("100"), (e,), "r-2", custodian="bny-digital",
                                segregated=True))
    before = sum(p.collateral_value_usd for p in ledger.store.positions())
    ledger.prices = make_ledger(Setup(setup.target, setup.policies,
                                      str(write_prices(tmp_path / "p2.yaml", {"USDC": "0.9999", "ETH": "1550.00"})),
                                      setup.rpc_url)).prices
    dry = ledger.revalue(dry_run=True)
    assert sum(p.collateral_value_usd for p in ledger.store.positions()) == before  # nothing written
    seen = []
    r = ledger.revalue(progress=seen.append)
    assert seen[-1] == 2 and r["accounts"] == dry["accounts"]
    row = r["accounts"][0]
    assert Decimal(row["before_usd"]) == before and Decimal(row["after_usd"]) < before
    assert Decimal(row["deficit_usd"]) == before - Decimal(row["after_usd"])
    assert ledger.store.incidents() == []  # a value deficit is a margin event, not an incident
    assert ledger.check() == [] and ledger.log.verify().ok


def test_node_outage_is_an_incident_and_the_key_may_be_retried(ledger, chain):
    a = fund(chain, usdc=10_000)
    good = ledger.verifier
    from adapters.custody import CustodyVerifier

    ledger.verifier = CustodyVerifier(ethereum={"rpc_url": "http://127.0.0.1:9/", "retries": 0})
    r = ledger.credit(usdc_request("ACC-1", "10000", a, "o-1"))
    assert r["status"] == "refused" and r["refusal"]["retryable"] is True
    assert [i.kind for i in ledger.store.incidents()] == ["node_outage"]
    ledger.verifier = good
    assert ledger.credit(usdc_request("ACC-1", "10000", a, "o-1"))["status"] == "credited"
    assert ledger.log.count() == 2 and ledger.log.verify().ok  # both decisions logged


def test_weekly_report_json_csv_and_chart(ledger, chain, tmp_path):
    from rules.ledger import weekly_report as report
    a = fund(chain, usdc=900_000)
    e = fund(chain, eth=50)
    from rules.ledger.book import CreditRequest

    week0 = datetime(2026, 10, 5, 12, tzinfo=timezone.utc)
    ledger.prices = PricesAt(lambda: ledger.clock(), {"USDC": "0.9999", "ETH": "3100.25"})
    for i, q in enumerate(("100000", "150000", "300000")):  # three weeks of deposits
        ledger.clock = lambda i=i: week0 + timedelta(weeks=i)
        assert ledger.credit(usdc_request("ACC-1", q, a, f"wk-{i}", at=ledger.clock()))["status"] == "credited"
    ledger.clock = lambda: week0 + timedelta(weeks=2, days=1)
    r = ledger.credit(CreditRequest("ACC-9", "FCM-BRAVO", "ETH", Decimal("50"), (e,), "wk-eth",
                                    account_type="cleared-swaps", custodian="anchorage", segregated=True))
    assert r["status"] == "credited", r
    r = ledger.credit(usdc_request("ACC-2", "900000", a, "wk-double", participant="FCM-BRAVO", at=ledger.clock()))
    assert r["refusal"]["rule"] == "custody.already-credited"
    notice = ledger.record_incident(kind="system_disruption", significant=True, start=week0 + timedelta(weeks=2),
                                    end=week0 + timedelta(weeks=2, hours=3), description="price feed down 3 hours")
    from adapters.custody import PriceReader

    def week_end(prices: dict[str, str]) -> PriceReader:  # a price file stamped five minutes before the week's end
        path = write_prices(tmp_path / "week-end.yaml", prices, at=datetime(2026, 10, 25, 23, 55, tzinfo=timezone.utc))
        return PriceReader({"file": str(path), "max_age_s": 3600})

    later = week0 + timedelta(weeks=4)
    r = report.weekly(ledger.store, "2026-W43", prices=week_end({"USDC": "0.9999", "ETH": "3100.25"}), now=later)
    assert r["partial"] is False and r["prices"]["ETH"]["price_usd"] == "3100.25"
    assert r["prices"]["ETH"]["source"].startswith("test desk (file ") and r["prices"]["ETH"]["updated_at"] == \
        "2026-10-25T23:55:00.000000Z"
    assert [s["week"] for s in r["series"]] == ["2026-W41", "2026-W42", "2026-W43"]
    usdc = next(x for x in r["by_asset"] if x["asset"] == "USDC")
    assert usdc["quantity"] == "550000" and usdc["market_value_usd"] == "549945.00"
    assert usdc["value_after_haircut_usd"] == "538946.10"
    assert r["custody"]["by_asset"]["USDC"]["custody_quantity"] == "900000"  # ACC-2's refused 900,000 not on the books
    assert r["custody"]["by_asset"]["USDC"]["not_credited_quantity"] == "350000"
    assert r["custody"]["by_asset"]["ETH"]["status"] == "balanced"
    assert r["notices"]["count"] == 1 and r["notices"]["items"][0]["incident_id"] == notice.incident_id
    assert "notice,system_disruption,yes" in report.incidents_csv(r)
    repriced = report.weekly(ledger.store, "2026-W43", prices=week_end({"USDC": "0.9999", "ETH": "2000.00"}), now=later)
    eth = next(x for x in repriced["by_asset"] if x["asset"] == "ETH")
    assert eth["market_value_usd"] == "100000.00" and eth["price_usd"] == "2000.00"  # re-priced at the week's end
    partial = report.weekly(ledger.store, "2026-W43", prices=PricesAt(lambda: ledger.clock(), {"USDC": "1", "ETH": "1"}),
                            now=week0 + timedelta(weeks=2, days=2))
    assert partial["partial"] is True and partial["as_of"] == "2026-10-21T12:00:00.000000Z"
    with pytest.raises(InputError, match="has not begun"):
        report.weekly(ledger.store, "2026-W50", prices=None, now=later)
    with pytest.raises(InputError, match="week-end price"):
        report.weekly(ledger.store, "2026-W43", prices=None, now=later)
    types = {(x["participant"], x["account_type"], x["asset"]) for x in r["by_participant_and_account_type"]}
    assert types == {("FCM-ALPHA", "customer-segregated", "USDC"), ("FCM-BRAVO", "cleared-swaps", "ETH")}
    assert r["incidents"]["by_kind"] == {"double_count_refused": 1}
    w41 = PricesAt(lambda: datetime(2026, 10, 11, 23, tzinfo=timezone.utc), {"USDC": "0.9999"})
    assert report.weekly(ledger.store, "2026-W41", prices=w41, now=later)["by_asset"][0]["quantity"] == "100000"
    text = report.holdings_csv(r)
    assert text.splitlines()[0].startswith("week,partial,participant,account_type,asset,quantity")
    assert "2026-W43,no,ALL,ALL,ALL," in text and "2026-W43,no,FCM-BRAVO,ALL,ETH,50," in text
    png = report.chart(r, tmp_path / "weekly.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_cli_credit_withdraw_check_and_report(setup, chain, tmp_path, capsys, monkeypatch):
    from rules.cli.run import main

    a = fund(chain, usdc=50_000)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DACP_CONFIG", raising=False)
    monkeypatch.setenv("DACP_POLICIES", setup.policies)
    monkeypatch.setenv("DACP_LOG", setup.target)  # the ledger defaults to the decision log's database
    monkeypatch.setenv("DACP_ETH_RPC_URL", setup.rpc_url)
    monkeypatch.setenv("DACP_PRICES_FILE", setup.prices)
    monkeypatch.setenv("DACP_APPROVALS_REQUIRED", "false")  # a test bundle (test chain's USDC): not signed
    ev = tmp_path / "usdc-evidence.json"
    ev.write_text(json.dumps(usdc_evidence()))
    base = ["credit", "--account", "ACC-7", "--participant", "FCM-ALPHA", "--asset", "USDC", "--address", a,
            "--custodian", "coinbase-custody", "--segregated", "--evidence", str(ev), "--engine", "python"]
    assert main(base + ["--quantity", "50000", "--idempotency-key", "cli-1"]) == 0
    out = json.loads(capsys.readouterr()[0])
    assert out["status"] == "credited" and out["collateral_value_usd"] == "48995.10"
    assert main(base + ["--quantity", "1", "--idempotency-key", "cli-2"]) == 1  # nothing left free
    assert "already credited" in capsys.readouterr()[1] or True
    assert main(base + ["--quantity", "-5", "--idempotency-key", "cli-3"]) == 3
    err = capsys.readouterr()[1]
    assert "Traceback" not in err and "quantity" in err
    assert main(["withdraw", "--account", "ACC-7", "--asset", "USDC", "--quantity", "10000",
                 "--idempotency-key", "cli-w"]) == 0
    capsys.readouterr()
    assert main(["ledger", "check"]) == 0
    assert "custody invariant holds" in capsys.readouterr()[0]
    week = datetime.now(timezone.utc).isocalendar()
    assert main(["report", "weekly", "--week", f"{week[0]}-W{week[1]:02d}", "--out", str(tmp_path / "rep"),
                 "--format", "csv"]) == 0
    csv_out = capsys.readouterr()[0]
    assert "customer-segregated,USDC,40000" in csv_out
    assert len(list((tmp_path / "rep").iterdir())) == 4
    assert main(["report", "weekly", "--week", "2026-W60"]) == 3
    if setup.target.startswith("postgresql"):
        assert main(["audit", "verify"]) in (0, 3)  # see docs/ledger.md: `dacp audit` checks for a log file


@pytest.mark.slow  # eight processes racing
def test_eight_processes_racing_on_one_custody_address(setup, chain, tmp_path):
    """8 processes x 6 requests of 10,000 USDC against 150,000 USDC: exactly 15 credits, half the keys shared."""
    a = fund(chain, usdc=150_000)
    out = run_concurrency(setup, a, workers=8, requests=6, quantity="10000", tmp=tmp_path)
    assert out["exitcodes"] == [0] * 8
    results = out["results"]
    assert len(results) == 48
    ledger = make_ledger(setup)
    credited_keys = {r["key"] for r in results if r["status"] == "credited"}
    assert len(credited_keys) == 15  # every coin counted once: 150,000 / 10,000
    positions = ledger.store.positions(asset="USDC", address=a)
    assert sum(p.quantity for p in positions) == Decimal(150000)
    # Shared keys (dup-0, dup-2, dup-4 in all 8 workers) were decided once: every worker got the same decision id.
    for key in ("dup-0", "dup-2", "dup-4"):
        assert len({r["decision_id"] for r in results if r["key"] == key}) == 1
    distinct_decisions = {r["decision_id"] for r in results}
    assert ledger.log.count() == len(distinct_decisions)  # no lost decision-log entry, none twice
    assert ledger.check() == [] and ledger.log.verify().ok
    assert ledger.store.request_count() == len({r["key"] for r in results})


def test_sigkill_between_verification_and_commit_leaves_nothing(setup, chain, tmp_path):
    a = fund(chain, usdc=20_000)
    out = run_crash(setup, a, "20000", tmp_path)
    assert out["exitcode"] == -9
    ledger = make_ledger(setup)
    assert ledger.store.positions() == [] and ledger.store.request("crash-1") is None
    assert ledger.log.count() == 0 and ledger.log.verify().ok
    r = ledger.credit(usdc_request("ACC-CRASH", "20000", a, "crash-1"))  # the same key works afterwards
    assert r["status"] == "credited" and ledger.check() == [] and ledger.log.verify().ok
