"""One exception hierarchy for the domain, rendered for humans at the doors (CLI, HTTP).

Every error carries a plain-words message; ``PolicyError`` carries a list of located problems so
that all of them can be shown at once.
"""

from __future__ import annotations

from dataclasses import dataclass


class DacpError(Exception):
    """Base of every error a user may see. ``exit_code`` is what the CLI exits with."""

    exit_code = 1

    def render(self) -> str:
        return str(self)


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

    exit_code = 2

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(problems, key=lambda p: (p.file, p.line or 0, p.column or 0, p.message))
        super().__init__(self.render())

    def render(self) -> str:
        n = len(self.problems)
        head = f"policy bundle is invalid: {n} problem{'s' if n != 1 else ''}"
        return "\n".join([head] + ["  " + p.render() for p in self.problems])


class InputError(DacpError):
    """A query, file or argument is malformed. ``where`` names the file/field at fault."""

    exit_code = 3

    def __init__(self, message: str, where: str | None = None):
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}" if where else message)


class EvidenceError(DacpError):
    """Evidence could not be gathered or does not hold (node down, wrong chain, stale block...).

    ``reason`` is a short stable code (for example ``node_unreachable``, ``wrong_chain``) that is put
    into decisions and incident records; the message says the same in plain words.
    """

    exit_code = 4

    def __init__(self, reason: str, message: str):
        self.reason = reason
        self.message = message
        super().__init__(f"{reason}: {message}")


class StorageError(DacpError):
    """The decision log or ledger could not be read or written, or failed an integrity check."""

    exit_code = 5
