"""RFC 9162 Merkle tree hashing, a streaming builder, and inclusion/consistency proofs.

Hashing (RFC 9162 §2.1.1): leaf hash = SHA-256(0x00 || entry), interior node = SHA-256(0x01 || left ||
right), the hash of the empty tree is SHA-256(""); a tree of n > 1 leaves splits at the largest power
of two smaller than n.

Node coordinates. ``(level, index)`` names the *complete* subtree of 2**level leaves
``[index << level, (index + 1) << level)``; level 0 is a leaf hash. Such a node never changes once its
last leaf is appended, so a store may cache it forever. Every hash in a proof is the root of a range
of leaves that decomposes into at most log2(n) complete subtrees; the ``*_plan`` functions say which,
so a store can read them in one batch.

How a store answers ``get_node(level, index)`` (the :data:`GetNode` callback):

* it is only ever asked for complete subtrees inside the tree size the proof is for; level 0 is the
  stored leaf hash of entry ``index``;
* with interior nodes cached (:class:`CompactRange` reports each one as it is completed, through
  ``on_node``), every call is one keyed read and a proof costs O(log n) reads;
* without them, compute the node as ``root(leaf_hashes[index << level:(index + 1) << level])``;
  correct, but O(2**level) leaves for the high levels. A middle way caches only levels >= L and
  computes the lower ones from at most 2**L leaves.

Verification follows the algorithms of RFC 9162 §2.1.3.2 and §2.1.4.2, after checking that every hash
is 32 bytes and that the proof has exactly the length the tree shape demands, so that a malformed proof
is refused with a message saying what is wrong rather than failing later as a root mismatch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

from rules.errors import TamperedError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

NodeId = tuple[int, int]  # (level, index): the complete subtree of leaves [index << level, (index+1) << level)
GetNode = Callable[[int, int], bytes]
OnNode = Callable[[int, int, bytes], None]
Plan = list[tuple[NodeId, ...]]  # one tuple per proof hash: the complete subtrees it is the root of

_sha256 = hashlib.sha256


class ProofError(TamperedError, ValueError):
    """A Merkle proof, hash or tree size is malformed, or the proof does not verify (an integrity check: not
    retryable). Also a ``ValueError``, so plain callers can catch it."""
    code = "proof_invalid"


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 leaf hash: SHA-256(0x00 || data)."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node hash: SHA-256(0x01 || left || right)."""
    return _sha256(b"\x01" + left + right).digest()


def root(leaf_hashes: Iterable[bytes]) -> bytes:
    """The Merkle tree hash (MTH) of a list (or any iterable) of leaf hashes; O(log n) memory."""
    cr = CompactRange()
    cr.extend(leaf_hashes)
    return cr.root()


def frontier_ids(size: int) -> list[NodeId]:
    """The complete subtrees a tree of ``size`` leaves decomposes into, left (largest) to right."""
    _check_int("size", size)
    return _range_ids(0, size)


class CompactRange:
    """The frontier of a growing tree: the roots of its at most log2(n)+1 maximal complete subtrees.

    ``append`` takes a leaf hash in O(1) amortised time (one node hash per leaf on average) and
    ``root`` gives the tree hash of the current size in O(log n). ``on_node(level, index, hash)``, if
    given, is called for every interior node as it is completed, so an appender can persist the nodes
    a proof store needs. Resume from a store with :meth:`from_nodes`.
    """

    __slots__ = ("_hashes", "_on_node", "_size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = (), on_node: OnNode | None = None):
        _check_int("size", size)
        hashes = list(hashes)
        if len(hashes) != size.bit_count():
            raise ProofError(f"a compact range of size {size} has {size.bit_count()} hashes, not {len(hashes)}")
        for i, h in enumerate(hashes):
            _check_hash(f"hashes[{i}]", h)
        self._size = size
        self._hashes = hashes
        self._on_node = on_node

    @classmethod
    def from_nodes(cls, size: int, get_node: GetNode, on_node: OnNode | None = None) -> CompactRange:
        """The frontier of a stored tree of ``size`` leaves, read as ``popcount(size)`` nodes."""
        return cls(size, [_fetch(get_node, lv, ix) for lv, ix in frontier_ids(size)], on_node)

    @property
    def size(self) -> int:
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """The frontier's subtree roots, largest (leftmost) first; see :func:`frontier_ids`."""
        return tuple(self._hashes)

    def append(self, leaf_hash: bytes) -> None:
        """Append one leaf hash (32 bytes)."""
        if type(leaf_hash) is not bytes or len(leaf_hash) != HASH_SIZE:
            _check_hash("leaf hash", leaf_hash)
        h, i, stack, on_node = leaf_hash, self._size, self._hashes, self._on_node
        level = 0
        while i & 1:
            h = _sha256(b"\x01" + stack.pop() + h).digest()
            i >>= 1
            level += 1
            if on_node is not None:
                on_node(level, i, h)  # the node (level, i) is complete
        stack.append(h)
        self._size += 1

    def append_entry(self, data: bytes) -> None:
        """Hash ``data`` as a leaf and append it."""
        self.append(_sha256(b"\x00" + data).digest())

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        """Append many leaf hashes (the hot loop of a streaming verify: kept free of calls)."""
        if self._on_node is not None:
            for h in leaf_hashes:
                self.append(h)
            return
        stack, n, sha, size = self._hashes, self._size, _sha256, HASH_SIZE
        pop, push = stack.pop, stack.append
        try:
            for h in leaf_hashes:
                if type(h) is not bytes or len(h) != size:
                    _check_hash(f"leaf hash {n}", h)
                i = n
                while i & 1:
                    h = sha(b"\x01" + pop() + h).digest()
                    i >>= 1
                push(h)
                n += 1
        finally:
            self._size = n

    def extend_entries(self, entries: Iterable[bytes]) -> None:
        """Hash each entry as a leaf and append it."""
        sha = _sha256
        self.extend(sha(b"\x00" + data).digest() for data in entries)

    def root(self) -> bytes:
        """The tree hash of the current size (SHA-256("") for the empty tree)."""
        return fold_nodes(self._hashes) if self._hashes else EMPTY_ROOT


class InMemoryNodes:
    """Every complete subtree of a tree held in memory: a reference store for tests and small trees.

    It persists nodes the way a database-backed appender would: leaf hashes as level 0, and the
    interior nodes :class:`CompactRange` reports through ``on_node``."""

    def __init__(self, leaf_hashes: Iterable[bytes] = ()):
        self.levels: list[list[bytes]] = [[]]
        self._range = CompactRange(on_node=self._store)
        for h in leaf_hashes:
            self.append(h)

    def _store(self, level: int, index: int, h: bytes) -> None:
        if level == len(self.levels):
            self.levels.append([])
        assert len(self.levels[level]) == index
        self.levels[level].append(h)

    def append(self, leaf_hash: bytes) -> None:
        self._range.append(leaf_hash)
        self.levels[0].append(leaf_hash)

    @property
    def size(self) -> int:
        return self._range.size

    def root(self) -> bytes:
        return self._range.root()

    def get_node(self, level: int, index: int) -> bytes:
        """The :data:`GetNode` callback."""
        try:
            return self.levels[level][index]
        except IndexError:
            raise KeyError(f"no complete subtree ({level}, {index}) in a tree of {self.size}") from None


def inclusion_proof_plan(index: int, size: int) -> Plan:
    """The nodes of the RFC 9162 §2.1.3.1 inclusion proof of leaf ``index`` in a tree of ``size``.

    One tuple per proof hash, in proof order (leaf level first): the complete subtrees, left to right,
    whose fold (:func:`fold_nodes`) is that hash."""
    _check_int("index", index)
    _check_int("size", size)
    if index >= size:
        raise ProofError(f"leaf index {index} is not below the tree size {size}")
    plan: Plan = []
    lo, hi = 0, size
    while hi - lo > 1:  # PATH(m, D[lo:hi]), walked from the root down
        k = 1 << ((hi - lo - 1).bit_length() - 1)
        if index < lo + k:
            plan.append(_range_ids(lo + k, hi))
            hi = lo + k
        else:
            plan.append(((k.bit_length() - 1, lo // k),))
            lo += k
    plan.reverse()
    return plan


def consistency_proof_plan(old_size: int, new_size: int) -> Plan:
    """The nodes of the RFC 9162 §2.1.4.1 consistency proof from ``old_size`` to ``new_size``.

    Same form as :func:`inclusion_proof_plan`; empty when the sizes are equal."""
    _check_sizes(old_size, new_size)
    plan: Plan = []
    lo, hi, whole = 0, new_size, True  # SUBPROOF(old - lo, D[lo:hi], whole)
    while old_size != hi:
        k = 1 << ((hi - lo - 1).bit_length() - 1)
        if old_size - lo <= k:
            plan.append(_range_ids(lo + k, hi))
            hi = lo + k
        else:
            plan.append(((k.bit_length() - 1, lo // k),))
            lo += k
            whole = False
    if not whole:
        plan.append(_range_ids(lo, hi))
    plan.reverse()
    return plan


def fold_nodes(hashes: Sequence[bytes]) -> bytes:
    """The root of consecutive complete subtrees given left (largest) to right."""
    r = hashes[-1]
    for h in reversed(hashes[:-1]):
        r = _sha256(b"\x01" + h + r).digest()
    return r


def proof_from_plan(plan: Plan, get_node: GetNode) -> list[bytes]:
    """The proof hashes of ``plan``, reading each node once through ``get_node``."""
    return [fold_nodes([_fetch(get_node, lv, ix) for lv, ix in part]) for part in plan]


def inclusion_proof(index: int, size: int, get_node: GetNode) -> list[bytes]:
    """The inclusion proof of leaf ``index`` in the tree of the first ``size`` leaves."""
    return proof_from_plan(inclusion_proof_plan(index, size), get_node)


def consistency_proof(old_size: int, new_size: int, get_node: GetNode) -> list[bytes]:
    """The proof that the tree of ``old_size`` leaves is a prefix of the tree of ``new_size``."""
    return proof_from_plan(consistency_proof_plan(old_size, new_size), get_node)


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` whose hash is ``root``.

    RFC 9162 §2.1.3.2. Returns nothing; raises :class:`ProofError` saying what failed."""
    _check_hash("leaf hash", leaf_hash)
    _check_hash("root", root)
    _check_int("index", index)
    _check_int("size", size)
    if index >= size:
        raise ProofError(f"leaf index {index} is not below the tree size {size}")
    _check_proof(proof, _inclusion_proof_len(index, size), f"leaf {index} in a tree of {size}")
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:  # unreachable after the length check; kept as the RFC's own guard
            raise ProofError("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = _sha256(b"\x01" + p + r).digest()
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            r = _sha256(b"\x01" + r + p).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is shorter than the tree is deep")
    if r != root:
        raise ProofError(f"inclusion proof of leaf {index} does not lead to the root of the tree of {size}")


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       proof: Sequence[bytes]) -> None:
    """Check that the tree of ``old_size`` with hash ``old_root`` is a prefix of the tree of
    ``new_size`` with hash ``new_root``.

    RFC 9162 §2.1.4.2. A proof from the empty tree proves nothing and is refused (as are the
    transparency-dev reference verifier and its test vectors); equal sizes need an empty proof and
    equal roots. Raises :class:`ProofError` saying what failed."""
    _check_hash("old root", old_root)
    _check_hash("new root", new_root)
    _check_sizes(old_size, new_size)
    if old_size == new_size:
        _check_proof(proof, 0, f"trees of equal size {old_size}")
        if old_root != new_root:
            raise ProofError(f"two trees of size {old_size} have different roots")
        return
    _check_proof(proof, len(consistency_proof_plan(old_size, new_size)), f"sizes {old_size} to {new_size}")
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is itself a node of the new tree
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            fr = _sha256(b"\x01" + c + fr).digest()
            sr = _sha256(b"\x01" + c + sr).digest()
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            sr = _sha256(b"\x01" + sr + c).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is shorter than the tree is deep")
    if fr != old_root:
        raise ProofError(f"consistency proof does not lead to the old root (size {old_size})")
    if sr != new_root:
        raise ProofError(f"consistency proof does not lead to the new root (size {new_size})")


# --- helpers ---------------------------------------------------------------------------------------

def _range_ids(lo: int, hi: int) -> tuple[NodeId, ...]:
    """The complete subtrees of [lo, hi), largest first; ``lo`` is a multiple of the largest."""
    ids = []
    rest = hi - lo
    while rest:
        level = rest.bit_length() - 1
        assert lo % (1 << level) == 0
        ids.append((level, lo >> level))
        lo += 1 << level
        rest -= 1 << level
    return tuple(ids)


def _inclusion_proof_len(index: int, size: int) -> int:
    # Below the level where the paths to ``index`` and to the last leaf part, every level has a sibling;
    # above it, the path runs along the right border and has a left sibling wherever the index bits are set.
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def _fetch(get_node: GetNode, level: int, index: int) -> bytes:
    h = get_node(level, index)
    if not isinstance(h, bytes) or len(h) != HASH_SIZE:
        raise ProofError(f"node store returned no {HASH_SIZE}-byte hash for node ({level}, {index})")
    return h


def _check_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProofError(f"{name} must be an integer, not {type(value).__name__}")
    if value < 0:
        raise ProofError(f"{name} must not be negative ({value})")


def _check_hash(name: str, value: object) -> None:
    if not isinstance(value, bytes):
        raise ProofError(f"{name} must be bytes, not {type(value).__name__}")
    if len(value) != HASH_SIZE:
        raise ProofError(f"{name} is {len(value)} bytes, not a {HASH_SIZE}-byte SHA-256 hash")


def _check_sizes(old_size: int, new_size: int) -> None:
    _check_int("old size", old_size)
    _check_int("new size", new_size)
    if old_size > new_size:
        raise ProofError(f"old size {old_size} is greater than new size {new_size}")
    if old_size == 0:
        raise ProofError("a consistency proof from the empty tree proves nothing")


def _check_proof(proof: Sequence[bytes], want: int, what: str) -> None:
    if isinstance(proof, (bytes, str)) or not isinstance(proof, Sequence):
        raise ProofError(f"proof must be a list of hashes, not {type(proof).__name__}")
    if len(proof) != want:
        raise ProofError(f"proof has {len(proof)} hashes; a proof for {what} has {want}")
    for i, h in enumerate(proof):
        _check_hash(f"proof[{i}]", h)
