"""Generated policy bundles: hypothesis strategies that start from the shipped bundle's documents and
mutate them - thresholds, operators, applies_to, effective dates, haircut figures, sources, floors,
buckets and add-ons, limit shares and caps, phases, participants, custodians, asset classes and decimals -
into small VALID bundles, written as YAML for ``rules.policy.loader.load_bundle_from_sources``.

Every mutation keeps the bundle loadable by construction (ids unique, dates ordered, every asset with
exactly one haircut schedule a day, checks well typed), so a ``PolicyError`` from a generated bundle is a
bug here, not a reason to skip. ``bundles()`` draws (sources, what was changed).
"""

from __future__ import annotations

import copy
from datetime import date, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any, Callable

import yaml
from hypothesis import strategies as st

from tests.support import ROOT

CLASSES = ["digital_commodity", "payment_stablecoin", "tokenized_treasury_fund", "tokenized_money_market_fund"]
CHAINS = ["bitcoin", "ethereum"]
# Days around which the generated policies change (and the queries are dated).
KEY_DAYS = [date(2025, 12, 8), date(2026, 1, 15), date(2026, 3, 8), date(2026, 6, 1), date(2026, 9, 1),
            date(2026, 11, 20), date(2026, 11, 21), date(2027, 2, 1)]
ISSUERS = ["Circle Internet Financial", "Paxos Trust Company", "Tether Operations"]
# The facts of the policy language and their types (README "The policy language", table "Facts"),
# written out here so the generator depends on the documented vocabulary only.
FACT_TYPES = {
    "asset": "str", "asset.class": "str", "asset.chain": "str", "participant": "str", "programme.phase": "str",
    "custody.custodian": "str", "custody.finality": "str", "custody.segregated": "bool", "custody.token_paused": "bool",
    "custody.address_frozen": "bool", "custody.holder_allowed": "bool", "custody.balance_covers_quantity": "bool",
    "custody.confirmations": "int", "stablecoin.issuer": "str", "stablecoin.issuer_matches_registry": "bool",
    "stablecoin.reserve_attestation_age_days": "int", "stablecoin.peg_deviation_bps": "int",
    "stablecoin.peg_discount_bps": "int", "stablecoin.peg_premium_bps": "int", "fund.price_nav_deviation_bps": "int",
    "fund.nav_age_days": "int", "fund.holder_allowlisted": "bool", "fund.redemption_days": "int",
    "fund.wam_days": "int", "price.age_minutes": "int",
}
INT_VALUES = [-1, 0, 1, 2, 3, 5, 6, 7, 25, 26, 35, 36, 50, 51, 59, 60, 61, 90, 91, 365, 1000]


class _ExactLoader(yaml.SafeLoader):
    """PyYAML's safe loader keeping numbers exact (Decimal) and dates as text, as the policy reader does."""


_ExactLoader.add_constructor("tag:yaml.org,2002:float", lambda loader, node: Decimal(loader.construct_scalar(node)))
_ExactLoader.add_constructor("tag:yaml.org,2002:timestamp", lambda loader, node: loader.construct_scalar(node))


def shipped_sources() -> dict[str, str]:
    """The shipped bundle's policy files (the top level of policies/; its tests/ are not part of it)."""
    return {p.name: p.read_text(encoding="utf-8") for p in sorted((ROOT / "policies").glob("*.yaml"))}


@lru_cache(maxsize=1)
def shipped_documents() -> dict[str, dict[str, Any]]:
    """The shipped policy files, parsed exactly (numbers as Decimal, dates as text)."""
    return {name: yaml.load(text, Loader=_ExactLoader) for name, text in shipped_sources().items()}


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:  # policy files may not use aliases: write every value out
        return True


def _decimal(dumper: yaml.SafeDumper, d: Decimal) -> yaml.Node:
    t = format(d, "f")
    return dumper.represent_scalar("tag:yaml.org,2002:int" if "." not in t else "tag:yaml.org,2002:float", t)


_Dumper.add_representer(Decimal, _decimal)


def render(docs: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The documents as YAML policy files (block style, keys in their order)."""
    head = "# yaml-language-server: $schema=../rules/schema/policy.schema.json\n"
    return {name: head + yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=4000)
            for name, data in docs.items()}


def _day(d: date) -> str:
    return d.isoformat()


days = st.builds(lambda d, k: d + timedelta(days=k), st.sampled_from(KEY_DAYS), st.sampled_from([-1, 0, 0, 1, 30]))
fractions = st.one_of(st.sampled_from(["0", "0.005", "0.02", "0.05", "0.15", "0.2", "0.25", "0.4", "0.5", "0.7", "1"]),
                      st.integers(0, 1000).map(lambda n: str(Decimal(n) / 1000))).map(lambda t: Decimal(t).normalize())
shares = st.sampled_from(["0.05", "0.3", "0.4", "0.5", "0.6", "0.7", "0.999", "1"]).map(Decimal)
usd = st.sampled_from([0, 1, 1000, 250000, 999999, 1000000, 2500000, 45000000, 100000000]).map(Decimal)


def _docs_by_kind(docs: dict[str, dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(d for d in docs.values() if d["kind"] == kind)


def _symbols(docs: dict[str, dict[str, Any]]) -> list[str]:
    return [a["symbol"] for a in _docs_by_kind(docs, "assets")["assets"]]


@st.composite
def applies_to(draw, docs: dict[str, dict[str, Any]], allow_all: bool = True) -> dict[str, Any] | None:
    """An applies_to over the bundle's assets, classes and chains (None: every asset)."""
    kinds = draw(st.lists(st.sampled_from(["assets", "classes", "chains"]), min_size=0 if allow_all else 1,
                          max_size=2, unique=True))
    pools = {"assets": _symbols(docs), "classes": CLASSES, "chains": CHAINS}
    out = {k: draw(st.lists(st.sampled_from(pools[k]), min_size=1, max_size=2, unique=True)) for k in kinds}
    return out or None


@st.composite
def dates(draw) -> dict[str, str]:
    """Optional effective_from / effective_to (the second after the first)."""
    out: dict[str, str] = {}
    frm = draw(st.none() | days)
    to = draw(st.none() | days)
    if frm is not None:
        out["effective_from"] = _day(frm)
    if to is not None and (frm is None or to > frm):
        out["effective_to"] = _day(to)
    return out


@st.composite
def check(draw, docs: dict[str, dict[str, Any]], ints_only: bool = False) -> dict[str, Any]:
    """A well-typed check: a fact and an operator its type allows, with a value near the data."""
    names = sorted(n for n, t in FACT_TYPES.items() if t == "int" or not ints_only)
    fact = draw(st.sampled_from(names))
    kind = FACT_TYPES[fact]
    if kind == "int":
        op = draw(st.sampled_from(["at_least", "at_most", "equals"]))
        return {"fact": fact, op: draw(st.sampled_from(INT_VALUES))}
    if kind == "bool":
        return {"fact": fact, "equals": draw(st.booleans())}
    lists = {"participant": "participants", "custody.custodian": "custodians", "asset": "phase_assets"}
    prog = _docs_by_kind(docs, "programme")
    words = {"asset": _symbols(docs), "asset.class": CLASSES, "asset.chain": CHAINS,
             "participant": [p["id"] for p in prog["participants"]] + ["FCM-DELTA"],
             "programme.phase": [p["id"] for p in prog["programme"]["phases"]] + ["none"],
             "custody.custodian": [c["id"] for c in prog["custodians"]] + ["self-custody"],
             "custody.finality": ["finalized", "safe", "latest"], "stablecoin.issuer": ISSUERS}[fact]
    op = draw(st.sampled_from(["equals", "one_of"] + (["in_list", "in_list"] if fact in lists else [])))
    if op == "in_list":
        return {"fact": fact, "in_list": lists[fact]}
    if op == "one_of":
        return {"fact": fact, "one_of": draw(st.lists(st.sampled_from(words), min_size=1, max_size=3, unique=True))}
    return {"fact": fact, "equals": draw(st.sampled_from(words))}


# -- mutations: each changes the documents in place and says what it did ----------------------------
Mutation = Callable[[Any, dict[str, dict[str, Any]], int], str]


def m_criterion_threshold(draw, docs, k) -> str:
    crit = draw(st.sampled_from(_docs_by_kind(docs, "eligibility")["criteria"]))
    chk = crit["check"]
    op = next(o for o in chk if o != "fact")
    if op in ("at_least", "at_most") and draw(st.booleans()):
        chk[op] = chk[op] + draw(st.integers(-3, 3))
    elif op in ("at_least", "at_most"):  # the other comparison
        chk["at_most" if op == "at_least" else "at_least"] = chk.pop(op)
    else:
        crit["check"] = draw(check(docs))
    return f"{crit['id']}: check {crit['check']}"


def m_criterion_new(draw, docs, k) -> str:
    crit = {"id": f"gen.criterion-{k}", "description": "A generated criterion.",
            "rationale": "Generated for the tests."}
    scope = draw(applies_to(docs))
    if scope:
        crit["applies_to"] = scope
    crit["check"] = draw(check(docs))
    crit.update(draw(dates()))
    _docs_by_kind(docs, "eligibility")["criteria"].append(crit)
    return f"new criterion {crit}"


def m_criterion_scope(draw, docs, k) -> str:
    crit = draw(st.sampled_from(_docs_by_kind(docs, "eligibility")["criteria"]))
    crit.pop("applies_to", None)
    crit.pop("effective_from", None)
    crit.pop("effective_to", None)
    scope = draw(applies_to(docs))
    if scope:
        crit["applies_to"] = scope
    crit.update(draw(dates()))
    return f"{crit['id']}: applies_to {scope}, dates {crit.get('effective_from')}..{crit.get('effective_to')}"


def m_criterion_drop(draw, docs, k) -> str:
    criteria = _docs_by_kind(docs, "eligibility")["criteria"]
    if len(criteria) < 2:
        return "nothing dropped"
    i = draw(st.integers(0, len(criteria) - 1))
    return f"dropped {criteria.pop(i)['id']}"


def _schedules(docs):
    return _docs_by_kind(docs, "haircuts")["haircuts"]


def _dco(k, haircut) -> dict:
    return {"id": f"gen.dco-{k}", "kind": "dco", "dco": f"Generated DCO {k}", "schedule": "Generated schedule",
            "as_of": "2026-01-02", "haircut": haircut}


def m_haircut_figures(draw, docs, k) -> str:
    """Source figures and kinds (DCO sources, or the FCM's one own source: the letter's two cases), more
    DCOs, and the FCM's stricter own overlay kept, dropped, set or tied with the letter's base."""
    h = draw(st.sampled_from(_schedules(docs)))
    done = []
    if "sources" in h:
        for s in h["sources"]:
            s["haircut"] = draw(fractions)
        kind = draw(st.sampled_from(["keep", "dco", "own"]))
        if kind == "own":  # no DCO accepts it: the FCM's own, one source
            s = h["sources"][0]
            h["sources"] = [{"id": s["id"], "kind": "own", "haircut": s["haircut"], "source": "Generated FCM policy"}]
        elif kind == "dco" or (h["sources"][0]["kind"] == "dco" and draw(st.booleans())):
            if h["sources"][0]["kind"] == "own":
                h["sources"] = []
            h["sources"].append(_dco(f"{k}-{len(h['sources'])}", draw(fractions)))
            h["sources"][-1]["id"] = f"{h['id']}.gen-source-{k}"
        done.append(f"sources {[(s['kind'], str(s['haircut'])) for s in h['sources']]}")
    what = draw(st.sampled_from(["keep", "drop", "set", "tie"]))
    if what == "drop":
        h.pop("stricter_own", None)
    elif what == "set" or (what == "tie" and "sources" not in h):
        h["stricter_own"] = {"floor": draw(fractions), "rationale": "Generated for the tests."}
    elif what == "tie":  # the overlay equal to the highest source
        h["stricter_own"] = {"floor": max(s["haircut"] for s in h["sources"]), "rationale": "Generated."}
    done.append(f"stricter_own {h.get('stricter_own', {}).get('floor')}")
    return f"{h['id']}: " + ", ".join(done)


def m_haircut_add_on(draw, docs, k) -> str:
    h = draw(st.sampled_from(_schedules(docs)))
    add_ons = h.setdefault("add_ons", [])
    if add_ons and draw(st.booleans()):
        a = draw(st.sampled_from(add_ons))
        a["haircut"] = draw(fractions)
        if "when_share_above" in a:
            a["when_share_above"] = draw(fractions)
        else:
            a["when"] = draw(check(docs))
        return f"{a['id']}: haircut {a['haircut']}, {a.get('when') or a.get('when_share_above')}"
    a = {"id": f"{h['id']}.gen-add-on-{k}", "description": "A generated add-on.",
         "rationale": "Generated for the tests.", "haircut": draw(fractions)}
    if draw(st.booleans()):
        a["when_share_above"] = draw(fractions)
    else:
        a["when"] = draw(check(docs))
    add_ons.append(a)
    return f"new add-on {a}"


def m_haircut_buckets(draw, docs, k) -> str:
    """A schedule by buckets: a new table of strictly increasing bounds, the last mostly open; a closed
    last bucket (the loader accepts it) meets the known issue of tests/engine/test_reference.py above it."""
    h = draw(st.sampled_from(_schedules(docs)))
    h.pop("sources", None)
    bounds = sorted(set(draw(st.lists(st.sampled_from(INT_VALUES[1:] + [182, 183, 1095]), min_size=0, max_size=4))))
    table = [{"up_to": b, "haircut": draw(fractions)} for b in bounds]
    if not table or draw(st.integers(0, 4)):  # mostly open-ended, as the schema asks
        table.append({"haircut": draw(fractions)})
    fact = draw(st.sampled_from(["fund.wam_days", "fund.redemption_days", "custody.confirmations",
                                 "price.age_minutes"]))
    h["buckets"] = {"fact": fact, "table": table}
    return f"{h['id']}: buckets on {fact}: {[(r.get('up_to'), str(r['haircut'])) for r in table]}"


def m_haircut_split(draw, docs, k) -> str:
    """A schedule replaced on a day by a copy with other figures (a gap of days between them when the
    second starts later: no schedule in force there)."""
    schedules = _schedules(docs)
    i = draw(st.integers(0, len(schedules) - 1))
    h = schedules[i]
    if "effective_from" in h or "effective_to" in h:
        return "no split"
    end = draw(days)
    start = end + timedelta(days=draw(st.sampled_from([0, 0, 1, 40])))
    new = copy.deepcopy(h)
    new["id"] = f"{h['id']}.gen-{k}"
    for s in new.get("sources", []):
        s["id"], s["haircut"] = f"{s['id']}.gen-{k}", draw(fractions)
    for a in new.get("add_ons", []):
        a["id"], a["haircut"] = f"{a['id']}.gen-{k}", draw(fractions)
    h["effective_to"], new["effective_from"] = _day(end), _day(start)
    schedules.insert(i + 1, new)
    return f"{h['id']} until {end}, {new['id']} from {start}"


def _limits(docs):
    return _docs_by_kind(docs, "limits")["limits"]


def m_limit_tweak(draw, docs, k) -> str:
    lim = draw(st.sampled_from(_limits(docs)))
    for key, values in (("max_share", shares), ("max_value_usd", usd), ("min_total_usd", usd)):
        what = draw(st.sampled_from(["keep", "drop", "set"]))
        if what == "set":
            lim[key] = draw(values)
        elif what == "drop":
            lim.pop(key, None)
    if "max_share" not in lim and "max_value_usd" not in lim:
        lim["max_value_usd"] = draw(usd)
    if draw(st.booleans()):
        lim["scope"] = draw(st.sampled_from(["asset", "class"]))
        lim["applies_to"] = draw(applies_to(docs, allow_all=False))
    for key in ("effective_from", "effective_to"):
        lim.pop(key, None)
    lim.update(draw(dates()))
    return f"{lim['id']}: {lim}"


def m_limit_new(draw, docs, k) -> str:
    lim = {"id": f"gen.limit-{k}", "description": "A generated limit.", "rationale": "Generated for the tests.",
           "scope": draw(st.sampled_from(["asset", "class"])), "applies_to": draw(applies_to(docs, allow_all=False))}
    if draw(st.booleans()):
        lim["max_share"] = draw(shares)
        if draw(st.booleans()):
            lim["min_total_usd"] = draw(usd)
    if "max_share" not in lim or draw(st.booleans()):
        lim["max_value_usd"] = draw(usd)
    lim.update(draw(dates()))
    _limits(docs).append(lim)
    return f"new limit {lim}"


def m_programme(draw, docs, k) -> str:
    prog = _docs_by_kind(docs, "programme")
    phases = prog["programme"]["phases"]
    for p in phases[:-1]:
        p["months"] = draw(st.sampled_from([1, 3, 6, 11]))
    p = draw(st.sampled_from(phases))
    p["eligible"] = draw(applies_to(docs, allow_all=False))
    pt = draw(st.sampled_from(prog["participants"]))
    frm = draw(days)
    pt["admitted_from"] = _day(frm)
    pt.pop("admitted_to", None)
    # its own phase clock (Letter 26-05): from accepting_from, which is never before its admission or the start
    pt.pop("accepting_from", None)
    accepting = draw(st.none() | days)
    if accepting is not None and accepting >= max(frm, date.fromisoformat(str(prog["programme"]["start_date"]))):
        pt["accepting_from"] = _day(accepting)
    to = draw(st.none() | days)
    if to is not None and to > frm:
        pt["admitted_to"] = _day(to)
    c = draw(st.sampled_from(prog["custodians"]))
    c["chains"] = draw(st.lists(st.sampled_from(CHAINS), min_size=1, max_size=2, unique=True))
    if draw(st.booleans()):
        prog["bundle"].pop("effective_to", None)
        prog["bundle"]["effective_from"] = _day(draw(days))
        to = draw(days)
        if to > date.fromisoformat(prog["bundle"]["effective_from"]):
            prog["bundle"]["effective_to"] = _day(to)
    shown = [(p["id"], p.get("months"), p["eligible"]) for p in phases]
    return f"programme: phases {shown}, {pt}, {c}, {prog['bundle']}"


def m_assets(draw, docs, k) -> str:
    """Asset classes swapped among those whose schedules apply by class (every asset keeps exactly one
    schedule), decimals and the stablecoin issuer changed."""
    assets = _docs_by_kind(docs, "assets")["assets"]
    done = []
    for a in assets:
        if a["class"] != "digital_commodity" and draw(st.integers(0, 2)) == 0:
            a["class"] = draw(st.sampled_from(CLASSES[1:]))
            done.append(f"{a['symbol']} class {a['class']}")
        if draw(st.integers(0, 3)) == 0:
            a["decimals"] = draw(st.sampled_from([0, 2, 6, 8, 18]))
            done.append(f"{a['symbol']} decimals {a['decimals']}")
    usdc = next((a for a in assets if a["symbol"] == "USDC"), None)
    if usdc is not None and draw(st.booleans()):
        usdc["issuer"] = draw(st.sampled_from(ISSUERS))
        done.append(f"USDC issuer {usdc['issuer']}")
    return "assets: " + (", ".join(done) or "unchanged")


MUTATIONS: list[Mutation] = [m_criterion_threshold, m_criterion_new, m_criterion_scope, m_criterion_drop,
                             m_haircut_figures, m_haircut_add_on, m_haircut_buckets, m_haircut_split,
                             m_limit_tweak, m_limit_new, m_programme, m_assets]


@st.composite
def bundles(draw, min_mutations: int = 2, max_mutations: int = 6) -> tuple[dict[str, str], list[str]]:
    """(policy sources, the mutations made): the shipped bundle changed in a few ways."""
    docs = copy.deepcopy(shipped_documents())
    done = []
    for k in range(draw(st.integers(min_mutations, max_mutations))):
        mutation = draw(st.sampled_from(MUTATIONS))
        done.append(mutation(draw, docs, k))
    # The programme's minimum own haircut would refuse most drawn figures; the tests by hand hold it.
    _docs_by_kind(docs, "programme")["programme"].pop("minimum_own_haircut", None)
    return render(docs), done
