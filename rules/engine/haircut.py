"""The haircut of a decision: the schedule in force, its base (by sources or by bucket), the floor, the
add-ons, and the components that show how the total came about.

What depends only on the asset and the day - the schedule in force, a base by sources, the add-ons'
components, the trace entries of the schedules that do not apply - is worked out once per plan
(``haircut_plan``); ``apply_haircut`` does the rest for each decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, Mapping, NamedTuple

from rules.engine.compiler import CompiledRule
from rules.engine.money import ONE, ZERO, share_text
from rules.engine.trace import Item, Statics, plain
from rules.policy.facts import FACTS
from rules.policy.model import Asset, Bundle, HaircutSchedule
from rules.policy.reserved import SCHEDULE

_ABSENT = object()


class FixedBase(NamedTuple):
    """The base of a schedule by sources: the same for every decision of a plan (kept as an exact tuple:
    see ``rules.engine.fast.plans``)."""

    base: Decimal
    decided_by: str
    components: tuple[dict[str, Any], ...]  # shared with the plan: Decision.to_json copies them
    why: str  # the decision's words for what decided
    entry: Item  # the schedule's trace entry


class AddOnStep(NamedTuple):
    """One add-on of the schedule in force, ready to apply (kept as an exact tuple: see
    ``rules.engine.fast.plans``)."""

    haircut: Decimal
    index: int | None  # its compiled rule (an add-on with ``when``: the evaluator decides it), else None
    ref: int | str  # its trace reference
    key: str | None  # the fact its ``when`` tests (its observed value), else None
    share_above: Decimal | None  # an add-on ``when_share_above``: the share, else None
    shown: tuple[dict[str, Any], dict[str, Any]]  # its component, not applied / applied (shared with the plan)


@dataclass(frozen=True, slots=True)
class HaircutPlan:
    """The haircut part of a plan (one asset on one day)."""

    symbol: str
    statics: Statics
    schedule: HaircutSchedule | None
    others: tuple[Item, ...]  # trace entries of the schedules (and their add-ons) that do not apply
    fixed_base: tuple | None  # a FixedBase, for a schedule by sources
    add_ons: tuple[tuple, ...]  # AddOnSteps
    missing: Item | None  # the trace entry when no schedule applies


def schedule_in_force(bundle: Bundle, asset: Asset, day: date) -> HaircutSchedule | None:
    mine = [h for h in bundle.haircuts if h.applies.matches(asset) and h.dated.in_force(day)]
    return mine[0] if mine else None  # the loader guarantees at most one in force per day


def haircut_plan(bundle: Bundle, asset: Asset, day: date, st: Statics,
                 add_on_rules: Mapping[str, CompiledRule]) -> HaircutPlan:
    sched = schedule_in_force(bundle, asset, day)
    others: list[Item] = []
    for h in bundle.haircuts:
        if h is not sched:
            others.append(st.item(h.id, "not_applicable", None))
            others.extend(st.item(a.id, "not_applicable", None, None) for a in h.add_ons)
    fixed = None
    add_ons: list[tuple] = []
    missing = None
    if sched is None:
        missing = st.item(SCHEDULE[0], "fail", asset.symbol, None,
                          {"policy": {"file": asset.src.file, "line": asset.src.line}})
    else:
        if sched.sources:
            base, decided_by, components, why = by_sources(sched, asset.symbol)
            base, decided_by, why = with_stricter_own(sched, base, decided_by, components, why)
            fixed = tuple(FixedBase(base, decided_by, tuple(components), why,
                                    st.item(sched.id, "applied", {s.id: plain(s.haircut) for s in sched.sources},
                                            {"base": plain(base), "decided_by": decided_by})))
        for a in sched.add_ons:
            shown = ({"rule": a.id, "kind": "add_on", "haircut": plain(a.haircut), "applied": False},
                     {"rule": a.id, "kind": "add_on", "haircut": plain(a.haircut), "applied": True})
            if a.when is not None:
                rule = add_on_rules[a.id]
                step = AddOnStep(a.haircut, rule.index, st.ref[a.id], FACTS[rule.check.fact].key, None, shown)
            else:
                step = AddOnStep(a.haircut, None, st.ref[a.id], None, a.when_share_above, shown)
            add_ons.append(tuple(step))
    return HaircutPlan(asset.symbol, st, sched, tuple(others), fixed, tuple(add_ons), missing)


def pct(d: Decimal) -> str:
    """0.2 -> '20%', 0.005 -> '0.5%'."""
    return f"{(d * 100).normalize():f}%"


def by_sources(sched: HaircutSchedule, symbol: str) -> tuple[Decimal, str, list, str]:
    """Letter 26-05: the highest accepting DCO's haircut when any DCO accepts the asset (of equal highest
    the first written), otherwise the FCM's own; (base, decided by, components, why in words)."""
    dcos = sched.dco_sources
    if any(s.kind == "source" for s in sched.sources):  # the language before issue 16: the highest source
        top = max(sched.sources, key=lambda s: s.haircut)
        why = f"{top.label()}: highest of {len(sched.sources)} source{'s' if len(sched.sources) > 1 else ''}"
    elif dcos:
        top = max(dcos, key=lambda s: s.haircut)
        why = f"{top.label()}: highest of {len(dcos)} accepting DCO{'s' if len(dcos) > 1 else ''}"
    else:
        top = sched.sources[0]
        why = f"{top.label()}: the FCM's own haircut, no DCO accepts {symbol}"
    return top.haircut, top.id, [_source_component(s, s is top) for s in sched.sources], why


def _source_component(s, decisive: bool) -> dict[str, Any]:
    if s.kind == "dco":
        return {"rule": s.id, "kind": "dco", "haircut": plain(s.haircut), "dco": s.dco, "schedule": s.schedule,
                "as_of": s.as_of.isoformat() if s.as_of else None, "decisive": decisive}
    return {"rule": s.id, "kind": s.kind, "haircut": plain(s.haircut), "source": s.source, "decisive": decisive}


def with_stricter_own(sched: HaircutSchedule, base: Decimal, decided_by: str, components: list, why: str
           ) -> tuple[Decimal, str, str]:
    """The FCM's stricter own overlay (``stricter_own``), when it is above ``base``, decides instead (and is
    a component either way); exactly one component stays decisive."""
    if sched.floor is not None and sched.legacy_floor:  # before issue 16: a floor, labelled as it was
        decides = sched.floor > base
        components.append({"rule": sched.id, "kind": "floor", "haircut": plain(sched.floor), "decisive": decides})
        if decides:
            return sched.floor, f"{sched.id}.floor", f"the floor {pct(sched.floor)}, above {pct(base)} ({why})"
    elif sched.floor is not None:
        decides = sched.floor > base
        components.append({"rule": f"{sched.id}.stricter_own", "kind": "stricter_own", "haircut": plain(sched.floor),
                           "decisive": decides})
        if decides:
            for c in components[:-1]:
                if c["decisive"]:
                    c["decisive"] = False
            return (sched.floor, f"{sched.id}.stricter_own",
                    f"the FCM's stricter own haircut {pct(sched.floor)}, above {pct(base)} "
                    f"({why})")
    return base, decided_by, why


def bucket_words(sched: HaircutSchedule, value: int, up_to: int | None) -> str:
    bound = f"<= {up_to}" if up_to is not None else f"> {sched.buckets[-2].up_to if len(sched.buckets) > 1 else 0}"
    return f"the FCM's own schedule by {sched.bucket_fact}: {value} {bound}"


def apply_haircut(hp: HaircutPlan, trace: list, failed: list, facts: dict[str, Any], outcomes: dict[int, str],
                  market_value: Decimal, own_fixed: Decimal, own_market: Decimal, others: Decimal
                  ) -> tuple[dict[str, Any] | None, Decimal, Decimal]:
    """The haircut and its exact total with the deposit, and the total the account's holding of the asset
    had without it, with their trace entries; ``None`` (and a failed rule) when there is none.

    An add-on ``when_share_above`` is decided on the account's whole holding of the asset (README
    "Haircuts"): ``own_fixed`` (holdings given by value only) plus the market value held before
    (``own_market``) and this deposit's, after the base haircut, over that plus the rest of the account
    (``others``). The whole holding takes the add-on, or none of it does."""
    sched = hp.schedule
    # Schedules that do not apply to this asset still appear in the trace, with their add-ons.
    trace.extend(hp.others)
    if sched is None:
        trace.append(hp.missing)
        failed.append(SCHEDULE[0])
        return None, ZERO, ZERO
    if hp.fixed_base is not None:
        base, decided_by, fixed_components, why, entry = hp.fixed_base
        components = list(fixed_components)  # shared with the plan: Decision.to_json copies them
        trace.append(entry)
    else:
        key = FACTS[sched.bucket_fact].key
        value = facts.get(key)
        st = hp.statics
        bucket = None if value is None else next((b for b in sched.buckets if b.up_to is None or value <= b.up_to), None)
        if bucket is None:  # no base haircut: the schedule fails (fail closed); its add-ons stay in the trace
            why = "a bucket needs this fact" if value is None else "no bucket covers this value"
            trace.append(st.item(sched.id, "fail", {sched.bucket_fact: "missing" if value is None else value}, why))
            trace.extend(st.item(a.id, "not_applicable", None, None) for a in sched.add_ons)
            failed.append(sched.id)
            return None, ZERO, ZERO
        base = bucket.haircut
        decided_by = f"{sched.id}[{sched.bucket_fact}<={bucket.up_to}]" if bucket.up_to is not None \
            else f"{sched.id}[{sched.bucket_fact}>{sched.buckets[-2].up_to if len(sched.buckets) > 1 else 0}]"
        components = [{"rule": sched.id, "kind": "bucket", "haircut": plain(bucket.haircut), "fact": sched.bucket_fact,
                       "observed": value, "up_to": bucket.up_to, "decisive": True}]
        why = bucket_words(sched, value, bucket.up_to)
        base, decided_by, why = with_stricter_own(sched, base, decided_by, components, why)
        trace.append(st.item(sched.id, "applied", {sched.bucket_fact: value}, {"base": plain(base),
                                                                              "decided_by": decided_by}))
    total = total_without = base
    if hp.add_ons:
        kept = ONE - base
        mine_without = own_fixed + own_market * kept
        mine = mine_without + market_value * kept
        everything, everything_without = others + mine, others + mine_without
        for haircut, index, ref, key, share_above, shown in hp.add_ons:
            if index is not None:
                hit = hit_without = outcomes[index] == "pass"
                obs = facts.get(key, _ABSENT)
                item = (ref, "a" if hit else "n") if obs is _ABSENT else (ref, "a" if hit else "n", obs)
            else:
                hit = mine > share_above * everything if everything else ZERO > share_above
                hit_without = mine_without > share_above * everything_without if everything_without else False
                item = (ref, "a" if hit else "n", share_text(mine, everything))
            if hit:
                total += haircut
            if hit_without:
                total_without += haircut
            components.append(shown[hit])
            trace.append(item)
    return {"total": plain(min(total, ONE)), "base": plain(base), "decided_by": decided_by, "why": why,
            "schedule": sched.id, "components": components}, min(total, ONE), min(total_without, ONE)
