"""Issue 15, aggregation by customer, on the real ledger, BOTH backends (SQLite file, PostgreSQL server), custody
on a real anvil node: a credit names its account's customer, the first that names it fixes it (stored with the
account and in the credit's leaf, so ``dacp ledger check`` recomputes it), another customer for the account is
refused with nothing written, and a limit ``across: customer`` counts every account of the customer - and only
the account itself when no customer is named. The fixtures (chain, setup, ledger) are tests/ledger/conftest.py's."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from rules.app import Dacp
from rules.cli.run import main
from rules.engine.query import parse_query
from rules.errors import CustomerMismatchError, InputError, StorageError
from rules.ledger import schema
from rules.ledger.store import LedgerStore
from rules.settings import Settings
from tests.support import ROOT
from tests.support.ledger_workload import Setup, fund, make_ledger, usdc_evidence, usdc_request

pytestmark = pytest.mark.integration
CAP = Decimal(1_000_000)
CUSTOMER_CAP = """
  - id: limit.usdc-customer-cap
    description: At most 1 million US dollars of USDC collateral value across all accounts of a customer.
    rationale: Test limit - a customer-wide cap, so that splitting a deposit over accounts gains no room.
    scope: asset
    applies_to: {assets: [USDC]}
    across: customer
    max_value_usd: 1000000
"""


@pytest.fixture
def capped(setup: Setup):
    """The ledger under the test bundle plus a 1M USD USDC cap across each customer's accounts."""
    limits = Path(setup.policies) / "limits.yaml"
    limits.write_text(limits.read_text(encoding="utf-8").rstrip("\n") + "\n" + CUSTOMER_CAP, encoding="utf-8")
    led = make_ledger(setup)
    yield led
    led.store.close()


def usdc(account: str, qty: str, address: str, key: str, customer: str | None = None, **kw):
    return replace(usdc_request(account, qty, address, key, **kw), customer=customer)


def counted(ledger, account: str) -> Decimal:
    return sum((p.collateral_value_usd for p in ledger.store.positions(account=account)), Decimal(0))


def test_two_accounts_of_a_customer_share_its_cap_another_customers_does_not(capped, chain):
    a, b, c, d = (fund(chain, usdc=800_000) for _ in range(4))
    r1 = capped.credit(usdc("ACC-A", "800000", a, "c-1", customer="CUST-1"))
    r2 = capped.credit(usdc("ACC-B", "800000", b, "c-2", customer="CUST-1", participant="FCM-BRAVO"))
    r3 = capped.credit(usdc("ACC-Z", "800000", c, "c-3", customer="CUST-2"))
    whole = Decimal(r1["collateral_value_usd"])  # 800,000 x 0.9999 x (1 - 2%) = 783,921.60, under the cap
    assert whole == Decimal("783921.60") and r1["excluded_by"] == [] and r1["customer"] == "CUST-1"
    assert Decimal(r2["collateral_value_usd"]) == CAP - whole  # CUST-1's other account (even at another FCM) counts
    assert r2["excluded_by"] == ["limit.usdc-customer-cap"] and r2["quantity_credited"] == "800000"
    assert Decimal(r3["collateral_value_usd"]) == whole and r3["excluded_by"] == []  # CUST-2 has its own room
    assert counted(capped, "ACC-A") + counted(capped, "ACC-B") == CAP
    held = capped.log.get(r2["decision_id"]).body["holdings"]  # what the decision counted, kept for replay
    assert [(h["asset"], h["value_usd"]) for h in held["customer_lines"]] == [("USDC", "783921.60")]  # ACC-A's
    assert held["customer"] == "CUST-1"  # and whose they are
    assert held["participant"] == []  # ACC-B is FCM-BRAVO's only account: the FCM reach holds nothing else
    # an account without a customer is its own customer: the cap binds its own holding, no one else's
    r4 = capped.credit(usdc("ACC-N", "800000", d, "c-4"))
    assert Decimal(r4["collateral_value_usd"]) == whole and r4["customer"] is None
    e = fund(chain, usdc=800_000)
    r5 = capped.credit(usdc("ACC-N", "800000", e, "c-5"))
    assert Decimal(r5["collateral_value_usd"]) == CAP - whole and r5["excluded_by"] == ["limit.usdc-customer-cap"]
    assert capped.check() == [] and capped.log.verify().ok


def test_an_eligibility_query_counts_the_customers_other_accounts_as_a_credit_does(capped, chain, setup):
    a = fund(chain, usdc=800_000)
    first = capped.credit(usdc("ACC-A", "800000", a, "q-1", customer="CUST-1"))
    capped.credit(usdc("ACC-B", "1", fund(chain, usdc=1), "q-2", customer="CUST-1"))
    dacp = Dacp(Settings(policies=Path(setup.policies), log=Path(getattr(capped.store.db, "url", capped.store.where)),
                         engine="python", sections={"approvals": {"required": False}}))
    doc = json.loads((ROOT / "examples" / "queries" / "usdc-eligible.json").read_text())
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    doc = {k: v for k, v in doc.items() if k not in ("portfolio", "id")}
    doc.update(account="ACC-B", as_of=now, quantity="800000", custody=dict(doc["custody"], balance="800000"),
               evidence=dict(usdc_evidence(), price_updated_at=now))
    (d,) = dacp.evaluate([parse_query(doc)])
    cap = next(r for r in d.to_json()["reasons"] if r["rule"] == "limit.usdc-customer-cap")
    assert Decimal(cap["observed"]["group_value_usd"]) == Decimal(first["collateral_value_usd"]) + Decimal("0.97")
    assert d.to_json()["excluded_by_limits_usd"] != "0.00" and dacp.replay(d.id).identical
    (alone,) = dacp.evaluate([parse_query({**doc, "account": "ACC-NEW"})])  # no customer: its own holding only
    assert next(r for r in alone.to_json()["reasons"] if r["rule"] == "limit.usdc-customer-cap")["observed"][
        "group_value_usd"] in ("0", "0.00")


def test_the_first_credit_naming_a_customer_fixes_it_and_another_is_refused(capped, chain):
    a, b, c = (fund(chain, usdc=300_000) for _ in range(3))
    capped.credit(usdc("ACC-1", "100000", a, "f-1"))  # opened without a customer
    assert capped.store.account("ACC-1").customer is None
    r = capped.credit(usdc("ACC-1", "100000", b, "f-2", customer="CUST-9"))  # the first to name one fixes it
    assert r["status"] == "credited" and capped.store.account("ACC-1").customer == "CUST-9"
    assert capped.credit(usdc("ACC-1", "100000", c, "f-3"))["customer"] == "CUST-9"  # none named: the account's
    before = (capped.log.count(), capped.store.request_count(), capped.store.custody_states(),
              capped.store.positions(include_empty=True))
    with pytest.raises(CustomerMismatchError, match="belongs to customer CUST-9, not CUST-8") as err:
        capped.credit(usdc("ACC-1", "100000", c, "f-4", customer="CUST-8"))
    assert (err.value.code, err.value.exit_code, err.value.http_status) == ("customer_mismatch", 3, 409)
    assert err.value.to_json()["reason"] == "customer.fixed" and err.value.where == "customer"
    assert (capped.log.count(), capped.store.request_count(), capped.store.custody_states(),
            capped.store.positions(include_empty=True)) == before  # nothing written
    assert capped.store.request("f-4") is None and capped.store.account("ACC-1").customer == "CUST-9"
    with pytest.raises(InputError, match="not a valid identifier"):  # the strict grammar, before anything is read
        capped.credit(usdc("ACC-2", "1", c, "f-5", customer="CUST 1"))
    assert capped.store.account("ACC-2") is None
    # the projection recomputes the customer from the credits' leaves; an edited customer is named
    assert capped.check() == []
    capped.store.db.execute("UPDATE ledger_accounts SET customer = 'CUST-8' WHERE account = 'ACC-1'")
    diffs = [(d.table, d.key, d.field, d.stored, d.recomputed) for d in capped.reconcile().differences]
    assert diffs == [("ledger_accounts", "(ACC-1)", "customer", "CUST-8", "CUST-9")]
    capped.store.db.execute("UPDATE ledger_accounts SET customer = NULL WHERE account = 'ACC-1'")
    assert [(d.field, d.stored) for d in capped.reconcile().differences] == [("customer", "null")]


def test_cli_credit_names_the_customer_and_replay_is_identical(capped, setup, chain, tmp_path, monkeypatch, capsys):
    a, b = fund(chain, usdc=800_000), fund(chain, usdc=800_000)
    monkeypatch.delenv("DACP_CONFIG", raising=False)
    for k, v in {"DACP_POLICIES": setup.policies, "DACP_LOG": setup.target, "DACP_ETH_RPC_URL": setup.rpc_url,
                 "DACP_PRICES_FILE": setup.prices, "DACP_APPROVALS_REQUIRED": "false"}.items():
        monkeypatch.setenv(k, v)
    ev = tmp_path / "usdc-evidence.json"
    ev.write_text(json.dumps(usdc_evidence()))

    def credit(account: str, address: str, key: str, customer: str) -> int:
        return main(["credit", "--account", account, "--participant", "FCM-ALPHA", "--asset", "USDC", "--address",
                     address, "--custodian", "coinbase-custody", "--segregated", "--evidence", str(ev), "--quantity",
                     "800000", "--idempotency-key", key, "--customer", customer])

    assert credit("ACC-C1", a, "cli-1", "CUST-1") == 0
    capsys.readouterr()
    assert credit("ACC-C2", b, "cli-2", "CUST-1") == 0
    out = json.loads(capsys.readouterr()[0])
    assert out["customer"] == "CUST-1" and out["excluded_by"] == ["limit.usdc-customer-cap"]
    assert main(["replay", out["decision_id"]]) == 0  # decided with the customer's holdings, kept in the log
    assert f"replay of {out['decision_id']}: IDENTICAL" in capsys.readouterr()[0]
    assert credit("ACC-C2", b, "cli-3", "CUST-2") == 3  # another customer for the account: refused, exit 3
    assert "account ACC-C2 belongs to customer CUST-1, not CUST-2" in capsys.readouterr()[1]
    assert credit("ACC-C3", b, "cli-4", "CUST 2") == 3
    assert "--customer: 'CUST 2' is not a valid identifier" in capsys.readouterr()[1]
    assert main(["ledger", "check"]) == 0


def test_a_ledger_of_schema_version_1_gains_the_customer_column(setup):
    """A ledger made by the previous version (no customer column, schema version 1), SQLite or PostgreSQL,
    opens, is migrated in place, and its accounts read back without a customer."""
    store = LedgerStore(setup.target)
    with store.transaction():
        store.db.execute("DROP INDEX ledger_accounts_customer")
        store.db.execute("ALTER TABLE ledger_accounts DROP COLUMN customer")
        store.db.execute("INSERT INTO ledger_accounts VALUES ('ACC-OLD', 'FCM-ALPHA', 'customer-segregated', '2026-01-01')")
        store.db.execute("UPDATE ledger_meta SET value = '1' WHERE key = 'schema_version'")
    store.close()
    store = LedgerStore(setup.target)
    try:
        assert store.account("ACC-OLD").customer is None and "customer" in store._columns("ledger_accounts")
        assert store.db.execute("SELECT value FROM ledger_meta WHERE key = 'schema_version'").fetchone()[0] \
            == schema.SCHEMA_VERSION == "2"
        store.db.execute("UPDATE ledger_meta SET value = '7' WHERE key = 'schema_version'")
    finally:
        store.close()
    with pytest.raises(StorageError, match="ledger schema version 7, expected 2"):
        LedgerStore(setup.target)
