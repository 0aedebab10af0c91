"""Golden decisions: the engine still decides a 1,500-query corpus exactly as it was decided when the
golden file was written (by the engine that landed before the performance work of issue 6).

The bundle is frozen beside the file (``tests/data/golden-bundle``), so editing ``policies/`` does not
touch this test. A deliberate change to the decision contract regenerates the file:

    .venv/bin/python -m tests.engine.test_golden --regenerate

and the diff of the decompressed file belongs in the review of that change.
"""

from __future__ import annotations

import gzip
import json
import sys
from functools import lru_cache

import pytest

from rules.app import comparable, diff_decisions
from rules.engine.decide import Engine
from rules.policy.loader import load_bundle_from_sources, read_policy_dir
from rules.engine.query import parse_query
from tests.support import ROOT

DATA = ROOT / "tests" / "data"
GOLDEN = DATA / "golden-decisions.jsonl.gz"
BUNDLE_HASH = "edb35b73299169621f022d65eca87148a110a99f810f7b1322a3b65abccef291"


@lru_cache(maxsize=1)
def bundle():
    # a frozen bundle, as the decision log stores one: read as stored (rules.policy.loader, ``stored``)
    b = load_bundle_from_sources(read_policy_dir(DATA / "golden-bundle"), stored=True)
    assert b.hash == BUNDLE_HASH, "the frozen golden bundle was edited"
    return b


@lru_cache(maxsize=1)
def golden() -> list[dict]:
    with gzip.open(GOLDEN, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _check(decisions: list[dict], cases: list[dict]) -> None:
    bad = []
    for case, got in zip(cases, decisions):
        diffs = diff_decisions(comparable(case["decision"]), comparable(got))
        if diffs:
            bad.append(f"{case['query']['id']}: " + "; ".join(diffs[:5]))
    assert not bad, f"{len(bad)} of {len(cases)} decisions differ from the golden file:\n" + "\n".join(bad[:10])


def test_the_corpus_covers_every_rule_and_outcome():
    seen = {(r["rule"], r["outcome"]) for c in golden() for r in c["decision"]["reasons"]}
    rules = {r for r, _ in seen}
    assert set(bundle().rule_ids()) <= rules
    for criterion in bundle().criteria:
        assert {(criterion.id, "pass"), (criterion.id, "fail")} <= seen, criterion.id
    assert sum(c["decision"]["eligible"] for c in golden()) > 300
    assert any(c["decision"]["excluded_by_limits_usd"] not in (None, "0.00") for c in golden())


@pytest.mark.parametrize("evaluator", ["durable_rules", "python", "checked"])
def test_batch_decisions_match_the_golden_file(evaluator):
    cases = golden()
    engine = Engine.for_bundle(bundle(), evaluator)
    decisions = engine.decide_many([parse_query(c["query"]) for c in cases])
    _check([d.to_json() for d in decisions], cases)


@pytest.mark.parametrize("evaluator", ["durable_rules", "python"])
def test_single_decisions_without_reuse_match_the_golden_file(evaluator):
    """Each query alone, every one through the evaluator (no criteria reused between decisions)."""
    cases = golden()[::3]
    engine = Engine.for_bundle(bundle(), evaluator, reuse_facts=False)
    _check([engine.decide(parse_query(c["query"])).to_json() for c in cases], cases)


def regenerate() -> None:  # pragma: no cover - a maintenance command
    from tests.support.workload import corpus

    engine = Engine.for_bundle(bundle(), "durable_rules", reuse_facts=False)
    with gzip.open(GOLDEN, "wt", encoding="utf-8", compresslevel=9) as f:
        for doc in corpus(1500, seed=101):
            d = {k: v for k, v in engine.decide(parse_query(json.loads(json.dumps(doc)))).to_json().items()
                 if k != "decision_id"}
            f.write(json.dumps({"query": doc, "decision": d}, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")


if __name__ == "__main__":  # pragma: no cover
    if sys.argv[1:] != ["--regenerate"]:
        sys.exit("usage: python -m tests.engine.test_golden --regenerate")
    regenerate()
