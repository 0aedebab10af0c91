"""rules.policy.yaml_reader: exact, safe YAML with a line:column for every value."""

from __future__ import annotations

import sys
from decimal import Decimal

import pytest

from rules.policy.yaml_reader import load_yaml_text


def load(text: str):
    doc, problems = load_yaml_text(text, "f.yaml")
    return doc, problems


def data(text: str):
    doc, problems = load(text)
    assert problems == [], [p.render() for p in problems]
    return doc.data


def test_numbers_are_exact_decimals_and_ints():
    d = data("a: 0.1\nb: 0.20\nc: 7\nd: 1_000\ne: -3\nf: 1e-3\ng: 0.000000000000000001\n")
    assert d["a"] == Decimal("0.1") and type(d["a"]) is Decimal
    assert str(d["b"]) == "0.20"  # the text is kept as written, no binary float in between
    assert d["c"] == 7 and type(d["c"]) is int
    assert d["d"] == 1000 and d["e"] == -3
    assert d["f"] == Decimal("0.001")
    assert d["g"] == Decimal("1E-18")
    assert not any(isinstance(v, float) for v in d.values())


def test_core_schema_scalars():
    d = data("a: true\nb: False\nc: ~\nd: null\ne:\nf: hello world\ng: 2026-01-05\nh: '0.5'\ni: \"7\"\n")
    assert d["a"] is True and d["b"] is False
    assert d["c"] is None and d["d"] is None and d["e"] is None
    assert d["f"] == "hello world"
    assert d["g"] == "2026-01-05"  # dates stay text; the schema checks their form
    assert d["h"] == "0.5" and d["i"] == "7"  # quoted values are always strings


@pytest.mark.parametrize("word", ["yes", "no", "NO", "No", "on", "off", "Y", "n", "ON"])
def test_yaml11_booleans_stay_strings(word):
    assert data(f"country: {word}\n")["country"] == word


def test_duplicate_keys_name_both_lines():
    doc, problems = load("kind: assets\nname: a\nother: 1\nname: b\n")
    assert len(problems) == 1
    p = problems[0]
    assert (p.file, p.line, p.column) == ("f.yaml", 4, 1)  # the second occurrence
    assert "duplicate key 'name'" in p.message and "line 2" in p.message  # ...and the first
    assert p.render().startswith("f.yaml:4:1:")


def test_nested_duplicate_keys_in_flow_mapping():
    _, problems = load("items:\n  - {id: x, id: y}\n")
    assert len(problems) == 1 and problems[0].line == 2 and "line 2" in problems[0].message


@pytest.mark.parametrize("text", [
    "a: !!python/object:os.system {}\n",
    "a: !!python/object/apply:os.system ['touch {marker}']\n",
    "a: !!python/object/new:os.system ['touch {marker}']\n",
    "a: !!python/name:os.system\n",
    "!!python/object/apply:os.system ['touch {marker}']\n",
    "a: !custom 3\n",
    "a: !!binary aGVsbG8=\n",
    "a: !!set {x, y}\n",
    "a: !!omap [x: 1]\n",
])
def test_tags_are_refused_and_never_executed(text, tmp_path):
    marker = tmp_path / "executed"
    doc, problems = load(text.replace("{marker}", str(marker)))
    assert problems, "a non-core tag must be refused"
    assert any("is not allowed" in p.message for p in problems)
    assert all(p.line is not None and p.column is not None for p in problems)
    assert not marker.exists()


@pytest.mark.parametrize("value", [".nan", ".NaN", ".NAN", ".inf", "-.inf", "+.Inf", ".INF"])
def test_nan_and_infinity_refused(value):
    doc, problems = load(f"haircut: {value}\n")
    assert len(problems) == 1
    assert problems[0].line == 1 and problems[0].column == 10
    assert "NaN or infinity" in problems[0].message


@pytest.mark.parametrize("text,line,col", [
    ("a: [1, 2\nb: 3\n", None, None),
    ("a: 1\n  b: 2\n", 2, None),
    ("a:\n  - x\n - y\n", 3, None),
    ("a: 'unterminated\n", None, None),
    ("a: {b: 1\n", None, None),
    ("\tkey: 1\n", 1, None),
])
def test_malformed_yaml_located(text, line, col):
    doc, problems = load(text)
    assert doc is None and len(problems) == 1
    p = problems[0]
    assert p.line is not None and p.column is not None
    if line is not None:
        assert p.line == line
    assert "not valid YAML" in p.message
    assert p.render().startswith(f"f.yaml:{p.line}:{p.column}:")


def test_empty_and_multi_document_files():
    assert load("")[1][0].message == "the file is empty"
    assert load("# only a comment\n")[1][0].message == "the file is empty"
    assert "several YAML documents" in load("a: 1\n---\nb: 2\n")[1][0].message


def test_merge_keys_refused():
    _, problems = load("base: &b {x: 1}\nother:\n  <<: *b\n  y: 2\n")
    assert any("merge keys" in p.message for p in problems)


def test_alias_bomb_refused_quickly():
    # "billion laughs": without a guard, converting this walks 10**9 nodes.
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev, cur = chr(96 + i), chr(97 + i)
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 10) + "]")
    doc, problems = load("\n".join(lines) + "\n")
    assert problems and all("alias" in p.message for p in problems)


def test_self_referential_alias_refused():
    _, problems = load("a: &a [*a]\n")
    assert problems and "alias" in problems[0].message


def test_deep_nesting_is_a_problem_not_a_crash():
    old = sys.getrecursionlimit()  # web3, if imported by another test, raises it to 100000
    sys.setrecursionlimit(1000)
    try:
        _deep()
    finally:
        sys.setrecursionlimit(old)


def _deep():
    _, problems = load("a: " + "[" * 5000 + "]" * 5000 + "\n")
    assert problems and "nested too deeply" in problems[0].message


def test_positions_recorded_for_every_path():
    doc = data("kind: x\nlist:\n  - id: one\n    value: 3\n  - id: two\n")
    assert doc["list"][1]["id"] == "two"
    d, _ = load("kind: x\nlist:\n  - id: one\n    value: 3\n  - id: two\n")
    assert d.where(("list", 0, "value")) == (4, 12)
    assert d.where(("list", 1, "id")) == (5, 9)
    assert d.where(("list", 1, "nonexistent", 3)) == d.where(("list", 1))


def test_explicit_str_tag_is_respected():
    assert data("a: !!str 123\n")["a"] == "123"
