"""Margin coverage of a 50,000-position book (issue 19): seconds and memory, in one run.

The book is written straight into a real ledger database (SQLite file by default, or ``--ledger
postgresql://...``): 5,000 accounts of 10 positions each (BTC, ETH, USDC at their own custody addresses),
each position with its credit line in the journal; requirements at two DCOs per account (CME with a
cross-margin reduction for one account in ten, FICC), off-ledger cash and Treasuries for one account in
five, cross-margin profiles for one in ten. What is timed is the margin room's own work on it, as the doors
run it: coverage of every account now (positions) and as of a time (the journal), one account's coverage,
what one account may release, and the calls the book's deficits issue (each a transaction with its log leaf).
Memory: the peak of Python allocations during each step (tracemalloc) and the process's peak RSS.

    .venv/bin/python bench/bench_margin.py [--positions 50000] [--ledger URL] [--quick]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
import tracemalloc
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rules.ledger.records import Account, JournalEntry, Position  # noqa: E402
from rules.ledger.store import LedgerStore  # noqa: E402
from rules.margin.book import MarginBook  # noqa: E402
from rules.margin.inputs import parse_text  # noqa: E402
from rules.policy.loader import load_bundle  # noqa: E402

ASSETS = (("BTC", 8, Decimal("91250.00"), Decimal("0.80")), ("ETH", 18, Decimal("3120.55"), Decimal("0.75")),
          ("USDC", 6, Decimal("0.9999"), Decimal("0.98")))
DAY = date(2026, 11, 20)  # a Friday: a business day of every shipped calendar
AT = datetime(2026, 11, 20, 15, 0, tzinfo=timezone.utc)


def cents(x: Decimal) -> Decimal:
    return x.quantize(Decimal("0.01"), rounding="ROUND_DOWN")


def write_book(store: LedgerStore, positions: int, per_account: int = 10) -> dict:
    accounts = positions // per_account
    stamp = "2026-11-19T12:00:00.000000Z"
    requirements, collateral, profiles = [], [], []
    with store.transaction():
        for a in range(accounts):
            acct = f"ACC-{a:06d}"
            store.add_account(Account(acct, "FCM-ALPHA", "customer-segregated", stamp))
            total = Decimal(0)
            for k in range(per_account):
                sym, dec, price, keep = ASSETS[k % 3]
                qty = Decimal(1 + (a * 7 + k) % 20) / (10 if sym == "BTC" else 1) * (1000 if sym == "USDC" else 1)
                raw = int(qty.scaleb(dec))
                mv = cents(qty * price)
                cv = cents(mv * keep)
                total += cv
                addr = f"{sym.lower()}-{a:06d}-{k}"
                store.put_position(Position(acct, sym, addr, "FCM-ALPHA", raw, dec, mv, cv, cv, price, "0.2",
                                            f"d-{a}-{k}", "bench", {}, stamp, stamp))
                store.add_entry(JournalEntry(f"e-{a}-{k}", stamp, "credit", acct, "FCM-ALPHA", sym, addr, raw, dec, mv,
                                             cv, cv, price, f"d-{a}-{k}"))
            # the requirement: most accounts covered, one in four short by up to 30 %
            need = cents(total * (Decimal("1.05") + Decimal(a % 7) / 20)) if a % 4 == 0 else cents(total * Decimal("0.7"))
            cme = cents(need * Decimal("0.8"))
            xm = cents(cme * Decimal("0.25")) if a % 10 == 0 else Decimal(0)
            requirements.append({"account": acct, "dco": "CME", "business_day": DAY.isoformat(),
                                 "requirement_usd": str(cme), "cross_margin_reduction_usd": str(xm)})
            requirements.append({"account": acct, "dco": "FICC", "business_day": DAY.isoformat(),
                                 "requirement_usd": str(need - cme)})
            if a % 5 == 0:
                collateral.append({"account": acct, "holding": "cash", "class": "cash", "as_of": DAY.isoformat(),
                                   "amount_usd": "25000.00"})
                collateral.append({"account": acct, "holding": "ust", "class": "us-treasury", "as_of": DAY.isoformat(),
                                   "face_value_usd": "100000.00", "price_pct": "99.5", "maturity": "2029-05-15",
                                   "cusip": "91282CJL6"})
            if a % 10 == 0:
                profiles.append({"account": acct, "agreement_on_file": True, "designated": a % 20 == 0,
                                 "futures": [{"contract": "ZN", "dco": "CME", "quantity": "-50"}],
                                 "cash_treasuries": [{"cusip": "91282CJL6", "cleared_by": "FICC",
                                                      "face_value_usd": "5000000.00"}]})
    return {"requirements": requirements, "collateral": collateral, "cross_margin": profiles}


def measure(label: str, fn, results: list, again: bool = True) -> object:
    """Time ``fn`` (best of 3 when it only reads: ``again``); then, for a read, its peak Python allocations
    in one more run under tracemalloc (which slows it, so it is not timed)."""
    took, out = float("inf"), None
    for _ in range(3 if again else 1):
        t0 = time.perf_counter()
        out = fn()
        took = min(took, time.perf_counter() - t0)
    peak = None
    if again:
        tracemalloc.start()
        fn()
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    results.append((label, took, peak))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--positions", type=int, default=50_000)
    ap.add_argument("--ledger", help="ledger database (default: a new SQLite file in a scratch directory)")
    ap.add_argument("--quick", action="store_true", help="5,000 positions (the smoke run)")
    args = ap.parse_args()
    n = 5_000 if args.quick else args.positions
    scratch = Path(tempfile.mkdtemp(prefix="bench-margin-"))
    store = LedgerStore(args.ledger or str(scratch / "ledger.sqlite"))
    bundle = load_bundle(ROOT / "policies")
    t0 = time.perf_counter()
    doc = write_book(store, n)
    book = MarginBook(bundle, store, clock=lambda: AT)
    parsed = parse_text(json.dumps(doc), "bench.json", book.policy)
    imported = book.import_requirements(parsed)
    setup_s = time.perf_counter() - t0
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results: list = []
    cov = measure("coverage, every account, now (positions)", lambda: book.coverage(), results)
    measure("coverage, every account, as of a time (journal)",
            lambda: book.coverage(as_of=AT + timedelta(hours=1)), results)
    measure("coverage, one account", lambda: book.coverage("ACC-000040"), results)
    measure("free, one account (bisection over base units)", lambda: book.free("ACC-000041"), results)
    steps = measure("calls: issue the book's calls (a transaction and a log leaf each)", lambda: book.run_calls(),
                    results, again=False)
    measure("calls: again, the open calls checked (each under its account's lock)", lambda: book.run_calls(),
            results, again=False)
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    deficits = sum(1 for c in cov if c.deficit_usd > 0)
    reduced = sum(1 for c in cov for r in c.reductions if r["eligible"])
    print(f"book: {n:,} positions, {n // 10:,} accounts, {imported['requirements']:,} requirements, "
          f"{imported['collateral']:,} off-ledger holdings, {imported['cross_margin']:,} cross-margin profiles "
          f"on {store.db.kind} ({setup_s:.1f} s to write and import)")
    print(f"coverage: {deficits:,} accounts in deficit, {reduced:,} with a cross-margin reduction applied; "
          f"{len(steps):,} calls issued")
    print(f"{'step':<70} {'seconds':>8} {'us/position':>12} {'peak MiB':>9}")
    for label, took, peak in results:
        print(f"{label:<70} {took:8.3f} {took / n * 1e6:12.2f} {'' if peak is None else f'{peak:.1f}':>9}")
    print(f"process peak RSS: {rss0:.0f} MiB after writing the book, {rss1:.0f} MiB at the end "
          f"(+{rss1 - rss0:.0f} MiB for every step above)")
    store.close()


if __name__ == "__main__":
    main()
