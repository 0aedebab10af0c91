"""One verifiable record for the ledger (issue 14, points 1 and 6), on BOTH backends with custody verified on
a real anvil node: every movement is a typed, versioned leaf of the log; the ledger's rows are recomputed
from those leaves and every row that differs is named; the journal's rows are append-only; and the measured
attack (triggers dropped, +1,000,000 USD on a position and on its journal entry, which the old check passed)
is found, by ``Ledger.check`` and by ``dacp ledger check``. A credit's decision reads back as any decision
(explain, replay). The fixtures (chain, setup, ledger) are tests/ledger/conftest.py's."""

from __future__ import annotations

import json
import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest

from rules.audit.entry_format import public_decision
from rules.ledger import invariants, journal
from rules.ledger.book import CreditRequest, WithdrawRequest
from rules.ledger.projection import Difference
from rules.ledger.records import JournalEntry
from tests.support.anvil_node import anvil_mine, new_address
from tests.support.ledger_workload import UNIT, Setup, fund, make_ledger, usdc_evidence, usdc_request, write_prices

pytestmark = pytest.mark.integration
MILLION = Decimal(1_000_000)


def credit_withdraw_revalue(ledger, chain, setup: Setup, tmp_path: Path) -> dict:
    usdc, eth = fund(chain, usdc=500_000), fund(chain, eth=100)
    c1 = ledger.credit(usdc_request("ACC-1", "400000", usdc, "p-1"))
    c2 = ledger.credit(CreditRequest("ACC-2", "FCM-BRAVO", "ETH", Decimal("100"), (eth,), "p-2",
                                     account_type="cleared-swaps", custodian="bny-digital", segregated=True))
    w = ledger.withdraw(WithdrawRequest("ACC-1", "USDC", Decimal("100000"), "p-w"))
    prices = write_prices(tmp_path / "later.yaml", {"USDC": "0.9950", "ETH": "1550.00"})
    ledger.prices = make_ledger(Setup(setup.target, setup.policies, str(prices), setup.rpc_url)).prices
    r = ledger.revalue()
    assert c1["status"] == c2["status"] == "credited" and w["status"] == "withdrawn", (c1, c2, w)
    return {"usdc": usdc, "eth": eth, "credit": c1, "revalue": r}


def drop_triggers(db) -> None:
    """What an attacker with the database does first."""
    if db.kind == "sqlite":
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' "
                                  "AND tbl_name = 'ledger_entries'").fetchall():
            db.execute(f"DROP TRIGGER {name}")
    else:
        db.execute("ALTER TABLE ledger_entries DISABLE TRIGGER ALL")


def add_a_million(ledger, account: str, address: str) -> tuple[str, str, str]:
    """+1,000,000 USD on the position and on its credit's journal row (so positions still sum their journal)."""
    db = ledger.store.db
    drop_triggers(db)
    pos = db.execute("SELECT collateral_value_usd FROM ledger_positions WHERE account = ? AND address = ?",
                     (account, address)).fetchone()[0]
    entry_id, value = db.execute("SELECT entry_id, collateral_value_usd FROM ledger_entries WHERE kind = 'credit' "
                                 "AND account = ? AND address = ?", (account, address)).fetchone()
    db.execute("UPDATE ledger_positions SET collateral_value_usd = ? WHERE account = ? AND address = ?",
               (str(Decimal(pos) + MILLION), account, address))
    db.execute("UPDATE ledger_entries SET collateral_value_usd = ? WHERE entry_id = ?",
               (str(Decimal(value) + MILLION), entry_id))
    return pos, entry_id, value


# -- (a) typed leaves, and the rows are their projection ---------------------------------------------
def test_every_movement_is_a_typed_leaf_and_the_ledger_is_its_projection(ledger, chain, setup, tmp_path):
    w = credit_withdraw_revalue(ledger, chain, setup, tmp_path)
    leaves = list(ledger.log.entries())
    assert [e.kind for e in leaves] == ["credit", "credit", "withdrawal", "decision", "revaluation", "decision",
                                        "revaluation"]
    credit = leaves[0]
    assert credit.entry_id == w["credit"]["decision_id"] and credit.body["format"] == 3  # as Dacp.evaluate logs
    block = credit.body["ledger"]
    assert block["version"] == 1 and block["status"] == "credited" and block["account_type"] == "customer-segregated"
    assert block["quantity_requested_raw"] == block["quantity_credited_raw"] == str(400_000 * UNIT)
    assert block["collateral_value_usd"] == "391960.80" and block["addresses"] == [w["usdc"]]
    assert [c["address"] for c in block["custody"]] == [w["usdc"]]  # the balance it verified and stored
    assert public_decision(credit.body, credit.entry_id, ledger.bundle)["collateral_value_usd"] == "391960.80"
    # every journal row is one line of one leaf, column for column
    lines = [d for e in leaves if e.kind in journal.KINDS for d in e.body["ledger"]["lines"]]
    assert sorted(lines, key=lambda d: d["entry_id"]) == sorted(
        (json.loads(json.dumps(journal.line(r))) for r in ledger.store.entries()), key=lambda d: d["entry_id"])
    assert [d["kind"] for d in lines] == ["credit", "credit", "withdraw", "revalue", "revalue"]
    reval = leaves[4].body["ledger"]
    assert reval["account"] == "ACC-1" and reval["decisions"] == [leaves[3].entry_id]
    (pos,) = reval["positions"]
    row = ledger.store.positions(account="ACC-1")[0]
    assert pos["before"]["collateral_value_usd"] == "293970.60"  # 391960.80 less the withdrawal's 97990.20
    assert pos["after"] == journal.state(row) and row.decision_id == leaves[3].entry_id
    rec = ledger.reconcile()
    assert rec.differences == [] and rec.log_problems == [] and rec.leaves == 5 and rec.lines == 5
    assert ledger.check() == [] and ledger.log.verify().ok


def test_shortfalls_and_reverifications_are_leaves_too(ledger, chain, setup):
    node, token = chain
    custody = node.w3.eth.accounts[5 if ledger.store.db.kind == "sqlite" else 6]  # unlocked: it can send
    fund(chain, usdc=100_000, address=custody)
    assert ledger.credit(usdc_request("ACC-1", "100000", custody, "s-1"))["status"] == "credited"
    tx = token.functions.transfer(new_address(node.w3), 40_000 * UNIT).transact({"from": custody})
    assert node.w3.eth.wait_for_transaction_receipt(tx, timeout=10)["status"] == 1
    anvil_mine(node.w3, 70)
    # a credit at the address reads 60,000: the shortfall first (its own leaf), then the credit (refused: none free)
    r = ledger.credit(usdc_request("ACC-2", "10000", custody, "s-2", participant="FCM-BRAVO"))
    assert r["status"] == "refused" and r["refusal"]["rule"] == "custody.already-credited"
    kinds = [e.kind for e in ledger.log.entries()]
    assert kinds == ["credit", "reverification", "credit"]
    short = list(ledger.log.entries("reverification"))[0].body["ledger"]
    assert short["trigger"] == {"operation": "credit", "idempotency_key": "s-2"}
    assert [(d["kind"], d["quantity_raw"]) for d in short["lines"]] == [("shortfall", str(-40_000 * UNIT))]
    refused = list(ledger.log.entries("credit"))[1].body["ledger"]
    assert refused["status"] == "refused" and refused["lines"] == []
    assert [c["balance_raw"] for c in refused["custody"]] == [str(60_000 * UNIT)]
    anvil_mine(node.w3, 1)
    assert ledger.reverify()["reductions"] == []
    again = list(ledger.log.entries("reverification"))[-1].body["ledger"]
    assert again["trigger"] == {"operation": "reverify"} and again["lines"] == [] and len(again["custody"]) == 1
    assert ledger.check() == [] and ledger.log.verify().ok


# -- (b) the measured attack, and other edits ---------------------------------------------------------
def test_a_million_on_a_position_and_its_journal_entry_is_named(ledger, chain):
    a = fund(chain, usdc=500_000)
    ledger.credit(usdc_request("ACC-1", "400000", a, "m-1"))
    ledger.withdraw(WithdrawRequest("ACC-1", "USDC", Decimal("100000"), "m-w"))
    assert ledger.check() == []
    pos, entry_id, value = add_a_million(ledger, "ACC-1", a)
    assert invariants.problems(ledger.store) == []  # what the ledger checked before: the attack passed it
    assert ledger.reconcile().differences == [
        Difference("ledger_positions", f"(ACC-1, USDC, {a})", "collateral_value_usd", "1293970.60", "293970.60"),
        Difference("ledger_entries", f"({entry_id}: credit ACC-1, USDC, {a})", "collateral_value_usd",
                   "1391960.80", "391960.80")]
    assert (pos, value) == ("293970.60", "391960.80")
    problems = ledger.check()
    assert (f"ledger_positions (ACC-1, USDC, {a}): collateral_value_usd stored 1293970.60, recomputed from the log "
            "293970.60") in problems
    if ledger.store.db.kind == "postgresql":  # disabled, not dropped: the store does not re-create them
        assert "ledger_entries: its append-only trigger ledger_entries_no_change is disabled" in problems
    assert ledger.log.verify().ok  # the log itself was not touched


def test_every_kind_of_edited_row_is_named(ledger, chain):
    a, b = fund(chain, usdc=300_000), fund(chain, usdc=100_000)
    ledger.credit(usdc_request("ACC-1", "200000", a, "e-1"))
    ledger.credit(usdc_request("ACC-2", "100000", b, "e-2", participant="FCM-BRAVO"))
    ledger.withdraw(WithdrawRequest("ACC-2", "USDC", Decimal("50000"), "e-w"))
    db = ledger.store.db
    drop_triggers(db)
    withdrawal = db.execute("SELECT entry_id FROM ledger_entries WHERE kind = 'withdraw'").fetchone()[0]
    db.execute("DELETE FROM ledger_entries WHERE entry_id = ?", (withdrawal,))  # and the position to match:
    db.execute("UPDATE ledger_positions SET quantity_raw = ?, collateral_value_usd = '97990.20' WHERE account = 'ACC-2'",
               (str(100_000 * UNIT),))
    db.execute("UPDATE ledger_custody SET balance_raw = ? WHERE address = ?", (str(900_000 * UNIT), a))
    db.execute("UPDATE ledger_accounts SET account_type = 'cleared-swaps' WHERE account = 'ACC-1'")
    # and a journal row no leaf holds (the triggers allow INSERT: the journal is append-only, not closed)
    ledger.store.add_entry(JournalEntry("forged-1", "2026-01-01T00:00:00.000000Z", "credit", "ACC-9", "FCM-ALPHA", "USDC", a,
                                5 * UNIT, 6, Decimal(5), Decimal(5), Decimal(5)))
    named = {(d.table, d.key.split(":")[0], d.field) for d in ledger.reconcile().differences}
    assert named == {
        ("ledger_entries", f"({withdrawal}", ""),  # its line is in the log, its row is gone
        ("ledger_positions", f"(ACC-2, USDC, {b})", "quantity_raw"),
        ("ledger_positions", f"(ACC-2, USDC, {b})", "collateral_value_usd"),
        ("ledger_custody", f"(USDC, {a})", "balance_raw"),
        ("ledger_accounts", "(ACC-1)", "account_type"),
        ("ledger_entries", "(forged-1", ""),  # a row no leaf accounts for
    }
    text = "\n".join(ledger.check())
    assert f"({withdrawal}: withdraw ACC-2, USDC, {b}): missing; the log recomputes it (withdraw " in text
    assert "(forged-1: credit ACC-9, USDC, " in text and "stored, but no entry of the log accounts for it" in text
    assert f"ledger_custody (USDC, {a}): balance_raw stored {900_000 * UNIT}, recomputed from the log " \
           f"{300_000 * UNIT}" in text


def test_rows_edited_before_a_revaluation_are_still_found_after_it(ledger, chain, setup, tmp_path):
    a = fund(chain, usdc=200_000)
    ledger.credit(usdc_request("ACC-1", "200000", a, "v-1"))
    add_a_million(ledger, "ACC-1", a)
    prices = write_prices(tmp_path / "later.yaml", {"USDC": "0.9950"})
    ledger.prices = make_ledger(Setup(setup.target, setup.policies, str(prices), setup.rpc_url)).prices
    ledger.revalue()  # re-decides the position from its quantity: its value is honest again, its history is not
    rec = ledger.reconcile()
    assert [d.table for d in rec.differences] == ["ledger_positions", "ledger_entries"]
    assert any("(the rows were edited before this revaluation)" in p for p in rec.log_problems)


# -- (c) the journal is append-only --------------------------------------------------------------------
def test_the_journal_refuses_update_and_delete_positions_stay_state(ledger, chain):
    a = fund(chain, usdc=10_000)
    ledger.credit(usdc_request("ACC-1", "10000", a, "t-1"))
    db = ledger.store.db
    statements = ["UPDATE ledger_entries SET collateral_value_usd = '1000000.00'", "DELETE FROM ledger_entries"]
    if db.kind == "postgresql":
        statements.append("TRUNCATE ledger_entries")
    for sql in statements:
        with pytest.raises(sqlite3.IntegrityError, match="ledger_entries is append-only"):
            with ledger.store.transaction():
                db.execute(sql)
    assert [e.collateral_value_usd for e in ledger.store.entries()] == [Decimal("9799.02")]
    assert ledger.store.append_only_problems() == []
    with ledger.store.transaction():  # positions change on withdrawal and revaluation: no trigger, the log checks
        db.execute("UPDATE ledger_positions SET price_usd = '2'")
    assert ledger.check() == [f"ledger_positions (ACC-1, USDC, {a}): price_usd stored 2, recomputed from the log "
                              "0.9999"]


# -- (d) the CLI door ------------------------------------------------------------------------------------
def test_cli_ledger_check_names_the_attack_and_credit_decisions_explain_and_replay(setup, chain, tmp_path, capsys,
                                                                                 monkeypatch):
    from rules.cli.run import main

    a = fund(chain, usdc=500_000)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DACP_CONFIG", raising=False)
    for k, v in {"DACP_POLICIES": setup.policies, "DACP_LOG": setup.target, "DACP_ETH_RPC_URL": setup.rpc_url,
                 "DACP_PRICES_FILE": setup.prices, "DACP_APPROVALS_REQUIRED": "false"}.items():
        monkeypatch.setenv(k, v)
    ev = tmp_path / "usdc-evidence.json"
    ev.write_text(json.dumps(usdc_evidence()))
    assert main(["credit", "--account", "ACC-1", "--participant", "FCM-ALPHA", "--asset", "USDC", "--address", a,
                 "--custodian", "coinbase-custody", "--segregated", "--evidence", str(ev), "--quantity", "400000",
                 "--idempotency-key", "cli-1"]) == 0
    decision_id = json.loads(capsys.readouterr()[0])["decision_id"]
    assert main(["withdraw", "--account", "ACC-1", "--asset", "USDC", "--quantity", "100000",
                 "--idempotency-key", "cli-w"]) == 0
    capsys.readouterr()
    assert main(["ledger", "check"]) == 0
    assert "ledger OK: 1 positions, custody invariant holds" in capsys.readouterr()[0]

    assert main(["explain", decision_id]) == 0
    assert f"Decision {decision_id}: ELIGIBLE" in capsys.readouterr()[0]
    assert main(["explain", decision_id, "--json"]) == 0
    body = json.loads(capsys.readouterr()[0])
    assert body["decision"]["collateral_value_usd"] == "391960.80" and body["ledger"]["idempotency_key"] == "cli-1"
    assert main(["replay", decision_id]) == 0
    assert f"replay of {decision_id}: IDENTICAL (eligible=true, collateral 391960.80 USD" in capsys.readouterr()[0]

    ledger = make_ledger(setup)
    try:
        _, entry_id, _ = add_a_million(ledger, "ACC-1", a)
    finally:
        ledger.store.close()
    assert main(["ledger", "check"]) == 1
    out = capsys.readouterr()[0]
    assert (f"LEDGER PROBLEM: ledger_positions (ACC-1, USDC, {a}): collateral_value_usd stored 1293970.60, "
            "recomputed from the log 293970.60") in out
    assert (f"LEDGER PROBLEM: ledger_entries ({entry_id}: credit ACC-1, USDC, {a}): collateral_value_usd stored "
            "1391960.80, recomputed from the log 391960.80") in out
    assert "ledger OK" not in out
