"""A node that never answers, and the scenario of tests/http/test_hung_node.py and bench/bench_hung_node.py: a
real `dacp serve` whose Ethereum node is that server, credits to it at once, single eligibility requests
meanwhile.

The node is a TCP server on 127.0.0.1 that accepts connections and never answers (bounded: at most
``max_connections`` are held, the rest wait in its backlog; all are closed at the end)."""

from __future__ import annotations

import json
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import httpx

from rules.http.auth import hash_token
from tests.support import ROOT
from tests.support.ledger_workload import USDC_MAINNET, usdc_evidence, write_policies, write_prices

TOKEN = "hung-clearing-" + "h" * 32
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
BTC = json.loads((ROOT / "examples" / "queries" / "btc-eligible.json").read_text())


@contextmanager
def hung_node(max_connections: int = 32) -> Iterator[str]:
    """A TCP server on 127.0.0.1 that accepts and never answers; its URL."""
    sock = socket.create_server(("127.0.0.1", 0), backlog=64)
    sock.settimeout(0.1)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            if len(held) >= max_connections:
                time.sleep(0.05)
                continue
            try:
                held.append(sock.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    finally:
        stop.set()
        t.join(5)
        for c in held:
            c.close()
        sock.close()


def eligibility(h: httpx.Client, n: int, tag: str) -> list[float]:
    """``n`` single eligibility requests one after another; the seconds each took (each must be 200)."""
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        r = h.post("/v1/eligibility", json={**BTC, "id": f"{tag}-{i}"})
        out.append(time.perf_counter() - t0)
        if r.status_code != 200:
            raise AssertionError(f"eligibility answered {r.status_code}: {r.text[:300]}")
    return out


@dataclass
class Outcome:
    normal: list[float]  # eligibility latencies before the credits (s)
    during: list[float]  # eligibility latencies while the credits wait on the node (s)
    credits: list[tuple[int, dict[str, Any], float]]  # (status, body, seconds) of each credit


def run(tmp: Path, *, credits: int = 4, workers: int = 2, timeout_s: float = 3.0) -> Outcome:
    """``credits`` credits at once to a hung Ethereum node ([ethereum] request_timeout_s = max_total_s =
    ``timeout_s``, no retries; ``workers`` Ethereum workers) while eligibility requests go on."""
    from tests.http.test_replicas import serve

    policies = write_policies(ROOT, tmp / "policies", USDC_MAINNET)
    prices = write_prices(tmp / "prices.yaml")
    with hung_node() as url:
        toml = (f'policies = "{policies}"\nlog = "{tmp / "log.sqlite"}"\n[approvals]\nrequired = false\n'
                f'[ethereum]\nrpc_url = "{url}"\nrequest_timeout_s = {timeout_s}\nretries = 0\n'
                f'max_total_s = {timeout_s}\n[prices]\nfile = "{prices}"\nmax_age_s = 86400\n'
                f'[service]\nethereum_workers = {workers}\n'
                f'tokens = [{{name = "c", role = "clearing", sha256 = "{hash_token(TOKEN)}"}}]\n')
        with serve(tmp / "srv", toml) as base, httpx.Client(base_url=base, timeout=60, headers=HEADERS) as h:
            eligibility(h, 20, "warm")
            normal = eligibility(h, 40, "before")
            results: list[tuple[int, dict[str, Any], float]] = []

            def credit(k: int) -> None:
                body = {"account": f"ACC-{k}", "participant": "FCM-ALPHA", "asset": "USDC", "quantity": "100",
                        "addresses": ["0x" + f"{k + 1:040x}"], "custodian": "coinbase-custody", "segregated": True,
                        "evidence": usdc_evidence()}
                t0 = time.perf_counter()
                with httpx.Client(base_url=base, timeout=120, headers=HEADERS) as c:
                    r = c.post("/v1/credits", json=body, headers={"Idempotency-Key": f"hung-{k}"})
                results.append((r.status_code, r.json(), time.perf_counter() - t0))

            threads = [threading.Thread(target=credit, args=(k,)) for k in range(credits)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            time.sleep(0.3)  # the credits are now waiting on the node
            during: list[float] = []
            bound = (credits // workers + 1) * timeout_s + 30
            while any(t.is_alive() for t in threads) and time.perf_counter() - t0 < bound:
                during += eligibility(h, 5, f"during-{len(during)}")
            for t in threads:
                t.join(30)
    return Outcome(normal, during, results)
