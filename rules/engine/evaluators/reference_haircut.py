"""The reference decider's money: the haircut (README "Haircuts") and the concentration limits (README
"Limits"), worked out straight from the policy model, with their trace entries.

Money is exact: ``Fraction`` for values (sums, products and the share-limit division have no rounding
at all), rounded down to the cent only where a value is written. Haircut figures stay ``Decimal`` (their
text is part of the decision: 0.2 + 0.05 is written "0.25"), added in a context that raises on any
rounding, so an inexact haircut cannot pass unnoticed.
"""

from __future__ import annotations

from datetime import date
from decimal import Context, Decimal, Inexact, InvalidOperation, Rounded
from fractions import Fraction
from math import floor
from typing import Any, Callable, Mapping

from rules.policy.model import AddOn, AppliesTo, Asset, Bundle, Check, Dated, HaircutSchedule, Limit, Src

EXACT = Context(prec=400, traps=[Inexact, Rounded, InvalidOperation])


# -- small pieces every part of the reference uses ---------------------------------------------------
def matches(applies: AppliesTo, asset: Asset) -> bool:
    """README: "applies_to: {assets, classes, chains}" - an asset matching any listed symbol, class or
    chain; no applies_to at all means every asset (schema 'appliesTo')."""
    if not (applies.assets or applies.classes or applies.chains):
        return True
    return asset.symbol in applies.assets or asset.klass in applies.classes or asset.chain in applies.chains


def in_force(dated: Dated, day: date) -> bool:
    """README: "effective_from, effective_to, exclusive": from the first day, up to but not including
    the second; either may be left out."""
    return (dated.effective_from is None or dated.effective_from <= day) and (
        dated.effective_to is None or day < dated.effective_to)


def text(d: Decimal) -> str:
    """A decimal as plain positional text, exactly as it is (no exponent)."""
    return format(d, "f")


def cents(x: Fraction) -> str:
    """Money rounded DOWN to the cent (README: "collateral value after limits (rounded down to the
    cent)"; every money field of the decision is written so)."""
    n = floor(x * 100)
    sign, n = ("-", -n) if n < 0 else ("", n)
    return f"{sign}{n // 100}.{n % 100:02d}"


def share_text(part: Fraction, whole: Fraction) -> str:
    """part / whole rounded down to the basis point, written with 4 places ("0.4137"); 0 of nothing is
    "0.0000"."""
    n = floor(part / whole * 10000) if whole else 0
    return f"{n // 10000}.{n % 10000:04d}"


def threshold_of(check: Check) -> dict[str, Any]:
    """A check's threshold as the trace writes it: its operator and value (a list for one_of)."""
    return {"op": check.op, "value": list(check.value) if isinstance(check.value, tuple) else check.value}


def entry(rule: str, outcome: str, description: str, observed: Any, threshold: Any, src: Src | None,
          **extra: Any) -> dict[str, Any]:
    """One trace entry (README "Queries and decisions": rule, outcome, observed, threshold, policy
    file:line; the rule's one-line description too)."""
    out = {"rule": rule, "outcome": outcome, "description": description, "observed": observed,
           "threshold": threshold, "policy": src.to_json() if src else None}
    out.update(extra)
    return out


# -- the haircut -------------------------------------------------------------------------------------
def schedule_for(bundle: Bundle, asset: Asset, day: date) -> HaircutSchedule | None:
    """The schedule for the asset on the day: the one whose applies_to matches it and which is in
    force (the loader refuses two in force on one day)."""
    mine = [h for h in bundle.haircuts if matches(h.applies, asset) and in_force(h.dated, day)]
    return mine[0] if mine else None


def _pct(d: Decimal) -> str:
    return f"{(d * 100).normalize():f}%"


def _with_floor(sched: HaircutSchedule, base: Decimal, decided_by: str, components: list, why: str
                ) -> tuple[Decimal, str, str]:
    """README: "max(base, stricter_own)". On a tie the overlay did not raise anything: what decided stays.
    When it raises the base it alone is decisive, labelled the FCM's stricter own haircut."""
    if sched.floor is None:
        return base, decided_by, why
    if sched.legacy_floor:  # README before issue 16: "max(base, floor)", the floor labelled as a floor
        decisive = sched.floor > base
        components.append({"rule": sched.id, "kind": "floor", "haircut": text(sched.floor), "decisive": decisive})
        if not decisive:
            return base, decided_by, why
        return sched.floor, f"{sched.id}.floor", f"the floor {_pct(sched.floor)}, above {_pct(base)} ({why})"
    decisive = sched.floor > base
    if decisive:
        for c in components:
            c["decisive"] = False
    components.append({"rule": f"{sched.id}.stricter_own", "kind": "stricter_own", "haircut": text(sched.floor),
                       "decisive": decisive})
    if not decisive:
        return base, decided_by, why
    return (sched.floor, f"{sched.id}.stricter_own",
            f"the FCM's stricter own haircut {_pct(sched.floor)}, above {_pct(base)} ({why})")


def _label(s: Any) -> str:
    if s.kind == "dco":
        return f"{s.dco} schedule of {s.as_of.year:04d}-{s.as_of.month:02d}" if s.as_of else f"{s.dco} schedule"
    return s.source or "the FCM's own risk policy"


def _by_sources(sched: HaircutSchedule, symbol: str) -> tuple[Decimal, str, list, dict, str]:
    """README (Letter 26-05): the highest accepting DCO's haircut when any DCO accepts the asset (of equal
    highest, the first written decides); otherwise the FCM's own (its one own source)."""
    dcos = [s for s in sched.sources if s.kind == "dco"]
    if any(s.kind == "source" for s in sched.sources):  # before issue 16: the highest source, first of equal
        top = sched.sources[0]
        for s in sched.sources:
            if s.haircut > top.haircut:
                top = s
        n = len(sched.sources)
        why = f"{_label(top)}: highest of {n} source" + ("s" if n != 1 else "")
    elif dcos:
        top = dcos[0]
        for s in dcos:
            if s.haircut > top.haircut:
                top = s
        why = f"{_label(top)}: highest of {len(dcos)} accepting DCO" + ("s" if len(dcos) != 1 else "")
    else:
        top = sched.sources[0]
        why = f"{_label(top)}: the FCM's own haircut, no DCO accepts {symbol}"
    components = []
    for s in sched.sources:
        if s.kind == "dco":
            components.append({"rule": s.id, "kind": "dco", "haircut": text(s.haircut), "dco": s.dco,
                               "schedule": s.schedule, "as_of": s.as_of.isoformat() if s.as_of else None,
                               "decisive": s is top})
        else:
            components.append({"rule": s.id, "kind": s.kind, "haircut": text(s.haircut), "source": s.source,
                               "decisive": s is top})
    base, decided_by, why = _with_floor(sched, top.haircut, top.id, components, why)
    return base, decided_by, components, {s.id: text(s.haircut) for s in sched.sources}, why


def _by_buckets(sched: HaircutSchedule, facts: Mapping[str, Any]) -> tuple[Any, ...] | str:
    """README: "buckets by a whole-number fact"; schema: "the first bucket whose 'up_to' is at least the
    fact applies" (the last may leave 'up_to' out: everything above). A missing fact, or a value above
    every bucket, gives no haircut at all: the reason why, as text (fail closed)."""
    fact = sched.bucket_fact
    if fact not in facts:
        return "a bucket needs this fact"
    value = facts[fact]
    found = [i for i, b in enumerate(sched.buckets) if b.up_to is None or value <= b.up_to]
    if not found:
        return "no bucket covers this value"
    i = found[0]
    bucket = sched.buckets[i]
    if bucket.up_to is not None:
        decided_by = f"{sched.id}[{fact}<={bucket.up_to}]"
    else:  # the open last bucket: named by the bound below it (0 when it is the only bucket)
        decided_by = f"{sched.id}[{fact}>{sched.buckets[i - 1].up_to if i else 0}]"
    components = [{"rule": sched.id, "kind": "bucket", "haircut": text(bucket.haircut), "fact": fact,
                   "observed": value, "up_to": bucket.up_to, "decisive": True}]
    bound = f"<= {bucket.up_to}" if bucket.up_to is not None else f"> {sched.buckets[i - 1].up_to if i else 0}"
    why = f"the FCM's own schedule by {fact}: {value} {bound}"
    base, decided_by, why = _with_floor(sched, bucket.haircut, decided_by, components, why)
    return base, decided_by, components, {fact: value}, why


def add_on_applies(a: AddOn, facts: Mapping[str, Any], holds: Callable[[Check], bool], own: Fraction, total: Fraction
                   ) -> tuple[bool, Any]:
    """README: add_ons "applied `when` a check holds or `when_share_above` a share of the account's
    collateral". A check on a missing fact does not hold. The share (schema: "the asset's share of the
    account's collateral value after this deposit") is the asset's holdings plus this deposit after its
    BASE haircut, over the account's total with it: the base is the only haircut that can be used -
    with the add-ons themselves it would be circular - and limits come after haircuts."""
    if a.when is not None:
        return holds(a.when), facts.get(a.when.fact, "missing")
    return own > Fraction(a.when_share_above) * total, share_text(own, total)


def not_applicable_schedule(h: HaircutSchedule) -> list[dict[str, Any]]:
    """A schedule that does not decide this haircut, and its add-ons: not applicable, nothing observed."""
    out = [entry(h.id, "not_applicable", h.description, None, None, h.src)]
    out += [entry(a.id, "not_applicable", a.description, None, None, a.src) for a in h.add_ons]
    return out


def haircut(bundle: Bundle, asset: Asset, day: date, facts: Mapping[str, Any], holds: Callable[[Check], bool],
            market: Fraction, held: "Held", others: Fraction
            ) -> tuple[dict[str, Any] | None, Decimal, Decimal, list[dict[str, Any]], list[str]]:
    """(the decision's haircut or None, its total with the deposit, the total of the account's holding
    without it, trace entries, failed rules). README: "Total = min(1, max(base, floor) + add-ons)"; a
    share add-on is decided on the account's whole holding of the asset (README "Haircuts"), with the
    deposit and, for the holding before it, without.

    Trace order follows the engine: the schedules that do not decide (in file order, each with its
    add-ons), then the deciding one and its add-ons (the README fixes no order; the comparison is
    entry by entry, so the order is part of the contract)."""
    sched = schedule_for(bundle, asset, day)
    trace = [e for h in bundle.haircuts if h is not sched for e in not_applicable_schedule(h)]
    if sched is None:  # the engine's own rule: every asset needs a schedule in force (fail closed)
        trace.append(entry("haircut.schedule", "fail", SCHEDULE_DESCRIPTION, asset.symbol, None, asset.src))
        return None, Decimal(0), Decimal(0), trace, ["haircut.schedule"]
    found = _by_sources(sched, asset.symbol) if sched.sources else _by_buckets(sched, facts)
    if isinstance(found, str):  # no base haircut: the schedule fails; its add-ons are not applicable
        observed = {sched.bucket_fact: facts.get(sched.bucket_fact, "missing")}
        trace.append(entry(sched.id, "fail", sched.description, observed, found, sched.src))
        trace += not_applicable_schedule(sched)[1:]
        return None, Decimal(0), Decimal(0), trace, [sched.id]
    base, decided_by, components, observed, why = found
    trace.append(entry(sched.id, "applied", sched.description, observed, {"base": text(base), "decided_by": decided_by},
                       sched.src))
    kept = 1 - Fraction(base)
    own_before = held.fixed + held.market * kept
    own = own_before + market * kept
    total_haircut = total_before = base
    for a in sched.add_ons:
        hit, seen = add_on_applies(a, facts, holds, own, others + own)
        hit_before = add_on_applies(a, facts, holds, own_before, others + own_before)[0] if (
            a.when is not None or others + own_before) else False
        if hit:
            total_haircut = EXACT.add(total_haircut, a.haircut)
        if hit_before:
            total_before = EXACT.add(total_before, a.haircut)
        components.append({"rule": a.id, "kind": "add_on", "haircut": text(a.haircut), "applied": hit})
        shown = threshold_of(a.when) if a.when is not None else {"op": "share_above", "value": text(a.when_share_above)}
        trace.append(entry(a.id, "applied" if hit else "not_applicable", a.description, seen, shown, a.src))
    total_haircut, total_before = min(total_haircut, Decimal(1)), min(total_before, Decimal(1))
    return ({"total": text(total_haircut), "base": text(base), "decided_by": decided_by, "why": why,
             "schedule": sched.id, "components": components}, total_haircut, total_before, trace, [])


class Held:
    """The account's holding of the deposit's asset before it: value given without a quantity
    (``fixed``), quantity given (``quantity``) and that quantity's market value at this price."""

    def __init__(self, fixed: Fraction, quantity: Fraction, market: Fraction):
        self.fixed, self.quantity, self.market = fixed, quantity, market


SCHEDULE_DESCRIPTION = "A haircut schedule must apply to the asset on the query date."


# -- the limits --------------------------------------------------------------------------------------
def reach_lines(lim: Limit, holdings: Any) -> Any:
    """README "Limits": a limit counts the holdings of its reach (``across``): the account's, or the
    customer's, FCM's, programme's accounts (each including the account's own); a what-if knows only the
    account's, so that is every reach; the ledger's reach not given is unknown (None)."""
    if lim.across == "account":
        return holdings.account
    got = getattr(holdings, lim.across)
    if got is None and holdings.source != "ledger":
        return holdings.account
    return got


def kept_per(lim: Limit, bundle: Bundle, asset: Asset, line: Any, custodian: str | None) -> bool:
    """``per: issuer``: only holdings of assets of the deposit's issuer (an asset without issuer is its
    own); ``per: custodian``: only holdings at the deposit's custodian - a custodian not known, on
    either side, counts (fail closed)."""
    if lim.per == "issuer":
        mine = asset.issuer
        other = bundle.assets[line.asset].issuer if line.asset in bundle.assets else None
        return line.asset == asset.symbol if mine is None else other == mine
    if lim.per == "custodian":
        return custodian is None or line.custodian is None or line.custodian == custodian
    return True


def members_of(bundle: Bundle, lim: Limit, asset: Asset) -> set[str]:
    """Scope asset: the asset; scope class: every registered asset the limit applies to."""
    return {asset.symbol} if lim.scope == "asset" else {s for s, a in bundle.assets.items() if matches(lim.applies, a)}


def limit_cap(bundle: Bundle, lim: Limit, asset: Asset, holdings: Any, custodian: str | None, unit: Fraction
              ) -> tuple[Any, Any, Any, Fraction]:
    """(the most the account's whole holding of the asset may count under the limit - None: no USD cap -,
    the group's value besides it, the reach's quantity of the asset besides it, the reach's total besides
    it). The reach unknown: the cap is 0 and the rest None (fail closed).

    max_value_usd: group + y <= cap. max_share s: (group + y) <= s (total + y), i.e. y <= (s T - G)/(1 - s),
    except that below min_total_usd (total + y <= min_total) any y is allowed."""
    lines = reach_lines(lim, holdings)
    if lines is None:
        return Fraction(0), None, None, Fraction(0)
    members = members_of(bundle, lim, asset)
    group = total = qty = Fraction(0)
    mine = [h for h in holdings.account if h.asset == asset.symbol]
    for sign, rows in ((1, lines), (-1, mine)):
        for h in rows:
            total += sign * Fraction(h.value_usd)
            if h.asset in members and kept_per(lim, bundle, asset, h, custodian):
                group += sign * Fraction(h.value_usd)
                if h.asset == asset.symbol:
                    if h.quantity is not None:
                        qty += sign * Fraction(h.quantity)
                    elif unit > 0:  # given by value only: the quantity that value is worth a unit
                        qty += sign * Fraction(h.value_usd) / unit
    cap = None
    if lim.max_value_usd is not None:
        cap = Fraction(lim.max_value_usd) - group
    if lim.max_share is not None and lim.max_share < 1:
        s = Fraction(lim.max_share)
        y = max(Fraction(lim.min_total_usd or 0) - total, (s * total - group) / (1 - s))
        cap = y if cap is None else min(cap, y)
    return cap, group, qty, total


def counted_under(value: Fraction, qty: Fraction, cap: Any, room_qty: Any) -> Fraction:
    """What of a whole holding worth ``value`` (``qty`` units) one limit lets count: at most its USD cap,
    and at most the value of the quantity room left (a proportional part of the holding)."""
    c = value if cap is None else min(value, cap)
    if room_qty is not None and qty > room_qty:
        c = min(c, value * room_qty / qty if room_qty > 0 else Fraction(0))
    return max(c, Fraction(0))


def limits(bundle: Bundle, asset: Asset, day: date, requested: Fraction, whole: tuple, holdings: Any,
           custodian: str | None, unit: Fraction) -> tuple[Fraction, Fraction, list[dict[str, Any]]]:
    """(the holding's counted value without the deposit, with it, trace entries). README: the counted
    value is the least any limit allows, on the whole holding; the deposit counts the difference.

    A limit is 'applied' when it changed the value: taken in file order, each against what the ones
    before it left of the deposit (its own allowance: what it lets the holding count with the deposit
    minus without); the trace shows used before (group_value_usd), this deposit (requested_usd) and the
    room left (room_left_usd)."""
    without, with_, qty_without, qty_with = whole
    c_without, c_with = max(without, Fraction(0)), max(with_, Fraction(0))
    so_far = requested
    trace = []
    for lim in bundle.limits:
        if not (matches(lim.applies, asset) and in_force(lim.dated, day)):
            trace.append(entry(lim.id, "not_applicable", lim.description, None, None, lim.src))
            continue
        cap, group, others_qty, total = limit_cap(bundle, lim, asset, holdings, custodian, unit)
        room_qty = None if lim.max_quantity is None or others_qty is None else Fraction(lim.max_quantity) - others_qty
        a_without = counted_under(without, qty_without, cap, room_qty)
        a_with = counted_under(with_, qty_with, cap, room_qty)
        c_without, c_with = min(c_without, a_without), min(c_with, a_with)
        allowed = max(a_with - a_without, Fraction(0))
        if group is None:
            observed = {"group_value_usd": None, "share_after": None, "requested_usd": cents(requested),
                        "room_left_usd": "0.00"}
        else:
            room = None if cap is None else cap - with_
            if room_qty is not None and qty_with > 0:
                by_qty = (room_qty - qty_with) * with_ / qty_with
                room = by_qty if room is None else min(room, by_qty)
            observed = {"group_value_usd": cents(group + without), "share_after": share_text(group + with_, total + with_),
                        "requested_usd": cents(requested), "room_left_usd": None if room is None else cents(max(room, 0))}
        binds = allowed < so_far
        so_far = min(so_far, allowed)
        threshold = {k: text(v) for k, v in (("max_share", lim.max_share), ("max_value_usd", lim.max_value_usd),
                                            ("min_total_usd", lim.min_total_usd), ("max_quantity", lim.max_quantity))
                     if v is not None}
        threshold.update({k: v for k, v in (("across", lim.across if lim.across != "account" else None),
                                            ("per", lim.per)) if v is not None})
        trace.append(entry(lim.id, "applied" if binds else "pass", lim.description, observed, threshold, lim.src,
                           counted_usd=cents(allowed) if binds else None))
    return c_without, c_with, trace
