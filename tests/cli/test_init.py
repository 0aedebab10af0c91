"""``dacp init`` and what a directory without a bundle or a log gets (issue 18): the starter bundle written
where asked, a missing bundle that says how to get one, read-only commands that create nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rules.cli.init import STARTER, starter_files
from rules.cli.run import main
from tests.support import ROOT

QUERY = ROOT / "examples" / "queries" / "btc-eligible.json"


@pytest.fixture
def empty(tmp_path, monkeypatch) -> Path:
    for k in [k for k in os.environ if k.startswith("DACP_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("DACP_CACHE_DIR", str(tmp_path.parent / f"{tmp_path.name}-cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_the_starter_is_the_shipped_bundle_with_its_tests_and_demo_approvals():
    files = {f.as_posix() for f in starter_files()}
    shipped = {p.relative_to(ROOT / "policies").as_posix() for p in (ROOT / "policies").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    assert files == shipped  # nothing of the shipped bundle is left out, nothing else comes along
    assert {"programme.yaml", "tests/backtests.yaml", "tests/data/btc_usd_daily.csv", "approvals/approvers.yaml"} <= files
    assert all((STARTER / f).read_bytes() == (ROOT / "policies" / f).read_bytes() for f in files)


def test_init_then_validate_test_and_evaluate_from_anywhere(empty, capsys):
    code, out, _ = run(capsys, "init")
    assert code == 0 and "wrote the starter bundle to policies" in out and "wrote dacp.toml" in out
    assert "DEMO keys: " in out and "prove nothing" in out and "[approvals] approvers, approvers_sha256" in out
    assert "demo_keys_in_policy_dir = true" in (empty / "dacp.toml").read_text()
    code, out, _ = run(capsys, "validate")
    assert code == 0 and "policies: valid" in out
    assert (empty / "policies" / "tests" / "data" / "btc_usd_daily.csv").stat().st_size > 50_000  # the file, not a link
    code, out, _ = run(capsys, "test")
    assert code == 0 and " 0 failed" in out
    code, out, err = run(capsys, "evaluate", str(QUERY))
    assert code == 0 and json.loads(out)["eligible"] is True and "appended to var/dacp.sqlite" in err


def test_init_into_another_directory_sets_policies_and_never_overwrites(empty, capsys):
    code, out, _ = run(capsys, "init", "bundles/pilot")
    assert code == 0
    assert 'policies = "bundles/pilot"' in (empty / "dacp.toml").read_text()
    assert run(capsys, "validate")[0] == 0
    code, _, err = run(capsys, "init", "bundles/pilot")
    assert code == 3 and "exists already" in err and "nothing was written" in err
    before = (empty / "dacp.toml").read_text()
    code, out, _ = run(capsys, "init", "other")
    assert code == 0 and "dacp.toml exists already (not changed)" in out and "demo_keys_in_policy_dir = true" in out
    assert (empty / "dacp.toml").read_text() == before


@pytest.mark.parametrize("argv", [["validate"], ["test"], ["bundle", "show"], ["evaluate", str(QUERY)]])
def test_a_missing_bundle_says_how_to_get_one(empty, capsys, argv):
    code, _, err = run(capsys, *argv)
    assert code == 3
    assert err.strip() == "dacp: error: no policy bundle at policies: run `dacp init` or pass --policies " \
                          "(or DACP_POLICIES)"
    assert not list(empty.iterdir())


def test_an_empty_policy_directory_is_missing_too(empty, capsys):
    (empty / "policies").mkdir()
    code, _, err = run(capsys, "validate")
    assert code == 3 and "no policy bundle at policies (the directory has no *.yaml files): run `dacp init`" in err


@pytest.mark.parametrize("argv", [["explain", "X"], ["explain", "X", "--json"], ["replay", "X"], ["audit", "verify"],
                                  ["audit", "prove", "X"], ["audit", "checkpoint"]])
def test_read_only_commands_refuse_a_missing_log_and_create_nothing(empty, capsys, argv):
    code, _, err = run(capsys, *argv)
    assert code == 3 and "no decision log at var/dacp.sqlite" in err
    assert not list(empty.iterdir())
