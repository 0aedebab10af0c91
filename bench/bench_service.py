"""Load test of `dacp serve`: open-loop POST /v1/eligibility at fixed request rates, on loopback only.

Starts `dacp serve` on 127.0.0.1 and a free port (a copy of the shipped policies, a fresh decision log in a
temporary directory, one clearing token), sends requests on a fixed schedule (open loop: a slow answer
does not delay the next request; latency is measured from the scheduled send time, so queueing counts),
prints throughput and p50/p99 per rate; then posts batches of a realistic book (``tests/support/workload.py``)
to POST /v1/eligibility/batch and prints decisions per second end to end (parse, decide, log, respond);
then stops the server. Bounded in count and time.

    .venv/bin/python bench/bench_service.py            # 50, 100, 200 req/s for 5 s each
    .venv/bin/python bench/bench_service.py --quick    # 50, 100 req/s for 1 s each, one small batch (CI smoke)
    .venv/bin/python bench/bench_service.py --clients 32 --rates 1000,1500,0 --batch 0   # concurrent clients

``--clients N``: N keep-alive connections (a minimal HTTP/1.1 client on raw asyncio streams, so that the
load generator is not the bottleneck on the server's machine) share the target rate: request k of the run is
scheduled at k/rate and sent by connection k mod N as soon as it is free and its time has come; latency is
from the scheduled time (a late connection's queueing counts). Rate 0: as fast as the N connections go
(closed loop), the capacity. Prints achieved req/s, p50, p99, max; bounded like the open-loop mode.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from rules.http.auth import hash_token  # noqa: E402
from tests.support.workload import book  # noqa: E402

TOKEN = "bench-clearing-" + "b" * 40
MAX_SECONDS_PER_RATE = 30
MAX_REQUESTS = 20_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def export_tree(rev: str, dest: Path) -> Path:
    """The source tree of git revision ``rev`` (``git archive``), to run a server of that version beside this one."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "rules", "adapters", "policies"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def start_server(tmp: Path, engine: str, source: Path | None = None) -> tuple[subprocess.Popen, str]:
    """``dacp serve`` in ``tmp`` (of this tree, or of ``source`` when given)."""
    tmp.mkdir(parents=True, exist_ok=True)
    shutil.copytree((source or ROOT) / "policies", tmp / "policies", ignore=shutil.ignore_patterns("tests"))
    (tmp / "dacp.toml").write_text(
        f'policies = "{tmp / "policies"}"\nlog = "{tmp / "log.sqlite"}"\nengine = "{engine}"\n'
        f'[approvals]\nrequired = false\n'
        f'[service]\ntokens = [{{name = "bench", role = "clearing", sha256 = "{hash_token(TOKEN)}"}}]\n')
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DACP_")}
    env["DACP_CONFIG"] = str(tmp / "dacp.toml")
    if source is not None:
        env["PYTHONPATH"] = str(source)
    proc = subprocess.Popen([sys.executable, "-m", "rules.cli.run", "serve", "--host", "127.0.0.1", "--port", str(port)],
                            cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=open(tmp / "server.log", "wb"))
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(base + "/v1/ready", timeout=1).status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"server did not start:\n{(tmp / 'server.log').read_text()[-2000:]}")


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(p / 100 * len(xs)) - 1))] if xs else float("nan")


async def run_rate(base: str, rate: int, seconds: float, body: bytes) -> dict:
    n = min(int(rate * seconds), MAX_REQUESTS)
    lat: list[float] = []
    errors: dict[str, int] = {}
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10, limits=limits) as client:
        await client.post("/v1/eligibility", content=body)  # warm the connection and the engine
        t0 = time.perf_counter()

        async def one(i: int) -> None:
            scheduled = t0 + i / rate
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            try:
                r = await client.post("/v1/eligibility", content=body)
                if r.status_code != 200:
                    errors[str(r.status_code)] = errors.get(str(r.status_code), 0) + 1
                    return
            except httpx.HTTPError as e:
                errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
                return
            lat.append(time.perf_counter() - scheduled)

        await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), timeout=seconds + MAX_SECONDS_PER_RATE)
        wall = time.perf_counter() - t0
    return {"rate": rate, "sent": n, "ok": len(lat), "errors": errors, "throughput": len(lat) / wall,
            "p50_ms": pct(lat, 50) * 1000, "p99_ms": pct(lat, 99) * 1000, "max_ms": max(lat, default=0) * 1000}


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """Send one request on a keep-alive connection and read the whole response; its status code."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def run_clients(base: str, clients: int, rate: int, seconds: float, body: bytes) -> dict:
    """N connections share ``rate`` (0: as fast as they go); latency from each request's scheduled time."""
    host, port = base.removeprefix("http://").split(":")
    request = (f"POST /v1/eligibility HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    n = min(int((rate or 2000) * seconds), MAX_REQUESTS)
    lat: list[float] = []
    errors: dict[str, int] = {}
    conns = [await asyncio.open_connection(host, int(port)) for _ in range(clients)]
    for r, w in conns:  # warm every connection (and the engine)
        await _exchange(r, w, request)
    t0 = time.perf_counter()
    stop_at = t0 + seconds

    async def client(c: int) -> None:
        reader, writer = conns[c]
        for k in range(c, n, clients):
            scheduled = t0 + k / rate if rate else time.perf_counter()
            if scheduled > stop_at:
                return
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                status = await _exchange(reader, writer, request)
            except (OSError, asyncio.IncompleteReadError) as e:
                errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
                return
            if status != 200:
                errors[str(status)] = errors.get(str(status), 0) + 1
            else:
                lat.append(time.perf_counter() - scheduled)

    await asyncio.wait_for(asyncio.gather(*(client(c) for c in range(clients))), timeout=seconds + MAX_SECONDS_PER_RATE)
    wall = time.perf_counter() - t0
    for _, w in conns:
        w.close()
    return {"rate": rate, "clients": clients, "sent": len(lat) + sum(errors.values()), "ok": len(lat),
            "errors": errors, "throughput": len(lat) / wall, "p50_ms": pct(lat, 50) * 1000,
            "p99_ms": pct(lat, 99) * 1000, "max_ms": max(lat, default=0) * 1000}


async def run_batches(base: str, batches: list[bytes], size: int) -> dict:
    """POST each batch in turn (closed loop: one at a time) and time them from send to full response."""
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    walls: list[float] = []
    errors: dict[str, int] = {}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=MAX_SECONDS_PER_RATE) as client:
        for body in batches:
            t = time.perf_counter()
            r = await client.post("/v1/eligibility/batch", content=body)
            wall = time.perf_counter() - t  # the whole response is read; checking it is the client's time
            if r.status_code != 200 or len(r.json()["decisions"]) != size:
                errors[str(r.status_code)] = errors.get(str(r.status_code), 0) + 1
                continue
            walls.append(wall)
    best = min(walls, default=float("nan"))
    return {"size": size, "batches": len(batches), "ok": len(walls), "errors": errors,
            "decisions_per_s": size * len(walls) / sum(walls) if walls else 0.0, "best_per_s": size / best,
            "mean_ms": sum(walls) / len(walls) * 1000 if walls else float("nan")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="50,100,200", help="request rates per second, comma-separated")
    ap.add_argument("--seconds", type=float, default=5.0, help="seconds per rate (at most 30)")
    ap.add_argument("--engine", default="durable_rules", choices=("durable_rules", "python", "checked"))
    ap.add_argument("--quick", action="store_true", help="50 and 100 req/s for 1 s each, one small batch")
    ap.add_argument("--batch", type=int, default=1000, help="queries per batch request (default 1,000, the "
                    "service's max_batch; 0: no batch run)")
    ap.add_argument("--clients", type=int, default=0, help="N concurrent keep-alive clients sharing each rate "
                    "(0: the open-loop httpx mode); rate 0 = as fast as they go")
    ap.add_argument("--before", metavar="REV", help="also run a server of git revision REV (e.g. the commit "
                    "before a change) and print its table first, measured the same way in the same run")
    ap.add_argument("--batches", type=int, default=10, help="batch requests to send (default 10)")
    args = ap.parse_args()
    rates = [50, 100] if args.quick else [int(x) for x in args.rates.split(",")]
    seconds = 1.0 if args.quick else min(args.seconds, MAX_SECONDS_PER_RATE)
    if not 0 <= args.clients <= 256:
        ap.error("--clients: 0 to 256")
    body = (ROOT / "examples" / "queries" / "btc-eligible.json").read_bytes()
    tmp = Path(tempfile.mkdtemp(prefix="dacp-bench-"))
    failed = 0
    try:
        if args.before:
            src = export_tree(args.before, tmp / "before-src")
            print(f"== before: {args.before} ==")
            failed |= run_server(args, rates, seconds, body, tmp / "before", src)
            print(f"== after: this tree ==")
        failed |= run_server(args, rates, seconds, body, tmp / "after", None)
        return failed
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_server(args: argparse.Namespace, rates: list[int], seconds: float, body: bytes, tmp: Path,
               source: Path | None) -> int:
    proc, base = start_server(tmp, args.engine, source)
    try:
        mode = f"{args.clients} concurrent clients" if args.clients else "open loop"
        print(f"dacp serve on {base} (engine {args.engine}, decision log on, 1 process); {platform.machine()}, "
              f"Python {platform.python_version()}, {os.cpu_count()} CPUs; {mode}, {seconds:g} s per rate")
        print(f"{'rate/s':>7} {'sent':>6} {'ok':>6} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  errors")
        results = []
        for rate in rates:
            r = asyncio.run(run_clients(base, args.clients, rate, seconds, body) if args.clients
                            else run_rate(base, rate, seconds, body))
            results.append(r)
            print(f"{r['rate']:>7} {r['sent']:>6} {r['ok']:>6} {r['throughput']:>8.1f} {r['p50_ms']:>8.2f} "
                  f"{r['p99_ms']:>8.2f} {r['max_ms']:>8.2f}  {json.dumps(r['errors']) if r['errors'] else '-'}")
        size = min(args.batch, 50) if args.quick else args.batch
        if size > 0:
            count = 1 if args.quick else max(1, min(args.batches, 50))
            docs = book(size * count, seed=2026)
            batches = [json.dumps({"queries": docs[i * size:(i + 1) * size]}).encode() for i in range(count)]
            asyncio.run(run_batches(base, batches[:1], size))  # warm: plans and classes of the book
            b = asyncio.run(run_batches(base, batches, size))
            results.append(b)
            print(f"\nPOST /v1/eligibility/batch: {b['ok']}/{b['batches']} batches of {size:,} book queries, one at a "
                  f"time: {b['decisions_per_s']:,.0f} decisions/s (best batch {b['best_per_s']:,.0f}/s, "
                  f"{b['mean_ms']:.0f} ms a batch){'; errors ' + json.dumps(b['errors']) if b['errors'] else ''}")
        return 1 if any(r["errors"] for r in results) else 0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    sys.exit(main())
