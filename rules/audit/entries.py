"""The leaves of the verifiable log: typed, versioned entries, one encoder and one frozen decoder per version.

A leaf is the bytes an auditor hashes (RFC 9162 leaf hash = SHA-256(0x00 || leaf)). Version 1::

    b"dacp-entry/1\\n" + header + b"\\n" + body

``header`` is the compact JSON array ``[kind, entry_id, recorded_at, bundle_hash or null]`` and ``body`` the
entry's JSON as stored (a decision's compact form, a ledger journal entry, a policy signature, an incident, a
migration record). Nothing outside the leaf says what it is: a leaf is self-describing, so a receipt holding
only its bytes can be read by anyone.

Decoders are frozen: once entries of a version exist, its decoder never changes. A new layout is a new
version with its own encoder and decoder beside the old ones.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple, Sequence

import orjson

from rules.errors import StorageError

MAGIC_V1 = b"dacp-entry/1\n"
VERSION = 1  # what this version writes

# Entry kinds: what may stand in the log. Decisions (a credit's decision carries its ledger allocation), the
# ledger's other journal entries, the policy lifecycle's signatures, incidents, margin records, and the record
# of a migration from the hash-chained format (whose own kinds - "ledger", "policy_submission", ... - are
# kept as they were written).
KINDS = frozenset({
    "decision", "ledger", "credit", "withdrawal", "reverification", "revaluation",
    "policy_submission", "policy_approval", "policy_publication",
    "incident", "margin.requirement", "margin.call", "log.migration",
})


class RawJSON(bytes):
    """A body already encoded as JSON (UTF-8): stored as it is."""


class Entry(NamedTuple):
    """One decoded leaf, with where it stands in the tree (``index``: 0-based; ``seq`` = index + 1)."""

    index: int
    entry_id: str
    kind: str
    recorded_at: str
    bundle_hash: str | None
    body: dict[str, Any]
    leaf_hash: str  # hex

    @property
    def seq(self) -> int:
        return self.index + 1

    @property
    def entry_hash(self) -> str:  # the name older callers use for the entry's own hash
        return self.leaf_hash


def body_bytes(body: Any, entry_id: str) -> bytes:
    """A body's stored JSON: a ``RawJSON`` as it is, plain JSON data canonically (sorted keys, no spaces)."""
    if isinstance(body, bytes):  # RawJSON: encoded by the caller
        return bytes(body)
    try:
        return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError):  # an int beyond 64 bits: the standard library's exact form
        try:
            return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                              allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as e:
            raise StorageError(f"entry {entry_id!r} is not plain JSON: {e}") from None


def encode_v1(kind: str, entry_id: str, recorded_at: str, bundle_hash: str | None, body: bytes) -> bytes:
    """The leaf of an entry (version 1). ``body`` is its JSON bytes (``body_bytes``)."""
    if kind not in KINDS:
        raise StorageError(f"entry {entry_id!r}: unknown entry kind {kind!r}")
    return b"".join((MAGIC_V1, orjson.dumps([kind, entry_id, recorded_at, bundle_hash]), b"\n", body))


def decode(leaf: bytes, index: int, leaf_hash_hex: str) -> Entry:
    """The entry a leaf holds (any version this code reads); a leaf that does not decode is a StorageError."""
    if leaf.startswith(MAGIC_V1):
        return _decode_v1(leaf, index, leaf_hash_hex)
    raise StorageError(f"log entry {index + 1}: not an entry this version reads (starts {leaf[:16]!r})")


def header_v1(leaf: bytes) -> tuple[str, str, str, str | None]:
    """(kind, entry_id, recorded_at, bundle_hash) of a version-1 leaf, without decoding its body. A leaf
    of another version, or whose header is not that array of strings (bundle: a string or null), is a
    ``ValueError`` saying so."""
    if not leaf.startswith(MAGIC_V1):
        raise ValueError(f"not a version-1 entry (starts {leaf[:16]!r})")
    end = leaf.index(b"\n", len(MAGIC_V1))
    head = orjson.loads(leaf[len(MAGIC_V1):end])
    if not _header_shape(head):
        raise ValueError("its header is not [kind, entry id, recorded at, bundle hash or null]")
    return head[0], head[1], head[2], head[3]


def headers_v1(leaves: Sequence[bytes]) -> list[list[Any]] | None:
    """``header_v1`` of every leaf, in one pass (a streaming verify's hot loop: no call a leaf), as lists
    ``[kind, entry_id, recorded_at, bundle_hash]``; None if any of them does not decode (``header_v1`` of
    each, one by one, then says which and why)."""
    start, loads, magic, text = len(MAGIC_V1), orjson.loads, MAGIC_V1, str
    try:
        heads = [loads(leaf[start:leaf.index(b"\n", start)]) for leaf in leaves]
    except (ValueError, TypeError):
        return None
    if not all([leaf.startswith(magic) and type(h) is list and len(h) == 4 and type(h[0]) is text
                and type(h[1]) is text and type(h[2]) is text and (h[3] is None or type(h[3]) is text)
                for leaf, h in zip(leaves, heads)]):
        return None
    return heads


def _header_shape(head: Any) -> bool:
    return (type(head) is list and len(head) == 4 and type(head[0]) is str and type(head[1]) is str
            and type(head[2]) is str and (head[3] is None or type(head[3]) is str))


def _loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:  # an integer beyond 64 bits is valid JSON: the standard library reads it
        return json.loads(data)


def _decode_v1(leaf: bytes, index: int, leaf_hash_hex: str) -> Entry:  # frozen: version 1's layout
    try:
        end = leaf.index(b"\n", len(MAGIC_V1))
        kind, entry_id, recorded_at, bundle_hash = orjson.loads(leaf[len(MAGIC_V1):end])
        body = _loads(leaf[end + 1:])
    except (ValueError, TypeError, orjson.JSONDecodeError) as e:
        raise StorageError(f"log entry {index + 1}: does not decode ({e})") from None
    if not (isinstance(kind, str) and isinstance(entry_id, str) and isinstance(recorded_at, str)
            and (bundle_hash is None or isinstance(bundle_hash, str)) and isinstance(body, dict)):
        raise StorageError(f"log entry {index + 1}: its header or body has the wrong shape")
    return Entry(index, entry_id, kind, recorded_at, bundle_hash, body, leaf_hash_hex)
