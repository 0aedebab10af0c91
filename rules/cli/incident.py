"""``dacp incident record | list``: operational incident notices (Letter 26-05: prompt notice of significant
cybersecurity incidents and system disruptions), each an ``incident`` entry of the decision log, recorded in
the ledger's database (``rules.ledger.notices``) and listed in the weekly report.

Exit codes: 0 done; 3 bad input (nothing written) or, for ``list``, no ledger (none is created); 5 storage;
8 a notice whose row or entry was tampered with.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rules.app import open_ledger_store
from rules.audit.incident_format import KINDS
from rules.audit.log import DecisionLog
from rules.cli.common import AddCommon, Handler, print_json, print_table, settings_from_args
from rules.ledger import notices
from rules.values import time_value, utc_text

LEDGER_HELP = "ledger database: file path, sqlite:///path or postgresql://... (default: settings [ledger] url, else the log)"


def register(sub: Any, add_common: AddCommon) -> dict[str, Handler]:
    p = sub.add_parser("incident", help="operational incident notices (cybersecurity, system disruption, custody)")
    isub = p.add_subparsers(dest="incident_command", required=True, metavar="ACTION")
    r = isub.add_parser("record", help="record an incident notice (an entry of the decision log)")
    r.add_argument("--kind", required=True, choices=KINDS)
    sig = r.add_mutually_exclusive_group(required=True)
    sig.add_argument("--significant", dest="significant", action="store_true", default=None,
                     help="significant: Letter 26-05 asks for prompt notice")
    sig.add_argument("--not-significant", dest="significant", action="store_false")
    r.add_argument("--start", required=True, help="when it began (RFC 3339)")
    r.add_argument("--end", help="when it ended (RFC 3339; leave out while it goes on)")
    r.add_argument("--description", required=True, help="what happened, in plain words")
    r.add_argument("--recorded-by", help="who records it")
    add_common(r)
    r.add_argument("--ledger", help=LEDGER_HELP)
    ls = isub.add_parser("list", help="incident notices (those going on in [--since, --until))")
    ls.add_argument("--since", help="RFC 3339 time")
    ls.add_argument("--until", help="RFC 3339 time")
    ls.add_argument("--format", choices=("json", "table"), default="table")
    add_common(ls)
    ls.add_argument("--ledger", help=LEDGER_HELP)
    return {"incident": cmd_incident}


def cmd_incident(args: argparse.Namespace) -> int:
    s = settings_from_args(args)
    if args.incident_command == "record":
        start = time_value(args.start, "start")  # bad input before anything is opened
        end = None if args.end is None else time_value(args.end, "end")
        notices.check(args.kind, args.significant, start, end, args.description)
        store = open_ledger_store(s, args.ledger)
        try:
            n = notices.record(store, DecisionLog(database=store.db), kind=args.kind, significant=args.significant,
                               start=start, end=end, description=args.description, recorded_by=args.recorded_by)
        finally:
            store.close()
        print_json(n.to_json())
        print(f"recorded {'significant ' if n.significant else ''}{n.kind} incident {n.incident_id}", file=sys.stderr)
        return 0
    since = None if args.since is None else time_value(args.since, "since")
    until = None if args.until is None else time_value(args.until, "until")
    store = open_ledger_store(s, args.ledger, create=False)
    try:
        found = notices.listed(store, DecisionLog(database=store.db), since, until)
    finally:
        store.close()
    if args.format == "json":
        print_json([n.to_json() for n in found])
    else:
        print_table([["recorded_at", "kind", "significant", "start", "end", "description"]]
                    + [[n.recorded_at, n.kind, "yes" if n.significant else "no", utc_text(n.start),
                        utc_text(n.end) if n.end else "ongoing", n.description] for n in found])
    return 0
