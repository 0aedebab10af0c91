"""A small book through a real BTC price path: margin calls issued as the price falls, met by deliveries.

Three accounts hold BTC credited on the real ledger (custody verified on a litecoind regtest node, which
stands in for Bitcoin Core; docs/bitcoin.md), with requirements at CME and Bitnomial and, for one, cash off
the ledger. The BTC closes of 28 April to 18 June 2022 (data/prices/btc_usd_daily.csv: -53 %) are replayed
one a business day from 1 December 2026: each day the ledger is revalued at the day's close (``dacp
revalue``), then the margin calls are run (``dacp margin calls``). ACC-A and ACC-B deliver BTC the day after
a call, and each day while it is open, the deficit and a tenth more (a new on-chain deposit, credited),
which meets it; ACC-C never delivers, so its calls escalate or
are withdrawn when the price comes back. Every step is in the ledger's decision log; at the end the log
is verified and the coverage over time is written as CSV and a chart.

    .venv/bin/python examples/margin/btc_path.py [--out var/margin-example]

Needs ``litecoind`` (``scripts/setup`` installs it). The policy copy differs from the shipped bundle only in
BTC's network (regtest), so it is not the approved bundle: the example uses the ledger directly.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
from datetime import date, datetime, time, timedelta, timezone
from decimal import ROUND_UP, Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from adapters.custody import CustodyVerifier  # noqa: E402
from rules.engine.decide import Engine  # noqa: E402
from rules.evidence import PriceEvidence  # noqa: E402
from rules.ledger.book import CreditRequest, Ledger  # noqa: E402
from rules.ledger.store import LedgerStore  # noqa: E402
from rules.margin.book import MarginBook, withdrawal_guard  # noqa: E402
from rules.margin.inputs import parse_text  # noqa: E402
from rules.policy.loader import load_bundle  # noqa: E402
from tests.support.litecoin_node import litecoin_node  # noqa: E402

HISTORY = ("2022-04-28", "2022-06-18")
START = date(2026, 12, 1)
BOOK = {"ACC-A": Decimal(10), "ACC-B": Decimal(4), "ACC-C": Decimal(6)}  # BTC credited on day one
DELIVERS = {"ACC-A", "ACC-B"}
REQUIREMENTS = "account,dco,business_day,requirement_usd,net_of_offsets\n" + "".join(
    f"{a},{d},{START},{r},true\n" for a, d, r in (("ACC-A", "CME", "190000.00"), ("ACC-A", "BITNOMIAL", "40000.00"),
                                                   ("ACC-B", "CME", "175000.00"), ("ACC-C", "CME", "140000.00")))
CASH = ("account,holding,class,as_of,amount_usd,face_value_usd,price_pct,maturity,cusip\n"
        f"ACC-B,cash-usd,cash,{START},100000.00,,,,\n")


class Clock:
    """The simulated time every part reads (ledger, margin, prices)."""

    def __init__(self, at: datetime):
        self.at = at

    def __call__(self) -> datetime:
        return self.at


class HistoryPrices:
    """The day's real BTC close (data/prices), struck a minute before the clock."""

    configured = True

    def __init__(self, clock: Clock):
        self.clock, self.close = clock, Decimal(0)

    def read(self, asset) -> PriceEvidence:
        return PriceEvidence(asset.symbol, self.close, "data/prices/btc_usd_daily.csv", self.clock() - timedelta(minutes=1))


def closes() -> list[tuple[str, Decimal]]:
    with open(ROOT / "data" / "prices" / "btc_usd_daily.csv", newline="") as f:
        return [(r["date"], Decimal(r["close_usd"])) for r in csv.DictReader(f) if HISTORY[0] <= r["date"] <= HISTORY[1]]


def business_days(book: MarginBook, n: int) -> list[date]:
    cal, out, d = book.policy.calendar("CME"), [], START
    while len(out) < n:
        if cal.is_business_day(d):
            out.append(d)
        d += timedelta(days=1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "var" / "margin-example")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("ledger.sqlite*"):  # a new ledger each run
        old.unlink()
    work = Path(tempfile.mkdtemp(prefix="margin-example-"))
    pol = work / "policies"
    shutil.copytree(ROOT / "policies", pol, ignore=shutil.ignore_patterns("tests", "approvals"))
    (pol / "assets.yaml").write_text((pol / "assets.yaml").read_text().replace("network: main", "network: regtest"))
    bundle = load_bundle(pol)
    path = closes()
    clock = Clock(datetime.combine(START, time(14, 0), tzinfo=timezone.utc))
    prices = HistoryPrices(clock)
    store = LedgerStore(str(args.out / "ledger.sqlite"))
    book = MarginBook(bundle, store, clock=clock)
    with litecoin_node("litecoind", work) as node:
        node.create_wallet("w")
        miner = node.new_address("w")
        node.mine(101, miner)
        verifier = CustodyVerifier(bitcoin={"rpc_url": node.url, "cookie_file": str(node.cookie_file),
                                            "network": "litecoin-regtest", "allow_test_networks": True})
        ledger = Ledger(bundle, Engine.for_bundle(bundle, "python"), store, verifier=verifier, prices=prices,
                        clock=clock, withdrawal_guard=withdrawal_guard(bundle, store))
        deposits = [0]

        def deposit(account: str, btc: Decimal) -> dict:
            addr = node.new_address("w")
            node.send("w", addr, btc)
            node.mine(6, miner)
            deposits[0] += 1
            return ledger.credit(CreditRequest(account=account, participant="FCM-ALPHA", asset="BTC", quantity=btc,
                                               addresses=(addr,), idempotency_key=f"deposit-{deposits[0]}",
                                               custodian="anchorage", segregated=True, as_of=clock()))

        days = business_days(book, len(path))
        prices.close = path[0][1]
        for account, btc in BOOK.items():
            assert deposit(account, btc)["status"] == "credited"
        book.import_requirements(parse_text(REQUIREMENTS, "requirements.csv", book.policy))
        book.import_requirements(parse_text(CASH, "collateral.csv", book.policy))
        rows, events, owed = [], [], {}
        for (hist, close), day in zip(path, days):
            clock.at = datetime.combine(day, time(14, 0), tzinfo=timezone.utc)
            prices.close = close
            for account, amount in sorted(owed.items()):  # yesterday's calls: delivered this morning
                btc = (amount / (close * Decimal("0.75"))).quantize(Decimal("0.1"), rounding=ROUND_UP)
                r = deposit(account, btc)
                events.append((day, account, f"delivered {btc} BTC ({r['collateral_value_usd']} USD counted)"))
            owed = {}
            ledger.revalue(as_of=clock())
            clock.at = datetime.combine(day, time(20, 0), tzinfo=timezone.utc)
            for s in book.run_calls():
                events.append((day, s["account"], f"call {s['step']}" + (f" ({s['level']})" if s.get("level") else "")
                               + f": {s['amount_usd']} USD"))
            for c in book.coverage():
                if c.account in DELIVERS and book.calls(c.account, "open"):  # top up while a call is open
                    owed[c.account] = c.deficit_usd * Decimal("1.1")
                rows.append({"day": day.isoformat(), "history": hist, "btc_usd": str(close), "account": c.account,
                             "requirement_usd": str(c.requirement_usd), "collateral_usd": str(c.collateral_usd),
                             "deficit_usd": str(c.deficit_usd), "excess_usd": str(c.excess_usd)})
    ok = book.log.verify().ok and ledger.check() == []
    with open(args.out / "coverage.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    chart(rows, events, args.out / "coverage.png")
    for day, account, what in events:
        print(f"{day}  {account}  {what}")
    calls = book.calls()
    print(f"{len(path)} business days, {len(calls)} calls ({', '.join(f'{k} {sum(c.status == k for c in calls)}' for k in ('met', 'withdrawn', 'open'))}); "
          f"log {book.log.count()} entries, {'verified' if ok else 'NOT VERIFIED'}; "
          f"{args.out / 'coverage.csv'}, {args.out / 'coverage.png'}")
    store.close()
    shutil.rmtree(work, ignore_errors=True)


def chart(rows: list[dict], events: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    accounts = sorted({r["account"] for r in rows})
    fig, axes = plt.subplots(len(accounts) + 1, 1, figsize=(10, 2.6 * (len(accounts) + 1)), sharex=True)
    days = sorted({r["day"] for r in rows})
    x = list(range(len(days)))
    btc = {r["day"]: float(r["btc_usd"]) for r in rows}  # plotting only: the figures are the CSV's
    axes[0].plot(x, [btc[d] for d in days], color="tab:orange")
    axes[0].set_ylabel("BTC USD")
    axes[0].set_title("BTC closes 2022-04-28 .. 2022-06-18, one a business day from 2026-12-01")
    for ax, account in zip(axes[1:], accounts):
        mine = [r for r in rows if r["account"] == account]
        ax.plot(x, [float(r["collateral_usd"]) for r in mine], label="collateral counted")
        ax.plot(x, [float(r["requirement_usd"]) for r in mine], label="requirement", linestyle="--")
        for day, acct, what in events:  # calls issued red, escalated orange, met or withdrawn green
            colour = next((c for k, c in (("issued", "tab:red"), ("escalated", "tab:orange"), ("met", "tab:green"),
                                          ("withdrawn", "tab:green")) if k in what), None)
            if acct == account and colour:
                ax.axvline(days.index(day.isoformat()), color=colour, alpha=0.5, linewidth=1)
        ax.set_ylabel(f"{account} USD")
        ax.legend(loc="upper right", fontsize=8)
    axes[-1].set_xticks(x[::5], [days[i] for i in x[::5]], rotation=30, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
