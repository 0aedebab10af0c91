"""The verifiable log: an RFC 9162 Merkle tree of typed entries (SQLite by default; PostgreSQL by URL).

Decisions, the ledger's journal entries, policy approvals and every other record are leaves
(``rules.audit.entries``), appended in order, a batch's chunk at a time, into one tree (``rules.audit.store``).
Checkpoints signed with the operator's Ed25519 key (C2SP tlog-checkpoint in a signed note) fix the tree's
size and root; anyone holding one can check that the log still extends it (``verify``), and a receipt
(``prove``) lets an auditor check one entry offline, with no database.

Every read verifies what it serves (``get``): the entry's bytes must hash to their stored leaf hash and the
leaf must be included in the tree of the newest checkpoint that covers it (else the current tree), or the
read is refused with ``TamperedError``.

Concurrent writers (threads, processes, replicas) serialise their appends: SQLite inside ``BEGIN
IMMEDIATE`` transactions, PostgreSQL under a transaction-scoped advisory lock; each reads the true tree
size under it, and the chunk's first index is the primary key, so a fork is refused even if that were
bypassed. ``append`` joins a transaction the caller already opened on the same ``Database`` (the ledger
commits its rows and their entries together).

Bundles are stored once, content-addressed by their hash, with their source files (rows protected by
update and delete triggers); ``verify`` names every entry whose bundle is missing or altered.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

from adapters.storage.sql import Database, open_database
from rules.audit import entries as fmt
from rules.audit import merkle
from rules.audit.entries import Entry, RawJSON
from rules.audit.store import TreeStore
from rules.errors import InputError, StorageError, TamperedError
from rules.policy.loader import load_bundle_from_sources
from rules.policy.model import Bundle
from rules.values import now_utc, utc_text

if TYPE_CHECKING:  # checkpoints, receipts and verification are imported where used: they load cryptography,
    # which appending and reading entries never need (start-up time, issue 18)
    from rules.audit.checkpoint import Signer, Verifier
    from rules.audit.receipt import Receipt
    from rules.audit.verify import VerifyResult

LOG_LOCK = "dacp.decision_log"
SCHEMA_LOCK = "dacp.schema"
TREE_FORMAT = "1"
Record = tuple[str, str, "Bundle | None", Any]  # (kind, entry_id, bundle, body)

__all__ = ["DecisionLog", "Entry", "RawJSON", "VerifyResult", "LegacyLogError"]


def __getattr__(name: str) -> Any:
    """``VerifyResult``, re-exported from ``rules.audit.verify``, imported when first asked for."""
    if name == "VerifyResult":
        from rules.audit.verify import VerifyResult
        return VerifyResult
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class LegacyLogError(StorageError):
    """The database holds a hash-chained log of an earlier version: ``dacp audit migrate`` folds it in. Not
    retryable: nothing changes until an operator migrates it."""

    code = "log_migration_required"
    retryable = False


class DecisionLog:
    """One verifiable log. Cheap to open; open one per process (or thread).

    ``path`` is a file path, ``sqlite:///path`` or a ``postgresql://`` URL; or pass an open ``database``
    (``adapters.storage.sql``) to share it with another store (the ledger), which then owns it.
    ``origin`` names a new log in its checkpoints (default: a random name, kept in the log)."""

    def __init__(self, path: str | Path | None = None, *, timeout_s: float = 60.0, database: Database | None = None,
                 origin: str | None = None, legacy_ok: bool = False):
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
        self.tree = TreeStore(database)
        try:
            self._init(origin, legacy_ok)
        except sqlite3.DatabaseError as e:
            raise StorageError(f"{self.where}: cannot open the decision log: {e}") from None
        self._stored_bundles: set[str] = set()
        # Seconds spent appending, by step (and the entries appended): where a logged decision's time goes.
        self.timings: dict[str, float] = dict.fromkeys(("encode", "lock", "tree", "insert", "commit", "entries",
                                                        "bytes"), 0)

    def _init(self, origin: str | None, legacy_ok: bool) -> None:
        with self.db.transaction([SCHEMA_LOCK]):
            legacy = self._legacy_entries()
            if not self._tree_exists():  # PostgreSQL DDL takes table locks: never while others append
                self.tree.create()
            row = self.db.execute("SELECT value FROM meta WHERE key = 'tree_format'").fetchone()
            if row is None:
                if legacy and not legacy_ok:
                    raise LegacyLogError(
                        f"{self.where}: this decision log is in the hash-chained format of an earlier version "
                        f"({legacy} entries): run `dacp audit migrate` to verify it and fold it into the tree")
                import uuid  # only when a new log is created

                self.db.execute("INSERT INTO meta VALUES ('tree_format', ?) ON CONFLICT (key) DO NOTHING", (TREE_FORMAT,))
                self.db.execute("INSERT INTO meta VALUES ('origin', ?) ON CONFLICT (key) DO NOTHING",
                                (origin or f"dacp-log/{uuid.uuid4().hex[:16]}",))
            elif row[0] != TREE_FORMAT:
                raise StorageError(f"{self.where}: decision log tree format {row[0]} is not known to this version")
            self.origin = self.db.execute("SELECT value FROM meta WHERE key = 'origin'").fetchone()[0]

    def _tree_exists(self) -> bool:
        if self.db.kind == "postgresql":
            return self.db.execute("SELECT to_regclass('tree_checkpoints')").fetchone()[0] is not None
        return False  # SQLite: CREATE ... IF NOT EXISTS is cheap and takes no lock others wait on

    def _legacy_entries(self) -> int:
        if self.db.kind == "postgresql":
            if self.db.execute("SELECT to_regclass('log')").fetchone()[0] is None:
                return 0
        elif self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'log'").fetchone() is None:
            return 0
        return self.db.execute("SELECT COUNT(*) FROM log").fetchone()[0]

    def close(self) -> None:
        if self._owns_db:
            self.db.close()

    def __enter__(self) -> "DecisionLog":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- writing -------------------------------------------------------------------------------
    def store_bundle(self, bundle: Bundle) -> None:
        if bundle.hash in self._stored_bundles:
            return
        with self.db.transaction():
            self._store_bundle_tx(bundle)
        self._stored_bundles.add(bundle.hash)

    def _store_bundle_tx(self, bundle: Bundle) -> None:
        self.db.execute("INSERT INTO bundles VALUES (?, ?, ?, ?, ?) ON CONFLICT (hash) DO NOTHING",
                        (bundle.hash, bundle.name, bundle.version, json.dumps(dict(bundle.sources), sort_keys=True),
                         utc_text(now_utc(), "microseconds")))

    def append(self, records: Iterable[Record]) -> list[Entry]:
        """Append (kind, entry_id, bundle, body) records atomically, in order, as consecutive leaves. Returns
        the entries (their bodies are the records' own objects). A body is plain JSON data, or a ``RawJSON``
        the caller encoded (stored as it is). Inside a transaction the caller opened on ``self.db``, the
        records commit (or roll back) with it. The entries of one call are recorded at one time.

        The batch doors pause the cyclic collector around a batch (``rules.collector``); this does not."""
        records = list(records)
        if not records:
            return []
        clock = time.perf_counter
        t0 = clock()
        at = utc_text(now_utc(), "microseconds")
        encode, body_bytes = fmt.encode_v1, fmt.body_bytes
        leaves = [encode(kind, eid, at, b.hash if b is not None else None, body_bytes(body, eid))
                  for kind, eid, b, body in records]
        self.timings["encode"] += clock() - t0
        first, hashes = self.append_leaves(leaves, [r[1] for r in records], at,
                                           [r[2] for r in records if r[2] is not None])
        return [Entry(first + i, eid, kind, at, b.hash if b is not None else None, body, h.hex())
                for i, ((kind, eid, b, body), h) in enumerate(zip(records, hashes))]

    def append_leaves(self, leaves: Sequence[bytes], ids: Sequence[str], at: str, bundles: Iterable[Bundle] = (),
                      unique: bool = True) -> tuple[int, list[bytes]]:
        """Append encoded leaves (``rules.audit.entries``) as one chunk; (first index, leaf hashes).
        ``unique``: refuse ids the log holds already (a migration, whose ids were unique, skips the check)."""
        clock = time.perf_counter
        t1 = clock()
        try:
            with self.db.transaction([LOG_LOCK]):
                for b in {b.hash: b for b in bundles}.values():
                    if b.hash not in self._stored_bundles:
                        self._store_bundle_tx(b)
                t2 = clock()
                first, hashes = self.tree.append(leaves, ids, at, unique)
                t3 = clock()
        except (sqlite3.IntegrityError, sqlite3.OperationalError) as e:
            raise StorageError(f"{self.where}: cannot append to the decision log: {e}") from None
        t4 = clock()
        tm = self.timings
        tm["lock"] += t2 - t1
        tm["tree"] += t3 - t2
        tm["commit"] += t4 - t3  # zero inside a caller's transaction: its commit is the caller's
        tm["entries"] += len(leaves)
        tm["bytes"] += sum(map(len, leaves))
        return first, hashes

    def checkpoint(self, signer: Signer) -> str:
        """Sign the current tree head (origin, size, root) and keep the note; returns the note text."""
        from rules.audit.checkpoint import Checkpoint, sign_checkpoint

        with self.db.transaction([LOG_LOCK]):
            size = self.tree.size()
            root = self.tree.root(size)
            note = sign_checkpoint(Checkpoint(self.origin, size, root), [signer])
            self.tree.add_checkpoint(size, root, note, utc_text(now_utc(), "microseconds"))
        return note

    # -- reading -------------------------------------------------------------------------------
    def leaf(self, entry_id: str) -> tuple[int, bytes]:
        """(index, bytes) of an entry, checked against its stored leaf hash and its inclusion in the tree
        of the newest checkpoint covering it (else the current tree). Refused if either fails."""
        index, data, _ = self._verified_leaf(entry_id)
        return index, data

    def _verified_leaf(self, entry_id: str) -> tuple[int, bytes, merkle.GetNode]:
        """``leaf``, and the node reader its inclusion proof was read with (a receipt's proof is the same)."""
        found = self.tree.find(entry_id)
        if found is None:
            raise InputError(f"no decision with id {entry_id!r} in {self.where}", "decision id")
        chunk, pos = found
        index = chunk.first + pos
        data = chunk.leaf(pos)
        stored = chunk.hashes[pos * 32:(pos + 1) * 32]
        if merkle.leaf_hash(data) != stored:
            raise TamperedError(f"{self.where}: entry {index + 1} ({entry_id}) was modified: its bytes no longer "
                                "hash to its leaf; run `dacp audit verify`")
        if self._header(data, index)[1] != entry_id:
            raise TamperedError(f"{self.where}: entry {index + 1} is not {entry_id}: the index of ids was altered")
        size, root, what = self._anchor(index)
        nodes = self.tree.node_reader()
        try:
            merkle.verify_inclusion(stored, index, size, merkle.inclusion_proof(index, size, nodes), root)
        except (merkle.ProofError, StorageError) as e:
            raise TamperedError(f"{self.where}: entry {index + 1} ({entry_id}) is not in the tree of {what}: {e}; "
                                "run `dacp audit verify`") from None
        return index, data, nodes

    def _header(self, data: bytes, index: int) -> tuple[str, str, str, str | None]:
        try:
            return fmt.header_v1(data)
        except (ValueError, TypeError) as e:  # its bytes match its stored hash: written so, or both rewritten
            raise TamperedError(f"{self.where}: entry {index + 1} does not decode ({e}); run `dacp audit verify`") from None

    def _anchor(self, index: int) -> tuple[int, bytes, str]:
        """The tree a read is checked against: the newest stored checkpoint covering ``index``, else now."""
        latest = self.tree.latest_checkpoint()
        if latest is not None and latest[0] > index:
            return latest[0], latest[1], f"the checkpoint of size {latest[0]} signed at {latest[3]}"
        size = self.tree.size()
        return size, self.tree.root(size), f"the current tree (size {size}; no checkpoint covers it yet)"

    def get(self, entry_id: str) -> Entry:
        """The entry, verified (see ``leaf``)."""
        index, data = self.leaf(entry_id)
        return fmt.decode(data, index, merkle.leaf_hash(data).hex())

    def entries(self, kind: str | None = None) -> Iterator[Entry]:
        """Every entry (of ``kind``) in order, each checked against its stored leaf hash; flat memory."""
        for chunk in self.tree.chunks():
            hashes = chunk.hashes
            for pos, data in enumerate(chunk.leaves()):
                h = merkle.leaf_hash(data)
                index = chunk.first + pos
                if h != hashes[pos * 32:(pos + 1) * 32]:
                    raise TamperedError(f"{self.where}: entry {index + 1} was modified: its bytes no longer hash "
                                        "to its leaf; run `dacp audit verify`")
                if kind is None or self._header(data, index)[0] == kind:
                    yield fmt.decode(data, index, h.hex())

    def count(self) -> int:
        return self.tree.size()

    def bundle(self, bundle_hash: str) -> Bundle:
        r = self.db.execute("SELECT sources FROM bundles WHERE hash = ?", (bundle_hash,)).fetchone()
        if r is None:
            raise StorageError(f"{self.where}: bundle {bundle_hash} is not stored; the decision cannot be replayed")
        bundle = load_bundle_from_sources(json.loads(r[0]), origin=f"stored bundle {bundle_hash[:12]}", stored=True)
        if bundle.hash != bundle_hash:
            raise TamperedError(f"{self.where}: stored bundle {bundle_hash} was modified (its content hashes to "
                                f"{bundle.hash})")
        return bundle

    def prove(self, entry_id: str) -> Receipt:
        """A receipt of the entry under the newest stored checkpoint (``dacp audit checkpoint`` makes one)."""
        from rules.audit.receipt import make_receipt

        index, data, nodes = self._verified_leaf(entry_id)
        latest = self.tree.latest_checkpoint()
        if latest is None or latest[0] <= index:
            raise InputError(f"no signed checkpoint covers entry {index + 1} yet: run `dacp audit checkpoint`",
                             "decision id")
        return make_receipt(data, index, latest[2], nodes)  # the nodes read for the check above, not again

    # -- verification --------------------------------------------------------------------------
    def verify(self, checkpoint: str | None = None, verifiers: Sequence[Verifier] = ()) -> VerifyResult:
        """Stream the whole tree: every leaf against its hash, the tree against every stored checkpoint and
        ``checkpoint`` (a signed note, opened with ``verifiers``), and every entry's bundle."""
        from rules.audit.checkpoint import open_checkpoint
        from rules.audit.verify import VerifyResult, verify_tree

        external = None
        if checkpoint is not None:
            if not verifiers:
                raise InputError("checking a checkpoint needs the operator's public key (--key or settings "
                                 "[audit] public_key)", "checkpoint")
            external, _ = open_checkpoint(checkpoint, verifiers)
            if external.origin != self.origin:
                return VerifyResult(False, self.tree.size(), "", f"the checkpoint is for log {external.origin!r}, "
                                    f"this log is {self.origin!r}", None)
        return verify_tree(self.tree, self.origin, self.bundle, external, verifiers)

