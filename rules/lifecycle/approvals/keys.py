"""Ed25519 keys of the people who sign policy bundles: their text form, key ids, key generation and loading."""

from __future__ import annotations

import base64
import hashlib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from rules.errors import ApprovalError, InputError

if TYPE_CHECKING:  # cryptography is imported where a key is used (start-up time: an approval already checked
    # for this very bundle and approvers file needs none, rules.lifecycle.approvals.status)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ROLES = ("author", "approver", "publisher")
APPROVER_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")  # lower-case letters, digits, '.', '_' and '-'
_PREFIX = "ed25519:"


def public_key_text(raw: bytes) -> str:
    """A raw public key as it is written in the approvers file and signature records."""
    return _PREFIX + base64.b64encode(raw).decode("ascii")


def key_id(raw: bytes) -> str:
    """A short fingerprint of a public key: the first 16 hex digits of its sha256."""
    return hashlib.sha256(raw).hexdigest()[:16]


def parse_public_key(text: object, where: str) -> bytes:
    """The raw 32 bytes of ``ed25519:<base64>``; ``where`` names the place in messages."""
    if not isinstance(text, str) or not text.startswith(_PREFIX):
        raise ApprovalError(f"{where}: a public key is written 'ed25519:<base64 of the 32-byte key>'")
    try:
        raw = base64.b64decode(text[len(_PREFIX):], validate=True)
    except ValueError:
        raise ApprovalError(f"{where}: the public key is not valid base64") from None
    if len(raw) != 32:
        raise ApprovalError(f"{where}: an Ed25519 public key has 32 bytes, this one {len(raw)}")
    return raw


def verify(raw: bytes, signature: bytes, message: bytes) -> bool:
    """Whether ``signature`` by the key ``raw`` is valid for ``message``."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(raw).verify(signature, message)
    except Exception:  # cryptography raises InvalidSignature; anything else is a bad signature too
        return False
    return True


def raw_public(key: Ed25519PrivateKey) -> bytes:
    """The raw public key of a private key."""
    from cryptography.hazmat.primitives import serialization

    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def generate_key(path: Path) -> bytes:
    """Write a new Ed25519 private key (PKCS#8 PEM, mode 0600); return its raw public key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if path.exists():
        raise InputError("the file exists; a key is never overwritten", str(path))
    if not path.parent.is_dir():
        raise InputError("the directory does not exist", str(path.parent))
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # created private: never world-readable
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return raw_public(key)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """An unencrypted PEM Ed25519 private key from ``path``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read the key: {e.strerror}", str(path)) from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise InputError(f"not an unencrypted PEM private key ({e})", str(path)) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InputError("not an Ed25519 private key", str(path))
    return key
