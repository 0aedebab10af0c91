"""Ledger concurrency and crash figures on both backends (SQLite file, PostgreSQL), against a real anvil node.

N processes credit 10,000 USDC at a time against ONE custody address holding a fixed balance; half of
each process's requests use keys shared with every other process (the same request retried from
several replicas). Then one process is SIGKILLed inside the credit transaction (after verification,
decision and decision-log entry, before COMMIT). Prints processes, requests, duration, credits,
double credits (must be 0), decision-log entries and whether the invariant and the chain hold.

    .venv/bin/python bench/bench_ledger_concurrency.py [--quick] [--processes 8] [--requests 12]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.anvil_node import anvil_mine, anvil_node, deploy, new_address, transact  # noqa: E402
from tests.support.ledger_workload import (Setup, make_ledger, run_concurrency, run_crash,  # noqa: E402
                                               write_policies, write_prices)
from tests.support.postgres_node import postgres_server  # noqa: E402

QTY = 10_000


def one_backend(name: str, target: str, node, token, tmp: Path, processes: int, requests: int) -> dict:
    credits_possible = processes * requests // 3  # the address holds a third of what is asked for
    address = new_address(node.w3)
    transact(node.w3, token.functions.mint(address, credits_possible * QTY * 10**6))
    crash_address = new_address(node.w3)
    transact(node.w3, token.functions.mint(crash_address, QTY * 10**6))
    anvil_mine(node.w3, 70)
    s = Setup(target, str(write_policies(ROOT, tmp / f"pol-{name}", token.address)),
              str(write_prices(tmp / f"prices-{name}.yaml")), node.url)
    out = run_concurrency(s, address, processes, requests, str(QTY), tmp)
    results = out["results"]
    ledger = make_ledger(s)
    credited = {r["key"] for r in results if r["status"] == "credited"}
    held = sum(p.quantity for p in ledger.store.positions(asset="USDC", address=address))
    decisions = {r["decision_id"] for r in results}
    crash = run_crash(s, crash_address, str(QTY), tmp)
    after_crash = ledger.store.request("crash-1") is None and not ledger.store.positions(address=crash_address)
    lat = sorted(r["seconds"] for r in results)
    return {
        "backend": name, "processes": processes, "requests": len(results), "duration_s": out["duration_s"],
        "credits": len(credited), "credits_possible": credits_possible,
        # coins credited beyond the verified balance, plus keys credited under more than one decision
        "double_credits": int(max(Decimal(0), held - credits_possible * QTY) / QTY) + sum(
            1 for k in credited if len({r["decision_id"] for r in results if r["key"] == k}) > 1),
        "credited_usdc": held, "verified_usdc": Decimal(credits_possible * QTY),
        "log_entries": ledger.log.count(), "distinct_decisions": len(decisions),
        "invariant_ok": ledger.check() == [], "chain_ok": ledger.log.verify().ok,
        "p50_s": lat[len(lat) // 2], "p99_s": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
        "crash_exit": crash["exitcode"], "crash_left_nothing": after_crash,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="8 processes x 6 requests")
    ap.add_argument("--processes", type=int, default=8)
    ap.add_argument("--requests", type=int, default=12, help="per process")
    args = ap.parse_args()
    if args.quick:
        args.requests = 6
    rows = []
    with tempfile.TemporaryDirectory() as d, anvil_node(chain_id=1) as node:
        tmp = Path(d)
        token = deploy(node.w3, "TestFiatToken", "USD Coin", "USDC")
        rows.append(one_backend("sqlite", str(tmp / "ledger.sqlite"), node, token, tmp, args.processes, args.requests))
        with postgres_server() as pg:
            rows.append(one_backend("postgresql", pg.create_database(), node, token, tmp, args.processes, args.requests))
    cols = ["backend", "processes", "requests", "duration_s", "credits", "credits_possible", "double_credits",
            "log_entries", "distinct_decisions", "invariant_ok", "chain_ok", "p50_s", "p99_s", "crash_exit",
            "crash_left_nothing"]
    fmt = {"duration_s": "{:.1f}", "p50_s": "{:.3f}", "p99_s": "{:.3f}"}
    table = [cols] + [[fmt.get(c, "{}").format(r[c]) for c in cols] for r in rows]
    widths = [max(len(str(t[i])) for t in table) for i in range(len(cols))]
    for t in table:
        print("  ".join(str(v).rjust(w) for v, w in zip(t, widths)))
    ok = all(r["double_credits"] == 0 and r["invariant_ok"] and r["chain_ok"] and r["crash_left_nothing"]
             and r["log_entries"] == r["distinct_decisions"] and r["credits"] == r["credits_possible"] for r in rows)
    print("OK: no double credit, no lost log entry, invariant and chain hold, crash left nothing" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
