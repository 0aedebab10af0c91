"""``dacp evaluate`` (decide queries: files, directories, stdin, JSON Lines batches) and ``dacp verify``
(on-chain custody evidence)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, BinaryIO, Sequence

from rules.app import Dacp, custody_verifier, price_reader
from rules.cli.common import AddCommon, Handler, print_json, print_table, progress_bar, settings_from_args
from rules.collector import gc_paused
from rules.engine.query import Query, load_query_text, parse_json_text, parse_query
from rules.errors import DacpError, InputError

QUERY_SUFFIXES = (".json", ".yaml", ".yml")
STREAM_CHUNK = 500  # decisions per log transaction when streaming JSON Lines (the benchmark measures the same)


def add_evaluate(sub: Any, add_common: AddCommon) -> dict[str, Handler]:
    p = sub.add_parser("evaluate", help="decide eligibility for queries (files, directories, or - for stdin)")
    p.add_argument("inputs", nargs="*", default=["-"], help="query files (JSON or YAML) or directories of them")
    p.add_argument("--batch", action="store_true", help="inputs are JSON Lines (one query per line); output JSON Lines")
    p.add_argument("--format", choices=("json", "jsonl", "table"), help="output format (default: json for one query, "
                   "jsonl for several)")
    p.add_argument("--no-log", action="store_true", help="do not append the decisions to the decision log")
    p.add_argument("--progress", action="store_true", help="show a progress bar even when stderr is not a terminal")
    p.add_argument("--verify", action="store_true", help="verify custody balances on-chain (configured nodes) instead "
                   "of trusting the query's custody block")
    add_common(p)
    return {"evaluate": cmd_evaluate}


def add_verify(sub: Any, add_common: AddCommon) -> dict[str, Handler]:
    p = sub.add_parser("verify", help="show verified on-chain custody evidence for an asset and custody addresses")
    p.add_argument("--asset", required=True, help="asset symbol from the registry")
    p.add_argument("--address", action="append", required=True, dest="addresses", help="custody address (repeat)")
    add_common(p)
    return {"verify": cmd_verify}


# -- reading queries ------------------------------------------------------------------------------
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


# -- commands -------------------------------------------------------------------------------------
def cmd_evaluate(args: argparse.Namespace) -> int:
    s = settings_from_args(args)
    queries = _read_queries(args)
    dacp = Dacp(s, log_enabled=not args.no_log, verifier=custody_verifier(s) if args.verify else None,
                prices=price_reader(s) if args.verify else None)
    progress = progress_bar(len(queries), "evaluating", args.progress)
    fmt = args.format or ("jsonl" if args.batch or len(queries) > 1 else "json")
    if fmt == "jsonl":
        done = print_jsonl(dacp, queries, sys.stdout.buffer, progress=progress, verify=args.verify)
        if not args.no_log:
            print(f"{done} decision(s) appended to {s.log}", file=sys.stderr)
        return 0
    decisions = [d.to_json() for d in dacp.evaluate(queries, progress=progress, verify=args.verify)]
    if fmt == "json":
        print_json(decisions[0] if len(decisions) == 1 else decisions)
    else:
        _table(decisions)
    if not args.no_log:
        print(f"{len(decisions)} decision(s) appended to {s.log}", file=sys.stderr)
    return 0


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
    rows: list[Sequence[Any]] = [("query", "asset", "quantity", "eligible", "haircut", "collateral USD",
                                  "failed rules", "decision id", "haircut decided by")]
    for d in decisions:
        h = d.get("haircut") or {}
        rows.append((d.get("query_id") or "-", d["asset"], d["quantity"], "yes" if d["eligible"] else "NO",
                     h.get("total", "-"), d["collateral_value_usd"],
                     ", ".join(d["failed_rules"]) or "-", d["decision_id"], h.get("why", "-")))
    print_table(rows)
    if decisions:
        print(f"policy bundle {decisions[0]['policy']['name']} {decisions[0]['policy']['version']} "
              f"sha256 {decisions[0]['policy']['bundle']}")


def cmd_verify(args: argparse.Namespace) -> int:
    s = settings_from_args(args)
    bundle = Dacp(s, log_enabled=False).bundle
    asset = bundle.assets.get(args.asset)
    if asset is None:
        raise InputError(f"unknown asset (known: {', '.join(sorted(bundle.assets))})", args.asset)
    print_json(custody_verifier(s).verify(asset, args.addresses).to_json())
    return 0
