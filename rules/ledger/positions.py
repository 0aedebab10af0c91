"""Reading and reducing positions: what is credited at an address, what an account holds, and taking
base units off a position (withdrawal, shortfall) with its journal entry (kept for the leaf: ``Movement``)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any, Callable

from rules.ledger.amounts import cents
from rules.ledger.journal import Movement
from rules.ledger.records import JournalEntry, Position
from rules.ledger.store import LedgerStore
from rules.values import decimal_text, units_text


def allocated(store: LedgerStore, asset: str, address: str) -> int:
    """Base units of ``asset`` every account together has credited at ``address``."""
    return sum(p.quantity_raw for p in store.positions(asset=asset, address=address))


def portfolio(store: LedgerStore, account: str) -> dict[str, Decimal]:
    """The account's collateral value by asset (the ``portfolio`` its next decision is made with)."""
    out: dict[str, Decimal] = {}
    for p in store.positions(account=account):
        out[p.asset] = out.get(p.asset, Decimal(0)) + p.collateral_value_usd
    return out


def reduce(mv: Movement, p: Position, cut: int, kind: str, at: str, *, evidence: Any = None,
           reason: str | None = None, key: str | None = None) -> dict[str, Any]:
    """Take ``cut`` base units off a position; its values shrink in proportion (rounded down)."""
    left = p.quantity_raw - cut
    scale: Callable[[Decimal], Decimal] = ((lambda v: cents(v * left / p.quantity_raw)) if p.quantity_raw
                                           else (lambda v: Decimal(0)))
    new = p.but(quantity_raw=left, market_value_usd=scale(p.market_value_usd),
                after_haircut_usd=scale(p.after_haircut_usd), collateral_value_usd=scale(p.collateral_value_usd),
                updated_at=at)
    mv.put_position(new)
    entry = JournalEntry(str(uuid.uuid4()), at, kind, p.account, p.participant, p.asset, p.address, -cut, p.decimals,
                         new.market_value_usd - p.market_value_usd, new.after_haircut_usd - p.after_haircut_usd,
                         new.collateral_value_usd - p.collateral_value_usd, p.price_usd, p.decision_id, key, reason,
                         evidence)
    mv.add_entry(entry)
    return {"account": p.account, "asset": p.asset, "address": p.address,
            "quantity": units_text(cut, p.decimals),
            "collateral_value_usd": decimal_text(p.collateral_value_usd - new.collateral_value_usd),
            "entry_id": entry.entry_id}
