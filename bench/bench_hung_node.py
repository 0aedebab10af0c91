"""Eligibility latency while credits wait on a node that never answers (issue 17, point 1).

A real `dacp serve` whose Ethereum node is a 127.0.0.1 TCP server that accepts and never answers
(tests/support/hung_node.py); N credits at once to it, single eligibility requests one after another
meanwhile. Prints the eligibility latency before and during, and how each credit ended.

    .venv/bin/python bench/bench_hung_node.py [--credits 4] [--workers 2] [--timeout 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.hung_node import run  # noqa: E402


def ms(xs: list[float]) -> str:
    xs = sorted(xs)
    return (f"median {statistics.median(xs) * 1000:.1f} ms, p99 {xs[int(0.99 * (len(xs) - 1))] * 1000:.1f} ms, "
            f"max {xs[-1] * 1000:.1f} ms ({len(xs)} requests)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--credits", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=3.0)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = run(Path(tmp), credits=a.credits, workers=a.workers, timeout_s=a.timeout)
    print(f"hung Ethereum node, [ethereum] request_timeout_s = max_total_s = {a.timeout}, retries = 0, "
          f"ethereum_workers = {a.workers}")
    print(f"eligibility before the credits: {ms(out.normal)}")
    print(f"eligibility while {a.credits} credits wait: {ms(out.during)}")
    ratio = statistics.median(out.during) / statistics.median(out.normal)
    print(f"median during / before: {ratio:.2f}")
    for status, body, took in sorted(out.credits, key=lambda c: c[2]):
        err = body.get("error", {})
        print(f"credit: {status} {err.get('code')} reason={err.get('reason')} after {took:.2f} s")


if __name__ == "__main__":
    main()
