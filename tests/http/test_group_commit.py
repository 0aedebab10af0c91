"""Group commit of single eligibility queries (rules/http/service.py ``Service.decide_one``), on a real SQLite
log and, over TCP, a real ``dacp serve`` (uvicorn on 127.0.0.1): requests that arrive together share one
transaction (one chunk of consecutive leaves, in arrival order, recorded at one time), each is answered only
once its entry is committed (another connection reads it), a group never exceeds its bound, a log that
cannot be written fails every request of its group (StorageError, 503) with nothing of it written, and a
group that spans a reload is one transaction per snapshot."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import threading
from pathlib import Path

import httpx
import pytest

from rules.audit.log import DecisionLog
from rules.engine.query import parse_query
from rules.errors import StorageError
from rules.http.auth import Token, hash_token
from rules.http.config import ServiceConfig
from rules.http.service import Service
from rules.settings import Settings
from tests.support import ROOT

BTC = json.loads((ROOT / "examples" / "queries" / "btc-eligible.json").read_text())
TOKEN = "group-clearing-" + "g" * 32


def query(i: int):
    return parse_query({**BTC, "id": f"q-{i}"}, "query")


@pytest.fixture
def settings(tmp_path) -> Settings:
    shutil.copytree(ROOT / "policies", tmp_path / "policies", ignore=shutil.ignore_patterns("tests"))
    return Settings(policies=tmp_path / "policies", log=tmp_path / "log.sqlite",
                    sections={"approvals": {"required": False}})


def make_service(settings: Settings, **kw) -> Service:
    return Service(settings, ServiceConfig(tokens=(Token("c", "clearing", hash_token(TOKEN)),)), **kw)


def logged(path: Path) -> list:
    with DecisionLog(path) as log:
        return list(log.entries())


async def decide_all(svc: Service, items: list, check_durable: Path | None = None) -> list:
    """Every (active, query) at once, as concurrent requests; each outcome (a decision or the exception)."""
    reader = DecisionLog(check_durable) if check_durable else None

    async def one(active, q):
        d = await svc.decide_one(active, q)
        if reader is not None:  # answered: then another connection must already see it committed
            assert reader.get(d.id).entry_id == d.id
        return d

    try:
        return await asyncio.gather(*(one(a, q) for a, q in items), return_exceptions=True)
    finally:
        if reader is not None:
            reader.close()


def test_requests_that_arrive_together_share_one_transaction(settings):
    svc = make_service(settings, group_max=256)
    before = len(logged(settings.log)) if settings.log.exists() else 0
    decisions = asyncio.run(decide_all(svc, [(svc.active, query(i)) for i in range(50)], settings.log))
    assert all(not isinstance(d, BaseException) for d in decisions)
    assert svc.group_sizes == [50]
    entries = logged(settings.log)[before:]
    assert [e.entry_id for e in entries] == [d.id for d in decisions]  # in arrival order, each exactly once
    assert [e.body["query"]["id"] for e in entries] == [f"q-{i}" for i in range(50)]
    assert len({e.recorded_at for e in entries}) == 1  # one append: one chunk, recorded at one time
    assert [e.index for e in entries] == list(range(entries[0].index, entries[0].index + 50))
    with DecisionLog(settings.log) as log:
        assert log.verify().ok


def test_a_group_is_bounded(settings):
    svc = make_service(settings, group_max=8)
    decisions = asyncio.run(decide_all(svc, [(svc.active, query(i)) for i in range(20)]))
    assert all(not isinstance(d, BaseException) for d in decisions)
    assert max(svc.group_sizes) <= 8 and sum(svc.group_sizes) == 20
    assert [e.entry_id for e in logged(settings.log)] == [d.id for d in decisions]


def test_a_failing_append_fails_its_whole_group_and_writes_nothing(settings):
    svc = make_service(settings)
    asyncio.run(decide_all(svc, [(svc.active, query(0))]))  # the log exists, the bundle stored
    count = len(logged(settings.log))
    db = sqlite3.connect(settings.log)  # a real failure inside the group's transaction: the insert is refused
    db.execute("CREATE TRIGGER test_refuse BEFORE INSERT ON tree_chunks BEGIN SELECT RAISE(ABORT, 'refused'); END")
    db.commit()
    outcomes = asyncio.run(decide_all(svc, [(svc.active, query(i)) for i in range(12)]))
    assert all(isinstance(o, StorageError) and o.http_status == 503 for o in outcomes), outcomes
    assert len(logged(settings.log)) == count  # nothing half-written
    db.execute("DROP TRIGGER test_refuse")
    db.commit()
    db.close()
    again = asyncio.run(decide_all(svc, [(svc.active, query(i)) for i in range(5)]))
    assert all(not isinstance(d, BaseException) for d in again)
    assert len(logged(settings.log)) == count + 5
    with DecisionLog(settings.log) as log:
        assert log.verify().ok


def test_a_group_across_a_reload_is_one_transaction_per_snapshot(settings):
    svc = make_service(settings)
    old = svc.active
    new = svc._load()  # another snapshot (what a reload swaps in), same bundle
    items = [(old, query(0)), (old, query(1)), (new, query(2)), (new, query(3)), (old, query(4))]
    decisions = asyncio.run(decide_all(svc, items))
    entries = logged(settings.log)
    assert [e.entry_id for e in entries] == [d.id for d in decisions]  # the group's order
    times = [e.recorded_at for e in entries]
    assert times[0] == times[1] and times[2] == times[3] and len(set(times)) == 3


def test_concurrent_requests_over_tcp_are_grouped_and_all_logged_once(tmp_path):
    from tests.http.test_replicas import serve  # the same real `dacp serve` start-up

    shutil.copytree(ROOT / "policies", tmp_path / "policies", ignore=shutil.ignore_patterns("tests"))
    log = tmp_path / "log.sqlite"
    toml = (f'policies = "{tmp_path / "policies"}"\nlog = "{log}"\n[approvals]\nrequired = false\n'
            f'[service]\ntokens = [{{name = "c", role = "clearing", sha256 = "{hash_token(TOKEN)}"}}]\n')
    ids: list[str] = []
    lock = threading.Lock()
    with serve(tmp_path / "r", toml) as base:
        def client(c: int) -> None:
            with httpx.Client(base_url=base, timeout=30, headers={"Authorization": f"Bearer {TOKEN}"}) as h:
                for k in range(10):
                    r = h.post("/v1/eligibility", json={**BTC, "id": f"c{c}-{k}"})
                    assert r.status_code == 200, r.text
                    with lock:
                        ids.append(r.json()["decision_id"])
        threads = [threading.Thread(target=client, args=(c,)) for c in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    entries = logged(log)
    assert sorted(e.entry_id for e in entries) == sorted(ids) and len(ids) == 160
    assert len({e.recorded_at for e in entries}) < 160  # some requests shared a transaction
    with DecisionLog(log) as dl:
        assert dl.verify().ok
