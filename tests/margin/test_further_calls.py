"""A deficit that grows while a call is open issues a further call for the increase (at least the policy's
minimum call amount, rounded up); an increase below the minimum waits; a delivery that covers the account
meets every open call. On the real ledger (USDC verified on anvil), both backends."""

from __future__ import annotations

from decimal import Decimal

import pytest

from rules.audit.margin_entries import read_call
from tests.margin.test_margin_ledger import _book, _business_day, _import
from tests.support.ledger_workload import fund, usdc_request

pytestmark = pytest.mark.integration


def test_a_growing_deficit_issues_a_further_call_for_the_increase(ledger, chain):
    book = _book(ledger)
    day = _business_day(book)
    a = fund(chain, usdc=300_000)
    assert ledger.credit(usdc_request("ACC-4", "100000", a, "f-1"))["status"] == "credited"  # 97990.20 counted
    _import(book, f"account,dco,business_day,requirement_usd\nACC-4,CME,{day},150000.00\n")
    first = book.run_calls()
    assert [(s["step"], s["amount_usd"]) for s in first] == [("issued", "53000.00")]  # deficit 52009.80

    # the requirement rises: deficit 72009.80, 19009.80 beyond the 53000 called - a further call of 20000
    _import(book, f"account,dco,business_day,requirement_usd\nACC-4,CME,{day},170000.00\n")
    further = book.run_calls()
    assert [(s["step"], s["amount_usd"], s.get("further")) for s in further] == [("issued", "20000.00", True)]
    assert (further[0]["called_usd"], further[0]["increase_usd"]) == ("53000.00", "19009.80")
    leaf = read_call(ledger.log.get(further[0]["entry_id"]).body, "t")
    assert leaf["step"] == "issued" and leaf["coverage"]["deficit_usd"] == "72009.80"
    assert leaf["coverage"]["further"] is True
    assert [c.amount_usd for c in book.calls("ACC-4", "open")] == [Decimal("53000.00"), Decimal("20000.00")]

    # a rise of 4009.80 beyond the 73000 called is below the minimum call (10000): no call yet
    _import(book, f"account,dco,business_day,requirement_usd\nACC-4,CME,{day},175000.00\n")
    assert book.run_calls() == []

    # a credit that covers the account meets both calls
    assert ledger.credit(usdc_request("ACC-4", "100000", a, "f-2"))["status"] == "credited"
    met = book.run_calls()
    assert [(s["step"], s["call_id"]) for s in met] == [("met", first[0]["call_id"]), ("met", further[0]["call_id"])]
    assert {c.status for c in book.calls("ACC-4")} == {"met"}
    assert ledger.log.verify().ok
