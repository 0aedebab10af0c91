"""Decision throughput and latency, side by side with raw durable_rules and plain Python.

    .venv/bin/python bench/bench_decisions.py            # full run (about a minute)
    .venv/bin/python bench/bench_decisions.py --quick    # seconds; what CI runs to prove the script works

Prints, on one generated mix of queries (every asset, eligible and not, with portfolios):
  * batch decisions/s through the full engine (normalise, evaluate, haircut, limits, full trace)
    with the decision log on (one SQLite transaction per batch), for each evaluator;
  * single-query latency p50/p99 in-process (no log);
  * bundle load + compile time;
  * the same facts through raw durable_rules assert_fact/retract_fact (no trace, no guards), and
    through the plain-Python evaluator of the same compiled conditions alone; ratios to the engine.
Figures are per process on one core (the engine is single-threaded).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rules.api import Dacp  # noqa: E402
from rules.compiler import QID, compile_bundle  # noqa: E402
from rules.decide import Engine  # noqa: E402
from rules.normalize import normalize  # noqa: E402
from rules.policy import load_bundle  # noqa: E402
from rules.pyeval import PythonEvaluator  # noqa: E402
from rules.query import parse_query  # noqa: E402
from rules.settings import Settings  # noqa: E402

EXAMPLES = ROOT / "examples" / "queries"


def generate(n: int, seed: int = 7) -> list[dict]:
    """A realistic mix: the shipped examples varied in quantity, price, custody and portfolio."""
    rnd = random.Random(seed)
    bases = [json.loads(p.read_text()) for p in sorted(EXAMPLES.glob("*.json"))]
    out = []
    for i in range(n):
        q = json.loads(json.dumps(rnd.choice(bases)))
        q["id"] = f"bench-{i}"
        q["account"] = f"ACC-{rnd.randrange(5000):04d}"
        q["quantity"] = str((int(q["quantity"].split(".")[0]) or 1) * rnd.randrange(1, 40) // 10 + 1)
        if rnd.random() < 0.1 and "custody" in q:
            q["custody"]["segregated"] = False
        q["portfolio"] = [{"asset": rnd.choice(["BTC", "ETH", "USDC", "BUIDL", "OUSG"]),
                           "collateral_value_usd": f"{rnd.randrange(10_000, 5_000_000)}.00"} for _ in range(rnd.randrange(0, 6))]
        out.append(q)
    return out


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:>12,.0f} /s"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="tiny sizes: prove the script runs")
    ap.add_argument("-n", type=int, default=20_000, help="queries in the batch")
    ap.add_argument("--memory", type=int, default=0, help="also decide this many queries (durable_rules, no log) "
                    "and print resident memory as it goes, to show it stays flat")
    args = ap.parse_args()
    n = 500 if args.quick else args.n
    singles = 200 if args.quick else 5_000

    print(f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"{platform.system()} {platform.release()}; one process, one core")
    t0 = time.perf_counter()
    bundle = load_bundle(ROOT / "policies")
    compiled = compile_bundle(bundle)
    t_load = time.perf_counter() - t0
    print(f"bundle load + check + compile: {t_load * 1000:8.1f} ms  ({len(bundle.rule_ids())} rules, "
          f"{len(compiled.durable_definition())} durable_rules rules)")

    t_gen = compile_generated(200 if args.quick else 1000)
    print(f"generated bundle of {t_gen[0]} rules: load + check {t_gen[1] * 1000:8.1f} ms, compile {t_gen[2] * 1000:6.1f} ms, "
          f"register in durable_rules {t_gen[3] * 1000:8.1f} ms, python evaluator {t_gen[4] * 1000:6.1f} ms")

    docs = generate(n)
    queries = [parse_query(d) for d in docs]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for evaluator in ("durable_rules", "python"):
            dacp = Dacp(Settings(policies=ROOT / "policies", log=Path(tmp) / f"{evaluator}.sqlite", engine=evaluator),
                        bundle=bundle)
            dacp.engine  # compile/register outside the timing
            dacp.evaluate(queries[:50])
            gc.collect()
            t0 = time.perf_counter()
            decisions = dacp.evaluate(queries)
            dt = time.perf_counter() - t0
            results[evaluator] = (dt, [d.to_json() for d in decisions])
            assert dacp.log.verify().ok
            print(f"batch, full trace + decision log, {evaluator:13}: {rate(n, dt)}  ({n} decisions in {dt:.2f} s)")

    a = [{k: v for k, v in d.items() if k not in ("decision_id", "engine")} for d in results["durable_rules"][1]]
    b = [{k: v for k, v in d.items() if k not in ("decision_id", "engine")} for d in results["python"][1]]
    print(f"decisions identical across evaluators: {a == b}  "
          f"({sum(d['eligible'] for d in results['python'][1])} eligible of {n})")

    for evaluator in ("durable_rules", "python"):
        engine = Engine.for_bundle(bundle, evaluator)
        lat = []
        for q in queries[:singles]:
            t0 = time.perf_counter()
            engine.decide(q)
            lat.append(time.perf_counter() - t0)
        lat.sort()
        p50, p99 = lat[len(lat) // 2], lat[int(len(lat) * 0.99)]
        print(f"single query in-process, {evaluator:13}: p50 {p50 * 1e3:6.3f} ms  p99 {p99 * 1e3:6.3f} ms  "
              f"mean {statistics.fmean(lat) * 1e3:6.3f} ms")

    # The same criteria without the engine around them.
    facts = [normalize(bundle, bundle.assets[q.asset], q) for q in queries if q.asset in bundle.assets]
    raw_dt = raw_durable(compiled, facts)
    py = PythonEvaluator(compiled)
    t0 = time.perf_counter()
    for f in facts:
        py.outcomes(f)
    py_dt = time.perf_counter() - t0
    full = results["durable_rules"][0]
    print(f"raw durable_rules assert_fact+retract_fact: {rate(len(facts), raw_dt)}  "
          f"(ratio raw/engine-durable = {(len(facts) / raw_dt) / (n / full):.2f})")
    print(f"plain-Python evaluation of the same criteria: {rate(len(facts), py_dt)}  "
          f"(ratio plain/engine-durable = {(len(facts) / py_dt) / (n / full):.2f}, "
          f"plain/engine-python = {(len(facts) / py_dt) / (n / results['python'][0]):.2f})")
    if args.memory or args.quick:
        memory_run(bundle, queries, args.memory or 5_000)
    print("target (issue 6): >= 50,000 decisions/s per core in batch with trace and log")


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def memory_run(bundle, queries, total: int) -> None:
    """Decide ``total`` queries through durable_rules, printing RSS ten times along the way."""
    engine = Engine.for_bundle(bundle, "durable_rules")
    step = max(total // 10, 1)
    marks = []
    t0 = time.perf_counter()
    for i in range(total):
        engine.decide(queries[i % len(queries)])
        if (i + 1) % step == 0:
            marks.append(rss_mib())
    dt = time.perf_counter() - t0
    print(f"memory over {total:,} decisions (durable_rules): RSS MiB " + " ".join(f"{m:.0f}" for m in marks) +
          f"  (growth after the first tenth: {marks[-1] - marks[0]:+.1f} MiB; {total / dt:,.0f} decisions/s)")


def compile_generated(n_rules: int) -> tuple[int, float, float, float, float]:
    """A bundle like the shipped one with ``n_rules`` extra criteria of every check form."""
    from rules.durable_engine import ensure_registered

    checks = ["{fact: custody.confirmations, at_least: %d}", "{fact: stablecoin.reserve_attestation_age_days, at_most: %d}",
              "{fact: custody.custodian, one_of: [c%d, anchorage, bny-digital]}", "{fact: custody.segregated, equals: true}",
              "{fact: fund.nav_age_days, at_most: %d}", "{fact: participant, in_list: participants}"]
    scopes = ["", "\n    applies_to: {assets: [BTC, ETH]}", "\n    applies_to: {classes: [payment_stablecoin]}",
              "\n    applies_to: {chains: [ethereum]}\n    effective_from: 2026-01-01"]
    lines = ["kind: eligibility", "criteria:"]
    for i in range(n_rules):
        check = checks[i % len(checks)]
        check = check % (i % 50) if "%d" in check else check
        lines.append(f"  - id: generated.rule-{i}\n    description: Generated rule number {i} for the benchmark."
                     f"\n    rationale: Benchmark of policy load and compile time.{scopes[i % len(scopes)]}"
                     f"\n    check: {check}")
    with tempfile.TemporaryDirectory() as tmp:
        for f in (ROOT / "policies").glob("*.yaml"):
            (Path(tmp) / f.name).write_text(f.read_text())
        (Path(tmp) / "generated.yaml").write_text("\n".join(lines) + "\n")
        t0 = time.perf_counter()
        bundle = load_bundle(tmp)
        t1 = time.perf_counter()
        compiled = compile_bundle(bundle)
        t2 = time.perf_counter()
        ensure_registered(compiled)
        t3 = time.perf_counter()
        PythonEvaluator(compiled)
        t4 = time.perf_counter()
    return len(bundle.rule_ids()), t1 - t0, t2 - t1, t3 - t2, t4 - t3


def raw_durable(compiled, facts) -> float:
    """assert_fact + retract_fact through durable_rules' host directly, counting firings only."""
    from durable import engine as dengine

    class Quiet(dengine.Host):
        def _run(self) -> None:
            return None

    host = Quiet()
    fired = [0]

    def action(c) -> None:
        fired[0] += 1

    definition = compiled.durable_definition()
    for rule in definition.values():
        rule["run"] = action
    name = "raw_" + compiled.ruleset_name
    host.register_rulesets({name: definition})
    t0 = time.perf_counter()
    for i, f in enumerate(facts):
        fact = dict(f, **{QID: i, "sid": "raw"})
        host.assert_fact(name, fact)
        host.retract_fact(name, fact)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
