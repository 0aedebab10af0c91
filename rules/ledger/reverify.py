"""Re-verification: read every credited custody address on-chain again; a lower balance reduces the
credits there, newest first (``rules.ledger.shortfall``). A node that cannot be read is an incident.

Each asset is one transaction; what it stored (the balances, at the newer block) and reduced (the
``shortfall`` lines) is one ``reverification`` leaf (``rules.ledger.journal``)."""

from __future__ import annotations

from typing import Any

from rules.errors import EvidenceError, InputError
from rules.ledger import journal
from rules.ledger.context import LedgerContext, failure_kind
from rules.ledger.journal import Movement
from rules.ledger.positions import allocated
from rules.ledger.shortfall import per_address_balances, record_balance
from rules.values import units_text


def reverify(ctx: LedgerContext, asset: str | None = None) -> dict[str, Any]:
    """Verify every custody address that carries credit again; reduce credits the chain no longer covers."""
    if ctx.verifier is None:
        raise InputError("re-verification needs a verifier (configured nodes)", "verify")
    by_asset: dict[str, set[str]] = {}
    for p in ctx.store.positions(asset=asset):
        by_asset.setdefault(p.asset, set()).add(p.address)
    report: dict[str, Any] = {"verified": [], "failures": [], "reductions": []}
    for symbol, addrs in sorted(by_asset.items()):
        a = ctx.asset(symbol)
        try:
            ev = ctx.verifier.verify(a, sorted(addrs))
            balances = per_address_balances(ev)
        except EvidenceError as e:
            _failed(ctx, report, symbol, addrs, e)
            continue
        at = ctx.now_text()
        try:  # a stored block above the one read is asked of the node (a reorg to a shorter chain?)
            with ctx.store.transaction([f"custody:{symbol}:{x}" for x in balances]):
                mv = Movement(ctx.store)
                verified: list[dict[str, Any]] = []
                reductions: list[dict[str, Any]] = []
                before = {x: allocated(ctx.store, symbol, x) for x in balances}
                for x, bal in balances.items():
                    newest = record_balance(ctx, mv, a, x, bal, ev, at)
                    verified.append({"asset": symbol, "address": x, "balance": units_text(newest, a.decimals),
                                     "credited_before": units_text(before[x], a.decimals),
                                     "block_number": ev.block_number})
                    if newest < before[x]:
                        reductions.append({"asset": symbol, "address": x,
                                           "shortfall": units_text(before[x] - newest, a.decimals)})
                if mv:  # nothing stored (an older block, still on the chain) and nothing reduced: nothing to record
                    ctx.log.append([journal.record("reverification", journal.block(
                        "reverification", at, mv, asset=symbol, trigger={"operation": "reverify"},
                        block_number=ev.block_number, block_hash=ev.block_hash))])
            report["verified"] += verified
            report["reductions"] += reductions
        except EvidenceError as e:  # nothing of this asset was written (its transaction rolled back)
            _failed(ctx, report, symbol, addrs, e)
    return report


def _failed(ctx: LedgerContext, report: dict[str, Any], symbol: str, addrs: set[str], e: EvidenceError) -> None:
    """A re-verification that could not be made: an incident, and a line of the report."""
    ctx.incident(failure_kind(e.reason), "warning", f"re-verification of {symbol} failed: {e.message}",
                 asset=symbol, address=",".join(sorted(addrs)), details={"reason": e.reason})
    report["failures"].append({"asset": symbol, "reason": e.reason, "message": e.message})
