"""Four-eyes approval of policy bundles with Ed25519 signatures.

A bundle is *active* (may be used to decide, credit or serve) only when, for its content hash:

- an **author** has signed it (``dacp policy submit``) - the person who prepared the change;
- at least ``quorum`` (default 2) **distinct approvers**, none of them an author of that bundle, have
  signed it (``dacp policy approve``);
- every signature file for the bundle verifies with a public key listed for its signer in the
  **approvers file**, is for that bundle hash and that role (no file may fail: a bad file means tampering,
  and the bundle is refused - fail closed);
- with ``require_publication``, a publisher has also signed its publication (``dacp policy publish``).

Storage does not touch the bundle hash: the hash covers only the top-level ``*.yaml`` of the policy
directory, and approvals live below it by default (``<policies>/approvals/approvers.yaml`` and
``<policies>/approvals/signatures/<bundle sha256>/<signer>.<role>.json``). In production point
``[approvals] approvers`` at a file the policy authors cannot write, and pin it with ``approvers_sha256``.

The parts: ``keys`` (Ed25519 keys and key ids), ``approvers`` (the approvers file), ``signatures`` (what is
signed, signature files), ``settings`` (the ``[approvals]`` section), ``status`` (assessing a bundle and
refusing an unapproved one). This package re-exports their public names, so callers may import from here.
"""

from rules.errors import ApprovalError
from rules.lifecycle.approvals.approvers import Approver, Approvers, load_approvers
from rules.lifecycle.approvals.keys import (APPROVER_ID, ROLES, generate_key, key_id, load_private_key,
                                            parse_public_key, public_key_text, raw_public)
from rules.lifecycle.approvals.settings import ApprovalSettings, approval_settings
from rules.lifecycle.approvals.signatures import (FILE_ROLE, FORMAT, Signature, check_signature_file, sign,
                                                  signature_path, statement, write_signature)
from rules.lifecycle.approvals.status import Status, assess, require_approved

__all__ = [
    "APPROVER_ID", "ApprovalError", "ApprovalSettings", "Approver", "Approvers", "FILE_ROLE",
    "FORMAT", "ROLES", "Signature", "Status", "approval_settings", "assess", "check_signature_file",
    "generate_key", "key_id", "load_approvers", "load_private_key", "parse_public_key", "public_key_text",
    "raw_public", "require_approved", "sign", "signature_path", "statement", "write_signature",
]
