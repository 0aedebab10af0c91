"""Issue 15's "Measured today", measured on the real ledger: a real anvil node (chain id 1), an SQLite file,
the shipped bundle's policies (a copy whose USDC contract is the test token), prices from files.

    .venv/bin/python bench/measure_ledger_money.py [--postgres]

Prints, in one run:
1. keep every coin: ACC-1 deposits 123,456 ETH at one address; what the ledger records for it (quantity,
   counted value, excluded value) against the verified custody quantity; then ACC-2 asks for 10,000 ETH at
   the same address (credited = ACC-1's coins counted twice, refused = every coin has its owner);
3. split deposits: 250 ETH in one credit against 125 + 125 and 179 + 1 + 70 (each account first holds
   1,000,000 USDC; the 1 ETH takes the holding over the concentration add-on's threshold);
5. back-dating: FCM-CHARLIE (out of the programme since 2026-09-01) with ``as_of`` 2026-08-31;
6. the weekly report: ETH quantity reported against ETH in custody, value excluded by limits, the week
   after re-priced or not (the week-end price file), partial weeks marked or not.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support import ROOT  # noqa: E402
from tests.support.anvil_node import anvil_mine, anvil_node, deploy, new_address, rpc, transact  # noqa: E402
from tests.support.ledger_workload import PricesAt, Setup, make_ledger, usdc_request, write_policies  # noqa: E402

ETH_PRICE = "3120.55"
START = datetime(2026, 11, 18, 12, tzinfo=timezone.utc)  # a Wednesday of 2026-W47


def eth_request(account: str, participant: str, qty: str, address: str, key: str, as_of: datetime | None = None):
    from rules.ledger.book import CreditRequest

    return CreditRequest(account, participant, "ETH", Decimal(qty), (address,), key, custodian="coinbase-custody",
                         segregated=True, as_of=as_of)


def fund_eth(node: Any, qty: int) -> str:
    a = new_address(node.w3)
    rpc(node.w3, "anvil_setBalance", [a, hex(qty * 10**18)])
    anvil_mine(node.w3, 70)
    return a


def fund_usdc(node: Any, token: Any, qty: int) -> str:
    a = new_address(node.w3)
    transact(node.w3, token.functions.mint(a, qty * 10**6))
    anvil_mine(node.w3, 70)
    return a


def held(ledger: Any, account: str, asset: str) -> tuple[Decimal, Decimal, Decimal]:
    ps = ledger.store.positions(account=account, asset=asset)
    return (sum((p.quantity for p in ps), Decimal(0)), sum((p.collateral_value_usd for p in ps), Decimal(0)),
            sum((p.after_haircut_usd - p.collateral_value_usd for p in ps), Decimal(0)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--postgres", action="store_true", help="the ledger on a throw-away PostgreSQL server")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, anvil_node(chain_id=1) as node:
        token = deploy(node.w3, "TestFiatToken", "USD Coin", "USDC")
        pol = write_policies(ROOT, Path(tmp) / "policies", token.address)
        if args.postgres:
            from tests.support.postgres_node import postgres_server

            ctx: Any = postgres_server()
            target = ctx.__enter__().create_database()
        else:
            ctx, target = None, str(Path(tmp) / "ledger.sqlite")
        prices = Path(tmp) / "p.yaml"
        prices.write_text("")
        ledger = make_ledger(Setup(target, str(pol), str(prices), node.url))
        ledger.clock = lambda: START
        ledger.prices = PricesAt(lambda: ledger.clock(), {"USDC": "0.9999", "ETH": ETH_PRICE})
        try:
            run(ledger, node, token, Path(tmp))
        finally:
            ledger.store.close()
            if ctx is not None:
                ctx.__exit__(None, None, None)
    return 0


def run(ledger: Any, node: Any, token: Any, tmp: Path) -> None:
    from rules.ledger import weekly_report as rep

    print("1. every coin on its depositor's books")
    a = fund_eth(node, 123_456)
    r = ledger.credit(eth_request("ACC-1", "FCM-ALPHA", "123456", a, "m-1"))
    q, v, x = held(ledger, "ACC-1", "ETH")
    print(f"   ACC-1 deposits 123456 ETH: status {r['status']}, credited {r.get('quantity_credited')} ETH of which the "
          f"limits count {r.get('quantity_counted', r.get('quantity_credited'))} ({', '.join(r.get('excluded_by', []))}); "
          f"ledger records {q} ETH, counted {v} USD, excluded {x} USD")
    on_books = sum((p.quantity for p in ledger.store.positions(asset="ETH", address=a)), Decimal(0))
    print(f"   at the custody address: ledger {on_books} ETH of 123456 verified")
    r2 = ledger.credit(eth_request("ACC-2", "FCM-BRAVO", "10000", a, "m-2"))
    print(f"   ACC-2 asks for 10000 ETH at the same address: {r2['status']}"
          + (f" ({r2['refusal']['rule']})" if r2.get("refusal") else f", {r2['quantity_credited']} ETH credited"))

    print("3. split deposits (each account first holds 1,000,000 USDC)")
    for acct, pieces in (("ACC-S1", ["250"]), ("ACC-S2", ["125", "125"]), ("ACC-S3", ["179", "1", "70"])):
        u = fund_usdc(node, token, 1_000_000)
        ledger.credit(usdc_request(acct, "1000000", u, f"{acct}-usdc", participant="FCM-BRAVO", at=START))
        e = fund_eth(node, 250)
        for i, p in enumerate(pieces):
            ledger.credit(eth_request(acct, "FCM-BRAVO", p, e, f"{acct}-eth-{i}"))
        print(f"   {acct} ETH as {' + '.join(pieces)}: counted {held(ledger, acct, 'ETH')[1]} USD")

    print("5. back-dating (with a price dated before that as_of)")
    c = fund_eth(node, 10)
    back = datetime(2026, 8, 31, 12, tzinfo=timezone.utc)
    now_prices, ledger.prices = ledger.prices, PricesAt(lambda: back, {"USDC": "0.9999", "ETH": ETH_PRICE})
    try:
        r = ledger.credit(eth_request("ACC-C", "FCM-CHARLIE", "10", c, "m-c", as_of=back))
        print(f"   FCM-CHARLIE as_of 2026-08-31 on {START.date()}: {r['status']}"
              + (f" ({r['refusal'].get('code', r['refusal']['rule'])})" if r.get("refusal") else ""))
    except Exception as e:  # noqa: BLE001 - the measurement prints whatever the ledger does
        print(f"   FCM-CHARLIE as_of 2026-08-31 on {START.date()}: refused: {type(e).__name__} "
              f"(code {getattr(e, 'code', '?')}, exit {getattr(e, 'exit_code', '?')}): {e}")
    ledger.prices = now_prices

    print("6. weekly report")
    custody_eth = sum((Decimal(s.balance_raw).scaleb(-s.decimals) for s in ledger.store.custody_states()
                       if s.asset == "ETH"), Decimal(0))
    for week, price in (("2026-W47", ETH_PRICE), ("2026-W48", "2500.00")):
        kw: dict[str, Any] = {}
        pfile = tmp / f"week-{week}.yaml"
        end = rep.parse_week(week)[1]
        stamp = (end - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
        pfile.write_text(f'ETH: {{price_usd: "{price}", updated_at: "{stamp}", source: "desk close"}}\n'
                         f'USDC: {{price_usd: "0.9999", updated_at: "{stamp}", source: "desk close"}}\n')
        if "prices" in rep.weekly.__code__.co_varnames:
            from adapters.custody import PriceReader

            kw["prices"] = PriceReader({"file": str(pfile), "max_age_s": 86400})
        if "now" in rep.weekly.__code__.co_varnames:
            kw["now"] = START + timedelta(days=12)  # both weeks are over
        r = rep.weekly(ledger.store, week, **kw)
        eth = next((x for x in r["by_asset"] if x["asset"] == "ETH"), {})
        recon = r.get("custody", {}).get("by_asset", {}).get("ETH", {})
        print(f"   {week} (ETH at {price}): reported {eth.get('quantity')} ETH (custody {custody_eth}), market "
              f"{eth.get('market_value_usd')} USD, counted {eth.get('collateral_value_usd')} USD, excluded by "
              f"limits {eth.get('excluded_by_limits_usd')} USD; partial {r.get('partial', 'not marked')}; "
              f"reconciliation {recon.get('status', 'none')} (custody {recon.get('custody_quantity')} ETH = "
              f"{recon.get('custody_value_usd')} USD at the week-end price)")


if __name__ == "__main__":
    raise SystemExit(main())
