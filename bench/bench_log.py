"""The decision log's costs: appending, bytes on disk, deciding with and without it, verifying, proving.

    .venv/bin/python bench/bench_log.py                 # the full run: 50,000-query book, verify over 10^6 entries
    .venv/bin/python bench/bench_log.py --quick         # seconds: the smoke run (tests/bench/test_bench_smoke.py)
    .venv/bin/python bench/bench_log.py --root ../other # measure another checkout's rules/ (before/after)

One process pinned to one core (``--cpu``, default the last). The book is ``tests/support/workload.py``'s,
decided with ``rules.engine.decide.Engine`` (durable_rules) and made into entries with
``rules.audit.entry_format.log_body``, as ``rules.app.Dacp`` does; on it:

* append: ``DecisionLog.append`` of the book in chunks of 500 (one transaction each, SQLite
  ``synchronous=FULL``), entries/s, and where an entry's time goes (each step timed apart on the same leaves);
* bytes: the database file per decision after a WAL checkpoint, and what it is made of; the same for
  decisions appended one at a time (a single query, an HTTP request, a ledger credit);
* decide with and without the log: ``Dacp.evaluate_stream`` of the same book, log on and off, run in
  alternation (A B B A ...) so that the machine's noise falls on both; the ratio of the best of each;
* verify: ``DecisionLog.verify`` of 10^6 entries - the book's own entries repeated with fresh ids, 2.2 KB
  each, a checkpoint every 100,000 - in a fresh process (peak resident set, VmHWM, beside the same process
  verifying a tenth as many), entries/s;
* prove + check-receipt: p50/p99 of ``DecisionLog.prove`` and ``check_receipt`` over a few hundred ids of
  that log, and a few runs of the commands themselves (``dacp audit prove`` / ``check-receipt``: a process each);
* sha256: hashlib's OpenSSL, the CPU's SHA extensions, a leaf's hash with and without them.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import platform
import random
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 500
GOALS = {"ratio": 0.9, "logged_rate": 50_000, "bytes": 400, "verify_rate": 200_000, "prove_ms": 50.0}


def pin(cpu: int | None) -> str:
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity here)"
    cpus = sorted(os.sched_getaffinity(0))
    cpu = cpus[-1] if cpu is None else cpu
    os.sched_setaffinity(0, {cpu})
    return f"pinned to CPU {cpu} of {os.cpu_count()}"


def status_mib(key: str) -> float:
    """VmRSS / VmHWM of this process (VmHWM: the high-water mark, not carried over an exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def percentiles(samples: list[float]) -> tuple[float, float]:
    s = sorted(samples)
    return s[len(s) // 2] * 1e3, s[min(len(s) - 1, int(len(s) * 0.99))] * 1e3


def row(measure: str, figure: str, note: str = "") -> None:
    print(f"  {measure:<52} {figure:>16}  {note}", flush=True)


# -- the book ---------------------------------------------------------------------------------------
def decided_book(n: int) -> tuple[Any, list, list[list[tuple]], dict[str, float]]:
    """(bundle, queries, records in chunks of 500 as ``Dacp._records`` makes them, and microseconds a
    decision: deciding (a second pass: plans and classes made) and ``log_body``, each timed apart)."""
    from rules.audit.entry_format import log_body
    from rules.collector import gc_paused
    from rules.engine.decide import Engine
    from rules.engine.query import parse_query
    from rules.policy.loader import load_bundle
    from tests.support.workload import book

    bundle = load_bundle(ROOT_POLICIES)
    engine = Engine.for_bundle(bundle, "durable_rules")
    queries = [parse_query(d) for d in book(n, seed=2026)]
    parts = [queries[s:s + CHUNK] for s in range(0, n, CHUNK)]
    for part in parts:
        engine.decide_many(part)  # plans and fact classes, outside the timing
    chunks, us = [], {"decide": 0.0, "log_body": 0.0}
    gc.collect()
    with gc_paused():
        for part in parts:
            t0 = time.perf_counter()
            decisions = engine.decide_many(part)
            t1 = time.perf_counter()
            chunks.append([("decision", d.id, bundle, log_body(q, d)) for q, d in zip(part, decisions)])
            us["decide"] += t1 - t0
            us["log_body"] += time.perf_counter() - t1
    return bundle, queries, chunks, {k: v / n * 1e6 for k, v in us.items()}


def append_all(path: Path, chunks: list[list[tuple]]) -> tuple[Any, float, float]:
    """(the log, entries/s, CPU microseconds an entry) of appending ``chunks`` to a new log."""
    from rules.audit.log import DecisionLog
    from rules.collector import gc_paused

    log = DecisionLog(path)
    n = sum(map(len, chunks))
    gc.collect()
    with gc_paused():
        c0, t0 = time.process_time(), time.perf_counter()
        for records in chunks:
            log.append(records)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    return log, n / dt, cpu / n * 1e6


def empty_log(path: Path, bundle: Any) -> int:
    """The bytes of a log holding nothing but the bundle (a table or index is a 64 KB page at least)."""
    from rules.audit.log import DecisionLog

    with DecisionLog(path) as log:
        log.store_bundle(bundle)
        log.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.stat().st_size


def on_disk(log: Any, empty: int) -> dict[str, float]:
    """Bytes of the database file per entry after a WAL checkpoint (less an empty log's), and what they are."""
    db = log.db
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    n = log.count()
    size = Path(log.path).stat().st_size - empty
    data, hashes, ids, chunks = db.execute("SELECT SUM(length(data)), SUM(length(hashes)), SUM(length(ids)), "
                                           "COUNT(*) FROM tree_chunks").fetchone()
    nodes = db.execute("SELECT COUNT(*) FROM tree_nodes").fetchone()[0]
    return {"file": size / n, "data": data / n, "hashes": hashes / n, "ids": ids / n, "nodes": nodes * 32 / n,
            "chunks": chunks, "rest": (size - data - hashes - ids - nodes * 32) / n}


def steps(chunks: list[list[tuple]]) -> dict[str, float]:
    """Microseconds an entry, each step of ``DecisionLog.append`` timed apart on the book's own entries."""
    from rules.audit import entries as fmt
    from rules.audit import merkle, store

    at = "2026-12-02T07:20:38.758902Z"
    n = sum(map(len, chunks))
    out: dict[str, float] = {}
    clock = time.perf_counter
    t0 = clock()
    leaves = [[fmt.encode_v1(k, e, at, b.hash, fmt.body_bytes(body, e)) for k, e, b, body in c] for c in chunks]
    out["leaf encoding (header + body)"] = clock() - t0
    t0 = clock()  # as TreeStore.append does them: a comprehension, the tree grown a block at a time
    hashes = [[hashlib.sha256(b"\x00" + x).digest() for x in c] for c in leaves]
    out["sha256 leaf hashes"] = clock() - t0
    assert hashes[0][0] == merkle.leaf_hash(leaves[0][0])
    t0 = clock()
    nodes: list[tuple[int, int, bytes]] = []
    grow = store.Growth(0, (), on_node=lambda lv, ix, h: nodes.append((lv, ix, h)))
    for c in hashes:
        grow.extend(c)
    out["tree frontier (interior node hashes)"] = clock() - t0
    t0 = clock()
    for c, recs in zip(leaves, chunks):
        store.pack(c, [r[1] for r in recs])
    out["zstd pack (leaves + ids)"] = clock() - t0
    return {k: v / n * 1e6 for k, v in out.items()}


def singles(path: Path, records: list[tuple], empty: int) -> tuple[dict[str, float], float, float]:
    """Decisions appended one at a time (each its own chunk and commit)."""
    from rules.audit.log import DecisionLog

    log = DecisionLog(path)
    lat = []
    for r in records:
        t0 = time.perf_counter()
        log.append([r])
        lat.append(time.perf_counter() - t0)
    p50, p99 = percentiles(lat)
    sizes = on_disk(log, empty)
    log.close()
    return sizes, p50, p99


def stream(dacp: Any, queries: list) -> int:
    n = 0
    for chunk in dacp.evaluate_stream(queries, CHUNK):
        n += len(chunk)
    return n


def with_and_without(bundle: Any, queries: list, tmp: Path, rounds: int) -> dict[str, Any]:
    """Logged and unlogged decisions/s of the same book, in alternation; best of each and every pair's ratio."""
    from rules.app import Dacp
    from rules.settings import Settings

    # the repository's own bundle, loaded above: its approval (demo keys inside the policy directory) is not
    # what is measured here
    logged = Dacp(Settings(policies=ROOT_POLICIES, log=tmp / "ratio.sqlite"), bundle=bundle, require_approval=False)
    quiet = Dacp(Settings(policies=ROOT_POLICIES, log=tmp / "unused.sqlite"), bundle=bundle, log_enabled=False,
                 require_approval=False)
    for d in (logged, quiet):
        stream(d, queries[:CHUNK])  # plans, classes, first pages: outside the timing
    rates: dict[str, list[float]] = {"log": [], "nolog": []}
    order = [("log", logged), ("nolog", quiet)]
    for r in range(rounds):
        for name, d in order if r % 2 == 0 else order[::-1]:
            gc.collect()
            t0 = time.perf_counter()
            stream(d, queries)
            rates[name].append(len(queries) / (time.perf_counter() - t0))
    tm = logged.log.timings
    return {"log": max(rates["log"]), "nolog": max(rates["nolog"]),
            "pairs": [a / b for a, b in zip(rates["log"], rates["nolog"])],
            "timings_us": {k: tm[k] / tm["entries"] * 1e6 for k in ("encode", "lock", "tree", "commit")}}


# -- verify, prove -----------------------------------------------------------------------------------
def build_log(path: Path, bundle: Any, bodies: list[bytes], total: int, signer: Any, every: int) -> list[str]:
    """A log of ``total`` decision entries: the book's bodies over and over, fresh ids, chunks of 500, a
    checkpoint every ``every`` entries and at the end. Returns the ids."""
    from rules.audit import entries as fmt
    from rules.audit.log import DecisionLog
    from rules.engine.ids import new_ids
    from rules.values import now_utc, utc_text

    log = DecisionLog(path)
    out: list[str] = []
    for start in range(0, total, CHUNK):
        k = min(CHUNK, total - start)
        ids = new_ids(k)
        at = utc_text(now_utc(), "microseconds")
        log.append_leaves([fmt.encode_v1("decision", ids[i], at, bundle.hash, bodies[(start + i) % len(bodies)])
                           for i in range(k)], ids, at, [bundle])
        out += ids
        if (start + k) % every == 0 and start + k < total:
            log.checkpoint(signer)
    log.checkpoint(signer)
    log.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    log.close()
    return out


def verify_child(path: str, key: str) -> None:
    """In a fresh process: open the log, verify it, report the time and the resident set."""
    from rules.audit.checkpoint import Verifier
    from rules.audit.log import DecisionLog

    log = DecisionLog(path)
    before = status_mib("VmRSS")
    c0, t0 = time.process_time(), time.perf_counter()
    res = log.verify(None, [Verifier.parse(key)])
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({"ok": res.ok, "problem": res.problem, "entries": res.entries, "seconds": dt, "cpu": cpu,
                      "rss_before": before, "hwm": status_mib("VmHWM"), "rss_after": status_mib("VmRSS")}))


def verify_in_child(root: Path, path: Path, key: str, cpu: set[int]) -> dict[str, Any]:
    code = ("import os, sys; sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[2]); "
            "os.sched_setaffinity(0, {int(c) for c in sys.argv[5].split(',')}); "
            "import bench_log; bench_log.verify_child(sys.argv[3], sys.argv[4])")
    run = subprocess.run([sys.executable, "-c", code, str(root), str(Path(__file__).parent), str(path), key,
                          ",".join(map(str, sorted(cpu)))], capture_output=True, text=True, timeout=3600)
    if run.returncode != 0:
        raise SystemExit(f"verify child failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def prove_and_check(path: Path, ids: list[str], verifier: Any, n: int) -> dict[str, tuple[float, float]]:
    from rules.audit.log import DecisionLog
    from rules.audit.receipt import check_receipt

    picks = random.Random(9162).sample(ids, min(n, len(ids)))
    log = DecisionLog(path)
    log.prove(picks[0])  # first pages read: outside the timing
    prove, check, cold = [], [], []
    for i, entry_id in enumerate(picks):
        t0 = time.perf_counter()
        text = log.prove(entry_id).to_json()
        t1 = time.perf_counter()
        check_receipt(text, [verifier])
        t2 = time.perf_counter()
        prove.append(t1 - t0)
        check.append(t2 - t1)
        if i < 50:  # as the command does: open the log, then prove
            t0 = time.perf_counter()
            with DecisionLog(path) as fresh:
                fresh.prove(entry_id)
            cold.append(time.perf_counter() - t0)
    log.close()
    return {"prove": percentiles(prove), "check": percentiles(check), "open_prove": percentiles(cold)}


def commands(root: Path, path: Path, ids: list[str], key: str, tmp: Path, runs: int) -> dict[str, tuple[float, float]]:
    """``dacp audit prove`` and ``dacp audit check-receipt``, a process each (start-up included)."""
    dacp = [sys.executable, "-m", "rules.cli.run"]
    env = dict(os.environ, PYTHONPATH=str(root))
    out: dict[str, list[float]] = {"prove": [], "check": [], "imports": []}
    for i, entry_id in enumerate(random.Random(6962).sample(ids, runs)):
        receipt = tmp / f"receipt-{i}.json"
        for what, cmd in (("prove", [*dacp, "audit", "prove", entry_id, "--log", str(path), "--out", str(receipt)]),
                          ("check", [*dacp, "audit", "check-receipt", str(receipt), "--key", key])):
            t0 = time.perf_counter()
            run = subprocess.run(cmd, capture_output=True, text=True, cwd=root, env=env, timeout=120)
            out[what].append(time.perf_counter() - t0)
            if run.returncode != 0:
                raise SystemExit(f"{' '.join(cmd)} failed:\n{run.stdout}{run.stderr}")
        t0 = time.perf_counter()  # what the commands cost before they do anything: the interpreter and imports
        subprocess.run([sys.executable, "-c", "import rules.cli.run, rules.cli.audit"], cwd=root, env=env, check=True)
        out["imports"].append(time.perf_counter() - t0)
    return {k: percentiles(v) for k, v in out.items()}


def sha256_backend() -> dict[str, Any]:
    """hashlib's OpenSSL, whether the CPU has SHA extensions, a 2.2 KB leaf's hash with them and (OpenSSL
    told not to use them, OPENSSL_ia32cap) without."""
    code = ("import hashlib, timeit; b = bytes(2233); "
            "print(min(timeit.repeat(lambda: hashlib.sha256(b).digest(), number=20000, repeat=5)) / 20000 * 1e6)")
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").exists() else []
    out: dict[str, Any] = {"openssl": ssl.OPENSSL_VERSION, "sha_ni": "sha_ni" in flags,
                           "backend": type(hashlib.sha256()).__module__ + "." + hashlib.sha256.__name__}
    for label, env in (("us", {}), ("us_without", {"OPENSSL_ia32cap": ":~0x20000000"})):
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=dict(os.environ, **env), timeout=120)
        out[label] = float(run.stdout.strip()) if run.returncode == 0 else float("nan")
    return out


# -- before / after, side by side ---------------------------------------------------------------------
def ab_child(n: int, total: int) -> None:
    """One side of ``--against``, in a process of its own (its checkout on sys.path): the log's measures,
    wall-clock and CPU time (``process_time``: what this process itself spent, whatever else the machine ran)."""
    from rules.audit.checkpoint import Signer
    from rules.audit.log import DecisionLog

    bundle, _, chunks, _ = decided_book(n)
    records = [r for c in chunks for r in c]
    tmp = Path(tempfile.mkdtemp(prefix="dacp-bench-ab-"))
    out: dict[str, float] = {}
    try:
        wall, cpu = [], []
        for i in range(3):
            log, rate, us = append_all(tmp / f"a{i}.sqlite", chunks)
            cpu.append(us)
            wall.append(1e6 / rate)
            log.close()
        out["append us (wall)"], out["append us (CPU)"] = min(wall), min(cpu)
        empty = empty_log(tmp / "empty.sqlite", bundle)
        with DecisionLog(tmp / "a0.sqlite") as log:
            out["bytes a decision, chunks of 500"] = on_disk(log, empty)["file"]
        c0 = time.process_time()
        one, p50, _ = singles(tmp / "one.sqlite", records[:500], empty)
        out["single append ms (CPU)"] = (time.process_time() - c0) / 500 * 1e3
        out["single append ms p50 (wall)"] = p50
        out["bytes a decision, one an append"] = one["file"]
        signer = Signer.generate("bench-operator")
        ids = build_log(tmp / "v.sqlite", bundle, [bytes(r[3]) for r in records], total, signer, 100_000)
        with DecisionLog(tmp / "v.sqlite") as log:
            c0, t0 = time.process_time(), time.perf_counter()
            assert log.verify(None, [signer.verifier()]).ok
            out["verify us an entry (wall)"] = (time.perf_counter() - t0) / total * 1e6
            out["verify us an entry (CPU)"] = (time.process_time() - c0) / total * 1e6
            picks = random.Random(9162).sample(ids, 100)
            lat = []
            for entry_id in picks:
                t0 = time.perf_counter()
                log.prove(entry_id).to_json()
                lat.append(time.perf_counter() - t0)
            out["prove ms p50"], out["prove ms p99"] = percentiles(lat)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out))


def against(before: Path, after: Path, n: int, total: int, rounds: int, cpu: str) -> None:
    """The log's measures of two checkouts in alternation (B A A B ...), best of each side."""
    runs: dict[Path, list[dict[str, float]]] = {before: [], after: []}
    for r in range(rounds):
        for root in (before, after) if r % 2 == 0 else (after, before):
            run = subprocess.run([sys.executable, __file__, "--ab-child", "--root", str(root), "-n", str(n),
                                  "--verify", str(total), "--cpu", cpu], capture_output=True, text=True, timeout=3600)
            if run.returncode != 0:
                raise SystemExit(f"{root}: {run.stderr[-3000:]}")
            runs[root].append(json.loads(run.stdout.strip().splitlines()[-1]))
            print(f"  round {r + 1}: {root} done", flush=True)
    print(f"\n  {'best of ' + str(rounds) + ' runs each':<40} {'before':>12} {'after':>12}  after/before")
    for key in runs[before][0]:
        b, a = (min(x[key] for x in runs[side]) for side in (before, after))
        print(f"  {key:<40} {b:>12,.2f} {a:>12,.2f}  {a / b:.2f}x")


# -- the zstandard dictionary ------------------------------------------------------------------------
def train_dictionary(out: Path, size: int = 16 * 1024) -> None:
    """Train the dictionary small chunks are compressed with (``rules.audit.store``) on decision entries
    that are NOT the benchmark's: other seeds, other days, prices moved; every entry's bundle hash, time,
    id and custody addresses random, so that it learns the entries' shape - keys, rule ids, trace, the
    policy's words - and nothing a real log would not repeat."""
    import zstandard

    from rules.audit import entries as fmt
    from rules.audit.entry_format import log_body
    from rules.engine.decide import Engine
    from rules.engine.query import parse_query
    from rules.policy.loader import load_bundle
    from tests.support import workload

    bundle = load_bundle(ROOT_POLICIES)
    engine = Engine.for_bundle(bundle, "durable_rules")
    rnd = random.Random(14)
    fixed = workload.BTC_ADDRESSES + workload.EVM_ADDRESSES

    def scrub(text: str) -> str:
        for a in fixed:
            alphabet = "0123456789abcdef" if a.startswith("0x") else "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
            text = text.replace(a, a[:4] + "".join(rnd.choice(alphabet) for _ in a[4:]))
        return text

    samples = []
    for seed, day, move in ((1, workload.AS_OF, 0.0), (2, workload.AS_OF.replace(month=6, day=15), 0.04),
                            (3, workload.AS_OF.replace(year=2027, month=2, day=10), -0.07)):
        queries = [parse_query(json.loads(scrub(json.dumps(d)))) for d in workload.book(4000, seed=seed, as_of=day,
                                                                                         move=move)]
        for q, d in zip(queries, engine.decide_many(queries)):
            at = f"20{rnd.randint(26, 35)}-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}T{rnd.randint(0, 23):02d}:" \
                 f"{rnd.randint(0, 59):02d}:{rnd.randint(0, 59):02d}.{rnd.randint(0, 999999):06d}Z"
            samples.append(fmt.encode_v1("decision", str(uuid.UUID(int=rnd.getrandbits(128))), at, rnd.randbytes(32).hex(),
                                         fmt.body_bytes(log_body(q, d), d.id)))
    rnd.shuffle(samples)
    data = zstandard.train_dictionary(size, samples, level=3).as_bytes()
    out.write_bytes(data)
    print(f"{out}: {len(data):,} bytes trained on {len(samples):,} decision entries; sha256 "
          f"{hashlib.sha256(data).hexdigest()}")


# -- main ------------------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: prove the script runs (CI)")
    ap.add_argument("-n", type=int, default=50_000, help="queries in the book (default 50,000)")
    ap.add_argument("--verify", type=int, default=1_000_000, help="entries in the verified log (default 10^6)")
    ap.add_argument("--proofs", type=int, default=300, help="ids proved and checked (default 300)")
    ap.add_argument("--rounds", type=int, default=4, help="runs of each side of the with/without-log ratio")
    ap.add_argument("--cpu", type=int, help="the CPU to pin to (default the last one)")
    ap.add_argument("--root", type=Path, default=ROOT, help="the checkout whose rules/ is measured (default this)")
    ap.add_argument("--json", type=Path, help="also write the figures to this file as JSON")
    ap.add_argument("--train-dictionary", type=Path, metavar="FILE",
                    help="train the zstandard dictionary of small chunks into FILE, and do nothing else")
    ap.add_argument("--against", type=Path, metavar="BEFORE",
                    help="compare with another checkout: the log's measures of both, in alternation (no full run)")
    ap.add_argument("--ab-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.n, args.verify, args.proofs, args.rounds = 2_000, 20_000, 60, 2
    root = args.root.resolve()
    sys.path.insert(0, str(root))
    global ROOT_POLICIES
    ROOT_POLICIES = root / "policies"
    if args.train_dictionary:
        train_dictionary(args.train_dictionary)
        return 0
    where = pin(args.cpu)
    if args.ab_child:
        ab_child(args.n, args.verify)
        return 0
    if args.against:
        total = args.verify
        print(f"before {args.against.resolve()}, after {root}: book of {args.n:,}, verify and prove over "
              f"{total:,} entries; {where}")
        against(args.against.resolve(), root, args.n, total, 1 if args.quick else args.rounds,
                str(min(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else "0")
        return 0
    cpu = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    print(f"dacp decision-log benchmark - {root}; {platform.machine()} ({os.cpu_count()} cores), Python "
          f"{platform.python_version()}, {platform.system()} {platform.release()}; one process {where}")
    out: dict[str, Any] = {"root": str(root), "cpu": where}
    tmp = Path(tempfile.mkdtemp(prefix="dacp-bench-log-"))
    try:
        from rules.audit.checkpoint import Signer

        bundle, queries, chunks, made = decided_book(args.n)
        records = [r for c in chunks for r in c]
        print(f"book: {args.n:,} decisions (tests/support/workload.py, seed 2026), appended in chunks of {CHUNK}; "
              f"Engine.decide_many {made['decide']:.1f} us a decision, log_body {made['log_body']:.1f} us "
              f"(timed apart, the collector paused)")
        out["made_us"] = made
        empty = empty_log(tmp / "empty.sqlite", bundle)

        print("\nappend (DecisionLog.append, one transaction a chunk, synchronous=FULL; best of 3 fresh logs)")
        best, log = 0.0, None
        for i in range(3):
            candidate, rate, _ = append_all(tmp / f"append-{i}.sqlite", chunks)
            if rate > best:
                best, log = rate, candidate
        tm = log.timings
        per = {k: tm[k] / tm["entries"] * 1e6 for k in ("encode", "lock", "tree", "commit")}
        per["entries returned"] = 1e6 / best - sum(per.values())
        row("entries appended", f"{best:,.0f} /s", f"{1e6 / best:.1f} us an entry of {tm['bytes'] / tm['entries']:,.0f} "
            f"bytes (leaf); log.timings: encode {per['encode']:.1f}, lock {per['lock']:.1f}, tree {per['tree']:.1f}, "
            f"commit {per['commit']:.1f}, the rest (Entry objects returned) {per['entries returned']:.1f} us")
        parts = steps(chunks)
        for k, v in parts.items():
            row(f"    {k}", f"{v:.2f} us")
        rest = per["tree"] - sum(v for k, v in parts.items() if not k.startswith("leaf"))
        row("    SQL insert, unique-id check (tree less the above)", f"{max(rest, 0):.2f} us",
            "by difference (the steps above are timed in a pass of their own)")
        out["append"] = {"rate": best, "timings_us": per, "steps_us": parts, "sql_us": rest}

        print("\nbytes on disk per decision (after a WAL checkpoint)")
        sizes = on_disk(log, empty)
        log.close()
        row("an empty log (the bundle, a 64 KB page a table or index)", f"{empty / 1024:,.0f} KiB",
            "not counted below")
        row(f"chunks of {CHUNK}", f"{sizes['file']:,.0f} B", f"compressed leaves {sizes['data']:.0f}, leaf hashes "
            f"{sizes['hashes']:.0f}, ids {sizes['ids']:.1f}, interior nodes {sizes['nodes']:.2f}, pages/indexes/rows "
            f"{sizes['rest']:.0f}")
        single_n = 200 if args.quick else 2_000
        one, p50, p99 = singles(tmp / "singles.sqlite", records[:single_n], empty)
        row(f"one decision an append ({single_n:,} appends)", f"{one['file']:,.0f} B",
            f"compressed leaf {one['data']:.0f}, ids {one['ids']:.0f}, pages/indexes/rows {one['rest']:.0f}; "
            f"append + commit p50 {p50:.2f} ms, p99 {p99:.2f} ms")
        out["bytes"] = {"chunks": sizes, "single": one, "single_ms": (p50, p99)}

        print(f"\nthe same book decided with and without the log (Dacp.evaluate_stream, {args.rounds} runs each, "
              "in alternation)")
        ratio = with_and_without(bundle, queries, tmp, args.rounds)
        cost = 1e6 / ratio["log"] - 1e6 / ratio["nolog"]
        row("decided + logged", f"{ratio['log']:,.0f} /s", f"{1e6 / ratio['log']:.1f} us a decision")
        row("decided, no log", f"{ratio['nolog']:,.0f} /s", f"{1e6 / ratio['nolog']:.1f} us a decision")
        t = ratio["timings_us"]
        row("ratio logged / unlogged (best of each)", f"{ratio['log'] / ratio['nolog']:.2f}x",
            f"pairs {min(ratio['pairs']):.2f}-{max(ratio['pairs']):.2f}x; the log costs {cost:.1f} us a decision: "
            f"encode {t['encode']:.1f}, lock {t['lock']:.1f}, tree {t['tree']:.1f}, commit {t['commit']:.1f} us, "
            f"the rest {cost - sum(t.values()):.1f} (log_body {made['log_body']:.1f} timed apart, Entry objects, "
            "a larger working set)")
        out["ratio"] = ratio

        print(f"\nverify (DecisionLog.verify, a fresh process; the book's {min(args.n, len(records)):,} entries "
              "repeated with fresh ids, a checkpoint every 100,000)")
        signer = Signer.generate("bench-operator")
        key = signer.verifier().key_text()
        bodies = [bytes(r[3]) if isinstance(r[3], bytes) else json.dumps(r[3]).encode() for r in records]
        runs = {}
        for total in (args.verify // 10, args.verify):
            path = tmp / f"verify-{total}.sqlite"
            t0 = time.perf_counter()
            ids = build_log(path, bundle, bodies, total, signer, 100_000)
            built = time.perf_counter() - t0
            runs[total] = v = verify_in_child(root, path, key, cpu)
            if not v["ok"]:
                raise SystemExit(f"the log did not verify: {v['problem']}")
            row(f"{total:,} entries", f"{v['entries'] / v['seconds']:,.0f} /s",
                f"{v['seconds']:.2f} s ({v['entries'] / v['cpu']:,.0f} a CPU second); resident set {v['rss_before']:.0f} MiB before, peak {v['hwm']:.0f} MiB "
                f"(+{v['hwm'] - v['rss_before']:.1f}); {Path(path).stat().st_size / 2**20:,.0f} MiB on disk, "
                f"built at {total / built:,.0f} /s")
            if total != args.verify:
                path.unlink()
        small, big = runs[args.verify // 10], runs[args.verify]
        row("peak growth, 10x the entries", f"{big['hwm'] - small['hwm']:+.1f} MiB")
        out["verify"] = {str(k): v for k, v in runs.items()}

        print(f"\nprove + check-receipt ({args.proofs} ids of the {args.verify:,}-entry log)")
        lat = prove_and_check(tmp / f"verify-{args.verify}.sqlite", ids, signer.verifier(), args.proofs)
        row("DecisionLog.prove + Receipt.to_json", f"p50 {lat['prove'][0]:.2f} ms", f"p99 {lat['prove'][1]:.2f} ms")
        row("check_receipt", f"p50 {lat['check'][0]:.2f} ms", f"p99 {lat['check'][1]:.2f} ms")
        row("open the log + prove (50 of them)", f"p50 {lat['open_prove'][0]:.2f} ms",
            f"p99 {lat['open_prove'][1]:.2f} ms")
        cli = commands(root, tmp / f"verify-{args.verify}.sqlite", ids, key, tmp, 3 if args.quick else 10)
        row("dacp audit prove (a process)", f"p50 {cli['prove'][0]:.0f} ms", f"p99 {cli['prove'][1]:.0f} ms")
        row("dacp audit check-receipt (a process)", f"p50 {cli['check'][0]:.0f} ms", f"p99 {cli['check'][1]:.0f} ms")
        row("    of which starting Python and importing the CLI", f"p50 {cli['imports'][0]:.0f} ms",
            "(python -c 'import rules.cli.run, rules.cli.audit')")
        out["prove_ms"] = {**lat, "commands": cli}

        print("\nsha256")
        sha = sha256_backend()
        row("hashlib", sha["backend"], f"{sha['openssl']}; CPU SHA extensions (sha_ni): "
            f"{'yes' if sha['sha_ni'] else 'no'}")
        row("sha256 of a 2,233-byte leaf", f"{sha['us']:.2f} us",
            f"{sha['us_without']:.2f} us with OpenSSL told not to use them (OPENSSL_ia32cap)")
        out["sha256"] = sha

        print("\ngoals (issue 14, one core)")
        r = ratio["log"] / ratio["nolog"]
        goals = [("logged / unlogged >= 0.9x", f"{r:.2f}x", r >= GOALS["ratio"]),
                 ("logged decisions >= 50,000/s", f"{ratio['log']:,.0f} /s", ratio["log"] >= GOALS["logged_rate"]),
                 ("<= 400 bytes stored a decision (chunks of 500)", f"{sizes['file']:,.0f} B",
                  sizes["file"] <= GOALS["bytes"]),
                 ("verify >= 200,000 entries/s", f"{big['entries'] / big['seconds']:,.0f} /s",
                  big["entries"] / big["seconds"] >= GOALS["verify_rate"]),
                 ("verify memory flat over 10x the entries", f"{big['hwm'] - small['hwm']:+.1f} MiB",
                  big["hwm"] - small["hwm"] < 16),
                 ("prove <= 50 ms (p99, in-process)", f"{lat['prove'][1]:.2f} ms", lat["prove"][1] <= GOALS["prove_ms"]),
                 ("check-receipt <= 50 ms (p99, in-process)", f"{lat['check'][1]:.2f} ms",
                  lat["check"][1] <= GOALS["prove_ms"]),
                 ("dacp audit prove <= 50 ms (p50, a process)", f"{cli['prove'][0]:.0f} ms",
                  cli["prove"][0] <= GOALS["prove_ms"]),
                 ("dacp audit check-receipt <= 50 ms (p50, a process)", f"{cli['check'][0]:.0f} ms",
                  cli["check"][0] <= GOALS["prove_ms"])]
        for label, figure, met in goals:
            row(label, figure, "met" if met else "NOT met")
        out["goals"] = {label: met for label, _, met in goals}
        if args.json:
            args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


ROOT_POLICIES = ROOT / "policies"

if __name__ == "__main__":
    sys.exit(main())
