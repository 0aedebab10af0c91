"""Margin over HTTP against a real anvil node and the service's ledger (SQLite): requirements posted as JSON
(one log entry), coverage the same as the Python door's on the same database, a withdrawal that would leave
the account under-margined refused (409 under_margined, nothing withdrawn), calls issued, what is free, roles,
and bad input (422 naming the record and field, nothing stored)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient

from rules.app import Dacp
from rules.http.app import create_app
from tests.http.test_ledger_routes import CONFIG, chain, credit_body, fund, headers, make_settings  # noqa: F401

pytestmark = pytest.mark.integration


def _day() -> str:
    day = datetime.now(timezone.utc).date()
    while day.weekday() >= 5 or day.isoformat() in {"2026-11-11", "2026-11-26", "2026-12-25", "2027-01-01",
                                                   "2027-01-18", "2027-02-15"}:
        day -= timedelta(days=1)
    return day.isoformat()


def test_margin_requirements_coverage_refused_withdrawal_calls_and_free(tmp_path, chain):  # noqa: F811
    settings = make_settings(tmp_path, chain)
    with TestClient(create_app(settings, CONFIG)) as client:
        a = fund(chain, 200_000)
        assert client.post("/v1/credits", json=credit_body(a, "100000"), headers=headers(key="k-1")).status_code == 201
        body = {"requirements": [{"account": "ACC-1", "dco": "CME", "business_day": _day(),
                                  "requirement_usd": "150000.00", "net_of_offsets": True}],
                "collateral": [{"account": "ACC-1", "holding": "cash-1", "class": "cash", "as_of": _day(),
                                "amount_usd": "20000.00"}]}
        bad = {"requirements": [{**body["requirements"][0], "requirement_usd": 150000}]}
        r = client.post("/v1/margin/requirements", json=bad, headers=headers())
        assert r.status_code == 422 and r.json()["error"]["where"] == "body: requirements[0]: requirement_usd"
        assert client.post("/v1/margin/requirements", json=body, headers=headers("auditor")).status_code == 403
        r = client.post("/v1/margin/requirements", json=body, headers=headers())
        assert r.status_code == 201, r.text
        assert r.json()["requirements"] == 1 and r.json()["collateral"] == 1
        cov = client.get("/v1/margin/coverage", params={"account": "ACC-1"}, headers=headers("auditor")).json()
        row = cov["coverage"][0]
        assert (row["status"], row["ledger_collateral_usd"], row["offledger_collateral_usd"], row["deficit_usd"]) == (
            "deficit", "97990.20", "20000.00", "32009.80")
        same = [c.to_json() for c in Dacp(settings, require_approval=False).margin_coverage("ACC-1")]
        assert [{**c, "as_of": None} for c in same] == [{**c, "as_of": None} for c in cov["coverage"]]

        r = client.post("/v1/withdrawals", json={"account": "ACC-1", "asset": "USDC", "quantity": "10"},
                        headers=headers(key="w-1"))
        assert r.status_code == 409, r.text
        err = r.json()["error"]
        assert err["code"] == "under_margined" and err["reason"] == "withdrawal_under_margined"
        assert err["deficit_usd"] == "32019.60" and err["retryable"] is False  # 10 USDC less: 9.80 deeper
        after = client.get("/v1/margin/coverage", params={"account": "ACC-1"}, headers=headers()).json()
        assert after["coverage"][0]["ledger_collateral_usd"] == "97990.20"  # nothing withdrawn

        r = client.post("/v1/margin/calls", headers=headers())
        assert r.status_code == 200 and [s["step"] for s in r.json()["steps"]] == ["issued"]
        assert r.json()["calls"][0]["amount_usd"] == "33000.00"
        free = client.get("/v1/margin/free", params={"account": "ACC-1"}, headers=headers()).json()
        assert free["free_usd"] == "0.00" and free["assets"][0]["free_quantity"] == "0"
        r = client.get("/v1/margin/coverage", params={"as_of": "yesterday"}, headers=headers())
        assert r.status_code == 422 and r.json()["error"]["where"] == "as_of"
