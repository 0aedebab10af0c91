"""``dacp init [DIR]``: write the starter bundle - the shipped pilot policies, their tests (with the price
history the backtests read) and the DEMO approvals - into DIR (default ``policies``), so that a dacp installed
anywhere has a bundle to validate, test and decide with.

The starter is package data (``rules/starter/``; in the repository a link to ``policies/``), copied file by
file: the top-level ``*.yaml``, ``tests/`` and ``approvals/``. Nothing is overwritten: a DIR that exists and is
not empty is refused (exit 3). The approvers file it writes lists DEMO keys (their private halves are public)
inside the policy directory, which evaluate, credit and serve refuse unless ``[approvals]
demo_keys_in_policy_dir = true``: ``dacp init`` writes that into ``./dacp.toml`` when there is none (with
``policies = DIR`` when DIR is not the default), and otherwise prints the lines to add.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from rules.cli.common import AddCommon, Handler
from rules.errors import InputError

STARTER = Path(__file__).resolve().parent.parent / "starter"
PARTS = ("*.yaml", "tests/*.yaml", "tests/data/*.csv", "approvals/*.yaml", "approvals/signatures/*/*.json")
SETTINGS_FILE = Path("dacp.toml")


def add_init(sub: Any, add_common: AddCommon) -> dict[str, Handler]:
    p = sub.add_parser("init", help="write the starter policy bundle (the pilot policies, tests, DEMO approvals) "
                       "into DIR")
    p.add_argument("directory", nargs="?", type=Path, default=Path("policies"),
                   help="where to write it (default: policies); must not exist yet, or be empty")
    return {"init": cmd_init}


def starter_files() -> list[Path]:
    """The starter bundle's files, relative to its root."""
    files = sorted({p.relative_to(STARTER) for part in PARTS for p in STARTER.glob(part) if p.is_file()})
    if not any(len(f.parts) == 1 for f in files):
        raise InputError("this installation has no starter bundle (rules/starter is missing): reinstall dacp",
                         str(STARTER))
    return files


def settings_text(directory: Path) -> str:
    lines = ["# Written by `dacp init` (settings: README.md \"Settings\").",
             "# The starter's approvers file lists DEMO keys (published, so they prove nothing) inside the policy",
             "# directory; decisions refuse that unless this switch is set. A real deployment keeps the approvers",
             "# file where policy authors cannot write ([approvals] approvers, approvers_sha256) and never sets it."]
    if directory != Path("policies"):
        lines.append(f'policies = "{directory.as_posix()}"')
    return "\n".join(lines + ["", "[approvals]", "demo_keys_in_policy_dir = true", ""])


def cmd_init(args: argparse.Namespace) -> int:
    target: Path = args.directory
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise InputError("exists already and is not an empty directory; choose another (nothing was written)",
                         str(target))
    files = starter_files()
    for rel in files:
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(STARTER / rel, dest)  # a link in the starter (tests/data) is written as the file
    n = {"policy": sum(len(f.parts) == 1 for f in files), "tests": sum(f.parts[0] == "tests" for f in files),
         "approvals": sum(f.parts[0] == "approvals" for f in files)}
    print(f"wrote the starter bundle to {target}: {n['policy']} policy files, {n['tests']} test files, "
          f"{n['approvals']} DEMO approval files")
    toml = settings_text(target)
    if SETTINGS_FILE.exists():
        print(f"{SETTINGS_FILE} exists already (not changed); to decide with the DEMO approvals it needs:\n"
              + "\n".join("  " + line for line in toml.splitlines() if line and not line.startswith("#")))
    else:
        SETTINGS_FILE.write_text(toml, encoding="utf-8")
        print(f"wrote {SETTINGS_FILE} ([approvals] demo_keys_in_policy_dir = true: the starter's approvers are "
              "DEMO keys)")
    print(f"DEMO keys: the starter is approved by alice, bob and carol (DEMO people), whose private keys are "
          f"published (examples/keys/ of the dacp repository), so these approvals prove nothing. Before real use: "
          f"your own approvers file where policy authors cannot write ([approvals] approvers, approvers_sha256), "
          f"no demo switch, and the bundle approved again (dacp policy submit/approve; docs/policy-lifecycle.md)")
    print(f"next: dacp validate{'' if target == Path('policies') else ' ' + str(target)}; dacp test; "
          "dacp evaluate QUERY.json")
    return 0
