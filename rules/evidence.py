"""Evidence objects returned by adapters: a number together with where it came from.

Quantities are integer base units (satoshi, wei, token units) plus ``decimals``; prices are
``Decimal``. ``to_json`` gives a plain, JSON-safe dict (integers as decimal strings, so that no
JSON reader turns 10**19 wei into a float) that is stored with the decision.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Mapping


def _iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class CustodyEvidence:
    """Verified balance of one asset held at a set of custody addresses, read at one pinned block.

    ``chain`` is ``ethereum`` or ``bitcoin``; ``network`` the chain id (Ethereum, as a string) or
    the network name (Bitcoin: ``main``, ``test``, ``regtest``...). ``details`` holds what is
    chain-specific (per-address balances, outpoints, the block selector used, retries).
    """

    asset: str
    chain: str
    network: str
    addresses: tuple[str, ...]
    raw_balance: int
    decimals: int
    block_number: int
    block_hash: str
    block_timestamp: datetime
    source: str
    contract: str | None = None
    confirmations: int | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def quantity(self) -> Decimal:
        """The balance in whole units, exact."""
        return Decimal(self.raw_balance).scaleb(-self.decimals)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "custody",
            "asset": self.asset,
            "chain": self.chain,
            "network": self.network,
            "addresses": list(self.addresses),
            "raw_balance": str(self.raw_balance),
            "decimals": self.decimals,
            "quantity": str(self.quantity),
            "block_number": self.block_number,
            "block_hash": self.block_hash,
            "block_timestamp": _iso(self.block_timestamp),
            "source": self.source,
            "contract": self.contract,
            "confirmations": self.confirmations,
            "details": dict(self.details),
        }


@dataclass(frozen=True)
class PriceEvidence:
    """A USD price with its provenance. ``round_id`` is None for static sources."""

    asset: str
    price_usd: Decimal
    source: str
    updated_at: datetime
    round_id: int | None = None
    raw_answer: int | None = None
    decimals: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "price",
            "asset": self.asset,
            "price_usd": str(self.price_usd),
            "source": self.source,
            "updated_at": _iso(self.updated_at),
            "round_id": None if self.round_id is None else str(self.round_id),
            "raw_answer": None if self.raw_answer is None else str(self.raw_answer),
            "decimals": self.decimals,
        }


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def custody_from_json(d: Mapping[str, Any]) -> CustodyEvidence:
    """Inverse of ``CustodyEvidence.to_json`` (for replaying a logged decision)."""
    return CustodyEvidence(
        asset=d["asset"], chain=d["chain"], network=d["network"], addresses=tuple(d["addresses"]),
        raw_balance=int(d["raw_balance"]), decimals=int(d["decimals"]), block_number=int(d["block_number"]),
        block_hash=d["block_hash"], block_timestamp=_ts(d["block_timestamp"]), source=d["source"],
        contract=d.get("contract"), confirmations=d.get("confirmations"), details=dict(d.get("details") or {}))


def price_from_json(d: Mapping[str, Any]) -> PriceEvidence:
    """Inverse of ``PriceEvidence.to_json``."""
    return PriceEvidence(
        asset=d["asset"], price_usd=Decimal(d["price_usd"]), source=d["source"], updated_at=_ts(d["updated_at"]),
        round_id=None if d.get("round_id") is None else int(d["round_id"]),
        raw_answer=None if d.get("raw_answer") is None else int(d["raw_answer"]), decimals=d.get("decimals"))


LEDGER = "ledger"
WHAT_IF = "what-if (caller's portfolio)"


@dataclass(frozen=True)
class Held:
    """One holding: an asset, its collateral value (after haircut and limits, as last decided) and, when
    known, its quantity (whole units) and custodian. A holding without a quantity counts at its value."""

    asset: str
    value_usd: Decimal
    quantity: Decimal | None = None
    custodian: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"asset": self.asset, "value_usd": str(self.value_usd),
                "quantity": None if self.quantity is None else str(self.quantity), "custodian": self.custodian}


@dataclass(frozen=True)
class Holdings:
    """What is already held, for the limits: the account's own holdings and those of every reach a limit
    may count across (``customer``: every account of the account's customer; ``participant``: every
    account of the FCM; ``programme``: every account in the programme). Each reach includes the account's
    own holdings. ``source`` says where they came from: ``LEDGER`` (the system's own books) or ``WHAT_IF``
    (a caller's claim, decided as a what-if and flagged so in the decision). A reach that is not given
    is the account's own holdings for a what-if; for the ledger it must be given (fail closed: a limit
    across a reach the ledger did not give counts nothing)."""

    source: str
    account: tuple[Held, ...] = ()
    customer: tuple[Held, ...] | None = None
    participant: tuple[Held, ...] | None = None
    programme: tuple[Held, ...] | None = None
    customer_id: str | None = None
    as_of: datetime | None = None

    def reach(self, across: str) -> tuple[Held, ...] | None:
        """The holdings a limit ``across`` a reach counts; None when they are not known."""
        if across == "account":
            return self.account
        found = getattr(self, across)
        if found is None and self.source != LEDGER:
            return self.account
        return found

    @property
    def what_if(self) -> bool:
        return self.source != LEDGER

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "holdings", "source": self.source}
        if self.customer_id is not None:
            out["customer"] = self.customer_id
        if self.as_of is not None:
            out["as_of"] = _iso(self.as_of)
        return out


def holdings_lines_json(h: Holdings) -> dict[str, Any]:
    """``h`` with every line (``Holdings.to_json`` is the decision's summary): what a decision made with the
    ledger's holdings stores beside it, so that replaying it decides with the same holdings."""
    out = h.to_json()  # its "customer" is the customer's id; the customer reach's lines go under "customer_lines"
    for reach in ("account", "customer", "participant", "programme"):
        lines = getattr(h, reach)
        if lines is not None:
            out["customer_lines" if reach == "customer" else reach] = [x.to_json() for x in lines]
    return out


def holdings_from_json(d: Mapping[str, Any]) -> Holdings:
    """Inverse of ``holdings_lines_json`` (for replaying a logged decision)."""
    def lines(key: str) -> tuple[Held, ...] | None:
        if d.get(key) is None:
            return None
        return tuple(Held(x["asset"], Decimal(x["value_usd"]), None if x.get("quantity") is None
                          else Decimal(x["quantity"]), x.get("custodian")) for x in d[key])

    # Entries written before "customer_lines" kept the customer reach's lines under "customer" (a list, which
    # overwrote the customer's id there): read those lines as they were; the id they lost stays unknown.
    customer = d.get("customer")
    old_form = isinstance(customer, list)
    return Holdings(d["source"], lines("account") or (), lines("customer" if old_form else "customer_lines"),
                    lines("participant"), lines("programme"), None if old_form else customer,
                    None if d.get("as_of") is None else _ts(d["as_of"]))
