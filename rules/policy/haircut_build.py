"""Haircut schedules, from their documents to the model, with the checks Letter 26-05 asks of them.

A schedule's base is by ``sources`` or by ``buckets``. Sources are typed: ``dco`` (a DCO that accepts the
asset: its name, schedule and the schedule's date) or ``own`` (the FCM's own risk policy). The letter's rule
is built in: the highest accepting DCO's haircut when any DCO accepts the asset, otherwise the FCM's own -
so a schedule has DCO sources or exactly one own source, never both, and an own haircut (a source or every
bucket) below the programme's ``minimum_own_haircut`` is refused for the assets that minimum applies to. A
stricter FCM overlay is ``stricter_own: {floor, rationale}``.

A mixin of ``CrossChecks`` (it uses ``claim_id``, ``problem``, ``src``, ``applies``, ``check``, ``dated``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Mapping

from rules.policy.facts import FACTS
from rules.policy.model import AddOn, AppliesTo, Asset, Bucket, HaircutSchedule, HaircutSource


def _num(value: Any) -> Decimal | None:
    if value is None:
        return None
    d = Decimal(value).normalize()
    return d if d != 0 else Decimal(0)


def _pct(d: Decimal) -> str:
    return f"{(d * 100).normalize():f}%"


class HaircutBuild:
    """``build_haircuts``: the haircut documents as ``HaircutSchedule``s, each problem located."""

    def own_minimum(self) -> tuple[Decimal, AppliesTo, str] | None:
        """The programme's ``minimum_own_haircut`` (haircut, what it applies to, where), if declared."""
        docs = getattr(self, "docs", {})
        for doc in docs.values():
            if doc.data.get("kind") == "programme":
                m = (doc.data.get("programme") or {}).get("minimum_own_haircut")
                if m:
                    a = m.get("applies_to") or {}
                    applies = AppliesTo(frozenset(a.get("assets", [])), frozenset(a.get("classes", [])),
                                        frozenset(a.get("chains", [])))
                    return _num(m["haircut"]), applies, str(self.src(doc, ("programme", "minimum_own_haircut")))
        return None

    def build_haircuts(self, doc: Any, assets: Mapping[str, Asset]) -> list[HaircutSchedule]:
        out = []
        minimum = self.own_minimum()
        for i, h in enumerate(doc.data["haircuts"]):
            path = ("haircuts", i)
            rid = h["id"]
            self.claim_id(rid, doc, path + ("id",))
            if ("sources" in h) == ("buckets" in h):
                self.problem(doc, path, "a haircut schedule needs exactly one of 'sources' or 'buckets'", rid)
            applies = self.applies(doc, path + ("applies_to",), h["applies_to"], assets, rid)
            bound = _bound_assets(applies, assets, minimum)
            sources = []
            for j, s in enumerate(h.get("sources", [])):
                spath = path + ("sources", j)
                self.claim_id(s["id"], doc, spath + ("id",))
                as_of = self.day(doc, spath + ("as_of",), s.get("as_of"), s["id"])
                sources.append(HaircutSource(s["id"], _num(s["haircut"]), s.get("source") or s.get("schedule"), self.src(doc, spath),
                                             s.get("kind", "source"), s.get("dco"), s.get("schedule"), as_of))
            dcos = [s for s in sources if s.kind == "dco"]
            owns = [(j, s) for j, s in enumerate(sources) if s.kind == "own"]
            if dcos and owns:
                self.problem(doc, path + ("sources", owns[0][0]), "Letter 26-05: where a DCO accepts the asset its haircut "
                             "applies, so an own source here would never count; state a stricter FCM haircut as "
                             "stricter_own: {floor, rationale}", owns[0][1].id)
            elif len(owns) > 1:
                self.problem(doc, path + ("sources", owns[1][0]), "where no DCO accepts the asset the FCM's own haircut "
                             "applies: give one own source, not several", owns[1][1].id)
            if not dcos and bound:
                for j, s in owns:
                    if s.haircut < minimum[0]:
                        self.problem(doc, path + ("sources", j, "haircut"), _below(s.haircut, minimum, bound, "own haircut"),
                                     s.id)
            bucket_fact, buckets = None, []
            if "buckets" in h:
                bucket_fact = h["buckets"]["fact"]
                if FACTS[bucket_fact].type != "int":
                    self.problem(doc, path + ("buckets", "fact"), f"buckets need a whole-number fact; {bucket_fact!r} is not", rid)
                table = h["buckets"]["table"]
                prev = -1
                for j, row in enumerate(table):
                    up_to = row.get("up_to")
                    if up_to is None and j != len(table) - 1:
                        self.problem(doc, path + ("buckets", "table", j), "only the last bucket may leave out 'up_to'", rid)
                    if up_to is not None and up_to <= prev:
                        self.problem(doc, path + ("buckets", "table", j, "up_to"),
                                     "buckets must be in increasing order of 'up_to'", rid)
                    prev = up_to if up_to is not None else prev
                    buckets.append(Bucket(up_to, _num(row["haircut"])))
                    if bound and _num(row["haircut"]) < minimum[0] and not _num(h.get("stricter_own", {}).get("floor", 0)) >= minimum[0]:
                        self.problem(doc, path + ("buckets", "table", j, "haircut"),
                                     _below(_num(row["haircut"]), minimum, bound, "own haircut (a bucket)"), rid)
            add_ons = []
            for j, a in enumerate(h.get("add_ons", [])):
                apath = path + ("add_ons", j)
                self.claim_id(a["id"], doc, apath + ("id",))
                if ("when" in a) == ("when_share_above" in a):
                    self.problem(doc, apath, "an add-on needs exactly one condition: 'when' or 'when_share_above'", a["id"])
                when = self.check(doc, apath + ("when",), a["when"], a["id"]) if "when" in a else None
                add_ons.append(AddOn(a["id"], a["description"], a["rationale"], _num(a["haircut"]), self.src(doc, apath),
                                     when, _num(a.get("when_share_above"))))
            if "floor" in h and "stricter_own" in h:
                self.problem(doc, path + ("floor",), "give the FCM's overlay once: stricter_own (floor is the "
                             "language before issue 16)", rid)
            floor = _num((h.get("stricter_own") or {}).get("floor", h.get("floor")))
            out.append(HaircutSchedule(rid, h["description"], h["rationale"], applies,
                                       self.dated(doc, path, h, rid), self.src(doc, path), tuple(sources), bucket_fact,
                                       tuple(buckets), floor, tuple(add_ons), "floor" in h and "stricter_own" not in h))
        return out


def _bound_assets(applies: AppliesTo, assets: Mapping[str, Asset], minimum: tuple | None) -> list[str]:
    """The assets of a schedule the programme's minimum own haircut applies to."""
    if minimum is None:
        return []
    return sorted(sym for sym, a in assets.items() if applies.matches(a) and minimum[1].matches(a))


def _below(value: Decimal, minimum: tuple, bound: list[str], what: str) -> str:
    return (f"Letter 26-05: where no DCO accepts {', '.join(bound)} the FCM's own haircut is at least "
            f"{_pct(minimum[0])} (the programme's minimum_own_haircut, {minimum[2]}); this {what} is {_pct(value)}")

