"""What may be released: per asset, the largest quantity a withdrawal could take off the account without
lowering its counted value by more than the excess.

A withdrawal takes its quantity off the account's newest positions first and shrinks each one's values in
proportion, rounded down (``rules.ledger.withdraw``, ``rules.ledger.positions.reduce``); ``removed`` repeats
that arithmetic exactly, so the quantity found here is one the withdrawal check accepts (searched by
bisection over base units).
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any, Sequence

from rules.ledger.amounts import cents
from rules.ledger.records import Position
from rules.margin.valuation import usd
from rules.values import units_text

ZERO = Decimal(0)


def removed(positions: Sequence[Position], cut: int) -> Decimal:
    """The counted value a withdrawal of ``cut`` base units takes off these positions (one asset)."""
    left, out = cut, ZERO
    for p in sorted(positions, key=lambda p: (p.updated_at, p.created_at), reverse=True):
        if left <= 0:
            break
        take = min(left, p.quantity_raw)
        left -= take
        rest = p.quantity_raw - take
        out += p.collateral_value_usd - (cents(p.collateral_value_usd * rest / p.quantity_raw) if p.quantity_raw else ZERO)
    return out


def free_raw(positions: Sequence[Position], limit: Decimal | None) -> int:
    """The most base units whose withdrawal removes at most ``limit`` (None: no requirement, all of it)."""
    held = sum(p.quantity_raw for p in positions)
    if limit is None or removed(positions, held) <= limit:
        return held
    lo, hi = 0, held  # removed(lo) <= limit < removed(hi); removed grows with the cut
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if removed(positions, mid) <= limit:
            lo = mid
        else:
            hi = mid
    return lo


def free_quantities(positions: Sequence[Position], limit: Decimal | None) -> list[dict[str, Any]]:
    """Per asset held: the quantity held, its counted value, and what may be withdrawn of it alone."""
    by_asset: dict[str, list[Position]] = defaultdict(list)
    for p in positions:
        by_asset[p.asset].append(p)
    out = []
    for asset, ps in sorted(by_asset.items()):
        raw = free_raw(ps, limit)
        decimals = ps[0].decimals
        out.append({"asset": asset, "quantity": units_text(sum(p.quantity_raw for p in ps), decimals),
                    "collateral_value_usd": usd(sum((p.collateral_value_usd for p in ps), ZERO)),
                    "free_quantity": units_text(raw, decimals),
                    "free_value_usd": usd(removed(ps, raw))})
    return out
