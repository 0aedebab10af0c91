"""The append-only, hash-chained decision log (SQLite by default; PostgreSQL selected by a URL).

Each entry stores the hash of the previous entry, its sequence number, kind, time, the bundle hash
and a body (query, decision, evidence) as canonical JSON; ``entry_hash`` is sha256 over all of that.
Changing, deleting, inserting or reordering entries breaks the chain and ``verify`` names the first
entry affected.

Hash schemes (``meta.hash_scheme``; a log keeps the scheme it was created with):

* 2 (new logs): sha256 of ``dacp-log/2\n`` + the header ``[seq,entry_id,kind,recorded_at,bundle_hash,
  prev_hash]`` as compact JSON + ``\n`` + the body's UTF-8 bytes, exactly as stored;
* 1 (logs created before it): sha256 of the canonical JSON object of those fields with the body as a
  JSON string inside it (which re-encoded every body a second time).

Triggers refuse UPDATE and DELETE (and TRUNCATE on PostgreSQL); the chain catches edits made around
them. Truncating the tail leaves a valid shorter chain: compare the head hash ``verify`` prints with
one recorded elsewhere (``--expect-head``).

Bundles are stored once, content-addressed by their hash, with their source files, so any decision
can be replayed under the bundle it was made with.

Where: a file path (or ``sqlite:///path``) is an SQLite file (WAL, ``synchronous=FULL``); a
``postgresql://`` URL is a PostgreSQL database that several replicas share.

Concurrent writers (threads, processes, replicas) serialise their appends: SQLite inside
``BEGIN IMMEDIATE`` transactions (its write lock), PostgreSQL under a transaction-scoped advisory
lock, so each reads the true head before linking to it; ``seq`` is the primary key, so a fork is
refused even if that were bypassed. ``append`` joins a transaction the caller already opened on the
same ``Database`` (the collateral ledger commits its rows and their decision-log entries together).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, NamedTuple

import orjson

from adapters.storage.sql import Database, open_database
from rules.errors import InputError, StorageError
from rules.policy.loader import load_bundle_from_sources
from rules.policy.model import Bundle
from rules.values import now_utc, utc_text

GENESIS = "0" * 64
SCHEMA_VERSION = 1
HASH_SCHEME = 2  # of new logs (see the module docstring)

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS bundles (
    hash TEXT PRIMARY KEY, name TEXT NOT NULL, version TEXT NOT NULL,
    sources TEXT NOT NULL, stored_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS log (
    seq INTEGER PRIMARY KEY, entry_id TEXT NOT NULL UNIQUE, kind TEXT NOT NULL,
    recorded_at TEXT NOT NULL, bundle_hash TEXT, body TEXT NOT NULL,
    prev_hash TEXT NOT NULL, entry_hash TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS log_no_update BEFORE UPDATE ON log
    BEGIN SELECT RAISE(ABORT, 'the decision log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS log_no_delete BEFORE DELETE ON log
    BEGIN SELECT RAISE(ABORT, 'the decision log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS bundles_no_update BEFORE UPDATE ON bundles
    BEGIN SELECT RAISE(ABORT, 'stored bundles are immutable'); END;
"""

_PG_DDL = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS bundles (
        hash TEXT PRIMARY KEY, name TEXT NOT NULL, version TEXT NOT NULL,
        sources TEXT NOT NULL, stored_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS log (
        seq BIGINT PRIMARY KEY, entry_id TEXT NOT NULL UNIQUE, kind TEXT NOT NULL,
        recorded_at TEXT NOT NULL, bundle_hash TEXT, body TEXT NOT NULL,
        prev_hash TEXT NOT NULL, entry_hash TEXT NOT NULL)""",
    """CREATE OR REPLACE FUNCTION dacp_refuse() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN RAISE EXCEPTION '%', TG_ARGV[0]; END $$""",
    """CREATE OR REPLACE TRIGGER log_no_update BEFORE UPDATE OR DELETE ON log
        FOR EACH ROW EXECUTE FUNCTION dacp_refuse('the decision log is append-only')""",
    """CREATE OR REPLACE TRIGGER log_no_truncate BEFORE TRUNCATE ON log
        FOR EACH STATEMENT EXECUTE FUNCTION dacp_refuse('the decision log is append-only')""",
    """CREATE OR REPLACE TRIGGER bundles_no_update BEFORE UPDATE ON bundles
        FOR EACH ROW EXECUTE FUNCTION dacp_refuse('stored bundles are immutable')""",
]
LOG_LOCK = "dacp.decision_log"
SCHEMA_LOCK = "dacp.schema"


def plain_canonical(value: Any) -> str:
    """Canonical JSON of plain JSON data (sorted keys, no spaces); values are kept exactly as they are.

    Log bodies are plain JSON (decisions carry money as strings), so unlike the policy canonical form
    no number is rewritten: what is stored is what was decided."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode("utf-8")
    except (TypeError, orjson.JSONEncodeError):  # an int beyond 64 bits, or not JSON at all (raises below)
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def entry_hash_v1(seq: int, entry_id: str, kind: str, recorded_at: str, bundle: str | None, body: str,
                  prev_hash: str, data: bytes | None = None) -> str:
    """(``data`` is accepted for the same signature as scheme 2; scheme 1 hashes the text.)"""
    material = json.dumps({"seq": seq, "entry_id": entry_id, "kind": kind, "recorded_at": recorded_at,
                           "bundle_hash": bundle, "body": body, "prev_hash": prev_hash},
                          sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def entry_hash_v2(seq: int, entry_id: str, kind: str, recorded_at: str, bundle: str | None, body: str,
                  prev_hash: str, data: bytes | None = None) -> str:
    """``data``: ``body`` as UTF-8, if the caller has it already."""
    h = hashlib.sha256(b"dacp-log/2\n")
    h.update(orjson.dumps([seq, entry_id, kind, recorded_at, bundle, prev_hash]))  # = json.dumps(separators=(",", ":"))
    h.update(b"\n")
    h.update(body.encode("utf-8") if data is None else data)
    return h.hexdigest()


ENTRY_HASH = {1: entry_hash_v1, 2: entry_hash_v2}
entry_hash = entry_hash_v2


def _now() -> str:
    return utc_text(now_utc(), "microseconds")


class RawJSON(bytes):
    """A body already encoded as JSON (UTF-8): stored as it is."""


class LogRecord(NamedTuple):
    """What ``DecisionLog.append`` takes for one entry."""

    kind: str
    entry_id: str
    bundle: Bundle | None
    body: Mapping[str, Any] | RawJSON


class Entry(NamedTuple):
    seq: int
    entry_id: str
    kind: str
    recorded_at: str
    bundle_hash: str | None
    body: dict[str, Any]
    prev_hash: str
    entry_hash: str


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int
    head: str
    problem: str | None = None
    seq: int | None = None  # first entry affected

    def render(self) -> str:
        if self.ok:
            return f"decision log OK: {self.entries} entries, chain intact; head {self.head}"
        return f"decision log TAMPERED: {self.problem}"


class DecisionLog:
    """One decision log. Cheap to open; open one per process (or thread).

    ``path`` is a file path, ``sqlite:///path`` or a ``postgresql://`` URL; or pass an open ``database``
    (``adapters.storage.sql``) to share it with another store (the ledger), which then owns it."""

    def __init__(self, path: str | Path | None = None, *, timeout_s: float = 60.0, database: Database | None = None):
        if database is None:
            if path is None:
                raise InputError("give the decision log's path or URL", "log")
            database = open_database(path, timeout_s=timeout_s)
            self._owns_db = True
        else:
            self._owns_db = False
        self.db = database
        self.path = getattr(database, "path", None) or Path(database.where)
        self.where = database.where
        try:
            self._init()
        except sqlite3.DatabaseError as e:
            raise StorageError(f"{self.where}: cannot open the decision log: {e}") from None
        self._stored_bundles: set[str] = set()
        # Seconds spent appending, by step (and the entries appended): where a logged decision's time goes.
        self.timings: dict[str, float] = dict.fromkeys(("encode", "lock", "chain", "insert", "commit", "entries", "bytes"), 0)

    def _init(self) -> None:
        with self._write(SCHEMA_LOCK):
            if self.db.kind == "postgresql":
                exists = self.db.execute("SELECT to_regclass('log')").fetchone()[0]
                if exists is None:
                    self.db.script(_PG_DDL)
            else:
                self.db.script(_ddl_statements(_DDL))
            row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                self.db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                self.db.execute("INSERT INTO meta VALUES ('hash_scheme', ?)", (str(HASH_SCHEME),))
            elif int(row[0]) != SCHEMA_VERSION:
                raise StorageError(f"{self.where}: decision log schema version {row[0]}, expected {SCHEMA_VERSION}")
            row = self.db.execute("SELECT value FROM meta WHERE key='hash_scheme'").fetchone()
            scheme = int(row[0]) if row else 1  # logs from before the key existed
            if scheme not in ENTRY_HASH:
                raise StorageError(f"{self.where}: decision log hash scheme {scheme} is not known to this version")
            self.hash_scheme = scheme
            self._entry_hash = ENTRY_HASH[scheme]

    def close(self) -> None:
        if self._owns_db:
            self.db.close()

    def __enter__(self) -> "DecisionLog":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- writing -------------------------------------------------------------------------------
    def _write(self, *locks: str) -> Any:
        return self.db.transaction(locks)

    def store_bundle(self, bundle: Bundle) -> None:
        if bundle.hash in self._stored_bundles:
            return
        with self._write():
            self._store_bundle_tx(bundle)
        self._stored_bundles.add(bundle.hash)

    def _store_bundle_tx(self, bundle: Bundle) -> None:
        self.db.execute("INSERT INTO bundles VALUES (?, ?, ?, ?, ?) ON CONFLICT (hash) DO NOTHING",
                        (bundle.hash, bundle.name, bundle.version,
                         json.dumps(dict(bundle.sources), sort_keys=True), _now()))

    def append(self, records: Iterable[LogRecord | tuple[str, str, Bundle | None, Mapping[str, Any]]]) -> list[Entry]:
        """Append records (``LogRecord``s, or plain tuples in its order) atomically, in order. Returns the
        entries (their bodies are the records' own objects, not copies). A body is plain JSON data, or a
        ``RawJSON`` the caller encoded (stored as it is).

        Inside a transaction the caller opened on ``self.db``, the records commit (or roll back) with it.
        The entries of one call are recorded at one time: the time of the append. The cyclic garbage
        collector is left as it is: the batch doors pause it around a whole batch (``rules.collector``);
        a direct call appends the same, only without that pause."""
        records = list(records)
        out: list[Entry] = []
        if not records:
            return out
        texts: list[str] = []
        datas: list[bytes | None] = []
        clock = time.perf_counter
        t0 = clock()
        # bodies are the bulk of the work: encode them before taking the write lock
        for r in records:
            body = r[3]
            if type(body) is RawJSON:
                texts.append(body.decode("utf-8"))
                datas.append(body)
                continue
            datas.append(None)
            try:
                texts.append(plain_canonical(body))
            except (TypeError, ValueError) as e:
                raise StorageError(f"{self.where}: entry {r[1]!r} is not plain JSON: {e}") from None
        t1 = clock()
        try:
            with self._write(LOG_LOCK):
                for b in {r[2].hash: r[2] for r in records if r[2] is not None}.values():
                    self._store_bundle_tx(b)
                row = self.db.execute("SELECT seq, entry_hash FROM log ORDER BY seq DESC LIMIT 1").fetchone()
                seq, prev = (row[0], row[1]) if row else (0, GENESIS)
                at = _now()
                rows = []  # in the log table's column order
                hash_of = self._entry_hash
                t2 = clock()
                for (kind, entry_id, bundle, body), text, data in zip(records, texts, datas):
                    seq += 1
                    bh = bundle.hash if bundle else None
                    h = hash_of(seq, entry_id, kind, at, bh, text, prev, data)
                    rows.append((seq, entry_id, kind, at, bh, text, prev, h))
                    out.append(Entry(seq, entry_id, kind, at, bh, body, prev, h))
                    prev = h
                t3 = clock()
                self.db.executemany("INSERT INTO log VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
                t4 = clock()
        except sqlite3.IntegrityError as e:
            raise StorageError(f"{self.where}: entry refused: {e}") from None
        except sqlite3.OperationalError as e:
            raise StorageError(f"{self.where}: cannot write the decision log: {e}") from None
        t5 = clock()
        tm = self.timings
        tm["encode"] += t1 - t0
        tm["lock"] += t2 - t1
        tm["chain"] += t3 - t2
        tm["insert"] += t4 - t3
        tm["commit"] += t5 - t4  # zero inside a caller's transaction: its commit is the caller's
        tm["entries"] += len(records)
        tm["bytes"] += sum(map(len, texts))
        return out

    # -- reading -------------------------------------------------------------------------------
    def _row(self, r: tuple) -> Entry:
        return Entry(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7])

    def get(self, entry_id: str) -> Entry:
        r = self.db.execute("SELECT * FROM log WHERE entry_id = ?", (entry_id,)).fetchone()
        if r is None:
            raise InputError(f"no decision with id {entry_id!r} in {self.where}", "decision id")
        return self._row(r)

    def entries(self, kind: str | None = None) -> Iterator[Entry]:
        sql = "SELECT * FROM log" + (" WHERE kind = ?" if kind else "") + " ORDER BY seq"
        for r in self.db.execute(sql, (kind,) if kind else ()):
            yield self._row(r)

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM log").fetchone()[0]

    def bundle(self, bundle_hash_: str) -> Bundle:
        r = self.db.execute("SELECT sources FROM bundles WHERE hash = ?", (bundle_hash_,)).fetchone()
        if r is None:
            raise StorageError(f"{self.where}: bundle {bundle_hash_} is not stored; the decision cannot be replayed")
        bundle = load_bundle_from_sources(json.loads(r[0]), origin=f"stored bundle {bundle_hash_[:12]}")
        if bundle.hash != bundle_hash_:
            raise StorageError(f"{self.where}: stored bundle {bundle_hash_} was modified (its content hashes to {bundle.hash})")
        return bundle

    # -- verification --------------------------------------------------------------------------
    def verify(self, expect_head: str | None = None) -> VerifyResult:
        """Walk the chain; name the first entry modified, deleted, inserted or reordered."""
        rows = self.db.execute("SELECT * FROM log ORDER BY seq").fetchall()
        hashes = {r[7]: r[0] for r in rows}
        prev, expected_seq = GENESIS, 1
        for i, r in enumerate(rows):
            seq, entry_id, kind, at, bh, body, prev_hash, stored = r
            recomputed = self._entry_hash(seq, entry_id, kind, at, bh, body, prev_hash)
            if seq != expected_seq:
                return VerifyResult(False, len(rows), prev, f"entries {expected_seq}..{seq - 1} were deleted "
                                    f"(sequence jumps from {expected_seq - 1} to {seq})", expected_seq)
            if recomputed != stored:
                if prev_hash != prev and prev_hash in hashes:
                    what = (f"entry {seq} ({entry_id}) was moved: it follows entry {hashes[prev_hash]} in the chain "
                            f"but sits after entry {seq - 1} (entries reordered)")
                else:
                    what = f"entry {seq} ({entry_id}) was modified: its content no longer matches its hash"
                return VerifyResult(False, len(rows), prev, what, seq)
            if prev_hash != prev:
                if prev_hash in hashes and hashes[prev_hash] < seq - 1:
                    what = (f"entry {seq - 1} was inserted: entry {seq} ({entry_id}) links to entry {hashes[prev_hash]}, "
                            "not to the entry before it")
                else:
                    what = (f"entry {seq - 1} was rewritten (modified and re-hashed): entry {seq} ({entry_id}) no longer "
                            f"links to it - or entry {seq} is forged")
                return VerifyResult(False, len(rows), prev, what, seq - 1)
            prev, expected_seq = stored, seq + 1
        if expect_head and expect_head != prev:
            where = f"the expected head is entry {hashes[expect_head]}, so later entries are not the recorded ones" \
                if expect_head in hashes else "entries were removed from the end, or the log was replaced"
            return VerifyResult(False, len(rows), prev, f"the head is {prev}, not the expected {expect_head}: {where}", None)
        for (h,) in self.db.execute("SELECT hash FROM bundles"):
            try:
                self.bundle(h)
            except Exception as e:  # a stored bundle that no longer loads is tampering too
                return VerifyResult(False, len(rows), prev, f"stored bundle {h}: {e}", None)
        return VerifyResult(True, len(rows), prev)


def _ddl_statements(ddl: str) -> list[str]:
    """Statements of the DDL (triggers contain ';' inside BEGIN ... END)."""
    out, buf = [], []
    for line in ddl.strip().splitlines():
        buf.append(line)
        text = "\n".join(buf).strip()
        if text.endswith(";") and (not text.upper().startswith("CREATE TRIGGER") or text.upper().endswith("END;")):
            out.append(text)
            buf = []
    return out

