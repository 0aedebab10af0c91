"""Margin coverage on the real ledger, on both backends: USDC credited after on-chain verification on anvil,
requirements and off-ledger collateral imported, coverage (now and as of a time, from the journal), a call
issued on a deficit, met by a credit, withdrawn when coverage comes back on its own, escalated past its
deadline; withdrawals that would leave the account under-margined refused with nothing written; every step
a verified leaf of the log."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from rules.audit.margin_entries import read_call, read_import
from rules.errors import MarginError
from rules.ledger.book import WithdrawRequest
from rules.margin.book import MarginBook, withdrawal_guard
from rules.margin.inputs import parse_text
from tests.support.ledger_workload import fund, usdc_request

pytestmark = pytest.mark.integration


def _book(ledger) -> MarginBook:
    ledger.withdrawal_guard = withdrawal_guard(ledger.bundle, ledger.store)
    return MarginBook(ledger.bundle, ledger.store)  # the ledger's clock: real time


def _import(book: MarginBook, text: str):
    return book.import_requirements(parse_text(text, "req.csv", book.policy))


def _business_day(book: MarginBook) -> str:
    """The latest day that is a business day of every calendar in the shipped margin policy."""
    day = datetime.now(timezone.utc).date()
    while not all(c.is_business_day(day) for c in book.policy.calendars.values()):
        day -= timedelta(days=1)
    return day.isoformat()


def test_coverage_calls_and_release_on_the_real_ledger(ledger, chain):
    book = _book(ledger)
    day = _business_day(book)
    a = fund(chain, usdc=600_000)
    assert ledger.credit(usdc_request("ACC-1", "400000", a, "c-1"))["status"] == "credited"  # 391960.80 counted
    r = _import(book, f"account,dco,business_day,requirement_usd,net_of_offsets\n"
                      f"ACC-1,CME,{day},450000.00,true\nACC-1,FICC,{day},40000.00,false\n")
    assert r["requirements"] == 2 and r["accounts"] == ["ACC-1"]
    leaf = ledger.log.get(r["import_id"])
    assert leaf.kind == "margin.requirement"
    assert read_import(leaf.body, "t")["requirements"][0] == {
        "account": "ACC-1", "dco": "CME", "business_day": day, "requirement_usd": "450000.00", "net_of_offsets": True,
        "cross_margin_reduction_usd": "0"}

    cov = book.coverage("ACC-1")[0]
    assert (cov.ledger_usd, cov.requirement_usd, cov.deficit_usd) == (
        Decimal("391960.80"), Decimal("490000.00"), Decimal("98039.20"))
    assert cov.status == "deficit"

    # a withdrawal now would deepen the deficit: refused, nothing written
    entries, leaves = list(ledger.store.entries()), ledger.log.count()
    with pytest.raises(MarginError, match="under-margined by") as e:
        ledger.withdraw(WithdrawRequest(account="ACC-1", asset="USDC", quantity=Decimal(1), idempotency_key="w-1"))
    assert e.value.code == "under_margined" and e.value.http_status == 409 and e.value.exit_code == 1
    assert list(ledger.store.entries()) == entries and ledger.log.count() == leaves
    assert ledger.store.request("w-1") is None  # not remembered: the same key may be used once covered
    assert book.free("ACC-1")["assets"][0]["free_quantity"] == "0"

    # the deficit issues a call: 98039.20 rounded up to 1,000 (the policy), due T+1
    steps = book.run_calls()
    assert [(s["step"], s["amount_usd"]) for s in steps] == [("issued", "99000.00")]
    call = book.calls("ACC-1", "open")[0]
    assert call.deadline > call.issued_at
    assert read_call(ledger.log.get(steps[0]["entry_id"]).body, "t")["step"] == "issued"
    assert book.run_calls() == []  # nothing new to do

    # a credit meets it
    assert ledger.credit(usdc_request("ACC-1", "150000", a, "c-2"))["status"] == "credited"
    steps = book.run_calls()
    assert [s["step"] for s in steps] == ["met"] and Decimal(steps[0]["delivered_usd"]) > 0
    assert book.calls("ACC-1")[0].status == "met"

    # what is free now is exactly what a withdrawal may take
    free = book.free("ACC-1")
    cov = book.coverage("ACC-1")[0]
    assert Decimal(free["free_usd"]) == cov.excess_usd > 0
    q = Decimal(free["assets"][0]["free_quantity"])
    with pytest.raises(MarginError):
        ledger.withdraw(WithdrawRequest(account="ACC-1", asset="USDC", quantity=q + 1, idempotency_key="w-2"))
    done = ledger.withdraw(WithdrawRequest(account="ACC-1", asset="USDC", quantity=q, idempotency_key="w-3"))
    assert done["status"] == "withdrawn"
    assert book.coverage("ACC-1")[0].deficit_usd == 0
    assert ledger.check() == [] and ledger.log.verify().ok


def test_a_call_withdrawn_when_coverage_comes_back_and_escalated_when_not(ledger, chain):
    book = _book(ledger)
    day = _business_day(book)
    a = fund(chain, usdc=300_000)
    assert ledger.credit(usdc_request("ACC-2", "100000", a, "d-1"))["status"] == "credited"  # 97990.20
    _import(book, f"account,dco,business_day,requirement_usd\nACC-2,CME,{day},150000.00\n"
                  f"ACC-3,CME,{day},20000.00\n")
    issued = book.run_calls()
    assert {(s["account"], s["step"]) for s in issued} == {("ACC-2", "issued"), ("ACC-3", "issued")}
    # ACC-2: the requirement falls (a new import of the same day replaces it): coverage back, nothing delivered
    _import(book, f"account,dco,business_day,requirement_usd\nACC-2,CME,{day},90000.00\n")
    # ACC-3 is still uncovered a day and more past its deadline: escalated through every level, once each
    due = datetime.fromisoformat(book.calls("ACC-3")[0].deadline.replace("Z", "+00:00"))
    steps = book.run_calls(as_of=due + timedelta(hours=25))
    assert [(s["account"], s["step"]) for s in steps] == [
        ("ACC-2", "withdrawn"), ("ACC-3", "escalated"), ("ACC-3", "escalated")]
    assert [s["level"] for s in steps[1:]] == ["overdue", "liquidation-review"]
    assert book.run_calls(as_of=due + timedelta(hours=30)) == []
    # coverage as of before the credit reads the journal: nothing counted then
    before = book.coverage("ACC-2", as_of=datetime(2000, 1, 3, tzinfo=timezone.utc))[0]
    assert before.ledger_usd == 0 and before.status == "no requirement"
    events = [k for _, _, k, _, _ in book.store.events()]
    assert events.count("import") == 2 and events.count("call.escalated") == 2
    assert ledger.log.verify().ok


def _profile(account: str, **kw) -> dict:
    return {"account": account, "agreement_on_file": True, "designated": True, "agreement_id": f"XM-{account}",
            "futures": [{"contract": "ZN", "dco": "CME", "quantity": "-120"}],
            "cash_treasuries": [{"cusip": "91282CJL6", "cleared_by": "FICC", "face_value_usd": "12000000.00"}], **kw}


def test_the_cross_margin_reduction_applies_only_where_the_rules_say_and_names_its_decision(ledger):
    import json

    book = _book(ledger)
    day = _business_day(book)
    doc = {"requirements": [
        {"account": a, "dco": "CME", "business_day": day, "requirement_usd": "1000000.00",
         "cross_margin_reduction_usd": "300000.00"} for a in ("XM-1", "XM-2", "XM-3")],
        "cross_margin": [_profile("XM-1"), _profile("XM-2", designated=False)]}
    r = book.import_requirements(parse_text(json.dumps(doc), "xm.json", book.policy))
    assert r["cross_margin"] == 2
    assert [p["account"] for p in read_import(ledger.log.get(r["import_id"]).body, "t")["cross_margin"]] == ["XM-1", "XM-2"]
    cov = {c.account: c for c in book.coverage()}
    assert cov["XM-1"].requirement_usd == Decimal("700000.00")  # eligible: the DCO's reduction applies
    cut = cov["XM-1"].to_json()["cross_margin"][0]
    assert cut["programme"] == "cme-ficc-customer-cross-margin" and cut["applied_usd"] == "300000.00"
    assert [x["rule"] for x in cut["decision"]["reasons"]] == [
        "xm.agreement-on-file", "xm.account-designated", "xm.eligible-futures", "xm.ficc-cash-treasuries"]
    assert all(x["policy"]["file"] == "margin.yaml" and x["policy"]["line"] for x in cut["decision"]["reasons"])
    assert cov["XM-2"].requirement_usd == Decimal("1000000.00")  # not designated: no reduction, and why
    assert cov["XM-2"].to_json()["cross_margin"][0]["decision"]["failed_rules"] == ["xm.account-designated"]
    assert cov["XM-3"].to_json()["cross_margin"][0]["decision"]["failed_rules"] == [  # no profile: fail closed
        "xm.agreement-on-file", "xm.account-designated", "xm.eligible-futures", "xm.ficc-cash-treasuries"]
    assert cov["XM-1"].to_json()["requirements"][0]["counted_requirement_usd"] == "700000.00"
