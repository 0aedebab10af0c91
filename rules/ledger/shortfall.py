"""The chain against the credits: store each verified balance (the newest block wins) and, when the
chain shows less than is credited at an address, reduce the newest credits there until it fits.

Each reduction is a ``shortfall`` journal entry carrying the evidence, with a critical incident. Runs
inside the caller's transaction, which holds the ``custody:<asset>:<address>`` lock; the balances stored
and the reductions go through the caller's ``Movement``, whose leaf records them (a ``reverification``).
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from rules.errors import EvidenceError
from rules.evidence import CustodyEvidence
from rules.ledger.amounts import plain
from rules.ledger.context import LedgerContext
from rules.ledger.journal import Movement
from rules.ledger.positions import reduce
from rules.ledger.records import CustodyState, Incident
from rules.policy.model import Asset
from rules.values import units_text


def per_address_balances(ev: CustodyEvidence) -> dict[str, int]:
    """Verified balance per custody address (base units) from the adapters' evidence details."""
    raw = ev.details.get("balances") or ev.details.get("per_address_sat")
    if raw:
        out = {a: 0 for a in ev.addresses}
        for a, v in dict(raw).items():
            out[a] = int(v)
    elif len(ev.addresses) == 1:
        out = {ev.addresses[0]: ev.raw_balance}
    else:
        raise EvidenceError("no_per_address_balances", "the custody evidence does not give a balance per address")
    if sum(out.values()) != ev.raw_balance:
        raise EvidenceError("bad_response", "per-address balances do not add up to the verified balance")
    return out


def record_balance(ctx: LedgerContext, mv: Movement, asset: Asset, address: str, balance: int,
                   ev: CustodyEvidence, at: str) -> int:
    """Store a verified balance unless a newer block is already stored; reduce credits the chain no
    longer covers. Returns the balance of the newest block."""
    store = ctx.store
    stored = store.custody(asset.symbol, address)
    if stored is None or _supersedes(ctx, asset, stored, ev):
        mv.put_custody(CustodyState(asset.symbol, address, ev.chain, balance, asset.decimals,
                                    ev.block_number, ev.block_hash, at))
        newest = balance
    else:
        newest = stored.balance_raw
    reduce_shortfall(ctx, mv, asset, address, newest, ev, at)
    return newest


def _supersedes(ctx: LedgerContext, asset: Asset, stored: CustodyState, ev: CustodyEvidence) -> bool:
    """Whether the reading ``ev`` replaces the stored balance, by (height, hash), never height alone.

    A higher block, or the same height (the same block, or another fork's block just read from the chain)
    replaces it. A lower block (a node that lags, or a reorg to a shorter chain) replaces it only if the
    stored block is no longer on the chain: asked of the node (``verifier.on_chain``), an unreachable node
    raising ``EvidenceError`` rather than keeping a balance that may have been reorganised away."""
    if ev.block_number >= stored.block_number:
        return True
    on_chain = getattr(ctx.verifier, "on_chain", None)
    if on_chain is None:
        raise EvidenceError("reorg", f"block {stored.block_number} of the stored balance at {stored.address} is above "
                            f"the block read ({ev.block_number}) and the verifier cannot tell whether it is still on "
                            "the chain")
    return not on_chain(asset, stored.block_number, stored.block_hash)


def reduce_shortfall(ctx: LedgerContext, mv: Movement, asset: Asset, address: str, balance: int,
                     ev: CustodyEvidence, at: str) -> list[dict[str, Any]]:
    """Reduce the positions at ``address``, newest first, until they fit ``balance``; the reductions."""
    store = ctx.store
    positions = store.positions(asset=asset.symbol, address=address)
    excess = sum(p.quantity_raw for p in positions) - balance
    if excess <= 0:
        return []
    reductions = []
    for p in sorted(positions, key=lambda p: (p.created_at, p.account), reverse=True):  # newest position first
        if excess <= 0:
            break
        cut = min(excess, p.quantity_raw)
        excess -= cut
        reductions.append(reduce(mv, p, cut, "shortfall", at, evidence=ev.to_json(),
                                 reason=f"on-chain balance at {address} is "
                                        f"{units_text(balance, asset.decimals)} {asset.symbol} "
                                        f"(block {ev.block_number})"))
    total = sum(Decimal(r["quantity"]) for r in reductions)
    msg = (f"shortfall at {address}: the chain shows {units_text(balance, asset.decimals)} {asset.symbol} "
           f"at block {ev.block_number}; credits reduced by {plain(total)} {asset.symbol}")
    store.add_incident(Incident(str(uuid.uuid4()), at, "shortfall", "critical", msg, None, asset.symbol,
                                address, {"block_number": ev.block_number, "block_hash": ev.block_hash,
                                          "balance_raw": str(balance), "reductions": reductions}))
    return reductions
