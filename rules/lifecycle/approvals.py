"""Four-eyes approval of policy bundles with Ed25519 signatures.

A bundle is *active* (may be used to decide, credit or serve) only when, for its content hash:

- an **author** has signed it (``dacp policy submit``) - the person who prepared the change;
- at least ``quorum`` (default 2) **distinct approvers**, none of them an author of that bundle, have
  signed it (``dacp policy approve``);
- every signature file for the bundle verifies with a public key listed for its signer in the
  **approvers file**, is for that bundle hash and that role (no file may fail: a bad file means tampering,
  and the bundle is refused - fail closed);
- with ``require_publication``, a publisher has also signed its publication (``dacp policy publish``).

A signature covers a domain-separated statement naming the role, the bundle hash, the signer and the time
(``statement``), so a signature cannot be re-labelled from one role, bundle or person to another.

Storage does not touch the bundle hash: the hash covers only the top-level ``*.yaml`` of the policy
directory, and approvals live below it by default (``<policies>/approvals/approvers.yaml`` and
``<policies>/approvals/signatures/<bundle sha256>/<signer>.<role>.json``). In production point
``[approvals] approvers`` at a file the policy authors cannot write, and pin it with ``approvers_sha256``.

Settings (``[approvals]`` in dacp.toml; environment ``DACP_APPROVALS_<KEY>`` wins)::

    required = true                 # refuse unapproved bundles (default true)
    approvers = "<policies>/approvals/approvers.yaml"
    signatures = "<policies>/approvals/signatures"
    quorum = 2                      # distinct approvers, none an author
    approvers_sha256 = "..."        # optional: the approvers file must hash to this
    require_publication = false     # also require a publisher's signature
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping

from rules.errors import ApprovalError, InputError
from rules.policy.model import Bundle
from rules.settings import Settings
from rules.policy.yaml_reader import load_yaml_text

FORMAT = "dacp-policy-signature/1"
ROLES = ("author", "approver", "publisher")
FILE_ROLE = {"author": "author", "approver": "approval", "publisher": "publication"}
DEFAULT_QUORUM = 2
_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_HASH = re.compile(r"^[0-9a-f]{64}$")
KEYS = {"required", "approvers", "signatures", "quorum", "approvers_sha256", "require_publication"}

_allow_unapproved: contextvars.ContextVar[bool] = contextvars.ContextVar("dacp_allow_unapproved", default=False)


@contextlib.contextmanager
def preparing() -> Iterator[None]:
    """Within this block, ``require_approved`` lets unapproved bundles through: for the commands that
    prepare a change (validate, test, bundle show/compile, diff), never for those that decide."""
    token = _allow_unapproved.set(True)
    try:
        yield
    finally:
        _allow_unapproved.reset(token)


# -- settings --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ApprovalSettings:
    required: bool
    approvers: Path
    signatures: Path
    quorum: int
    approvers_sha256: str | None
    require_publication: bool


def _bool(v: Any, key: str) -> bool:
    if isinstance(v, bool):
        return v
    words = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}
    if isinstance(v, str) and v.strip().lower() in words:
        return words[v.strip().lower()]
    raise InputError(f"must be true or false, not {v!r}", f"[approvals] {key}")


def approval_settings(settings: Settings) -> ApprovalSettings:
    sec = dict(settings.section("approvals"))
    unknown = sorted(set(sec) - KEYS)
    if unknown:
        raise InputError(f"unknown settings {', '.join(unknown)} (known: {', '.join(sorted(KEYS))})", "[approvals]")
    try:
        quorum = int(sec.get("quorum", DEFAULT_QUORUM))
    except (TypeError, ValueError):
        raise InputError(f"must be a whole number, not {sec.get('quorum')!r}", "[approvals] quorum") from None
    if isinstance(sec.get("quorum"), bool) or quorum < 1:
        raise InputError("must be at least 1 (to switch approvals off set required = false)", "[approvals] quorum")
    pin = sec.get("approvers_sha256")
    if pin is not None and not (isinstance(pin, str) and _HASH.match(pin.lower())):
        raise InputError("must be a sha256 in hex (64 characters)", "[approvals] approvers_sha256")
    base = Path(settings.policies) / "approvals"
    return ApprovalSettings(
        required=_bool(sec.get("required", True), "required"),
        approvers=Path(sec["approvers"]) if sec.get("approvers") else base / "approvers.yaml",
        signatures=Path(sec["signatures"]) if sec.get("signatures") else base / "signatures",
        quorum=quorum, approvers_sha256=pin.lower() if pin else None,
        require_publication=_bool(sec.get("require_publication", False), "require_publication"),
    )


# -- keys and the approvers file -------------------------------------------------------------------
def _crypto() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return ed25519


def public_key_text(raw: bytes) -> str:
    return "ed25519:" + base64.b64encode(raw).decode("ascii")


def key_id(raw: bytes) -> str:
    """A short fingerprint of a public key: the first 16 hex digits of its sha256."""
    return hashlib.sha256(raw).hexdigest()[:16]


def parse_public_key(text: Any, where: str) -> bytes:
    if not isinstance(text, str) or not text.startswith("ed25519:"):
        raise ApprovalError(f"{where}: a public key is written 'ed25519:<base64 of the 32-byte key>'")
    try:
        raw = base64.b64decode(text[len("ed25519:"):], validate=True)
    except ValueError:
        raise ApprovalError(f"{where}: the public key is not valid base64") from None
    if len(raw) != 32:
        raise ApprovalError(f"{where}: an Ed25519 public key has 32 bytes, this one {len(raw)}")
    return raw


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
    """Read and check the approvers file (YAML: ``kind: approvers``, ``approvers: [{id, name, roles, public_key}]``)."""
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

    def bad(p: tuple, msg: str) -> ApprovalError:
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
        unknown = set(a) - {"id", "name", "roles", "public_key"}
        missing = {"id", "name", "roles", "public_key"} - set(a)
        if unknown or missing:
            raise bad(p, f"unknown key {sorted(unknown)[0]!r}" if unknown else f"missing {', '.join(sorted(missing))}")
        aid = a["id"]
        if not isinstance(aid, str) or not _ID.match(aid):
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


def generate_key(path: Path) -> bytes:
    """Write a new Ed25519 private key (PKCS#8 PEM, mode 0600); return its raw public key."""
    from cryptography.hazmat.primitives import serialization

    if path.exists():
        raise InputError("the file exists; a key is never overwritten", str(path))
    if not path.parent.is_dir():
        raise InputError("the directory does not exist", str(path.parent))
    key = _crypto().Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_private_key(path: Path) -> Any:
    from cryptography.hazmat.primitives import serialization

    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read the key: {e.strerror}", str(path)) from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise InputError(f"not an unencrypted PEM private key ({e})", str(path)) from None
    if not isinstance(key, _crypto().Ed25519PrivateKey):
        raise InputError("not an Ed25519 private key", str(path))
    return key


def raw_public(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


# -- statements and signature files ----------------------------------------------------------------
def statement(role: str, bundle_hash: str, signer: str, signed_at: str) -> bytes:
    """The exact bytes signed: domain-separated, one field per line."""
    return (f"{FORMAT}\nrole: {role}\nbundle: {bundle_hash}\nsigner: {signer}\nsigned_at: {signed_at}\n").encode("utf-8")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def sign(bundle_hash: str, role: str, key: Any, approvers: Approvers, signed_at: str | None = None) -> dict[str, Any]:
    """A signature record for ``bundle_hash`` in ``role`` by the holder of ``key`` (who must be listed with
    that role)."""
    raw = raw_public(key)
    who = approvers.by_key(raw)
    if who is None:
        raise ApprovalError(f"this key (id {key_id(raw)}) is not in the approvers file {approvers.path}; "
                            "an unknown key cannot sign")
    if role not in who.roles:
        raise ApprovalError(f"{who.id} ({who.name}) may not sign as {role} (roles: {', '.join(sorted(who.roles))})")
    at = signed_at or _now()
    sig = key.sign(statement(role, bundle_hash, who.id, at))
    return {"format": FORMAT, "role": role, "bundle": bundle_hash, "signer": who.id, "signer_name": who.name,
            "signed_at": at, "public_key": public_key_text(raw), "key_id": key_id(raw),
            "signature": base64.b64encode(sig).decode("ascii")}


def signature_path(signatures: Path, record: Mapping[str, Any]) -> Path:
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


# -- assessment ------------------------------------------------------------------------------------
@dataclass
class Signature:
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


@dataclass
class Status:
    bundle: str
    quorum: int
    required: bool
    require_publication: bool
    approvers_file: str
    approvers_sha256: str | None
    signatures_dir: str
    signatures: list[Signature] = field(default_factory=list)
    other_bundles: list[str] = field(default_factory=list)
    fatal: str | None = None  # the approvers file cannot be used

    @property
    def authors(self) -> list[str]:
        return sorted({s.signer for s in self.signatures if s.valid and s.role == "author"})

    @property
    def counted(self) -> list[str]:
        return sorted({s.signer for s in self.signatures if s.counted})

    @property
    def invalid(self) -> list[Signature]:
        return [s for s in self.signatures if not s.valid]

    @property
    def publishers(self) -> list[str]:
        return sorted({s.signer for s in self.signatures if s.valid and s.role == "publisher"})

    @property
    def approved(self) -> bool:
        return not self.fatal and not self.invalid and bool(self.authors) and len(self.counted) >= self.quorum

    @property
    def active(self) -> bool:
        return self.approved and (self.publishers != [] or not self.require_publication)

    def problems(self) -> list[str]:
        """Why the bundle is not active, in plain words (empty when it is)."""
        if self.fatal:
            return [self.fatal]
        out = [f"{s.file}: {s.problem}" for s in self.invalid]
        if not self.signatures:
            if self.other_bundles:
                shown = ", ".join(h[:12] + "…" for h in self.other_bundles[:3])
                out.append(f"it has no signatures; {self.signatures_dir} holds signatures for other content "
                           f"({shown}): the policy files changed after they were signed, so they need approval again")
            else:
                out.append(f"it has no signatures in {self.signatures_dir}")
            return out
        if not self.authors:
            out.append("no author has signed it (dacp policy submit)")
        if len(self.counted) < self.quorum:
            have = f"{len(self.counted)} ({', '.join(self.counted)})" if self.counted else "none"
            out.append(f"it needs {self.quorum} approvals by distinct approvers who are not its author; it has {have}")
        if self.approved and self.require_publication and not self.publishers:
            out.append("it is approved but not published (dacp policy publish), and publication is required")
        return out

    def to_json(self) -> dict[str, Any]:
        return {"bundle": self.bundle, "approved": self.approved, "active": self.active, "required": self.required,
                "quorum": self.quorum, "authors": self.authors, "approvals_counted": self.counted,
                "publishers": self.publishers, "require_publication": self.require_publication,
                "approvers_file": self.approvers_file, "approvers_sha256": self.approvers_sha256,
                "signatures_dir": self.signatures_dir, "signatures": [s.to_json() for s in self.signatures],
                "problems": self.problems()}


def _check_file(path: Path, bundle_hash: str, approvers: Approvers) -> Signature:
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
    try:
        _crypto().Ed25519PublicKey.from_public_bytes(raw).verify(signature, statement(role, bundle_hash, signer, at))
    except Exception:  # cryptography raises InvalidSignature; anything else is a bad file too
        sig.problem = "the signature does not verify: the record was altered after signing"
        return sig
    sig.valid = True
    return sig


def assess(bundle_hash: str, settings: Settings) -> Status:
    """Every signature for ``bundle_hash``, checked, and whether the bundle is approved."""
    cfg = approval_settings(settings)
    st = Status(bundle_hash, cfg.quorum, cfg.required, cfg.require_publication, str(cfg.approvers),
                None, str(cfg.signatures))
    try:
        approvers = load_approvers(cfg.approvers, cfg.approvers_sha256)
    except ApprovalError as e:
        st.fatal = str(e)
        return st
    st.approvers_sha256 = approvers.sha256
    folder = cfg.signatures / bundle_hash
    if cfg.signatures.is_dir():
        st.other_bundles = sorted(p.name for p in cfg.signatures.iterdir() if p.is_dir() and p.name != bundle_hash)
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            if p.name.endswith(".tmp"):
                continue
            st.signatures.append(_check_file(p, bundle_hash, approvers)
                                 if p.is_file() else Signature(str(p), "?", "?", "?", False, "not a file"))
    authors = set(st.authors)
    for s in st.signatures:
        if s.valid and s.role == "approver":
            if s.signer in authors:
                s.note = "not counted: the author of a bundle cannot approve it"
            else:
                s.counted = True
    return st


def require_approved(bundle: Bundle, settings: Settings) -> None:
    """Refuse ``bundle`` unless it is approved (and published, where required). Called by ``Dacp.bundle``,
    so every door that decides (CLI, ledger, HTTP service) refuses an unapproved bundle."""
    cfg = approval_settings(settings)
    if not cfg.required or _allow_unapproved.get():
        return
    st = assess(bundle.hash, settings)
    if not st.active:
        raise ApprovalError(f"policy bundle {bundle.hash} ({settings.policies}) is not approved for use:\n  "
                            + "\n  ".join(st.problems())
                            + "\n  (see `dacp policy status`; docs/policy-lifecycle.md)")
