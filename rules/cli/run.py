"""``dacp``: the command-line door onto rules.app.

Each command group lives in its own module (``rules.cli.bundle``, ``evaluate``, ``audit``, ``ledger``, ``serve``,
``policy``, ``change``), whose ``add_*``/``register`` functions add its parsers and name its handlers; this
module builds the parser from them and runs the chosen command. Shared options and helpers:
``rules.cli.common``.

Exit codes: 0 ok; 1 a check did not hold (policy tests failed, audit chain broken, replay differs);
2 invalid policy; 3 bad input; 4 evidence error; 5 storage error; 6 engine error; 7 bundle not approved;
70 internal error. Each error class carries its own exit code (``rules.errors``).
No traceback reaches the user for bad input (set DACP_DEBUG=1 to see one for internal errors).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, Sequence

from rules.cli import audit, bundle, change, evaluate, ledger, policy, serve
from rules.cli.common import AddCommon, Handler, add_common
from rules.errors import DacpError, PolicyError

# In the order ``dacp --help`` lists the commands. Each adds its parser(s) and returns {command: handler}.
PARSERS: tuple[Callable[[Any, AddCommon], dict[str, Handler]], ...] = (
    bundle.add_validate, evaluate.add_evaluate, evaluate.add_verify, bundle.add_test,
    audit.add_explain, audit.add_replay, audit.add_audit, bundle.add_bundle,
    ledger.register, serve.register, change.add_diff, policy.register, change.add_backtest,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``dacp`` parser; each command's parser carries its handler as the default ``handler``."""
    ap = argparse.ArgumentParser(prog="dacp", description="Digital asset collateral pilot: policies, eligibility, audit.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in PARSERS:
        for name, handler in add(sub, add_common).items():
            sub.choices[name].set_defaults(handler=handler)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except DacpError as e:  # a PolicyError's message names itself ("policy bundle is invalid: ...")
        print(f"dacp: {'' if isinstance(e, PolicyError) else 'error: '}{e.render()}", file=sys.stderr)
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
