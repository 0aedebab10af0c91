"""Concentration and value limits: how much of a value after haircut may count as collateral, and what
that leaves - the counted quantity, the value the limits exclude, the collateral value.

Each limit in force caps the new value so that its group (the asset, or every asset the limit names)
stays within a value and a share of the account's whole collateral; the counted value is the least
any limit allows. ``limit_plan`` works out per plan (one asset on one day) which limits are in force,
their members and thresholds; ``apply_limits`` runs them for each decision.
"""

from __future__ import annotations

from datetime import date
from decimal import ROUND_DOWN, Decimal
from typing import NamedTuple

from rules.engine.money import ONE, ZERO, cents, share_text
from rules.engine.trace import Statics, plain
from rules.policy.model import Asset, Bundle, Limit


class LimitStep(NamedTuple):
    """A limit in force for a plan's asset (kept as an exact tuple: see ``rules.engine.fast.plans``)."""

    limit: Limit
    members: tuple[str, ...]  # the assets whose holdings count towards it
    ref: int | str  # its trace reference
    max_value: Decimal | None
    share: Decimal | None  # its max share, when below 1
    rest: Decimal | None  # 1 - share
    min_total: Decimal  # below this total the share limit does not bite


def limit_plan(bundle: Bundle, asset: Asset, day: date, st: Statics) -> tuple[tuple, ...]:
    """Every limit of the bundle in order: a ``LimitStep`` when in force for ``asset`` on ``day``, else
    ``(None, its trace entry)`` (not applicable)."""
    steps: list[tuple] = []
    for lim in bundle.limits:
        if not (lim.applies.matches(asset) and lim.dated.in_force(day)):
            steps.append((None, st.item(lim.id, "not_applicable", None, None)))
            continue
        members = (asset.symbol,) if lim.scope == "asset" else tuple(
            s for s, a in bundle.assets.items() if lim.applies.matches(a))
        share = lim.max_share if lim.max_share is not None and lim.max_share < 1 else None
        steps.append(tuple(LimitStep(lim, members, st.ref[lim.id], lim.max_value_usd, share,
                                     ONE - share if share is not None else None, lim.min_total_usd or ZERO)))
    return tuple(steps)


def apply_limits(steps: tuple[tuple, ...], trace: list, value: Decimal, by_asset: dict[str, Decimal],
                 total_before: Decimal, quantity: Decimal, quantum: Decimal, eligible: bool) -> tuple[str, str, str]:
    """Apply every limit in force to ``value`` (after haircut), tracing each; returns the counted
    quantity (rounded down to ``quantum``), the value excluded and the collateral value (to the cent,
    down) as text. An ineligible decision counts nothing (its exclusion is still shown)."""
    counted = value
    requested = None
    everything = total_before + value
    for step in steps:
        if step[0] is None:
            trace.append(step[1])  # not in force
            continue
        _, members, ref, max_value, share, rest, min_total = step
        if requested is None:
            requested = cents(value)
        group = ZERO
        for symbol in members:
            if symbol in by_asset:
                group += by_asset[symbol]
        # the largest new value x <= value that keeps the group within the limit
        allowed = value
        if max_value is not None:
            room = max_value - group
            if room < allowed:
                allowed = room if room > ZERO else ZERO
        if share is not None and everything > min_total:
            # (group + x) / (total + x) <= s  <=>  x <= cap = (s*total - group) / (1 - s), and below the
            # threshold the share limit does not bite: x may reach min_total - total whatever the share.
            # The division only when the cap binds (rest > 0: cap < allowed <=> s*total - group < allowed*rest).
            excess = share * total_before - group
            floor = min_total - total_before
            if allowed > ZERO and allowed > floor and excess < allowed * rest:
                cap = excess / rest
                if cap < ZERO:
                    cap = ZERO
                if floor > cap:
                    cap = floor
                allowed = cap
        if allowed < ZERO:
            allowed = ZERO
        binding = allowed < counted
        if binding:
            counted = allowed
        observed = [cents(group), share_text(group + value, everything), requested]  # rules.engine.trace: LIMIT_OBSERVED
        trace.append((ref, "a", observed, cents(allowed)) if binding else (ref, "p", observed))
    if counted <= ZERO:
        counted = ZERO
    excluded = cents(value - counted)
    if not eligible:
        return "0", excluded, "0"
    counted_quantity = quantity * counted / value if value else ZERO
    return plain(counted_quantity.quantize(quantum, ROUND_DOWN)), excluded, cents(counted)
