"""Start-up time (issue 18): ``dacp COMMAND`` imports only that command's group, and a query without
``--verify`` loads none of web3, eth_utils, FastAPI, uvicorn, matplotlib, pydantic or - bundle and approval
cached - jsonschema, PyYAML and cryptography; a kept approval holds only for the files it was checked on."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rules.cli import run
from rules.cli.common import add_common
from rules.lifecycle import approvals as ap
from rules.policy.loader import load_bundle_from_sources
from tests.support import ROOT
from tests.support.bundles import shipped_sources

HEAVY = ("web3", "eth_utils", "eth_account", "fastapi", "uvicorn", "starlette", "matplotlib", "jsonschema", "pydantic",
         "pydantic_settings", "cryptography", "yaml",
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
err = io.StringIO()
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
    code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules), "err": err.getvalue()}))
"""
QUERY = str(ROOT / "examples" / "queries" / "btc-eligible.json")


@pytest.fixture
def signed(tmp_path) -> dict[str, Path]:
    """A bundle made for the test (the shipped policy texts), signed by its own people - alice (author), bob and
    carol (approvers) - whose approvers file lives outside it: start-up is tested whatever the approval state
    of the working tree's policies (a policy edit before its re-approval)."""
    pol, trust, sigs = tmp_path / "pol", tmp_path / "trust", tmp_path / "pol" / "approvals" / "signatures"
    pol.mkdir()
    trust.mkdir()
    for name, text in shipped_sources().items():
        (pol / name).write_text(text, encoding="utf-8")
    lines = ["kind: approvers", "approvers:"]
    for who, role in (("alice", "author"), ("bob", "approver"), ("carol", "approver")):
        raw = ap.generate_key(trust / f"{who}.pem")
        lines += [f"  - id: {who}", f"    name: {who.title()} Test", f"    roles: [{role}]",
                  f"    public_key: {ap.public_key_text(raw)}"]
    (trust / "approvers.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    approvers = ap.load_approvers(trust / "approvers.yaml")
    bundle = load_bundle_from_sources(shipped_sources())
    for who, role in (("alice", "author"), ("bob", "approver"), ("carol", "approver")):
        ap.write_signature(sigs, ap.sign(bundle.hash, role, ap.load_private_key(trust / f"{who}.pem"), approvers))
    work = tmp_path / "work"  # no dacp.toml here: the settings are the variables below
    work.mkdir()
    return {"tmp": tmp_path, "policies": pol, "approvers": trust / "approvers.yaml", "work": work,
            "signatures": sigs / bundle.hash}


def loaded(signed: dict[str, Path], *argv: str, **env_extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DACP_")}
    env.update(DACP_CACHE_DIR=str(signed["tmp"] / "cache"), DACP_LOG=str(signed["tmp"] / "log.sqlite"),
               DACP_POLICIES=str(signed["policies"]), DACP_APPROVALS_APPROVERS=str(signed["approvers"]), **env_extra)
    out = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=signed["work"], env=env, capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


def heavy(modules: list[str], names: tuple[str, ...] = HEAVY) -> list[str]:
    return [m for m in modules if any(m == h or m.startswith(h + ".") for h in names)]


def test_one_query_loads_no_chain_http_chart_or_schema_library(signed):
    first = loaded(signed, "evaluate", QUERY)  # fills the bundle cache and keeps the verified approval
    assert first["code"] == 0, first["err"]
    second = loaded(signed, "evaluate", QUERY)
    assert second["code"] == 0, second["err"]
    assert not heavy(second["modules"]), f"a cold one-query evaluate imported {heavy(second['modules'])}"
    assert not [m for m in second["modules"] if m.startswith("rules.cli.") and m not in
                ("rules.cli.run", "rules.cli.common", "rules.cli.progress", "rules.cli.evaluate")]


CHECKS = ("cryptography", "yaml")  # what checking the signatures afresh loads


def test_a_kept_approval_holds_only_for_the_very_files_it_was_checked_on(signed):
    """Fail closed: the kept verdict is bound to the bundle, the approvers file, every signature file and the
    settings; a change to any of them means the signatures are checked again, and refused if they do not hold."""
    assert loaded(signed, "evaluate", QUERY)["code"] == 0
    assert not heavy(loaded(signed, "evaluate", QUERY)["modules"], CHECKS)  # kept: nothing checked again

    bob = signed["signatures"] / "bob.approval.json"
    kept = bob.read_bytes()
    bob.unlink()  # an approval withdrawn
    gone = loaded(signed, "evaluate", QUERY)
    assert gone["code"] == 7 and "needs 2 approvals" in gone["err"]
    bob.write_bytes(kept.replace(b'"signed_at": "', b'"signed_at": "1'))  # altered after signing
    altered = loaded(signed, "evaluate", QUERY)
    assert altered["code"] == 7 and "does not verify" in altered["err"]
    bob.write_bytes(kept)
    assert loaded(signed, "evaluate", QUERY)["code"] == 0

    assert loaded(signed, "evaluate", QUERY, DACP_APPROVALS_QUORUM="3")["code"] == 7  # other settings: checked
    approvers = signed["approvers"]
    text = approvers.read_text()
    approvers.write_text(text.replace("roles: [approver]", "roles: [author]", 1))  # bob may no longer approve
    changed = loaded(signed, "evaluate", QUERY)
    assert changed["code"] == 7 and "may not sign as approver" in changed["err"]
    approvers.write_text(text + "# the same people\n")  # other bytes, same people: checked again, approved
    again = loaded(signed, "evaluate", QUERY)
    assert again["code"] == 0 and heavy(again["modules"], CHECKS)


@pytest.mark.slow
def test_the_startup_benchmark_prints_its_rows():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_startup.py"), "--quick"], cwd=ROOT,
                         capture_output=True, text=True, check=True, timeout=300).stdout
    for row in ("python -c pass", "dacp evaluate (one query, logged)", "dacp evaluate --no-log",
                "bundle cache empty", "a bare interpreter start"):
        assert row in out
