"""Where the verifiable log's tree lives: chunks of leaves, cached interior nodes, signed checkpoints (SQL).

One append writes ONE chunk row: its leaves' hashes (32 bytes each, uncompressed: they are the tree), the
leaves themselves, length-prefixed and compressed together with zstandard, and the entry ids (for lookups:
the chunk's least and greatest id are indexed). The tree carries the order; no row per entry.

Interior nodes of complete subtrees of ``2**NODE_LEVEL`` leaves and more are stored as they complete
(``rules.audit.merkle.CompactRange`` reports them), so the frontier and every proof need O(log n) reads; the
smaller subtrees are recomputed from at most ``2**NODE_LEVEL`` stored leaf hashes.

Every table is append-only: triggers refuse UPDATE and DELETE (and TRUNCATE on PostgreSQL). The triggers
keep honest mistakes out; what proves the log was not rewritten around them is the tree itself, checked
against checkpoints signed with the operator's key (``rules.audit.checkpoint``).
"""

from __future__ import annotations

import struct
from typing import Any, Iterator, NamedTuple, Sequence

import zstandard

from adapters.storage.sql import Database
from rules.audit import merkle
from rules.errors import StorageError

NODE_LEVEL = 8  # complete subtrees of 256 leaves and more are stored
ZSTD_LEVEL = 3
_LEN = struct.Struct(">I")

SQLITE_DDL = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS bundles (hash TEXT PRIMARY KEY, name TEXT NOT NULL, version TEXT NOT NULL,
        sources TEXT NOT NULL, stored_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS tree_chunks (first INTEGER PRIMARY KEY, count INTEGER NOT NULL,
        recorded_at TEXT NOT NULL, min_id TEXT NOT NULL, max_id TEXT NOT NULL, hashes BLOB NOT NULL,
        ids BLOB NOT NULL, data BLOB NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS tree_chunks_min_id ON tree_chunks (min_id)",
    "CREATE INDEX IF NOT EXISTS tree_chunks_max_id ON tree_chunks (max_id)",
    """CREATE TABLE IF NOT EXISTS tree_nodes (level INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL,
        PRIMARY KEY (level, idx))""",
    """CREATE TABLE IF NOT EXISTS tree_checkpoints (size INTEGER PRIMARY KEY, root BLOB NOT NULL,
        note TEXT NOT NULL, recorded_at TEXT NOT NULL)""",
] + [f"""CREATE TRIGGER IF NOT EXISTS {t}_no_{op.lower()} BEFORE {op} ON {t}
        BEGIN SELECT RAISE(ABORT, '{t} is append-only'); END""" for t in
     ("bundles", "tree_chunks", "tree_nodes", "tree_checkpoints") for op in ("UPDATE", "DELETE")]

PG_DDL = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS bundles (hash TEXT PRIMARY KEY, name TEXT NOT NULL, version TEXT NOT NULL,
        sources TEXT NOT NULL, stored_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS tree_chunks (first BIGINT PRIMARY KEY, count INTEGER NOT NULL,
        recorded_at TEXT NOT NULL, min_id TEXT NOT NULL, max_id TEXT NOT NULL, hashes BYTEA NOT NULL,
        ids BYTEA NOT NULL, data BYTEA NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS tree_chunks_min_id ON tree_chunks (min_id)",
    "CREATE INDEX IF NOT EXISTS tree_chunks_max_id ON tree_chunks (max_id)",
    """CREATE TABLE IF NOT EXISTS tree_nodes (level INTEGER NOT NULL, idx BIGINT NOT NULL, hash BYTEA NOT NULL,
        PRIMARY KEY (level, idx))""",
    """CREATE TABLE IF NOT EXISTS tree_checkpoints (size BIGINT PRIMARY KEY, root BYTEA NOT NULL,
        note TEXT NOT NULL, recorded_at TEXT NOT NULL)""",
    """CREATE OR REPLACE FUNCTION dacp_refuse() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN RAISE EXCEPTION '%', TG_ARGV[0]; END $$""",
] + [s for t in ("bundles", "tree_chunks", "tree_nodes", "tree_checkpoints") for s in (
    f"""CREATE OR REPLACE TRIGGER {t}_no_change BEFORE UPDATE OR DELETE ON {t}
        FOR EACH ROW EXECUTE FUNCTION dacp_refuse('{t} is append-only')""",
    f"""CREATE OR REPLACE TRIGGER {t}_no_truncate BEFORE TRUNCATE ON {t}
        FOR EACH STATEMENT EXECUTE FUNCTION dacp_refuse('{t} is append-only')""")]


class Chunk(NamedTuple):
    first: int  # index of its first leaf
    count: int
    recorded_at: str
    hashes: bytes  # count x 32 bytes: the stored leaf hashes
    ids: bytes  # zstd of the entry ids, newline-separated
    data: bytes  # zstd of the length-prefixed leaves

    def leaf_hashes(self) -> list[bytes]:
        h = self.hashes
        return [h[i:i + 32] for i in range(0, len(h), 32)]

    def entry_ids(self) -> list[str]:
        return zstandard.ZstdDecompressor().decompress(self.ids).decode("utf-8").split("\n")

    def leaves(self) -> list[bytes]:
        """The leaves as stored (a chunk whose data does not unpack to ``count`` leaves is a StorageError)."""
        try:
            raw = zstandard.ZstdDecompressor().decompress(self.data)
        except zstandard.ZstdError as e:
            raise StorageError(f"log entries {self.first + 1}..{self.first + self.count}: do not decompress ({e})") from None
        out, pos, n = [], 0, len(raw)
        lengths = [_LEN.unpack_from(raw, 4 * i)[0] for i in range(self.count)] if n >= 4 * self.count else []
        pos = 4 * self.count
        for length in lengths:
            out.append(raw[pos:pos + length])
            pos += length
        if len(out) != self.count or pos != n:
            raise StorageError(f"log entries {self.first + 1}..{self.first + self.count}: the stored chunk is damaged")
        return out


def pack(leaves: Sequence[bytes], ids: Sequence[str]) -> tuple[bytes, bytes]:
    """(data, ids) blobs of a chunk."""
    z = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    data = z.compress(b"".join([_LEN.pack(len(x)) for x in leaves] + list(leaves)))
    return data, z.compress("\n".join(ids).encode("utf-8"))


class TreeStore:
    """The tree's rows in one database (shared with the ledger). Appends run inside the caller's write
    transaction, which holds the log's lock: ``append`` reads the true size under it."""

    _COLS = "first, count, recorded_at, hashes, ids, data"

    def __init__(self, db: Database):
        self.db = db
        # cached frontier and the last leaf hash it ends with: checked against the stored tail before use
        self._frontier: tuple[merkle.CompactRange, bytes | None] | None = None

    # -- writing ---------------------------------------------------------------------------------
    def create(self) -> None:
        self.db.script(PG_DDL if self.db.kind == "postgresql" else SQLITE_DDL)

    def append(self, leaves: Sequence[bytes], ids: Sequence[str], recorded_at: str,
               unique: bool = True) -> tuple[int, list[bytes]]:
        """Append ``leaves`` as one chunk; returns (index of the first, their leaf hashes). In a transaction.
        ``unique``: refuse an id the log holds already (``StorageError``)."""
        if unique:
            self._check_unique(ids)
        size, last = self.tail()
        cached = self._frontier
        if cached is not None and cached[0].size == size and cached[1] == last:
            frontier = cached[0]
        else:  # another writer appended since (or an append of ours rolled back): re-read the frontier
            frontier = merkle.CompactRange.from_nodes(size, self.get_node)
        nodes: list[tuple[int, int, bytes]] = []
        grow = merkle.CompactRange(frontier.size, frontier.hashes,
                                   on_node=lambda lv, ix, h: nodes.append((lv, ix, h)) if lv >= NODE_LEVEL else None)
        sha = merkle.leaf_hash
        hashes = [sha(x) for x in leaves]
        grow.extend(hashes)
        data, id_blob = pack(leaves, ids)
        self.db.execute("INSERT INTO tree_chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (size, len(leaves), recorded_at, min(ids), max(ids), b"".join(hashes), id_blob, data))
        if nodes:
            self.db.executemany("INSERT INTO tree_nodes VALUES (?, ?, ?)", nodes)
        self._frontier = (merkle.CompactRange(grow.size, grow.hashes), hashes[-1] if hashes else last)
        return size, hashes

    # -- reading ---------------------------------------------------------------------------------
    def size(self) -> int:
        row = self.db.execute("SELECT first, count FROM tree_chunks ORDER BY first DESC LIMIT 1").fetchone()
        return row[0] + row[1] if row else 0

    def tail(self) -> tuple[int, bytes | None]:
        """(size, the last leaf's stored hash)."""
        row = self.db.execute("SELECT first, count, hashes FROM tree_chunks ORDER BY first DESC LIMIT 1").fetchone()
        return (row[0] + row[1], bytes(row[2])[-32:]) if row else (0, None)

    def root(self, size: int | None = None) -> bytes:
        size = self.size() if size is None else size
        return merkle.CompactRange.from_nodes(size, self.get_node).root()

    def chunk_at(self, index: int) -> Chunk:
        row = self.db.execute(f"SELECT {self._COLS} FROM tree_chunks WHERE first <= ? ORDER BY first DESC LIMIT 1",
                              (index,)).fetchone()
        if row is None or not row[0] <= index < row[0] + row[1]:
            raise StorageError(f"log entry {index + 1} is missing from the tree's storage")
        return _chunk(row)

    def chunks(self, start: int = 0, batch: int = 64) -> Iterator[Chunk]:
        """Every chunk from the one holding ``start`` on, in order, ``batch`` rows at a time (flat memory)."""
        at = start
        first = self.db.execute("SELECT first FROM tree_chunks WHERE first <= ? ORDER BY first DESC LIMIT 1",
                                (start,)).fetchone()
        at = first[0] if first else 0
        while True:
            rows = self.db.execute(f"SELECT {self._COLS} FROM tree_chunks WHERE first >= ? ORDER BY first LIMIT ?",
                                   (at, batch)).fetchall()
            if not rows:
                return
            for row in rows:
                yield _chunk(row)
            at = rows[-1][0] + 1

    def _check_unique(self, ids: Sequence[str]) -> None:
        """Ids are unique in the log. New UUIDv7 ids sort after every stored one: one indexed read says so;
        only ids that do not (another writer's, or ids of another form) are looked up one by one."""
        if len(set(ids)) != len(ids):
            raise StorageError("entry refused: the same entry id twice in one append")
        top = self.db.execute("SELECT MAX(max_id) FROM tree_chunks").fetchone()[0]
        if top is None or min(ids) > top:
            return
        for entry_id in ids:
            if entry_id <= top and self.find(entry_id) is not None:
                raise StorageError(f"entry refused: entry id {entry_id!r} is in the log already")

    def find(self, entry_id: str) -> tuple[Chunk, int] | None:
        """The chunk holding ``entry_id`` and the entry's position in it. Ids are time-ordered (UUIDv7), so
        the 64 nearest chunks by least id hold it; any other id is found among every candidate chunk."""
        for sql in ("SELECT {} FROM (SELECT {} FROM tree_chunks WHERE min_id <= ? ORDER BY min_id DESC LIMIT 64) "
                    "AS near WHERE max_id >= ?",
                    "SELECT {} FROM tree_chunks WHERE max_id >= ? AND min_id <= ? ORDER BY first"):
            cols = self._COLS + ", min_id, max_id"
            args = (entry_id, entry_id)
            for row in self.db.execute(sql.format(self._COLS, cols), args).fetchall():
                chunk = _chunk(row)
                ids = chunk.entry_ids()
                if entry_id in ids:
                    return chunk, ids.index(entry_id)
        return None

    def get_node(self, level: int, index: int) -> bytes:
        """The root of the complete subtree (level, index): stored, or computed from its leaf hashes."""
        if level >= NODE_LEVEL:
            row = self.db.execute("SELECT hash FROM tree_nodes WHERE level = ? AND idx = ?", (level, index)).fetchone()
            if row is None:
                raise StorageError(f"the tree's node ({level}, {index}) is missing from storage")
            return bytes(row[0])
        lo, hi = index << level, (index + 1) << level
        hashes = self.leaf_hashes(lo, hi)
        return hashes[0] if level == 0 else merkle.root(hashes)

    def leaf_hashes(self, lo: int, hi: int) -> list[bytes]:
        """The stored leaf hashes of leaves [lo, hi)."""
        out: list[bytes] = []
        rows = self.db.execute("SELECT first, count, hashes FROM tree_chunks WHERE first < ? AND first + count > ? "
                               "ORDER BY first", (hi, lo)).fetchall()
        for first, count, blob in rows:
            blob = bytes(blob)
            a, b = max(lo, first), min(hi, first + count)
            out += [blob[(i - first) * 32:(i - first + 1) * 32] for i in range(a, b)]
        if len(out) != hi - lo:
            raise StorageError(f"log entries {lo + 1}..{hi}: their leaf hashes are missing from storage")
        return out

    # -- checkpoints -----------------------------------------------------------------------------
    def add_checkpoint(self, size: int, root: bytes, note: str, recorded_at: str) -> None:
        self.db.execute("INSERT INTO tree_checkpoints VALUES (?, ?, ?, ?) ON CONFLICT (size) DO NOTHING",
                        (size, root, note, recorded_at))

    def checkpoints(self) -> list[tuple[int, bytes, str, str]]:
        return [(r[0], bytes(r[1]), r[2], r[3])
                for r in self.db.execute("SELECT size, root, note, recorded_at FROM tree_checkpoints ORDER BY size")]

    def latest_checkpoint(self) -> tuple[int, bytes, str, str] | None:
        r = self.db.execute("SELECT size, root, note, recorded_at FROM tree_checkpoints ORDER BY size DESC LIMIT 1").fetchone()
        return (r[0], bytes(r[1]), r[2], r[3]) if r else None


def _chunk(row: Sequence[Any]) -> Chunk:
    return Chunk(row[0], row[1], row[2], bytes(row[3]), bytes(row[4]), bytes(row[5]))
