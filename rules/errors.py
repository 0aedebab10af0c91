"""One exception hierarchy for the domain, rendered for humans at the doors (CLI, HTTP).

Every error carries a plain-words message and, as class attributes, what each door needs to render it:
``code`` (the stable machine-readable code of HTTP error bodies and JSON output), ``exit_code`` (the CLI's),
``http_status`` and ``retryable`` (the same request, unchanged, may succeed later). The doors read these
attributes; none of them keeps its own mapping. Every code, status and reason is listed in docs/errors.md
(``tests/test_error_codes.py`` holds the table to the code).
``PolicyError`` carries a list of located problems so that all of them can be shown at once.
"""

from __future__ import annotations

from dataclasses import dataclass


class DacpError(Exception):
    """Base of every error a user may see."""

    code = "error"
    exit_code = 1
    http_status = 500
    retryable = False

    def render(self) -> str:
        """The message for a person (the CLI prints it after ``dacp: error:``)."""
        return str(self)

    def summary(self) -> str:
        """The one-line message of an HTTP error body (``render`` less what ``details`` carries)."""
        return self.render()

    def details(self) -> dict[str, object]:
        """Machine-readable fields an HTTP error body carries beside ``code`` and ``message``."""
        return {}

    def to_json(self) -> dict[str, object]:
        """The error as every door's JSON shows it: ``code``, ``message``, ``retryable``, then ``details()``."""
        return {"code": self.code, "message": self.summary(), "retryable": self.retryable, **self.details()}


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


# Every reason an EvidenceError may carry: whether the same request may succeed later (a node back up, a block
# finalized, a price updated), and what it means. docs/errors.md lists them; tests/test_error_codes.py checks
# that every reason raised in adapters/ and rules/ is here. An unknown reason is not retryable (fail closed).
EVIDENCE_REASONS: dict[str, tuple[bool, str]] = {
    "node_unreachable": (True, "cannot connect to the node, or the connection failed"),
    "timeout": (True, "the node did not answer within the request or total time budget"),
    "http_error": (True, "the node answered an HTTP error (503 busy, 5xx)"),
    "rpc_error": (True, "the node answered a JSON-RPC error"),
    "bad_response": (True, "the node's answer could not be read or does not add up"),
    "warming_up": (True, "the node is still starting (Bitcoin Core RPC_IN_WARMUP)"),
    "not_synced": (True, "the node is still syncing (initial block download)"),
    "scan_in_progress": (True, "another scantxoutset is running on the node"),
    "block_not_found": (True, "the pinned block is not (or no longer) known to the node"),
    "stale_block": (True, "the block read is older than max_block_age_s"),
    "reorg": (True, "the chain changed between the custody read and the commit (block hash or outputs differ)"),
    "stale_price": (True, "the price round is older than max_age_s or not complete"),
    "unauthorized": (False, "the node refused the RPC credentials (or the cookie file cannot be read)"),
    "method_not_found": (False, "the node does not offer a needed RPC method"),
    "invalid_parameter": (False, "the node refused a request parameter"),
    "invalid_address": (False, "an address is malformed or fails its checksum"),
    "wrong_network": (False, "the node or an address is of another network than the asset's"),
    "wrong_chain": (False, "the Ethereum node's chain id is not the configured one"),
    "no_contract_code": (False, "no contract at the token or price feed address"),
    "contract_call_failed": (False, "a contract call reverted or answered malformed data"),
    "decimals_mismatch": (False, "the token's decimals() differ from the asset registry"),
    "symbol_mismatch": (False, "the token's symbol() differs from the asset registry"),
    "feed_mismatch": (False, "the price feed describes another pair than configured"),
    "non_positive_price": (False, "the price feed answers zero or a negative price"),
    "price_unavailable": (False, "no price source (or no price) for the asset"),
    "not_configured": (False, "no node configured for the asset's chain"),
    "unsupported_chain": (False, "no adapter for the asset's chain"),
    "no_addresses": (False, "no custody address to verify"),
    "no_per_address_balances": (False, "the custody evidence gives no balance per address"),
}


class EvidenceError(DacpError):
    """Evidence could not be gathered or does not hold (node down, wrong chain, stale block...).

    ``reason`` is a short stable code (one of ``EVIDENCE_REASONS``, for example ``node_unreachable``,
    ``wrong_chain``) that is put into decisions, incident records and error bodies (``details()``:
    ``reason`` and ``retryable``); the message says the same in plain words.
    """

    code = "evidence_unavailable"
    exit_code = 4
    http_status = 502

    def __init__(self, reason: str, message: str):
        self.reason = reason
        self.message = message
        self.retryable = EVIDENCE_REASONS.get(reason, (False, ""))[0]
        super().__init__(f"{reason}: {message}")

    def summary(self) -> str:
        return self.message

    def details(self) -> dict[str, object]:
        return {"reason": self.reason, "retryable": self.retryable}


class StorageError(DacpError):
    """The decision log or ledger could not be read or written, or failed an integrity check."""

    code = "storage_unavailable"
    exit_code = 5
    http_status = 503
    retryable = True  # the database busy or down


class TamperedError(StorageError):
    """A record failed its integrity check: its bytes, its place in the tree, or a checkpoint do not hold.
    Nothing is served from it (fail closed)."""

    code = "record_tampered"
    exit_code = 8
    http_status = 500
    retryable = False


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


class MarginError(DacpError):
    """A withdrawal that would leave the account under-margined: its collateral below what the DCOs require
    (``rules.margin``). An answer, not a fault: nothing is withdrawn; ``dacp margin free`` says what may go."""

    code = "under_margined"
    exit_code = 1
    http_status = 409

    def __init__(self, message: str, *, account: str, reason: str = "withdrawal_under_margined",
                 deficit_usd: str = "0", free_usd: str = "0"):
        self.message = message
        self.account = account
        self.reason = reason
        self.deficit_usd = deficit_usd
        self.free_usd = free_usd
        super().__init__(message)

    def details(self) -> dict[str, object]:
        return {"reason": self.reason, "account": self.account, "deficit_usd": self.deficit_usd,
                "free_usd": self.free_usd}
class AsOfError(InputError):
    """A ledger request's ``as_of`` lies outside the window around the ledger's clock (settings ``[ledger]
    as_of_window_s``): back-dated (or dated ahead). Membership, eligibility and prices are judged at ``as_of``,
    so the ledger only decides at the present; nothing is verified, decided or written."""

    code = "as_of_outside_window"
    exit_code = 9
    http_status = 422


class CustomerMismatchError(InputError):
    """A credit names a customer for an account whose customer is another: an account's customer is fixed by
    the first credit that names it (``rules.ledger.customers``), since the limits across a customer count
    every account of it. Nothing is verified, decided or written; send the account's customer, or none."""

    code = "customer_mismatch"
    exit_code = 3
    http_status = 409

    def __init__(self, account: str, customer: str, asked: str):
        self.account = account
        self.customer = customer
        self.asked = asked
        super().__init__(f"account {account} belongs to customer {customer}, not {asked}: an account's customer "
                         "is fixed by the first credit that names it", "customer")

    def details(self) -> dict[str, object]:
        return {"where": self.where, "reason": "customer.fixed", "account": self.account,
                "customer": self.customer, "asked": self.asked}
