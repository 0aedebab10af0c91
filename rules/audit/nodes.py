"""The tree's interior nodes as the store keeps them: complete subtrees of ``2**NODE_LEVEL`` leaves and more
are stored as they complete; smaller ones are recomputed from at most ``2**NODE_LEVEL`` stored leaf hashes.

``Growth`` grows a tree by leaf hashes a block of ``2**NODE_LEVEL`` at a time and reports the nodes to store;
``NodeReader`` answers a proof's ``get_node`` calls with one read per node and one per block of leaf hashes.
"""

from __future__ import annotations

from typing import Callable, Sequence

from rules.audit import merkle
from rules.errors import StorageError

NODE_LEVEL = 8  # complete subtrees of 256 leaves and more are stored
_BLOCK = 1 << NODE_LEVEL
_BLOCK_MASK = _BLOCK - 1


class Growth:
    """A tree growing by leaf hashes that reports (``on_node``) each interior node of ``2**NODE_LEVEL`` leaves
    and more as it completes, in the order ``merkle.CompactRange`` would. The leaves of each block of
    ``2**NODE_LEVEL`` go through ``CompactRange.extend``'s loop free of calls (a range with ``on_node`` takes
    a call a leaf); the blocks' roots grow a range of their own, whose nodes are those reported."""

    __slots__ = ("_block", "_keep", "_upper", "size")

    def __init__(self, size: int, hashes: Sequence[bytes], on_node: merkle.OnNode):
        upper = (size >> NODE_LEVEL).bit_count()  # the frontier's subtrees of a block or more come first
        self.size = size
        self._keep = on_node
        self._upper = merkle.CompactRange(size >> NODE_LEVEL, hashes[:upper],
                                          on_node=lambda lv, ix, h: on_node(lv + NODE_LEVEL, ix, h))
        self._block = merkle.CompactRange(size & _BLOCK_MASK, hashes[upper:])

    def extend(self, hashes: Sequence[bytes]) -> None:
        pos, n = 0, len(hashes)
        while pos < n:
            take = min(n - pos, _BLOCK - (self.size & _BLOCK_MASK))
            self._block.extend(hashes if take == n else hashes[pos:pos + take])
            self.size += take
            pos += take
            if not self.size & _BLOCK_MASK:  # a block completed: its root is the node (NODE_LEVEL, k)
                root = self._block.root()
                self._keep(NODE_LEVEL, (self.size >> NODE_LEVEL) - 1, root)
                self._upper.append(root)
                self._block = merkle.CompactRange()

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """The frontier (as ``CompactRange.hashes``)."""
        return self._upper.hashes + self._block.hashes

    def root(self) -> bytes:
        hashes = self.hashes
        return merkle.fold_nodes(hashes) if hashes else merkle.EMPTY_ROOT


class NodeReader:
    """``get_node`` for proofs (``merkle.GetNode``) over a store, for the proofs of one read (an inclusion
    proof checked, then the same proof put in a receipt): every node is read or computed once; a node below
    ``NODE_LEVEL`` is computed from its block's leaf hashes, read in one query for every node of the block."""

    __slots__ = ("_blocks", "_leaf_hashes", "_nodes", "_stored")

    def __init__(self, stored: merkle.GetNode, leaf_hashes: Callable[..., list[bytes]]):
        self._stored, self._leaf_hashes = stored, leaf_hashes  # leaf_hashes(lo, hi, partial=True)
        self._nodes: dict[tuple[int, int], bytes] = {}
        self._blocks: dict[int, list[bytes]] = {}

    def __call__(self, level: int, index: int) -> bytes:
        h = self._nodes.get((level, index))
        if h is None:
            h = self._nodes[(level, index)] = self._stored(level, index) if level >= NODE_LEVEL else \
                self._compute(level, index)
        return h

    def _compute(self, level: int, index: int) -> bytes:
        lo, width = index << level, 1 << level
        start = lo & ~_BLOCK_MASK
        block = self._blocks.get(start)
        if block is None or len(block) < lo - start + width:  # not read yet, or read before it was complete
            block = self._blocks[start] = self._leaf_hashes(start, start + _BLOCK, partial=True)
        part = block[lo - start:lo - start + width]
        if len(part) != width:
            raise StorageError(f"log entries {lo + 1}..{lo + width}: their leaf hashes are missing from storage")
        return part[0] if level == 0 else merkle.root(part)
