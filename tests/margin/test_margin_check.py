"""The margin tables in the verifiable record: recomputed from the log's margin entries (imports and call
steps), every row that differs named - a requirement edited in SQL, a call's status rewritten, a call row
deleted, a journal row of the margin room edited with its append-only triggers dropped (tests/support/tamper.py
on SQLite). On the real ledger, both backends; and through ``dacp ledger check`` / ``dacp margin check``."""

from __future__ import annotations

import pytest

from rules.margin.verify import check_ledger, has_margin_tables
from tests.margin.test_margin_ledger import _book, _business_day, _import
from tests.support import tamper
from tests.support.ledger_workload import fund, usdc_request

pytestmark = pytest.mark.integration


def _sql(ledger, sql: str, params=()) -> None:
    with ledger.store.db.transaction():
        ledger.store.db.execute(sql, params)


def _drop_event_triggers(ledger, setup) -> None:
    if ledger.store.db.kind == "postgresql":
        _sql(ledger, "DROP TRIGGER margin_events_no_change ON margin_events")
    else:
        tamper.raw(setup.target).close()  # every trigger of the file dropped, as an attacker with the file would


def test_an_edited_margin_row_is_named_by_the_check(ledger, chain, setup):
    assert check_ledger(ledger.store, ledger.log) is None  # no margin tables, no margin entry: nothing to check
    assert not has_margin_tables(ledger.store)
    book = _book(ledger)
    day = _business_day(book)
    a = fund(chain, usdc=200_000)
    assert ledger.credit(usdc_request("ACC-5", "100000", a, "k-1"))["status"] == "credited"
    _import(book, f"account,dco,business_day,requirement_usd\nACC-5,CME,{day},150000.00\nACC-6,CME,{day},5000.00\n")
    _import(book, f"account,dco,business_day,requirement_usd\nACC-5,CME,{day},160000.00\n")  # replaces the first
    issued = book.run_calls()
    assert [s["step"] for s in issued] == ["issued"]
    clean = book.check()
    assert clean.ok and clean.leaves == 3 and clean.rows == 2 + 1 + 3, clean.to_json()
    assert ledger.check() == []

    _sql(ledger, "UPDATE margin_requirements SET requirement_usd = '60000.00' WHERE account = 'ACC-5'")
    _sql(ledger, "UPDATE margin_calls SET status = 'met' WHERE call_id = ?", (issued[0]["call_id"],))
    _sql(ledger, "DELETE FROM margin_requirements WHERE account = 'ACC-6'")
    _drop_event_triggers(ledger, setup)
    _sql(ledger, "UPDATE margin_events SET kind = 'call.withdrawn' WHERE event_id = ?", (issued[0]["entry_id"],))

    found = check_ledger(ledger.store, ledger.log)
    messages = [str(d) for d in found.differences]
    assert not found.ok
    assert (f"margin_requirements (ACC-5, CME, {day}): requirement_usd stored 60000.00, recomputed from the log "
            "160000.00") in messages
    assert f"margin_calls ({issued[0]['call_id']}): status stored met, recomputed from the log open" in messages
    assert any(m.startswith(f"margin_requirements (ACC-6, CME, {day}): missing; the log recomputes it (5000.00 USD)")
               for m in messages)
    assert (f"margin_events ({issued[0]['entry_id']}): kind stored call.withdrawn, recomputed from the log "
            "call.issued") in messages
    assert len(messages) == 4, messages
    assert ledger.log.verify().ok  # the log itself is whole: it is the rows that were edited


def test_ledger_check_and_margin_check_name_the_edited_row_at_the_cli(ledger, chain, setup, capsys, tmp_path,
                                                                     monkeypatch):
    from rules.cli.run import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DACP_CONFIG", raising=False)
    for k, v in {"DACP_POLICIES": setup.policies, "DACP_LOG": setup.target, "DACP_ETH_RPC_URL": setup.rpc_url,
                 "DACP_PRICES_FILE": setup.prices, "DACP_APPROVALS_REQUIRED": "false"}.items():
        monkeypatch.setenv(k, v)

    book = _book(ledger)
    day = _business_day(book)
    _import(book, f"account,dco,business_day,requirement_usd\nACC-7,CME,{day},150000.00\n")
    args: list[str] = []
    assert main(["ledger", "check", *args]) == 0
    assert "margin: 2 rows recomputed from 1 margin entries" in capsys.readouterr().out
    _sql(ledger, "UPDATE margin_requirements SET requirement_usd = '1.00'")
    assert main(["ledger", "check", *args]) == 1
    out = capsys.readouterr().out
    assert (f"LEDGER PROBLEM: margin_requirements (ACC-7, CME, {day}): requirement_usd stored 1.00, recomputed "
            "from the log 150000.00") in out
    assert main(["margin", "check", *args]) == 1
    assert "MARGIN PROBLEM: margin_requirements (ACC-7" in capsys.readouterr().out
