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
from hashlib import sha256
from typing import Any, Callable, Sequence

from rules.audit import entries as fmt
from rules.audit import merkle
from rules.audit.checkpoint import Checkpoint, Verifier, open_checkpoint
from rules.audit.nodes import Growth
from rules.audit.store import Chunk, TreeStore
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

    kept: dict[int, bytearray] = {}  # level -> its recomputed interior nodes, 32 bytes each, in index order
    grow = Growth(0, (), on_node=lambda lv, ix, h: kept.setdefault(lv, bytearray()).extend(h))
    bundles: dict[str, list[str]] = {}
    full: set[str] = set()  # bundles with their 5 entries named
    sizes = sorted(marks)
    ahead = 0  # sizes[ahead]: the first checkpoint size beyond the entries checked so far
    n = 0

    def check_marks(size: int) -> str | None:
        for what, root in marks.get(size, ()):
            if grow.root() != root:
                return (f"the log no longer extends {what}: the tree of its first {size} entries has another root "
                        "(an entry before it was rewritten, re-hashed, reordered or removed, or this is a fork)")
        return None

    def note_bundles(heads: Sequence[Sequence[Any]]) -> None:
        for _, entry_id, _, bundle in heads:
            if bundle is not None and bundle not in full:
                seen = bundles.setdefault(bundle, [])
                seen.append(entry_id)
                if len(seen) == 5:
                    full.add(bundle)

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
        while ahead < len(sizes) and sizes[ahead] <= n:
            ahead += 1
        # The whole chunk at once: every leaf hash, every header, the ids compared in bulk. Should anything
        # fail, the chunk is gone through again leaf by leaf, which names the first failure as ever.
        leaf_hashes = [sha256(b"\x00" + data).digest() for data in leaves]  # merkle.leaf_hash
        heads = fmt.headers_v1(leaves) if b"".join(leaf_hashes) == hashes else None
        if heads is None or [h[1] for h in heads] != ids:
            failed = _leaf_by_leaf(chunk, leaves, ids, grow, check_marks, note_bundles)
            if failed is not None:
                return failed
            n += chunk.count
            continue
        if {h[3] for h in heads}.difference(full, (None,)):  # a bundle with fewer than 5 entries named yet
            note_bundles(heads)
        pos = 0
        while ahead < len(sizes) and sizes[ahead] <= n + chunk.count:  # checkpoints inside the chunk: grow to each
            size = sizes[ahead]
            grow.extend(leaf_hashes[pos:size - n])
            pos = size - n
            if (problem := check_marks(size)) is not None:
                return VerifyResult(False, size, grow.root().hex(), problem, None)
            ahead += 1
        grow.extend(leaf_hashes[pos:] if pos else leaf_hashes)
        n += chunk.count
    head = grow.root().hex()
    for size in sorted(marks):
        if size > n:
            what = marks[size][0][0]
            return VerifyResult(False, n, head, f"the log has {n} entries but {what} vouches for {size}: "
                                f"entries {n + 1}..{size} were removed from the end (truncated), or this is "
                                "another log", n + 1)
    for (level, index), h in _stored_nodes(tree):
        row = kept.get(level)
        if row is None or index < 0 or row[32 * index:32 * index + 32] != h:
            return VerifyResult(False, n, head, f"the stored interior node ({level}, {index}) of the tree does not "
                                "match its leaves (proofs from it would be false)", None)
    missing = _missing_bundles(check_bundle, bundles)
    if missing:
        names = "; ".join(f"bundle {b[:12]} needed by {', '.join(ids)}" for b, ids in missing.items())
        return VerifyResult(False, n, head, f"stored bundles are missing or altered: {names}", None,
                            missing_bundles=missing)
    return VerifyResult(True, n, head, None, None, checkpoints=len(stored), checked=external)


def _leaf_by_leaf(chunk: Chunk, leaves: list[bytes], ids: list[str], grow: Growth,
                  check_marks: Callable[[int], str | None],
                  note_bundles: Callable[[Sequence[Sequence[Any]]], None]) -> VerifyResult | None:
    """A chunk that failed a check in bulk, leaf by leaf: the first failure, named (None: none after all)."""
    hashes, first = chunk.hashes, chunk.first
    for pos, data in enumerate(leaves):
        h = merkle.leaf_hash(data)
        index = first + pos
        if h != hashes[pos * 32:(pos + 1) * 32]:
            return VerifyResult(False, index, grow.root().hex(), f"entry {index + 1} ({ids[pos]}) was modified: its "
                                "bytes no longer hash to its leaf", index + 1)
        try:
            head = fmt.header_v1(data)
        except (ValueError, TypeError) as e:
            return VerifyResult(False, index, grow.root().hex(), f"entry {index + 1} does not decode ({e})", index + 1)
        if head[1] != ids[pos]:
            return VerifyResult(False, index, grow.root().hex(), f"entry {index + 1} is {head[1]}, but the index "
                                f"of ids says {ids[pos]}", index + 1)
        note_bundles((head,))
        grow.extend((h,))
        if (problem := check_marks(index + 1)) is not None:
            return VerifyResult(False, index + 1, grow.root().hex(), problem, None)
    return None


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
