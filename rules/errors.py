"""One exception hierarchy for the domain, rendered for humans at the doors (CLI, HTTP).

Every error carries a plain-words message and, as class attributes, what each door needs to render it:
``code`` (the stable machine-readable code of HTTP error bodies and JSON output), ``exit_code`` (the CLI's)
and ``http_status``. The doors read these attributes; none of them keeps its own mapping.
``PolicyError`` carries a list of located problems so that all of them can be shown at once.
"""

from __future__ import annotations

from dataclasses import dataclass


class DacpError(Exception):
    """Base of every error a user may see."""

    code = "error"
    exit_code = 1
    http_status = 500

    def render(self) -> str:
        """The message for a person (the CLI prints it after ``dacp: error:``)."""
        return str(self)

    def summary(self) -> str:
        """The one-line message of an HTTP error body (``render`` less what ``details`` carries)."""
        return self.render()

    def details(self) -> dict[str, object]:
        """Machine-readable fields an HTTP error body carries beside ``code`` and ``message``."""
        return {}


@dataclass(frozen=True)
class Problem:
    """One located problem in a policy or input document."""

    file: str
    line: int | None
    column: int | None
    message: str
    rule_id: str | None = None

    def render(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        rule = f" [rule {self.rule_id}]" if self.rule_id else ""
        return f"{where}:{rule} {self.message}"


class PolicyError(DacpError):
    """The policy bundle is invalid. Holds every problem found, not only the first."""

    code = "policy_invalid"
    exit_code = 2
    http_status = 422

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(problems, key=lambda p: (p.file, p.line or 0, p.column or 0, p.message))
        super().__init__(self.render())

    def render(self) -> str:
        n = len(self.problems)
        head = f"policy bundle is invalid: {n} problem{'s' if n != 1 else ''}"
        return "\n".join([head] + ["  " + p.render() for p in self.problems])

    def details(self) -> dict[str, object]:
        return {"problems": [{"file": p.file, "line": p.line, "column": p.column, "message": p.message,
                              "rule": p.rule_id} for p in self.problems]}


class InputError(DacpError):
    """A query, file or argument is malformed. ``where`` names the file/field at fault."""

    code = "invalid_input"
    exit_code = 3
    http_status = 422

    def __init__(self, message: str, where: str | None = None):
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}" if where else message)

    def summary(self) -> str:
        return self.message

    def details(self) -> dict[str, object]:
        return {"where": self.where}


class EvidenceError(DacpError):
    """Evidence could not be gathered or does not hold (node down, wrong chain, stale block...).

    ``reason`` is a short stable code (for example ``node_unreachable``, ``wrong_chain``) that is put
    into decisions and incident records; the message says the same in plain words.
    """

    code = "evidence_unavailable"
    exit_code = 4
    http_status = 502

    def __init__(self, reason: str, message: str):
        self.reason = reason
        self.message = message
        super().__init__(f"{reason}: {message}")


class StorageError(DacpError):
    """The decision log or ledger could not be read or written, or failed an integrity check."""

    code = "storage_unavailable"
    exit_code = 5
    http_status = 503


class TamperedError(StorageError):
    """A record failed its integrity check: its bytes, its place in the tree, or a checkpoint do not hold.
    Nothing is served from it (fail closed)."""

    code = "record_tampered"
    exit_code = 8
    http_status = 500


class EngineError(DacpError):
    """The rules engine failed to evaluate; the decision cannot be made (fails closed). Not bad input."""

    code = "engine_failed"
    exit_code = 6
    http_status = 500


class ApprovalError(DacpError):
    """The bundle may not be used: not approved, signed by an unknown key, or changed since it was signed."""

    code = "policy_not_approved"  # a valid bundle that may not be used (yet)
    exit_code = 7
    http_status = 409
