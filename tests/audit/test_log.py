"""Decision log: chain integrity, tamper detection by kind, append-only, concurrent writers, replay."""

from __future__ import annotations

import json
from decimal import Decimal
import multiprocessing as mp
import sqlite3
from pathlib import Path

import pytest

from rules.app import Dacp
from rules.audit.log import DecisionLog, entry_hash
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
    """A connection that goes around the append-only triggers, as an attacker with file access would."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("DROP TRIGGER IF EXISTS log_no_update")
    db.execute("DROP TRIGGER IF EXISTS log_no_delete")
    db.execute("DROP TRIGGER IF EXISTS bundles_no_update")
    return db


def test_intact_chain_verifies_and_reports_head(tmp_path, bundle):
    log = fill(tmp_path / "log.sqlite", bundle)
    res = log.verify()
    assert res.ok and res.entries == 6
    last = list(log.entries())[-1]
    assert res.head == last.entry_hash
    assert log.verify(expect_head=res.head).ok


def test_each_entry_links_to_the_previous(tmp_path, bundle):
    log = fill(tmp_path / "log.sqlite", bundle)
    entries = list(log.entries())
    assert entries[0].prev_hash == "0" * 64
    for a, b in zip(entries, entries[1:]):
        assert b.prev_hash == a.entry_hash
        assert b.seq == a.seq + 1


def test_update_and_delete_are_refused_by_the_database(tmp_path, bundle):
    fill(tmp_path / "log.sqlite", bundle)
    db = sqlite3.connect(tmp_path / "log.sqlite")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE log SET body = '{}' WHERE seq = 2")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM log WHERE seq = 2")


def test_modified_entry_is_named(tmp_path, bundle):
    p = tmp_path / "log.sqlite"
    fill(p, bundle)
    raw(p).execute("""UPDATE log SET body = '{"n":999}' WHERE seq = 3""")
    res = DecisionLog(p).verify()
    assert not res.ok and res.seq == 3 and "modified" in res.problem


def test_modified_entry_with_recomputed_hash_breaks_the_next_link(tmp_path, bundle):
    p = tmp_path / "log.sqlite"
    fill(p, bundle)
    db = raw(p)
    seq, eid, kind, at, bh, _body, prev, _h = db.execute("SELECT * FROM log WHERE seq = 3").fetchone()
    body = '{"n":999}'
    db.execute("UPDATE log SET body = ?, entry_hash = ? WHERE seq = 3", (body, entry_hash(seq, eid, kind, at, bh, body, prev)))
    res = DecisionLog(p).verify()
    assert not res.ok and res.seq == 3 and "entry 3 was rewritten" in res.problem


def test_deleted_entry_is_named(tmp_path, bundle):
    p = tmp_path / "log.sqlite"
    fill(p, bundle)
    raw(p).execute("DELETE FROM log WHERE seq = 4")
    res = DecisionLog(p).verify()
    assert not res.ok and res.seq == 4 and "deleted" in res.problem


def test_inserted_entry_is_named(tmp_path, bundle):
    """A forged entry slipped in after entry 2, later entries renumbered to make room."""
    p = tmp_path / "log.sqlite"
    fill(p, bundle)
    db = raw(p)
    rows = db.execute("SELECT * FROM log WHERE seq >= 3 ORDER BY seq DESC").fetchall()
    for r in rows:
        db.execute("UPDATE log SET seq = seq + 1 WHERE seq = ?", (r[0],))
    prev = db.execute("SELECT entry_hash FROM log WHERE seq = 2").fetchone()[0]
    body = '{"forged":true}'
    db.execute("INSERT INTO log VALUES (3, 'forged', 'decision', '2026-01-01T00:00:00Z', NULL, ?, ?, ?)",
               (body, prev, entry_hash(3, "forged", "decision", "2026-01-01T00:00:00Z", None, body, prev)))
    res = DecisionLog(p).verify()
    assert not res.ok
    assert res.seq in (3, 4) and ("inserted" in res.problem or "moved" in res.problem or "modified" in res.problem)


def test_reordered_entries_are_named(tmp_path, bundle):
    p = tmp_path / "log.sqlite"
    fill(p, bundle)
    db = raw(p)
    db.execute("UPDATE log SET seq = 100 WHERE seq = 3")
    db.execute("UPDATE log SET seq = 3 WHERE seq = 4")
    db.execute("UPDATE log SET seq = 4 WHERE seq = 100")
    res = DecisionLog(p).verify()
    assert not res.ok and res.seq == 3 and ("moved" in res.problem or "reordered" in res.problem)


def test_truncated_tail_is_caught_with_the_recorded_head(tmp_path, bundle):
    p = tmp_path / "log.sqlite"
    log = fill(p, bundle)
    head = log.verify().head
    raw(p).execute("DELETE FROM log WHERE seq >= 5")
    log2 = DecisionLog(p)
    assert log2.verify().ok  # a shorter chain is still a chain...
    res = log2.verify(expect_head=head)
    assert not res.ok and "removed from the end" in res.problem  # ...but not the one recorded


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


def test_concurrent_writer_processes_keep_the_chain_and_lose_nothing(tmp_path):
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
