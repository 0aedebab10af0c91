"""The sharp edges of durable_rules 2.0.28, each proven on a raw ruleset and shown handled by
rules.engine.evaluators.durable."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from functools import lru_cache

import pytest
from durable import engine as durable

import rules.engine.evaluators.durable as de
from rules.engine.compiler import QID, compile_bundle
from rules.engine.decide import Engine
from rules.engine.evaluators.durable import DurableEvaluator, EngineError, check_fact_types
from rules.policy.facts import FACTS, MAX_INT_FACT
from rules.policy.loader import load_bundle, load_bundle_from_sources
from rules.engine.query import load_query_text
from tests.support import ROOT

EXAMPLES = sorted((ROOT / "examples" / "queries").glob("*.json"))


@lru_cache(maxsize=1)
def bundle():
    return load_bundle(ROOT / "policies")


@lru_cache(maxsize=1)
def engine():
    """Every decision through durable_rules (no fact reuse): these tests are about each evaluation."""
    return Engine.for_bundle(bundle(), "durable_rules", reuse_facts=False)


@lru_cache(maxsize=None)
def queries():
    return [load_query_text(p.read_text(), p.name) for p in EXAMPLES]


def strip(d: dict) -> str:
    d = dict(d)
    d.pop("decision_id")
    return json.dumps(d, sort_keys=True)


class _QuietHost(durable.Host):
    """A raw durable host without its background dispatch threads (so the tests are deterministic)."""

    def _run(self):
        return None


@lru_cache(maxsize=1)
def raw_host() -> _QuietHost:
    return _QuietHost()


def raw_ruleset(rules: dict) -> str:
    name = "raw_" + uuid.uuid4().hex
    raw_host().register_rulesets({name: rules})
    return name


# -- facts are asserted, not posted: every rule sees each fact -------------------------------------
def test_each_criterion_records_an_outcome():
    b = bundle()
    n = len(b.criteria)
    assert n > 10
    for query in queries():
        if query.asset not in b.assets:
            continue
        d = engine().decide(query).to_json()
        criteria = {c.id for c in b.criteria}
        outcomes = [r for r in d["reasons"] if r["rule"] in criteria]
        assert len(outcomes) == n
        reasons = {r["rule"] for r in d["reasons"]}
        assert set(b.rule_ids()) <= reasons, set(b.rule_ids()) - reasons


def test_every_compiled_rule_decided_for_a_fact():
    """Several rules match the same fact and all fire (events would be consumed by the first)."""
    compiled = compile_bundle(bundle())
    ev = DurableEvaluator(compiled)
    from rules.engine.fact_builder import normalize

    q = queries()[0]
    fired = ev.fired(normalize(bundle(), bundle().assets[q.asset], q))
    passes = [r for r in compiled.rules if r.pass_name in fired]
    not_applicable = [r for r in compiled.rules if r.na_name in fired]
    assert len(passes) >= 6 and len(not_applicable) >= 6 and "seen" in fired
    assert len(fired) == len(passes) + len(not_applicable) + 1


def test_posted_events_are_consumed_by_the_first_rule():
    seen = []
    name = raw_ruleset({
        "a": {"all": [{"m": {"x": 1}}], "run": lambda c: seen.append("a")},
        "b": {"all": [{"m": {"x": 1}}], "run": lambda c: seen.append("b")},
    })
    raw_host().post(name, {"sid": "ev", "x": 1})
    assert len(seen) == 1  # an event goes to one rule only
    seen.clear()
    raw_host().assert_fact(name, {"sid": "fa", "x": 1})
    assert sorted(seen) == ["a", "b"]  # a fact is seen by every rule


# -- the session-state loop ------------------------------------------------------------------------
def _guard_first(m: dict) -> bool:
    return "$and" in m and m["$and"][0] == {"$ex": {QID: 1}}


def test_every_durable_rule_is_guarded():
    definition = compile_bundle(bundle()).durable_definition()
    assert definition["seen"] == {"all": [{"m": {"$ex": {QID: 1}}}]}
    names = [n for n in definition if n != "seen"]
    assert len(names) >= 2 * 10
    for name in names:
        (cond,) = definition[name]["all"]
        assert _guard_first(cond["m"]), (name, cond)
    # the negated ('not applicable') rules are the dangerous ones: $neq/$nex hold for the session state
    text = json.dumps(definition)
    assert "$neq" in text


def test_unguarded_negative_rule_loops_on_session_state():
    """Proof of the trap, in a child process: the state written back after each action matches an
    unguarded $nex rule, which fires again, forever. The action stops it after 300 rounds."""
    code = textwrap.dedent("""
        import json
        from durable import engine
        class Q(engine.Host):
            def _run(self): pass
        h = Q()
        seen = []
        def act(c):
            seen.append(sorted(c.m._d))
            if len(seen) >= 300:
                c.delete_state()   # the only way out of the loop
        h.register_rulesets({"loop": {"r": {"all": [{"m": {"$nex": {"q__id": 1}}}], "run": act}}})
        try:
            h.assert_fact("loop", {"sid": "a", "x": 1})
        except Exception:
            pass
        print(json.dumps({"n": len(seen), "first": seen[0], "later": seen[-1]}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["n"] >= 300
    assert "x" not in res["later"] and "$s" in res["later"]  # the session state, again and again


def test_many_decisions_terminate():
    start = time.monotonic()
    for i in range(300):
        engine().decide(queries()[i % len(queries())])
    assert time.monotonic() - start < 20


# -- batches: only one state's actions run in the call ---------------------------------------------
@pytest.mark.parametrize("call", ["assert_facts", "post_batch"])
def test_batch_runs_only_one_states_actions_synchronously(call):
    ran = []
    name = raw_ruleset({"r": {"all": [{"m": {"$ex": {"x": 1}}}], "run": lambda c: ran.append(c.m.sid)}})
    sids = [f"{call}-{i}" for i in range(4)]
    getattr(raw_host(), call)(name, [{"sid": s, "x": i} for i, s in enumerate(sids)])
    assert len(ran) == 1  # one state (in 2.0.28, the last one's) - the others wait for the background threads
    assert ran[0] in sids
    rs = raw_host().get_ruleset(name)
    for _ in range(10):
        rs.dispatch()  # what durable's timer threads would do later, racing the caller
    assert sorted(ran) == sorted(sids)


@pytest.fixture
def asserted(monkeypatch):
    """Every fact the engine asserts into durable_rules, in order."""
    calls = []
    host = de._host()
    real = type(host).assert_fact

    def spy(self, ruleset, fact, complete=None):
        calls.append(fact)
        return real(self, ruleset, fact, complete)

    monkeypatch.setattr(type(host), "assert_fact", spy)
    return calls


def test_engine_asserts_one_fact_per_evaluation(asserted):
    Engine.for_bundle(bundle(), "durable_rules", reuse_facts=False).decide(queries()[0])
    assert len(asserted) == 1 and isinstance(asserted[0], dict)


def test_identical_facts_reach_durable_rules_once_per_engine(asserted):
    """Fact reuse: a batch sends each class of facts through durable_rules once (rules.engine.fast.fact_classes),
    and a value of another type (True is not 1) is never taken for the same."""
    calls = asserted
    e = Engine.for_bundle(bundle(), "durable_rules")
    q = queries()[0]
    first = e.decide(q).to_json()
    again = e.decide(q).to_json()
    assert len(calls) == 1 and e.stats == {"decisions": 2, "evaluations": 1}
    assert {k: v for k, v in first.items() if k != "decision_id"} == {k: v for k, v in again.items() if k != "decision_id"}
    py = Engine.for_bundle(bundle(), "python")
    yes = py.criteria({"custody__segregated": True})
    one = py.criteria({"custody__segregated": 1})
    assert py.stats["evaluations"] == 2 and yes is not one


# -- ruleset names ---------------------------------------------------------------------------------
def test_same_bundle_twice_reuses_the_ruleset():
    e1 = Engine.for_bundle(bundle(), "durable_rules")
    e2 = Engine.for_bundle(load_bundle(ROOT / "policies"), "durable_rules")
    assert e1.evaluator.rulesets == e2.evaluator.rulesets
    assert e1.evaluator.rulesets == ["dacp_" + bundle().hash[:32] + "_0"]
    q = queries()[0]
    assert strip(e1.decide(q).to_json()) == strip(e2.decide(q).to_json())


def test_durable_refuses_a_name_twice():
    name = raw_ruleset({"r": {"all": [{"m": {"x": 1}}], "run": lambda c: None}})
    with pytest.raises(Exception, match="already registered"):
        raw_host().register_rulesets({name: {"r": {"all": [{"m": {"x": 1}}], "run": lambda c: None}}})


def _variant(text_change: tuple[str, str, str]):
    file, old, new = text_change
    sources = dict(bundle().sources)
    assert old in sources[file]
    sources[file] = sources[file].replace(old, new, 1)
    return load_bundle_from_sources(sources)


def test_different_bundles_get_different_rulesets():
    other = _variant(("eligibility.yaml", "at_least: 6", "at_least: 2"))
    assert other.hash != bundle().hash
    e1, e2 = engine(), Engine.for_bundle(other, "durable_rules")
    assert e1.evaluator.rulesets != e2.evaluator.rulesets
    assert e2.evaluator.rulesets == ["dacp_" + other.hash[:32] + "_0"]
    q = next(x for x in queries() if x.id == "ex-btc-low-confirmations")  # 2 confirmations
    assert e1.decide(q).eligible is False
    assert e2.decide(q).eligible is True  # each engine evaluates through its own ruleset


# -- exceptions inside actions -----------------------------------------------------------------------
def test_durable_stores_action_exceptions_instead_of_raising():
    ran = []

    def boom(c):
        raise RuntimeError("boom in action")

    name = raw_ruleset({"bad": {"all": [{"m": {"x": 1}}], "run": boom},
                        "good": {"all": [{"m": {"x": 1}}], "run": lambda c: ran.append(1)}})
    state = raw_host().assert_fact(name, {"sid": "exc", "x": 1})  # no exception here...
    assert "boom in action" in state["exception"]  # ...it is in the state
    assert "boom in action" in raw_host().get_state(name, "exc")["exception"]


class _ExplodingDict(dict):
    def __getitem__(self, key):
        raise RuntimeError("bookkeeping failed")


def test_engine_turns_action_failure_into_engine_error(monkeypatch):
    monkeypatch.setattr(de, "_FIRED", _ExplodingDict())
    with pytest.raises(EngineError, match="action failed.*bookkeeping failed"):
        engine().decide(queries()[0])
    monkeypatch.undo()
    assert not de._ERRORS
    assert engine().decide(queries()[0]).eligible is True  # and the engine still works afterwards


def test_unguarded_raising_action_gives_engine_error(monkeypatch):
    """An action that raises past our guard: durable stores it in the state; the engine reads it."""

    def raising(rule_name):
        def action(c):
            if rule_name == "r0p":
                raise RuntimeError("raw failure")
            de._FIRED[c.m["sid"]].append(rule_name)
        return action

    monkeypatch.setattr(de, "_make_action", raising)
    other = _variant(("eligibility.yaml", "Bitcoin deposits", f"Bitcoin ({uuid.uuid4().hex}) deposits"))
    eng = Engine.for_bundle(other, "durable_rules")  # registers with the raising actions
    with pytest.raises(EngineError, match="raw failure"):
        eng.decide(queries()[0])


def test_missing_sentinel_gives_engine_error(monkeypatch):
    def silent(rule_name):
        return lambda c: None  # nothing recorded: as if the evaluation never ran

    monkeypatch.setattr(de, "_make_action", silent)
    other = _variant(("eligibility.yaml", "Bitcoin deposits", f"Bitcoin ({uuid.uuid4().hex}) deposits"))
    eng = Engine.for_bundle(other, "durable_rules")
    with pytest.raises(EngineError, match="sentinel"):
        eng.decide(queries()[0])


# -- type guards -----------------------------------------------------------------------------------------
def test_durable_compares_across_types():
    hits = []
    name = raw_ruleset({
        "big": {"all": [{"m": {"$gt": {"n": 1000}}}], "run": lambda c: hits.append(("big", c.m.n))},
        "small": {"all": [{"m": {"$lte": {"n": 1000}}}], "run": lambda c: hits.append(("small", c.m.n))},
    })
    raw_host().assert_fact(name, {"sid": "t1", "n": "abc"})
    assert hits == [("big", "abc")]  # "abc" > 1000
    hits.clear()
    raw_host().assert_fact(name, {"sid": "t2", "n": True})
    assert hits == [("small", True)]  # true <= 1000
    hits.clear()
    raw_host().assert_fact(name, {"sid": "t3", "n": 1000.5})
    assert hits == [("big", 1000.5)]


INT_KEY = FACTS["custody.confirmations"].key
BOOL_KEY = FACTS["custody.segregated"].key
STR_KEY = FACTS["participant"].key


@pytest.mark.parametrize("facts", [
    {INT_KEY: "abc"}, {INT_KEY: "7"}, {INT_KEY: 7.0}, {INT_KEY: True}, {INT_KEY: False}, {INT_KEY: 2**53},
    {INT_KEY: -(2**53)}, {INT_KEY: 10**30}, {INT_KEY: None}, {BOOL_KEY: 1}, {BOOL_KEY: "true"}, {STR_KEY: 5},
    {STR_KEY: None}, {"no_such_fact": 1}, {QID: "1"},
])
def test_check_fact_types_refuses(facts):
    with pytest.raises(EngineError):
        check_fact_types(facts)


def test_check_fact_types_accepts_well_typed():
    check_fact_types({INT_KEY: MAX_INT_FACT, BOOL_KEY: False, STR_KEY: "FCM-ALPHA", QID: 3})
    check_fact_types({INT_KEY: -MAX_INT_FACT})


def test_evaluator_refuses_bad_facts_before_durable():
    ev = DurableEvaluator(compile_bundle(bundle()))
    with pytest.raises(EngineError, match="must be int"):
        ev.outcomes({INT_KEY: "abc"})


# -- threads ---------------------------------------------------------------------------------------------
def test_threads_give_the_same_decisions_as_sequential():
    eng = engine()
    qs = [q for q in queries()] * 6
    expected = [strip(eng.decide(q, decision_id="x").to_json()) for q in qs]
    results: dict[int, list[str]] = {}
    errors = []
    barrier = threading.Barrier(8)

    def work(t):
        try:
            barrier.wait()
            results[t] = [strip(eng.decide(q, decision_id="x").to_json()) for q in qs]
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(results) == 8
    for t in range(8):
        assert results[t] == expected


def test_first_call_concurrent_in_fresh_process():
    code = textwrap.dedent("""
        import json, sys, threading
        from pathlib import Path
        from rules.policy.loader import load_bundle
        from rules.engine.decide import Engine
        from rules.engine.query import load_query_text
        b = load_bundle("policies")
        qs = [load_query_text(p.read_text(), p.name) for p in sorted(Path("examples/queries").glob("*.json"))]
        out, errs = {}, []
        barrier = threading.Barrier(6)
        def work(t):
            try:
                barrier.wait()
                eng = Engine.for_bundle(b, "durable_rules")   # the very first use of durable, from 6 threads
                res = []
                for q in qs:
                    d = eng.decide(q).to_json(); d.pop("decision_id"); res.append(d)
                out[t] = res
            except BaseException as e:
                errs.append(repr(e))
        ts = [threading.Thread(target=work, args=(i,)) for i in range(6)]
        [t.start() for t in ts]; [t.join(60) for t in ts]
        print(json.dumps({"errors": errs, "results": [out.get(i) for i in range(6)]}, sort_keys=True))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["errors"] == []
    sequential = []
    for q in queries():
        d = engine().decide(q).to_json()
        d.pop("decision_id")
        sequential.append(json.loads(json.dumps(d)))
    for r in res["results"]:
        assert r == sequential


# -- memory / state ----------------------------------------------------------------------------------
def _next_seq() -> int:
    return int(re.fullmatch(r"count\((\d+)\)", repr(de._SEQ)).group(1))


def test_raw_state_exists_until_deleted():
    name = raw_ruleset({"r": {"all": [{"m": {"x": 1}}], "run": lambda c: None}})
    raw_host().assert_fact(name, {"sid": "live", "x": 1})
    assert raw_host().get_state(name, "live")["sid"] == "live"
    raw_host().delete_state(name, "live")
    with pytest.raises(Exception, match="Could not get state"):
        raw_host().get_state(name, "live")


def test_states_deleted_after_2000_decisions():
    eng = engine()
    first = _next_seq()
    qs = queries()
    for i in range(2000):
        eng.decide(qs[i % len(qs)])
    last = _next_seq() - 1
    assert last - first >= 1800  # the unknown-asset query never reaches durable
    assert de._FIRED == {} and de._ERRORS == {}
    host = de._host()
    for n in itertools.chain(range(first, first + 5), range(last - 5, last + 1), range(first, last, 97)):
        with pytest.raises(Exception, match="Could not get state"):
            host.get_state(eng.evaluator.rulesets[0], f"e{n}")


def test_large_bundles_compile_into_shards_and_decide_like_the_python_evaluator(tmp_path):
    """durable_rules 2.0.28 refuses a ruleset with more than 128 non-equality children under one node
    (error 107, ERR_RULE_EXISTS_LIMIT_EXCEEDED); every rule shares the `$ex q__id` guard, so large
    bundles are split into shards. 300 extra criteria of varied thresholds exercise it."""
    import json as _json
    import shutil as _shutil

    from rules.engine.compiler import SHARD_SIZE
    from rules.engine.decide import Engine
    from rules.policy.loader import load_bundle
    from rules.engine.query import load_query_text
    from tests.support import ROOT as _ROOT

    for f in (_ROOT / "policies").glob("*.yaml"):
        _shutil.copy(f, tmp_path / f.name)
    lines = ["kind: eligibility", "criteria:"]
    for i in range(300):
        fact, op = [("custody.confirmations", "at_least"), ("stablecoin.reserve_attestation_age_days", "at_most"),
                    ("fund.nav_age_days", "at_most")][i % 3]
        lines.append(f"  - id: generated.rule-{i}\n    description: Generated rule number {i}.\n"
                     f"    rationale: Shard test.\n    check: {{fact: {fact}, {op}: {i % 97}}}")
    (tmp_path / "generated.yaml").write_text("\n".join(lines) + "\n")
    big = load_bundle(tmp_path)
    durable, python = Engine.for_bundle(big, "durable_rules"), Engine.for_bundle(big, "python")
    assert len(durable.evaluator.rulesets) == -(-len(durable.compiled.rules) // SHARD_SIZE) > 1
    for path in sorted((_ROOT / "examples" / "queries").glob("*.json")):
        q = load_query_text(path.read_text(), path.name)
        a = durable.decide(q, decision_id="x").to_json()
        b = python.decide(q, decision_id="x").to_json()
        a.pop("engine"), b.pop("engine")
        assert _json.dumps(a, sort_keys=True) == _json.dumps(b, sort_keys=True), path.name
        if a["asset"] in big.assets:
            assert len(a["reasons"]) > 300
