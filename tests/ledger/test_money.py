"""Issue 15 on the real ledger, BOTH backends (SQLite file, PostgreSQL server), custody on a real anvil node:
every coin on its depositor's books (the excess at zero value with the limit that excluded it, countable
again when room grows), limits from the ledger's own holdings (credits and eligibility queries; a portfolio
is a what-if), the as_of window, refusal codes, incident notices in the log, read-only doors that create
nothing. The fixtures (chain, setup, ledger) are tests/ledger/conftest.py's."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from rules.app import Dacp
from rules.engine.query import parse_query
from rules.errors import AsOfError, InputError
from rules.evidence import LEDGER, WHAT_IF
from rules.ledger.book import CreditRequest, WithdrawRequest
from rules.settings import Settings
from tests.support import ROOT
from tests.support.anvil_node import anvil_mine, new_address, rpc
from tests.support.ledger_workload import fund, usdc_request

pytestmark = pytest.mark.integration


def eth_address(chain, qty: int) -> str:
    node, _ = chain
    a = new_address(node.w3)
    rpc(node.w3, "anvil_setBalance", [a, hex(qty * 10**18)])
    anvil_mine(node.w3, 70)
    return a


def eth(account: str, qty: str, address: str, key: str, participant: str = "FCM-ALPHA", **kw) -> CreditRequest:
    return CreditRequest(account, participant, "ETH", Decimal(qty), (address,), key, custodian="coinbase-custody",
                         segregated=True, **kw)


def on_books(ledger, account: str, asset: str) -> tuple[Decimal, Decimal, Decimal]:
    ps = ledger.store.positions(account=account, asset=asset)
    return (sum((p.quantity for p in ps), Decimal(0)), sum((p.collateral_value_usd for p in ps), Decimal(0)),
            sum((p.after_haircut_usd - p.collateral_value_usd for p in ps), Decimal(0)))


def test_every_coin_stays_on_its_depositors_books(ledger, chain):
    a = eth_address(chain, 123_456)
    r = ledger.credit(eth("ACC-1", "123456", a, "big"))
    assert r["status"] == "credited" and r["quantity_credited"] == "123456"
    assert r["excluded_by"] == ["limit.eth-share"]  # only ETH in the account: 1,000,000 USD until it holds more
    qty, counted, excluded = on_books(ledger, "ACC-1", "ETH")
    assert qty == 123456 and counted == Decimal("1000000.00")
    assert counted + excluded == Decimal(r["value_after_haircut_usd"]) and excluded == Decimal(r["excluded_by_limits_usd"])
    (custody,) = [c for c in ledger.store.custody_states() if c.address == a]
    assert sum(p.quantity_raw for p in ledger.store.positions(asset="ETH", address=a)) == custody.balance_raw
    r2 = ledger.credit(eth("ACC-2", "10000", a, "theirs", participant="FCM-BRAVO"))  # ACC-1's coins: refused
    assert r2["status"] == "refused" and r2["refusal"]["code"] == "already_credited"
    assert r2["refusal"]["reason"] == "custody.already-credited" and "0 is verified" in r2["refusal"]["message"]
    assert ledger.store.account("ACC-2") is None
    assert ledger.check() == [] and ledger.log.verify().ok


def test_the_excess_counts_when_room_grows_and_withdrawals_take_it_first(ledger, chain):
    a = eth_address(chain, 2_000)
    ledger.credit(eth("ACC-1", "2000", a, "e-1"))  # 2000 ETH x 3100.25 x 0.70 = 4.34M after haircut; 1M counts
    assert on_books(ledger, "ACC-1", "ETH")[1] == Decimal("1000000.00")
    u = fund(chain, usdc=5_000_000)
    ledger.credit(usdc_request("ACC-1", "5000000", u, "u-1"))  # the room grows: ETH may be 40% of the account
    assert on_books(ledger, "ACC-1", "ETH")[1] == Decimal("1000000.00")  # as recorded, until re-decided
    r = ledger.revalue()
    qty, counted, excluded = on_books(ledger, "ACC-1", "ETH")
    assert qty == 2000 and counted > Decimal("1000000.00") and excluded > 0
    usdc = on_books(ledger, "ACC-1", "USDC")[1]
    assert counted / (counted + usdc) <= Decimal("0.40") and r["accounts"][0]["positions"][0]["excluded_usd"] != "0.00"
    w = ledger.withdraw(WithdrawRequest("ACC-1", "ETH", Decimal("100"), "w-1"))  # the excess goes first
    assert w["collateral_value_usd"] == "0.00" and on_books(ledger, "ACC-1", "ETH")[1] == counted
    assert on_books(ledger, "ACC-1", "ETH")[0] == 1900
    assert ledger.check() == [] and ledger.log.verify().ok


def test_fcm_wide_cap_counts_the_other_accounts_in_the_ledger(ledger, chain):
    """Bitnomial's 45M USD ETH cap is across the FCM: the ledger's own holdings of the FCM's other accounts
    count, so three accounts do not get three times the room."""
    counted = Decimal(0)
    for i in range(3):
        u = fund(chain, usdc=60_000_000)
        ledger.credit(usdc_request(f"ACC-F{i}", "60000000", u, f"f-u{i}"))
        e = eth_address(chain, 12_000)  # 12,000 ETH x 3100.25 x 0.70 = 26.0M after haircut, under 40% of the account
        r = ledger.credit(eth(f"ACC-F{i}", "12000", e, f"f-e{i}"))
        counted += Decimal(r["collateral_value_usd"])
    assert counted == Decimal("45000000.00")  # 26.0M + 19.0M + 0
    assert r["excluded_by"] == ["limit.eth-fcm-cap"] and r["quantity_credited"] == "12000"
    entry = ledger.log.get(r["decision_id"])
    assert entry.body["holdings"]["source"] == LEDGER and {h["asset"] for h in entry.body["holdings"]["participant"]} \
        == {"ETH", "USDC"}


def test_a_back_dated_credit_is_refused_and_nothing_is_written(ledger, chain):
    a = eth_address(chain, 10)
    back = ledger.clock() - timedelta(days=79)
    with pytest.raises(AsOfError, match="79 days before the ledger's clock") as e:
        ledger.credit(eth("ACC-C", "10", a, "back", participant="FCM-CHARLIE", as_of=back))
    assert (e.value.code, e.value.exit_code, e.value.http_status) == ("as_of_outside_window", 9, 422)
    assert ledger.log.count() == 0 and ledger.store.request("back") is None and ledger.store.custody_states() == []
    with pytest.raises(AsOfError, match="after the ledger's clock"):
        ledger.credit(eth("ACC-1", "10", a, "ahead", as_of=ledger.clock() + timedelta(hours=1)))
    r = ledger.credit(eth("ACC-C", "10", a, "now", participant="FCM-CHARLIE", as_of=ledger.clock()))
    assert r["status"] == "refused" and r["refusal"]["code"] == "not_eligible"  # out of the programme today
    assert r["refusal"]["reason"] == "programme.participant-admitted"
    assert ledger.credit(eth("ACC-1", "10", a, "in-window", as_of=ledger.clock() - timedelta(seconds=10))
                         )["status"] == "credited"


def test_eligibility_queries_count_the_ledgers_holdings_and_a_portfolio_is_a_what_if(ledger, chain, setup, tmp_path):
    e = eth_address(chain, 12_000)
    u = fund(chain, usdc=60_000_000)
    ledger.credit(usdc_request("ACC-L", "60000000", u, "l-u"))
    ledger.credit(eth("ACC-L", "12000", e, "l-e"))
    dacp = Dacp(Settings(policies=Path(setup.policies), log=Path(getattr(ledger.store.db, "url", ledger.store.where)),
                         engine="python", sections={"approvals": {"required": False}}))
    doc = json.loads((ROOT / "examples" / "queries" / "eth-eligible.json").read_text())
    doc = {k: v for k, v in doc.items() if k not in ("portfolio", "id")}
    doc.update(account="ACC-OTHER", participant="FCM-ALPHA", quantity="12000", price_usd="3100.25",
               as_of=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
               custody=dict(doc["custody"], balance="12000"))
    doc["evidence"] = dict(doc["evidence"], price_updated_at=doc["as_of"])
    plain, what_if = parse_query(doc), parse_query({**doc, "portfolio": [{"asset": "USDC",
                                                                          "collateral_value_usd": "60000000"}]})
    d1, d2 = dacp.evaluate([plain, what_if])
    assert d1.head["holdings"]["source"] == LEDGER and d2.head["holdings"]["source"] == WHAT_IF
    held = next(r for r in d1.to_json()["reasons"] if r["rule"] == "limit.eth-fcm-cap")
    assert Decimal(held["observed"]["group_value_usd"]) == on_books(ledger, "ACC-L", "ETH")[1].quantize(Decimal("0.01"))
    for d in (d1, d2):  # the log keeps what each was decided with: both replay identically
        assert dacp.replay(d.id).identical
    assert dacp.log.get(d1.id).body["holdings"]["source"] == LEDGER and "holdings" not in dacp.log.get(d2.id).body


def test_incident_notices_are_log_entries_and_in_the_weekly_report(ledger, chain):
    start = datetime(2026, 11, 20, 9, tzinfo=timezone.utc)
    n = ledger.record_incident(kind="cybersecurity", significant=True, start=start, end=start + timedelta(hours=2),
                               description="phishing of an operator's credentials; keys rotated")
    ledger.record_incident(kind="other", significant=False, start=start - timedelta(days=30), end=None,
                           description="ongoing: custodian statement delayed")
    entry = ledger.log.get(n.incident_id)
    assert entry.kind == "incident" and entry.body["incident"]["version"] == 1
    assert [x.kind for x in ledger.incident_notices(start, start + timedelta(days=1))] == ["cybersecurity", "other"]
    assert [x.kind for x in ledger.incident_notices(start + timedelta(days=1))] == ["other"]  # still open
    for bad in (dict(kind="market_drop"), dict(end=start - timedelta(hours=1)), dict(description=" ")):
        with pytest.raises(InputError):
            ledger.record_incident(**{"kind": "custody", "significant": True, "start": start,
                                      "description": "x", **bad})
    assert ledger.log.count() == 2 and ledger.log.verify().ok
