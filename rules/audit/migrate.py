"""``dacp audit migrate``: verify a hash-chained log of an earlier version and fold it into the tree.

The old chain is verified first (a log that fails is not migrated: nothing is written). Then, in one
transaction, the tree's first leaf records what was folded in (the old head hash, its entry count and hash
scheme) and every old entry follows as a leaf of its own, in order, with its id, kind, time, bundle and body
exactly as stored. The old table stays as it was (append-only; nothing writes it again), so anyone can check
the first leaf against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from adapters.storage.sql import open_database
from rules.audit import entries as fmt
from rules.audit import legacy
from rules.audit.log import LOG_LOCK, DecisionLog
from rules.engine.ids import new_id
from rules.errors import InputError, TamperedError
from rules.values import now_utc, utc_text

CHUNK = 500


@dataclass(frozen=True)
class Migration:
    entries: int  # old entries folded in
    head: str  # the old chain's head hash, recorded in the first leaf
    scheme: int
    root: str  # the tree's root after the migration (hex)

    def render(self) -> str:
        return (f"migrated {self.entries} entries of the hash-chained log (scheme {self.scheme}, head {self.head}) "
                f"into the tree: {self.entries + 1} leaves, root {self.root}")


def migrate(target: str | Path) -> Migration:
    db = open_database(target)
    try:
        if not legacy.present(db):
            raise InputError(f"nothing to migrate: {db.where} holds no hash-chained log", "log")
        chain = legacy.verify_chain(db)
        if not chain.ok:
            raise TamperedError(f"{db.where}: the old log does not verify, so it is not migrated (nothing was "
                                f"written): {chain.problem}")
        log = DecisionLog(database=db, legacy_ok=True)
        with db.transaction([LOG_LOCK]):
            if log.count():
                raise InputError(f"{db.where} is migrated already: its tree has {log.count()} entries", "log")
            at = utc_text(now_utc(), "microseconds")
            record = {"from": "hash-chain", "hash_scheme": chain.scheme, "entries": chain.entries, "head": chain.head}
            first_id = new_id()
            log.append_leaves([fmt.encode_v1("log.migration", first_id, at, None, fmt.body_bytes(record, first_id))],
                              [first_id], at, unique=False)
            leaves: list[bytes] = []
            ids: list[str] = []
            for r in legacy.rows(db):
                leaves.append(fmt.encode_v1(r.kind, r.entry_id, r.recorded_at, r.bundle_hash, r.body.encode("utf-8")))
                ids.append(r.entry_id)
                if len(leaves) == CHUNK:
                    log.append_leaves(leaves, ids, at, unique=False)
                    leaves, ids = [], []
            if leaves:
                log.append_leaves(leaves, ids, at, unique=False)
            root = log.tree.root().hex()
        return Migration(chain.entries, chain.head, chain.scheme, root)
    finally:
        db.close()
