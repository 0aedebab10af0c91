"""Where the verifiable log's tree lives: chunks of leaves, cached interior nodes, signed checkpoints (SQL).

One append writes ONE chunk row: its leaves' hashes (32 bytes each, uncompressed: they are the tree), the
leaves themselves, length-prefixed and compressed together with zstandard (a small chunk with a dictionary
trained on decision entries, shipped in this package and named in the chunk by its sha256), and the entry ids
(for lookups: the chunk's least and greatest id are indexed). The tree carries the order; no row per entry.

Interior nodes of complete subtrees of ``2**NODE_LEVEL`` leaves and more are stored as they complete
(``rules.audit.merkle.CompactRange`` reports them), so the frontier and every proof need O(log n) reads; the
smaller subtrees are recomputed from at most ``2**NODE_LEVEL`` stored leaf hashes.

Every table is append-only: triggers refuse UPDATE and DELETE (and TRUNCATE on PostgreSQL). The triggers
keep honest mistakes out; what proves the log was not rewritten around them is the tree itself, checked
against checkpoints signed with the operator's key (``rules.audit.checkpoint``).
"""

from __future__ import annotations

import struct
import threading
from functools import cache
from hashlib import sha256
from itertools import accumulate, islice
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import zstandard

from adapters.storage.sql import Database
from rules.audit import merkle
from rules.audit.nodes import NODE_LEVEL, Growth, NodeReader
from rules.errors import StorageError, TamperedError

ZSTD_LEVEL = 1  # a chunk of 500 decisions: as small as level 3 (190 bytes an entry), 0.5 us an entry faster
# zstandard dictionaries a chunk may be compressed with, by the sha256 of the file (in this package) - never
# remove one: a chunk names the dictionary it needs, and is unreadable without it. Small chunks (a single
# decision, a ledger movement) are written with WRITE_DICTIONARY: a decision of 1.0 KB compressed alone is
# 0.33 KB with it; a chunk of 500 is not smaller with it, and slower (bench/bench_log.py measures both).
DICTIONARIES = {"e568560add888b2dd809d21e84dd23dec56249c3b8a0db7fb873cdfead76e225": "decisions-1.zdict"}
WRITE_DICTIONARY = "e568560add888b2dd809d21e84dd23dec56249c3b8a0db7fb873cdfead76e225"
DICTIONARY_BELOW = 64 * 1024  # packed leaves of fewer bytes are compressed with the dictionary
DICTIONARY_LEVEL = 3
_WITH_DICTIONARY = b"zd1:"  # then the dictionary's sha256 (32 bytes), then the zstd frame
_codecs = threading.local()  # zstandard's (de)compressors are not thread-safe: one of each per thread

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
    data: bytes  # zstd of the length-prefixed leaves (with a dictionary it names, for small chunks: ``pack``)

    def leaf_hashes(self) -> list[bytes]:
        h = self.hashes
        return [h[i:i + 32] for i in range(0, len(h), 32)]

    def entry_ids(self) -> list[str]:
        return _entry_ids(self.ids)

    def leaves(self) -> list[bytes]:
        """The leaves as stored. Data that does not decompress, or does not unpack to ``count`` leaves, is a
        ``TamperedError``; a dictionary this installation cannot vouch for, a ``DictionaryError``."""
        raw, ends = self._unpacked()
        return [raw[a:b] for a, b in zip(ends, islice(ends, 1, None))]

    def leaf(self, pos: int) -> bytes:
        """Leaf ``pos`` of the chunk (0-based), checked as ``leaves`` checks them all."""
        raw, ends = self._unpacked()
        return raw[ends[pos]:ends[pos + 1]]

    def _unpacked(self) -> tuple[bytes, list[int]]:
        where = f"log entries {self.first + 1}..{self.first + self.count}"
        try:
            raw = _decompress(self.data)
        except DictionaryError as e:
            raise DictionaryError(f"{where}: {e}") from None
        except zstandard.ZstdError as e:
            raise TamperedError(f"{where}: the stored chunk does not decompress ({e})") from None
        count, n = self.count, len(raw)
        if count < 0 or n < 4 * count:
            raise TamperedError(f"{where}: the stored chunk is damaged (shorter than its {count} lengths)")
        ends = list(accumulate(struct.unpack_from(f">{count}I", raw), initial=4 * count))  # one call, not one a leaf
        if ends[-1] != n:
            raise TamperedError(f"{where}: the stored chunk is damaged (its lengths do not add up to its size)")
        return raw, ends


class DictionaryError(TamperedError):
    """A chunk names a zstandard dictionary this installation does not have, or the installation's dictionary
    file is missing or not the one its pinned sha256 says. Nothing is decoded with a dictionary that is not
    exactly the pinned one."""

    code = "dictionary_invalid"


def _entry_ids(blob: bytes) -> list[str]:
    try:
        return _codec("unzstd", zstandard.ZstdDecompressor).decompress(blob).decode("utf-8").split("\n")
    except (zstandard.ZstdError, UnicodeDecodeError) as e:
        raise TamperedError(f"a chunk's index of entry ids is damaged ({e})") from None


def pack(leaves: Sequence[bytes], ids: Sequence[str]) -> tuple[bytes, bytes]:
    """(data, ids) blobs of a chunk. ``data``: the leaves' lengths (4 bytes each, big-endian) then the leaves,
    as one zstd frame; below ``DICTIONARY_BELOW`` bytes, ``zd1:`` + the sha256 of ``WRITE_DICTIONARY`` + a
    frame made with that dictionary. ``ids``: one zstd frame of the ids, newline-separated."""
    plain = _codec("zstd", lambda: zstandard.ZstdCompressor(level=ZSTD_LEVEL))
    raw = b"".join([struct.pack(f">{len(leaves)}I", *map(len, leaves)), *leaves])
    if len(raw) < DICTIONARY_BELOW:
        small = _codec("zstd+dict", _dictionary_compressor)
        data = b"".join((_WITH_DICTIONARY, bytes.fromhex(WRITE_DICTIONARY), small.compress(raw)))
    else:
        data = plain.compress(raw)
    return data, plain.compress("\n".join(ids).encode("utf-8"))


def _codec(name: str, make: Callable[[], Any]) -> Any:
    codec = _codecs.__dict__.get(name)
    if codec is None:
        codec = _codecs.__dict__[name] = make()
    return codec


def _decompress(data: bytes) -> bytes:
    if data[:4] != _WITH_DICTIONARY:
        return _codec("unzstd", zstandard.ZstdDecompressor).decompress(data)
    if len(data) < 36:
        raise zstandard.ZstdError("a dictionary frame shorter than its header")
    key, frame = data[4:36].hex(), memoryview(data)[36:]
    unzstd = _codec("unzstd+" + key, lambda: zstandard.ZstdDecompressor(dict_data=_dictionary(key)))
    made_with, pinned = zstandard.get_frame_parameters(frame).dict_id, _dictionary(key).dict_id()
    if made_with != pinned:  # a frame of another (or of a raw-content) dictionary would decode to garbage
        raise DictionaryError(f"the chunk names dictionary {key} (zstd id {pinned}) but its frame was made with "
                              f"zstd dictionary id {made_with}; nothing is decoded")
    return unzstd.decompress(frame)


@cache
def _dictionary(key: str) -> zstandard.ZstdCompressionDict:
    """The dictionary ``DICTIONARIES`` pins under ``key``, its file checked against that sha256
    (``DictionaryError`` if the key is unknown, the file missing or altered)."""
    name = DICTIONARIES.get(key)
    if name is None:
        raise DictionaryError(f"compressed with zstandard dictionary {key}, which this version does not know "
                              "(a newer version wrote it, or the chunk was altered); nothing is decoded")
    try:
        data = (Path(__file__).parent / name).read_bytes()
    except OSError as e:
        raise DictionaryError(f"the zstandard dictionary {name} ({key}) is missing from this installation: "
                              f"{e.strerror or e}; reinstall dacp") from None
    actual = sha256(data).hexdigest()
    if actual != key:
        raise DictionaryError(f"the zstandard dictionary {name} of this installation is not the pinned one "
                              f"(sha256 {actual}, not {key}); reinstall dacp")
    return zstandard.ZstdCompressionDict(data)


def _dictionary_compressor() -> zstandard.ZstdCompressor:
    """The compressor of small chunks. An installation without its pinned dictionary refuses to append
    (``DictionaryError``) rather than write what it could not read back itself."""
    return zstandard.ZstdCompressor(level=DICTIONARY_LEVEL, dict_data=_dictionary(WRITE_DICTIONARY))


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
        grow = Growth(frontier.size, frontier.hashes, on_node=lambda lv, ix, h: nodes.append((lv, ix, h)))
        hashes = [sha256(b"\x00" + x).digest() for x in leaves]  # merkle.leaf_hash, without a call a leaf
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
        the 64 nearest chunks by least id hold it; any other id is found among every candidate chunk. Only
        the candidates' ids are read (a chunk's row is ~100 KB); the whole row only of the one holding it."""
        for sql in ("SELECT c.first, c.ids FROM (SELECT first, min_id, max_id FROM tree_chunks WHERE min_id <= ? "
                    "ORDER BY min_id DESC LIMIT 64) AS near JOIN tree_chunks AS c ON c.first = near.first "
                    "WHERE near.max_id >= ? ORDER BY near.min_id DESC",
                    "SELECT first, ids FROM tree_chunks WHERE max_id >= ? AND min_id <= ? ORDER BY first"):
            for first, blob in self.db.execute(sql, (entry_id, entry_id)).fetchall():
                ids = _entry_ids(bytes(blob))
                if entry_id in ids:
                    row = self.db.execute(f"SELECT {self._COLS} FROM tree_chunks WHERE first = ?", (first,)).fetchone()
                    return _chunk(row), ids.index(entry_id)
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

    def node_reader(self) -> NodeReader:
        """A ``get_node`` for the proofs of one read: each node read once, a block's leaf hashes in one query."""
        return NodeReader(self.get_node, self.leaf_hashes)

    def leaf_hashes(self, lo: int, hi: int, partial: bool = False) -> list[bytes]:
        """The stored leaf hashes of leaves [lo, hi) (``partial``: those of them stored, from ``lo`` on)."""
        out: list[bytes] = []
        # From the chunk holding ``lo`` (a keyed read) up: ``first + count > lo`` alone cannot use the key, and
        # every row it scans is a page of its own (a chunk's row is ~100 KB).
        rows = self.db.execute("SELECT first, count, hashes FROM tree_chunks WHERE first < ? AND first + count > ? "
                               "AND first >= COALESCE((SELECT MAX(first) FROM tree_chunks WHERE first <= ?), 0) "
                               "ORDER BY first", (hi, lo, lo)).fetchall()
        for first, count, blob in rows:
            blob = bytes(blob)
            a, b = max(lo, first), min(hi, first + count)
            if a != lo + len(out):  # a chunk missing before this one: what follows is not theirs
                break
            out += [blob[(i - first) * 32:(i - first + 1) * 32] for i in range(a, b)]
        if len(out) != hi - lo and not partial:
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
