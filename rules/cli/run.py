"""``dacp``: the command-line door onto rules.app.

Exit codes: 0 ok; 1 a check did not hold (policy tests failed, audit chain broken, replay differs);
2 invalid policy; 3 bad input; 4 evidence error; 5 storage error; 6 engine error; 7 bundle not approved;
70 internal error.
No traceback reaches the user for bad input (set DACP_DEBUG=1 to see one for internal errors).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any, BinaryIO, Sequence

from rules.app import Dacp, custody_verifier, price_reader
from rules.errors import DacpError, InputError, PolicyError
from rules.collector import gc_paused
from rules.cli.progress import Progress
from rules.engine.query import Query, load_query_text, parse_json_text, parse_query
from rules.settings import ENGINES, Settings, load_settings

QUERY_SUFFIXES = (".json", ".yaml", ".yml")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="settings file (default: $DACP_CONFIG or ./dacp.toml)")
    p.add_argument("--policies", type=Path, help="policy bundle directory (default: policies)")
    p.add_argument("--log", type=Path, help="decision log file (default: var/dacp.sqlite)")
    p.add_argument("--engine", choices=ENGINES, help="evaluator: durable_rules (default), python, or checked (both, must agree)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dacp", description="Digital asset collateral pilot: policies, eligibility, audit.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check a policy bundle against the schema and its cross-references")
    p.add_argument("directory", nargs="?", type=Path, help="bundle directory (default: the configured policies)")
    _common(p)

    p = sub.add_parser("evaluate", help="decide eligibility for queries (files, directories, or - for stdin)")
    p.add_argument("inputs", nargs="*", default=["-"], help="query files (JSON or YAML) or directories of them")
    p.add_argument("--batch", action="store_true", help="inputs are JSON Lines (one query per line); output JSON Lines")
    p.add_argument("--format", choices=("json", "jsonl", "table"), help="output format (default: json for one query, "
                   "jsonl for several)")
    p.add_argument("--no-log", action="store_true", help="do not append the decisions to the decision log")
    p.add_argument("--progress", action="store_true", help="show a progress bar even when stderr is not a terminal")
    p.add_argument("--verify", action="store_true", help="verify custody balances on-chain (configured nodes) instead "
                   "of trusting the query's custody block")
    _common(p)

    p = sub.add_parser("verify", help="show verified on-chain custody evidence for an asset and custody addresses")
    p.add_argument("--asset", required=True, help="asset symbol from the registry")
    p.add_argument("--address", action="append", required=True, dest="addresses", help="custody address (repeat)")
    _common(p)

    p = sub.add_parser("test", help="run the policy unit tests (YAML) and report rule coverage")
    p.add_argument("tests", nargs="?", type=Path, help="tests directory (default: <policies>/tests)")
    p.add_argument("--no-coverage", action="store_true", help="do not fail on rules the tests do not cover")
    p.add_argument("-v", "--verbose", action="store_true", help="list every test")
    _common(p)

    p = sub.add_parser("explain", help="show a logged decision's trace in plain words")
    p.add_argument("decision_id")
    p.add_argument("--json", action="store_true", help="print the stored entry as JSON")
    _common(p)

    p = sub.add_parser("replay", help="re-evaluate a logged decision under its stored bundle and compare")
    p.add_argument("decision_id")
    _common(p)

    p = sub.add_parser("audit", help="decision log integrity")
    asub = p.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    v = asub.add_parser("verify", help="verify the whole hash chain and the stored bundles")
    v.add_argument("--expect-head", help="head hash recorded earlier; detects removal of the newest entries")
    _common(v)

    p = sub.add_parser("bundle", help="inspect a policy bundle")
    bsub = p.add_subparsers(dest="bundle_command", required=True, metavar="ACTION")
    s = bsub.add_parser("show", help="hash, version, dates and every rule with its file and line")
    s.add_argument("directory", nargs="?", type=Path)
    _common(s)
    c = bsub.add_parser("compile", help="print the durable_rules ruleset the bundle compiles to (JSON data)")
    c.add_argument("directory", nargs="?", type=Path)
    _common(c)
    for module in EXTENSIONS:
        COMMANDS.update(importlib.import_module(module).register(sub, _common))
    return ap


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from the file and environment, overridden by the common command-line options."""
    return _settings(args)


def _settings(args: argparse.Namespace) -> Settings:
    s = load_settings(config=getattr(args, "config", None))
    return s.with_overrides(policies=getattr(args, "policies", None) or getattr(args, "directory", None),
                            log=getattr(args, "log", None), engine=getattr(args, "engine", None))


def _out(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


# -- commands ------------------------------------------------------------------------------------
def cmd_validate(args: argparse.Namespace) -> int:
    s = _settings(args)
    bundle = Dacp(s).bundle
    n = len(bundle.rule_ids())
    print(f"{s.policies}: valid - bundle {bundle.name} {bundle.version}, {n} rules, {len(bundle.assets)} assets, "
          f"sha256 {bundle.hash}")
    return 0


def _query_files(inputs: Sequence[str]) -> list[str]:
    files: list[str] = []
    for item in inputs:
        if item == "-":
            files.append("-")
            continue
        p = Path(item)
        if p.is_dir():
            found = sorted(str(x) for x in p.iterdir() if x.suffix in QUERY_SUFFIXES and x.is_file())
            if not found:
                raise InputError("no query files (*.json, *.yaml) in this directory", item)
            files.extend(found)
        elif p.is_file():
            files.append(item)
        else:
            raise InputError("no such file or directory", item)
    return files


def _read(name: str) -> str:
    try:
        return sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text", name) from None
    except OSError as e:
        raise InputError(e.strerror or str(e), name) from None


def _read_queries(args: argparse.Namespace) -> list[Query]:
    """Parse every query first: one bad query means nothing is decided or logged."""
    queries: list[Query] = []
    errors: list[str] = []
    for name in _query_files(args.inputs):
        where = "stdin" if name == "-" else name
        text = _read(name)
        if args.batch:
            parse_jsonl(text, where, queries, errors)
        else:
            try:
                queries.append(load_query_text(text, where))
            except InputError as e:
                errors.append(str(e))
    if errors:
        shown = errors[:20] + ([f"... and {len(errors) - 20} more"] if len(errors) > 20 else [])
        raise InputError(f"{len(errors)} invalid quer{'y' if len(errors) == 1 else 'ies'}; nothing was decided or "
                         "logged:\n  " + "\n  ".join(shown))
    if not queries:
        raise InputError("no queries given", "input")
    return queries


def parse_jsonl(text: str, where: str, queries: list[Query], errors: list[str]) -> None:
    """Parse JSON Lines queries (``where:line`` in messages) into ``queries``; what is wrong with a line
    goes to ``errors``. The cyclic collector is paused meanwhile: the parsed batch only grows, and each
    collection of the oldest generation walks all of it again (a 100,000-line ``dacp evaluate --batch``:
    14.6-15.7 s before, 13.8-14.2 s after)."""
    with gc_paused():
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                queries.append(parse_query(parse_json_text(line, f"{where}:{n}"), f"{where}:{n}"))
            except InputError as e:
                errors.append(str(e))


def cmd_evaluate(args: argparse.Namespace) -> int:
    s = _settings(args)
    queries = _read_queries(args)
    dacp = Dacp(s, log_enabled=not args.no_log, verifier=_verifier(s) if args.verify else None,
                prices=_prices(s) if args.verify else None)
    progress = Progress(len(queries), "evaluating", enabled=True if args.progress else None) \
        if len(queries) >= 1000 or args.progress else None
    fmt = args.format or ("jsonl" if args.batch or len(queries) > 1 else "json")
    if fmt == "jsonl":
        done = print_jsonl(dacp, queries, sys.stdout.buffer, progress=progress, verify=args.verify)
        if not args.no_log:
            print(f"{done} decision(s) appended to {s.log}", file=sys.stderr)
        return 0
    decisions = [d.to_json() for d in dacp.evaluate(queries, progress=progress, verify=args.verify)]
    if fmt == "json":
        _out(decisions[0] if len(decisions) == 1 else decisions)
    else:
        _table(decisions)
    if not args.no_log:
        print(f"{len(decisions)} decision(s) appended to {s.log}", file=sys.stderr)
    return 0


STREAM_CHUNK = 500  # decisions per log transaction when streaming JSON Lines (the benchmark measures the same)


def print_jsonl(dacp: Dacp, queries: list[Query], out: BinaryIO, progress: Any = None, verify: bool = False) -> int:
    """Decide, log and print a batch a chunk at a time (returns how many): each chunk is printed once
    its log entries are committed, so memory stays flat however long the batch. A storage failure stops
    it: what was printed before is logged, nothing after it was decided."""
    done = 0
    try:
        for chunk in dacp.evaluate_stream(queries, STREAM_CHUNK, progress=progress, verify=verify):
            out.write(b"\n".join([d.to_json_bytes() for d in chunk]) + b"\n")  # ~10 KB each: not copied twice
            done += len(chunk)
    except DacpError:
        out.flush()
        if done:
            print(f"dacp: the {done} decision(s) printed before the error below were decided and logged; "
                  "none after them was", file=sys.stderr)
        raise
    out.flush()
    return done


def _table(decisions: list[dict[str, Any]]) -> None:
    rows = [("query", "asset", "quantity", "eligible", "haircut", "collateral USD", "failed rules", "decision id")]
    for d in decisions:
        rows.append((d.get("query_id") or "-", d["asset"], d["quantity"], "yes" if d["eligible"] else "NO",
                     (d.get("haircut") or {}).get("total", "-"), d["collateral_value_usd"],
                     ", ".join(d["failed_rules"]) or "-", d["decision_id"]))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())
    if decisions:
        print(f"policy bundle {decisions[0]['policy']['name']} {decisions[0]['policy']['version']} "
              f"sha256 {decisions[0]['policy']['bundle']}")


def _verifier(s: Settings) -> Any:
    return custody_verifier(s)


def _prices(s: Settings) -> Any:
    return price_reader(s)


def cmd_verify(args: argparse.Namespace) -> int:
    s = _settings(args)
    bundle = Dacp(s, log_enabled=False).bundle
    asset = bundle.assets.get(args.asset)
    if asset is None:
        raise InputError(f"unknown asset (known: {', '.join(sorted(bundle.assets))})", args.asset)
    _out(_verifier(s).verify(asset, args.addresses).to_json())
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    from rules.lifecycle.policy_tests import run_tests

    s = _settings(args)
    dacp = Dacp(s, log_enabled=False)
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


def cmd_explain(args: argparse.Namespace) -> int:
    dacp = Dacp(_settings(args))
    if args.json:
        e = dacp.log.get(args.decision_id)
        body = dict(e.body)
        if isinstance(body.get("decision"), dict):  # the trace expanded with the stored bundle
            body["decision"] = dacp.logged_decision(e)
        _out({"seq": e.seq, "recorded_at": e.recorded_at, "bundle": e.bundle_hash, "entry_hash": e.entry_hash,
              **body})
    else:
        print(dacp.explain(args.decision_id))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    dacp = Dacp(_settings(args))
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
    s = _settings(args)
    from adapters.storage.sql import is_postgres

    if not is_postgres(s.log) and not s.log.exists():
        raise InputError("no decision log here yet", str(s.log))
    res = Dacp(s).verify_log(args.expect_head)
    print(res.render())
    return 0 if res.ok else 1


def cmd_bundle(args: argparse.Namespace) -> int:
    dacp = Dacp(_settings(args), log_enabled=False)
    b = dacp.bundle
    if args.bundle_command == "compile":
        compiled = dacp.engine.compiled
        _out({"ruleset": compiled.ruleset_name, "shards": dict(compiled.durable_shards()),
              "rules": {r.pass_name: r.id for r in compiled.rules}})
        return 0
    print(f"bundle   {b.name} {b.version}\nsha256   {b.hash}\nin force {b.dated.effective_from} .. "
          f"{b.dated.effective_to or 'open'}\nphases   " +
          "; ".join(f"{p.id} {p.starts}..{p.ends or 'open'}" for p in b.phases))
    print("rules:")
    for c in b.criteria:
        print(f"  {c.id:40} {c.check.describe():55} {c.src}")
    for h in b.haircuts:
        print(f"  {h.id:40} {'haircut for ' + h.applies.describe():55} {h.src}")
        for a in h.add_ons:
            print(f"  {a.id:40} {'add-on +' + format(a.haircut, 'f'):55} {a.src}")
    for lim in b.limits:
        print(f"  {lim.id:40} {'limit on ' + lim.applies.describe():55} {lim.src}")
    return 0


# Command groups in their own modules: each has register(subparsers, add_common_options) -> {name: handler};
# a handler takes the parsed arguments and returns the exit code. Add a module here to add its commands.
EXTENSIONS: list[str] = ["rules.cli.ledger", "rules.cli.serve", "rules.cli.policy"]

COMMANDS = {"validate": cmd_validate, "evaluate": cmd_evaluate, "verify": cmd_verify, "test": cmd_test, "explain": cmd_explain,
            "replay": cmd_replay, "audit": cmd_audit, "bundle": cmd_bundle}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except PolicyError as e:
        print(f"dacp: {e.render()}", file=sys.stderr)
        return e.exit_code
    except DacpError as e:
        print(f"dacp: error: {e.render()}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("dacp: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # a bug, not bad input: say so plainly
        if os.environ.get("DACP_DEBUG"):
            raise
        print(f"dacp: internal error: {type(e).__name__}: {e} (set DACP_DEBUG=1 for details)", file=sys.stderr)
        return 70


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
