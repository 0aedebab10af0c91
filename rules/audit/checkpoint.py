"""Signed checkpoints: a C2SP ``tlog-checkpoint`` body inside a C2SP ``signed-note``, signed with Ed25519.

A checkpoint body is the origin line, the tree size in decimal, the base64 root hash and optional
non-empty extension lines, each ending in a newline (https://c2sp.org/tlog-checkpoint). A signed note
is that text, a blank line, then one line per signature: em dash (U+2014), space, key name, space,
base64(4-byte key ID || signature) (https://c2sp.org/signed-note). For Ed25519 (signature type 0x01)
the key ID is the first 4 bytes of SHA-256(name || 0x0A || 0x01 || 32-byte public key), and the
verifier key text is ``<name>+<hex key ID>+<base64(0x01 || public key)>``.

Opening a note is strict: the whole note must be valid UTF-8 without control characters other than
newline, every line after the last blank line must be a well-formed signature line, base64 must be
canonical, signatures by unknown keys are ignored (as the spec requires) but a signature by a known
key that fails to verify rejects the whole note, and so does a note no known key verified.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from collections.abc import Iterable, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from rules.errors import TamperedError

ALG_ED25519 = 0x01
ROOT_SIZE = 32  # an RFC 6962 SHA-256 tree hash
MAX_SIGNATURES = 100  # the spec asks verifiers to accept at least 16
MAX_TREE_SIZE = 2**64 - 1
SIG_PREFIX = "\u2014 "  # em dash, space

_SIZE_RE = re.compile(r"0|[1-9][0-9]*")
_HEX_ID_RE = re.compile(r"[0-9a-f]{8}")
_CONTROL_RE = re.compile(r"[\x00-\x09\x0b-\x1f]")  # every ASCII control character except newline


class NoteError(TamperedError, ValueError):
    """A signed note or key is malformed, or the note is not verified by a known key (not retryable)."""

    code = "checkpoint_invalid"


class CheckpointError(TamperedError, ValueError):
    """A checkpoint body is malformed (not retryable)."""

    code = "checkpoint_invalid"


def b64decode_strict(text: str, what: str, error: type[ValueError] = NoteError) -> bytes:
    """Decode standard base64 (RFC 4648 §4), refusing anything but its one canonical encoding."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, AttributeError):
        raise error(f"{what} is not valid base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise error(f"{what} is not canonical base64")
    return raw


def b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def key_id(name: str, public_key: bytes) -> bytes:
    """The 4-byte signed-note key ID of an Ed25519 key: SHA-256(name || 0x0A || 0x01 || key)[:4]."""
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([ALG_ED25519]) + public_key).digest()[:4]


def check_key_name(name: object, error: type[ValueError] = NoteError) -> str:
    """A key name: non-empty, no Unicode spaces, no '+', no control characters."""
    if not isinstance(name, str) or not name:
        raise error("key name must be a non-empty string")
    if "+" in name or any(c.isspace() for c in name) or _CONTROL_RE.search(name):
        raise error(f"key name {name!r} contains a space, '+' or control character")
    _check_utf8(name, "key name", error)
    return name


# --- checkpoint bodies ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Checkpoint:
    """A tree head: the log's origin, its size and its RFC 9162 root hash, plus opaque extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_line(self.origin, "origin")
        if not isinstance(self.size, int) or isinstance(self.size, bool) or not 0 <= self.size <= MAX_TREE_SIZE:
            raise CheckpointError(f"tree size must be an integer from 0 to 2**64-1, not {self.size!r}")
        if not isinstance(self.root, bytes) or len(self.root) != ROOT_SIZE:
            raise CheckpointError(f"root hash must be {ROOT_SIZE} bytes")
        object.__setattr__(self, "extensions", tuple(self.extensions))
        for i, line in enumerate(self.extensions):
            _check_line(line, f"extension line {i + 1}")

    def body(self) -> str:
        """The note text: every line, extension lines included, ends in a newline."""
        return "".join(line + "\n" for line in (self.origin, str(self.size), b64encode(self.root), *self.extensions))

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse a checkpoint body (the text of an opened note), refusing anything malformed."""
        if not isinstance(text, str):
            raise CheckpointError(f"checkpoint text must be a string, not {type(text).__name__}")
        if not text.endswith("\n"):
            raise CheckpointError("checkpoint text does not end in a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise CheckpointError(f"checkpoint has {len(lines)} line(s); it needs origin, size and root hash")
        origin, size, root, *extensions = lines
        if not _SIZE_RE.fullmatch(size):
            raise CheckpointError(f"tree size {size!r} is not a decimal number without leading zeros")
        raw = b64decode_strict(root, "root hash", CheckpointError)
        if len(raw) != ROOT_SIZE:
            raise CheckpointError(f"root hash is {len(raw)} bytes, not {ROOT_SIZE}")
        return cls(origin, int(size), raw, tuple(extensions))


def _check_line(line: object, what: str) -> None:
    if not isinstance(line, str) or not line:
        raise CheckpointError(f"{what} must be a non-empty string")
    if "\n" in line or _CONTROL_RE.search(line):
        raise CheckpointError(f"{what} contains a newline or control character")
    _check_utf8(line, what, CheckpointError)


def _check_utf8(text: str, what: str, error: type[ValueError]) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise error(f"{what} is not valid UTF-8 (it holds a lone surrogate)") from None


# --- keys -----------------------------------------------------------------------------------------

def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


class Verifier:
    """A named Ed25519 public key that checks note signatures."""

    __slots__ = ("_key", "key_id", "name", "public_key")

    def __init__(self, name: str, public_key: bytes | Ed25519PublicKey):
        self.name = check_key_name(name)
        if isinstance(public_key, Ed25519PublicKey):
            public_key = _raw_public(public_key)
        if not isinstance(public_key, bytes) or len(public_key) != 32:
            raise NoteError("an Ed25519 public key is 32 bytes")
        self.public_key = public_key
        self.key_id = key_id(name, public_key)
        self._key = Ed25519PublicKey.from_public_bytes(public_key)

    @classmethod
    def parse(cls, vkey: str) -> Verifier:
        """Parse verifier key text ``<name>+<hex key ID>+<base64(0x01 || public key)>``."""
        parts = vkey.split("+", 2) if isinstance(vkey, str) else []  # base64 may hold "+"
        if len(parts) != 3:
            raise NoteError("verifier key is not <name>+<hex key ID>+<base64 key>")
        name, hex_id, b64 = parts
        check_key_name(name)
        if not _HEX_ID_RE.fullmatch(hex_id):
            raise NoteError(f"verifier key ID {hex_id!r} is not 8 lowercase hex digits")
        raw = b64decode_strict(b64, "verifier key")
        if not raw or raw[0] != ALG_ED25519:
            raise NoteError("verifier key is not an Ed25519 key (signature type 0x01)")
        if len(raw) != 33:
            raise NoteError(f"verifier key holds {len(raw) - 1} key bytes; an Ed25519 key is 32")
        v = cls(name, raw[1:])
        if v.key_id.hex() != hex_id:
            raise NoteError(f"verifier key ID {hex_id} does not match its name and key ({v.key_id.hex()})")
        return v

    def key_text(self) -> str:
        return f"{self.name}+{self.key_id.hex()}+{b64encode(bytes([ALG_ED25519]) + self.public_key)}"

    __str__ = key_text

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Verifier) and (self.name, self.public_key) == (other.name, other.public_key)

    def __hash__(self) -> int:
        return hash((self.name, self.public_key))

    def __repr__(self) -> str:
        return f"Verifier({self.key_text()!r})"


class Signer:
    """A named Ed25519 private key that signs notes."""

    __slots__ = ("_key", "key_id", "name", "public_key")

    def __init__(self, name: str, private_key: Ed25519PrivateKey):
        self.name = check_key_name(name)
        if not isinstance(private_key, Ed25519PrivateKey):
            raise NoteError("a signer needs an Ed25519 private key")
        self._key = private_key
        self.public_key = _raw_public(private_key.public_key())
        self.key_id = key_id(name, self.public_key)

    @classmethod
    def generate(cls, name: str) -> Signer:
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, name: str, seed: bytes) -> Signer:
        """From the 32-byte RFC 8032 private key (seed)."""
        if not isinstance(seed, bytes) or len(seed) != 32:
            raise NoteError("an Ed25519 private key seed is 32 bytes")
        return cls(name, Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def parse(cls, skey: str) -> Signer:
        """Parse ``PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01 || seed)>``, the private key text of
        golang.org/x/mod/sumdb/note (the signed-note spec defines no private key format)."""
        parts = skey.split("+", 4) if isinstance(skey, str) else []
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise NoteError("signer key is not PRIVATE+KEY+<name>+<hex key ID>+<base64 key>")
        name, hex_id, b64 = parts[2:]
        check_key_name(name)
        if not _HEX_ID_RE.fullmatch(hex_id):
            raise NoteError("signer key ID is not 8 lowercase hex digits")
        raw = b64decode_strict(b64, "signer key")
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise NoteError("signer key is not a 32-byte Ed25519 seed of signature type 0x01")
        s = cls.from_seed(name, raw[1:])
        if s.key_id.hex() != hex_id:
            raise NoteError("signer key ID does not match its name and public key")
        return s

    def key_text(self) -> str:
        """The private key text (a secret) in the format :meth:`parse` reads."""
        seed = self._key.private_bytes_raw()
        return f"PRIVATE+KEY+{self.name}+{self.key_id.hex()}+{b64encode(bytes([ALG_ED25519]) + seed)}"

    def verifier(self) -> Verifier:
        return Verifier(self.name, self.public_key)

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def __repr__(self) -> str:
        return f"Signer({self.name!r}, key ID {self.key_id.hex()})"


# --- notes ----------------------------------------------------------------------------------------

def _check_note_text(text: object) -> str:
    if not isinstance(text, str):
        raise NoteError(f"note text must be a string, not {type(text).__name__}")
    if not text.endswith("\n"):
        raise NoteError("note text does not end in a newline")
    if _CONTROL_RE.search(text):
        raise NoteError("note text contains a control character other than newline")
    _check_utf8(text, "note text", NoteError)
    return text


def sign_note(text: str, signers: Sequence[Signer]) -> str:
    """The signed note of ``text`` (which must end in a newline), one signature line per signer."""
    _check_note_text(text)
    if not signers:
        raise NoteError("a note needs at least one signer")
    message = text.encode("utf-8")
    seen = set()
    lines = []
    for s in signers:
        if (s.name, s.key_id) in seen:
            raise NoteError(f"two signers share the key {s.name}+{s.key_id.hex()}")
        seen.add((s.name, s.key_id))
        lines.append(f"{SIG_PREFIX}{s.name} {b64encode(s.key_id + s.sign(message))}\n")
    return text + "\n" + "".join(lines)


def open_note(note: str | bytes, verifiers: Iterable[Verifier]) -> tuple[str, list[str]]:
    """Verify a signed note; return its text and the names of the known keys that signed it.

    Raises :class:`NoteError` if the note is malformed, a known key's signature does not verify, or
    no known key signed it."""
    if isinstance(note, bytes):
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError:
            raise NoteError("note is not valid UTF-8") from None
    if not isinstance(note, str):
        raise NoteError(f"note must be text, not {type(note).__name__}")
    if _CONTROL_RE.search(note):
        raise NoteError("note contains a control character other than newline")
    _check_utf8(note, "note", NoteError)
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError("note has no blank line before its signatures")
    text, block = note[:split + 1], note[split + 2:]
    if not block:
        raise NoteError("note has no signature lines")
    if not block.endswith("\n"):
        raise NoteError("note's last signature line does not end in a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"note has {len(lines)} signature lines; at most {MAX_SIGNATURES} are read")

    known: dict[tuple[str, bytes], set[Verifier]] = {}
    for v in verifiers:
        known.setdefault((v.name, v.key_id), set()).add(v)
    message = text.encode("utf-8")
    verified: list[str] = []
    unknown: list[str] = []
    for number, line in enumerate(lines, 1):
        name, key, sig = _parse_signature_line(line, number)
        candidates = known.get((name, key))
        label = f"{name}+{key.hex()}"
        if not candidates:
            unknown.append(label)
            continue
        if len(candidates) > 1:
            raise NoteError(f"ambiguous key {label}: more than one known key has that name and ID")
        if len(sig) != 64:
            raise NoteError(f"signature by key {label} is {len(sig)} bytes, not a 64-byte Ed25519 signature")
        if not next(iter(candidates)).verify(message, sig):
            raise NoteError(f"signature by key {label} does not verify")
        if name not in verified:
            verified.append(name)
    if not verified:
        signed_by = ", ".join(unknown)
        raise NoteError(f"note is not signed by any known key (signed by {signed_by}; known: "
                        f"{', '.join(sorted(f'{n}+{k.hex()}' for n, k in known)) or 'none'})")
    return text, verified


def _parse_signature_line(line: str, number: int) -> tuple[str, bytes, bytes]:
    if not line.startswith(SIG_PREFIX):
        raise NoteError(f"line {number} of the signature block is not a signature line (em dash, space, ...)")
    parts = line[len(SIG_PREFIX):].split(" ")
    if len(parts) != 2:
        raise NoteError(f"signature line {number} is not '\u2014 <key name> <base64 signature>'")
    name, b64 = parts
    check_key_name(name)
    raw = b64decode_strict(b64, f"signature line {number}")
    if len(raw) < 5:
        raise NoteError(f"signature line {number} holds {len(raw)} bytes: a key ID and a signature need 5 or more")
    return name, raw[:4], raw[4:]


def sign_checkpoint(checkpoint: Checkpoint, signers: Sequence[Signer]) -> str:
    """The signed note of a checkpoint."""
    return sign_note(checkpoint.body(), signers)


def open_checkpoint(note: str | bytes, verifiers: Iterable[Verifier],
                    origin: str | None = None) -> tuple[Checkpoint, list[str]]:
    """Verify a signed checkpoint note and parse its body; if ``origin`` is given, require it."""
    text, names = open_note(note, verifiers)
    checkpoint = Checkpoint.parse(text)
    if origin is not None and checkpoint.origin != origin:
        raise CheckpointError(f"checkpoint is for log {checkpoint.origin!r}, not {origin!r}")
    return checkpoint, names
