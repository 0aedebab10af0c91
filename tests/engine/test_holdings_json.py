"""The holdings a decision is made with, as the log stores them beside it (``rules.evidence``): every reach's
lines and the customer's id survive the round trip, and entries of the earlier layout still read."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

from rules.evidence import LEDGER, Held, Holdings, holdings_from_json, holdings_lines_json


def _holdings() -> Holdings:
    mine = (Held("ETH", Decimal("1000.00"), Decimal("1.5"), "bny-digital"),)
    customer = mine + (Held("USDC", Decimal("250.00")),)
    return Holdings(LEDGER, mine, customer, customer + (Held("BTC", Decimal("9.99"), Decimal("0.001")),),
                    None, "CUST-7", datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc))


def test_every_reach_and_the_customer_id_round_trip():
    h = _holdings()
    stored = holdings_lines_json(h)
    assert stored["customer"] == "CUST-7" and len(stored["customer_lines"]) == 2
    assert holdings_from_json(stored) == h


def test_an_entry_of_the_earlier_layout_reads_its_customer_lines():
    """Before, the customer reach's lines were written under "customer", over the customer's id."""
    stored = holdings_lines_json(_holdings())
    stored["customer"] = stored.pop("customer_lines")
    back = holdings_from_json(stored)
    assert back.customer == _holdings().customer and back.customer_id is None
    assert back.account == _holdings().account and back.participant == _holdings().participant
