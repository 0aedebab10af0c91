"""What every ledger operation works with: the bundle in force and its evaluator, the store and the
decision log in its database, the evidence sources, the clock; and the few steps they all share
(idempotency, the asset by symbol, the price, an incident of its own).

``rules.ledger.book.Ledger`` is this context with the operations on it; the operations live in their
own modules (``credit``, ``withdraw``, ``reverify``, ``revalue``) and take the context, so that a
test that swaps ``ledger.prices``, ``ledger.verifier`` or ``ledger.clock`` changes what they use.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Callable

from rules.audit.log import DecisionLog
from rules.engine.decide import Engine
from rules.errors import EvidenceError, InputError
from rules.evidence import PriceEvidence
from rules.ledger.records import Incident
from rules.ledger.store import LedgerStore
from rules.policy.model import Asset, Bundle
from rules.values import now_utc, utc_text

# Evidence failures that mean "could not ask" (an outage, retry later) rather than "the chain said no".
OUTAGE_REASONS = {"node_unreachable", "timeout", "rpc_error", "not_configured", "bad_response"}


def failure_kind(reason: str) -> str:
    """The incident kind of a failed verification."""
    return "node_outage" if reason in OUTAGE_REASONS else "verification_failure"


class LedgerContext:
    """The ledger's parts; decisions through ``rules.engine.decide.Engine``.

    ``verifier``: ``adapters.custody.CustodyVerifier`` (or anything with ``verify(asset, addresses)``);
    ``prices``: ``adapters.custody.PriceReader`` (or anything with ``read(asset)`` -> PriceEvidence).
    ``hooks``: test points called by name (``verified``, ``before_commit``).
    ``withdrawal_guard``: called with the account inside a withdrawal's transaction, once its reductions are
    written; it raises to refuse the withdrawal (``rules.margin``: one that would leave the account
    under-margined), which rolls the whole transaction back. The composition root wires it (``rules.app``)."""

    def __init__(self, bundle: Bundle, engine: Engine, store: LedgerStore, *, verifier: Any = None,
                 prices: Any = None, clock: Callable[[], datetime] = now_utc,
                 withdrawal_guard: Callable[[str], None] | None = None, as_of_window_s: float = 300.0):
        self.bundle = bundle
        self.engine = engine
        self.store = store
        self.log = DecisionLog(database=store.db)
        self.verifier = verifier
        self.prices = prices
        self.clock = clock
        self.withdrawal_guard = withdrawal_guard
        self.as_of_window_s = as_of_window_s  # settings [ledger] as_of_window_s: how far a credit's as_of may lie
        self.hooks: dict[str, Callable[[], None]] = {}

    def now_text(self) -> str:
        """The clock's time as the ledger stores it (UTC, microseconds)."""
        return utc_text(self.clock(), "microseconds")

    def hook(self, name: str) -> None:
        if name in self.hooks:
            self.hooks[name]()

    def asset(self, symbol: str) -> Asset:
        asset = self.bundle.assets.get(symbol)
        if asset is None:
            raise InputError(f"unknown asset (known: {', '.join(sorted(self.bundle.assets))})", symbol)
        return asset

    def replayed(self, key: str, operation: str, fingerprint: str) -> dict[str, Any] | None:
        """The stored result of a request already made under ``key`` (a retry), or None for a new key.
        The same key for another request is refused."""
        stored = self.store.request(key)
        if stored is None:
            return None
        if stored.operation != operation or stored.fingerprint != fingerprint:
            raise InputError(f"this idempotency key was already used on {stored.created_at} for a different "
                             f"{stored.operation} request; use a new key for a new request", key)
        return {**stored.result, "replayed": True}

    def price(self, asset: Asset, account: str | None = None) -> PriceEvidence:
        """The price read now; an unavailable price is an incident (and the error goes on)."""
        try:
            return self.read_price(asset)
        except EvidenceError as e:
            self.price_failed(asset, e, account)
            raise

    def read_price(self, asset: Asset) -> PriceEvidence:
        """The price read now (no ledger row touched: a credit reads it off the decision worker)."""
        if self.prices is None or not getattr(self.prices, "configured", True):
            raise InputError("no price source configured (settings [prices] file or feeds, or --prices FILE)", "prices")
        return self.prices.read(asset)

    def price_failed(self, asset: Asset, e: EvidenceError, account: str | None = None) -> None:
        """An unavailable price is an incident."""
        self.incident("price_unavailable", "critical", f"{asset.symbol}: {e.message}", account=account,
                      asset=asset.symbol, details={"reason": e.reason})

    def incident(self, kind: str, severity: str, message: str, **kw: Any) -> Incident:
        """Record an incident in a transaction of its own (outside any operation's transaction)."""
        inc = Incident(str(uuid.uuid4()), self.now_text(), kind, severity, message, **kw)
        with self.store.transaction():
            self.store.add_incident(inc)
        return inc
