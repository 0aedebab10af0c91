"""``dacp margin import|coverage|calls|check|free``: margin coverage on the ledger (rules.margin; docs/margin.md).

Every command goes through ``rules.app.Dacp`` (its bundle's margin policy, the ledger's database).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rules.app import Dacp
from rules.cli.common import AddCommon, Handler, print_json, print_table, settings_from_args
from rules.cli.ledger import LEDGER_HELP
from rules.values import identifier, time_value

_COVERAGE_COLS = ("account", "status", "requirement_usd", "ledger_collateral_usd", "offledger_collateral_usd",
                  "collateral_usd", "excess_usd", "deficit_usd")
_CALL_COLS = ("call_id", "account", "status", "level", "amount_usd", "deficit_usd", "issued_at", "deadline",
              "closed_at")


def register(sub: Any, add_common: AddCommon) -> dict[str, Handler]:
    p = sub.add_parser("margin", help="margin coverage: requirements, coverage, calls, what may be released")
    msub = p.add_subparsers(dest="margin_command", required=True, metavar="SUBCOMMAND")

    def common(q: argparse.ArgumentParser) -> None:
        add_common(q)
        q.add_argument("--ledger", help=LEDGER_HELP)

    q = msub.add_parser("import", help="import a requirements file (CSV or JSON; docs/margin.md): one log entry")
    q.add_argument("file", type=Path)
    common(q)
    q = msub.add_parser("coverage", help="each account's collateral against its requirement: excess or deficit")
    q.add_argument("--account")
    q.add_argument("--as-of", help="RFC 3339 time: the ledger's journal before it, the requirements up to its day")
    q.add_argument("--format", choices=("table", "json"), default="table")
    common(q)
    q = msub.add_parser("calls", help="issue, meet, withdraw and escalate margin calls as coverage stands; list them")
    q.add_argument("--as-of", help="RFC 3339 time to take the steps at (default: now)")
    q.add_argument("--account", help="list only this account's calls")
    q.add_argument("--format", choices=("table", "json"), default="table")
    common(q)
    q = msub.add_parser("check", help="the margin tables recomputed from the log's margin entries; rows that differ")
    q.add_argument("--format", choices=("table", "json"), default="table")
    common(q)
    q = msub.add_parser("free", help="what an account may withdraw without a deficit")
    q.add_argument("--account", required=True)
    common(q)
    return {"margin": cmd_margin}


def cmd_margin(args: argparse.Namespace) -> int:
    dacp = Dacp(settings_from_args(args), log_enabled=False)
    sub = args.margin_command
    if sub == "import":
        print_json(dacp.margin_import(args.file, args.ledger))
        return 0
    book = dacp.margin_book(args.ledger)
    account = identifier(args.account, "--account") if getattr(args, "account", None) else None
    as_of = time_value(args.as_of, "--as-of") if getattr(args, "as_of", None) else None
    if sub == "coverage":
        rows = [c.to_json() for c in book.coverage(account, as_of)]
        if args.format == "json":
            print_json(rows)
        else:
            print_table([list(_COVERAGE_COLS)] + [[r[c] for c in _COVERAGE_COLS] for r in rows])
        return 0
    if sub == "calls":
        steps = book.run_calls(as_of)
        calls = [c.row() for c in book.calls(account)]
        if args.format == "json":
            print_json({"steps": steps, "calls": calls})
        else:
            for s in steps:
                print(f"{s['step']}: {s['call_id']} {s['account']} {s['amount_usd']} USD, due {s['deadline']}"
                      + (f" (level {s['level']})" if s.get("level") else ""))
            print_table([list(_CALL_COLS)] + [[r[c] if r[c] is not None else "" for c in _CALL_COLS] for r in calls])
        return 0
    if sub == "check":
        result = book.check()
        if args.format == "json":
            print_json(result.to_json())
        else:
            for d in result.differences:
                print(f"MARGIN PROBLEM: {d}")
            print(f"margin {'OK' if result.ok else 'check FAILED'}: {result.rows} rows against {result.leaves} "
                  f"margin log entries" + ("" if result.ok else f"; {len(result.differences)} problem(s)"))
        return 0 if result.ok else 1
    print_json(book.free(identifier(args.account, "--account")))
    return 0
