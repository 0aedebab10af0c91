"""``dacp``: the command-line door onto rules.app.

Each command group lives in its own module (``rules.cli.init``, ``bundle``, ``evaluate``, ``audit``, ``ledger``,
``serve``, ``policy``, ``change``, ``export``), whose ``add_*``/``register`` functions add its parsers and name its handlers;
this module builds the parser from them and runs the chosen command. Shared options and helpers:
``rules.cli.common``.

For start-up time, a command's group is imported only when that command runs: ``dacp evaluate`` loads
``rules.cli.evaluate`` and what it needs, never the ledger, the lifecycle or the HTTP door (``dacp --help``
and an unknown command build every group's parser). ``COMMANDS`` names each group's commands;
``tests/cli/test_startup.py`` holds it to what the groups register.

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

from rules.cli.common import AddCommon, Handler, add_common
from rules.errors import DacpError, PolicyError

Adder = Callable[[Any, AddCommon], dict[str, Handler]]  # adds its parser(s), returns {command: handler}


# Each group's add functions, imported only when one of its commands runs (start-up time: see above).
def _init() -> tuple[Adder, ...]:
    from rules.cli import init
    return (init.add_init,)


def _validate() -> tuple[Adder, ...]:
    from rules.cli import bundle
    return (bundle.add_validate,)


def _evaluate() -> tuple[Adder, ...]:
    from rules.cli import evaluate
    return (evaluate.add_evaluate,)


def _verify() -> tuple[Adder, ...]:
    from rules.cli import evaluate
    return (evaluate.add_verify,)


def _test() -> tuple[Adder, ...]:
    from rules.cli import bundle
    return (bundle.add_test,)


def _explain() -> tuple[Adder, ...]:
    from rules.cli import audit
    return (audit.add_explain,)


def _replay() -> tuple[Adder, ...]:
    from rules.cli import audit
    return (audit.add_replay,)


def _audit() -> tuple[Adder, ...]:
    from rules.cli import audit
    return (audit.add_audit,)


def _bundle() -> tuple[Adder, ...]:
    from rules.cli import bundle
    return (bundle.add_bundle,)


def _ledger() -> tuple[Adder, ...]:
    from rules.cli import ledger
    return (ledger.register,)


def _incident() -> tuple[Adder, ...]:
    from rules.cli import incident
    return (incident.register,)


def _serve() -> tuple[Adder, ...]:
    from rules.cli import serve
    return (serve.register,)


def _margin() -> tuple[Adder, ...]:
    from rules.cli import margin
    return (margin.register,)


def _diff() -> tuple[Adder, ...]:
    from rules.cli import change
    return (change.add_diff,)


def _policy() -> tuple[Adder, ...]:
    from rules.cli import policy
    return (policy.register,)


def _backtest() -> tuple[Adder, ...]:
    from rules.cli import change
    return (change.add_backtest,)


def _export() -> tuple[Adder, ...]:
    from rules.cli import export
    return (export.add_export,)


# In the order ``dacp --help`` lists them: the commands a group registers, and the group.
COMMANDS: tuple[tuple[tuple[str, ...], Callable[[], tuple[Adder, ...]]], ...] = (
    (("init",), _init), (("validate",), _validate), (("evaluate",), _evaluate), (("verify",), _verify),
    (("test",), _test), (("explain",), _explain), (("replay",), _replay), (("audit",), _audit),
    (("bundle",), _bundle), (("credit", "withdraw", "reverify", "revalue", "ledger", "report"), _ledger),
    (("incident",), _incident),
    (("serve", "service-token"), _serve), (("margin",), _margin),
    (("diff",), _diff), (("policy",), _policy), (("backtest",), _backtest),
    (("export",), _export),
)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``dacp`` parser; each command's parser carries its handler as the default ``handler``. With
    ``command`` (a known command name), only that command's group is imported and added."""
    ap = argparse.ArgumentParser(prog="dacp", description="Digital asset collateral pilot: policies, eligibility, audit.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups = [g for names, g in COMMANDS if command in names] or [g for _, g in COMMANDS]
    for group in groups:
        for add in group():
            for name, handler in add(sub, add_common).items():
                sub.choices[name].set_defaults(handler=handler)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    try:
        return args.handler(args)
    except DacpError as e:  # an invalid bundle's message names itself ("policy bundle is invalid: ...")
        invalid = isinstance(e, PolicyError) and e.code == "policy_invalid"
        print(f"dacp: {'' if invalid else 'error: '}{e.render()}", file=sys.stderr)
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
