"""The hash-chained log of earlier versions, read-only: what ``dacp audit migrate`` verifies and folds in.

Table ``log``: each row holds its sequence number, entry id, kind, time, bundle hash, body text, the
previous entry's hash and its own. Hash schemes (``meta.hash_scheme``; a log kept the scheme it was
created with):

* 2: sha256 of ``dacp-log/2\\n`` + the header ``[seq,entry_id,kind,recorded_at,bundle_hash,prev_hash]`` as
  compact JSON + ``\\n`` + the body's UTF-8 bytes, exactly as stored;
* 1 (the first version): sha256 of the canonical JSON object of those fields with the body as a string.

Decision bodies in it are the compact formats 2 and 3 or the earlier full form; ``rules.audit.entry_format``
reads all of them. Nothing writes this format any more. The chain proved only that the entries it still
had linked up; the tree that replaces it is checked against signed checkpoints.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Iterator, NamedTuple

import orjson

from adapters.storage.sql import Database

GENESIS = "0" * 64


def entry_hash_v1(seq: int, entry_id: str, kind: str, recorded_at: str, bundle: str | None, body: str,
                  prev_hash: str) -> str:
    material = json.dumps({"seq": seq, "entry_id": entry_id, "kind": kind, "recorded_at": recorded_at,
                           "bundle_hash": bundle, "body": body, "prev_hash": prev_hash},
                          sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def entry_hash_v2(seq: int, entry_id: str, kind: str, recorded_at: str, bundle: str | None, body: str,
                  prev_hash: str) -> str:
    h = hashlib.sha256(b"dacp-log/2\n")
    h.update(orjson.dumps([seq, entry_id, kind, recorded_at, bundle, prev_hash]))
    h.update(b"\n")
    h.update(body.encode("utf-8"))
    return h.hexdigest()


ENTRY_HASH = {1: entry_hash_v1, 2: entry_hash_v2}


class Row(NamedTuple):
    seq: int
    entry_id: str
    kind: str
    recorded_at: str
    bundle_hash: str | None
    body: str  # the stored text, exactly
    prev_hash: str
    entry_hash: str


@dataclass(frozen=True)
class ChainResult:
    ok: bool
    entries: int
    head: str
    scheme: int
    problem: str | None = None
    seq: int | None = None


def present(db: Database) -> bool:
    """Whether the database has the old ``log`` table."""
    if db.kind == "postgresql":
        return db.execute("SELECT to_regclass('log')").fetchone()[0] is not None
    return db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'log'").fetchone() is not None


def scheme(db: Database) -> int:
    row = db.execute("SELECT value FROM meta WHERE key = 'hash_scheme'").fetchone()
    return int(row[0]) if row else 1  # logs from before the key existed


def rows(db: Database, batch: int = 1000) -> Iterator[Row]:
    """The old log's rows in order, ``batch`` at a time (flat memory)."""
    after = 0
    while True:
        got = db.execute("SELECT seq, entry_id, kind, recorded_at, bundle_hash, body, prev_hash, entry_hash FROM log "
                         "WHERE seq > ? ORDER BY seq LIMIT ?", (after, batch)).fetchall()
        if not got:
            return
        for r in got:
            yield Row(*r)
        after = got[-1][0]


def verify_chain(db: Database) -> ChainResult:
    """Walk the chain; name the first entry modified, deleted, inserted or reordered."""
    sch = scheme(db)
    if sch not in ENTRY_HASH:
        return ChainResult(False, 0, GENESIS, sch, f"hash scheme {sch} is not known to this version")
    hash_of = ENTRY_HASH[sch]
    prev, expected, n = GENESIS, 1, 0
    for r in rows(db):
        n += 1
        if r.seq != expected:
            return ChainResult(False, n, prev, sch, f"entries {expected}..{r.seq - 1} were deleted", expected)
        if hash_of(r.seq, r.entry_id, r.kind, r.recorded_at, r.bundle_hash, r.body, r.prev_hash) != r.entry_hash:
            return ChainResult(False, n, prev, sch, f"entry {r.seq} ({r.entry_id}) was modified: its content no "
                               "longer matches its hash", r.seq)
        if r.prev_hash != prev:
            return ChainResult(False, n, prev, sch, f"entry {r.seq} ({r.entry_id}) does not link to the entry "
                               "before it (an entry was inserted, reordered or rewritten)", r.seq)
        prev, expected = r.entry_hash, r.seq + 1
    return ChainResult(True, n, prev, sch)
