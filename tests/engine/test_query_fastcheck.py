"""The fast acceptance check never accepts what jsonschema refuses, and accepts real queries."""

from __future__ import annotations

import copy
import json
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rules.engine.query import parse_query
from rules.engine.query_fastcheck import UnsupportedSchema, certainly_valid, compile_check
from rules.policy.schema_check import validator
from tests.support.workload import corpus

DOCS = corpus(300, seed=5)
SETTINGS = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Values that sit on the edges of what the query schema allows, or just past them.
ODD_VALUES = [None, True, False, 0, 1, -1, 7, 100000000, 100000001, 3650, 3651, 36500, 36501, Decimal("7"),
              Decimal("7.0"), 1.0, "", "7", "12.5", "12.5\n", "0012.50", "1e5", "-1", "1.", ".5", "１２", "١٢.٥",
              "x" * 81, "A" * 20, "A" * 19, "bc1q" + "a" * 40, "2026-11-20", "2026-11-20T14:00:00Z",
              "2026-11-20T14:00:00Z\n", "2026-13-40T99:99:99+99:99", "finalized", "safe", "latest", "Finalized",
              [], ["a" * 20], ["a" * 20, "a" * 20], [1], {}, {"x": 1}, "FCM-ALPHA", "-bad", "A" * 80, "A" * 81]


def _paths(doc, prefix=()):
    """Every path to a value in ``doc``."""
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, prefix + (i,))


def _set(doc, path, value):
    node = doc
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value


def _delete(doc, path):
    node = doc
    for p in path[:-1]:
        node = node[p]
    del node[path[-1]]


@st.composite
def mutated(draw):
    doc = copy.deepcopy(draw(st.sampled_from(DOCS)))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["set", "set", "set", "delete", "add"]))
        try:
            if action == "set":
                _set(doc, path, copy.deepcopy(draw(st.sampled_from(ODD_VALUES))))
            elif action == "delete":
                _delete(doc, path)
            else:
                node = doc
                for p in path[:-1]:
                    node = node[p]
                if isinstance(node, dict):
                    node[draw(st.sampled_from(["extra", "custodain", "id", "balance", "fund"]))] = \
                        copy.deepcopy(draw(st.sampled_from(ODD_VALUES)))
                elif isinstance(node, list):
                    node.append(copy.deepcopy(draw(st.sampled_from(ODD_VALUES + [node[0] if node else None]))))
        except (KeyError, IndexError, TypeError):
            pass
    return doc


@SETTINGS
@given(mutated())
def test_fast_check_never_accepts_what_jsonschema_refuses(doc):
    if certainly_valid("query")(doc):
        assert validator("query").is_valid(doc), json.dumps(doc, default=str)


@SETTINGS
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=12) | st.decimals(allow_nan=False),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                    max_leaves=20))
def test_fast_check_on_arbitrary_json(doc):
    if certainly_valid("query")(doc):
        assert validator("query").is_valid(doc)


def test_fast_check_accepts_every_valid_corpus_query():
    valid = [d for d in DOCS if validator("query").is_valid(d)]
    assert len(valid) == len(DOCS)
    assert all(certainly_valid("query")(d) for d in valid)


def test_invalid_queries_are_still_explained_by_jsonschema():
    doc = copy.deepcopy(DOCS[0])
    doc["custody"]["custodain"] = "anchorage"
    with pytest.raises(Exception) as e:
        parse_query(doc)
    assert "unknown key 'custodain' (did you mean 'custodian'?)" in str(e.value)


@pytest.mark.parametrize("schema", [
    {"type": "object", "patternProperties": {"x": {}}},
    {"type": "number"},
    {"oneOf": [{"type": "string"}]},
    {"type": "object", "properties": {"a": {"format": "date"}}},
    {"$ref": "https://example.com/other.json"},
    {"enum": [1, 2]},
    {"type": "object", "additionalProperties": {"type": "string"}},
])
def test_unknown_keywords_are_refused_when_compiled(schema):
    with pytest.raises(UnsupportedSchema):
        compile_check(schema)


def test_keywords_apply_to_their_own_type_only():
    check = compile_check({"minimum": 3, "maxLength": 2, "uniqueItems": True})
    assert check(5) and check("ab") and check(["a", "b"]) and check(True) and check(None)
    assert not check(2) and not check("abc") and not check(["a", "a"])
    assert not check(Decimal(5)) and not check(5.0)  # jsonschema's verdict there is its own: ask it
    assert not check([1, 2])  # uniqueness of non-strings: ask jsonschema


@pytest.mark.parametrize("pattern", ["^[A-Z]+$", "^\\d+$(?!\\n)"])
def test_a_pattern_not_anchored_at_the_true_end_or_with_unicode_digits_is_refused(pattern):
    from rules.engine.query_fastcheck import UnsupportedSchema, compile_check
    with pytest.raises(UnsupportedSchema):
        compile_check({"type": "string", "pattern": pattern})
