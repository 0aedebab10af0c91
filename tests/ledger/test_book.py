"""Ledger pieces that need no node or server: database targets, fingerprints, per-address balances,
keys, ISO weeks, CSV shape, bad input that writes nothing (CLI exit 3, no traceback), and the projection's
edges (a log of an earlier version, a leaf that does not read, the journal's triggers on SQLite)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from rules.evidence import CustodyEvidence
from rules.audit.log import DecisionLog
from rules.ledger.projection import reconcile
from rules.ledger.records import JournalEntry
from rules.ledger.store import LedgerStore
from adapters.storage.sql import SqliteDatabase, is_postgres, lock_key, normalise_target, open_database
from adapters.urls import database as redact
from rules.errors import EvidenceError, InputError, StorageError
from rules.ledger.book import CreditRequest, check_key, per_address_balances
from rules.ledger.weekly_report import holdings_csv, parse_week, weekly
from tests.support import ROOT


def test_database_targets(tmp_path):
    assert normalise_target(Path("postgresql://u@h:5432/db")) == "postgresql://u@h:5432/db"  # Path ate a slash
    assert normalise_target("postgres://h/db") == "postgresql://h/db" and is_postgres("postgresql://h/db")
    assert redact("postgresql://dacp:s3cret@h/db") == "postgresql://dacp:***@h/db"
    db = open_database(f"sqlite:///{tmp_path}/a.sqlite".replace("sqlite:////", "sqlite:////"))
    assert isinstance(db, SqliteDatabase) and db.path == tmp_path / "a.sqlite"
    with pytest.raises(InputError):
        open_database("mysql://h/db")
    assert lock_key("custody:USDC:0xabc") == lock_key("custody:USDC:0xabc") != lock_key("custody:USDC:0xabd")


def test_an_unreachable_postgres_is_a_storage_error():
    with pytest.raises(StorageError, match=r"postgresql://dacp:\*\*\*@127.0.0.1:9/x"):
        open_database("postgresql://dacp:pw@127.0.0.1:9/x", timeout_s=1)


def req(**kw):
    base = dict(account="A", participant="P", asset="USDC", quantity=Decimal("1.50"), addresses=("0xA",),
                idempotency_key="k")
    return CreditRequest(**{**base, **kw})


def test_fingerprint_is_about_the_request_not_its_spelling():
    assert req().fingerprint() == req(quantity=Decimal("1.5")).fingerprint()
    assert req().fingerprint() != req(quantity=Decimal("1.51")).fingerprint()
    assert req().fingerprint() != req(account_type="cleared-swaps").fingerprint()


@pytest.mark.parametrize("key", ["", "-x", "a b", "x" * 81, "k\n"])
def test_bad_idempotency_keys(key):
    with pytest.raises(InputError):
        check_key(key)


def _ev(details, addresses=("a", "b"), raw=10):
    return CustodyEvidence("USDC", "ethereum", "1", addresses, raw, 6, 1, "0x", datetime.now(timezone.utc), "t",
                           details=details)


def test_per_address_balances():
    assert per_address_balances(_ev({"balances": {"a": "4", "b": "6"}})) == {"a": 4, "b": 6}
    assert per_address_balances(_ev({"per_address_sat": {"a": "10"}})) == {"a": 10, "b": 0}
    assert per_address_balances(_ev({}, ("a",))) == {"a": 10}
    with pytest.raises(EvidenceError):
        per_address_balances(_ev({}))
    with pytest.raises(EvidenceError):
        per_address_balances(_ev({"balances": {"a": "4", "b": "5"}}))


def test_iso_weeks():
    start, end = parse_week("2026-W01")
    assert start.isoformat() == "2025-12-29T00:00:00+00:00" and (end - start).days == 7
    for bad in ("2026-53", "2026-W54", "W1", ""):
        with pytest.raises(InputError):
            parse_week(bad)


def test_empty_ledger_reports_zero(tmp_path):
    store = LedgerStore(tmp_path / "l.sqlite")
    r = weekly(store, "2026-W10")
    assert r["totals"]["collateral_value_usd"] == "0.00" and r["by_asset"] == [] and r["incidents"]["count"] == 0
    assert r["notices"]["count"] == 0 and r["partial"] is False and r["custody"]["by_asset"] == {}
    assert holdings_csv(r).splitlines()[0].split(",")[:5] == ["week", "partial", "participant", "account_type", "asset"]


def test_cli_bad_input_exits_3_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from rules.cli.run import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DACP_CONFIG", raising=False)
    monkeypatch.setenv("DACP_APPROVALS_REQUIRED", "false")
    monkeypatch.setenv("DACP_POLICIES", str(ROOT / "policies"))
    base = ["credit", "--account", "A", "--participant", "FCM-ALPHA", "--asset", "USDC", "--address", "0xA",
            "--ledger", str(tmp_path / "l.sqlite")]
    for extra in (["--quantity", "abc", "--idempotency-key", "k"], ["--quantity", "1", "--idempotency-key", "bad key"],
                  ["--quantity", "1.0000001", "--idempotency-key", "k"], ["--quantity", "1", "--idempotency-key", "k",
                                                                        "--account-type", "nope"]):
        assert main(base + extra) == 3
        err = capsys.readouterr()[1]
        assert "Traceback" not in err and err.startswith("dacp: error:")
    assert main(base + ["--quantity", "1", "--idempotency-key", "k", "--as-of", "2026-08-31T12:00:00Z",
                        "--ledger", str(tmp_path / "back.sqlite")]) == 9
    err = capsys.readouterr()[1]
    assert "before the ledger's clock" in err and "as_of_window_s" in err and "Traceback" not in err
    assert not (tmp_path / "back.sqlite").exists()  # refused before anything was opened
    assert main(["report", "weekly", "--week", "2026-W99", "--ledger", str(tmp_path / "l.sqlite")]) == 3
    store = LedgerStore(tmp_path / "l.sqlite")
    assert store.positions() == [] and store.request_count() == 0


def _row(entry_id: str) -> JournalEntry:
    return JournalEntry(entry_id, "2026-11-25T10:00:00.000000Z", "withdraw", "A", "P", "USDC", "0xA", -5, 6,
                        Decimal("-1.00"), Decimal("-1.00"), Decimal("-1.00"), Decimal("1"), "d-1", "k", "withdrawal")


def test_a_ledger_logged_by_an_earlier_version_is_named_not_recomputed(tmp_path):
    store = LedgerStore(tmp_path / "l.sqlite")
    log = DecisionLog(database=store.db)
    with store.transaction():  # the unversioned form the ledger wrote before its journal leaves
        store.add_entry(_row("old-1"))
        log.append([("ledger", "withdraw-1", None, {"ledger": {"operation": "withdraw", "status": "withdrawn"}})])
    rec = reconcile(store, log)
    assert rec.log_problems == ["the log holds 1 ledger entries of an earlier version (kind 'ledger', or 'decision' "
                                "with a ledger block): the rows they wrote cannot be recomputed"]
    assert [str(d) for d in rec.differences] == ["ledger_entries (old-1: withdraw A, USDC, 0xA): stored, but no entry "
                                                 "of the log accounts for it"]


def test_a_ledger_leaf_that_does_not_read_is_a_problem_of_the_log(tmp_path):
    store = LedgerStore(tmp_path / "l.sqlite")
    log = DecisionLog(database=store.db)
    log.append([("withdrawal", "w-1", None, {"ledger": {"version": 99}}),
                ("withdrawal", "w-2", None, {"ledger": {"version": 1, "at": "x", "custody": [], "lines": [{}]}})])
    assert reconcile(store, log).log_problems == [
        "log entry 1 (withdrawal w-1): a withdrawal entry without a ledger block of a version this code reads",
        "log entry 2 (withdrawal w-2): a journal line does not read back (KeyError: 'entry_id')"]


def test_the_journal_is_append_only_and_a_dropped_trigger_is_named_until_the_store_opens_again(tmp_path):
    import sqlite3

    store = LedgerStore(tmp_path / "l.sqlite")
    with store.transaction():
        store.add_entry(_row("e-1"))
    for sql in ("UPDATE ledger_entries SET reason = 'x'", "DELETE FROM ledger_entries"):
        with pytest.raises(sqlite3.IntegrityError, match="ledger_entries is append-only"):
            store.db.execute(sql)
    store.db.execute("DROP TRIGGER ledger_entries_no_delete")
    assert store.append_only_problems() == ["ledger_entries: its append-only trigger ledger_entries_no_delete is "
                                            "missing"]
    assert LedgerStore(tmp_path / "l.sqlite").append_only_problems() == []  # made again when a store opens


@pytest.mark.parametrize("argv", [["ledger", "holdings"], ["ledger", "check"], ["ledger", "incidents"],
                                  ["incident", "list"], ["report", "weekly", "--week", "2026-W47"]])
def test_read_only_ledger_commands_create_nothing(tmp_path, monkeypatch, capsys, argv):
    from rules.cli.run import main

    monkeypatch.chdir(tmp_path)
    for k in ("DACP_CONFIG", "DACP_LOG", "DACP_LEDGER_URL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("DACP_APPROVALS_REQUIRED", "false")
    monkeypatch.setenv("DACP_POLICIES", str(ROOT / "policies"))
    assert main(argv) == 3
    err = capsys.readouterr()[1]
    assert "no ledger at var/dacp.sqlite" in err and "Traceback" not in err
    assert not (tmp_path / "var").exists() and list(tmp_path.iterdir()) == []


def test_incident_record_and_list_through_the_cli(tmp_path, monkeypatch, capsys):
    from rules.cli.run import main

    monkeypatch.chdir(tmp_path)
    for k in ("DACP_CONFIG", "DACP_LOG", "DACP_LEDGER_URL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("DACP_APPROVALS_REQUIRED", "false")
    monkeypatch.setenv("DACP_POLICIES", str(ROOT / "policies"))
    base = ["incident", "record", "--kind", "system_disruption", "--significant", "--start", "2026-11-20T09:00:00Z"]
    assert main(base + ["--end", "2026-11-20T08:00:00Z", "--description", "x"]) == 3  # ends before it starts
    assert "ends" in capsys.readouterr()[1] and not (tmp_path / "var").exists()  # checked before anything is opened
    assert main(base + ["--end", "2026-11-20T11:30:00Z", "--description", "Ethereum node down; credits paused"]) == 0
    recorded = json.loads(capsys.readouterr()[0])
    assert recorded["kind"] == "system_disruption" and recorded["significant"] is True
    assert main(["incident", "list", "--format", "json", "--since", "2026-11-20T10:00:00Z"]) == 0
    (listed,) = json.loads(capsys.readouterr()[0])
    assert listed == recorded
    assert main(["incident", "list", "--since", "2026-11-21T00:00:00Z"]) == 0
    assert "system_disruption" not in capsys.readouterr()[0]
    log = DecisionLog(tmp_path / "var" / "dacp.sqlite")
    assert [e.kind for e in log.entries()] == ["incident"] and log.verify().ok
    assert main(["ledger", "incidents"]) == 0  # the ledger's automatic incidents only
    assert json.loads(capsys.readouterr()[0]) == []
