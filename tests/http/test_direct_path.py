"""``POST /v1/eligibility`` is answered by the door past FastAPI's router (rules.http.door ``direct``,
rules.http.routes.eligibility.evaluate_direct): it must answer exactly as the routed endpoints do - the same
refusals with the same bodies and headers, the same metrics and log line, the same 405 for other methods."""

from __future__ import annotations

import io
import json

import pytest

from rules.http.logs import configure_logging
from tests.http.test_service import BTC, auth, client, log_count, policies, settings  # noqa: F401 (fixtures)

BATCH = "/v1/eligibility/batch"  # routed by FastAPI: the reference for every refusal


def _error(r) -> tuple[int, str, bool]:
    body = r.json()
    assert set(body) == {"error", "policy_bundle"} and r.headers["X-Policy-Bundle"] == body["policy_bundle"]
    assert len(r.headers["X-Request-Id"]) >= 1 and "Traceback" not in r.text
    return r.status_code, body["error"]["code"], body["error"]["retryable"]


CASES = {
    "no token": ({}, b"{}", "application/json"),
    "not a bearer": ({"Authorization": "Basic abc"}, b"{}", "application/json"),
    "unknown token": ({"Authorization": "Bearer nope"}, b"{}", "application/json"),
    "wrong role": (auth("auditor"), b"{}", "application/json"),
    "not json media": (auth("clearing"), b"{}", "text/plain"),
    "not json": (auth("clearing"), b"{nope", "application/json"),
    "empty": (auth("clearing"), b"", "application/json"),
    "duplicate keys": (auth("clearing"), b'{"a": 1, "a": 2}', "application/json"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_refusal_is_the_routed_endpoints_refusal(client, settings, case):  # noqa: F811
    headers, body, ctype = CASES[case]
    direct = client.post("/v1/eligibility", content=body, headers={**headers, "Content-Type": ctype})
    routed = client.post(BATCH, content=body, headers={**headers, "Content-Type": ctype})
    assert _error(direct) == _error(routed), (direct.text, routed.text)
    if direct.status_code == 401:
        assert direct.headers["WWW-Authenticate"] == routed.headers["WWW-Authenticate"] == "Bearer"
    assert log_count(settings.log) == 0  # nothing decided or logged


def test_a_body_over_the_limit_is_413_before_it_is_read(client):  # noqa: F811
    r = client.post("/v1/eligibility", content=b"x", headers={**auth("clearing"), "Content-Type": "application/json",
                                                                "Content-Length": str(10**9)})
    assert _error(r)[:2] == (413, "too_large")


def test_an_invalid_query_is_422_naming_the_field(client, settings):  # noqa: F811
    r = client.post("/v1/eligibility", json={**BTC, "quantity": "12.5\n"}, headers=auth("clearing"))
    assert _error(r)[:2] == (422, "invalid_input") and "quantity" in r.json()["error"]["message"]
    assert log_count(settings.log) == 0


def test_other_methods_and_paths_still_go_through_the_router(client):  # noqa: F811
    assert _error(client.get("/v1/eligibility", headers=auth("clearing")))[:2] == (405, "method_not_allowed")
    assert _error(client.put("/v1/eligibility", json=BTC, headers=auth("clearing")))[:2] == (405, "method_not_allowed")


def test_a_decision_is_the_same_json_and_is_counted_and_logged_as_evaluate(client, settings):  # noqa: F811
    stream = io.StringIO()
    configure_logging(stream)
    r = client.post("/v1/eligibility", json=BTC, headers={**auth("clearing"), "X-Request-Id": "req-42"})
    assert r.status_code == 200 and r.headers["X-Request-Id"] == "req-42"
    decision = r.json()
    assert decision["eligible"] is True and r.headers["X-Policy-Bundle"] == decision["policy"]["bundle"]
    batch = client.post(BATCH, json={"queries": [BTC]}, headers=auth("clearing")).json()["decisions"][0]
    drop = {"decision_id", "decided_at"}
    assert {k: v for k, v in decision.items() if k not in drop} == {k: v for k, v in batch.items() if k not in drop}
    assert log_count(settings.log) == 2
    metrics = client.get("/metrics").text
    assert 'dacp_http_requests_total{operation="evaluate",status="200"} 1.0' in metrics
    line = next(json.loads(x) for x in stream.getvalue().splitlines() if '"req-42"' in x)
    assert (line["operation"], line["status"], line["role"], line["token"]) == ("evaluate", 200, "clearing",
                                                                                "clearing-1")
