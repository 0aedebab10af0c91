"""Slow clients against a real ``dacp serve`` (uvicorn on 127.0.0.1): header and body read deadlines.

The server runs with ``[service] header_timeout_s = 1`` and ``body_timeout_s = 2`` (rules.http.deadlines,
rules.http.reading) and ``max_incomplete_event_bytes = 4096``, once on each HTTP protocol (``[service] http``:
httptools, the default, and h11); every client here is a raw socket, every loop bounded in time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from rules.http.auth import hash_token
from rules.http.deadlines import BODY_GRACE_S
from tests.support import ROOT, free_port

pytestmark = pytest.mark.integration

HEADER_S, BODY_S, KEEP_ALIVE_S = 1.0, 2.0, 5.0
MARGIN_S = 1.5  # scheduling on a loaded 2-CPU machine
TOKEN = "slow-clearing-" + "k" * 40
BTC = json.dumps(json.loads((ROOT / "examples" / "queries" / "btc-eligible.json").read_text())).encode()


MAX_HEADER = 4096


@pytest.fixture(scope="module", params=["httptools", "h11"])
def server(tmp_path_factory, request):
    d = tmp_path_factory.mktemp(f"slow-{request.param}")
    shutil.copytree(ROOT / "policies", d / "policies", ignore=shutil.ignore_patterns("tests"))
    (d / "dacp.toml").write_text(
        f'policies = "{d / "policies"}"\nlog = "{d / "log.sqlite"}"\n[approvals]\nrequired = false\n'
        f'[service]\nheader_timeout_s = {HEADER_S}\nbody_timeout_s = {BODY_S}\ntimeout_keep_alive_s = {KEEP_ALIVE_S}\n'
        f'http = "{request.param}"\nloop = "{"uvloop" if request.param == "httptools" else "asyncio"}"\n'
        f'max_incomplete_event_bytes = {MAX_HEADER}\n'
        f'tokens = [{{name = "slow", role = "clearing", sha256 = "{hash_token(TOKEN)}"}}]\n')
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DACP_")}
    env["DACP_CONFIG"] = str(d / "dacp.toml")
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
        yield port, d
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        err.close()


def _head(length: int, token: bool = True) -> bytes:
    auth = f"Authorization: Bearer {TOKEN}\r\n" if token else ""
    return (f"POST /v1/eligibility HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{auth}"
            f"Content-Length: {length}\r\n\r\n").encode()


def _until_closed(sock: socket.socket, cap_s: float, trickle: bytes = b"", step_s: float = 0.3) -> tuple[float, bytes]:
    """Send ``trickle`` one byte per ``step_s`` (none if empty) and read until the server closes the
    connection; (seconds until closed, what was received). Gives up (the test then fails) after ``cap_s``."""
    t0, got, i = time.monotonic(), b"", 0
    sock.settimeout(step_s)
    while time.monotonic() - t0 < cap_s:
        try:
            if trickle:
                sock.send(trickle[i % len(trickle):][:1])
                i += 1
            data = sock.recv(65536)
        except socket.timeout:
            continue
        except OSError:  # reset, or broken pipe on send: closed
            break
        if not data:
            break
        got += data
    return time.monotonic() - t0, got


def _decisions(port: int) -> str:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return "\n".join(x for x in text.splitlines() if x.startswith("dacp_decisions_total"))


def test_slow_loris_headers_are_cut_off_at_the_header_deadline(server):
    port, d = server
    with socket.create_connection(("127.0.0.1", port)) as s:
        dt, got = _until_closed(s, HEADER_S + 10, trickle=_head(len(BTC)) + BTC)
    assert dt < HEADER_S + MARGIN_S, f"still open after {dt:.1f} s"
    assert dt >= HEADER_S - 0.2  # not before its deadline
    assert got == b"" or got.startswith(b"HTTP/1.1 408 ")
    if got:
        assert json.loads(got.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "request_timeout"
    logged = [json.loads(x) for x in (d / "stderr.log").read_text().splitlines() if x.startswith("{")]
    assert any(x.get("event") == "request_timeout" and x.get("phase") == "headers" for x in logged)


def test_a_connection_that_sends_nothing_is_closed_at_the_header_deadline(server):
    port, _ = server
    with socket.create_connection(("127.0.0.1", port)) as s:
        dt, got = _until_closed(s, HEADER_S + 10)
    assert HEADER_S - 0.2 <= dt < HEADER_S + MARGIN_S
    assert got == b"" or got.startswith(b"HTTP/1.1 408 ")


def test_a_body_that_stops_halfway_gets_408_within_the_body_deadline_and_nothing_is_decided(server):
    port, _ = server
    before = _decisions(port)
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(_head(len(BTC)) + BTC[: len(BTC) // 2])
        dt, got = _until_closed(s, BODY_S + 10)
    assert BODY_S - 0.2 <= dt < BODY_S + MARGIN_S, f"{dt:.1f} s"
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), got[:200]
    assert b"connection: close" in head.lower()
    err = json.loads(body)
    assert err["error"]["code"] == "request_timeout" and "did not arrive within 2 s" in err["error"]["message"]
    assert len(err["policy_bundle"]) == 64 and b"Traceback" not in got
    assert _decisions(port) == before  # nothing decided or logged


def test_a_body_nobody_reads_cannot_trickle_in_for_ever(server):
    """Refused before its body is read (401: no token), the client goes on trickling the body: the
    connection's backstop closes it ``BODY_GRACE_S`` after the body deadline."""
    port, _ = server
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(_head(100_000, token=False))
        dt, got = _until_closed(s, BODY_S + BODY_GRACE_S + 10, trickle=b"x")
    assert got.startswith(b"HTTP/1.1 401 ")
    assert dt < BODY_S + BODY_GRACE_S + MARGIN_S, f"{dt:.1f} s"


def test_normal_requests_are_unaffected(server):
    port, _ = server
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, timeout=10) as c:  # one keep-alive connection
        r = c.post("/v1/eligibility", content=BTC, headers={"Authorization": f"Bearer {TOKEN}",
                                                             "Content-Type": "application/json"})
        assert r.status_code == 200 and r.json()["eligible"] is True
        time.sleep(HEADER_S + 0.5)  # idle between requests: keep-alive's business, not the header deadline
        assert c.get("/v1/health").status_code == 200
        assert c.get("/v1/health").status_code == 200
    # a slow but timely client: headers and body in pieces, everything inside the deadlines
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(10)
        raw = _head(len(BTC)) + BTC
        cut = len(raw) - len(BTC)
        for part in (raw[:20], raw[20:cut], BTC[:40], BTC[40:]):
            s.sendall(part)
            time.sleep(0.3)
        got = b""
        while b"\r\n\r\n" not in got or len(got.partition(b"\r\n\r\n")[2]) < 20:
            data = s.recv(65536)
            if not data:
                break
            got += data
    assert got.startswith(b"HTTP/1.1 200 "), got[:300]


def _answer(sock: socket.socket, cap_s: float = 10) -> bytes:
    """Everything the server sends until it closes the connection (bounded)."""
    return _until_closed(sock, cap_s)[1]


@pytest.mark.parametrize("where", ["header", "target"])
def test_request_line_and_headers_past_the_bound_are_refused_400(server, where):
    """``[service] max_incomplete_event_bytes`` bounds the request line and headers on both protocols (h11
    does it itself; llhttp does not, so rules.http.deadlines_httptools counts): sent whole or in pieces."""
    port, _ = server
    big = "x" * (MAX_HEADER + 100)
    head = (f"GET /v1/health?{big} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" if where == "target" else
            f"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: {big}\r\n\r\n").encode()
    for pieces in (1, 8):
        with socket.create_connection(("127.0.0.1", port)) as s:
            step = -(-len(head) // pieces)
            try:
                for i in range(0, len(head), step):
                    s.sendall(head[i:i + step])
                    time.sleep(0.01)
            except OSError:
                pass  # closed on us mid-send: the refusal is what was read
            got = _answer(s)
        assert got.startswith(b"HTTP/1.1 400 ") or got.startswith(b"HTTP/1.1 431 "), (pieces, got[:200])


def test_headers_within_the_bound_are_served(server):
    port, _ = server
    pad = "y" * (MAX_HEADER - 600)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        assert c.get("/v1/health", headers={"X-Pad": pad}).status_code == 200
