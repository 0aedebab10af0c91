"""What a clearing system asks the ledger to do, and how a retry is told from a new request.

A request carries an idempotency key; its *fingerprint* (sha256 of its parameters in canonical JSON,
quantities without trailing zeros) is stored with the result, so the same key with the same parameters
replays the result and the same key with other parameters is refused.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Mapping

from rules.errors import AsOfError, InputError
from rules.ledger.amounts import plain
from rules.values import utc_text

KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,79}$")
# Account types of the FCM's customer funds (CFTC Regulations): the weekly report groups by them.
ACCOUNT_TYPES = {
    "customer-segregated": "Customer segregated account - futures (CEA 4d(a)(2), Reg. 1.20)",
    "cleared-swaps": "Cleared swaps customer account (CEA 4d(f), Part 22)",
    "30.7-secured": "Foreign futures secured amount (Reg. 30.7)",
}
DEFAULT_ACCOUNT_TYPE = "customer-segregated"


def check_key(key: str) -> str:
    if not isinstance(key, str) or not KEY.fullmatch(key):
        raise InputError("an idempotency key is 1-80 characters: letters, digits and . _ : / - "
                         "(starting with a letter or digit)", "idempotency key")
    return key


def check_as_of(as_of: datetime | None, now: datetime, window_s: float) -> None:
    """A credit is decided at the present: ``as_of`` (None: now) must lie within ``window_s`` seconds of the
    ledger's clock ``now``, else ``AsOfError`` (back-dated or dated ahead; nothing read or written)."""
    if as_of is None:
        return
    off = (as_of - now).total_seconds()
    if abs(off) > window_s:
        raise AsOfError(f"{utc_text(as_of)} is {_span(abs(off))} {'before' if off < 0 else 'after'} the ledger's "
                        f"clock ({utc_text(now)}); a credit is decided at the present, within {window_s:g} s "
                        "([ledger] as_of_window_s): leave as_of out", "as_of")


def _span(seconds: float) -> str:
    for unit, n in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= 2 * n:
            return f"{seconds / n:.0f} {unit}"
    return f"{seconds:.0f} s"


def fingerprint(doc: Mapping[str, Any]) -> str:
    """sha256 of ``doc`` as canonical JSON (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class CreditRequest:
    """What a clearing system asks to credit. ``evidence`` holds the query's off-chain evidence
    (``stablecoin`` / ``fund`` blocks, as in a query); ``as_of`` defaults to now; ``customer`` names the
    account's customer (fixed by the first credit that names it: ``rules.ledger.customers``)."""

    account: str
    participant: str
    asset: str
    quantity: Decimal
    addresses: tuple[str, ...]
    idempotency_key: str
    account_type: str | None = None
    custodian: str | None = None
    segregated: bool | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)
    as_of: datetime | None = None
    customer: str | None = None

    def fingerprint(self) -> str:
        named = {"customer": self.customer} if self.customer is not None else {}  # keys stored before it still match
        return fingerprint({"op": "credit", **named, "account": self.account, "participant": self.participant,
                            "asset": self.asset, "quantity": plain(self.quantity), "addresses": list(self.addresses),
                            "account_type": self.account_type, "custodian": self.custodian,
                            "segregated": self.segregated, "evidence": self.evidence,
                            "as_of": None if self.as_of is None else utc_text(self.as_of, "microseconds")})


@dataclass(frozen=True)
class WithdrawRequest:
    """A debit: ``quantity`` off the account's newest credits of ``asset`` (or off one ``address``)."""

    account: str
    asset: str
    quantity: Decimal
    idempotency_key: str
    address: str | None = None

    def fingerprint(self) -> str:
        return fingerprint({"op": "withdraw", "account": self.account, "asset": self.asset,
                            "quantity": plain(self.quantity), "address": self.address})
