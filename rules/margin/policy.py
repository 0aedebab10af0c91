"""The bundle's margin policy (a file of ``kind: margin``, checked by the JSON Schema with the rest of the
bundle: ``dacp validate`` names every problem at file:line), as typed data with where each rule was written.

Read from the bundle's own sources (``Bundle.sources``), so the policy is the one the bundle hash covers and
the decision log stores: a replay under a stored bundle reads the same margin policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, time
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rules.errors import InputError
from rules.policy.model import Bundle, Src
from rules.policy.yaml_reader import SourceDoc, load_yaml_text


@dataclass(frozen=True)
class Escalation:
    id: str
    after_hours: int
    level: str
    action: str
    src: Src


@dataclass(frozen=True)
class Calendar:
    """A DCO's business days: not a weekend, not one of its holidays; times of day in its zone."""

    dco: str
    zone: ZoneInfo
    holidays: frozenset[date]

    def is_business_day(self, day: date) -> bool:
        return day.weekday() < 5 and day not in self.holidays


@dataclass(frozen=True)
class Schedule:
    """The haircut of one off-ledger class: flat, or by months to maturity (``buckets``: (below, haircut),
    the last with ``below`` None)."""

    id: str
    cls: str
    description: str
    haircut: Decimal | None
    buckets: tuple[tuple[int | None, Decimal], ...]
    src: Src


@dataclass(frozen=True)
class MarginPolicy:
    id: str
    description: str
    rationale: str
    minimum_call_usd: Decimal
    rounding_usd: Decimal
    deadline_days: int
    deadline_by: time
    escalation: tuple[Escalation, ...]
    calendars: dict[str, Calendar]
    schedules: dict[str, Schedule]
    src: Src
    bundle_hash: str

    def calendar(self, dco: str, where: str = "dco") -> Calendar:
        cal = self.calendars.get(dco)
        if cal is None:
            raise InputError(f"{dco!r} is not a DCO of the margin policy (known: {', '.join(sorted(self.calendars))})",
                             where)
        return cal


def margin_doc(bundle: Bundle) -> SourceDoc | None:
    """The bundle's ``kind: margin`` file, parsed with its positions (None: the bundle has none)."""
    for name in sorted(bundle.sources):
        text = bundle.sources[name]
        if "kind: margin" not in text:
            continue
        doc, _ = load_yaml_text(text, name)
        if doc is not None and isinstance(doc.data, dict) and doc.data.get("kind") == "margin":
            return doc
    return None


def margin_policy(bundle: Bundle) -> MarginPolicy:
    """The bundle's margin policy; a bundle without one cannot answer margin questions (``InputError``)."""
    doc = margin_doc(bundle)
    if doc is None:
        raise InputError("the policy bundle has no margin policy (a file of kind: margin, e.g. policies/margin.yaml)",
                         "policies")

    def src(*path: Any) -> Src:
        return Src(doc.file, doc.where(path)[0])

    d = doc.data
    c = d["calls"]
    hh, mm = (int(x) for x in c["deadline"]["by"].split(":"))
    calendars = {}
    for i, cal in enumerate(d["calendars"]):
        try:
            zone = ZoneInfo(cal["timezone"])
        except (ZoneInfoNotFoundError, ValueError):
            raise InputError(f"unknown time zone {cal['timezone']!r}", f"{doc.file}:{src('calendars', i).line}") from None
        calendars[cal["dco"]] = Calendar(cal["dco"], zone, frozenset(date.fromisoformat(h) for h in cal["holidays"]))
    schedules = {}
    for i, s in enumerate(d["offledger"]):
        buckets = tuple((b.get("below_months"), Decimal(b["haircut"])) for b in s.get("buckets", ()))
        flat = Decimal(s["haircut"]) if "haircut" in s else None
        schedules[s["class"]] = Schedule(s["id"], s["class"], s["description"], flat, buckets, src("offledger", i))
    return MarginPolicy(
        id=c["id"], description=c["description"], rationale=c["rationale"],
        minimum_call_usd=Decimal(c["minimum_call_usd"]), rounding_usd=Decimal(c["rounding_usd"]),
        deadline_days=int(c["deadline"]["business_days"]), deadline_by=time(hh, mm),
        escalation=tuple(sorted((Escalation(e["id"], int(e["after_hours"]), e["level"], e["action"],
                                            src("calls", "escalation", i))
                                 for i, e in enumerate(c["escalation"])), key=lambda e: e.after_hours)),
        calendars=calendars, schedules=schedules, src=src("calls"), bundle_hash=bundle.hash)
