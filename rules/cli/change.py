"""``dacp diff`` (what a policy change does, and to which holdings) and ``dacp backtest`` (whether a haircut
covers real price losses): analysing a change before it is approved (docs/policy-lifecycle.md).

Both read bundles with ``load_bundle``, which never checks approval: the bundle under study need not be approved.
"""

from __future__ import annotations

import argparse
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from rules.audit.log import DecisionLog
from rules.cli.common import AddCommon, Handler, print_json, progress_bar, settings_from_args
from rules.engine.decide import Engine
from rules.errors import InputError
from rules.lifecycle import backtest as bt
from rules.lifecycle import diff as df
from rules.policy.loader import load_bundle
from rules.policy.model import Bundle
from rules.settings import Settings

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


def add_diff(sub: Any, add_common: AddCommon) -> dict[str, Handler]:
    p = sub.add_parser("diff", help="what a policy change does: rules added, removed, changed; impact on a portfolio")
    p.add_argument("old", help="old bundle: a policy directory, or a bundle sha256 stored in the decision log")
    p.add_argument("new", nargs="?", help="new bundle: directory or stored sha256 (default: the configured policies)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--portfolio", type=Path, help="JSON Lines of queries (one holding each; optional "
                     "margin_requirement_usd per account): every holding the change affects, totals per asset/account")
    src.add_argument("--ledger", action="store_true", help="use the current holdings of the collateral ledger")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--progress", action="store_true", help="show a progress bar even when stderr is not a terminal")
    p.add_argument("--exit-code", action="store_true", help="exit 1 when the bundles differ (like git diff --exit-code)")
    add_common(p)
    return {"diff": cmd_diff}


def add_backtest(sub: Any, add_common: AddCommon) -> dict[str, Handler]:
    p = sub.add_parser("backtest", help="how often the policy haircut was exceeded by real price losses")
    p.add_argument("--asset", required=True, help="asset symbol; its haircut comes from the bundle")
    p.add_argument("--prices", type=Path, required=True, help="CSV of daily closes: date, asset, close_usd")
    p.add_argument("--horizon", required=True, help="liquidation horizon in days, e.g. 2d")
    p.add_argument("--since", help="first window start (YYYY-MM-DD)")
    p.add_argument("--until", help="last window end (YYYY-MM-DD)")
    p.add_argument("--confidence", help="confidence level of the verdict (default 0.99; 0.99 and 0.997 always shown)")
    p.add_argument("--haircut", help="test this haircut (a fraction, e.g. 0.25) instead of the bundle's")
    p.add_argument("--as-of", help="date whose haircut schedule is used (default: today, UTC)")
    p.add_argument("--chart", type=Path, help="PNG chart to write (default: backtest-<ASSET>-<H>d.png)")
    p.add_argument("--no-chart", action="store_true", help="do not write a chart")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--check", action="store_true", help="exit 1 when the haircut does not cover the loss at the confidence level")
    add_common(p)
    return {"backtest": cmd_backtest}


# -- diff ------------------------------------------------------------------------------------------
def _load_side(ref: str, s: Settings) -> tuple[Bundle, str]:
    p = Path(ref)
    if p.is_dir():
        return load_bundle(p), str(p)
    if _HEX64.match(ref):
        if not s.log.is_file():
            raise InputError(f"not a directory, and there is no decision log at {s.log} to find a stored bundle in", ref)
        with DecisionLog(s.log) as log:
            return log.bundle(ref.lower()), f"stored bundle (log {s.log})"
    raise InputError("neither a policy directory nor a bundle sha256 (64 hex digits) stored in the decision log", ref)


def _portfolio(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("no such file", str(path)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read: {getattr(e, 'strerror', None) or e}", str(path)) from None
    return df.read_portfolio(text, str(path))


def cmd_diff(args: argparse.Namespace) -> int:
    s = settings_from_args(args)
    if args.ledger:
        raise InputError("ledger not available to dacp diff yet: for the ledger's holdings under a new bundle run "
                         "`dacp ledger revalue --bundle DIR --dry-run`, or export the holdings as JSON Lines of "
                         "queries and use --portfolio", "--ledger")
    holdings = _portfolio(args.portfolio) if args.portfolio is not None else None
    old, old_label = _load_side(args.old, s)
    new, new_label = _load_side(args.new, s) if args.new else (load_bundle(s.policies), str(s.policies))
    changes = df.diff_bundles(old, new)
    impact = None
    if holdings is not None:
        impact = df.portfolio_impact(Engine.for_bundle(old, s.engine), Engine.for_bundle(new, s.engine), holdings,
                                     progress_bar(len(holdings), "comparing", args.progress))
    if args.json:
        out: dict[str, Any] = {
            "old": {"ref": old_label, "bundle": old.hash, "name": old.name, "version": old.version},
            "new": {"ref": new_label, "bundle": new.hash, "name": new.name, "version": new.version},
            "identical": old.hash == new.hash, "changes": [c.to_json() for c in changes]}
        if impact is not None:
            out["portfolio"] = impact.to_json()
        print_json(out)
    else:
        print(df.render(old, new, old_label, new_label, changes, impact))
    return 1 if args.exit_code and (changes or old.hash != new.hash) else 0


# -- backtest --------------------------------------------------------------------------------------
def _given_haircut(text: str, asset: str) -> bt.PolicyHaircut:
    try:
        h = Decimal(text)
    except InvalidOperation:
        raise InputError(f"{text!r} is not a number", "--haircut") from None
    if not h.is_finite() or not 0 <= h <= 1:
        raise InputError(f"a haircut is a fraction from 0 to 1, not {text}", "--haircut")
    return bt.PolicyHaircut(asset, h, None, "given on the command line (--haircut)")


def cmd_backtest(args: argparse.Namespace) -> int:
    s = settings_from_args(args)
    horizon = bt.parse_horizon(args.horizon)
    since = bt.parse_day(args.since, "--since")
    until = bt.parse_day(args.until, "--until")
    as_of = bt.parse_day(args.as_of, "--as-of")
    confidence = bt.parse_confidence(args.confidence) if args.confidence else None
    chart = None if args.no_chart else (args.chart or Path(f"backtest-{args.asset}-{horizon}d.png"))
    if chart is not None and chart.suffix.lower() != ".png":
        raise InputError("the chart is a PNG: give a file name ending in .png", str(chart))
    if chart is not None and not chart.parent.is_dir():
        raise InputError("the chart's directory does not exist", str(chart.parent))
    if args.haircut is not None:
        haircut = _given_haircut(args.haircut, args.asset)
    else:
        haircut = bt.policy_haircut(load_bundle(s.policies), args.asset, as_of)
    series = bt.load_prices(args.prices)
    series.check_asset(args.asset)
    result = bt.run_backtest(series, haircut, horizon, since, until, confidence)
    if chart is not None:
        bt.plot(result, series, chart)
    if args.json:
        print_json({**result.to_json(), "chart": str(chart) if chart else None})
    else:
        print(bt.render_text(result))
        if chart is not None:
            print(f"chart: {chart}")
    return 1 if args.check and not result.covers else 0
