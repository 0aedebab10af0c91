"""The approvers file: who may sign policy bundles, in which roles, with which public key.

It is the trust root of four-eyes approval: a signature counts only if its key is listed here for its signer
and role. In production it lives outside the policy repository and is pinned by its sha256.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from rules.errors import ApprovalError
from rules.lifecycle.approvals.keys import APPROVER_ID, ROLES, key_id, parse_public_key
from rules.policy.yaml_reader import load_yaml_text

_FIELDS = {"id", "name", "roles", "public_key"}


@dataclass(frozen=True)
class Approver:
    id: str
    name: str
    roles: frozenset[str]
    public_key: bytes

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)


@dataclass(frozen=True)
class Approvers:
    path: Path
    sha256: str
    people: Mapping[str, Approver]

    def by_key(self, raw: bytes) -> Approver | None:
        return next((a for a in self.people.values() if a.public_key == raw), None)


def load_approvers(path: Path, pin: str | None = None) -> Approvers:
    """Read and check the approvers file (YAML: ``kind: approvers``, ``approvers: [{id, name, roles, public_key}]``);
    with ``pin``, its bytes must hash to that sha256."""
    where = str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ApprovalError(f"{where}: the approvers file does not exist, so no bundle can be approved "
                            "([approvals] approvers)") from None
    except OSError as e:
        raise ApprovalError(f"{where}: cannot read the approvers file: {e.strerror}") from None
    digest = hashlib.sha256(data).hexdigest()
    if pin and digest != pin:
        raise ApprovalError(f"{where}: the approvers file hashes to {digest}, not the pinned {pin} "
                            "([approvals] approvers_sha256): it was changed")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ApprovalError(f"{where}: the approvers file is not UTF-8 text") from None
    doc, problems = load_yaml_text(text, where)
    if problems or doc is None:
        raise ApprovalError("the approvers file is not valid:\n  " + "\n  ".join(p.render() for p in problems))

    def bad(p: tuple[Any, ...], msg: str) -> ApprovalError:
        line, col = doc.where(p)
        return ApprovalError(f"{where}:{line}:{col}: {msg}" if line else f"{where}: {msg}")

    d = doc.data
    if not isinstance(d, dict) or d.get("kind") != "approvers" or not isinstance(d.get("approvers"), list):
        raise bad((), "an approvers file is a mapping with 'kind: approvers' and a list 'approvers'")
    extra = set(d) - {"kind", "approvers", "description"}
    if extra:
        raise bad((sorted(extra)[0],), f"unknown key {sorted(extra)[0]!r} (known: kind, description, approvers)")
    people: dict[str, Approver] = {}
    keys: dict[bytes, str] = {}
    for i, a in enumerate(d["approvers"]):
        p = ("approvers", i)
        if not isinstance(a, dict):
            raise bad(p, "each approver is a mapping with id, name, roles and public_key")
        unknown = set(a) - _FIELDS
        missing = _FIELDS - set(a)
        if unknown or missing:
            raise bad(p, f"unknown key {sorted(unknown)[0]!r}" if unknown else f"missing {', '.join(sorted(missing))}")
        aid = a["id"]
        if not isinstance(aid, str) or not APPROVER_ID.match(aid):
            raise bad(p + ("id",), f"{aid!r} is not an approver id (lower-case letters, digits, . _ -)")
        if aid in people:
            raise bad(p + ("id",), f"the approver {aid!r} is listed twice")
        roles = a["roles"]
        if not isinstance(roles, list) or not roles or any(r not in ROLES for r in roles):
            raise bad(p + ("roles",), f"roles is a list of {', '.join(ROLES)}")
        raw = parse_public_key(a["public_key"], f"{where}:{doc.where(p + ('public_key',))[0]}")
        if raw in keys:
            raise bad(p + ("public_key",), f"this key is already {keys[raw]}'s: one key, one person")
        keys[raw] = aid
        people[aid] = Approver(aid, str(a["name"]), frozenset(roles), raw)
    return Approvers(path, digest, people)
