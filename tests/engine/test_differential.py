"""Differential tests: the durable_rules evaluator and the plain Python evaluator agree, on fact dicts
near every threshold of the shipped bundle and on whole decisions."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rules.engine.compiler import compile_bundle, day_number
from rules.engine.decide import Engine
from rules.engine.evaluators.durable import DurableEvaluator
from rules.errors import InputError
from rules.policy.facts import ALWAYS_PRESENT, DAY_KEY, FACTS, MAX_INT_FACT
from rules.policy.loader import load_bundle
from rules.engine.evaluators.python import PythonEvaluator
from rules.engine.query import parse_query
from tests.support import ROOT

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@lru_cache(maxsize=1)
def bundle():
    return load_bundle(ROOT / "policies")


@lru_cache(maxsize=1)
def evaluators():
    compiled = compile_bundle(bundle())
    return compiled, DurableEvaluator(compiled), PythonEvaluator(compiled)


@lru_cache(maxsize=1)
def engines():
    return Engine.for_bundle(bundle(), "durable_rules"), Engine.for_bundle(bundle(), "python")


def _int_thresholds() -> dict[str, list[int]]:
    """Per int fact: every number the bundle compares it with, and its neighbours."""
    b = bundle()
    out: dict[str, set[int]] = {s.name: {0, 1, -1, MAX_INT_FACT, -MAX_INT_FACT} for s in FACTS.values() if s.type == "int"}
    checks = [c.check for c in b.criteria] + [a.when for h in b.haircuts for a in h.add_ons if a.when]
    for c in checks:
        if isinstance(c.value, int) and not isinstance(c.value, bool) and c.fact in out:
            out[c.fact] |= {c.value - 1, c.value, c.value + 1}
    for h in b.haircuts:
        if h.bucket_fact:
            out[h.bucket_fact] |= {x for bk in h.buckets if bk.up_to is not None for x in (bk.up_to, bk.up_to + 1)}
    return {k: sorted(v) for k, v in out.items()}


def _str_values() -> dict[str, list[str]]:
    b = bundle()
    values: dict[str, set[str]] = {s.name: {"", "none", "x"} for s in FACTS.values() if s.type == "str"}
    values["asset"] |= set(b.assets) | {"DOGE", "btc"}
    values["asset.class"] |= {a.klass for a in b.assets.values()}
    values["asset.chain"] |= {a.chain for a in b.assets.values()} | {"solana"}
    values["participant"] |= {p.id for p in b.participants} | {"FCM-ZULU"}
    values["programme.phase"] |= {p.id for p in b.phases}
    values["custody.custodian"] |= {c.id for c in b.custodians} | {"Anchorage"}
    values["custody.finality"] |= {"finalized", "safe", "latest"}
    for c in b.criteria:
        if c.check.op == "one_of":
            values[c.check.fact] |= set(c.check.value) | {v + " " for v in c.check.value}
        elif c.check.op == "equals" and isinstance(c.check.value, str):
            values[c.check.fact].add(c.check.value)
    return {k: sorted(v) for k, v in values.items()}


def _days() -> list[int]:
    b = bundle()
    ds = {b.start_date, date(2026, 11, 20)}
    for p in b.participants:
        ds |= {d for d in (p.admitted.effective_from, p.admitted.effective_to) if d}
    for p in b.phases:
        ds |= {d for d in (p.starts, p.ends) if d}
    for x in list(b.criteria) + list(b.haircuts) + list(b.limits):
        ds |= {d for d in (x.dated.effective_from, x.dated.effective_to) if d}
    return sorted({day_number(d) + k for d in ds for k in (-1, 0, 1)})


INTS = _int_thresholds()
STRS = _str_values()
DAYS = _days()


def _value(spec):
    if spec.type == "bool":
        return st.booleans()
    if spec.type == "int":
        return st.one_of(st.sampled_from(INTS[spec.name]), st.integers(-MAX_INT_FACT, MAX_INT_FACT),
                         st.integers(-5, 2000))
    return st.one_of(st.sampled_from(STRS[spec.name]), st.text(max_size=30))


@st.composite
def fact_dicts(draw, keep_always_present: bool = True):
    """Well-typed facts; any fact may be missing except (by default) those normalize() always sets."""
    facts = {}
    for spec in FACTS.values():
        always = keep_always_present and spec.name in ALWAYS_PRESENT
        if not always and draw(st.integers(0, 3)) == 0:  # about one optional fact in four is missing
            continue
        facts[spec.key] = draw(_value(spec))
    if keep_always_present or draw(st.booleans()):
        facts[DAY_KEY] = draw(st.one_of(st.sampled_from(DAYS), st.integers(0, 40000)))
    return facts


@SETTINGS
@given(fact_dicts())
def test_evaluators_agree_on_fact_dicts(facts):
    _, dur, py = evaluators()
    assert dur.outcomes(facts) == py.outcomes(facts)


def test_normalize_always_sets_the_facts_applicability_depends_on():
    """The agreement above assumes these facts are always present; normalize() guarantees it."""
    from rules.engine.fact_builder import normalize
    from rules.engine.query import load_query_text

    minimal = {"account": "A-1", "participant": "FCM-ALPHA", "asset": "BTC", "quantity": "1", "price_usd": "1",
               "as_of": "2026-11-20T14:00:00Z"}
    for symbol, asset in bundle().assets.items():
        facts = normalize(bundle(), asset, load_query_text(json.dumps(dict(minimal, asset=symbol)), "q"))
        assert {FACTS[n].key for n in ALWAYS_PRESENT} | {DAY_KEY} <= set(facts)


@settings(max_examples=200, deadline=None, database=None)
@given(fact_dicts(keep_always_present=False))
def test_evaluators_agree_even_without_always_present_facts(facts):
    _, dur, py = evaluators()
    assert dur.outcomes(facts) == py.outcomes(facts)


def test_evaluators_agree_on_a_grid_of_thresholds():
    """Deterministic sweep: every threshold neighbour of every int fact, all else from a passing base."""
    compiled, dur, py = evaluators()
    base = {FACTS["asset"].key: "BUIDL", FACTS["asset.class"].key: "tokenized_money_market_fund",
            FACTS["asset.chain"].key: "ethereum", FACTS["participant"].key: "FCM-ALPHA",
            FACTS["programme.phase"].key: "phase.expanded", DAY_KEY: day_number(date(2026, 11, 20))}
    seen = set()
    for asset, klass, chain in [(a.symbol, a.klass, a.chain) for a in bundle().assets.values()]:
        for name, values in INTS.items():
            for v in values:
                f = dict(base, **{FACTS["asset"].key: asset, FACTS["asset.class"].key: klass,
                                  FACTS["asset.chain"].key: chain, FACTS[name].key: v})
                out = dur.outcomes(f)
                assert out == py.outcomes(f), (f, out)
                seen |= set(out.values())
    assert seen == {"pass", "fail", "not_applicable"}


# -- whole decisions ------------------------------------------------------------------------------
AS_OF = datetime(2026, 11, 20, 14, 0, tzinfo=timezone.utc)


def _ts(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def passing_base(symbol: str) -> dict:
    """A query for ``symbol`` that passes every criterion of the shipped bundle on AS_OF."""
    doc = {"account": "ACC-1", "participant": "FCM-ALPHA", "asset": symbol, "quantity": "10", "price_usd": "1.0001",
           "as_of": _ts(AS_OF),
           "custody": {"custodian": "anchorage", "segregated": True, "confirmations": 6, "finality": "finalized",
                       "balance": "10", "token_paused": False, "address_frozen": False, "holder_allowed": True},
           "evidence": {"price_updated_at": _ts(AS_OF - timedelta(minutes=60)),
                        "stablecoin": {"issuer": "Circle Internet Financial", "reserve_attestation_date": "2026-10-16"},
                        "fund": {"nav_date": "2026-11-19", "nav_usd": "1", "holder_allowlisted": True,
                                 "redemption_days": 2, "wam_days": 90}}}
    return doc


PERTURB = [
    ("participant", ["FCM-BRAVO", "FCM-CHARLIE", "FCM-ZULU"]),
    ("as_of", [_ts(datetime(2026, 1, 20, 14, 0, tzinfo=timezone.utc)), _ts(datetime(2025, 12, 7, 23, 59, tzinfo=timezone.utc)),
               _ts(datetime(2026, 3, 8, 0, 0, tzinfo=timezone.utc)), _ts(datetime(2026, 9, 1, 0, 0, tzinfo=timezone.utc)),
               _ts(datetime(2026, 1, 15, 0, 0, tzinfo=timezone.utc))]),
    ("custody.custodian", ["bny-digital", "coinbase-custody", "other-co", None]),
    ("custody.segregated", [False, None]),
    ("custody.confirmations", [0, 5, 7, 100000, None]),
    ("custody.finality", ["safe", "latest", None]),
    ("custody.balance", ["9.99", "0", "11", None]),
    ("custody.token_paused", [True, None]),
    ("custody.address_frozen", [True, None]),
    ("custody.holder_allowed", [False, None]),
    ("custody", [None]),
    ("evidence.price_updated_at", [None, "2026-11-20T12:59:00Z", "2026-11-20T12:59:59Z", "2026-11-20T14:00:00Z"]),
    ("evidence.stablecoin.issuer", ["Circle Internet Financial", "Tether", "Paxos Trust Company ", None]),
    ("evidence.stablecoin.reserve_attestation_date", ["2026-10-15", "2026-11-20", None]),
    ("evidence.fund.nav_date", ["2026-11-16", "2026-11-18", "2026-11-20", "2026-11-21", None]),
    ("evidence.fund.nav_usd", ["0.90", "5.00", "1.0052", "0.99499", None]),
    ("evidence.fund.holder_allowlisted", [False, None]),
    ("evidence.fund.redemption_days", [0, 1, 3, None]),
    ("evidence.fund.wam_days", [0, 91, 182, 183, 365, 1095, 1096, 36500, None]),
    ("evidence", [None]),
    ("price_usd", ["1", "0.995", "0.9949", "1.0026", "1.0025", "91250.55", "3120.123456"]),
    ("quantity", ["0.00000001", "1", "12.5", "123456.789", "5000000"]),
]


def _set(doc: dict, path: str, value) -> None:
    parts = path.split(".")
    node = doc
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            return
        node = node[p]
    if value is None:
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = value


@st.composite
def queries(draw):
    b = bundle()
    symbol = draw(st.sampled_from(sorted(b.assets) + ["DOGE"]))
    doc = passing_base(symbol)
    for _ in range(draw(st.integers(0, 3))):
        path, values = draw(st.sampled_from(PERTURB))
        _set(doc, path, draw(st.sampled_from(values)))
    if draw(st.booleans()):
        doc["portfolio"] = [{"asset": draw(st.sampled_from(sorted(b.assets))),
                             "collateral_value_usd": str(draw(st.sampled_from([0, 1000, 400000, 999999, 2500000,
                                                                                40000000, 99999999])))}
                            for _ in range(draw(st.integers(1, 4)))]
    return doc


def _same(doc) -> dict:
    try:
        query = parse_query(doc)
    except InputError:
        return {}
    dur, py = engines()
    try:
        a = dur.decide(query, decision_id="same").to_json()
    except InputError as e:  # e.g. more decimal places than the asset has: both must refuse alike
        with pytest.raises(InputError) as other:
            py.decide(query, decision_id="same")
        assert str(other.value) == str(e)
        return {}
    b = py.decide(query, decision_id="same").to_json()
    assert a.pop("engine") == "durable_rules" and b.pop("engine") == "python"
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    return a


@SETTINGS
@given(queries())
def test_decisions_agree_between_evaluators(doc):
    _same(doc)


def test_bases_are_eligible_and_perturbations_are_not():
    """The corpus reaches both outcomes for every registered asset (so agreement means something)."""
    for symbol in bundle().assets:
        assert _same(passing_base(symbol))["eligible"] is True, symbol
        doc = passing_base(symbol)
        _set(doc, "custody.segregated", False)
        assert _same(doc)["eligible"] is False
        doc = passing_base(symbol)
        _set(doc, "evidence", None)
        assert _same(doc)["eligible"] is False
    assert _same(passing_base("DOGE"))["eligible"] is False


# -- the corpus the benchmark measures ----------------------------------------------------------------
def test_every_corpus_decision_is_identical_across_evaluators():
    """The fast path (Python evaluator, criteria reused per fact class) against durable_rules on every
    decision with no reuse at all, on the benchmark's corpus: every field, every trace entry."""
    from tests.support.workload import book, corpus

    docs = corpus(1200, seed=21) + book(800, seed=22)
    fast = Engine.for_bundle(bundle(), "python").decide_many([parse_query(d) for d in docs])
    durable = Engine.for_bundle(bundle(), "durable_rules", reuse_facts=False)
    checked = Engine.for_bundle(bundle(), "checked")
    checked.decide_many([parse_query(d) for d in docs])  # raises if the evaluators ever disagree
    for doc, f in zip(docs, fast):
        a = f.to_json()
        b = durable.decide(parse_query(doc), decision_id=a["decision_id"]).to_json()
        assert a.pop("engine") == "python" and b.pop("engine") == "durable_rules"
        assert a == b, doc["id"]
    known = sum(d["asset"] in bundle().assets for d in docs)
    assert durable.stats["evaluations"] == known > 1800  # every one of them through durable_rules
