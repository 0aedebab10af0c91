"""A self-contained receipt for one log entry, which an auditor checks offline with the log's public key.

The receipt carries the entry's bytes, its leaf index, the tree size, the RFC 9162 inclusion proof and
the signed checkpoint note of that tree size. JSON form (``format`` first; bytes as standard base64)::

    {"format": "dacp-receipt/1", "entry": "<base64>", "index": 41, "size": 1000,
     "proof": ["<base64 32-byte hash>", ...], "checkpoint": "<signed note text>"}

:func:`check_receipt` refuses a receipt unless every check passes, in this order, and names the check
that failed: ``format`` (the JSON and its fields), ``signature`` (a known key signed the checkpoint
note), ``checkpoint`` (the note's text is a checkpoint), ``origin`` (if the caller names the log),
``size`` (the receipt's tree size is the checkpoint's and the index lies inside it), ``inclusion``
(the entry's leaf hash and the proof lead to the checkpoint's root).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rules.audit.checkpoint import (Checkpoint, CheckpointError, NoteError, Verifier, b64decode_strict, b64encode,
                                    open_note)
from rules.audit.merkle import GetNode, ProofError, inclusion_proof, leaf_hash, verify_inclusion
from rules.errors import TamperedError

FORMAT = "dacp-receipt/1"
FIELDS = ("format", "entry", "index", "size", "proof", "checkpoint")


class ReceiptError(TamperedError, ValueError):
    """A receipt is refused; ``check`` names the check that failed (see the module docstring). Not retryable."""

    code = "receipt_invalid"

    def __init__(self, check: str, message: str):
        self.check = check
        self.message = message
        super().__init__(f"receipt failed the {check} check: {message}")


@dataclass(frozen=True)
class Receipt:
    """The parts of a receipt, as issued (nothing in it is verified yet)."""

    entry: bytes
    index: int
    size: int
    proof: tuple[bytes, ...]
    checkpoint: str  # the signed note text

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "entry": b64encode(self.entry), "index": self.index, "size": self.size,
                "proof": [b64encode(h) for h in self.proof], "checkpoint": self.checkpoint}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Receipt:
        """Parse a receipt's JSON form, checking its structure (the ``format`` check) only."""
        return _parse(text)


@dataclass(frozen=True)
class CheckedReceipt:
    """What a receipt proves: ``entry`` is leaf ``index`` of the tree ``checkpoint`` describes, and the
    keys named in ``signers`` signed that checkpoint."""

    entry: bytes
    index: int
    leaf_hash: bytes
    checkpoint: Checkpoint
    signers: tuple[str, ...]


def make_receipt(entry: bytes, index: int, checkpoint_note: str, get_node: GetNode) -> Receipt:
    """Issue the receipt of leaf ``index`` (whose bytes are ``entry``) under a signed checkpoint.

    ``get_node`` answers for the tree the checkpoint describes (see rules.audit.merkle). The proof is
    checked against the checkpoint's root before the receipt is handed out, so a store that returns a
    wrong node, or an entry that is not that leaf, raises :class:`ReceiptError` here rather than
    producing a receipt no auditor would accept. The note's signature is not checked (it is the log's
    own)."""
    split = checkpoint_note.rfind("\n\n")
    try:
        checkpoint = Checkpoint.parse(checkpoint_note[:split + 1] if split >= 0 else checkpoint_note)
    except CheckpointError as e:
        raise ReceiptError("checkpoint", str(e)) from None
    try:
        proof = inclusion_proof(index, checkpoint.size, get_node)
        verify_inclusion(leaf_hash(entry), index, checkpoint.size, proof, checkpoint.root)
    except ProofError as e:
        raise ReceiptError("inclusion", str(e)) from None
    return Receipt(entry, index, checkpoint.size, tuple(proof), checkpoint_note)


def check_receipt(receipt_json: str | bytes, verifiers: Iterable[Verifier],
                  origin: str | None = None) -> CheckedReceipt:
    """Check a receipt offline; raise :class:`ReceiptError` naming the first check that failed."""
    receipt = _parse(receipt_json)
    try:
        text, signers = open_note(receipt.checkpoint, verifiers)
    except NoteError as e:
        raise ReceiptError("signature", str(e)) from None
    try:
        checkpoint = Checkpoint.parse(text)
    except CheckpointError as e:
        raise ReceiptError("checkpoint", str(e)) from None
    if origin is not None and checkpoint.origin != origin:
        raise ReceiptError("origin", f"the checkpoint is for log {checkpoint.origin!r}, not {origin!r}")
    if receipt.size != checkpoint.size:
        raise ReceiptError("size", f"the receipt says tree size {receipt.size}, its checkpoint {checkpoint.size}")
    if receipt.index >= checkpoint.size:
        raise ReceiptError("size", f"leaf index {receipt.index} is outside a tree of {checkpoint.size}")
    h = leaf_hash(receipt.entry)
    try:
        verify_inclusion(h, receipt.index, checkpoint.size, list(receipt.proof), checkpoint.root)
    except ProofError as e:
        raise ReceiptError("inclusion",
                           f"the entry is not leaf {receipt.index} of the checkpointed tree: {e}") from None
    return CheckedReceipt(receipt.entry, receipt.index, h, checkpoint, tuple(signers))


# --- parsing --------------------------------------------------------------------------------------

def _fail(message: str) -> ReceiptError:
    return ReceiptError("format", message)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _fail(f"field {key!r} appears twice")
        obj[key] = value
    return obj


def _no_constants(name: str) -> Any:
    raise _fail(f"{name} is not a JSON number")


def _int(obj: dict[str, Any], key: str) -> int:
    value = obj[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _fail(f"{key} must be a non-negative integer, not {value!r}")
    return value


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise _fail(f"{what} must be a base64 string, not {type(value).__name__}")
    try:
        return b64decode_strict(value, what)
    except NoteError as e:
        raise _fail(str(e)) from None


def _parse(text: str | bytes) -> Receipt:
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise _fail("receipt is not valid UTF-8") from None
    if not isinstance(text, str):
        raise _fail(f"receipt must be JSON text, not {type(text).__name__}")
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except ReceiptError:
        raise
    except ValueError as e:  # JSONDecodeError, or an integer too long to convert
        raise _fail(f"receipt is not JSON ({e})") from None
    if not isinstance(obj, dict):
        raise _fail("receipt is not a JSON object")
    if obj.get("format") != FORMAT:
        raise _fail(f"format is {obj.get('format')!r}, not {FORMAT!r}")
    missing = [k for k in FIELDS if k not in obj]
    extra = sorted(k for k in obj if k not in FIELDS)
    if missing or extra:
        raise _fail("; ".join(filter(None, [missing and f"missing field(s) {', '.join(missing)}",
                                            extra and f"unknown field(s) {', '.join(extra)}"])))
    entry = _b64(obj["entry"], "entry")
    index, size = _int(obj, "index"), _int(obj, "size")
    if not isinstance(obj["proof"], list):
        raise _fail("proof must be a list of base64 hashes")
    proof = tuple(_b64(h, f"proof[{i}]") for i, h in enumerate(obj["proof"]))
    for i, h in enumerate(proof):
        if len(h) != 32:
            raise _fail(f"proof[{i}] is {len(h)} bytes, not a 32-byte hash")
    if not isinstance(obj["checkpoint"], str):
        raise _fail("checkpoint must be the signed note's text")
    return Receipt(entry, index, size, proof, obj["checkpoint"])
