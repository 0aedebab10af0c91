"""Fact classes: reusing one evaluation for every fact dict of a class never changes an outcome."""

from __future__ import annotations

from datetime import date
from functools import lru_cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rules.engine.compiler import compile_bundle, day_number
from rules.engine.decide import Engine
from rules.engine.evaluators.durable import DurableEvaluator, EngineError
from rules.engine.fast.fact_classes import FALSE, TRUE, PlanClasses, fold
from rules.policy.facts import DAY_KEY, FACTS
from rules.engine.fact_builder import base_facts
from rules.policy.loader import load_bundle
from rules.engine.evaluators.python import PythonEvaluator
from rules.engine.query import parse_query
from tests.support import ROOT
from tests.engine.test_differential import DAYS, INTS, STRS
from tests.support.workload import book

K = {name: spec.key for name, spec in FACTS.items()}


@lru_cache(maxsize=1)
def bundle():
    return load_bundle(ROOT / "policies")


@lru_cache(maxsize=1)
def compiled():
    return compile_bundle(bundle())


def _value(spec):
    """Values from small pools, so that many fact dicts share a class (and the reuse is exercised)."""
    if spec.type == "bool":
        return st.booleans()
    if spec.type == "int":
        return st.sampled_from(INTS[spec.name])
    return st.sampled_from(STRS[spec.name] + ["another word"])


@st.composite
def plan_facts(draw):
    """A day, an asset, and fact dicts for it (any fact but the asset's and the day's may be missing)."""
    b = bundle()
    asset = b.assets[draw(st.sampled_from(sorted(b.assets)))]
    day = date.fromordinal(date(1970, 1, 1).toordinal() + draw(st.sampled_from(DAYS)))
    base = base_facts(b, asset, day)
    out = []
    for _ in range(draw(st.integers(2, 12))):
        facts = dict(base)
        for spec in FACTS.values():
            if spec.key in base or draw(st.integers(0, 4)) == 0:
                continue
            facts[spec.key] = draw(_value(spec))
        out.append(facts)
    return base, out


def _same_outcomes_per_class(case, evaluator):
    base, fact_dicts = case
    classes = PlanClasses(compiled(), base, tag=0)
    py = evaluator
    seen: dict[tuple, dict] = {}
    for facts in fact_dicts:
        out = py.outcomes(facts)
        cls = classes.of(facts)
        if cls in seen:
            assert seen[cls] == out, (cls, facts)
        seen[cls] = out
        for index, applies in classes.applies:  # the plan knows which rules apply
            assert (out[index] != "not_applicable") == applies


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan_facts())
def test_facts_of_one_class_have_the_same_outcomes(case):
    _same_outcomes_per_class(case, PythonEvaluator(compiled()))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan_facts())
def test_facts_of_one_class_have_the_same_outcomes_in_durable_rules(case):
    _same_outcomes_per_class(case, DurableEvaluator(compiled()))


def test_values_that_act_alike_share_a_class():
    b = bundle()
    base = base_facts(b, b.assets["ETH"], date(2026, 11, 20))
    classes = PlanClasses(compiled(), base, tag=0)
    one = dict(base, **{K["custody.custodian"]: "anchorage", K["price.age_minutes"]: 0, K["participant"]: "FCM-ALPHA"})
    assert classes.of(one) == classes.of({**one, K["custody.custodian"]: "bny-digital"})  # both approved for ethereum
    assert classes.of(one) == classes.of({**one, K["price.age_minutes"]: 60})  # both within the 60 minutes
    assert classes.of(one) == classes.of({**one, K["participant"]: "FCM-BRAVO"})  # both admitted on that day
    assert classes.of(one) != classes.of({**one, K["custody.custodian"]: "self-custody"})
    assert classes.of(one) != classes.of({**one, K["price.age_minutes"]: 61})
    assert classes.of(one) != classes.of({**one, K["participant"]: "FCM-CHARLIE"})  # left on 2026-09-01
    # facts no applicable rule tests are not part of the class at all
    assert classes.of(one) == classes.of({**one, K["custody.confirmations"]: 2})


def test_a_value_of_the_wrong_type_is_never_merged():
    b = bundle()
    base = base_facts(b, b.assets["BTC"], date(2026, 11, 20))
    classes = PlanClasses(compiled(), base, tag=0)
    right = dict(base, **{K["custody.confirmations"]: 7, K["custody.segregated"]: True})
    assert classes.of(right) != classes.of({**right, K["custody.segregated"]: 1})
    assert classes.of(right) != classes.of({**right, K["custody.confirmations"]: True})
    assert classes.of(right) != classes.of({**right, K["custody.confirmations"]: 2**60})  # beyond exact floats


def test_fold_uses_the_evaluator_semantics():
    assert fold(("ge", "k", 6), "k", 6) == TRUE and fold(("ge", "k", 6), "k", 5) == FALSE
    assert fold(("neq", "k", "a"), "k", "b") == TRUE and fold(("ex", "k"), "j", 1) == ("ex", "k")
    assert fold(("and", (("eq", "k", "a"), ("eq", "j", 1))), "k", "a") == ("eq", "j", 1)
    assert fold(("or", (("eq", "k", "a"), ("eq", "j", 1))), "k", "a") == TRUE


def test_the_engine_evaluates_each_class_once_and_shows_each_decisions_own_values():
    engine = Engine.for_bundle(bundle(), "durable_rules")
    docs = [d for d in book(400, seed=3) if d["asset"] == "BTC"]
    decisions = engine.decide_many([parse_query(d) for d in docs])
    assert engine.stats["evaluations"] < len(docs) / 4
    for doc, d in zip(docs, decisions):
        (r,) = [r for r in d.to_json()["reasons"] if r["rule"] == "custody.btc-confirmations"]
        assert r["observed"] == doc["custody"]["confirmations"]


def test_an_evaluator_that_disagrees_with_the_plan_is_an_engine_error():
    class Contrary:
        name = "contrary"

        def __init__(self, inner):
            self.inner = inner

        def outcomes(self, facts):
            out = self.inner.outcomes(facts)
            return {i: "not_applicable" if o != "not_applicable" else "pass" for i, o in out.items()}

    engine = Engine(compiled(), Contrary(PythonEvaluator(compiled())))
    with pytest.raises(EngineError, match="the plan for BTC says"):
        engine.decide(parse_query(book(1, seed=1)[0] | {"asset": "BTC", "custody": {"confirmations": 9}}))


def test_day_number_is_part_of_the_base():
    b = bundle()
    assert base_facts(b, b.assets["BTC"], date(2026, 1, 2))[DAY_KEY] == day_number(date(2026, 1, 2))


def test_days_that_compare_alike_with_every_rule_date_share_their_classes():
    """A year of history is not 365 times the work: the classes of an asset are made once per span of
    days between the dates the rules name (and per phase)."""
    engine = Engine.for_bundle(bundle(), "python")
    same = [engine.plan("BTC", date(2026, 11, d)).classes for d in (2, 20, 29)]
    assert same[0] is same[1] is same[2]
    # FCM-CHARLIE's admission ends on 2026-09-01: the day before and the day itself differ
    assert engine.plan("BTC", date(2026, 8, 31)).classes is not engine.plan("BTC", date(2026, 9, 1)).classes
    assert engine.plan("BTC", date(2026, 11, 20)).classes is not engine.plan("ETH", date(2026, 11, 20)).classes
    docs = [d for d in book(300, seed=31)]
    for day in ("2026-08-31T10:00:00Z", "2026-09-01T10:00:00Z", "2026-11-02T10:00:00Z", "2026-11-29T10:00:00Z"):
        queries = [parse_query({**d, "as_of": day, "evidence": {}}) for d in docs]
        fresh = Engine.for_bundle(bundle(), "python", reuse_facts=False)
        for q, d in zip(queries, engine.decide_many(queries)):
            assert d.to_json() == fresh.decide(q, decision_id=d.id).to_json()
