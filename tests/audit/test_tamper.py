"""The tamper suite: an attacker with the database file drops the append-only triggers first, then edits.

Each kind of tampering — modify, delete, insert, reorder, truncate, re-hash, fork, an altered index of ids,
an altered interior node, a deleted bundle — is detected by ``verify`` and named; reads refuse what they
cannot prove (``TamperedError``). Legitimate appends after a checkpoint are not an error."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import zstandard

from rules.audit import merkle
from rules.audit.checkpoint import Signer
from rules.audit.log import DecisionLog
from rules.audit.store import NODE_LEVEL, pack
from rules.errors import TamperedError
from tests.support.tamper import chunk_row, raw, recompute_nodes, rewrite_chunk

SIGNER = Signer.generate("test-operator")
KEYS = [SIGNER.verifier()]


class FakeBundle:
    """What the log needs of a bundle to store it by hash (a real one is loaded back by ``bundle()``)."""

    def __init__(self, h: str):
        self.hash, self.name, self.version, self.sources = h, "b", "1", {}


def make_log(path: Path, n: int = 700, chunk: int = 100) -> DecisionLog:
    log = DecisionLog(path, origin="test/log")
    for k in range(0, n, chunk):
        log.append([("decision", f"id-{i:06d}", None, {"i": i, "text": "x" * (i % 7)}) for i in range(k, min(n, k + chunk))])
    return log


@pytest.fixture
def logged(tmp_path):
    path = tmp_path / "log.sqlite"
    log = make_log(path)
    note = log.checkpoint(SIGNER)
    log.close()
    return path, note


def test_an_untouched_log_verifies_and_later_appends_are_not_an_error(logged):
    path, note = logged
    log = DecisionLog(path)
    assert log.verify(note, KEYS).ok
    log.append([("decision", "id-late", None, {"late": True})])
    res = log.verify(note, KEYS)
    assert res.ok and res.entries == 701 and res.checked is not None and res.checked.size == 700, res.render()
    assert log.get("id-000123").body == {"i": 123, "text": "x" * (123 % 7)}


def test_modify_is_named_and_the_read_is_refused(logged):
    path, note = logged
    c = raw(path)
    ch = chunk_row(c, 100)
    leaves = ch.leaves()
    leaves[5] = leaves[5].replace(b'"i":105', b'"i":999')
    rewrite_chunk(c, 100, leaves, rehash=False)
    log = DecisionLog(path)
    res = log.verify(note, KEYS)
    assert not res.ok and res.seq == 106 and "entry 106 (id-000105) was modified" in res.problem
    with pytest.raises(TamperedError, match="entry 106 .* was modified"):
        log.get("id-000105")
    assert log.get("id-000104").body["i"] == 104  # the others still read


def test_rehash_after_an_edit_breaks_the_signed_checkpoint(logged):
    path, note = logged
    c = raw(path)
    leaves = chunk_row(c, 200).leaves()
    leaves[0] = leaves[0].replace(b'"i":200', b'"i":201')
    rewrite_chunk(c, 200, leaves, rehash=True)
    recompute_nodes(c)
    log = DecisionLog(path)
    res = log.verify(None, KEYS)
    assert not res.ok and "no longer extends the stored checkpoint of size 700" in res.problem
    res = log.verify(note, KEYS)
    assert not res.ok and "no longer extends" in res.problem
    with pytest.raises(TamperedError, match="is not in the tree of the checkpoint of size 700"):
        log.get("id-000200")


def test_delete_in_the_middle_is_named(logged):
    path, note = logged
    raw(path).execute("DELETE FROM tree_chunks WHERE first = 300")
    res = DecisionLog(path).verify(note, KEYS)
    assert not res.ok and "entries 301..400 were deleted" in res.problem and res.seq == 301


def test_truncation_is_found_against_a_checkpoint(logged):
    path, note = logged
    raw(path).execute("DELETE FROM tree_chunks WHERE first >= 600")
    raw(path).execute("DELETE FROM tree_checkpoints")  # the attacker removes the stored one too
    log = DecisionLog(path)
    assert log.verify().ok  # nothing left in the database to contradict it ...
    res = log.verify(note, KEYS)  # ... but the auditor's checkpoint does
    assert not res.ok and "has 600 entries but the given checkpoint of size 700 vouches for 700" in res.problem
    assert "truncated" in res.problem


def test_insert_is_found(logged):
    path, note = logged
    c = raw(path)
    ch = chunk_row(c, 400)
    forged = ch.leaves()[:1]
    data, ids = pack(forged, ["forged"])
    c.execute("INSERT INTO tree_chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
              (450, 1, ch.recorded_at, "forged", "forged", merkle.leaf_hash(forged[0]), ids, data))
    res = DecisionLog(path).verify(note, KEYS)
    assert not res.ok and "appear twice" in res.problem


def test_reorder_is_found(logged):
    path, note = logged
    c = raw(path)
    a, b = chunk_row(c, 100), chunk_row(c, 200)
    for target, src in ((100, b), (200, a)):
        c.execute("UPDATE tree_chunks SET hashes = ?, ids = ?, data = ?, min_id = ?, max_id = ? WHERE first = ?",
                  (src.hashes, src.ids, src.data, min(src.entry_ids()), max(src.entry_ids()), target))
    res = DecisionLog(path).verify(note, KEYS)
    assert not res.ok and "no longer extends" in res.problem


def test_an_altered_index_of_ids_cannot_serve_another_entry(logged):
    path, _ = logged
    c = raw(path)
    ch = chunk_row(c, 0)
    ids = ch.entry_ids()
    ids[3], ids[4] = ids[4], ids[3]
    blob = zstandard.ZstdCompressor().compress("\n".join(ids).encode())
    c.execute("UPDATE tree_chunks SET ids = ? WHERE first = 0", (blob,))
    log = DecisionLog(path)
    with pytest.raises(TamperedError, match="index of ids"):
        log.get("id-000003")
    res = log.verify()
    assert not res.ok and "entry 4 is id-000003, but the index of ids says id-000004" in res.problem


def test_an_altered_interior_node_is_found(logged):
    path, _ = logged
    raw(path).execute("UPDATE tree_nodes SET hash = ? WHERE level = ? AND idx = 0", (b"\x00" * 32, NODE_LEVEL))
    log = DecisionLog(path)
    res = log.verify()
    assert not res.ok and f"interior node ({NODE_LEVEL}, 0)" in res.problem
    with pytest.raises(TamperedError):
        log.get("id-000300")  # its audit path passes through that node


def test_a_fork_is_found(tmp_path):
    a, b = make_log(tmp_path / "a.sqlite", 300), make_log(tmp_path / "b.sqlite", 300)
    a.append([("decision", "only-in-a", None, {"a": 1})])
    b.append([("decision", "only-in-b", None, {"b": 1})])
    note_a = a.checkpoint(SIGNER)
    res = b.verify(note_a, KEYS)
    assert not res.ok and "no longer extends the given checkpoint of size 301" in res.problem and "fork" in res.problem


def test_a_checkpoint_of_another_log_or_key_is_refused(logged, tmp_path):
    path, note = logged
    res = DecisionLog(tmp_path / "o2.sqlite", origin="another/log").verify(note, KEYS)
    assert not res.ok and "the checkpoint is for log 'test/log'" in res.problem
    with pytest.raises(Exception, match="not signed by any known key"):
        DecisionLog(path).verify(note, [Signer.generate("stranger").verifier()])


def test_a_deleted_bundle_names_the_decisions_that_need_it(tmp_path):
    path = tmp_path / "log.sqlite"
    log = DecisionLog(path)
    log.append([("decision", f"d{i}", FakeBundle("ab" * 32), {"i": i}) for i in range(3)])
    raw(path).execute("DELETE FROM bundles")
    res = DecisionLog(path).verify()
    assert not res.ok and "bundle abababababab needed by d0, d1, d2" in res.problem
    assert res.missing_bundles == {"ab" * 32: ["d0", "d1", "d2"]}


def test_the_triggers_refuse_honest_mistakes(logged):
    path, _ = logged
    DecisionLog(path).append([("decision", "with-bundle", FakeBundle("cd" * 32), {})])
    c = sqlite3.connect(path, isolation_level=None)
    for sql in ("DELETE FROM tree_chunks", "UPDATE tree_chunks SET count = 0", "DELETE FROM bundles",
                "DELETE FROM tree_nodes", "DELETE FROM tree_checkpoints"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            c.execute(sql)
