"""Reading and reducing positions: what is credited at an address, what an account holds, and taking
base units off a position (withdrawal, shortfall) with its journal entry (kept for the leaf: ``Movement``)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any, Callable, Iterable, Mapping

from rules.evidence import LEDGER, Held, Holdings
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


def custodian(p: Position) -> str | None:
    """The custodian a position was credited under (its credit's query), None when not known."""
    c = ((p.facts or {}).get("query") or {}).get("custody") or {}
    return c.get("custodian") if isinstance(c, dict) else None


def own(p: Position) -> Held:
    """A position of the deciding account: its whole quantity (the excess included: the engine values the
    account's holding of an asset whole) and its counted value."""
    return Held(p.asset, p.collateral_value_usd, p.quantity, custodian(p))


def counted_share(p: Position) -> Held:
    """A position of another account in a limit's reach: its counted value and the quantity that value
    stands for (the excess a limit excluded takes no room under a quantity cap either)."""
    q = p.quantity
    if p.after_haircut_usd > 0 and p.collateral_value_usd < p.after_haircut_usd:
        q = q * p.collateral_value_usd / p.after_haircut_usd
    elif p.after_haircut_usd <= 0:
        q = Decimal(0)
    return Held(p.asset, p.collateral_value_usd, q, custodian(p))


def summed(lines: Iterable[Held]) -> tuple[Held, ...]:
    """Holdings summed by (asset, custodian): all a limit reads of them (the sums of value and quantity by
    asset, issuer and custodian), and short enough to store with every decision made with them."""
    by: dict[tuple[str, str], list[Decimal]] = {}
    names: dict[tuple[str, str], str | None] = {}
    for h in lines:
        k = (h.asset, h.custodian or "")
        names[k] = h.custodian
        v = by.setdefault(k, [Decimal(0), Decimal(0)])
        v[0] += h.value_usd
        v[1] += h.quantity if h.quantity is not None else Decimal(0)
    return tuple(Held(k[0], v[0], v[1], names[k]) for k, v in sorted(by.items()))


def ledger_holdings(positions: Iterable[Position], account: str, participant: str, mine: Iterable[Held] | None = None,
                    as_of: Any = None, *, customer: str | None = None,
                    customers: Mapping[str, str] | None = None) -> Holdings:
    """What the limits count for a decision about ``account`` (of FCM ``participant``), from the ledger's
    own ``positions`` (every account's): the account's holdings (``mine`` when given: a revaluation's
    already re-decided positions), its customer's, the FCM's and the programme's, each reach holding the
    account's own lines as they are. The customer reach is every position of every account whose customer
    (``customers``: account -> customer, as stored) is ``customer``, whatever its FCM; an account whose
    customer is not named is its own customer (``rules.ledger.customers``): its own lines only, so a limit
    across a customer still binds it rather than counting nothing."""
    positions = list(positions)
    account_lines = summed(mine if mine is not None else (own(p) for p in positions if p.account == account))
    others = [(p, counted_share(p)) for p in positions if p.account != account]
    fcm = summed(h for p, h in others if p.participant == participant)
    everyone = summed(h for _, h in others)
    named = customers or {}
    kin = summed(h for p, h in others if customer is not None and named.get(p.account) == customer)
    return Holdings(LEDGER, account_lines, account_lines + kin, account_lines + fcm, account_lines + everyone,
                    customer, as_of)


def reduce(mv: Movement, p: Position, cut: int, kind: str, at: str, *, evidence: Any = None,
           reason: str | None = None, key: str | None = None) -> dict[str, Any]:
    """Take ``cut`` base units off a position; its values shrink in proportion (rounded down). A withdrawal
    takes the excess (the part limits excluded, at zero value) first: the counted value stays as it was
    unless what is left is worth less after haircut. A shortfall (coins gone from custody) shrinks the
    counted value in proportion too (conservative)."""
    left = p.quantity_raw - cut
    scale: Callable[[Decimal], Decimal] = ((lambda v: cents(v * left / p.quantity_raw)) if p.quantity_raw
                                           else (lambda v: Decimal(0)))
    after = scale(p.after_haircut_usd)
    counted = min(p.collateral_value_usd, after) if kind == "withdraw" else scale(p.collateral_value_usd)
    new = p.but(quantity_raw=left, market_value_usd=scale(p.market_value_usd),
                after_haircut_usd=after, collateral_value_usd=counted, updated_at=at)
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


def hold_to(mv: Movement, positions: list[Position], target: Decimal, at: str, key: str, decision_id: str
            ) -> list[dict[str, Any]]:
    """Lower the counted value of ``positions`` (an account's holding of one asset before a deposit) to
    ``target`` in all, newest first, quantities unchanged: a deposit that makes the whole holding count less
    than it did (a concentration add-on on the whole holding) takes the difference off the holding, so the
    account counts what the whole counts, however it was split. Each cut is a ``holding`` journal line."""
    excess = sum((p.collateral_value_usd for p in positions), Decimal(0)) - target
    out: list[dict[str, Any]] = []
    for p in sorted(positions, key=lambda p: (p.created_at, p.address), reverse=True):
        if excess <= 0:
            break
        cut = min(excess, p.collateral_value_usd)
        if cut <= 0:
            continue
        excess -= cut
        mv.put_position(p.but(collateral_value_usd=p.collateral_value_usd - cut, updated_at=at))
        mv.add_entry(JournalEntry(str(uuid.uuid4()), at, "holding", p.account, p.participant, p.asset, p.address, 0,
                                  p.decimals, Decimal(0), Decimal(0), -cut, p.price_usd, p.decision_id, key,
                                  f"the whole holding counts less with deposit {key} (decision {decision_id})"))
        out.append({"address": p.address, "collateral_value_usd": decimal_text(-cut)})
    return out
