"""Withdrawals: the quantity comes off the account's newest credits first (or off one address); the
values shrink in proportion (rounded down) and the coins become free for other credits. The journal
lines go into a ``withdrawal`` leaf in the same transaction (``rules.ledger.journal``).

Concentration is not re-checked on withdrawal (``dacp revalue`` does it). A withdrawal that would leave the
account under-margined is refused by the context's ``withdrawal_guard`` (``rules.margin``), nothing written.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from rules.errors import InputError
from rules.ledger import journal
from rules.ledger.amounts import plain, to_raw
from rules.ledger.context import LedgerContext
from rules.ledger.journal import Movement
from rules.ledger.positions import reduce
from rules.ledger.records import StoredRequest
from rules.ledger.requests import WithdrawRequest, check_key
from rules.values import decimal_text, units_text

ATTEMPTS = 5  # a credit at a new address between reading the addresses and locking them: lock again


def withdraw(ctx: LedgerContext, req: WithdrawRequest) -> dict[str, Any]:
    """Debit ``req``; the result as stored under its key, with ``replayed``."""
    check_key(req.idempotency_key)
    asset = ctx.asset(req.asset)
    if req.quantity <= 0:
        raise InputError("must be greater than zero", "quantity")
    cut_total = to_raw(req.quantity, asset.decimals, "quantity")
    fp = req.fingerprint()
    done = ctx.replayed(req.idempotency_key, "withdraw", fp)
    if done is not None:
        return done
    for _ in range(ATTEMPTS):
        addrs = {p.address for p in ctx.store.positions(account=req.account, asset=asset.symbol)}
        locks = [f"key:{req.idempotency_key}", f"account:{req.account}"]
        locks += [f"custody:{asset.symbol}:{a}" for a in addrs]
        with ctx.store.transaction(locks):
            done = ctx.replayed(req.idempotency_key, "withdraw", fp)
            if done is not None:
                return done
            positions = ctx.store.positions(account=req.account, asset=asset.symbol, address=req.address)
            if {p.address for p in positions} - addrs:
                continue  # a credit at a new address came in between: take its lock too
            held = sum(p.quantity_raw for p in positions)
            if cut_total > held:
                where = f" at {req.address}" if req.address else ""
                raise InputError(f"account {req.account} holds {units_text(held, asset.decimals)} "
                                 f"{asset.symbol}{where}; cannot withdraw {plain(req.quantity)}", "quantity")
            at = ctx.now_text()
            mv = Movement(ctx.store)
            left, parts = cut_total, []
            for p in sorted(positions, key=lambda p: (p.updated_at, p.created_at), reverse=True):
                if left <= 0:
                    break
                cut = min(left, p.quantity_raw)
                left -= cut
                parts.append(reduce(mv, p, cut, "withdraw", at, key=req.idempotency_key, reason="withdrawal"))
            value = sum((Decimal(p["collateral_value_usd"]) for p in parts), Decimal(0))
            if ctx.withdrawal_guard is not None:
                ctx.withdrawal_guard(req.account)  # raises to refuse: nothing of this transaction stays
            result = {"operation": "withdraw", "status": "withdrawn", "idempotency_key": req.idempotency_key,
                      "account": req.account, "asset": asset.symbol, "quantity": plain(req.quantity),
                      "collateral_value_usd": decimal_text(value), "reductions": parts, "recorded_at": at}
            ctx.store.add_request(StoredRequest(req.idempotency_key, "withdraw", fp, "withdrawn", result, at))
            ctx.log.append([journal.record("withdrawal", journal.block(
                "withdrawal", at, mv, idempotency_key=req.idempotency_key, account=req.account, asset=asset.symbol,
                decimals=asset.decimals, quantity_raw=str(cut_total), address=req.address,
                collateral_value_usd=decimal_text(value)))])
            return {**result, "replayed": False}
    raise InputError("the account's holdings kept changing; try again", "withdraw")  # pragma: no cover
