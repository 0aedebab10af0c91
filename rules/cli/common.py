"""What every command group of ``dacp`` shares: the common options, settings from them, output helpers
and the progress bar for long batches."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from rules.cli.progress import Progress
from rules.errors import InputError
from rules.settings import ENGINES, Settings, load_settings

Handler = Callable[[argparse.Namespace], int]  # a command: the parsed arguments -> the exit code
AddCommon = Callable[[argparse.ArgumentParser], None]
PROGRESS_FROM = 1000  # batches of this many items show a progress bar on a terminal


def add_common(p: argparse.ArgumentParser) -> None:
    """The options every command takes: ``--config``, ``--policies``, ``--log``, ``--engine``."""
    p.add_argument("--config", help="settings file (default: $DACP_CONFIG or ./dacp.toml)")
    p.add_argument("--policies", type=Path, help="policy bundle directory (default: policies)")
    p.add_argument("--log", type=Path, help="decision log file (default: var/dacp.sqlite)")
    p.add_argument("--engine", choices=ENGINES, help="evaluator: durable_rules (default), python, or checked (both, must agree)")


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from the file and environment, overridden by the common command-line options (a command's
    bundle ``directory`` argument stands for ``--policies``)."""
    s = load_settings(config=getattr(args, "config", None))
    return s.with_overrides(policies=getattr(args, "policies", None) or getattr(args, "directory", None),
                            log=getattr(args, "log", None), engine=getattr(args, "engine", None))


def print_json(obj: Any, default: Callable[[Any], Any] | None = None) -> None:
    """``obj`` as indented JSON on stdout (``default`` as for ``json.dumps``)."""
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False, default=default) + "\n")


def print_table(rows: Sequence[Sequence[Any]]) -> None:
    """Rows (the first is the header) as left-aligned columns, two spaces apart, without trailing blanks."""
    cells = [[str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())


def progress_bar(total: int, label: str, forced: bool) -> Progress | None:
    """A progress bar on stderr for ``total`` items: for a long batch on a terminal, or always when ``forced``
    (``--progress``); None for a short batch."""
    if total < PROGRESS_FROM and not forced:
        return None
    return Progress(total, label, enabled=True if forced else None)


def write_new_file(path: Path, text: str, private: bool = False) -> None:
    """Write ``text`` to a file that must not exist yet (never overwrite a key, receipt or checkpoint);
    ``private``: readable by its owner only."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    except FileExistsError:
        raise InputError("the file exists already; choose another name (nothing was overwritten)", str(path)) from None
    except OSError as e:
        raise InputError(f"cannot write the file: {e.strerror or e}", str(path)) from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
