"""An attacker with the database file: triggers dropped, chunks rewritten, the tree's nodes rebuilt."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from rules.audit import merkle
from rules.audit.store import NODE_LEVEL, Chunk, pack


def raw(path: Path) -> sqlite3.Connection:
    """A connection around the append-only triggers (all dropped)."""
    c = sqlite3.connect(path, isolation_level=None)
    for (name,) in c.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        c.execute(f"DROP TRIGGER {name}")
    return c


def chunk_row(c: sqlite3.Connection, first: int) -> Chunk:
    r = c.execute("SELECT first, count, recorded_at, hashes, ids, data FROM tree_chunks WHERE first <= ? "
                  "ORDER BY first DESC LIMIT 1", (first,)).fetchone()
    return Chunk(r[0], r[1], r[2], bytes(r[3]), bytes(r[4]), bytes(r[5]))


def rewrite_chunk(c: sqlite3.Connection, first: int, leaves: list[bytes], rehash: bool) -> None:
    """Store ``leaves`` in the chunk starting at ``first``; ``rehash``: their leaf hashes too."""
    ch = chunk_row(c, first)
    data, _ = pack(leaves, ch.entry_ids())
    hashes = b"".join(merkle.leaf_hash(x) for x in leaves) if rehash else ch.hashes
    c.execute("UPDATE tree_chunks SET data = ?, hashes = ? WHERE first = ?", (data, hashes, ch.first))


def edit_entry(path: Path, index: int, old: bytes, new: bytes, thorough: bool = True) -> None:
    """Replace ``old`` by ``new`` in entry ``index`` (0-based); ``thorough``: re-hash and rebuild the nodes,
    so only a signed checkpoint can tell."""
    c = raw(path)
    ch = chunk_row(c, index)
    leaves = ch.leaves()
    assert old in leaves[index - ch.first], (old, leaves[index - ch.first][:200])
    leaves[index - ch.first] = leaves[index - ch.first].replace(old, new)
    rewrite_chunk(c, ch.first, leaves, rehash=thorough)
    if thorough:
        recompute_nodes(c)
    c.close()


def recompute_nodes(c: sqlite3.Connection) -> None:
    """Every stored interior node rebuilt from the (edited) leaf hashes."""
    nodes: list[tuple[int, int, bytes]] = []
    cr = merkle.CompactRange(on_node=lambda lv, ix, h: nodes.append((lv, ix, h)) if lv >= NODE_LEVEL else None)
    for (blob,) in c.execute("SELECT hashes FROM tree_chunks ORDER BY first").fetchall():
        blob = bytes(blob)
        for i in range(0, len(blob), 32):
            cr.append(blob[i:i + 32])
    c.execute("DELETE FROM tree_nodes")
    c.executemany("INSERT INTO tree_nodes VALUES (?, ?, ?)", nodes)
