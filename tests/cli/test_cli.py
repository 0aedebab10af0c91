"""The dacp command line: every command, exit codes, no tracebacks, nothing written on bad input."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from rules.audit.log import DecisionLog
from rules.cli.run import main
from tests.support.tamper import edit_entry
from tests.support import ROOT

EXAMPLES = ROOT / "examples" / "queries"
POLICIES = ROOT / "policies"


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DACP_CONFIG", raising=False)
    monkeypatch.setenv("DACP_POLICIES", str(POLICIES))
    monkeypatch.setenv("DACP_APPROVALS_DEMO_KEYS_IN_POLICY_DIR", "true")  # the shipped DEMO approvers file
    monkeypatch.setenv("DACP_LOG", str(tmp_path / "log.sqlite"))
    return tmp_path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def log_count(path: Path) -> int:
    if not path.exists():
        return 0
    return DecisionLog(path).count()


def test_validate_shipped_bundle(env, capsys):
    code, out, _ = run(capsys, "validate")
    assert code == 0 and "valid" in out and "sha256" in out


def test_validate_reports_every_problem_at_file_line(env, capsys, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(POLICIES, bad, ignore=shutil.ignore_patterns("tests"))
    text = (bad / "haircuts.yaml").read_text().replace("    floor: 0.20\n", "    floor: 0.20\n    haircutt: 0.1\n", 1)
    (bad / "haircuts.yaml").write_text(text)
    (bad / "limits.yaml").write_text((bad / "limits.yaml").read_text().replace("max_share: 0.50", "max_share: 1.5"))
    code, _, err = run(capsys, "validate", str(bad))
    assert code == 2
    assert "haircuts.yaml:" in err and "unknown key 'haircutt'" in err and "[rule haircut.btc]" in err
    assert "limits.yaml:" in err and "too large" in err
    assert "2 problems" in err


def test_evaluate_one_file_prints_the_decision_and_logs_it(env, capsys):
    code, out, err = run(capsys, "evaluate", str(EXAMPLES / "btc-eligible.json"))
    d = json.loads(out)
    assert code == 0 and d["eligible"] is True and d["collateral_value_usd"] == "912500.00"
    assert log_count(env / "log.sqlite") == 1 and "appended" in err


def test_evaluate_directory_as_table(env, capsys):
    code, out, _ = run(capsys, "evaluate", str(EXAMPLES), "--format", "table")
    assert code == 0
    assert out.count("\n") >= len(list(EXAMPLES.glob("*.json"))) + 1
    assert "ex-btc-low-confirmations" in out and "custody.btc-confirmations" in out


def test_evaluate_yaml_from_stdin(env, capsys, monkeypatch):
    import io

    q = json.loads((EXAMPLES / "eth-eligible.json").read_text())
    import yaml

    monkeypatch.setattr(sys, "stdin", io.StringIO(yaml.safe_dump(q)))
    code, out, _ = run(capsys, "evaluate", "-")
    assert code == 0 and json.loads(out)["asset"] == "ETH"


def test_batch_jsonl_in_and_out(env, capsys, tmp_path):
    lines = [json.dumps(json.loads(p.read_text())) for p in sorted(EXAMPLES.glob("*.json"))]
    f = tmp_path / "q.jsonl"
    f.write_text("\n".join(lines * 3) + "\n")
    code, out, _ = run(capsys, "evaluate", "--batch", str(f), "--progress")
    decisions = [json.loads(x) for x in out.splitlines()]
    assert code == 0 and len(decisions) == len(lines) * 3
    assert log_count(env / "log.sqlite") == len(lines) * 3


def test_bad_batch_line_means_nothing_decided_or_logged(env, capsys, tmp_path):
    good = json.dumps(json.loads((EXAMPLES / "btc-eligible.json").read_text()))
    f = tmp_path / "q.jsonl"
    f.write_text(good + "\n" + good.replace('"12.5"', '"-3"') + "\n{not json\n")
    code, out, err = run(capsys, "evaluate", "--batch", str(f))
    assert code == 3 and out == ""
    assert "q.jsonl:2" in err and "q.jsonl:3" in err and "nothing was decided or logged" in err
    assert log_count(env / "log.sqlite") == 0


@pytest.mark.parametrize("text, words", [
    ('{"account": "A"', "not valid JSON"),
    ('{"account":"A","account":"B"}', "duplicate key"),
    ('{"account":"A","participant":"P","asset":"BTC","quantity":"1","price_usd":NaN,"as_of":"2026-01-01T00:00:00Z"}', "NaN"),
    ('{"account":"A","participant":"P","asset":"BTC","quantity":"99999999999999","price_usd":"1","as_of":"2026-01-01T00:00:00Z"}', "absurdly large"),
    ('{"account":"A","participant":"P","asset":"BTC","quantity":"1","price_usd":"1","as_of":"2026-02-30T00:00:00Z"}', "not a real date"),
    ('{"account":"A","participant":"P","asset":"BTC","quantity":"1","price_usd":"1","as_of":"2026-01-01T00:00:00Z","colour":"red"}', "unknown key 'colour'"),
])
def test_bad_query_is_a_clear_error_with_nothing_logged(env, capsys, tmp_path, text, words):
    f = tmp_path / "q.json"
    f.write_text(text)
    code, out, err = run(capsys, "evaluate", str(f))
    assert code == 3 and out == "" and words in err
    assert log_count(env / "log.sqlite") == 0


def test_missing_file_is_a_clear_error(env, capsys):
    code, _, err = run(capsys, "evaluate", "no-such-file.json")
    assert code == 3 and "no such file" in err


def test_explain_replay_and_audit(env, capsys):
    _, out, _ = run(capsys, "evaluate", str(EXAMPLES / "usdc-ineligible-stale-attestation.json"))
    did = json.loads(out)["decision_id"]
    code, out, _ = run(capsys, "explain", did)
    assert code == 0 and "NOT ELIGIBLE" in out and "stablecoin.reserve-attestation-fresh" in out and "eligibility.yaml:" in out
    code, out, _ = run(capsys, "explain", did, "--json")
    assert code == 0 and json.loads(out)["decision"]["decision_id"] == did
    code, out, _ = run(capsys, "replay", did)
    assert code == 0 and "IDENTICAL" in out
    code, out, _ = run(capsys, "replay", did, "--engine", "python")  # the second evaluator agrees
    assert code == 0 and "IDENTICAL" in out
    code, out, _ = run(capsys, "audit", "verify")
    assert code == 0 and "tree intact" in out


def test_audit_verify_fails_on_tampering_and_reads_refuse_the_entry(env, capsys):
    run(capsys, "evaluate", str(EXAMPLES))
    entry = list(DecisionLog(env / "log.sqlite").entries())[1]
    edit_entry(env / "log.sqlite", 1, b'"eligible":', b'"eligible": ', thorough=False)
    code, out, _ = run(capsys, "audit", "verify")
    assert code == 1 and "TAMPERED" in out and "entry 2" in out
    for command in ("explain", "replay"):
        code, out, err = run(capsys, command, entry.entry_id)
        assert code == 8 and out == "" and "entry 2" in err and "was modified" in err


def test_explain_unknown_id(env, capsys):
    run(capsys, "evaluate", str(EXAMPLES / "btc-eligible.json"))
    code, _, err = run(capsys, "explain", "nope")
    assert code == 3 and "no decision with id" in err


def test_policy_tests_command(env, capsys):
    code, out, _ = run(capsys, "test")
    assert code == 0, out
    assert "0 failed" in out and "coverage: all" in out


def test_policy_test_failure_is_reported(env, capsys, tmp_path):
    tests = tmp_path / "tests"
    tests.mkdir()
    q = json.loads((EXAMPLES / "btc-eligible.json").read_text())
    import yaml

    (tests / "t.yaml").write_text(yaml.safe_dump({"kind": "tests", "tests": [
        {"name": "wrong expectation on purpose", "query": q, "expect": {"eligible": False}}]}))
    code, out, _ = run(capsys, "test", str(tests), "--no-coverage")
    assert code == 1 and "FAIL" in out and "expected eligible=false, got true" in out


def test_bundle_show_and_compile(env, capsys):
    code, out, _ = run(capsys, "bundle", "show")
    assert code == 0 and "custody.btc-confirmations" in out and "eligibility.yaml:" in out
    code, out, _ = run(capsys, "bundle", "compile")
    data = json.loads(out)
    assert code == 0 and data["ruleset"].startswith("dacp_")
    assert all("seen" in shard for shard in data["shards"].values())


def test_console_script_runs_as_a_real_process(env):
    exe = Path(sys.executable).parent / "dacp"
    r = subprocess.run([str(exe), "evaluate", str(EXAMPLES / "doge-ineligible-unknown-asset.json"), "--no-log"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and json.loads(r.stdout)["failed_rules"] == ["registry.asset-registered"]
    r = subprocess.run([str(exe), "evaluate", "--batch", "-"], input="{oops\n", capture_output=True, text=True, timeout=60)
    assert r.returncode == 3 and "Traceback" not in r.stderr and "not valid JSON" in r.stderr


def test_a_bad_query_late_in_a_long_batch_writes_nothing(tmp_path, capsys):
    """More queries than one streamed chunk, the last one bad for the bundle: exit 3, nothing printed,
    nothing logged (every query is checked before the first chunk is decided)."""
    import json as _json

    from rules.cli.evaluate import STREAM_CHUNK
    from rules.audit.log import DecisionLog
    from tests.support.workload import book

    docs = [d for d in book(STREAM_CHUNK + 50, seed=19) if d["asset"] == "BTC"]
    docs = (docs * (STREAM_CHUNK // len(docs) + 2))[: STREAM_CHUNK + 20]
    docs[-1] = {**docs[-1], "quantity": "1.123456789"}  # BTC has 8 places
    batch = tmp_path / "book.jsonl"
    batch.write_text("\n".join(_json.dumps(d) for d in docs) + "\n")
    log = tmp_path / "log.sqlite"
    code = main(["evaluate", "--batch", str(batch), "--log", str(log), "--policies", str(ROOT / "policies")])
    out = capsys.readouterr()
    assert code == 3 and out.out == "" and "more decimal places than BTC has" in out.err and "Traceback" not in out.err
    assert f"query {len(docs)} of {len(docs)} (id {docs[-1]['id']}), quantity:" in out.err  # which one, in a batch
    assert not log.exists()
