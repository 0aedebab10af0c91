"""POST /v1/credits and /v1/withdrawals in-process (TestClient) against a REAL anvil node (chain id 1,
TestFiatToken as USDC, the policy copy's USDC contract replaced, approvals off), as tests/integration/
test_ledger.py sets the ledger up: verified credit, idempotent replay, same key with another body, a claim
above the verified balance, withdrawal, roles, a node that is down (502, nothing credited, retryable)."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone

import pytest
from fastapi.testclient import TestClient

from rules.http.app import create_app
from rules.http.auth import Token, hash_token
from rules.http.config import ServiceConfig
from rules.settings import Settings
from tests.support.anvil_node import anvil_mine, anvil_node, deploy, new_address, transact
from tests.support.ledger_workload import usdc_evidence, write_policies, write_prices
from tests.support import ROOT, free_port

pytestmark = pytest.mark.integration
UNIT = 10**6  # USDC base units
TOKENS = {role: f"ledger-{role}-" + "z" * 32 for role in ("clearing", "auditor", "compliance")}
CONFIG = ServiceConfig(tokens=tuple(Token(f"{r}-1", r, hash_token(t)) for r, t in TOKENS.items()))


def headers(role: str | None = "clearing", key: str | None = None) -> dict[str, str]:
    h = {"Authorization": f"Bearer {TOKENS[role]}"} if role else {}
    return {**h, "Idempotency-Key": key} if key else h


@pytest.fixture(scope="module")
def chain():
    with anvil_node(chain_id=1) as node:
        token = deploy(node.w3, "TestFiatToken", "USD Coin", "USDC")
        yield node, token


def fund(chain, usdc: int) -> str:
    node, token = chain
    a = new_address(node.w3)
    transact(node.w3, token.functions.mint(a, usdc * UNIT))
    anvil_mine(node.w3, 70)  # past anvil's finalized lag (64 blocks)
    return a


def make_settings(tmp_path, chain, rpc_url: str | None = None) -> Settings:
    node, token = chain
    pol = tmp_path / "policies"
    if not pol.exists():
        write_policies(ROOT, pol, token.address)
    prices = write_prices(tmp_path / "prices.yaml")
    return Settings(policies=pol, log=tmp_path / "log.sqlite", ethereum={"rpc_url": rpc_url or node.url},
                    prices={"file": str(prices), "max_age_s": 86400}, sections={"approvals": {"required": False}})


@pytest.fixture
def client(tmp_path, chain):
    with TestClient(create_app(make_settings(tmp_path, chain), CONFIG)) as c:
        yield c


def credit_body(address: str, quantity: str, account: str = "ACC-1", participant: str = "FCM-ALPHA") -> dict:
    return {"account": account, "participant": participant, "asset": "USDC", "quantity": quantity,
            "addresses": [address], "custodian": "coinbase-custody", "segregated": True, "evidence": usdc_evidence()}


def positions(path) -> list[tuple]:
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT account, quantity_raw FROM ledger_positions ORDER BY account").fetchall()
        return [(acc, int(q)) for acc, q in rows if int(q) > 0]  # base units are stored as exact text
    except sqlite3.OperationalError:  # no ledger tables yet: nothing credited
        return []
    finally:
        db.close()


def test_credit_replay_conflict_and_withdraw(client, chain, tmp_path):
    a = fund(chain, 500_000)
    bundle = client.get("/v1/policy", headers=headers()).json()["bundle"]
    r = client.post("/v1/credits", json=credit_body(a, "400000"), headers=headers(key="k-1"))
    assert r.status_code == 201, r.text
    got = r.json()
    assert got["status"] == "credited" and got["replayed"] is False
    assert got["quantity_credited"] == "400000" and got["collateral_value_usd"] == "391960.80"  # strings, exact
    assert got["allocations"] == [{"address": a, "quantity": "400000", "collateral_value_usd": "391960.80"}]
    assert r.headers["X-Policy-Bundle"] == got["policy_bundle"] == got["bundle"] == bundle
    # the decision is in the service's decision log: an auditor can read it
    d = client.get(f"/v1/decisions/{got['decision_id']}", headers=headers("auditor"))
    assert d.status_code == 200 and d.json()["decision"]["eligible"] is True

    again = client.post("/v1/credits", json=credit_body(a, "400000"), headers=headers(key="k-1"))
    assert again.status_code == 200 and again.json()["replayed"] is True
    assert again.json()["decision_id"] == got["decision_id"]

    other = client.post("/v1/credits", json=credit_body(a, "1"), headers=headers(key="k-1"))
    assert other.status_code == 409, other.text
    err = other.json()["error"]
    assert err["code"] == "idempotency_key_reused" and "different credit request" in err["message"]
    assert other.headers["X-Policy-Bundle"] == bundle

    # 100000 is left at the address: another account asking for 200000 is refused (200, status refused)
    ref = client.post("/v1/credits", json=credit_body(a, "200000", "ACC-2", "FCM-BRAVO"), headers=headers(key="b-1"))
    assert ref.status_code == 200, ref.text
    assert ref.json()["status"] == "refused" and ref.json()["refusal"]["rule"] == "custody.already-credited"
    assert ref.json()["quantity_credited"] == "0"
    assert positions(tmp_path / "log.sqlite") == [("ACC-1", 400_000 * UNIT)]

    w = client.post("/v1/withdrawals", json={"account": "ACC-1", "asset": "USDC", "quantity": "40000"},
                    headers=headers(key="w-1"))
    assert w.status_code == 201, w.text
    assert w.json()["status"] == "withdrawn" and w.json()["collateral_value_usd"] == "39196.08"
    assert w.headers["X-Policy-Bundle"] == bundle
    w2 = client.post("/v1/withdrawals", json={"account": "ACC-1", "asset": "USDC", "quantity": "40000"},
                     headers=headers(key="w-1"))
    assert w2.status_code == 200 and w2.json()["replayed"] is True
    too_much = client.post("/v1/withdrawals", json={"account": "ACC-1", "asset": "USDC", "quantity": "360001"},
                           headers=headers(key="w-2"))
    assert too_much.status_code == 422 and "holds 360000" in too_much.json()["error"]["message"]
    assert positions(tmp_path / "log.sqlite") == [("ACC-1", 360_000 * UNIT)]
    v = client.get("/v1/audit/verify", headers=headers("auditor")).json()
    assert v["ok"] is True


def test_claim_above_the_verified_balance_is_refused(client, chain, tmp_path):
    a = fund(chain, 1_000)
    r = client.post("/v1/credits", json=credit_body(a, "2000"), headers=headers(key="too-much"))
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "refused" and "custody.balance-verified" in r.json()["failed_rules"]
    assert r.json()["refusal"]["retryable"] is False
    again = client.post("/v1/credits", json=credit_body(a, "2000"), headers=headers(key="too-much"))
    assert again.status_code == 200 and again.json()["replayed"] is True  # the refusal is remembered
    assert positions(tmp_path / "log.sqlite") == []


BAD = [
    ("number for money", {"quantity": 12.5}, "decimal string"),
    ("NaN string", {"quantity": "NaN"}, "not a plain decimal"),
    ("exponent", {"quantity": "1e5"}, "not a plain decimal"),
    ("unknown field", {"colour": "red"}, "unknown field(s): 'colour'"),
    ("wrong type", {"addresses": "0xabc"}, "list of 1 to 100"),
    ("segregated not bool", {"segregated": "yes"}, "true or false"),
    ("bad time", {"as_of": "yesterday"}, "RFC 3339"),
    ("unknown asset", {"asset": "DOGE"}, "unknown asset"),
    ("bad customer", {"customer": "CUST 1"}, "not a valid identifier"),
    ("customer not text", {"customer": 7}, "not a valid identifier"),
]


@pytest.mark.parametrize("name,change,words", BAD, ids=[b[0] for b in BAD])
def test_bad_credit_bodies_are_422_with_a_clear_message(client, chain, tmp_path, name, change, words):
    body = {**credit_body("0x" + "1" * 40, "10"), **change}
    r = client.post("/v1/credits", json=body, headers=headers(key="bad-1"))
    assert r.status_code == 422, r.text
    assert words in r.json()["error"]["message"] and "Traceback" not in r.text
    assert len(r.headers["X-Policy-Bundle"]) == 64
    assert positions(tmp_path / "log.sqlite") == []


def test_the_customer_is_fixed_by_the_first_credit_and_another_is_409(client, chain, tmp_path):
    a, b = fund(chain, 100_000), fund(chain, 100_000)
    r = client.post("/v1/credits", json={**credit_body(a, "100000"), "customer": "CUST-1"}, headers=headers(key="c-1"))
    assert r.status_code == 201 and r.json()["customer"] == "CUST-1", r.text
    other = client.post("/v1/credits", json={**credit_body(b, "100000"), "customer": "CUST-2"},
                        headers=headers(key="c-2"))
    assert other.status_code == 409, other.text
    err = other.json()["error"]
    assert (err["code"], err["reason"], err["customer"], err["asked"]) == ("customer_mismatch", "customer.fixed",
                                                                         "CUST-1", "CUST-2")
    assert "account ACC-1 belongs to customer CUST-1, not CUST-2" in err["message"] and err["retryable"] is False
    assert positions(tmp_path / "log.sqlite") == [("ACC-1", 100_000 * UNIT)]  # nothing written
    same = client.post("/v1/credits", json=credit_body(b, "100000"), headers=headers(key="c-2"))  # none named: CUST-1
    assert same.status_code == 201 and same.json()["customer"] == "CUST-1", same.text


def test_idempotency_key_is_required_and_checked(client):
    body = credit_body("0x" + "1" * 40, "10")
    r = client.post("/v1/credits", json=body, headers=headers())
    assert r.status_code == 422 and "Idempotency-Key" in r.json()["error"]["message"]
    r = client.post("/v1/credits", json=body, headers=headers(key="no spaces allowed"))
    assert r.status_code == 422 and r.json()["error"]["where"] == "Idempotency-Key"
    r = client.post("/v1/credits", content=b'{"quantity": NaN}', headers={**headers(key="k"),
                                                                          "Content-Type": "application/json"})
    assert r.status_code == 422 and "NaN" in r.json()["error"]["message"]


@pytest.mark.parametrize("path", ["/v1/credits", "/v1/withdrawals"])
def test_roles(client, path):
    body = {"account": "ACC-1", "asset": "USDC", "quantity": "1"}
    for role in ("auditor", "compliance"):
        r = client.post(path, json=body, headers=headers(role, key="r-1"))
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = client.post(path, json=body, headers={"Idempotency-Key": "r-1"})
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
    r = client.post(path, json=body)  # no token and no key: still 401 first
    assert r.status_code == 401


def test_node_down_is_502_nothing_credited_and_retryable_with_the_same_key(tmp_path, chain):
    a = fund(chain, 1_000)
    down = make_settings(tmp_path, chain, rpc_url=f"http://127.0.0.1:{free_port()}")
    with TestClient(create_app(down, CONFIG)) as c:
        r = c.post("/v1/credits", json=credit_body(a, "500"), headers=headers(key="retry-1"))
        assert r.status_code == 502, r.text
        err = r.json()["error"]
        assert err["code"] == "custody_unverified" and err["retryable"] is True and "same Idempotency-Key" in err["message"]
        assert err["result"]["status"] == "refused" and err["result"]["quantity_credited"] == "0"
        assert len(r.headers["X-Policy-Bundle"]) == 64
        m = c.get("/metrics").text
        assert 'dacp_custody_verification_failures_total{reason="credit"} 1.0' in m
    assert positions(tmp_path / "log.sqlite") == []
    # the node is back (the service is configured with it): the same key credits once
    with TestClient(create_app(make_settings(tmp_path, chain), CONFIG)) as c:
        r = c.post("/v1/credits", json=credit_body(a, "500"), headers=headers(key="retry-1"))
        assert r.status_code == 201, r.text
        assert r.json()["status"] == "credited"
    assert positions(tmp_path / "log.sqlite") == [("ACC-1", 500 * UNIT)]


def test_credit_runs_on_the_snapshot_it_started_with(client, chain, tmp_path):
    """Hot reload: a credit decided with a snapshot taken before a reload is decided under that bundle."""
    svc = client.app.state.service
    before = svc.active
    p = tmp_path / "policies" / "programme.yaml"
    p.write_text(p.read_text().replace('version: "2026.11.1"', 'version: "2026.12.9"'))
    svc.reload(None, "test")
    assert svc.active.hash != before.hash
    from rules.ledger.book import CreditRequest
    from decimal import Decimal

    a = fund(chain, 100)
    req = CreditRequest("ACC-9", "FCM-ALPHA", "USDC", Decimal("50"), (a,), "snap-1", custodian="coinbase-custody",
                        segregated=True, evidence=usdc_evidence())
    assert svc.credit(before, req)["bundle"] == before.hash
    r = client.post("/v1/credits", json=credit_body(a, "50", "ACC-9"), headers=headers(key="snap-2"))
    assert r.status_code == 201 and r.json()["bundle"] == r.headers["X-Policy-Bundle"] == svc.active.hash


def test_service_verify_reads_the_chain_off_the_worker_single_and_batch(tmp_path, chain):
    """[service] verify: every decision's custody is read on-chain (on the chain's pool, then decided on the
    worker), single queries and batches alike, with the evidence stored with the decision."""
    import json
    from dataclasses import replace

    a = fund(chain, 1_000_000)
    q = json.loads((ROOT / "examples" / "queries" / "usdc-eligible.json").read_text())
    q = {**q, "custody": {**q["custody"], "addresses": [a]}}
    with TestClient(create_app(make_settings(tmp_path, chain), replace(CONFIG, verify=True))) as c:
        one = c.post("/v1/eligibility", json={**q, "id": "v-1"}, headers=headers("clearing"))
        batch = c.post("/v1/eligibility/batch", json={"queries": [{**q, "id": "v-2"}, {**q, "id": "v-3",
                       "custody": {**q["custody"], "addresses": [new_address(chain[0].w3)]}}]},
                       headers=headers("clearing"))
    assert one.status_code == 200 and batch.status_code == 200, (one.text, batch.text)
    d = one.json()
    assert d["verification"]["status"] == "verified", d
    custody = next(e for e in d["evidence"] if e["kind"] == "custody")
    assert custody["raw_balance"] == str(1_000_000 * UNIT) and custody["block_number"] > 0
    funded, empty = batch.json()["decisions"]
    assert next(e for e in funded["evidence"] if e["kind"] == "custody")["raw_balance"] == str(1_000_000 * UNIT)
    assert next(e for e in empty["evidence"] if e["kind"] == "custody")["raw_balance"] == "0"
def test_eligibility_counts_the_ledger_and_incident_notices(client, chain):
    """Once the service's database holds a ledger, /v1/eligibility decides with the ledger's holdings; a
    portfolio sent is the caller's what-if, flagged so. Incident notices: recorded, listed, in the log."""
    a = fund(chain, 300_000)
    assert client.post("/v1/credits", json=credit_body(a, "300000", "ACC-E"), headers=headers(key="e-1")).status_code == 201
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    query = {"account": "ACC-E", "participant": "FCM-ALPHA", "asset": "USDC", "quantity": "1000", "price_usd": "0.9999",
             "as_of": now, "custody": {"custodian": "coinbase-custody", "addresses": [a], "segregated": True,
                                       "balance": "1000"},
             "evidence": {**usdc_evidence(), "price_updated_at": now}}
    r = client.post("/v1/eligibility", json=query, headers=headers())
    assert r.status_code == 200, r.text
    assert r.json()["holdings"]["source"] == "ledger", r.json()["failed_rules"]
    what_if = client.post("/v1/eligibility", json={**query, "portfolio": [{"asset": "ETH",
                                                                            "collateral_value_usd": "1"}]},
                          headers=headers())
    assert what_if.json()["holdings"]["source"] == "what-if (caller's portfolio)"

    body = {"kind": "cybersecurity", "significant": True, "start": "2026-11-20T09:00:00Z",
            "description": "operator credentials phished; tokens rotated"}
    assert client.post("/v1/incidents", json=body, headers=headers("auditor")).status_code == 403
    for bad in ({**body, "kind": "market_drop"}, {**body, "significant": "yes"}, {**body, "extra": 1},
                {k: v for k, v in body.items() if k != "start"}, {**body, "end": "2026-11-20T08:00:00Z"}):
        assert client.post("/v1/incidents", json=bad, headers=headers()).status_code == 422, bad
    r = client.post("/v1/incidents", json=body, headers=headers("compliance"))
    assert r.status_code == 201, r.text
    notice = r.json()
    assert notice["kind"] == "cybersecurity" and notice["end"] is None and notice["recorded_by"] == "compliance-1"
    listed = client.get("/v1/incidents", params={"since": "2026-11-21T00:00:00Z"}, headers=headers("auditor")).json()
    assert listed == {"incidents": [notice], "count": 1}  # still open: going on since
    assert client.get("/v1/incidents", params={"since": "yesterday"}, headers=headers("auditor")).status_code == 422
    d = client.get(f"/v1/decisions/{notice['incident_id']}", headers=headers("auditor"))
    assert d.status_code in (404, 422)  # an incident entry is not a decision
