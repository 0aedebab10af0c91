"""Load a policy bundle: read YAML exactly, validate against the schema, check cross-references
(``rules.policy.cross_checks``), build the immutable model and its content hash (``rules.policy.bundle_hash``).

Every problem found is collected and reported at once (``PolicyError``), each at file:line:col with
the rule id where known.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any, Mapping

from rules.errors import PolicyError, Problem
from rules.policy.bundle_hash import bundle_hash
from rules.policy.cache import cached_bundle, cached_bundle_of, store_bundle
from rules.policy.calendar import DEFAULT_CALENDAR
from rules.policy.cross_checks import CrossChecks
from rules.policy.facts import FACTS
from rules.policy.restrictions import resolve as resolve_restrictions
from rules.policy.model import (AddOn, Asset, Bucket, Bundle, Criterion, Custodian, HaircutSchedule, HaircutSource, Limit,
                                Participant, Phase, PhaseWindow)
from rules.policy.schema_check import check_document
from rules.policy.yaml_reader import SourceDoc, load_yaml_text

POLICY_KINDS = ("programme", "assets", "eligibility", "haircuts", "limits")
MAX_FILE_BYTES = 2_000_000


class MissingBundle(PolicyError):
    """No bundle where one was looked for: not an invalid bundle, so it says how to get one."""

    code = "policy_missing"
    exit_code = 3

    def __init__(self, directory: Path):
        self.directory = directory
        there = " (the directory has no *.yaml files)" if directory.is_dir() else ""
        self.message = f"no policy bundle at {directory}{there}: run `dacp init` or pass --policies (or DACP_POLICIES)"
        super().__init__([Problem(str(directory), None, None, self.message)])

    def render(self) -> str:
        return self.message


def read_policy_dir(directory: str | Path) -> dict[str, str]:
    """The policy files of a bundle directory: ``*.yaml``/``*.yml`` at its top level (tests live in
    ``tests/`` below it and are not part of the bundle)."""
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise PolicyError([Problem(str(d), None, None, "this is not a directory of policy files")])
    files = sorted(p for p in d.iterdir() if p.is_file() and p.suffix in (".yaml", ".yml")) if d.exists() else []
    if not files:  # missing, not invalid: say how to get one
        raise MissingBundle(d)
    out = {}
    problems = []
    for p in files:
        if p.stat().st_size > MAX_FILE_BYTES:
            problems.append(Problem(p.name, None, None, f"the file is larger than {MAX_FILE_BYTES} bytes"))
            continue
        try:
            out[p.name] = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            problems.append(Problem(p.name, None, None, f"the file is not UTF-8 text ({e.reason} at byte {e.start})"))
    if problems:
        raise PolicyError(problems)
    return out


def load_bundle(directory: str | Path) -> Bundle:
    """Load and check the bundle in ``directory``. Problems name files relative to it."""
    return load_bundle_from_sources(read_policy_dir(directory), origin=str(directory))


def load_bundle_from_sources(sources: Mapping[str, str], origin: str = "", stored: bool = False) -> Bundle:
    """Load a bundle from its file texts (as stored in the decision log for replay).

    The files are read strictly and hashed first; a bundle checked before under that hash, from these very
    texts, comes from the cache (``rules.policy.cache``, which verifies its entries) and the schema and
    cross-checks are not run again; exactly these texts checked before are not even parsed. A bundle checked
    here is kept there.

    ``stored``: the texts are a bundle the decision log stored (valid when it was approved); the language's
    later requirements (``rules.policy.restrictions``: every stablecoin and fund token declares its
    restrictions, each a view the adapter reads) are not held against it, so replay reads it as it was.
    Such a bundle is not kept in the cache."""
    known = cached_bundle_of(sources)
    if known is not None:
        return known
    parsed = {name: load_yaml_text(sources[name], name) for name in sorted(sources)}  # name -> (doc, problems)
    if all(doc is not None and not found and isinstance(doc.data, dict) for doc, found in parsed.values()):
        cached = cached_bundle(bundle_hash({n: doc.data for n, (doc, _) in parsed.items()}), sources)
        if cached is not None:
            return cached
    docs: dict[str, SourceDoc] = {}
    problems: list[Problem] = []
    for name, (doc, found) in parsed.items():
        problems.extend(found)
        if doc is None:
            continue
        if not isinstance(doc.data, dict):
            problems.append(Problem(name, 1, 1, "a policy file must be a mapping with a 'kind' key at the top"))
            continue
        problems.extend(check_document(doc, "policy"))
        if doc.data.get("kind") == "tests":
            problems.append(Problem(name, 1, 1, "policy tests belong in the tests/ folder, not beside the policy files"))
        docs[name] = doc
    if problems:
        raise PolicyError(problems)
    builder = _Builder(docs, stored)
    bundle = builder.build(sources)
    if builder.problems:
        raise PolicyError(builder.problems)
    assert bundle is not None
    if not stored:
        store_bundle(bundle)
    return bundle


def num(value: Any) -> Decimal | None:
    """A policy number as a normalised Decimal (0.20 -> 0.2, 100000000 -> 1E+8, printed 100000000).

    The bundle hash treats 0.2 and 0.20 as one number, so the decisions must too: a decision
    depends on a policy number's value, never on how it was written."""
    if value is None:
        return None
    d = Decimal(value).normalize()
    return d if d != 0 else Decimal(0)


def add_months(d: date, months: int) -> date:
    """The same day ``months`` later, clamped to the month's end (Jan 31 + 1 month = Feb 28/29)."""
    y, m = divmod(d.month - 1 + months, 12)
    year, month = d.year + y, m + 1
    for day in (d.day, 30, 29, 28):
        try:
            return date(year, month, min(d.day, day))
        except ValueError:
            continue
    raise ValueError(d)  # pragma: no cover


def phase_clock(phases: list[Phase] | tuple[Phase, ...], begin: date | None) -> tuple[PhaseWindow, ...]:
    """The phases, one after the other from ``begin``, each its ``months`` long (the last open-ended)."""
    if begin is None:
        return ()
    out = []
    for p in phases:
        end = add_months(begin, p.months) if p.months else None
        out.append(PhaseWindow(p, begin, end))
        if end is None:
            break
        begin = end
    return tuple(out)


class _Builder(CrossChecks):
    """Turns schema-valid documents into the model, collecting cross-reference problems (the checks
    themselves are ``CrossChecks``')."""

    def __init__(self, docs: dict[str, SourceDoc], stored: bool = False):
        super().__init__()
        self.docs = docs
        self.stored = stored

    def by_kind(self, kind: str) -> list[SourceDoc]:
        return [d for d in self.docs.values() if d.data.get("kind") == kind]

    # -- build ---------------------------------------------------------------------------------
    def single(self, kind: str) -> SourceDoc | None:
        docs = self.by_kind(kind)
        if len(docs) != 1:
            where = ", ".join(d.file for d in docs) or "none"
            self.problems.append(Problem(kind + ".yaml", None, None,
                                         f"a bundle needs exactly one file of kind {kind!r} (found: {where})"))
            return None
        return docs[0]

    def build(self, sources: Mapping[str, str]) -> Bundle | None:
        for kind in ("eligibility", "haircuts", "limits"):
            if not self.by_kind(kind):
                self.problems.append(Problem(kind + ".yaml", None, None, f"a bundle needs a file of kind {kind!r}"))
        prog_doc = self.single("programme")
        assets_doc = self.single("assets")
        if prog_doc is None or assets_doc is None:
            return None
        assets = resolve_restrictions(self, assets_doc, self.registry(assets_doc), require=not self.stored)
        p = prog_doc.data
        b = p["bundle"]
        bundle_dated = self.dated(prog_doc, ("bundle",), b, None)
        prog = p["programme"]
        self.claim_id(prog["id"], prog_doc, ("programme", "id"))
        start = self.day(prog_doc, ("programme", "start_date"), prog["start_date"], prog["id"])
        phases = self.build_phases(prog_doc, start, assets) if start else ()
        participants = self.build_participants(prog_doc, phases, start)
        calendar = prog.get("business_days", DEFAULT_CALENDAR)
        custodians = self.build_custodians(prog_doc)
        criteria = [c for d in self.by_kind("eligibility") for c in self.build_criteria(d, assets)]
        haircuts = [h for d in self.by_kind("haircuts") for h in self.build_haircuts(d, assets)]
        limits = [lim for d in self.by_kind("limits") for lim in self.build_limits(d, assets)]
        self.haircut_coverage(assets, haircuts, assets_doc)
        if self.problems or start is None:
            return None
        return Bundle(
            name=b["name"], version=str(b["version"]), dated=bundle_dated, owner=b.get("owner"),
            programme_id=prog["id"], programme_description=prog["description"],
            programme_rationale=prog["rationale"], programme_src=self.src(prog_doc, ("programme",)),
            start_date=start, phases=tuple(phases), participants=tuple(participants),
            custodians=tuple(custodians), participants_src=self.src(prog_doc, ("participants",)),
            custodians_src=self.src(prog_doc, ("custodians",)), assets=assets, criteria=tuple(criteria),
            haircuts=tuple(haircuts), limits=tuple(limits),
            hash=bundle_hash({name: d.data for name, d in self.docs.items()}), sources=dict(sources),
            calendar=calendar,
        )

    def build_phases(self, doc: SourceDoc, start: date, assets: Mapping[str, Asset]) -> list[Phase]:
        phases = []
        begin = start
        raw = doc.data["programme"]["phases"]
        for i, ph in enumerate(raw):
            path = ("programme", "phases", i)
            self.claim_id(ph["id"], doc, path + ("id",))
            months = ph.get("months")
            last = i == len(raw) - 1
            if months is None and not last:
                self.problem(doc, path, "every phase but the last needs 'months' (its length)", ph["id"])
                months = 0
            end = add_months(begin, months) if months else None
            phases.append(Phase(ph["id"], ph["description"], ph["rationale"], begin, end,
                                self.applies(doc, path + ("eligible",), ph["eligible"], assets, ph["id"]),
                                self.src(doc, path), months or None))
            if end is None:
                break
            begin = end
        return phases

    def build_participants(self, doc: SourceDoc, phases: list[Phase] | tuple[Phase, ...] = (),
                           start: date | None = None) -> list[Participant]:
        """The participants, each with its own phase clock: the phases counted from the day it started
        accepting digital assets (``accepting_from``; never before its admission or the programme's start).
        Without one, the participant runs on the programme's clock (from ``start_date``), as every bundle
        written before the clock existed did - so a stored bundle replays as it decided."""
        out, seen = [], set()
        for i, pt in enumerate(doc.data["participants"]):
            path = ("participants", i)
            if pt["id"] in seen:
                self.problem(doc, path + ("id",), f"the participant {pt['id']!r} is listed twice")
            seen.add(pt["id"])
            admitted = self.dated(doc, path, pt, None, ("admitted_from", "admitted_to"))
            accepting = self.day(doc, path + ("accepting_from",), pt.get("accepting_from"), None)
            if accepting and admitted.effective_from and accepting < admitted.effective_from:
                self.problem(doc, path + ("accepting_from",), f"accepting_from ({accepting}) is before the participant "
                             f"is admitted ({admitted.effective_from})")
            if accepting and start and accepting < start:
                self.problem(doc, path + ("accepting_from",), f"accepting_from ({accepting}) is before the programme "
                             f"starts ({start})")
            out.append(Participant(pt["id"], pt["name"], admitted, accepting, phase_clock(phases, accepting)))
        return out

    def build_custodians(self, doc: SourceDoc) -> list[Custodian]:
        out, seen = [], set()
        for i, c in enumerate(doc.data["custodians"]):
            if c["id"] in seen:
                self.problem(doc, ("custodians", i, "id"), f"the custodian {c['id']!r} is listed twice")
            seen.add(c["id"])
            out.append(Custodian(c["id"], c["name"], frozenset(c["chains"])))
        return out

    def build_criteria(self, doc: SourceDoc, assets: Mapping[str, Asset]) -> list[Criterion]:
        out = []
        for i, c in enumerate(doc.data["criteria"]):
            path = ("criteria", i)
            rid = c["id"]
            self.claim_id(rid, doc, path + ("id",))
            out.append(Criterion(rid, c["description"], c["rationale"],
                                 self.applies(doc, path + ("applies_to",), c.get("applies_to"), assets, rid),
                                 self.check(doc, path + ("check",), c["check"], rid),
                                 self.dated(doc, path, c, rid), self.src(doc, path)))
        return out

    # build_haircuts: rules.policy.haircut_build.HaircutBuild (a mixin of CrossChecks)

    def build_limits(self, doc: SourceDoc, assets: Mapping[str, Asset]) -> list[Limit]:
        out = []
        for i, lim in enumerate(doc.data["limits"]):
            path = ("limits", i)
            rid = lim["id"]
            self.claim_id(rid, doc, path + ("id",))
            share = lim.get("max_share")
            if share is not None and share == 0:
                self.problem(doc, path + ("max_share",), "a share limit of 0 would refuse the asset: make it ineligible instead", rid)
            out.append(Limit(rid, lim["description"], lim["rationale"], lim["scope"],
                             self.applies(doc, path + ("applies_to",), lim["applies_to"], assets, rid),
                             self.dated(doc, path, lim, rid), self.src(doc, path), num(share),
                             num(lim.get("max_value_usd")), num(lim.get("min_total_usd")),
                             **self.limit_reach(doc, path, lim, rid)))
        return out
