"""dacp serve as a real process: uvicorn on 127.0.0.1 and a free port, stopped at the end."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import httpx
import pytest

from rules.http.auth import hash_token
from tests.support import ROOT, free_port

pytestmark = pytest.mark.integration

TOKENS = {role: f"uv-{role}-" + "k" * 40 for role in ("clearing", "auditor", "compliance")}
BTC = json.loads((ROOT / "examples" / "queries" / "btc-eligible.json").read_text())


def _auth(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("serve")
    shutil.copytree(ROOT / "policies", d / "policies", ignore=shutil.ignore_patterns("tests"))
    (d / "tokens.toml").write_text("".join(f'[[token]]\nname = "{r}-1"\nrole = "{r}"\nsha256 = "{hash_token(t)}"\n'
                                           for r, t in TOKENS.items()))
    (d / "dacp.toml").write_text(f'policies = "{d / "policies"}"\nlog = "{d / "log.sqlite"}"\n'
                                 f'[approvals]\nrequired = false\n[service]\ntokens_file = "{d / "tokens.toml"}"\n')
    port = free_port()
    env = {**os.environ, "DACP_CONFIG": str(d / "dacp.toml")}
    env.pop("DACP_POLICIES", None)
    env.pop("DACP_LOG", None)
    err = open(d / "stderr.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "rules.cli.run", "serve", "--host", "127.0.0.1", "--port", str(port)],
                            cwd=d, env=env, stdout=subprocess.DEVNULL, stderr=err)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(base + "/v1/ready", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"dacp serve did not start: {(d / 'stderr.log').read_text()[-2000:]}")
        time.sleep(0.1)
    try:
        yield base, d, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        err.close()


def test_decide_explain_audit_over_tcp(server):
    base, _, _ = server
    with httpx.Client(base_url=base, timeout=10) as c:
        r = c.post("/v1/eligibility", json=BTC, headers=_auth("clearing"))
        assert r.status_code == 200 and r.json()["eligible"] is True
        assert r.headers["x-policy-bundle"] == r.json()["policy"]["bundle"]
        did = r.json()["decision_id"]
        r = c.get(f"/v1/decisions/{did}", headers=_auth("auditor"))
        assert r.status_code == 200 and "ELIGIBLE" in r.json()["explanation"]
        assert c.get(f"/v1/decisions/{did}", headers=_auth("clearing")).status_code == 403
        assert c.get("/v1/audit/verify", headers=_auth("auditor")).json()["ok"] is True
        assert c.get("/v1/audit/verify").status_code == 401
        r = c.post("/v1/eligibility", content=b'{"asset": 1}', headers={**_auth("clearing"), "Content-Type": "application/json"})
        assert r.status_code == 422 and "Traceback" not in r.text
        assert 'dacp_decisions_total{outcome="eligible"} 1.0' in c.get("/metrics").text
        assert c.get("/openapi.json").json()["info"]["title"] == "dacp"


def test_reload_over_tcp_and_bad_bundle_keeps_serving(server):
    base, d, _ = server
    with httpx.Client(base_url=base, timeout=30) as c:
        old = c.get("/v1/policy", headers=_auth("compliance")).json()["bundle"]
        limits = d / "policies" / "limits.yaml"
        good = limits.read_text()
        limits.write_text(good.replace("max_share: 0.50", "max_share: 1.5"))
        r = c.post("/v1/policy/reload", headers=_auth("compliance"))
        assert r.status_code == 422 and r.headers["x-policy-bundle"] == old
        assert c.post("/v1/eligibility", json=BTC, headers=_auth("clearing")).json()["policy"]["bundle"] == old
        limits.write_text(good.replace("max_share: 0.50", "max_share: 0.45"))
        r = c.post("/v1/policy/reload", headers=_auth("compliance"))
        assert r.status_code == 200 and r.json()["changed"] is True
        new = r.json()["policy_bundle"]
        assert c.post("/v1/eligibility", json=BTC, headers=_auth("clearing")).headers["x-policy-bundle"] == new
        limits.write_text(good)


def test_logs_are_json_lines_and_sigterm_stops_it(server):
    base, d, proc = server
    httpx.get(base + "/v1/health", timeout=5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) in (0, -signal.SIGTERM)  # uvicorn shuts down gracefully, then re-raises the signal
    lines = [x for x in (d / "stderr.log").read_text().splitlines() if x.strip()]
    events = [json.loads(x) for x in lines]  # every line is JSON
    assert events[0]["event"] == "start" and len(events[0]["bundle"]) == 64
    reqs = [e for e in events if e.get("event") == "request"]
    assert reqs and all({"request_id", "status", "ms", "bundle"} <= set(e) for e in reqs)
    assert any(e.get("event") == "policy_reload" and e["outcome"] == "failed" for e in events)
    assert any(e.get("msg", "").startswith("Finished server process") for e in events)  # graceful
    assert not any(t in (d / "stderr.log").read_text() for t in TOKENS.values())
