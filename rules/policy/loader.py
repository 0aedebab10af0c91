"""Load a policy bundle: read YAML exactly, validate against the schema, check cross-references,
build the immutable model and its content hash.

Every problem found is collected and reported at once (``PolicyError``), each at file:line:col with
the rule id where known.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any, Mapping

from rules.errors import PolicyError, Problem
from rules.policy.facts import FACTS
from rules.policy.model import (AddOn, AppliesTo, Asset, Bucket, Bundle, Check, Criterion, Custodian, Dated,
                         HaircutSchedule, HaircutSource, Limit, Participant, Phase, Src)
from rules.policy.reserved import ENGINE_RULES
from rules.policy.schema_check import check_document
from rules.policy.yaml_reader import SourceDoc, load_yaml_text
from rules.values import eip55_checksum

POLICY_KINDS = ("programme", "assets", "eligibility", "haircuts", "limits")
MAX_FILE_BYTES = 2_000_000


def canonical_json(value: Any) -> str:
    """Canonical JSON: sorted keys, no whitespace, Decimals as normalised decimal strings."""

    def norm(v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):
            v = Decimal(v)  # a number is hashed by its value: 0 and 0.00 are the same number
        if isinstance(v, Decimal):
            n = v.normalize()
            return {"$decimal": format(n, "f") if n == n.to_integral_value() or n.adjusted() > -30 else str(n)}
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        if isinstance(v, list):
            return [norm(x) for x in v]
        return v

    return json.dumps(norm(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def bundle_hash(docs: Mapping[str, Any]) -> str:
    """sha256 over the canonical form of the policy documents (file name -> parsed content)."""
    return hashlib.sha256(canonical_json(dict(docs)).encode("utf-8")).hexdigest()


def read_policy_dir(directory: str | Path) -> dict[str, str]:
    """The policy files of a bundle directory: ``*.yaml``/``*.yml`` at its top level (tests live in
    ``tests/`` below it and are not part of the bundle)."""
    d = Path(directory)
    if not d.is_dir():
        raise PolicyError([Problem(str(d), None, None, "this is not a directory of policy files")])
    files = sorted(p for p in d.iterdir() if p.is_file() and p.suffix in (".yaml", ".yml"))
    if not files:
        raise PolicyError([Problem(str(d), None, None, "no policy files (*.yaml) found here")])
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


def load_bundle_from_sources(sources: Mapping[str, str], origin: str = "") -> Bundle:
    """Load a bundle from its file texts (as stored in the decision log for replay)."""
    docs: dict[str, SourceDoc] = {}
    problems: list[Problem] = []
    for name in sorted(sources):
        doc, found = load_yaml_text(sources[name], name)
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
    builder = _Builder(docs)
    bundle = builder.build(sources)
    if builder.problems:
        raise PolicyError(builder.problems)
    assert bundle is not None
    return bundle


def num(value: Any) -> Decimal | None:
    """A policy number as a normalised Decimal (0.20 -> 0.2, 100000000 -> 1E+8, printed 100000000).

    The bundle hash treats 0.2 and 0.20 as one number, so the decisions must too: a decision
    depends on a policy number's value, never on how it was written."""
    if value is None:
        return None
    d = Decimal(value).normalize()
    return d if d != 0 else Decimal(0)


def _day(text: str | None) -> date | None:
    return None if text is None else date.fromisoformat(text)


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


class _Builder:
    """Turns schema-valid documents into the model, collecting cross-reference problems."""

    def __init__(self, docs: dict[str, SourceDoc]):
        self.docs = docs
        self.problems: list[Problem] = []
        self.ids: dict[str, Src] = {}

    # -- helpers -------------------------------------------------------------------------------
    def by_kind(self, kind: str) -> list[SourceDoc]:
        return [d for d in self.docs.values() if d.data.get("kind") == kind]

    def src(self, doc: SourceDoc, path: tuple) -> Src:
        return Src(doc.file, doc.where(path)[0])

    def problem(self, doc: SourceDoc, path: tuple, message: str, rule_id: str | None = None) -> None:
        line, col = doc.where(path)
        self.problems.append(Problem(doc.file, line, col, message, rule_id))

    def claim_id(self, rule_id: str, doc: SourceDoc, path: tuple) -> None:
        if rule_id in ENGINE_RULES:
            self.problem(doc, path, f"the rule id {rule_id!r} is reserved for the engine's own rule "
                         f"({ENGINE_RULES[rule_id]!r}); choose another id", rule_id)
        elif rule_id in self.ids:
            self.problem(doc, path, f"the rule id {rule_id!r} is already used at {self.ids[rule_id]}; ids must be unique",
                         rule_id)
        else:
            self.ids[rule_id] = self.src(doc, path)

    def day(self, doc: SourceDoc, path: tuple, text: str | None, rule_id: str | None) -> date | None:
        try:
            return _day(text)
        except ValueError:
            self.problem(doc, path, f"{text!r} is not a real calendar date", rule_id)
            return None

    def dated(self, doc: SourceDoc, path: tuple, d: Mapping[str, Any], rule_id: str | None,
              keys: tuple[str, str] = ("effective_from", "effective_to")) -> Dated:
        frm, to = (self.day(doc, path + (k,), d.get(k), rule_id) for k in keys)
        if frm and to and to <= frm:
            self.problem(doc, path + (keys[1],), f"{keys[1]} ({to}) must be after {keys[0]} ({frm})", rule_id)
        return Dated(frm, to)

    def applies(self, doc: SourceDoc, path: tuple, d: Mapping[str, Any] | None, assets: Mapping[str, Asset],
                rule_id: str | None) -> AppliesTo:
        if not d:
            return AppliesTo()
        for i, sym in enumerate(d.get("assets", [])):
            if sym not in assets:
                self.problem(doc, path + ("assets", i), f"the asset {sym!r} is not in the asset registry "
                             f"(known: {', '.join(sorted(assets))})", rule_id)
        return AppliesTo(frozenset(d.get("assets", [])), frozenset(d.get("classes", [])), frozenset(d.get("chains", [])))

    def check(self, doc: SourceDoc, path: tuple, d: Mapping[str, Any], rule_id: str | None) -> Check:
        fact = d["fact"]
        op = next(k for k in d if k != "fact")
        value = d[op]
        ftype = FACTS[fact].type
        here = path + (op,)
        if op in ("at_least", "at_most") and ftype != "int":
            self.problem(doc, here, f"{op} compares numbers, but the fact {fact!r} is {_TYPE[ftype]}", rule_id)
        elif op == "one_of" and ftype != "str":
            self.problem(doc, here, f"one_of lists words, but the fact {fact!r} is {_TYPE[ftype]}", rule_id)
        elif op == "equals" and _type_of(value) != ftype:
            self.problem(doc, here, f"the fact {fact!r} is {_TYPE[ftype]}, so it cannot equal {value!r}", rule_id)
        elif op == "in_list":
            wanted = {"participants": "participant", "custodians": "custody.custodian", "phase_assets": "asset"}[value]
            if fact != wanted:
                self.problem(doc, here, f"the list {value!r} holds values of the fact {wanted!r}, not {fact!r}", rule_id)
        if op == "one_of":
            value = tuple(value)
        return Check(fact, op, value)

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
        assets = self.build_assets(assets_doc)
        p = prog_doc.data
        b = p["bundle"]
        bundle_dated = self.dated(prog_doc, ("bundle",), b, None)
        prog = p["programme"]
        self.claim_id(prog["id"], prog_doc, ("programme", "id"))
        start = self.day(prog_doc, ("programme", "start_date"), prog["start_date"], prog["id"])
        phases = self.build_phases(prog_doc, start, assets) if start else ()
        participants = self.build_participants(prog_doc)
        custodians = self.build_custodians(prog_doc)
        criteria = [c for d in self.by_kind("eligibility") for c in self.build_criteria(d, assets)]
        haircuts = [h for d in self.by_kind("haircuts") for h in self.build_haircuts(d, assets)]
        limits = [lim for d in self.by_kind("limits") for lim in self.build_limits(d, assets)]
        self.check_haircut_coverage(assets, haircuts, assets_doc)
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
        )

    def build_assets(self, doc: SourceDoc) -> dict[str, Asset]:
        assets: dict[str, Asset] = {}
        natives: dict[str, str] = {}
        for i, a in enumerate(doc.data["assets"]):
            path = ("assets", i)
            sym = a["symbol"]
            if sym in assets:
                self.problem(doc, path + ("symbol",), f"the asset {sym!r} is registered twice")
                continue
            chain, network = a["chain"], a["network"]
            if chain == "ethereum" and not isinstance(network, int):
                self.problem(doc, path + ("network",), "an Ethereum asset's network is its chain id, a whole number (1 for mainnet)")
            if chain == "bitcoin" and network not in ("main", "test", "signet", "regtest"):
                self.problem(doc, path + ("network",), "a Bitcoin asset's network is one of: main, test, signet, regtest")
            contract = a.get("contract")
            if contract is None:
                if chain in natives:
                    self.problem(doc, path, f"{sym} has no contract, but {natives[chain]} is already the native coin of {chain}; "
                                 "a token needs its contract address")
                natives[chain] = sym
            elif chain == "bitcoin":
                self.problem(doc, path + ("contract",), "Bitcoin assets have no contract address")
            elif contract[2:] not in (contract[2:].lower(), contract[2:].upper()) and eip55_checksum(contract) != contract:
                self.problem(doc, path + ("contract",), f"{contract} is not a valid EIP-55 checksummed address "
                             "(check for a typo, or write it all in lower case)")
            if a.get("restrictions") and contract is None:
                self.problem(doc, path + ("restrictions",), "restrictions are read from a token contract; this asset has none")
            assets[sym] = Asset(sym, a["name"], a["class"], chain, network, a["decimals"], self.src(doc, path),
                                contract, a.get("issuer"), dict(a.get("restrictions") or {}))
        return assets

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
                                self.src(doc, path)))
            if end is None:
                break
            begin = end
        return phases

    def build_participants(self, doc: SourceDoc) -> list[Participant]:
        out, seen = [], set()
        for i, pt in enumerate(doc.data["participants"]):
            path = ("participants", i)
            if pt["id"] in seen:
                self.problem(doc, path + ("id",), f"the participant {pt['id']!r} is listed twice")
            seen.add(pt["id"])
            out.append(Participant(pt["id"], pt["name"], self.dated(doc, path, pt, None, ("admitted_from", "admitted_to"))))
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

    def build_haircuts(self, doc: SourceDoc, assets: Mapping[str, Asset]) -> list[HaircutSchedule]:
        out = []
        for i, h in enumerate(doc.data["haircuts"]):
            path = ("haircuts", i)
            rid = h["id"]
            self.claim_id(rid, doc, path + ("id",))
            if ("sources" in h) == ("buckets" in h):
                self.problem(doc, path, "a haircut schedule needs exactly one of 'sources' or 'buckets'", rid)
            sources = []
            for j, s in enumerate(h.get("sources", [])):
                self.claim_id(s["id"], doc, path + ("sources", j, "id"))
                sources.append(HaircutSource(s["id"], num(s["haircut"]), s.get("source"), self.src(doc, path + ("sources", j))))
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
                    buckets.append(Bucket(up_to, num(row["haircut"])))
            add_ons = []
            for j, a in enumerate(h.get("add_ons", [])):
                apath = path + ("add_ons", j)
                self.claim_id(a["id"], doc, apath + ("id",))
                if ("when" in a) == ("when_share_above" in a):
                    self.problem(doc, apath, "an add-on needs exactly one condition: 'when' or 'when_share_above'", a["id"])
                when = self.check(doc, apath + ("when",), a["when"], a["id"]) if "when" in a else None
                add_ons.append(AddOn(a["id"], a["description"], a["rationale"], num(a["haircut"]), self.src(doc, apath),
                                     when, num(a.get("when_share_above"))))
            out.append(HaircutSchedule(rid, h["description"], h["rationale"],
                                       self.applies(doc, path + ("applies_to",), h["applies_to"], assets, rid),
                                       self.dated(doc, path, h, rid), self.src(doc, path), tuple(sources), bucket_fact,
                                       tuple(buckets), num(h.get("floor")), tuple(add_ons)))
        return out

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
                             num(lim.get("max_value_usd")), num(lim.get("min_total_usd"))))
        return out

    def check_haircut_coverage(self, assets: Mapping[str, Asset], haircuts: list[HaircutSchedule],
                               doc: SourceDoc) -> None:
        """Every asset has a haircut schedule, and never two in force on the same day."""
        for i, (sym, asset) in enumerate(assets.items()):
            mine = [h for h in haircuts if h.applies.matches(asset)]
            if not mine:
                self.problem(doc, ("assets", i), f"no haircut schedule applies to {sym}; every asset needs one")
            for a_i, a in enumerate(mine):
                for b in mine[a_i + 1:]:
                    if _overlap(a.dated, b.dated):
                        self.problems.append(Problem(b.src.file, b.src.line, None,
                                                     f"{a.id} ({a.src}) and {b.id} both apply to {sym} on the same days; "
                                                     "give them effective dates that do not overlap", b.id))


def _overlap(a: Dated, b: Dated) -> bool:
    lo = max(a.effective_from or date.min, b.effective_from or date.min)
    hi = min(a.effective_to or date.max, b.effective_to or date.max)
    return lo < hi


_TYPE = {"int": "a whole number", "bool": "true or false", "str": "a word"}


def _type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    return "str"

