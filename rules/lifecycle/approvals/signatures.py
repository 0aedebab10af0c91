"""Signature records: the statement a person signs for a bundle, signing it, and the signature files.

A signature covers a domain-separated statement naming the role, the bundle hash, the signer and the time
(``statement``), so a signature cannot be re-labelled from one role, bundle or person to another. Records
live in ``<signatures>/<bundle sha256>/<signer>.<author|approval|publication>.json``.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from rules.errors import ApprovalError, InputError
from rules.lifecycle.approvals.approvers import Approvers
from rules.lifecycle.approvals.keys import ROLES, key_id, parse_public_key, public_key_text, raw_public, verify
from rules.values import now_utc, utc_text

if TYPE_CHECKING:  # a key is cryptography's; checking a signature imports it (keys.verify)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

FORMAT = "dacp-policy-signature/1"
FILE_ROLE = {"author": "author", "approver": "approval", "publisher": "publication"}


def statement(role: str, bundle_hash: str, signer: str, signed_at: str) -> bytes:
    """The exact bytes signed: domain-separated, one field per line."""
    return (f"{FORMAT}\nrole: {role}\nbundle: {bundle_hash}\nsigner: {signer}\nsigned_at: {signed_at}\n").encode("utf-8")


def sign(bundle_hash: str, role: str, key: Ed25519PrivateKey, approvers: Approvers,
         signed_at: str | None = None) -> dict[str, Any]:
    """A signature record for ``bundle_hash`` in ``role`` by the holder of ``key`` (who must be listed with
    that role)."""
    raw = raw_public(key)
    who = approvers.by_key(raw)
    if who is None:
        raise ApprovalError(f"this key (id {key_id(raw)}) is not in the approvers file {approvers.path}; "
                            "an unknown key cannot sign")
    if role not in who.roles:
        raise ApprovalError(f"{who.id} ({who.name}) may not sign as {role} (roles: {', '.join(sorted(who.roles))})")
    at = signed_at or utc_text(now_utc(), "seconds")
    sig = key.sign(statement(role, bundle_hash, who.id, at))
    return {"format": FORMAT, "role": role, "bundle": bundle_hash, "signer": who.id, "signer_name": who.name,
            "signed_at": at, "public_key": public_key_text(raw), "key_id": key_id(raw),
            "signature": base64.b64encode(sig).decode("ascii")}


def signature_path(signatures: Path, record: Mapping[str, Any]) -> Path:
    """Where the record for its bundle, signer and role is kept."""
    return signatures / record["bundle"] / f"{record['signer']}.{FILE_ROLE[record['role']]}.json"


def write_signature(signatures: Path, record: Mapping[str, Any]) -> Path:
    """Write the record where ``assess`` finds it (atomically; never over an existing file)."""
    path = signature_path(signatures, record)
    if path.exists():
        raise InputError(f"{record['signer']} has already signed bundle {record['bundle'][:12]}… as "
                         f"{record['role']} ({path}); one signature per person and role", "signature")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


@dataclass
class Signature:
    """One signature file as checked: valid, or what is wrong with it; whether it counts towards the quorum."""

    file: str
    role: str
    signer: str
    signed_at: str
    valid: bool
    problem: str | None = None
    counted: bool = False
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def check_signature_file(path: Path, bundle_hash: str, approvers: Approvers) -> Signature:
    """Check one signature file for ``bundle_hash`` against the approvers: any fault makes it invalid."""
    name = str(path)
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return Signature(name, "?", "?", "?", False, "not a readable signature file (JSON)")
    if not isinstance(rec, dict):
        return Signature(name, "?", "?", "?", False, "not a signature record")
    role, signer, at = rec.get("role"), rec.get("signer"), rec.get("signed_at")
    sig = Signature(name, str(role), str(signer), str(at), False)
    if rec.get("format") != FORMAT or role not in ROLES or not all(isinstance(v, str) for v in (signer, at)):
        sig.problem = f"not a {FORMAT} record"
        return sig
    if rec.get("bundle") != bundle_hash:
        sig.problem = (f"it signs bundle {str(rec.get('bundle'))[:12]}…, not this bundle {bundle_hash[:12]}… "
                       "(misfiled or altered)")
        return sig
    if path.name != f"{signer}.{FILE_ROLE[role]}.json":
        sig.problem = f"its name does not match its signer and role ({signer}, {role}): altered or copied"
        return sig
    try:
        raw = parse_public_key(rec.get("public_key"), name)
        signature = base64.b64decode(str(rec.get("signature")), validate=True)
    except (ApprovalError, ValueError):
        sig.problem = "its public key or signature is malformed"
        return sig
    who = approvers.by_key(raw)
    if who is None:
        sig.problem = f"it is signed by an unknown key (id {key_id(raw)}): not in the approvers file {approvers.path}"
        return sig
    if who.id != signer:
        sig.problem = f"it claims signer {signer!r}, but the key is {who.id!r}'s"
        return sig
    if role not in who.roles:
        sig.problem = f"{who.id} may not sign as {role} (roles: {', '.join(sorted(who.roles))})"
        return sig
    if not verify(raw, signature, statement(role, bundle_hash, signer, at)):
        sig.problem = "the signature does not verify: the record was altered after signing"
        return sig
    sig.valid = True
    return sig
