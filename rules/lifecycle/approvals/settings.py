"""The approval settings, resolved: the ``[approvals]`` section (typed and checked by ``rules.settings``;
environment ``DACP_APPROVALS_<KEY>`` wins) with its file places defaulting to below the policy directory::

    required = true                 # refuse unapproved bundles (default true)
    approvers = "<policies>/approvals/approvers.yaml"
    signatures = "<policies>/approvals/signatures"
    quorum = 2                      # distinct approvers, none an author
    approvers_sha256 = "..."        # optional: the approvers file must hash to this
    require_publication = false     # also require a publisher's signature
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rules.settings import Settings


@dataclass(frozen=True)
class ApprovalSettings:
    required: bool
    approvers: Path
    signatures: Path
    quorum: int
    approvers_sha256: str | None
    require_publication: bool


def approval_settings(settings: Settings) -> ApprovalSettings:
    """The approval settings with the defaults for the approvers file and signatures filled in."""
    sec = settings.approvals
    base = Path(settings.policies) / "approvals"
    return ApprovalSettings(required=sec.required, approvers=sec.approvers or base / "approvers.yaml",
                            signatures=sec.signatures or base / "signatures", quorum=sec.quorum,
                            approvers_sha256=sec.approvers_sha256, require_publication=sec.require_publication)
