"""dacp serve in-process (FastAPI TestClient): contract, bad input, roles, reload, logs, metrics, OpenAPI."""

from __future__ import annotations

import io
import json
import shutil
import time
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from rules.engine.query import parse_query
from rules.app import Dacp, comparable
from rules.audit.checkpoint import Signer
from rules.audit.log import DecisionLog
from rules.audit.receipt import check_receipt
from rules.cli.run import main
from rules.errors import InputError
from rules.http.app import create_app, openapi_document
from rules.http.auth import ACCESS, PUBLIC, Token, authenticate, hash_token
from rules.http.config import ServiceConfig, service_config
from rules.http.logs import configure_logging
from rules.settings import Settings, load_settings
from tests.support.tamper import edit_entry
from tests.support import ROOT

EXAMPLES = ROOT / "examples" / "queries"
TOKENS = {role: role + "-token-" + "x" * 32 for role in ("clearing", "auditor", "compliance")}
CONFIG = ServiceConfig(tokens=tuple(Token(f"{r}-1", r, hash_token(t)) for r, t in TOKENS.items()))
# approvals (rules/lifecycle/approvals.py) are tested on their own; here they are off except where a test says so
NO_APPROVALS = {"approvals": {"required": False}}
BTC = json.loads((EXAMPLES / "btc-eligible.json").read_text())
BTC_NO = json.loads((EXAMPLES / "btc-ineligible-confirmations.json").read_text())


def auth(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


@pytest.fixture
def policies(tmp_path) -> Path:
    d = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", d, ignore=shutil.ignore_patterns("tests"))
    return d


SIGNER = Signer.generate("test-operator")


@pytest.fixture
def settings(tmp_path, policies) -> Settings:
    key = tmp_path / "operator.key"
    key.write_text(SIGNER.key_text())
    return Settings(policies=policies, log=tmp_path / "log.sqlite", sections=NO_APPROVALS,
                    audit={"signing_key_file": key})


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings, CONFIG)) as c:
        yield c


def log_count(path: Path) -> int:
    return DecisionLog(path).count() if path.exists() else 0


def bump_version(policies: Path, version: str) -> None:
    p = policies / "programme.yaml"
    p.write_text(p.read_text().replace('version: "2026.11.1"', f'version: "{version}"'))


# -- the contract ----------------------------------------------------------------------------------
def test_eligibility_is_the_cli_contract(client, settings):
    r = client.post("/v1/eligibility", json=BTC, headers=auth("clearing"))
    assert r.status_code == 200
    got = r.json()
    want = Dacp(settings, log_enabled=False).evaluate([parse_query(BTC)])[0].to_json()
    assert comparable(got) == comparable(want)
    assert r.headers["X-Policy-Bundle"] == got["policy"]["bundle"] == want["policy"]["bundle"]
    assert got["eligible"] is True and isinstance(got["collateral_value_usd"], str)
    assert log_count(settings.log) == 1


def test_batch_in_order_and_all_or_nothing(client, settings):
    r = client.post("/v1/eligibility/batch", json={"queries": [BTC, BTC_NO]}, headers=auth("clearing"))
    assert r.status_code == 200
    body = r.json()
    assert [d["eligible"] for d in body["decisions"]] == [True, False]
    assert body["policy_bundle"] == r.headers["X-Policy-Bundle"]
    assert log_count(settings.log) == 2
    bad = dict(BTC, quantity=12.5)
    r = client.post("/v1/eligibility/batch", json={"queries": [BTC, bad, BTC]}, headers=auth("clearing"))
    assert r.status_code == 422
    assert "queries[1]: quantity" in r.json()["error"]["message"] and "nothing was decided" in r.json()["error"]["message"]
    assert log_count(settings.log) == 2


def test_batch_answers_are_the_cli_contract_over_a_book(client, settings):
    """The batch response is encoded from the decisions' compact form: every decision of a varied book
    (all assets, refusals, limits that bite) must be what the engine's public form says, and what the
    log gives back for it."""
    from rules.engine.query import parse_query
    from tests.support.workload import book

    docs = book(120, seed=11)
    r = client.post("/v1/eligibility/batch", json={"queries": docs}, headers=auth("clearing"))
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    got = r.json()["decisions"]
    quiet = Dacp(settings, log_enabled=False)
    want = [d.to_json() for d in quiet.evaluate([parse_query(d) for d in docs])]
    assert [comparable(g) for g in got] == [comparable(w) for w in want]
    assert {d["eligible"] for d in got} == {True, False}
    logged = Dacp(settings)
    assert [logged.logged_decision(logged.log.get(g["decision_id"])) for g in got] == got


def test_batch_limit(settings):
    with TestClient(create_app(settings, ServiceConfig(tokens=CONFIG.tokens, max_batch=2))) as c:
        r = c.post("/v1/eligibility/batch", json={"queries": [BTC] * 3}, headers=auth("clearing"))
    assert r.status_code == 413 and "most accepted in one batch is 2" in r.json()["error"]["message"]


BAD_BODIES = [
    ("wrong type", json.dumps(dict(BTC, quantity=12.5)), 422, "decimal string"),
    ("unknown field", json.dumps(dict(BTC, colour="red")), 422, "unknown key 'colour'"),
    ("nested unknown field", json.dumps(dict(BTC, custody=dict(BTC["custody"], extra=1))), 422, "extra"),
    ("missing field", json.dumps({k: v for k, v in BTC.items() if k != "asset"}), 422, "'asset' is missing"),
    ("not an object", "[1, 2]", 422, "JSON object"),
    ("not JSON", "{\"account\": ", 422, "not valid JSON"),
    ("empty", "", 422, "empty"),
    ("NaN", json.dumps(BTC)[:-1] + ', "x": NaN}', 422, "NaN"),
    ("duplicate key", '{"asset": "BTC", "asset": "ETH"}', 422, "duplicate key"),
    ("too deep", "[" * 5000 + "]" * 5000, 422, "nested too deeply"),
    ("bad date", json.dumps(dict(BTC, as_of="2026-02-30T00:00:00Z")), 422, "not a real date"),
    ("absurd quantity", json.dumps(dict(BTC, quantity="999999999999999999")), 422, "absurdly large"),
    ("zero quantity", json.dumps(dict(BTC, quantity="0")), 422, "greater than zero"),
]


@pytest.mark.parametrize("name,body,status,words", BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_input_is_a_4xx_with_a_clear_message(client, settings, name, body, status, words):
    r = client.post("/v1/eligibility", content=body.encode(), headers={**auth("clearing"), "Content-Type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert words in err["message"] and "Traceback" not in r.text
    assert r.json()["policy_bundle"] == r.headers["X-Policy-Bundle"]
    assert log_count(settings.log) == 0


def test_size_limits_and_media_type(settings):
    with TestClient(create_app(settings, ServiceConfig(tokens=CONFIG.tokens, max_body_bytes=2048))) as c:
        big = json.dumps({"queries": [BTC] * 10}).encode()
        r = c.post("/v1/eligibility/batch", content=big, headers={**auth("clearing"), "Content-Type": "application/json"})
        assert r.status_code == 413 and "most accepted is 2048" in r.json()["error"]["message"]

        def chunks():  # no Content-Length: the limit holds while streaming
            for _ in range(10):
                yield json.dumps(BTC).encode()
        r = c.post("/v1/eligibility", content=chunks(), headers={**auth("clearing"), "Content-Type": "application/json"})
        assert r.status_code == 413
        r = c.post("/v1/eligibility", content=b"a=b", headers={**auth("clearing"), "Content-Type": "text/plain"})
        assert r.status_code == 415
        r = c.post("/v1/eligibility", content=b"\xff\xfe", headers={**auth("clearing"), "Content-Type": "application/json"})
        assert r.status_code == 422 and "UTF-8" in r.json()["error"]["message"]


def test_unknown_route_and_method(client):
    assert client.get("/v2/eligibility").status_code == 404
    r = client.get("/v1/eligibility", headers=auth("clearing"))
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_internal_error_is_a_plain_500_without_traceback(client):
    svc = client.app.state.service

    def boom(*a, **k):
        raise RuntimeError("secret internals")
    svc.decide = boom
    r = client.post("/v1/eligibility", json=BTC, headers=auth("clearing"))
    assert r.status_code == 500
    assert "secret" not in r.text and "Traceback" not in r.text and r.json()["error"]["code"] == "internal"
    assert r.headers["X-Request-Id"] in r.json()["error"]["message"]


def test_engine_error_maps_in_one_place():
    from rules.errors import EngineError
    from rules.errors import EvidenceError, PolicyError, StorageError
    from rules.http.errors import status_for

    assert status_for(InputError("x"))[0] == 422
    assert status_for(PolicyError([]))[0] == 422
    assert status_for(EvidenceError("node_unreachable", "x"))[0] == 502
    assert status_for(StorageError("x"))[0] == 503
    assert status_for(EngineError("x")) == (500, "engine_failed")


# -- auditors --------------------------------------------------------------------------------------
def test_decision_by_id_with_trace_and_explanation(client):
    d = client.post("/v1/eligibility", json=BTC_NO, headers=auth("clearing")).json()
    r = client.get(f"/v1/decisions/{d['decision_id']}", headers=auth("auditor"))
    assert r.status_code == 200
    body = r.json()
    assert body["decision"] == d and body["query"] == BTC_NO and body["bundle"] == d["policy"]["bundle"]
    assert "NOT ELIGIBLE" in body["explanation"] and "custody.btc-confirmations" in body["explanation"]
    assert any(x["rule"] == "custody.btc-confirmations" and x["outcome"] == "fail" for x in body["decision"]["reasons"])
    for bad in ("no-such-id", "x" * 300, "..%2F..%2Fetc"):
        r = client.get(f"/v1/decisions/{bad}", headers=auth("auditor"))
        assert r.status_code == 404, bad


def test_audit_verify_ok_then_tampered(client, settings):
    client.post("/v1/eligibility/batch", json={"queries": [BTC, BTC_NO, BTC]}, headers=auth("clearing"))
    r = client.get("/v1/audit/verify", headers=auth("auditor"))
    assert r.status_code == 200 and r.json()["ok"] is True and r.json()["entries"] == 3
    note = client.app.state.service.checkpoint(time.monotonic())
    ok = client.get("/v1/audit/verify", params={"checkpoint": note}, headers=auth("auditor")).json()
    assert ok["ok"] is True and ok["checkpoints"] == 1
    assert client.get("/v1/audit/verify", params={"checkpoint": "not a note"}, headers=auth("auditor")).status_code >= 400
    second = list(DecisionLog(settings.log).entries())[1]
    edit_entry(settings.log, 1, b'"12.5"', b'"125"', thorough=True)  # re-hashed, the tree rebuilt
    r = client.get("/v1/audit/verify", headers=auth("auditor"))
    assert r.status_code == 200 and r.json()["ok"] is False and "no longer extends" in r.json()["problem"]
    assert "dacp_audit_verification_failures_total 1.0" in client.get("/metrics").text
    r = client.get(f"/v1/decisions/{second.entry_id}", headers=auth("auditor"))  # the read is refused
    assert r.status_code == 500 and r.json()["error"]["code"] == "record_tampered" and "entry 2" in r.text


def test_receipts_and_checkpoints_over_http_check_offline(client, settings):
    (d,) = client.post("/v1/eligibility/batch", json={"queries": [BTC]}, headers=auth("clearing")).json()["decisions"]
    r = client.get(f"/v1/decisions/{d['decision_id']}/receipt", headers=auth("clearing"))
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_checkpointed"
    assert client.get("/v1/audit/checkpoint", headers=auth("clearing")).status_code == 404
    note = client.app.state.service.checkpoint(time.monotonic())
    cp = client.get("/v1/audit/checkpoint", headers=auth("clearing")).json()
    assert cp["note"] == note and cp["size"] == 1
    receipt = client.get(f"/v1/decisions/{d['decision_id']}/receipt", headers=auth("clearing")).json()
    receipt.pop("policy_bundle")
    checked = check_receipt(json.dumps(receipt), [SIGNER.verifier()])  # offline: no database, no service
    assert checked.index == 0 and checked.checkpoint.size == 1 and b'"decision"' in checked.entry
    logged = client.get(f"/v1/decisions/{d['decision_id']}?receipt=true", headers=auth("auditor")).json()
    assert logged["receipt"] == receipt


# -- roles -----------------------------------------------------------------------------------------
ENDPOINTS = {  # operation -> (method, path, body)
    "evaluate": ("POST", "/v1/eligibility", BTC),
    "evaluate_batch": ("POST", "/v1/eligibility/batch", {"queries": [BTC]}),
    "get_decision": ("GET", "/v1/decisions/{id}", None),
    "get_receipt": ("GET", "/v1/decisions/{id}/receipt", None),
    "verify_audit": ("GET", "/v1/audit/verify", None),
    "get_checkpoint": ("GET", "/v1/audit/checkpoint", None),
    "get_policy": ("GET", "/v1/policy", None),
    "reload_policy": ("POST", "/v1/policy/reload", None),
    "health": ("GET", "/v1/health", None),
    "ready": ("GET", "/v1/ready", None),
    "metrics": ("GET", "/metrics", None),
    "credit": ("POST", "/v1/credits", {"account": "ACC-1", "participant": "FCM-ALPHA", "asset": "USDC",
                                       "quantity": "1", "addresses": ["0x" + "1" * 40]}),
    "withdraw": ("POST", "/v1/withdrawals", {"account": "ACC-1", "asset": "USDC", "quantity": "1"}),
    "margin_import": ("POST", "/v1/margin/requirements", {"requirements": [
        {"account": "ACC-1", "dco": "CME", "business_day": "2026-11-20", "requirement_usd": "1.00"}]}),
    "margin_coverage": ("GET", "/v1/margin/coverage", None),
    "margin_calls": ("POST", "/v1/margin/calls", None),
    "margin_free": ("GET", "/v1/margin/free?account=ACC-1", None),
    "record_incident": ("POST", "/v1/incidents", {"kind": "other", "significant": False,
                                                  "start": "2026-11-20T09:00:00Z", "description": "a test notice"}),
    "list_incidents": ("GET", "/v1/incidents", None),
}
# the outcome needs nodes or answers 201: tests/http/test_ledger_routes.py, test_margin_routes.py (real anvil)
LEDGER_OPS = {"credit", "withdraw", "margin_import"}
ROLE_TABLE = {  # exactly what each role may do (the documented table, written out again on purpose)
    "clearing": {"evaluate", "evaluate_batch", "get_policy", "credit", "withdraw", "get_receipt", "get_checkpoint",
                 "margin_import", "margin_coverage", "margin_calls", "margin_free", "record_incident", "list_incidents"},
    "auditor": {"get_decision", "verify_audit", "get_policy", "get_receipt", "get_checkpoint", "margin_coverage",
                "list_incidents"},
    "compliance": {"reload_policy", "get_policy", "record_incident", "list_incidents"},
}


def test_every_route_is_in_the_access_table(client):
    ops = {r.operation_id for r in client.app.routes if getattr(r, "operation_id", None)}
    assert ops == set(ACCESS) | PUBLIC == set(ENDPOINTS)
    assert {op for op, roles in ACCESS.items() for r in roles} == set(ACCESS)
    for role, ops in ROLE_TABLE.items():
        assert {op for op, roles in ACCESS.items() if role in roles} == ops


@pytest.mark.parametrize("who", ["clearing", "auditor", "compliance", None, "invalid", "basic", "empty"])
@pytest.mark.parametrize("op", sorted(ENDPOINTS))
def test_role_matrix(client, op, who):
    method, path, body = ENDPOINTS[op]
    if "{id}" in path:
        did = client.post("/v1/eligibility", json=BTC, headers=auth("clearing")).json()["decision_id"]
        path = path.replace("{id}", did)
    if op in ("get_receipt", "get_checkpoint"):
        client.post("/v1/eligibility", json=BTC, headers=auth("clearing"))
        client.app.state.service.checkpoint(time.monotonic())
    headers = {"clearing": auth("clearing"), "auditor": auth("auditor"), "compliance": auth("compliance"), None: {},
               "invalid": {"Authorization": "Bearer " + "z" * 45}, "basic": {"Authorization": "Basic YTpi"},
               "empty": {"Authorization": "Bearer "}}[who]
    r = client.request(method, path, json=body, headers=headers)
    if op in PUBLIC:
        assert r.status_code == 200
    elif who in ROLE_TABLE and op in ROLE_TABLE[who] and op in LEDGER_OPS:
        assert r.status_code not in (401, 403) and r.status_code < 500, r.text  # let in (no node here)
    elif who in ROLE_TABLE and op in ROLE_TABLE[who]:
        assert r.status_code == (201 if method == "POST" and op == "record_incident" else 200), r.text
    elif who in ROLE_TABLE:
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    else:
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
    assert "X-Policy-Bundle" in r.headers


def test_tokens_compared_by_hash_only():
    tokens = CONFIG.tokens
    assert authenticate(tokens, TOKENS["auditor"]).role == "auditor"
    assert authenticate(tokens, TOKENS["auditor"] + "x") is None
    assert authenticate(tokens, hash_token(TOKENS["auditor"])) is None  # the stored hash is not a token
    assert authenticate((), TOKENS["auditor"]) is None


# -- configuration ---------------------------------------------------------------------------------
def test_tokens_file_and_environment(tmp_path):
    f = tmp_path / "tokens.toml"
    f.write_text(f'[[token]]\nname = "ch-a"\nrole = "clearing"\nsha256 = "{hash_token(TOKENS["clearing"])}"\n')
    cfg = tmp_path / "dacp.toml"
    cfg.write_text(f'[service]\ntokens_file = "{f}"\nport = 9000\nmax_batch = 10\n')
    c = service_config(load_settings(env={"DACP_SERVICE_PORT": "9100"}, config=cfg))
    assert c.port == 9100 and c.max_batch == 10 and [t.name for t in c.tokens] == ["ch-a"]
    for text, words in [('[service]\nport = "x"\n', "whole number"), ('[service]\ncolour = 1\n', "unknown settings"),
                        ('[service]\ntokens = [{name = "a", role = "root", sha256 = "' + "0" * 64 + '"}]\n', "unknown role"),
                        ('[service]\ntokens = [{name = "a", role = "auditor", token = "plain"}]\n', "never stored"),
                        ('[service]\ntokens = [{name = "a", role = "auditor", sha256 = "abc"}]\n', "64 lower-case"),
                        (f'[service]\ntokens_file = "{tmp_path}/none.toml"\n', "cannot read")]:
        cfg.write_text(text)
        with pytest.raises(InputError, match=words):
            service_config(load_settings(env={}, config=cfg))


def test_service_token_command(capsys, tmp_path, monkeypatch):
    assert main(["service-token", "--name", "ch-a", "--role", "clearing"]) == 0
    out, err = capsys.readouterr()
    token = err.strip().splitlines()[-1]
    f = tmp_path / "tokens.toml"
    f.write_text(out)
    c = service_config(load_settings(env={"DACP_SERVICE_TOKENS_FILE": str(f)}, config=None)) \
        if not (tmp_path / "dacp.toml").exists() else None
    assert c and authenticate(c.tokens, token) == authenticate(c.tokens, token) and authenticate(c.tokens, token).role == "clearing"
    monkeypatch.setattr("sys.stdin", io.StringIO(token + "\n"))
    assert main(["service-token", "--name", "x", "--role", "auditor", "--stdin"]) == 0
    assert hash_token(token) in capsys.readouterr().out


def test_serve_refuses_an_invalid_bundle(tmp_path, policies, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (policies / "limits.yaml").write_text((policies / "limits.yaml").read_text().replace("max_share: 0.50", "max_share: 1.5"))
    monkeypatch.setenv("DACP_APPROVALS_REQUIRED", "false")
    assert main(["serve", "--policies", str(policies), "--log", str(tmp_path / "l.sqlite"), "--port", "1"]) == 2
    assert "limits.yaml" in capsys.readouterr().err


# -- reload ----------------------------------------------------------------------------------------
def test_reload_swaps_and_names_the_new_bundle(client, policies):
    old = client.get("/v1/policy", headers=auth("clearing")).json()["bundle"]
    bump_version(policies, "2026.12.1")
    r = client.post("/v1/policy/reload", headers=auth("compliance"))
    assert r.status_code == 200 and r.json()["changed"] is True and r.json()["previous"] == old
    new = r.json()["policy_bundle"]
    assert new != old and r.headers["X-Policy-Bundle"] == new
    d = client.post("/v1/eligibility", json=BTC, headers=auth("clearing"))
    assert d.json()["policy"]["bundle"] == new == d.headers["X-Policy-Bundle"] and d.json()["policy"]["version"] == "2026.12.1"
    assert 'dacp_policy_reloads_total{outcome="ok"} 1.0' in client.get("/metrics").text


def test_reload_of_an_invalid_bundle_keeps_the_old_one(client, policies):
    configure_logging(stream := io.StringIO())
    old = client.get("/v1/policy", headers=auth("clearing")).json()["bundle"]
    (policies / "haircuts.yaml").write_text((policies / "haircuts.yaml").read_text().replace("floor: 0.20", "floor: lots", 1))
    r = client.post("/v1/policy/reload", headers=auth("compliance"))
    assert r.status_code == 422 and r.json()["error"]["code"] == "policy_invalid"
    assert r.json()["error"]["problems"][0]["file"].endswith("haircuts.yaml")
    assert r.headers["X-Policy-Bundle"] == old == r.json()["policy_bundle"]
    d = client.post("/v1/eligibility", json=BTC, headers=auth("clearing"))
    assert d.status_code == 200 and d.json()["policy"]["bundle"] == old
    events = [json.loads(x) for x in stream.getvalue().splitlines()]
    assert any(e.get("event") == "policy_reload" and e["outcome"] == "failed" and e["serving"] == old for e in events)
    assert 'dacp_policy_reloads_total{outcome="failed"} 1.0' in client.get("/metrics").text


def test_reload_with_expected_hash(client, policies):
    old = client.get("/v1/policy", headers=auth("compliance")).json()["bundle"]
    bump_version(policies, "2027.1.1")
    r = client.post("/v1/policy/reload", json={"expect_bundle": old}, headers=auth("compliance"))
    assert r.status_code == 409 and r.headers["X-Policy-Bundle"] == old
    assert client.post("/v1/policy/reload", json={"expect_bundle": "x"}, headers=auth("compliance")).status_code == 422
    assert client.post("/v1/policy/reload", json={"other": 1}, headers=auth("compliance")).status_code == 422
    new = Dacp(Settings(policies=policies, sections=NO_APPROVALS)).bundle.hash
    r = client.post("/v1/policy/reload", json={"expect_bundle": new}, headers=auth("compliance"))
    assert r.status_code == 200 and r.json()["policy_bundle"] == new


def test_in_flight_request_finishes_on_its_bundle(client, policies):
    svc = client.app.state.service
    before = svc.active  # what a request in flight holds
    bump_version(policies, "2026.12.2")
    svc.reload(None, "test")
    assert svc.active.hash != before.hash
    from rules.engine.query import parse_query
    assert svc.decide(before, [parse_query(BTC)])[0].head["policy"]["bundle"] == before.hash


def test_reload_under_load_every_answer_is_consistent(client, policies):
    """Clearing threads decide while compliance swaps between two bundles: no failure, header == body."""
    a = client.get("/v1/policy", headers=auth("clearing")).json()["bundle"]
    seen, failures, stop = set(), [], threading.Event()

    def hammer():
        while not stop.is_set():
            r = client.post("/v1/eligibility", json=BTC, headers=auth("clearing"))
            if r.status_code != 200 or r.headers["X-Policy-Bundle"] != r.json()["policy"]["bundle"]:
                failures.append(r.text)
            seen.add(r.headers["X-Policy-Bundle"])
    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(4):
            bump_version(policies, "2026.11.1") if i % 2 else bump_version(policies, "2026.12.9")
            if i % 2:
                (policies / "programme.yaml").write_text((policies / "programme.yaml").read_text()
                                                          .replace('version: "2026.12.9"', 'version: "2026.11.1"'))
            r = client.post("/v1/policy/reload", headers=auth("compliance"))
            assert r.status_code == 200
            deadline = time.monotonic() + 10  # let the clearing threads be answered under this bundle too
            while r.json()["policy_bundle"] not in seen and not failures and time.monotonic() < deadline:
                time.sleep(0.005)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failures
    assert a in seen and len(seen) == 2


# -- operations ------------------------------------------------------------------------------------
def test_metrics_count_decisions(client):
    client.post("/v1/eligibility/batch", json={"queries": [BTC, BTC_NO, BTC_NO]}, headers=auth("clearing"))
    text = client.get("/metrics").text
    assert 'dacp_decisions_total{outcome="eligible"} 1.0' in text
    assert 'dacp_decisions_total{outcome="ineligible"} 2.0' in text
    assert "dacp_decision_seconds_bucket" in text and "dacp_http_request_seconds_bucket" in text
    assert "dacp_policy_bundle_info{" in text


def test_structured_logs_are_json_lines(client):
    configure_logging(stream := io.StringIO())
    client.post("/v1/eligibility", json=BTC, headers={**auth("clearing"), "X-Request-Id": "req-42"})
    client.get("/v1/policy", headers={"Authorization": "Bearer nope"})
    lines = [json.loads(x) for x in stream.getvalue().splitlines()]
    reqs = [x for x in lines if x.get("event") == "request"]
    assert reqs[0]["request_id"] == "req-42" and reqs[0]["status"] == 200 and reqs[0]["token"] == "clearing-1"
    assert reqs[0]["role"] == "clearing" and len(reqs[0]["bundle"]) == 64
    assert reqs[1]["status"] == 401 and reqs[1]["token"] is None
    assert all(TOKENS["clearing"] not in x for x in stream.getvalue().splitlines())


def test_health_and_readiness(client, settings):
    assert client.get("/v1/health").json()["status"] == "ok"
    r = client.get("/v1/ready")
    assert r.status_code == 200 and r.json()["checks"] == {"policy": "ok", "decision_log": "ok"}


# -- OpenAPI ---------------------------------------------------------------------------------------
def test_committed_openapi_is_current():
    committed = (ROOT / "docs" / "openapi.json").read_text(encoding="utf-8")
    assert committed == openapi_document(), "regenerate: .venv/bin/dacp serve --openapi docs/openapi.json"


def test_openapi_is_served_and_uses_the_query_schema(client):
    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.1")
    q = spec["components"]["schemas"]["Query"]
    assert q["additionalProperties"] is False and "$defs" not in json.dumps(q)
    ops = {op["operationId"]: op for p in spec["paths"].values() for op in p.values()}
    assert set(ops) == set(ENDPOINTS)
    assert all(ops[o].get("security") for o in ACCESS) and not any(ops[o].get("security") for o in PUBLIC)


def test_unapproved_bundle_is_refused_through_dacp(tmp_path, policies):
    """Reload and start-up go through rules.app.Dacp, so rules/lifecycle/approvals.py's check applies (when present)."""
    approvals = pytest.importorskip("rules.lifecycle.approvals")
    import inspect

    import rules.app
    if "require_approved" not in inspect.getsource(rules.app):
        pytest.skip("rules.app.Dacp does not call require_approved in this checkout")
    from rules.http.errors import status_for

    assert status_for(approvals.ApprovalError("x")) == (409, "policy_not_approved")
    shutil.rmtree(policies / "approvals", ignore_errors=True)  # the copy has no approvals: not approved
    s = Settings(policies=policies, log=tmp_path / "a.sqlite", sections={"approvals": {"required": True}})
    with pytest.raises(approvals.ApprovalError):
        create_app(s, CONFIG)  # fails closed at start-up: nothing serves an unapproved bundle
    with TestClient(create_app(Settings(policies=policies, log=tmp_path / "a.sqlite", sections=NO_APPROVALS),
                               CONFIG)) as c:
        svc = c.app.state.service
        old = svc.active.hash
        svc.settings = s  # approvals switched on for the next reload
        r = c.post("/v1/policy/reload", headers=auth("compliance"))
        assert r.status_code == 409 and r.json()["error"]["code"] == "policy_not_approved"
        assert svc.active.hash == old == r.headers["X-Policy-Bundle"]
