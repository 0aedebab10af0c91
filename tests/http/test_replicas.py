"""Three replicas of `dacp serve` (real uvicorn processes on 127.0.0.1) on ONE real PostgreSQL log and ledger,
with a real anvil node (chain id 1, TestFiatToken as USDC) for credits: concurrent eligibility and concurrent
credits of the same coins at all three. One log (every decision present exactly once, ``verify`` ok), no
double credit, and checkpoints signed concurrently by the replicas (two share the operator's key, the third
has its own) all consistent: the tree extends every stored one, and each verifies as a signed note.
docs/deploy.md says how to run replicas."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from rules.http.auth import hash_token
from tests.support import ROOT, free_port
from tests.support.postgres_node import pg_url, postgres  # noqa: F401 (pytest fixtures)

TOKEN = "replica-clearing-" + "r" * 32
AUDITOR = "replica-auditor-" + "a" * 32
BTC = json.loads((ROOT / "examples" / "queries" / "btc-eligible.json").read_text())
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


@contextmanager
def serve(d: Path, toml: str, start_timeout_s: float = 60.0) -> Iterator[str]:
    """`dacp serve` as its own process with ``toml`` as its dacp.toml, on 127.0.0.1 and a free port; its
    base URL. Stopped with SIGTERM (then killed) at the end; its stderr is in ``d / "stderr.log"``."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "dacp.toml").write_text(toml)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DACP_")}
    env["DACP_CONFIG"] = str(d / "dacp.toml")
    err = open(d / "stderr.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "rules.cli.run", "serve", "--host", "127.0.0.1", "--port", str(port)],
                            cwd=d, env=env, stdout=subprocess.DEVNULL, stderr=err)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            try:
                if httpx.get(base + "/v1/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"dacp serve did not start: {(d / 'stderr.log').read_text()[-2000:]}")
            time.sleep(0.1)
        yield base
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        err.close()


@pytest.mark.slow
@pytest.mark.integration
def test_three_replicas_on_one_postgresql(tmp_path, pg_url):
    from rules.audit.checkpoint import Signer
    from rules.audit.log import DecisionLog
    from tests.support.anvil_node import anvil_node, deploy
    from tests.support.ledger_workload import fund, usdc_evidence, write_policies, write_prices

    with anvil_node(chain_id=1) as node:
        token = deploy(node.w3, "TestFiatToken", "USD Coin", "USDC")
        chain = (node, token)
        policies = write_policies(ROOT, tmp_path / "policies", token.address)  # one bundle, shared read-only
        prices = write_prices(tmp_path / "prices.yaml")
        operator, own = Signer.generate("dacp-operator"), Signer.generate("dacp-replica-3")
        for name, signer in (("operator.key", operator), ("replica3.key", own)):
            (tmp_path / name).write_text(signer.key_text())
        tokens = (f'tokens = [{{name = "c", role = "clearing", sha256 = "{hash_token(TOKEN)}"}}, '
                  f'{{name = "a", role = "auditor", sha256 = "{hash_token(AUDITOR)}"}}]\n')

        def toml(key: str) -> str:
            return (f'policies = "{policies}"\nlog = "{pg_url}"\n[ledger]\nurl = "{pg_url}"\n'
                    f'[approvals]\nrequired = false\n[ethereum]\nrpc_url = "{node.url}"\n'
                    f'[prices]\nfile = "{prices}"\nmax_age_s = 86400\n'
                    f'[audit]\nsigning_key_file = "{tmp_path / key}"\ncheckpoint_every_entries = 25\n'
                    f'checkpoint_every_s = 0.5\n[service]\n{tokens}')

        with ExitStack() as stack:
            bases = [stack.enter_context(serve(tmp_path / f"r{i}", toml(key)))
                     for i, key in enumerate(("operator.key", "operator.key", "replica3.key"))]
            ids: list[str] = []
            results: list[tuple[str, int, dict]] = []
            problems: list[str] = []
            lock = threading.Lock()

            def eligibility(base: str, c: int) -> None:
                with httpx.Client(base_url=base, timeout=60, headers=HEADERS) as h:
                    for k in range(15):
                        r = h.post("/v1/eligibility", json={**BTC, "id": f"r{base[-5:]}-{c}-{k}"})
                        with lock:
                            if r.status_code == 200:
                                ids.append(r.json()["decision_id"])
                            else:
                                problems.append(f"{base} {r.status_code} {r.text[:200]}")

            def credit(base: str, body: dict, key: str) -> None:
                with httpx.Client(base_url=base, timeout=120, headers=HEADERS) as h:
                    r = h.post("/v1/credits", json=body, headers={"Idempotency-Key": key})
                with lock:
                    results.append((key, r.status_code, r.json()))

            coins = fund(chain, usdc=1_000)  # 1,000 USDC at one address: at most one claim of 600 fits
            same_key = fund(chain, usdc=300)

            def claim(address: str, quantity: str, account: str) -> dict:
                return {"account": account, "participant": "FCM-ALPHA", "asset": "USDC", "quantity": quantity,
                        "addresses": [address], "custodian": "coinbase-custody", "segregated": True,
                        "evidence": usdc_evidence()}

            threads = [threading.Thread(target=eligibility, args=(b, c)) for b in bases for c in range(6)]
            threads += [threading.Thread(target=credit, args=(b, claim(coins, "600", f"ACC-{i}-{j}"), f"race-{i}-{j}"))
                        for i, b in enumerate(bases) for j in range(2)]
            threads += [threading.Thread(target=credit, args=(b, claim(same_key, "300", "ACC-SAME"), "same-key-1"))
                        for b in bases]
            for t in threads:
                t.start()
            for t in threads:
                t.join(180)
            assert not problems, problems[:5]
            assert len(ids) == 3 * 6 * 15

            # no double credit: of six claims of 600 on 1,000 at one address, one is credited, the rest refused
            race = sorted((s, b.get("status"), b.get("refusal", {}).get("rule")) for k, s, b in results if k != "same-key-1")
            assert race == [(200, "refused", "custody.already-credited")] * 5 + [(201, "credited", None)], race
            # the same Idempotency-Key at all three at once: credited once, the other two replay that result
            same = sorted((s, b.get("status"), b.get("replayed"), b.get("decision_id")) for k, s, b in results
                          if k == "same-key-1")
            assert [x[:3] for x in same] == [(200, "credited", True)] * 2 + [(201, "credited", False)], same
            assert len({x[3] for x in same}) == 1, same

            # wait for the replicas' checkpoints to catch up with the log (checkpoint_every_s = 0.5)
            deadline = time.monotonic() + 20
            with DecisionLog(pg_url) as log:
                while time.monotonic() < deadline:
                    latest = log.tree.latest_checkpoint()
                    if latest is not None and latest[0] == log.count():
                        break
                    time.sleep(0.25)
        # replicas stopped: check the one log
        with DecisionLog(pg_url) as log:
            entries = list(log.entries())
            decisions = [e.entry_id for e in entries if e.kind == "decision"]
            assert sorted(set(ids)) == sorted(ids) and set(ids) <= set(decisions)
            assert len(decisions) == len(set(decisions))  # every entry once
            assert len({e.entry_id for e in entries}) == len(entries)
            result = log.verify()
            assert result.ok, result.problem
            stored = log.tree.checkpoints()
            assert result.checkpoints == len(stored) >= 2
            verifiers = [operator.verifier(), own.verifier()]
            signers = set()
            for size, _, note, _ in stored:
                ok = log.verify(checkpoint=note, verifiers=verifiers)
                assert ok.ok, (size, ok.problem)
                signers.add(note.rsplit("\u2014 ", 1)[1].split(" ")[0])
            assert signers and signers <= {"dacp-operator", "dacp-replica-3"}, signers
            assert stored[-1][0] == len(entries)
        import psycopg

        with psycopg.connect(pg_url) as db:
            rows = db.execute("SELECT account, quantity_raw FROM ledger_positions").fetchall()
        held = {acc: int(q) for acc, q in rows if int(q) > 0}
        assert sum(held.values()) == (600 + 300) * 10**6, held  # 1,000 at the address: never 1,200
        assert held.get("ACC-SAME") == 300 * 10**6
