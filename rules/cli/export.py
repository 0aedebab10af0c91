"""``dacp export cdm``: the eligibility schedule as a FINOS CDM eligible-collateral specification."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

from rules.cli.common import AddCommon, Handler, settings_from_args
from rules.errors import InputError
from rules.lifecycle.cdm_export import export_cdm
from rules.policy.loader import load_bundle
from rules.values import now_utc


def add_export(sub: Any, add_common: AddCommon) -> dict[str, Handler]:
    p = sub.add_parser("export", help="write the policy in another standard's form")
    esub = p.add_subparsers(dest="export_format", required=True, metavar="FORMAT")
    c = esub.add_parser("cdm", help="the eligibility schedule as a FINOS CDM EligibleCollateralSpecification (JSON)")
    c.add_argument("--as-of", help="the day whose schedule to export (YYYY-MM-DD, default today UTC)")
    c.add_argument("--out", type=Path, help="write here (whole or not at all) instead of standard output")
    add_common(c)
    return {"export": cmd_export}


def cmd_export(args: argparse.Namespace) -> int:
    s = settings_from_args(args)
    try:
        day = date.fromisoformat(args.as_of) if args.as_of else now_utc().date()
    except ValueError:
        raise InputError(f"{args.as_of!r} is not a date (YYYY-MM-DD)", "--as-of") from None
    if args.out is not None and not args.out.parent.is_dir():
        raise InputError("the output's directory does not exist", str(args.out.parent))
    text = json.dumps(export_cdm(load_bundle(s.policies), day), indent=2) + "\n"
    if args.out is None:
        print(text, end="")
        return 0
    fd, tmp = tempfile.mkstemp(dir=args.out.parent, prefix=f".{args.out.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, args.out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    print(f"wrote {args.out}")
    return 0
