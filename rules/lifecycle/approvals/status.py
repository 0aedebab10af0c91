"""Whether a bundle is approved: every signature for it checked, the four-eyes rule applied, and the refusal
of an unapproved bundle (``require_approved``, called by ``rules.app.Dacp.bundle`` for every door that decides)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rules.errors import ApprovalError
from rules.lifecycle.approvals.approvers import load_approvers
from rules.lifecycle.approvals.settings import ApprovalSettings, approval_settings
from rules.lifecycle.approvals.signatures import Signature, check_signature_file
from rules.policy.cache import mark, marked
from rules.policy.model import Bundle
from rules.settings import Settings


@dataclass
class Status:
    """The signatures of one bundle and what they amount to."""

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


def assess(bundle_hash: str, settings: Settings) -> Status:
    """Every signature for ``bundle_hash``, checked, and whether the bundle is approved."""
    cfg = approval_settings(settings)
    st = Status(bundle_hash, cfg.quorum, cfg.required, cfg.require_publication, str(cfg.approvers),
                None, str(cfg.signatures))
    untrusted = cfg.trust_root_problem()
    if untrusted:
        st.fatal = untrusted
        return st
    try:
        approvers = load_approvers(cfg.approvers, cfg.approvers_sha256)
    except ApprovalError as e:  # fail closed: no approvers file, no approved bundle
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
            st.signatures.append(check_signature_file(p, bundle_hash, approvers)
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
    """Refuse ``bundle`` unless it is approved (and published, where required), or approvals are not required
    by the settings. Called by ``Dacp.bundle`` (unless the caller prepares a change: ``require_approval=False``),
    so every door that decides (CLI, ledger, HTTP service) refuses an unapproved bundle."""
    cfg = approval_settings(settings)
    if not cfg.required:
        return
    untrusted = cfg.trust_root_problem()
    if untrusted:  # checked first: signatures checked against a root the authors could write prove nothing
        raise ApprovalError(f"policy bundle {bundle.hash} ({settings.policies}) is not approved for use:\n  "
                            f"{untrusted}\n  (docs/policy-lifecycle.md)")
    key = verdict_key(bundle.hash, cfg)
    if key is not None and marked("approval", key):
        return  # these very files were verified active before (start-up time: no YAML, no Ed25519)
    st = assess(bundle.hash, settings)
    if not st.active:
        raise ApprovalError(f"policy bundle {bundle.hash} ({settings.policies}) is not approved for use:\n  "
                            + "\n  ".join(st.problems())
                            + "\n  (see `dacp policy status`; docs/policy-lifecycle.md)")
    if key is not None and verdict_key(bundle.hash, cfg) == key:  # nothing changed while it was assessed
        mark("approval", key)


_CODE = sorted(Path(__file__).resolve().parent.glob("*.py"))


def verdict_key(bundle_hash: str, cfg: ApprovalSettings) -> str | None:
    """sha256 over everything an approval verdict reads: this code, the bundle hash, the approval settings, the
    approvers file's bytes and the name and bytes of every entry of the bundle's signatures directory. The
    verdict "active" is kept in the cache under it (``rules.policy.cache.mark``): a changed key, approver,
    signature, setting or checker is another key, checked afresh. None (nothing kept) when a file is unreadable."""
    h = hashlib.sha256(b"dacp-approval-verdict/1\0")
    try:
        for path in _CODE:
            h.update(path.read_bytes() + b"\0")
        h.update(repr((bundle_hash, cfg.required, str(cfg.approvers.resolve()), str(cfg.signatures.resolve()),
                       cfg.quorum, cfg.approvers_sha256, cfg.require_publication, str(cfg.policies.resolve()),
                       cfg.demo_keys_in_policy_dir)).encode("utf-8") + b"\0")
        h.update(hashlib.sha256(cfg.approvers.read_bytes()).digest())
        folder = cfg.signatures / bundle_hash
        for p in sorted(folder.iterdir()) if folder.is_dir() else ():
            h.update(p.name.encode("utf-8") + b"\0" + (hashlib.sha256(p.read_bytes()).digest() if p.is_file()
                                                       else b"not a file"))
    except (OSError, ValueError):
        return None
    return h.hexdigest()
