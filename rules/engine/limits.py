"""Concentration limits and caps: how much of a deposit counts as collateral, on the account's whole holding.

The rule (README "Limits"): the account's holding of the deposit's asset is valued whole - what it held
(``rules.evidence.Holdings``, revalued at this decision's price and haircut) plus this deposit - and each
limit in force caps that whole holding, given what else its reach holds (the account, the customer's
accounts, the FCM's, the programme's; only the issuer's or the custodian's with ``per``). The deposit's
counted value is the holding's counted value with it minus without it, so an account's counted value
does not depend on how its holdings were split into deposits or in what order they came.

``limit_plan`` works out per plan (one asset on one day) which limits are in force, their members and
thresholds; ``Whole`` describes the holding with and without the deposit; ``apply_limits`` runs them.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import NamedTuple

from rules.engine.money import ONE, ZERO, cents, share_text
from rules.engine.trace import Statics
from rules.evidence import Held, Holdings
from rules.policy.model import Asset, Bundle, Limit


class LimitStep(NamedTuple):
    """A limit in force for a plan's asset (kept as an exact tuple: see ``rules.engine.fast.plans``)."""

    limit: Limit
    members: frozenset[str]  # the assets whose holdings count towards it
    ref: int | str  # its trace reference
    max_value: Decimal | None
    share: Decimal | None  # its max share, when below 1
    rest: Decimal | None  # 1 - share
    min_total: Decimal  # below this total the share limit does not bite
    max_quantity: Decimal | None
    across: str
    per: str | None
    issuers: dict[str, str | None]  # every registered asset's issuer (for per: issuer)


class Whole(NamedTuple):
    """The account's whole holding of the deposit's asset: its value after haircut without and with
    the deposit, and its quantity without and with (None where a holding gave no quantity)."""

    without: Decimal
    with_: Decimal
    qty_without: Decimal
    qty_with: Decimal


def limit_plan(bundle: Bundle, asset: Asset, day: date, st: Statics) -> tuple[tuple, ...]:
    """Every limit of the bundle in order: a ``LimitStep`` when in force for ``asset`` on ``day``, else
    ``(None, its trace entry)`` (not applicable)."""
    steps: list[tuple] = []
    issuers = {s: a.issuer for s, a in bundle.assets.items()}
    for lim in bundle.limits:
        if not (lim.applies.matches(asset) and lim.dated.in_force(day)):
            steps.append((None, st.item(lim.id, "not_applicable", None, None)))
            continue
        members = frozenset((asset.symbol,) if lim.scope == "asset" else (
            s for s, a in bundle.assets.items() if lim.applies.matches(a)))
        share = lim.max_share if lim.max_share is not None and lim.max_share < 1 else None
        steps.append(tuple(LimitStep(lim, members, st.ref[lim.id], lim.max_value_usd, share,
                                     ONE - share if share is not None else None, lim.min_total_usd or ZERO,
                                     lim.max_quantity, lim.across, lim.per, issuers)))
    return tuple(steps)


def _kept(h: Held, step: LimitStep, symbol: str, custodian: str | None) -> bool:
    """Whether a holding counts towards a limit ``per`` issuer or custodian. An asset without issuer is
    its own; a holding whose custodian is not known counts (fail closed), and so does every holding
    when the deposit's custodian is not known."""
    if step[9] == "issuer":
        issuers = step[10]
        mine = issuers.get(symbol)
        return h.asset == symbol if mine is None else issuers.get(h.asset) == mine
    if step[9] == "custodian":
        return custodian is None or h.custodian is None or h.custodian == custodian
    return True


def cap_of(step: LimitStep, symbol: str, custodian: str | None, holdings: Holdings, unit_value: Decimal
           ) -> tuple[Decimal | None, Decimal | None, Decimal | None, Decimal]:
    """(the most the account's whole holding of ``symbol`` may count under this limit - None for no cap -,
    the rest of the group's value, the reach's quantity of the asset besides the account's, the rest of
    the reach's total). None for the group when the reach's holdings are not known: the limit then
    allows nothing (fail closed)."""
    lines = holdings.reach(step[8])
    if lines is None:
        return ZERO, None, None, ZERO
    members = step[1]
    group = total = qty = ZERO
    for h in lines:
        total += h.value_usd
        if h.asset in members and _kept(h, step, symbol, custodian):
            group += h.value_usd
            if h.asset == symbol:
                qty += _quantity(h, unit_value)
    for h in holdings.account:  # the account's own holding of the asset is valued whole, not as recorded
        if h.asset == symbol:
            total -= h.value_usd
            if _kept(h, step, symbol, custodian):
                group -= h.value_usd
                qty -= _quantity(h, unit_value)
    cap = None
    max_value = step[3]
    if max_value is not None:
        cap = max_value - group
    share = step[4]
    if share is not None:
        # (group + y) / (total + y) <= s  <=>  y <= (s*total - group) / (1 - s); below the threshold the
        # share limit does not bite: y may reach min_total - total whatever the share.
        y = max(step[6] - total, (share * total - group) / step[5])
        cap = y if cap is None or y < cap else cap
    return cap, group, qty, total


def _quantity(h: Held, unit_value: Decimal) -> Decimal:
    """A holding's quantity; one given by value only counts as the quantity that value is worth at this
    decision's value a unit (none when a unit is worth nothing: then nothing of the asset counts anyway)."""
    if h.quantity is not None:
        return h.quantity
    return h.value_usd / unit_value if unit_value > ZERO else ZERO


def counted(value: Decimal, qty: Decimal, cap: Decimal | None, qty_room: Decimal | None) -> Decimal:
    """What of a whole holding worth ``value`` (``qty`` units) counts under one limit."""
    c = value
    if cap is not None and cap < c:
        c = cap
    if qty_room is not None and qty > qty_room:
        by_qty = value * qty_room / qty if qty_room > ZERO else ZERO
        if by_qty < c:
            c = by_qty
    return c if c > ZERO else ZERO


def apply_limits(steps: tuple[tuple, ...], trace: list, whole: Whole, requested: Decimal, symbol: str,
                 custodian: str | None, holdings: Holdings, unit_value: Decimal) -> tuple[Decimal, Decimal]:
    """Apply every limit in force to the whole holding with and without the deposit, tracing each
    (used before, this deposit, room left); returns the holding's counted value (exact) without and
    with the deposit. ``requested`` is the deposit's value after haircut; ``unit_value`` a unit's."""
    without, with_ = whole.without, whole.with_
    c_without, c_with = without if without > ZERO else ZERO, with_ if with_ > ZERO else ZERO
    so_far = requested
    shown = cents(requested)
    for step in steps:
        if step[0] is None:
            trace.append(step[1])  # not in force
            continue
        cap, group, others_qty, total = cap_of(step, symbol, custodian, holdings, unit_value)
        qty_room = None if step[7] is None or others_qty is None else step[7] - others_qty
        a_without = counted(without, whole.qty_without, cap, qty_room)
        a_with = counted(with_, whole.qty_with, cap, qty_room)
        if a_without < c_without:
            c_without = a_without
        if a_with < c_with:
            c_with = a_with
        allowed = a_with - a_without
        if allowed < ZERO:
            allowed = ZERO
        if group is None:
            observed = [None, None, shown, "0.00"]
        else:
            room = None if cap is None else cap - with_
            if qty_room is not None and whole.qty_with > ZERO:
                by_qty = (qty_room - whole.qty_with) * with_ / whole.qty_with
                room = by_qty if room is None or by_qty < room else room
            observed = [cents(group + without), share_text(group + with_, total + with_), shown,
                        None if room is None else cents(room if room > ZERO else ZERO)]
        binding = allowed < so_far
        if binding:
            so_far = allowed
        trace.append((step[2], "a", observed, cents(allowed)) if binding else (step[2], "p", observed))
    return c_without, c_with
