"""The checks a schema cannot make: references between the parts of a bundle, each problem located.

Rule ids are unique and not the engine's own; assets named by a rule are in the registry; a check
compares its fact in a way the fact's type allows; dates are real and ranges run forwards; the asset
registry is consistent (networks, contract addresses with a valid EIP-55 checksum, one native coin per
chain); every asset has a haircut schedule and never two in force on one day.

``CrossChecks`` collects the problems (all of them: ``PolicyError`` lists every one) while the loader
builds the model with their help (its builder is a ``CrossChecks``).
"""

from __future__ import annotations

from datetime import date
from typing import Any, Mapping

from rules.errors import Problem
from decimal import Decimal

from rules.policy.facts import FACTS
from rules.policy.haircut_build import HaircutBuild
from rules.policy.model import AppliesTo, Asset, Check, Dated, HaircutSchedule, Src
from rules.policy.reserved import ENGINE_RULES
from rules.policy.yaml_reader import SourceDoc
from rules.values import eip55_checksum

_TYPE = {"int": "a whole number", "bool": "true or false", "str": "a word"}
_LISTS = {"participants": "participant", "custodians": "custody.custodian", "phase_assets": "asset"}  # in_list: fact


class CrossChecks(HaircutBuild):
    """Problems found so far, and the rule ids claimed (with where). Haircut schedules are built by
    ``HaircutBuild`` (``rules.policy.haircut_build``)."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.ids: dict[str, Src] = {}

    # -- locating ------------------------------------------------------------------------------
    def src(self, doc: SourceDoc, path: tuple) -> Src:
        return Src(doc.file, doc.where(path)[0])

    def problem(self, doc: SourceDoc, path: tuple, message: str, rule_id: str | None = None) -> None:
        line, col = doc.where(path)
        self.problems.append(Problem(doc.file, line, col, message, rule_id))

    # -- references ----------------------------------------------------------------------------
    def claim_id(self, rule_id: str, doc: SourceDoc, path: tuple) -> None:
        if rule_id in ENGINE_RULES:
            self.problem(doc, path, f"the rule id {rule_id!r} is reserved for the engine's own rule "
                         f"({ENGINE_RULES[rule_id]!r}); choose another id", rule_id)
        elif rule_id in self.ids:
            self.problem(doc, path, f"the rule id {rule_id!r} is already used at {self.ids[rule_id]}; ids must be unique",
                         rule_id)
        else:
            self.ids[rule_id] = self.src(doc, path)

    def limit_reach(self, doc: SourceDoc, path: tuple, lim: Mapping[str, Any], rule_id: str) -> dict[str, Any]:
        """A limit's reach (``across``, ``per``), its quantity cap and its source, as ``Limit`` keywords;
        a quantity cap only on a limit of one asset (the units of different assets do not add up)."""
        qty = lim.get("max_quantity")
        if qty is not None and lim.get("scope") != "asset":
            self.problem(doc, path + ("max_quantity",), "a quantity cap needs scope: asset (units of different "
                         "assets do not add up)", rule_id)
        return {"across": lim.get("across", "account"), "per": lim.get("per"),
                "max_quantity": None if qty is None else Decimal(qty).normalize(), "source": lim.get("source")}

    def day(self, doc: SourceDoc, path: tuple, text: str | None, rule_id: str | None) -> date | None:
        try:
            return None if text is None else date.fromisoformat(text)
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
            wanted = _LISTS[value]
            if fact != wanted:
                self.problem(doc, here, f"the list {value!r} holds values of the fact {wanted!r}, not {fact!r}", rule_id)
        if op == "one_of":
            value = tuple(value)
        return Check(fact, op, value)

    # -- the asset registry --------------------------------------------------------------------
    def registry(self, doc: SourceDoc) -> dict[str, Asset]:
        """The registry's assets, each checked: network, contract address, one native coin per chain."""
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
                # mixed case is a checksum (the schema has checked the shape: 0x and 40 hex digits)
                self.problem(doc, path + ("contract",), f"{contract} is not a valid EIP-55 checksummed address "
                             "(check for a typo, or write it all in lower case)")
            if a.get("restrictions") and contract is None:
                self.problem(doc, path + ("restrictions",), "restrictions are read from a token contract; this asset has none")
            valuation = a.get("valuation") or {}
            if valuation and a["class"] != "payment_stablecoin":
                self.problem(doc, path + ("valuation",), "valuation.above_par is for payment stablecoins (the par "
                             f"cap applies to them only); {sym} is a {a['class']}")
            assets[sym] = Asset(sym, a["name"], a["class"], chain, network, a["decimals"], self.src(doc, path),
                                contract, a.get("issuer"), dict(a.get("restrictions") or {}),
                                value_above_par=bool(valuation.get("above_par", False)))
        return assets

    def haircut_coverage(self, assets: Mapping[str, Asset], haircuts: list[HaircutSchedule], doc: SourceDoc) -> None:
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


def _type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    return "str"
