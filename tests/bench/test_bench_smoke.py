"""The benchmark script runs (its ``--quick`` sizes) and reports what it must. Not a timed test: no
figure is checked, only that every measure is printed and the decisions agree across evaluators."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.slow  # whole benchmark runs in subprocesses (the callgrind one ~1 min): .ci/run's second step


def test_the_decision_benchmark_runs_and_reports_every_measure(tmp_path):
    out = tmp_path / "figures.json"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_decisions.py"), "--quick", "--json", str(out)],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    text = run.stdout
    for measure in ("full trace + decision log", "full trace, no log", "every decision through it",
                    "raw durable_rules assert_fact + retract_fact", "decision log alone", "less the log alone", "plain-Python evaluation of the same criteria",
                    "JSON Lines in", "p50", "p99", "load + check", "register in durable_rules",
                    "resident set", "targets (issue 6, one core)"):
        assert measure in text, measure
    assert "decisions identical across evaluators" in text and " yes " in text
    figures = json.loads(out.read_text())
    assert {"batch", "latency_ms", "compile", "memory"} <= set(figures)
    assert all(v > 0 for v in figures["batch"].values())


def test_the_log_benchmark_runs_and_reports_every_measure(tmp_path):
    out = tmp_path / "figures.json"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_log.py"), "--quick", "--json", str(out)],
                         capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    text = run.stdout
    for measure in ("entries appended", "sha256 leaf hashes", "zstd pack (leaves + ids)", "chunks of 500",
                    "one decision an append", "decided + logged", "decided, no log", "ratio logged / unlogged",
                    "20,000 entries", "peak growth, 10x the entries", "DecisionLog.prove + Receipt.to_json",
                    "check_receipt", "dacp audit prove (a process)", "dacp audit check-receipt (a process)",
                    "goals (issue 14, one core)", "verify >= 200,000 entries/s"):
        assert measure in text, measure
    figures = json.loads(out.read_text())
    assert {"append", "bytes", "ratio", "verify", "prove_ms", "goals"} <= set(figures)
    assert figures["append"]["rate"] > 0 and figures["verify"]["20000"]["ok"] is True
    assert figures["verify"]["20000"]["entries"] == 20_000 and figures["bytes"]["chunks"]["file"] > 0


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed (scripts/setup installs it as root)")
def test_the_instruction_counter_runs_and_reports_a_count():
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "count_instructions.py"), "-n", "40", "--reps", "1"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    found = re.search(r"([0-9,]+) instructions per decision \(with the decision log", run.stdout)
    assert found and int(found.group(1).replace(",", "")) > 10_000, run.stdout


def test_the_margin_benchmark_runs_and_reports_every_step():
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_margin.py"), "--quick"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    for step in ("coverage, every account, now", "as of a time (journal)", "coverage, one account", "free, one account",
                 "calls: issue", "process peak RSS"):
        assert step in run.stdout, step
    assert re.search(r"100 accounts in deficit, 25 with a cross-margin reduction applied; 100 calls issued", run.stdout)
