"""Start-up time (issue 18): ``dacp COMMAND`` imports only that command's group, and a query without
``--verify`` loads none of web3, eth_utils, FastAPI, uvicorn, matplotlib or (bundle cached) jsonschema."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

from rules.cli import run
from rules.cli.common import add_common
from tests.support import ROOT

HEAVY = ("web3", "eth_utils", "eth_account", "fastapi", "uvicorn", "starlette", "matplotlib", "jsonschema",
         "rules.http", "rules.ledger.store", "rules.lifecycle.backtest", "rules.lifecycle.diff", "adapters.ethereum",
         "adapters.bitcoin", "adapters.custody")


def test_every_group_registers_exactly_the_commands_it_is_listed_under():
    for names, group in run.COMMANDS:
        sub = argparse.ArgumentParser().add_subparsers()
        registered = [n for add in group() for n in add(sub, add_common)]
        assert tuple(registered) == names


def test_help_and_unknown_commands_build_every_group(capsys):
    every = [n for names, _ in run.COMMANDS for n in names]
    parser = run.build_parser()
    choices = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert list(choices) == every
    with pytest.raises(SystemExit):
        run.main(["no-such-command"])
    assert "invalid choice" in capsys.readouterr().err


def test_a_command_builds_only_its_group():
    parser = run.build_parser("evaluate")
    choices = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert list(choices) == ["evaluate"]


PROBE = """
import io, json, sys, contextlib
from rules.cli.run import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def loaded(tmp_path, *argv: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DACP_")}
    env.update(DACP_CACHE_DIR=str(tmp_path / "cache"), DACP_LOG=str(tmp_path / "log.sqlite"),
               DACP_POLICIES=str(ROOT / "policies"), DACP_CONFIG=str(ROOT / "dacp.toml"))
    out = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=tmp_path, env=env, capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


def test_one_query_loads_no_chain_http_chart_or_schema_library(tmp_path):
    query = str(ROOT / "examples" / "queries" / "btc-eligible.json")
    first = loaded(tmp_path, "evaluate", query)  # fills the bundle cache
    assert first["code"] == 0
    second = loaded(tmp_path, "evaluate", query)
    assert second["code"] == 0
    heavy = [m for m in second["modules"] if any(m == h or m.startswith(h + ".") for h in HEAVY)]
    assert not heavy, f"a cold one-query evaluate imported {heavy}"
    assert not [m for m in second["modules"] if m.startswith("rules.cli.") and m not in
                ("rules.cli.run", "rules.cli.common", "rules.cli.progress", "rules.cli.evaluate")]


@pytest.mark.slow
def test_the_startup_benchmark_prints_its_rows():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_startup.py"), "--quick"], cwd=ROOT,
                         capture_output=True, text=True, check=True, timeout=300).stdout
    for row in ("python -c pass", "dacp evaluate (one query, logged)", "dacp evaluate --no-log",
                "bundle cache empty", "a bare interpreter start"):
        assert row in out
