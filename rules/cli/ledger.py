"""``dacp credit | withdraw | reverify | revalue | ledger ... | report weekly``: the collateral ledger's doors.

The ledger lives in one database with the decision log it writes to: ``--ledger`` or settings
``[ledger] url`` (``DACP_LEDGER_URL``), default the decision log (``log``). A file path or
``sqlite:///path`` is SQLite; ``postgresql://user@host:port/db`` is PostgreSQL (several replicas).

Exit codes: 0 done; 1 a credit was refused (not eligible, or the coins are already credited) or the
ledger check failed; 3 bad input; 4 custody could not be verified (retry with the same key); 5 storage.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from rules.app import Dacp, custody_verifier, open_ledger_store, price_reader
from rules.cli.common import AddCommon, Handler, print_json, print_table, progress_bar, settings_from_args
from rules.engine.decide import Engine
from rules.engine.query import parse_document
from rules.errors import InputError
from rules.ledger import weekly_report as rep
from rules.margin import weekly as margin_weekly
from rules.margin.verify import check_ledger
from rules.ledger.book import ACCOUNT_TYPES, CreditRequest, Ledger, WithdrawRequest, check_key
from rules.ledger.requests import check_as_of
from rules.policy.loader import load_bundle
from rules.settings import Settings
from rules.values import address_list, decimal_value, identifier, now_utc, time_value, utc_text

LEDGER_HELP = "ledger database: file path, sqlite:///path or postgresql://... (default: settings [ledger] url, else the log)"


def register(sub: Any, add_common: AddCommon) -> dict[str, Handler]:
    def common(p: argparse.ArgumentParser) -> None:
        add_common(p)
        p.add_argument("--ledger", help=LEDGER_HELP)

    p = sub.add_parser("credit", help="verify custody on-chain, decide, and credit the collateral value once")
    p.add_argument("--account", required=True)
    p.add_argument("--participant", required=True)
    p.add_argument("--asset", required=True)
    p.add_argument("--quantity", required=True, help="whole units, e.g. 12.5 (BTC, not satoshi)")
    p.add_argument("--address", action="append", required=True, dest="addresses", help="custody address (repeat)")
    p.add_argument("--idempotency-key", required=True, help="the same key returns the same result, never a 2nd credit")
    p.add_argument("--account-type", help="for a new account: customer-segregated (default), cleared-swaps, 30.7-secured")
    p.add_argument("--custodian", help="custodian id (programme custodians)")
    p.add_argument("--customer", help="the account's customer (an identifier): fixed by the first credit that names it; "
                   "the limits across a customer count every account of it")
    seg = p.add_mutually_exclusive_group()
    seg.add_argument("--segregated", dest="segregated", action="store_true", default=None,
                     help="the custody account is segregated for customers")
    seg.add_argument("--not-segregated", dest="segregated", action="store_false")
    p.add_argument("--evidence", type=Path, help="JSON or YAML file with the off-chain evidence block of a query "
                   "(stablecoin: issuer, reserve_attestation_date; fund: nav_date, holder_allowlisted, ...)")
    p.add_argument("--as-of", help="decision time (RFC 3339; default now)")
    p.add_argument("--prices", type=Path, help="static price file (default: settings [prices])")
    common(p)

    p = sub.add_parser("withdraw", help="debit collateral from an account (frees the custody balance)")
    p.add_argument("--account", required=True)
    p.add_argument("--asset", required=True)
    p.add_argument("--quantity", required=True)
    p.add_argument("--address", help="only from this custody address (default: newest credits first)")
    p.add_argument("--idempotency-key", required=True)
    common(p)

    p = sub.add_parser("reverify", help="verify every credited custody address again; reduce credits not covered")
    p.add_argument("--asset", help="only this asset")
    common(p)

    p = sub.add_parser("revalue", help="re-price every holding (new prices and/or policy bundle); before/after, deficits")
    p.add_argument("--prices", type=Path, help="price file (default: settings [prices])")
    p.add_argument("--bundle", type=Path, help="policy bundle to value under (default: --policies / settings)")
    p.add_argument("--as-of", help="valuation time (RFC 3339; default now)")
    p.add_argument("--dry-run", action="store_true", help="report only; write nothing")
    p.add_argument("--progress", action="store_true", help="progress bar even when stderr is not a terminal")
    p.add_argument("--format", choices=("json", "table"), default="table")
    common(p)

    p = sub.add_parser("ledger", help="ledger views and checks")
    lsub = p.add_subparsers(dest="ledger_command", required=True, metavar="ACTION")
    h = lsub.add_parser("holdings", help="current positions")
    h.add_argument("--account")
    h.add_argument("--format", choices=("json", "table"), default="table")
    common(h)
    c = lsub.add_parser("check", help="custody invariant, the ledger's rows recomputed from the log, and the log's tree")
    common(c)
    i = lsub.add_parser("incidents", help="the ledger's automatic incidents (node outages, shortfalls, ...)")
    i.add_argument("--since", help="RFC 3339 time")
    common(i)

    p = sub.add_parser("report", help="reports")
    rsub = p.add_subparsers(dest="report_command", required=True, metavar="REPORT")
    w = rsub.add_parser("weekly", help="weekly pilot report: collateral held by asset, participant, account type")
    w.add_argument("--week", required=True, help="ISO week, e.g. 2026-W47")
    w.add_argument("--format", choices=("json", "csv"), default="json", help="what to print on stdout")
    w.add_argument("--out", type=Path, help="directory: write weekly-<week>.json, -holdings.csv, -incidents.csv, .png")
    w.add_argument("--chart", type=Path, help="write the PNG chart here")
    w.add_argument("--since-week", help="first week of the chart (default: the ledger's first week)")
    w.add_argument("--prices", type=Path, help="week-end price file (default: settings [prices] file or feeds)")
    common(w)
    return {"credit": cmd_credit, "withdraw": cmd_withdraw, "reverify": cmd_reverify, "revalue": cmd_revalue,
            "ledger": cmd_ledger, "report": cmd_report}


# -- wiring ---------------------------------------------------------------------------------------
def _store(s: Settings, args: argparse.Namespace, create: bool = True) -> Any:
    return open_ledger_store(s, getattr(args, "ledger", None), create=create)


def _ledger(args: argparse.Namespace, *, verify: bool = False, prices: bool = False, create: bool = True) -> Ledger:
    """The ledger for a command; ``create=False`` for the read-only ones (no ledger: exit 3, nothing made)."""
    s = settings_from_args(args)
    dacp = Dacp(s, log_enabled=False)
    verifier = custody_verifier(s) if verify else None
    reader = price_reader(s, getattr(args, "prices", None)) if prices else None
    return Ledger.from_dacp(dacp, _store(s, args, create), verifier=verifier, prices=reader)


def _decimal(text: str, where: str) -> Decimal:
    return decimal_value(text, where)  # the one value grammar of every door (rules.values)


def _when(text: str | None, where: str) -> datetime | None:
    return None if text is None else time_value(text, where)


def _evidence(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read: {e}", str(path)) from None
    doc = parse_document(text, str(path))
    if isinstance(doc, dict) and "evidence" in doc and len(doc) == 1:
        doc = doc["evidence"]
    if not isinstance(doc, dict) or set(doc) - {"stablecoin", "fund"}:
        raise InputError("must be a mapping with 'stablecoin' and/or 'fund' (the evidence block of a query)", str(path))
    return json.loads(json.dumps(doc, default=str))


def _out(obj: Any) -> None:
    print_json(obj, default=str)  # ledger results carry Decimals and times


def _table(rows: list[dict[str, Any]], cols: list[str]) -> None:
    print_table([cols] + [[r.get(c, "") for c in cols] for r in rows])


# -- commands -------------------------------------------------------------------------------------
def cmd_credit(args: argparse.Namespace) -> int:
    check_key(args.idempotency_key)  # cheap checks first: bad input opens nothing
    if args.account_type is not None and args.account_type not in ACCOUNT_TYPES:
        raise InputError(f"unknown account type {args.account_type!r} (use one of {', '.join(ACCOUNT_TYPES)})",
                         "account type")

    # the one grammar of every door (rules.values; HTTP: rules.http.fields), before any store or node is opened
    req = CreditRequest(account=identifier(args.account, "--account"),
                        participant=identifier(args.participant, "--participant"),
                        asset=identifier(args.asset, "--asset", "asset"),
                        quantity=_decimal(args.quantity, "quantity"), addresses=address_list(args.addresses, "--address"),
                        idempotency_key=args.idempotency_key, account_type=args.account_type,
                        custodian=None if args.custodian is None else identifier(args.custodian, "--custodian"),
                        segregated=args.segregated, evidence=_evidence(args.evidence), as_of=_when(args.as_of, "as-of"),
                        customer=None if args.customer is None else identifier(args.customer, "--customer"))
    check_as_of(req.as_of, now_utc(), settings_from_args(args).ledger.as_of_window_s)  # before anything is opened
    ledger = _ledger(args, verify=True, prices=True)
    result = ledger.credit(req)
    _out(result)
    if result["status"] == "credited":
        print(f"credited {result['quantity_credited']} {result['asset']} = {result['collateral_value_usd']} USD to "
              f"{result['account']}{' (replayed: already done)' if result.get('replayed') else ''}", file=sys.stderr)
        return 0
    refusal = result.get("refusal", {})
    print(f"dacp: credit refused: {refusal.get('message', 'not eligible')}", file=sys.stderr)
    return 4 if refusal.get("retryable") else 1


def cmd_withdraw(args: argparse.Namespace) -> int:
    check_key(args.idempotency_key)

    req = WithdrawRequest(account=identifier(args.account, "--account"),
                          asset=identifier(args.asset, "--asset", "asset"), quantity=_decimal(args.quantity, "quantity"),
                          idempotency_key=args.idempotency_key,
                          address=None if args.address is None else address_list([args.address], "--address")[0])
    result = _ledger(args).withdraw(req)
    _out(result)
    return 0


def cmd_reverify(args: argparse.Namespace) -> int:
    result = _ledger(args, verify=True).reverify(asset=args.asset)
    _out(result)
    return 4 if result["failures"] else 0


def cmd_revalue(args: argparse.Namespace) -> int:
    ledger = _ledger(args, prices=True)
    engine = None
    if args.bundle is not None:
        engine = Engine.for_bundle(load_bundle(args.bundle), settings_from_args(args).engine)
    progress = progress_bar(len(ledger.store.positions()), "revaluing", args.progress)
    report = ledger.revalue(engine=engine, as_of=_when(args.as_of, "as-of"), progress=progress, dry_run=args.dry_run)
    if args.format == "json":
        _out(report)
    else:
        _table(report["accounts"], ["account", "participant", "account_type", "before_usd", "after_usd", "change_usd",
                                    "deficit_usd"])
        print(f"{len(report['accounts'])} accounts, {report['positions']} positions: {report['total_before_usd']} -> "
              f"{report['total_after_usd']} USD; deficit {report['total_deficit_usd']} USD; bundle {report['bundle']}"
              + (" (dry run: nothing written)" if report["dry_run"] else ""))
    return 0


def cmd_ledger(args: argparse.Namespace) -> int:
    ledger = _ledger(args, create=False)
    if args.ledger_command == "holdings":
        rows = ledger.holdings(args.account)
        if args.format == "json":
            _out(rows)
        else:
            _table(rows, ["account", "participant", "account_type", "asset", "address", "quantity", "price_usd",
                          "market_value_usd", "collateral_value_usd", "excluded_by_limits_usd"])
        return 0
    if args.ledger_command == "incidents":
        since = _when(args.since, "since")
        _out([i.__dict__ for i in ledger.store.incidents(since=utc_text(since, "microseconds") if since else None)
              if not i.details.get("notice")])  # incident notices: dacp incident list
        return 0
    rec = ledger.reconcile()
    problems = ledger.check(rec)
    margin = check_ledger(ledger.store, ledger.log)  # the margin tables, where there are any (rules.margin.verify)
    problems += [str(d) for d in margin.differences] if margin else []
    chain = ledger.log.verify()
    for p in problems:
        print(f"LEDGER PROBLEM: {p}")
    print(chain.render())
    if not problems:
        print(f"ledger OK: {len(ledger.store.positions())} positions, custody invariant holds at "
              f"{len(ledger.store.custody_states())} addresses; {ledger.store.request_count()} requests; "
              f"journal, positions, custody and accounts recomputed from {rec.leaves} log entries "
              f"({rec.lines} journal lines)" + (f"; margin: {margin.rows} rows recomputed from {margin.leaves} "
                                                  "margin entries" if margin else ""))
    else:
        print(f"ledger check FAILED: {len(problems)} problem(s)", file=sys.stderr)
    return 0 if not problems and chain.ok else 1


def cmd_report(args: argparse.Namespace) -> int:
    s = settings_from_args(args)
    rep.parse_week(args.week)  # bad input before anything is opened
    reader = price_reader(s, args.prices)
    store = _store(s, args, create=False)
    r = rep.weekly(store, args.week, prices=reader, first_week=args.since_week)
    panels = margin_weekly.add_to(r, lambda: Dacp(s, log_enabled=False).bundle, store)  # where there is margin
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        base = args.out / f"weekly-{args.week}"
        Path(f"{base}.json").write_text(json.dumps(r, indent=2) + "\n", encoding="utf-8")
        Path(f"{base}-holdings.csv").write_text(rep.holdings_csv(r), encoding="utf-8")
        Path(f"{base}-incidents.csv").write_text(rep.incidents_csv(r), encoding="utf-8")
        if "margin" in r:
            Path(f"{base}-margin.csv").write_text(margin_weekly.margin_csv(r), encoding="utf-8")
        rep.chart(r, f"{base}.png", panels)
        print(f"wrote {base}.json, -holdings.csv, -incidents.csv, " + ("-margin.csv, " if "margin" in r else "")
              + ".png", file=sys.stderr)
    if args.chart:
        rep.chart(r, args.chart, panels)
    if args.format == "csv":
        sys.stdout.write(rep.holdings_csv(r))
    else:
        _out(r)
    return 0
