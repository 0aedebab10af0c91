"""The ledger's own soundness check (``dacp ledger check``): no address carries more credit than its
verified balance, nothing is credited without one, no quantity is negative, and every position equals
the sum of its journal entries."""

from __future__ import annotations

from decimal import Decimal

from rules.ledger.store import LedgerStore


def problems(store: LedgerStore) -> list[str]:
    """Problems with the ledger: the custody invariant, positions against the journal. Empty = sound."""
    found = []
    allocated: dict[tuple[str, str], int] = {}
    for p in store.positions(include_empty=True):
        if p.quantity_raw < 0:
            found.append(f"{p.account}/{p.asset}/{p.address}: negative quantity")
        allocated[(p.asset, p.address)] = allocated.get((p.asset, p.address), 0) + p.quantity_raw
    for c in store.custody_states():
        held = allocated.pop((c.asset, c.address), 0)
        if held > c.balance_raw:
            found.append(f"{c.asset} at {c.address}: {held} base units credited, verified balance "
                         f"{c.balance_raw} (block {c.block_number})")
    for (a, addr), held in allocated.items():
        if held:
            found.append(f"{a} at {addr}: credited without a verified balance")
    sums: dict[tuple[str, str, str], tuple[int, Decimal]] = {}
    for e in store.entries():
        q, v = sums.get((e.account, e.asset, e.address), (0, Decimal(0)))
        sums[(e.account, e.asset, e.address)] = (q + e.quantity_raw, v + e.collateral_value_usd)
    for p in store.positions(include_empty=True):
        q, v = sums.get((p.account, p.asset, p.address), (0, Decimal(0)))
        if q != p.quantity_raw or v != p.collateral_value_usd:
            found.append(f"{p.account}/{p.asset}/{p.address}: position {p.quantity_raw} / {p.collateral_value_usd} "
                         f"differs from its journal {q} / {v}")
    return found
