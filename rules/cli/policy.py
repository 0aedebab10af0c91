"""``dacp diff``, ``dacp policy submit|approve|publish|status|keygen`` and ``dacp backtest``: the policy
lifecycle for compliance teams (docs/policy-lifecycle.md).

Registered through ``rules.cli.run.EXTENSIONS``. It also wraps the built-in ``validate``, ``test`` and
``bundle`` commands in ``rules.lifecycle.approvals.preparing()``: those prepare a change, so they work on a bundle
that is not approved yet, while ``evaluate``, ``verify`` and every other door that decides refuse it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import uuid
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Callable

from rules.lifecycle import approvals as ap
from rules.errors import InputError
from rules.policy.model import Bundle
from rules.policy.loader import load_bundle
from rules.settings import Settings

Handler = Callable[[argparse.Namespace], int]
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


def _settings(args: argparse.Namespace) -> Settings:
    from rules.cli.run import settings_from_args

    return settings_from_args(args)


def _out(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def register(sub: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> dict[str, Handler]:
    from rules.cli import run as cli
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

    p = sub.add_parser("policy", help="four-eyes approval of policy bundles: submit, approve, publish, status, keygen")
    psub = p.add_subparsers(dest="policy_command", required=True, metavar="ACTION")
    for name, words in (("submit", "sign the bundle as its author (the first step of a change)"),
                        ("approve", "sign the bundle as an approver (not its author)"),
                        ("publish", "sign and record the publication of an approved bundle")):
        s = psub.add_parser(name, help=words)
        s.add_argument("directory", nargs="?", type=Path, help="bundle directory (default: the configured policies)")
        s.add_argument("--key", type=Path, required=True, help="your Ed25519 private key (PEM), listed in the approvers file")
        add_common(s)
    s = psub.add_parser("status", help="who signed the bundle, whether it is approved and active (exit 0 only if active)")
    s.add_argument("directory", nargs="?", type=Path, help="bundle directory (default: the configured policies)")
    s.add_argument("--json", action="store_true")
    add_common(s)
    s = psub.add_parser("keygen", help="create an Ed25519 key pair; prints the approvers-file entry for it")
    s.add_argument("--out", type=Path, required=True, help="private key file to create (mode 0600; never overwritten)")
    s.add_argument("--id", required=True, help="the approver id (lower case, e.g. j.doe)")
    s.add_argument("--name", required=True, help="name and function, e.g. 'Jane Doe (Head of Risk)'")
    s.add_argument("--roles", default="approver", help="comma-separated: author, approver, publisher")
    add_common(s)

    p = sub.add_parser("backtest", help="how often the policy haircut was exceeded by real price losses")
    p.add_argument("--asset", required=True, help="asset symbol; its haircut comes from the bundle")
    p.add_argument("--prices", type=Path, required=True, help="CSV of daily closes: date, close_usd")
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

    return {"diff": cmd_diff, "policy": cmd_policy, "backtest": cmd_backtest,
            # preparing a change works on an unapproved bundle; deciding does not
            "validate": _preparing(cli.cmd_validate), "test": _preparing(cli.cmd_test),
            "bundle": _preparing(cli.cmd_bundle)}


def _preparing(handler: Handler) -> Handler:
    def run(args: argparse.Namespace) -> int:
        with ap.preparing():
            return handler(args)

    run.__name__ = getattr(handler, "__name__", "handler")
    run.__doc__ = handler.__doc__
    return run


# -- diff ------------------------------------------------------------------------------------------
def _load_side(ref: str, s: Settings) -> tuple[Bundle, str]:
    p = Path(ref)
    if p.is_dir():
        return load_bundle(p), str(p)
    if _HEX64.match(ref):
        from rules.audit.log import DecisionLog

        if not s.log.is_file():
            raise InputError(f"not a directory, and there is no decision log at {s.log} to find a stored bundle in", ref)
        with DecisionLog(s.log) as log:
            return log.bundle(ref.lower()), f"stored bundle (log {s.log})"
    raise InputError("neither a policy directory nor a bundle sha256 (64 hex digits) stored in the decision log", ref)


def cmd_diff(args: argparse.Namespace) -> int:
    from rules.lifecycle import diff as df
    from rules.engine.decide import Engine
    from rules.cli.progress import Progress

    s = _settings(args)
    holdings = None
    if args.ledger:
        raise InputError("ledger not available to dacp diff yet: for the ledger's holdings under a new bundle run "
                         "`dacp ledger revalue --bundle DIR --dry-run`, or export the holdings as JSON Lines of "
                         "queries and use --portfolio", "--ledger")
    if args.portfolio is not None:
        try:
            text = args.portfolio.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InputError("no such file", str(args.portfolio)) from None
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"cannot read: {getattr(e, 'strerror', None) or e}", str(args.portfolio)) from None
        holdings = df.read_portfolio(text, str(args.portfolio))
    with ap.preparing():
        old, old_label = _load_side(args.old, s)
        new, new_label = _load_side(args.new, s) if args.new else (load_bundle(s.policies), str(s.policies))
    changes = df.diff_bundles(old, new)
    impact = None
    if holdings is not None:
        progress = Progress(len(holdings), "comparing", enabled=True if args.progress else None) \
            if len(holdings) >= 1000 or args.progress else None
        impact = df.portfolio_impact(Engine.for_bundle(old, s.engine), Engine.for_bundle(new, s.engine), holdings,
                                     progress)
    if args.json:
        out: dict[str, Any] = {
            "old": {"ref": old_label, "bundle": old.hash, "name": old.name, "version": old.version},
            "new": {"ref": new_label, "bundle": new.hash, "name": new.name, "version": new.version},
            "identical": old.hash == new.hash, "changes": [c.to_json() for c in changes]}
        if impact is not None:
            out["portfolio"] = impact.to_json()
        _out(out)
    else:
        print(df.render(old, new, old_label, new_label, changes, impact))
    return 1 if args.exit_code and (changes or old.hash != new.hash) else 0


# -- policy approvals ------------------------------------------------------------------------------
def cmd_policy(args: argparse.Namespace) -> int:
    return {"submit": _sign_cmd, "approve": _sign_cmd, "publish": _sign_cmd, "status": _status,
            "keygen": _keygen}[args.policy_command](args)


_ROLE = {"submit": "author", "approve": "approver", "publish": "publisher"}
_KIND = {"author": "policy_submission", "approver": "policy_approval", "publisher": "policy_publication"}


def _sign_cmd(args: argparse.Namespace) -> int:
    from rules.audit.log import DecisionLog

    s = _settings(args)
    cfg = ap.approval_settings(s)
    role = _ROLE[args.policy_command]
    bundle = load_bundle(s.policies)
    approvers = ap.load_approvers(cfg.approvers, cfg.approvers_sha256)
    key = ap.load_private_key(args.key)
    who = approvers.by_key(ap.raw_public(key))
    if who is None:
        raise ap.ApprovalError(f"{args.key}: this key (id {ap.key_id(ap.raw_public(key))}) is not in the approvers "
                               f"file {cfg.approvers}; an unknown key cannot sign")
    st = ap.assess(bundle.hash, s)
    if st.invalid:
        raise ap.ApprovalError("the bundle's signatures are not all valid; nothing was signed:\n  " +
                               "\n  ".join(f"{x.file}: {x.problem}" for x in st.invalid))
    if role == "approver":
        if not st.authors:
            raise ap.ApprovalError(f"bundle {bundle.hash[:12]}… has no author yet: its author signs first "
                                   "(dacp policy submit), so that approvers can be told apart from the author")
        if who.id in st.authors:
            raise ap.ApprovalError(f"{who.id} is the author of bundle {bundle.hash[:12]}… and cannot approve it "
                                   "(four eyes: approvers must be other people)")
    if role == "author" and who.id in {x.signer for x in st.signatures if x.role == "approver"}:
        raise ap.ApprovalError(f"{who.id} has already approved bundle {bundle.hash[:12]}… and cannot also be its author")
    if role == "publisher" and not st.approved:
        raise ap.ApprovalError(f"bundle {bundle.hash[:12]}… is not approved, so it cannot be published:\n  "
                               + "\n  ".join(st.problems()))
    record = ap.sign(bundle.hash, role, key, approvers)
    path = ap.signature_path(cfg.signatures, record)
    if path.exists():
        raise InputError(f"{who.id} has already signed bundle {bundle.hash[:12]}… as {role} ({path}); "
                         "one signature per person and role", "signature")
    body = {k: record[k] for k in ("role", "bundle", "signer", "signer_name", "signed_at", "key_id", "public_key",
                                   "signature")}
    body.update({"signature_file": str(path), "approvers_file": str(cfg.approvers),
                 "approvers_sha256": approvers.sha256})
    if role == "publisher":
        body.update({"authors": st.authors, "approvals": st.counted, "quorum": cfg.quorum,
                     "published_at": record["signed_at"]})
    # The audit record first: a signature that could not be logged is not written.
    with DecisionLog(s.log) as log:
        (entry,) = log.append([(_KIND[role], f"{_KIND[role]}-{uuid.uuid4()}", bundle, body)])
    ap.write_signature(cfg.signatures, record)
    after = ap.assess(bundle.hash, s)
    verb = {"author": "submitted", "approver": "approved", "publisher": "published"}[role]
    print(f"{verb}: bundle {bundle.name} {bundle.version} sha256 {bundle.hash}")
    print(f"  by {who.id} ({who.name}), key {ap.key_id(who.public_key)}, at {record['signed_at']}")
    print(f"  signature {path}; decision log {s.log} entry {entry.seq} ({entry.entry_id})")
    print(f"  approvals {len(after.counted)} of {after.quorum}" + (f" ({', '.join(after.counted)})" if after.counted else "")
          + (" - APPROVED" if after.approved else f" - needs {max(after.quorum - len(after.counted), 0)} more"
             + ("" if after.authors else " and an author")))
    return 0


def _status(args: argparse.Namespace) -> int:
    from rules.audit.log import DecisionLog

    s = _settings(args)
    bundle = load_bundle(s.policies)
    st = ap.assess(bundle.hash, s)
    logged: dict[str, int] = {}
    if s.log.is_file():
        with DecisionLog(s.log) as log:
            for kind in _KIND.values():
                logged[kind] = sum(1 for e in log.entries(kind) if e.bundle_hash == bundle.hash)
    if args.json:
        _out({**st.to_json(), "name": bundle.name, "version": bundle.version, "logged": logged})
        return 0 if st.active else 1
    state = "ACTIVE" if st.active else ("APPROVED, NOT PUBLISHED" if st.approved else "NOT APPROVED")
    print(f"bundle    {bundle.name} {bundle.version} ({s.policies})")
    print(f"sha256    {bundle.hash}")
    print(f"status    {state}" + ("" if st.required else " (approvals not required by settings: [approvals] required = false)"))
    print(f"rule      {st.quorum} approval(s) by distinct approvers, none an author"
          + ("; and a publication" if st.require_publication else ""))
    print(f"approvers {st.approvers_file}" + (f" (sha256 {st.approvers_sha256})" if st.approvers_sha256 else ""))
    for sig in st.signatures:
        mark = "ok " if sig.valid else "BAD"
        extra = sig.problem or sig.note or ("counted" if sig.counted else "")
        print(f"  [{mark}] {sig.role:9} {sig.signer:12} {sig.signed_at:22} {extra}")
    if not st.signatures:
        print("  (no signatures for this bundle)")
    if logged:
        print("log       " + ", ".join(f"{v} {k.replace('policy_', '')} record(s)" for k, v in logged.items())
              + f" in {s.log}")
    for p in st.problems():
        print(f"problem   {p}")
    return 0 if st.active else 1


def _keygen(args: argparse.Namespace) -> int:
    roles = [r.strip() for r in args.roles.split(",") if r.strip()]
    bad = [r for r in roles if r not in ap.ROLES]
    if bad or not roles:
        raise InputError(f"unknown role(s) {', '.join(bad) or '(none)'} (use {', '.join(ap.ROLES)})", "--roles")
    if not ap._ID.match(args.id):
        raise InputError("lower-case letters, digits, '.', '_' and '-' only", "--id")
    raw = ap.generate_key(args.out)
    print(f"private key written to {args.out} (keep it secret; it never goes into the repository)")
    print("add this entry to the approvers file:")
    print(f"  - id: {args.id}\n    name: {json.dumps(args.name)}\n    roles: [{', '.join(roles)}]\n"
          f"    public_key: {ap.public_key_text(raw)}")
    return 0


# -- backtest --------------------------------------------------------------------------------------
def cmd_backtest(args: argparse.Namespace) -> int:
    from rules.lifecycle import backtest as bt
    s = _settings(args)
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
        try:
            h = Decimal(args.haircut)
        except InvalidOperation:
            raise InputError(f"{args.haircut!r} is not a number", "--haircut") from None
        if not h.is_finite() or not 0 <= h <= 1:
            raise InputError(f"a haircut is a fraction from 0 to 1, not {args.haircut}", "--haircut")
        haircut: Any = bt.PolicyHaircut(args.asset, h, None, "given on the command line (--haircut)")
    else:
        with ap.preparing():  # analysing a bundle is preparing a change: it need not be approved
            bundle = load_bundle(s.policies)
        haircut = bt.policy_haircut(bundle, args.asset, as_of)
    series = bt.load_prices(args.prices)
    result = bt.run_backtest(series, haircut, horizon, since, until, confidence)
    if chart is not None:
        bt.plot(result, series, chart)
    if args.json:
        _out({**result.to_json(), "chart": str(chart) if chart else None})
    else:
        print(bt.render_text(result))
        if chart is not None:
            print(f"chart: {chart}")
    return 1 if args.check and not result.covers else 0
