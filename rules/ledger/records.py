"""The ledger's own records, as the store reads and writes them (``rules.ledger.store``).

Quantities are integer base units (``*_raw``, with the asset's ``decimals``), money is ``Decimal``;
times are RFC 3339 UTC text (``rules.values.utc_text``), so that they sort and compare as stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class Account:
    """An FCM customer account: opened by its first credit, with the type the weekly report groups by, and
    its customer (None until a credit names one; then fixed: ``rules.ledger.customers``)."""

    account: str
    participant: str
    account_type: str
    created_at: str
    customer: str | None = None


@dataclass(frozen=True)
class StoredRequest:
    """The result remembered under an idempotency key (a retry with the same key gets it back)."""

    idempotency_key: str
    operation: str
    fingerprint: str
    status: str
    result: dict[str, Any]
    created_at: str


@dataclass(frozen=True)
class CustodyState:
    """The last verified on-chain balance of one custody address, and the block it was read at."""

    asset: str
    address: str
    chain: str
    balance_raw: int
    decimals: int
    block_number: int
    block_hash: str
    verified_at: str


@dataclass(frozen=True)
class Position:
    """What one account has credited at one custody address, and its values now."""

    account: str
    asset: str
    address: str
    participant: str
    quantity_raw: int
    decimals: int
    market_value_usd: Decimal
    after_haircut_usd: Decimal
    collateral_value_usd: Decimal
    price_usd: Decimal
    haircut: str | None
    decision_id: str
    bundle_hash: str
    facts: dict[str, Any]
    created_at: str
    updated_at: str

    @property
    def quantity(self) -> Decimal:
        return Decimal(self.quantity_raw).scaleb(-self.decimals)

    def but(self, **kw: Any) -> "Position":
        return replace(self, **kw)


@dataclass(frozen=True)
class JournalEntry:
    """One line of the journal: a signed change of a position (the weekly report sums them)."""

    entry_id: str
    at: str
    kind: str  # credit | withdraw | shortfall | revalue | holding (a deposit lowered the holding's earlier lines)
    account: str
    participant: str
    asset: str
    address: str
    quantity_raw: int  # signed delta
    decimals: int
    market_value_usd: Decimal  # signed deltas
    after_haircut_usd: Decimal
    collateral_value_usd: Decimal
    price_usd: Decimal | None = None
    decision_id: str | None = None
    idempotency_key: str | None = None
    reason: str | None = None
    evidence: Any = None
    seq: int | None = None


@dataclass(frozen=True)
class Incident:
    """Something operations must know about, recorded when it happens."""

    incident_id: str
    at: str
    kind: str  # verification_failure | node_outage | price_unavailable | shortfall | deficit | double_count_refused
    severity: str  # warning | critical
    message: str
    account: str | None = None
    asset: str | None = None
    address: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
