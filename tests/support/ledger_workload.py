"""Workloads for the ledger's concurrency and crash tests, shared with bench/bench_ledger_concurrency.py.

Each worker is a separate process (``spawn``) with its own database connection, verifier (real
anvil) and price file, crediting against the SAME custody address."""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from rules.values import now_utc, utc_text

USDC_MAINNET = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
UNIT = 10**6  # USDC base units


@dataclass(frozen=True)
class Setup:
    target: str  # ledger database (file path or postgresql:// URL)
    policies: str
    prices: str
    rpc_url: str


def write_policies(root: Path, dest: Path, usdc_contract: str) -> Path:
    import shutil

    shutil.copytree(root / "policies", dest, ignore=shutil.ignore_patterns("tests", "approvals"))
    (dest / "assets.yaml").write_text((dest / "assets.yaml").read_text().replace(USDC_MAINNET, usdc_contract))
    return dest


def write_prices(path: Path, prices: dict[str, str] | None = None, at: datetime | None = None) -> Path:
    at = at or now_utc() - timedelta(minutes=1)
    prices = prices or {"USDC": "0.9999", "ETH": "3100.25", "BTC": "91250.00"}
    stamp = utc_text(at)
    path.write_text("".join(f'{a}: {{price_usd: "{p}", updated_at: "{stamp}", source: "test desk"}}\n'
                            for a, p in prices.items()))
    return path


def fund(chain: tuple[Any, Any], usdc: int = 0, eth: int = 0, address: str | None = None) -> str:
    """Mint ``usdc`` test USDC and/or send ``eth`` ETH to ``address`` (default: a new one) on the (anvil node,
    token) ``chain``, then mine past anvil's finalized lag (64 blocks)."""
    from tests.support.anvil_node import anvil_mine, new_address, send_eth, transact

    node, token = chain
    a = address or new_address(node.w3)
    if usdc:
        transact(node.w3, token.functions.mint(a, usdc * UNIT))
    if eth:
        send_eth(node.w3, a, eth * 10**18)
    anvil_mine(node.w3, 70)
    return a


def usdc_evidence(at: datetime | None = None) -> dict[str, Any]:
    day = ((at or now_utc()) - timedelta(days=3)).date().isoformat()
    return {"stablecoin": {"issuer": "Circle Internet Financial", "reserve_attestation_date": day}}


def make_ledger(s: Setup, engine: str = "python") -> Any:
    from adapters.custody import CustodyVerifier, PriceReader
    from rules.ledger.store import LedgerStore
    from rules.engine.decide import Engine
    from rules.ledger.book import Ledger
    from rules.policy.loader import load_bundle

    bundle = load_bundle(s.policies)
    return Ledger(bundle, Engine.for_bundle(bundle, engine), LedgerStore(s.target),
                  verifier=CustodyVerifier(ethereum={"rpc_url": s.rpc_url}),
                  prices=PriceReader({"file": s.prices, "max_age_s": 86400}))


def usdc_request(account: str, quantity: str, address: str, key: str, participant: str = "FCM-ALPHA",
                 at: datetime | None = None) -> Any:
    from rules.ledger.book import CreditRequest

    return CreditRequest(account=account, participant=participant, asset="USDC", quantity=Decimal(quantity),
                         addresses=(address,), idempotency_key=key, custodian="coinbase-custody", segregated=True,
                         evidence=usdc_evidence(at))


class PricesAt:
    """Prices as of a moving clock (for ledgers whose clock is set in the past)."""

    configured = True

    def __init__(self, clock: Any, prices: dict[str, str]):
        self.clock, self.prices = clock, prices

    def read(self, asset: Any, now: Any = None) -> Any:
        from rules.evidence import PriceEvidence

        return PriceEvidence(asset.symbol, Decimal(self.prices[asset.symbol]), "test desk",
                             self.clock() - timedelta(minutes=1))


def credit_worker(s: Setup, worker: int, address: str, requests: int, quantity: str, out: str,
                  duplicate_keys: bool) -> None:
    """Credit ``requests`` times against ``address``; keys collide across workers when ``duplicate_keys``."""
    ledger = make_ledger(s)
    results = []
    for i in range(requests):
        key = f"dup-{i}" if duplicate_keys and i % 2 == 0 else f"w{worker}-{i}"
        account = f"ACC-{i % 4}" if key.startswith("dup") else f"ACC-W{worker}"
        t0 = time.perf_counter()
        r = ledger.credit(usdc_request(account, quantity, address, key))
        results.append({"key": key, "status": r["status"], "replayed": r["replayed"], "decision_id": r["decision_id"],
                        "quantity": r["quantity_credited"], "account": r["account"],
                        "seconds": time.perf_counter() - t0})
    Path(out).write_text(json.dumps(results))
    ledger.store.close()


def crash_worker(s: Setup, address: str, quantity: str, marker: str) -> None:
    """Credit once, but stop inside the transaction, after verification, decision and the log entry,
    just before COMMIT; the parent SIGKILLs this process there."""
    ledger = make_ledger(s)

    def pause() -> None:
        Path(marker).write_text(str(os.getpid()))
        time.sleep(60)

    ledger.hooks["before_commit"] = pause
    ledger.credit(usdc_request("ACC-CRASH", quantity, address, "crash-1"))


def run_crash(s: Setup, address: str, quantity: str, tmp: Path) -> dict[str, Any]:
    import multiprocessing as mp

    marker = tmp / "crash.marker"
    ctx = mp.get_context("spawn")
    p = ctx.Process(target=crash_worker, args=(s, address, quantity, str(marker)))
    t0 = time.monotonic()
    p.start()
    while not marker.exists():
        if not p.is_alive() or time.monotonic() - t0 > 120:
            raise RuntimeError(f"crash worker ended before reaching the commit point (exit {p.exitcode})")
        time.sleep(0.02)
    os.kill(p.pid, signal.SIGKILL)
    p.join(30)
    return {"exitcode": p.exitcode}


def run_concurrency(s: Setup, address: str, workers: int, requests: int, quantity: str, tmp: Path,
                    duplicate_keys: bool = True) -> dict[str, Any]:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    outs = [tmp / f"w{w}.json" for w in range(workers)]
    procs = [ctx.Process(target=credit_worker, args=(s, w, address, requests, quantity, str(outs[w]), duplicate_keys))
             for w in range(workers)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    for p in procs:
        p.join(600)
    duration = time.perf_counter() - t0
    codes = [p.exitcode for p in procs]
    results = [r for o in outs if o.exists() for r in json.loads(o.read_text())]
    return {"exitcodes": codes, "results": results, "duration_s": duration}
