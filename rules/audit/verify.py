"""Streaming verification of the verifiable log: flat memory, whatever its size.

One pass over the stored chunks, in order:

* each chunk must start where the previous one ended (a gap is a deletion, an overlap an insertion);
* each leaf's bytes must hash to its stored leaf hash (an edit), must decode, and must carry the id the
  chunk's index of ids gives it (an index pointed at another entry);
* the tree grown from the leaf hashes must have, at each stored checkpoint's size, that checkpoint's root
  (a rewrite before it, re-hashed or not, or a reorder), and likewise for an external checkpoint an auditor
  holds — a log shorter than that checkpoint was truncated, a different root at its size is a fork or a
  rewrite; later entries are legitimate appends;
* every interior node the store keeps must equal the one recomputed (proofs are built from them);
* every entry's bundle must be stored and still hash to its name.

Memory: one chunk's leaves at a time, the tree's frontier (log2 n hashes), the recomputed interior nodes
of 256 leaves and more (n/128 hashes), and the set of bundles seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from rules.audit import entries as fmt
from rules.audit import merkle
from rules.audit.checkpoint import Checkpoint, Verifier, open_checkpoint
from rules.audit.store import NODE_LEVEL, TreeStore
from rules.errors import StorageError


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int
    head: str  # the tree's root (hex) at its size
    problem: str | None = None
    seq: int | None = None  # first entry affected (1-based), when one is
    checkpoints: int = 0  # stored checkpoints the tree was checked against
    checked: Checkpoint | None = None  # the external checkpoint, when one was given
    missing_bundles: dict[str, list[str]] = field(default_factory=dict)  # bundle -> the first entries needing it

    def render(self) -> str:
        if not self.ok:
            return f"decision log TAMPERED: {self.problem}"
        extra = f"; consistent with {self.checkpoints} stored checkpoint(s)" if self.checkpoints else ""
        if self.checked is not None:
            extra += f"; extends the given checkpoint of size {self.checked.size}"
        return f"decision log OK: {self.entries} entries, tree intact; root {self.head}{extra}"


def verify_tree(tree: TreeStore, origin: str, check_bundle: Callable[[str], object], external: Checkpoint | None,
                verifiers: Sequence[Verifier]) -> VerifyResult:
    """One streaming pass (see the module docstring). ``check_bundle(hash)`` raises ``StorageError`` for a
    bundle that is missing or altered."""
    stored = tree.checkpoints()
    marks: dict[int, list[tuple[str, bytes]]] = {}
    for size, root, note, at in stored:
        if verifiers:
            try:
                open_checkpoint(note, verifiers, origin=origin)
            except StorageError as e:
                return VerifyResult(False, tree.size(), "", f"the stored checkpoint of size {size} ({at}) does not "
                                    f"verify: {e}", None)
        marks.setdefault(size, []).append((f"the stored checkpoint of size {size} ({at})", root))
    if external is not None:
        marks.setdefault(external.size, []).append((f"the given checkpoint of size {external.size}", external.root))

    nodes: dict[tuple[int, int], bytes] = {}
    grow = merkle.CompactRange(on_node=lambda lv, ix, h: nodes.__setitem__((lv, ix), h) if lv >= NODE_LEVEL else None)
    bundles: dict[str, list[str]] = {}
    n = 0

    def check_marks(size: int) -> str | None:
        for what, root in marks.get(size, ()):
            if grow.root() != root:
                return (f"the log no longer extends {what}: the tree of its first {size} entries has another root "
                        "(an entry before it was rewritten, re-hashed, reordered or removed, or this is a fork)")
        return None

    if (problem := check_marks(0)) is not None:
        return VerifyResult(False, 0, "", problem, 1)
    for chunk in tree.chunks():
        if chunk.first != n:
            what = (f"entries {n + 1}..{chunk.first} were deleted" if chunk.first > n
                    else f"entries {chunk.first + 1}..{n} appear twice (an inserted chunk)")
            return VerifyResult(False, n, grow.root().hex(), what, n + 1)
        try:
            leaves = chunk.leaves()
            ids = chunk.entry_ids()
        except StorageError as e:
            return VerifyResult(False, n, grow.root().hex(), str(e), n + 1)
        hashes = chunk.hashes
        if len(hashes) != 32 * chunk.count or len(ids) != chunk.count:
            return VerifyResult(False, n, grow.root().hex(), f"the chunk of entries {n + 1}..{n + chunk.count} is "
                                "damaged (its hashes or ids do not match its count)", n + 1)
        for pos, data in enumerate(leaves):
            h = merkle.leaf_hash(data)
            index = chunk.first + pos
            if h != hashes[pos * 32:(pos + 1) * 32]:
                return VerifyResult(False, n, grow.root().hex(), f"entry {index + 1} ({ids[pos]}) was modified: its "
                                    "bytes no longer hash to its leaf", index + 1)
            try:
                kind, entry_id, _, bundle = fmt.header_v1(data)
            except (ValueError, TypeError) as e:
                return VerifyResult(False, n, grow.root().hex(), f"entry {index + 1} does not decode ({e})", index + 1)
            if entry_id != ids[pos]:
                return VerifyResult(False, n, grow.root().hex(), f"entry {index + 1} is {entry_id}, but the index "
                                    f"of ids says {ids[pos]}", index + 1)
            if bundle is not None:
                seen = bundles.setdefault(bundle, [])
                if len(seen) < 5:
                    seen.append(entry_id)
            grow.append(h)
            n += 1
            if (problem := check_marks(n)) is not None:
                return VerifyResult(False, n, grow.root().hex(), problem, None)
    head = grow.root().hex()
    for size in sorted(marks):
        if size > n:
            what = marks[size][0][0]
            return VerifyResult(False, n, head, f"the log has {n} entries but {what} vouches for {size}: "
                                f"entries {n + 1}..{size} were removed from the end (truncated), or this is "
                                "another log", n + 1)
    for (level, index), h in _stored_nodes(tree):
        if nodes.get((level, index)) != h:
            return VerifyResult(False, n, head, f"the stored interior node ({level}, {index}) of the tree does not "
                                "match its leaves (proofs from it would be false)", None)
    missing = _missing_bundles(check_bundle, bundles)
    if missing:
        names = "; ".join(f"bundle {b[:12]} needed by {', '.join(ids)}" for b, ids in missing.items())
        return VerifyResult(False, n, head, f"stored bundles are missing or altered: {names}", None,
                            missing_bundles=missing)
    return VerifyResult(True, n, head, None, None, checkpoints=len(stored), checked=external)


def _stored_nodes(tree: Any) -> Any:
    for level, index, h in tree.db.execute("SELECT level, idx, hash FROM tree_nodes ORDER BY level, idx"):
        yield (level, index), bytes(h)


def _missing_bundles(check_bundle: Callable[[str], object], wanted: dict[str, list[str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for h, ids in wanted.items():
        try:
            check_bundle(h)
        except StorageError:
            out[h] = ids
    return out
