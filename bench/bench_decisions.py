"""Decision throughput, latency, compile time and memory - beside raw durable_rules and plain Python.

    .venv/bin/python bench/bench_decisions.py            # the full run (a few minutes)
    .venv/bin/python bench/bench_decisions.py --quick    # seconds: what CI runs to prove the script works

One process pinned to one core (``--cpu``, default the last one). One generated book of queries
(``tests/support/workload.py``: every asset class, eligible and not, portfolios that make the concentration
limits bite), and on those same queries:

* batch: decisions/s through the engine with the full trace and the decision log on (SQLite,
  ``synchronous=FULL``, one transaction per chunk as ``dacp evaluate --batch`` does), for each
  evaluator; the same without the log; every decision through durable_rules (no reuse); JSON Lines
  in and out as the CLI does; and, next to them, the same facts through raw durable_rules
  ``assert_fact``/``retract_fact`` and through the plain-Python evaluation of the same criteria;
* single query in-process: p50/p99 of one decision (and of one decision with its own log commit);
* policy load + compile: the shipped bundle and a generated bundle of 1,000 more rules;
* memory: resident set over 10^6 decisions with the log on (it must stay flat);
* that the decisions are identical across evaluators.

Figures are wall-clock on this machine; ratios compare runs on the same queries.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import io
import json
import multiprocessing
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from rules.app import Dacp, comparable  # noqa: E402
from rules.cli.evaluate import STREAM_CHUNK as CHUNK, parse_jsonl, print_jsonl  # noqa: E402
from rules.engine.compiler import QID, compile_bundle  # noqa: E402
from rules.engine.decide import Engine  # noqa: E402
from rules.audit.log import DecisionLog, RawJSON  # noqa: E402
from rules.collector import gc_paused  # noqa: E402
from rules.engine.ids import new_ids  # noqa: E402
from rules.audit.entry_format import FORMAT as LOG_FORMAT  # noqa: E402
from rules.engine.fact_builder import normalize  # noqa: E402
from rules.policy.loader import load_bundle  # noqa: E402
from rules.engine.evaluators.python import PythonEvaluator  # noqa: E402
from rules.engine.query import parse_query  # noqa: E402
from rules.settings import Settings  # noqa: E402
from tests.support.workload import book  # noqa: E402

POLICIES = ROOT / "policies"
TARGETS = {"batch": 50_000, "p99_ms": 2.0, "compile_s": 1.0}


# -- helpers -------------------------------------------------------------------------------------
def pin(cpu: int | None) -> str:
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity here)"
    cpus = sorted(os.sched_getaffinity(0))
    cpu = cpus[-1] if cpu is None else cpu
    os.sched_setaffinity(0, {cpu})
    return f"pinned to CPU {cpu} of {os.cpu_count()}"


def peak_mib() -> float:
    """This process's high-water resident set (VmHWM: unlike ru_maxrss, not carried over an exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def best_rate(n: int, run: Callable[[], Any], repeat: int) -> float:
    """Decisions per second of the best of ``repeat`` runs (the least disturbed by the machine)."""
    best = 0.0
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        run()
        best = max(best, n / (time.perf_counter() - t0))
    return best


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    s = sorted(samples)
    return s[len(s) // 2] * 1e3, s[min(len(s) - 1, int(len(s) * 0.99))] * 1e3, s[-1] * 1e3


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str]] = []

    def add(self, measure: str, figure: str, note: str = "") -> None:
        self.rows.append((measure, figure, note))
        print(f"  {measure:<58} {figure:>18}  {note}", flush=True)


# -- the measures -----------------------------------------------------------------------------------
def stream(dacp: Dacp, queries: list) -> int:
    n = 0
    for chunk in dacp.evaluate_stream(queries, CHUNK):
        n += len(chunk)
    return n


def jsonl_end_to_end(dacp: Dacp, text: str) -> int:
    """What ``dacp evaluate --batch`` does: parse every line, then decide, log and print per chunk."""
    queries: list = []
    errors: list[str] = []
    parse_jsonl(text, "stdin", queries, errors)
    assert not errors, errors[:3]
    return print_jsonl(dacp, queries, io.BytesIO())


def log_floor(log: DecisionLog, bundle: Any, queries: list) -> int:
    """The decision log with no engine in front of it: each query's JSON as the engine's entries hold
    it, with a one-field decision, in the engine's chunks, ids and collector pause. What any engine pays
    here, at the least, to log the inputs of its decisions durably."""
    opening = b'{"format":%d,"query":' % LOG_FORMAT
    with gc_paused():
        for start in range(0, len(queries), CHUNK):
            part = queries[start:start + CHUNK]
            ids = new_ids(len(part))
            log.append([("decision", ids[i], bundle,
                         RawJSON(b"".join((opening, q.raw_json, b',"decision":{"eligible":false}}'))))
                        for i, q in enumerate(part)])
    return len(queries)


def raw_durable(compiled, facts: list[dict]) -> tuple[float, list[float]]:
    """The same facts through durable_rules' host directly: assert_fact + retract_fact, firings
    counted, nothing else (no trace, no type checks, no decision)."""
    from rules.engine.evaluators.durable import _QuietHost  # durable's own Host, without its timer threads

    host = _QuietHost()  # a host of its own, not the engine's
    fired = [0]

    def action(c: Any) -> None:
        fired[0] += 1

    definition = compiled.durable_definition()
    for rule in definition.values():
        rule["run"] = action
    name = "raw_" + compiled.ruleset_name
    host.register_rulesets({name: definition})
    lat = []
    t0 = time.perf_counter()
    for i, f in enumerate(facts):
        s = time.perf_counter()
        fact = dict(f, **{QID: i, "sid": "raw"})
        host.assert_fact(name, fact)
        host.retract_fact(name, fact)
        lat.append(time.perf_counter() - s)
    total = time.perf_counter() - t0
    assert fired[0] >= len(facts), "durable_rules fired nothing"
    return len(facts) / total, lat


def plain_python(compiled, facts: list[dict]) -> tuple[float, list[float]]:
    py = PythonEvaluator(compiled)
    lat = []
    t0 = time.perf_counter()
    for f in facts:
        s = time.perf_counter()
        py.outcomes(f)
        lat.append(time.perf_counter() - s)
    return len(facts) / (time.perf_counter() - t0), lat


def generated_bundle(tmp: Path, n_rules: int) -> Path:
    """The shipped bundle plus ``n_rules`` criteria of every check form, scope and date."""
    checks = ["{fact: custody.confirmations, at_least: %d}", "{fact: stablecoin.reserve_attestation_age_days, at_most: %d}",
              "{fact: custody.custodian, one_of: [c%d, anchorage, bny-digital]}", "{fact: custody.segregated, equals: true}",
              "{fact: fund.nav_age_days, at_most: %d}", "{fact: participant, in_list: participants}",
              "{fact: price.age_minutes, at_most: %d}", "{fact: custody.finality, one_of: [finalized, safe]}"]
    scopes = ["", "\n    applies_to: {assets: [BTC, ETH]}", "\n    applies_to: {classes: [payment_stablecoin]}",
              "\n    applies_to: {chains: [ethereum]}\n    effective_from: 2026-01-01",
              "\n    applies_to: {classes: [tokenized_treasury_fund]}\n    effective_to: 2027-01-01"]
    lines = ["kind: eligibility", "criteria:"]
    for i in range(n_rules):
        check = checks[i % len(checks)]
        check = check % (i % 50 + 1) if "%d" in check else check
        lines.append(f"  - id: generated.rule-{i}\n    description: Generated rule number {i} for the benchmark."
                     f"\n    rationale: Benchmark of policy load and compile time.{scopes[i % len(scopes)]}"
                     f"\n    check: {check}")
    d = tmp / f"generated-{n_rules}"
    d.mkdir()
    for f in POLICIES.glob("*.yaml"):
        (d / f.name).write_text(f.read_text())
    (d / "generated.yaml").write_text("\n".join(lines) + "\n")
    return d


def load_and_compile(directory: Path, queries: list) -> dict[str, float]:
    """Seconds: load + check, compile (conditions and durable_rules rulesets as data), register in
    durable_rules, build the Python evaluator, first decision of every asset (plans and classes)."""
    from rules.engine.evaluators.durable import ensure_registered

    t0 = time.perf_counter()
    bundle = load_bundle(directory)
    t1 = time.perf_counter()
    compiled = compile_bundle(bundle)
    shards = compiled.durable_shards()
    t2 = time.perf_counter()
    ensure_registered(compiled)
    t3 = time.perf_counter()
    PythonEvaluator(compiled)
    t4 = time.perf_counter()
    engine = Engine.for_bundle(bundle, "durable_rules")
    firsts = {q.asset: q for q in queries if q.asset in bundle.assets}
    decisions = [engine.decide(q) for q in firsts.values()]
    t5 = time.perf_counter()
    for d in decisions:  # every rule of the bundle in every trace
        assert {r["rule"] for r in d.to_json()["reasons"]} >= set(bundle.rule_ids())
    return {"rules": len(bundle.rule_ids()), "shards": len(shards), "load": t1 - t0, "compile": t2 - t1,
            "register": t3 - t2, "python": t4 - t3, "first": t5 - t4, "bundle": bundle}


def memory_run(bundle, queries: list, total: int, log: Path, engine: str) -> tuple[list[float], float, float]:
    """Decide ``total`` queries (the book over and over) with the log on; RSS ten times on the way."""
    dacp = Dacp(Settings(policies=POLICIES, log=log, engine=engine), bundle=bundle, require_approval=False)
    step = max(total // 10, 1)
    marks, done = [], 0
    t0 = time.perf_counter()
    while done < total:
        part = queries[: min(len(queries), total - done)]
        for chunk in dacp.evaluate_stream(part, CHUNK):
            before = done
            done += len(chunk)
            if done // step > before // step:
                marks.append(rss_mib())
        del part
    dt = time.perf_counter() - t0
    entries = dacp.log.count()
    dacp.log.close()
    return marks, total / dt, entries


def memory_child(n: int, total: int, log: str, cpus: list[int], raw_n: int) -> dict[str, Any]:
    """The memory runs in a process of their own, so that the baseline is the engine's, not the
    benchmark's: the engine over ``total`` decisions, then - beside it - raw durable_rules over ``raw_n``
    assert/retract pairs and the plain-Python criteria over ``total`` evaluations of the same facts."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(cpus))
    bundle = load_bundle(POLICIES)
    queries = [parse_query(d) for d in book(n, seed=2026)]
    marks, rate, entries = memory_run(bundle, queries, total, Path(log), "durable_rules")
    Path(log).unlink(missing_ok=True)
    out: dict[str, Any] = {"marks": marks, "rate": rate, "entries": entries, "peak": peak_mib()}
    compiled = compile_bundle(bundle)
    facts = [normalize(bundle, bundle.assets[q.asset], q) for q in queries if q.asset in bundle.assets]
    del queries
    gc.collect()
    raw_facts = [facts[i % len(facts)] for i in range(raw_n)]
    before = rss_mib()
    raw_durable(compiled, raw_facts[: raw_n // 10])
    first = rss_mib()
    raw_durable(compiled, raw_facts)
    out["raw_durable"] = (before, first, rss_mib())
    before = rss_mib()
    plain_python(compiled, facts * max(1, total // len(facts)))
    out["plain_python"] = (before, rss_mib())
    return out


# -- main ------------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes: prove the script runs (CI)")
    ap.add_argument("-n", type=int, default=50_000, help="queries in the book (default 50,000)")
    ap.add_argument("--memory", type=int, default=1_000_000, help="decisions in the memory run (default 10^6)")
    ap.add_argument("--rules", type=int, default=1000, help="rules added to the generated bundle (default 1,000)")
    ap.add_argument("--cpu", type=int, help="the CPU to pin to (default the last one)")
    ap.add_argument("--json", type=Path, help="also write the figures to this file as JSON")
    args = ap.parse_args()
    n = 1_500 if args.quick else args.n
    n_durable = 300 if args.quick else 5_000  # the slow paths run on a prefix of the same book
    singles = 300 if args.quick else 5_000
    memory = 20_000 if args.quick else args.memory
    n_rules = 100 if args.quick else args.rules
    repeat = 1 if args.quick else 3

    where = pin(args.cpu)
    print(f"dacp decision benchmark - {platform.machine()} ({os.cpu_count()} cores), Python {platform.python_version()}, "
          f"{platform.system()} {platform.release()}; one process {where}")
    out: dict[str, Any] = {"machine": platform.machine(), "python": platform.python_version(), "cpu": where}
    table = Table()
    tmp = Path(tempfile.mkdtemp(prefix="dacp-bench-"))
    try:
        # Load and compile first, in a process that holds little else (as a starting service does).
        firsts = [parse_query(d) for d in book(200, seed=1)]
        shipped = load_and_compile(POLICIES, firsts)
        gen = load_and_compile(generated_bundle(tmp, n_rules), firsts)
        gen.pop("bundle")
        bundle = shipped.pop("bundle")
        docs = book(n, seed=2026)
        lines = [json.dumps(d) for d in docs]
        text = "\n".join(lines)  # what dacp evaluate --batch reads
        queries = [parse_query(d) for d in docs]
        fresh = [parse_query(d) for d in book(singles, seed=77)]  # never seen by the engines below
        compiled = compile_bundle(bundle)
        known = [q for q in queries if q.asset in bundle.assets]
        facts = [normalize(bundle, bundle.assets[q.asset], q) for q in known]
        print(f"book: {n:,} queries, {len({d['account'] for d in docs}):,} accounts, "
              f"{len({d['asset'] for d in docs})} assets; chunks of {CHUNK} per log transaction")

        print("\nbatch (decisions per second, best of %d)" % repeat)
        rates: dict[str, float] = {}
        results: dict[str, list] = {}
        for evaluator in ("durable_rules", "python"):
            dacp = Dacp(Settings(policies=POLICIES, log=tmp / f"{evaluator}.sqlite", engine=evaluator), bundle=bundle, require_approval=False)
            stream(dacp, queries[:CHUNK])  # compile, register, first plans: outside the timing
            rates[f"log_{evaluator}"] = best_rate(n, lambda: stream(dacp, queries), repeat)
            table.add(f"engine {evaluator}, full trace + decision log", f"{rates[f'log_{evaluator}']:,.0f} /s",
                      f"({dacp.engine.stats['evaluations']:,} evaluations for {dacp.engine.stats['decisions']:,} "
                      "decisions: criteria reused per fact class)")
            tm = dacp.log.timings
            us = {k: tm[k] / tm["entries"] * 1e6 for k in ("encode", "lock", "tree", "commit")}
            us["decide"] = 1e6 / rates[f"log_{evaluator}"] - sum(us.values())
            out.setdefault("per_decision_us", {})[evaluator] = us
            table.add("    per logged decision: decide + trace / log steps", f"{us['decide']:.1f} us",
                      f"encode {us['encode']:.1f}, tree (hash, compress, insert) {us['tree']:.1f}, "
                      f"commit {us['commit']:.1f} us (leaves of {tm['bytes'] / tm['entries']:,.0f} bytes)")
            quiet = Dacp(Settings(policies=POLICIES, log=tmp / "unused.sqlite", engine=evaluator), bundle=bundle, require_approval=False,
                         log_enabled=False)
            stream(quiet, queries[:CHUNK])
            rates[f"nolog_{evaluator}"] = best_rate(n, lambda: stream(quiet, queries), repeat)
            table.add(f"engine {evaluator}, full trace, no log", f"{rates[f'nolog_{evaluator}']:,.0f} /s")
            digests, eligible = [], 0
            for c in quiet.evaluate_stream(queries, CHUNK):
                for d in c:
                    public = d.to_json()
                    eligible += public["eligible"]
                    digests.append(hashlib.sha256(orjson.dumps(comparable(public))).digest())
            results[evaluator] = digests
        slow = Dacp(Settings(policies=POLICIES, log=tmp / "noreuse.sqlite", engine="durable_rules"), bundle=bundle, require_approval=False)
        slow.engine.reuse_facts = False
        rates["log_durable_noreuse"] = best_rate(n_durable, lambda: stream(slow, queries[:n_durable]), 1)
        table.add("engine durable_rules, every decision through it, + log", f"{rates['log_durable_noreuse']:,.0f} /s",
                  f"(first {n_durable:,} queries)")
        dacp = Dacp(Settings(policies=POLICIES, log=tmp / "cli.sqlite", engine="durable_rules"), bundle=bundle, require_approval=False)
        jsonl_end_to_end(dacp, "\n".join(lines[:CHUNK]))
        rates["jsonl"] = best_rate(n, lambda: jsonl_end_to_end(dacp, text), repeat)
        table.add("JSON Lines in, parse + decide + log + JSON out (CLI path)", f"{rates['jsonl']:,.0f} /s")
        floor_log = DecisionLog(tmp / "floor.sqlite")
        log_floor(floor_log, bundle, queries[:CHUNK])
        rates["log_alone"] = best_rate(n, lambda: log_floor(floor_log, bundle, queries), repeat)
        ftm = floor_log.timings
        floor_log.close()
        table.add("decision log alone: each query's JSON + a verdict, no engine", f"{rates['log_alone']:,.0f} /s",
                  f"({1e6 / rates['log_alone']:.1f} us an entry of {ftm['bytes'] / ftm['entries']:,.0f} bytes: the "
                  "least any engine pays here to log its inputs)")
        raw_rate, raw_lat = raw_durable(compiled, facts[:n_durable])
        py_rate, py_lat = plain_python(compiled, facts)
        rates["raw_durable"], rates["plain_python"] = raw_rate, py_rate
        table.add("raw durable_rules assert_fact + retract_fact, same facts", f"{raw_rate:,.0f} /s",
                  f"engine with trace + log = {rates['log_durable_rules'] / raw_rate:.1f}x raw durable_rules")
        table.add("plain-Python evaluation of the same criteria alone", f"{py_rate:,.0f} /s",
                  f"engine with trace + log = {rates['log_durable_rules'] / py_rate:.2f}x plain Python")
        same = results["durable_rules"] == results["python"]
        table.add("decisions identical across evaluators", "yes" if same else "NO",
                  f"({eligible:,} eligible of {n:,}; every field and trace entry)")
        out["batch"] = rates

        print("\nsingle query, in-process (%s fresh queries, one at a time)" % f"{singles:,}")
        lat_out: dict[str, Any] = {}
        for evaluator in ("durable_rules", "python"):
            engine = Engine.for_bundle(bundle, evaluator)
            engine.decide(queries[0])
            samples = []
            for q in fresh:
                t0 = time.perf_counter()
                engine.decide(q)
                samples.append(time.perf_counter() - t0)
            p50, p99, worst = percentiles(samples)
            lat_out[evaluator] = (p50, p99, worst)
            table.add(f"engine {evaluator}, decide", f"p50 {p50:.3f} ms", f"p99 {p99:.3f} ms, max {worst:.2f} ms "
                      f"(a new fact class goes through {evaluator})")
        dacp = Dacp(Settings(policies=POLICIES, log=tmp / "single.sqlite", engine="durable_rules"), bundle=bundle, require_approval=False)
        dacp.evaluate([queries[0]])
        samples = []
        for q in fresh[:min(len(fresh), 2000)]:
            t0 = time.perf_counter()
            dacp.evaluate([q])
            samples.append(time.perf_counter() - t0)
        p50, p99, worst = percentiles(samples)
        lat_out["durable_rules_logged"] = (p50, p99, worst)
        table.add("engine durable_rules, decide + its own log commit", f"p50 {p50:.3f} ms", f"p99 {p99:.3f} ms")
        engine_p50 = lat_out["durable_rules"][0]
        p50, p99, _ = percentiles(raw_lat)
        table.add("raw durable_rules assert_fact + retract_fact", f"p50 {p50:.3f} ms",
                  f"p99 {p99:.3f} ms (engine p50 = {engine_p50 / p50:.2f}x this)")
        p50, p99, _ = percentiles(py_lat)
        table.add("plain-Python evaluation of the criteria", f"p50 {p50:.3f} ms",
                  f"p99 {p99:.3f} ms (engine p50 = {engine_p50 / p50:.1f}x this)")
        out["latency_ms"] = lat_out

        print("\npolicy load + compile (seconds; measured first, before the book was made)")
        for label, r in ((f"shipped bundle ({shipped['rules']} rules)", shipped),
                         (f"generated bundle ({gen['rules']:,} rules, {gen['shards']} durable_rules shards)", gen)):
            table.add(label + ": load + check", f"{r['load']:.3f} s")
            table.add("    compile to conditions and durable_rules rulesets", f"{r['compile']:.3f} s",
                      f"register in durable_rules {r['register']:.3f} s; Python evaluator {r['python']:.3f} s "
                      f"(register / Python = {r['register'] / max(r['python'], 1e-9):.0f}x)")
            table.add("    first decision of each asset (plans, fact classes)", f"{r['first']:.3f} s")
        out["compile"] = {"shipped": shipped, "generated": gen}

        print(f"\nmemory over {memory:,} decisions (durable_rules, log on, the book over and over; a fresh process)")
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(1) as pool:
            mem = pool.apply(memory_child, (n, memory, str(tmp / "memory.sqlite"), sorted(os.sched_getaffinity(0)),
                                            n_durable * 4))
        marks, mem_rate, entries, peak = mem["marks"], mem["rate"], mem["entries"], mem["peak"]
        growth = marks[-1] - marks[0]
        table.add("resident set, MiB, at each tenth", " ".join(f"{m:.0f}" for m in marks),
                  f"growth after the first tenth {growth:+.1f} MiB; {mem_rate:,.0f} decisions/s; {entries:,} log entries")
        table.add("peak resident set of that process", f"{peak:,.0f} MiB")
        b, f, e = mem["raw_durable"]
        table.add(f"raw durable_rules, {n_durable * 4:,} assert + retract, same process", f"{e - b:+.1f} MiB",
                  f"(+{f - b:.1f} MiB over the first tenth, {e - f:+.1f} MiB after it)")
        b, e = mem["plain_python"]
        table.add(f"plain-Python criteria, {memory:,} evaluations", f"{e - b:+.1f} MiB")
        out["memory"] = {"marks_mib": marks, "growth_mib": growth, "rate": mem_rate, "peak_mib": peak,
                         "raw_durable_mib": mem["raw_durable"], "plain_python_mib": mem["plain_python"]}

        print("\ntargets (issue 6, one core)")
        best = max(rates["log_durable_rules"], rates["log_python"])
        table.add(f"batch with trace and log >= {TARGETS['batch']:,}/s", f"{best:,.0f} /s",
                  "met" if best >= TARGETS["batch"] else f"NOT met ({best / TARGETS['batch']:.0%} of it)")
        budget = 1e6 / TARGETS["batch"] - 1e6 / rates["log_alone"]
        decide_us = 1e6 / max(rates["nolog_durable_rules"], rates["nolog_python"])
        table.add(f"    {1e6 / TARGETS['batch']:.0f} us a decision, less the log alone", f"{budget:.1f} us left",
                  f"to decide with the full trace and encode the entry; the engine takes {decide_us:.1f} us "
                  "without the log")
        p99 = max(lat_out["durable_rules"][1], lat_out["python"][1])
        table.add(f"single query p99 <= {TARGETS['p99_ms']} ms", f"{p99:.3f} ms",
                  "met" if p99 <= TARGETS["p99_ms"] else "NOT met")
        compile_s = gen["compile"] + gen["register"] + gen["python"]
        table.add(f"compile of {gen['rules']:,} rules <= {TARGETS['compile_s']} s", f"{compile_s:.3f} s",
                  "met" if compile_s <= TARGETS["compile_s"] else "NOT met")
        table.add("memory flat over the run", f"{growth:+.1f} MiB", "flat" if abs(growth) < 32 else "GROWING")
        if args.json:
            args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
        return 0 if same else 1
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
