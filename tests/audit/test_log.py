"""The verifiable log: leaves in order, append-only, bundles, clear errors, concurrent writers, replay."""

from __future__ import annotations

import json
from decimal import Decimal
import multiprocessing as mp
import sqlite3
from pathlib import Path

import pytest

from rules.app import Dacp
from rules.audit import merkle
from rules.audit.log import DecisionLog
from rules.errors import InputError, StorageError
from rules.policy.loader import load_bundle
from rules.engine.query import load_query_text
from rules.settings import Settings
from tests.support import ROOT

POLICIES = ROOT / "policies"


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(POLICIES)


def fill(path: Path, bundle, n: int = 6) -> DecisionLog:
    log = DecisionLog(path)
    log.append([("decision", f"d{i}", bundle, {"n": i}) for i in range(1, n + 1)])
    return log


def raw(path: Path) -> sqlite3.Connection:
    """A connection that goes around the append-only triggers, as an attacker with file access would
    (tests/audit/test_tamper.py holds every other kind of tampering)."""
    db = sqlite3.connect(path, isolation_level=None)
    for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        db.execute(f"DROP TRIGGER {name}")
    return db


def test_an_intact_log_verifies_and_reports_its_root(tmp_path, bundle):
    log = fill(tmp_path / "log.sqlite", bundle)
    res = log.verify()
    assert res.ok and res.entries == 6
    leaf_hashes = [bytes.fromhex(e.leaf_hash) for e in log.entries()]
    assert res.head == merkle.root(leaf_hashes).hex()


def test_each_entry_is_a_leaf_in_order(tmp_path, bundle):
    log = fill(tmp_path / "log.sqlite", bundle)
    entries = list(log.entries())
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5, 6] and [e.index for e in entries] == [0, 1, 2, 3, 4, 5]
    for e in entries:
        index, data = log.leaf(e.entry_id)
        assert index == e.index and merkle.leaf_hash(data).hex() == e.leaf_hash
        assert data.startswith(b"dacp-entry/1\n") and json.loads(data.split(b"\n", 2)[2]) == {"n": index + 1}


def test_update_and_delete_are_refused_by_the_database(tmp_path, bundle):
    p = tmp_path / "log.sqlite"
    fill(p, bundle)
    db = sqlite3.connect(p)
    for sql in ("UPDATE tree_chunks SET count = 1", "DELETE FROM tree_chunks", "DELETE FROM bundles"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute(sql)


def test_stored_bundle_tampering_is_detected(tmp_path, bundle):
    p = tmp_path / "log.sqlite"
    fill(p, bundle)
    db = raw(p)
    (sources,) = db.execute("SELECT sources FROM bundles").fetchone()
    s = json.loads(sources)
    s["haircuts.yaml"] = s["haircuts.yaml"].replace("floor: 0.20", "floor: 0.10")
    db.execute("UPDATE bundles SET sources = ?", (json.dumps(s),))
    res = DecisionLog(p).verify()
    assert not res.ok and "bundle" in res.problem


def test_bundle_is_stored_once(tmp_path, bundle):
    log = fill(tmp_path / "log.sqlite", bundle, n=20)
    assert log.db.execute("SELECT COUNT(*) FROM bundles").fetchone()[0] == 1
    assert log.bundle(bundle.hash).hash == bundle.hash


def test_duplicate_entry_id_is_refused_and_nothing_written(tmp_path, bundle):
    log = fill(tmp_path / "log.sqlite", bundle, n=2)
    with pytest.raises(StorageError):
        log.append([("decision", "new", bundle, {}), ("decision", "d1", bundle, {})])
    with pytest.raises(StorageError):
        log.append([("decision", "twice", bundle, {}), ("decision", "twice", bundle, {})])
    assert log.count() == 2 and log.verify().ok


def test_unknown_decision_id_is_a_clear_error(tmp_path, bundle):
    log = fill(tmp_path / "log.sqlite", bundle, n=1)
    with pytest.raises(InputError, match="no decision with id"):
        log.get("nope")


def test_a_directory_is_not_a_log(tmp_path):
    with pytest.raises(InputError):
        DecisionLog(tmp_path)


def test_a_file_that_is_not_sqlite_is_a_storage_error(tmp_path):
    p = tmp_path / "log.sqlite"
    p.write_text("this is not a database " * 100)
    with pytest.raises(StorageError):
        DecisionLog(p)


def _writer(path: str, worker: int, n: int, batch: int) -> None:
    from rules.audit.log import DecisionLog as DL
    from rules.policy.loader import load_bundle as lb

    b = lb(str(POLICIES))
    log = DL(path)
    for start in range(0, n, batch):
        log.append([("decision", f"w{worker}-{i}", b, {"worker": worker, "i": i}) for i in range(start, start + batch)])
    log.close()


@pytest.mark.slow  # eight processes racing
def test_concurrent_writer_processes_keep_one_tree_and_lose_nothing(tmp_path):
    p = str(tmp_path / "log.sqlite")
    DecisionLog(p).close()
    workers, n = 8, 60
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(p, w, n, 1 + w % 3)) for w in range(workers)]
    for pr in procs:
        pr.start()
    for pr in procs:
        pr.join(120)
        assert pr.exitcode == 0
    log = DecisionLog(p)
    assert log.count() == workers * n
    ids = {e.entry_id for e in log.entries()}
    assert ids == {f"w{w}-{i}" for w in range(workers) for i in range(n)}
    assert log.verify().ok


def test_replay_is_identical_under_the_stored_bundle_even_after_the_policy_changed(tmp_path):
    pol = tmp_path / "pol"
    pol.mkdir()
    for f in POLICIES.glob("*.yaml"):
        (pol / f.name).write_text(f.read_text())
    settings = Settings(policies=pol, log=tmp_path / "log.sqlite",
                        sections={"approvals": {"required": False}})  # edited copies of the bundle: not signed
    q = load_query_text((ROOT / "examples/queries/btc-eligible.json").read_text(), "btc")
    (d,) = Dacp(settings).evaluate([q])
    # The committee raises the BTC floor afterwards: the replay still uses the bundle in force then.
    (pol / "haircuts.yaml").write_text((pol / "haircuts.yaml").read_text().replace("floor: 0.20", "floor: 0.30"))
    later = Dacp(settings)
    r = later.replay(d.id)
    assert r.identical, r.differences
    assert later.bundle.hash != d.to_json()["policy"]["bundle"]
    (d2,) = later.evaluate([q])
    assert Decimal(d2.to_json()["haircut"]["total"]) == Decimal("0.30")
