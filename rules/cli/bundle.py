"""``dacp validate``, ``dacp test`` and ``dacp bundle show|compile``: checking and inspecting a policy bundle.

These prepare a change, so they work on a bundle that is not approved yet (``require_approval=False``);
every command that decides refuses one.
"""

from __future__ import annotations

import argparse
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

from rules.app import Dacp
from rules.cli.common import AddCommon, Handler, print_json, settings_from_args
from rules.errors import PolicyError
from rules.lifecycle.policy_tests import run_tests
from rules.policy.analysis import analyse
from rules.policy.model import AddOn, HaircutSchedule, Limit
from rules.values import decimal_text


def add_validate(sub: Any, add_common: AddCommon) -> dict[str, Handler]:
    p = sub.add_parser("validate", help="check a policy bundle against the schema and its cross-references")
    p.add_argument("directory", nargs="?", type=Path, help="bundle directory (default: the configured policies)")
    p.add_argument("--strict", action="store_true",
                   help="static analysis findings (schedule gaps, bucket order, totals, facts, phases) are errors (CI)")
    add_common(p)
    return {"validate": cmd_validate}


def add_test(sub: Any, add_common: AddCommon) -> dict[str, Handler]:
    p = sub.add_parser("test", help="run the policy unit tests (YAML) and report rule coverage")
    p.add_argument("tests", nargs="?", type=Path, help="tests directory (default: <policies>/tests)")
    p.add_argument("--no-coverage", action="store_true", help="do not fail on rules the tests do not cover")
    p.add_argument("-v", "--verbose", action="store_true", help="list every test")
    add_common(p)
    return {"test": cmd_test}


def add_bundle(sub: Any, add_common: AddCommon) -> dict[str, Handler]:
    p = sub.add_parser("bundle", help="inspect a policy bundle")
    bsub = p.add_subparsers(dest="bundle_command", required=True, metavar="ACTION")
    s = bsub.add_parser("show", help="hash, version, dates and every rule with its file and line")
    s.add_argument("directory", nargs="?", type=Path)
    add_common(s)
    c = bsub.add_parser("compile", help="print the durable_rules ruleset the bundle compiles to (JSON data)")
    c.add_argument("directory", nargs="?", type=Path)
    add_common(c)
    return {"bundle": cmd_bundle}


def cmd_validate(args: argparse.Namespace) -> int:
    s = settings_from_args(args)
    bundle = Dacp(s, require_approval=False).bundle
    findings = analyse(bundle)
    if findings and args.strict:
        raise PolicyError([f.problem() for f in findings])
    for f in findings:
        print(f"warning: {f.render()}", file=sys.stderr)
    n = len(bundle.rule_ids())
    print(f"{s.policies}: valid - bundle {bundle.name} {bundle.version}, {n} rules, {len(bundle.assets)} assets, "
          f"sha256 {bundle.hash}" + (f"; {len(findings)} finding(s) (--strict makes them errors)" if findings else ""))
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    s = settings_from_args(args)
    dacp = Dacp(s, log_enabled=False, require_approval=False)
    report = run_tests(dacp.engine, args.tests or s.policies / "tests")
    for r in report.results:
        if not r.ok or args.verbose:
            print(f"{'PASS' if r.ok else 'FAIL'} {r.file}:{r.line}: {r.name}")
            for f in r.failures:
                print(f"       {f}")
    uncovered = report.uncovered()
    print(f"{report.passed} passed, {report.failed} failed")
    if uncovered:
        print(f"rules not covered (never seen both holding and not holding): {', '.join(uncovered)}")
    else:
        print(f"coverage: all {len(report.rule_ids)} rules seen holding and not holding")
    return 1 if report.failed or (uncovered and not args.no_coverage) else 0


def cmd_bundle(args: argparse.Namespace) -> int:
    dacp = Dacp(settings_from_args(args), log_enabled=False, require_approval=False)
    b = dacp.bundle
    if args.bundle_command == "compile":
        compiled = dacp.engine.compiled
        print_json({"ruleset": compiled.ruleset_name, "shards": dict(compiled.durable_shards()),
                    "rules": {r.pass_name: r.id for r in compiled.rules}})
        return 0
    print(f"bundle   {b.name} {b.version}\nsha256   {b.hash}\nin force {b.dated.effective_from} .. "
          f"{b.dated.effective_to or 'open'}")
    print("phase clocks (Letter 26-05: each FCM's phases from the date it starts accepting digital assets):")
    for c in b.phase_clocks():
        windows = ", ".join(f"{w['id']} {w['starts']} .. {w['ends'] or 'open'}" for w in c["phases"])
        print(f"  {c['participant']:16} accepting from {c['accepting_from'] or '(the programme start)'}: {windows}")
    print(f"rules ({len(b.rule_ids())}, as `dacp validate` counts them):")
    rows = [(p.id, f"phase {p.starts} .. {p.ends or 'open'}: {p.eligible.describe()} eligible", p.src) for p in b.phases]
    rows += [(c.id, c.check.describe(), c.src) for c in b.criteria]
    for h in b.haircuts:
        rows.append((h.id, f"haircut for {h.applies.describe()}: {_schedule_words(h)}", h.src))
        rows += [(a.id, _add_on_words(a), a.src) for a in h.add_ons]
    rows += [(lim.id, f"limit on {lim.applies.describe()}: {_limit_words(lim)}", lim.src) for lim in b.limits]
    for rid, words, src in rows:
        print(f"  {rid:40} {str(src):18} {words}")
    return 0


def _pct(d: Decimal) -> str:
    """A share as a percentage: 0.2 -> 20%, 0.005 -> 0.5%."""
    return decimal_text((d * 100).normalize()) + "%"


def _schedule_words(h: HaircutSchedule) -> str:
    if h.buckets:
        first, last = h.buckets[0].haircut, h.buckets[-1].haircut
        words = f"by {h.bucket_fact}, {_pct(first)} .. {_pct(last)} in {len(h.buckets)} buckets"
    else:
        words = "highest of " + ", ".join(f"{_pct(s.haircut)} ({s.id})" for s in h.sources)
    return words + (f", floor {_pct(h.floor)}" if h.floor is not None else "")


def _add_on_words(a: AddOn) -> str:
    when = f"share above {_pct(a.when_share_above)}" if a.when_share_above is not None else \
        a.when.describe() if a.when is not None else "always"
    return f"add-on +{_pct(a.haircut)} when {when}"


def _limit_words(lim: Limit) -> str:
    caps = []
    if lim.max_share is not None:
        caps.append(f"at most {_pct(lim.max_share)} of the collateral value"
                    + (f" (from {lim.min_total_usd:,f} USD)" if lim.min_total_usd is not None else ""))
    if lim.max_value_usd is not None:
        caps.append(f"at most {lim.max_value_usd:,f} USD")
    if lim.max_quantity is not None:
        caps.append(f"at most {decimal_text(lim.max_quantity)} units")
    reach = "" if lim.across == "account" else f" across the {lim.across}"
    return "; ".join(caps) + reach + (f", per {lim.per}" if lim.per else "")
