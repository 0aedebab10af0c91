"""Cold start of one query: ``dacp evaluate FILE`` in a new process, beside a bare ``python -c pass``.

Both run with the same interpreter (this one), interleaved, in one run, so the ratio holds whatever the
machine's load: the issue's target is a one-query ``dacp evaluate`` (no ``--verify``) in at most 6 times a
bare interpreter start. Each row is the wall time of the whole process, from ``fork`` to exit.

Caches as a user has them: the bundle cache (``rules/policy/cache.py``) and Python's bytecode caches are
filled by one run first (``PYTHONDONTWRITEBYTECODE``, which some shells set, is taken out of the child's
environment: without bytecode caches every start compiles every module again). The bundle cache lives in a
scratch directory (``DACP_CACHE_DIR``), the log too; the row "bundle cache empty" clears it before every run
(what the first query after a policy change costs).

Beside the wall time, each row's CPU time (user + system of the child, from ``getrusage``): on a busy machine
the wall time of a short process mostly measures the wait for a core, its CPU time much less so.

    .venv/bin/python bench/bench_startup.py [--runs 15] [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import resource
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUERY = ROOT / "examples" / "queries" / "btc-eligible.json"
TARGET = 6.0


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _time(cmd: list[str], env: dict[str, str], cwd: Path, before=None) -> tuple[float, float]:
    """(wall s, CPU s) of one run of ``cmd``."""
    if before:
        before()
    cpu = _cpu()
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    took = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.decode()[-500:]}")
    return took, _cpu() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15, help="runs of each row (default 15)")
    ap.add_argument("--quick", action="store_true", help="3 runs each (the smoke run)")
    args = ap.parse_args()
    runs = 3 if args.quick else args.runs

    scratch = Path(tempfile.mkdtemp(prefix="dacp-bench-startup-"))
    cache = scratch / "cache"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DACP_") and k != "PYTHONDONTWRITEBYTECODE"}
    env.update(DACP_CACHE_DIR=str(cache), DACP_CONFIG=str(ROOT / "dacp.toml") if (ROOT / "dacp.toml").is_file() else "",
               DACP_POLICIES=str(ROOT / "policies"), DACP_LOG=str(scratch / "log.sqlite"))
    if not env["DACP_CONFIG"]:
        del env["DACP_CONFIG"]
    py = sys.executable
    dacp = [py, "-m", "rules.cli", "evaluate", str(QUERY)]
    rows: dict[str, tuple[list[str], object]] = {
        "python -c pass": ([py, "-c", "pass"], None),
        "dacp evaluate (one query, logged)": (dacp, None),
        "dacp evaluate --no-log": (dacp + ["--no-log"], None),
        "dacp evaluate, bundle cache empty": (dacp, lambda: shutil.rmtree(cache, ignore_errors=True)),
    }
    try:
        for cmd, _ in rows.values():  # fill the bytecode caches, the bundle cache and the log once
            _time(cmd, env, ROOT)
        times: dict[str, list[float]] = {name: [] for name in rows}
        cpus: dict[str, list[float]] = {name: [] for name in rows}
        for _ in range(runs):
            for name, (cmd, before) in rows.items():
                wall, cpu = _time(cmd, env, ROOT, before)
                times[name].append(wall)
                cpus[name].append(cpu)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    bare = statistics.median(times["python -c pass"])
    bare_cpu = statistics.median(cpus["python -c pass"])
    print(f"cold start: a new process each run, {runs} runs of each row, interleaved; {Path(py).name} "
          f"{sys.version.split()[0]}; query {QUERY.relative_to(ROOT)}; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs")
    print(f"  {'':36} {'median s':>9} {'min s':>7} {'x bare':>7} {'CPU s':>7} {'x bare':>7}")
    for name, ts in times.items():
        med, cpu = statistics.median(ts), statistics.median(cpus[name])
        print(f"  {name:36} {med:9.3f} {min(ts):7.3f} {med / bare:6.1f}x {cpu:7.3f} {cpu / bare_cpu:6.1f}x")
    ratio = statistics.median(times["dacp evaluate (one query, logged)"]) / bare
    cpu_ratio = statistics.median(cpus["dacp evaluate (one query, logged)"]) / bare_cpu
    print(f"one query, cold: {ratio:.1f}x a bare interpreter start (target <= {TARGET:g}x: "
          f"{'met' if ratio <= TARGET else 'NOT met'}); CPU time {cpu_ratio:.1f}x")


if __name__ == "__main__":
    main()
