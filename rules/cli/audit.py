"""``dacp explain``, ``dacp replay`` and ``dacp audit verify``: the decision log for auditors."""

from __future__ import annotations

import argparse
from typing import Any

from rules.app import Dacp, decision_log_exists
from rules.cli.common import AddCommon, Handler, print_json, settings_from_args
from rules.errors import InputError


def add_explain(sub: Any, add_common: AddCommon) -> dict[str, Handler]:
    p = sub.add_parser("explain", help="show a logged decision's trace in plain words")
    p.add_argument("decision_id")
    p.add_argument("--json", action="store_true", help="print the stored entry as JSON")
    add_common(p)
    return {"explain": cmd_explain}


def add_replay(sub: Any, add_common: AddCommon) -> dict[str, Handler]:
    p = sub.add_parser("replay", help="re-evaluate a logged decision under its stored bundle and compare")
    p.add_argument("decision_id")
    add_common(p)
    return {"replay": cmd_replay}


def add_audit(sub: Any, add_common: AddCommon) -> dict[str, Handler]:
    p = sub.add_parser("audit", help="decision log integrity")
    asub = p.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    v = asub.add_parser("verify", help="verify the whole hash chain and the stored bundles")
    v.add_argument("--expect-head", help="head hash recorded earlier; detects removal of the newest entries")
    add_common(v)
    return {"audit": cmd_audit}


def cmd_explain(args: argparse.Namespace) -> int:
    dacp = Dacp(settings_from_args(args))
    if args.json:
        e = dacp.log.get(args.decision_id)
        body = dict(e.body)
        if isinstance(body.get("decision"), dict):  # the trace expanded with the stored bundle
            body["decision"] = dacp.logged_decision(e)
        print_json({"seq": e.seq, "recorded_at": e.recorded_at, "bundle": e.bundle_hash, "entry_hash": e.entry_hash,
                    **body})
    else:
        print(dacp.explain(args.decision_id))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    dacp = Dacp(settings_from_args(args))
    r = dacp.replay(args.decision_id, evaluator=args.engine)
    if r.identical:
        print(f"replay of {r.decision_id}: IDENTICAL (eligible={str(r.replayed['eligible']).lower()}, "
              f"collateral {r.replayed['collateral_value_usd']} USD, bundle {r.replayed['policy']['bundle']})")
        return 0
    print(f"replay of {r.decision_id}: DIFFERENT")
    for d in r.differences[:50]:
        print(f"  {d}")
    return 1


def cmd_audit(args: argparse.Namespace) -> int:
    s = settings_from_args(args)
    if not decision_log_exists(s):
        raise InputError("no decision log here yet", str(s.log))
    res = Dacp(s).verify_log(args.expect_head)
    print(res.render())
    return 0 if res.ok else 1
