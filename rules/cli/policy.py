"""``dacp policy submit|approve|publish|status|keygen``: four-eyes approval of policy bundles for compliance
teams (docs/policy-lifecycle.md). Every signature is recorded in the decision log before its file is written."""

from __future__ import annotations

import argparse
import json
import uuid
from pathlib import Path
from typing import Any

from rules.audit.log import DecisionLog
from rules.cli.common import AddCommon, Handler, print_json, settings_from_args
from rules.errors import ApprovalError, InputError
from rules.lifecycle.approvals.approvers import load_approvers
from rules.lifecycle.approvals.keys import (APPROVER_ID, ROLES, generate_key, key_id, load_private_key,
                                            public_key_text, raw_public)
from rules.lifecycle.approvals.settings import approval_settings
from rules.lifecycle.approvals.signatures import sign, signature_path, write_signature
from rules.lifecycle.approvals.status import Status, assess
from rules.policy.loader import load_bundle

_ROLE = {"submit": "author", "approve": "approver", "publish": "publisher"}
_KIND = {"author": "policy_submission", "approver": "policy_approval", "publisher": "policy_publication"}
_VERB = {"author": "submitted", "approver": "approved", "publisher": "published"}


def register(sub: Any, add_common: AddCommon) -> dict[str, Handler]:
    p = sub.add_parser("policy", help="four-eyes approval of policy bundles: submit, approve, publish, status, keygen")
    psub = p.add_subparsers(dest="policy_command", required=True, metavar="ACTION")
    for name, words in (("submit", "sign the bundle as its author (the first step of a change)"),
                        ("approve", "sign the bundle as an approver (not its author)"),
                        ("publish", "sign and record the publication of an approved bundle")):
        s = psub.add_parser(name, help=words)
        s.add_argument("directory", nargs="?", type=Path, help="bundle directory (default: the configured policies)")
        s.add_argument("--key", type=Path, required=True, help="your Ed25519 private key (PEM), listed in the approvers file")
        add_common(s)
    s = psub.add_parser("status", help="who signed the bundle, whether it is approved and active (exit 0 only if active)")
    s.add_argument("directory", nargs="?", type=Path, help="bundle directory (default: the configured policies)")
    s.add_argument("--json", action="store_true")
    add_common(s)
    s = psub.add_parser("keygen", help="create an Ed25519 key pair; prints the approvers-file entry for it")
    s.add_argument("--out", type=Path, required=True, help="private key file to create (mode 0600; never overwritten)")
    s.add_argument("--id", required=True, help="the approver id (lower case, e.g. j.doe)")
    s.add_argument("--name", required=True, help="name and function, e.g. 'Jane Doe (Head of Risk)'")
    s.add_argument("--roles", default="approver", help="comma-separated: author, approver, publisher")
    add_common(s)
    return {"policy": cmd_policy}


def cmd_policy(args: argparse.Namespace) -> int:
    return {"submit": _sign_cmd, "approve": _sign_cmd, "publish": _sign_cmd, "status": _status,
            "keygen": _keygen}[args.policy_command](args)


def _check_may_sign(role: str, signer: str, bundle_hash: str, st: Status) -> None:
    """The four-eyes rules for a new signature, before anything is signed."""
    if st.invalid:
        raise ApprovalError("the bundle's signatures are not all valid; nothing was signed:\n  " +
                            "\n  ".join(f"{x.file}: {x.problem}" for x in st.invalid))
    if role == "approver":
        if not st.authors:
            raise ApprovalError(f"bundle {bundle_hash[:12]}… has no author yet: its author signs first "
                                "(dacp policy submit), so that approvers can be told apart from the author")
        if signer in st.authors:
            raise ApprovalError(f"{signer} is the author of bundle {bundle_hash[:12]}… and cannot approve it "
                                "(four eyes: approvers must be other people)")
    if role == "author" and signer in {x.signer for x in st.signatures if x.role == "approver"}:
        raise ApprovalError(f"{signer} has already approved bundle {bundle_hash[:12]}… and cannot also be its author")
    if role == "publisher" and not st.approved:
        raise ApprovalError(f"bundle {bundle_hash[:12]}… is not approved, so it cannot be published:\n  "
                            + "\n  ".join(st.problems()))


def _sign_cmd(args: argparse.Namespace) -> int:
    s = settings_from_args(args)
    cfg = approval_settings(s)
    role = _ROLE[args.policy_command]
    bundle = load_bundle(s.policies)
    approvers = load_approvers(cfg.approvers, cfg.approvers_sha256)
    key = load_private_key(args.key)
    who = approvers.by_key(raw_public(key))
    if who is None:
        raise ApprovalError(f"{args.key}: this key (id {key_id(raw_public(key))}) is not in the approvers "
                            f"file {cfg.approvers}; an unknown key cannot sign")
    st = assess(bundle.hash, s)
    _check_may_sign(role, who.id, bundle.hash, st)
    record = sign(bundle.hash, role, key, approvers)
    path = signature_path(cfg.signatures, record)
    if path.exists():
        raise InputError(f"{who.id} has already signed bundle {bundle.hash[:12]}… as {role} ({path}); "
                         "one signature per person and role", "signature")
    body = {k: record[k] for k in ("role", "bundle", "signer", "signer_name", "signed_at", "key_id", "public_key",
                                   "signature")}
    body.update({"signature_file": str(path), "approvers_file": str(cfg.approvers),
                 "approvers_sha256": approvers.sha256})
    if role == "publisher":
        body.update({"authors": st.authors, "approvals": st.counted, "quorum": cfg.quorum,
                     "published_at": record["signed_at"]})
    # The audit record first: a signature that could not be logged is not written.
    with DecisionLog(s.log) as log:
        (entry,) = log.append([(_KIND[role], f"{_KIND[role]}-{uuid.uuid4()}", bundle, body)])
    write_signature(cfg.signatures, record)
    after = assess(bundle.hash, s)
    print(f"{_VERB[role]}: bundle {bundle.name} {bundle.version} sha256 {bundle.hash}")
    print(f"  by {who.id} ({who.name}), key {key_id(who.public_key)}, at {record['signed_at']}")
    print(f"  signature {path}; decision log {s.log} entry {entry.seq} ({entry.entry_id})")
    print(f"  approvals {len(after.counted)} of {after.quorum}" + (f" ({', '.join(after.counted)})" if after.counted else "")
          + (" - APPROVED" if after.approved else f" - needs {max(after.quorum - len(after.counted), 0)} more"
             + ("" if after.authors else " and an author")))
    return 0


def _status(args: argparse.Namespace) -> int:
    s = settings_from_args(args)
    bundle = load_bundle(s.policies)
    st = assess(bundle.hash, s)
    logged: dict[str, int] = {}
    if s.log.is_file():
        with DecisionLog(s.log) as log:
            for kind in _KIND.values():
                logged[kind] = sum(1 for e in log.entries(kind) if e.bundle_hash == bundle.hash)
    if args.json:
        print_json({**st.to_json(), "name": bundle.name, "version": bundle.version, "logged": logged})
        return 0 if st.active else 1
    state = "ACTIVE" if st.active else ("APPROVED, NOT PUBLISHED" if st.approved else "NOT APPROVED")
    print(f"bundle    {bundle.name} {bundle.version} ({s.policies})")
    print(f"sha256    {bundle.hash}")
    print(f"status    {state}" + ("" if st.required else " (approvals not required by settings: [approvals] required = false)"))
    print(f"rule      {st.quorum} approval(s) by distinct approvers, none an author"
          + ("; and a publication" if st.require_publication else ""))
    print(f"approvers {st.approvers_file}" + (f" (sha256 {st.approvers_sha256})" if st.approvers_sha256 else ""))
    for sig in st.signatures:
        mark = "ok " if sig.valid else "BAD"
        extra = sig.problem or sig.note or ("counted" if sig.counted else "")
        print(f"  [{mark}] {sig.role:9} {sig.signer:12} {sig.signed_at:22} {extra}")
    if not st.signatures:
        print("  (no signatures for this bundle)")
    if logged:
        print("log       " + ", ".join(f"{v} {k.replace('policy_', '')} record(s)" for k, v in logged.items())
              + f" in {s.log}")
    for p in st.problems():
        print(f"problem   {p}")
    return 0 if st.active else 1


def _keygen(args: argparse.Namespace) -> int:
    roles = [r.strip() for r in args.roles.split(",") if r.strip()]
    bad = [r for r in roles if r not in ROLES]
    if bad or not roles:
        raise InputError(f"unknown role(s) {', '.join(bad) or '(none)'} (use {', '.join(ROLES)})", "--roles")
    if not APPROVER_ID.match(args.id):
        raise InputError("lower-case letters, digits, '.', '_' and '-' only", "--id")
    raw = generate_key(args.out)
    print(f"private key written to {args.out} (keep it secret; it never goes into the repository)")
    print("add this entry to the approvers file:")
    print(f"  - id: {args.id}\n    name: {json.dumps(args.name)}\n    roles: [{', '.join(roles)}]\n"
          f"    public_key: {public_key_text(raw)}")
    return 0
