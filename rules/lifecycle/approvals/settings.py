"""The approval settings, resolved: the ``[approvals]`` section (typed and checked by ``rules.settings``;
environment ``DACP_APPROVALS_<KEY>`` wins) with its file places defaulting to below the policy directory::

    required = true                 # refuse unapproved bundles (default true)
    approvers = "<policies>/approvals/approvers.yaml"
    signatures = "<policies>/approvals/signatures"
    quorum = 2                      # distinct approvers, none an author
    approvers_sha256 = "..."        # optional: the approvers file must hash to this
    require_publication = false     # also require a publisher's signature
    demo_keys_in_policy_dir = false # allow an approvers file inside the policy directory (DEMO keys only)

The approvers file is the trust root: ``trust_root_problem`` refuses one inside the policy directory (where
whoever writes policies could add their own keys) unless ``demo_keys_in_policy_dir`` is set.
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
    policies: Path = Path("policies")
    demo_keys_in_policy_dir: bool = False

    def trust_root_problem(self) -> str | None:
        """Why the approvers file may not be trusted (inside the policy directory, no demo switch), or None."""
        if self.demo_keys_in_policy_dir:
            return None
        approvers, policies = self.approvers.resolve(), self.policies.resolve()
        if approvers != policies and policies not in approvers.parents:
            return None
        return (f"the approvers file {self.approvers} is inside the policy directory {self.policies}: whoever can "
                "write policies could list their own keys and approve their own bundle. Keep it where policy "
                "authors cannot write, set [approvals] approvers to it and pin approvers_sha256; or, for the "
                "shipped DEMO keys only, set [approvals] demo_keys_in_policy_dir = true "
                "(DACP_APPROVALS_DEMO_KEYS_IN_POLICY_DIR=true)")


def approval_settings(settings: Settings) -> ApprovalSettings:
    """The approval settings with the defaults for the approvers file and signatures filled in."""
    sec = settings.approvals
    base = Path(settings.policies) / "approvals"
    return ApprovalSettings(required=sec.required, approvers=sec.approvers or base / "approvers.yaml",
                            signatures=sec.signatures or base / "signatures", quorum=sec.quorum,
                            approvers_sha256=sec.approvers_sha256, require_publication=sec.require_publication,
                            policies=Path(settings.policies), demo_keys_in_policy_dir=sec.demo_keys_in_policy_dir)
