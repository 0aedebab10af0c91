"""The query contract (rules/schema/query.schema.json, rules.engine.query): every bad input is an InputError
that names the field; nothing else ever escapes."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from datetime import timezone
from decimal import Decimal
from functools import lru_cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rules.engine.decide import Engine
from rules.errors import InputError
from rules.policy.loader import load_bundle
from rules.engine.query import load_query_text, parse_query
from tests.support import ROOT

EXAMPLES = ROOT / "examples" / "queries"
BASE = json.loads((EXAMPLES / "btc-eligible.json").read_text())
USDC = json.loads((EXAMPLES / "usdc-eligible.json").read_text())
BUIDL = json.loads((EXAMPLES / "buidl-eligible.json").read_text())


@lru_cache(maxsize=1)
def engine():
    return Engine.for_bundle(load_bundle(ROOT / "policies"), "python")


def q(doc) -> str:
    return json.dumps(doc)


def with_(base=BASE, **changes):
    doc = copy.deepcopy(base)
    for path, value in changes.items():
        node = doc
        parts = path.split("__")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        if value is ...:
            del node[parts[-1]]
        else:
            node[parts[-1]] = value
    return doc


def refused(text: str, *names: str) -> InputError:
    with pytest.raises(InputError) as exc:
        load_query_text(text, "query.json")
    msg = str(exc.value)
    for n in names:
        assert n in msg, f"{n!r} not named in {msg!r}"
    return exc.value


def test_examples_parse():
    for p in sorted(EXAMPLES.glob("*.json")):
        query = load_query_text(p.read_text(), p.name)
        assert isinstance(query.quantity, Decimal) and isinstance(query.price_usd, Decimal)
        assert query.as_of.tzinfo is not None and query.as_of.utcoffset().total_seconds() == 0


def test_values_are_exact():
    query = load_query_text(q(with_(quantity="0.10000001", price_usd="91250.123456789012345678")), "x")
    assert query.quantity == Decimal("0.10000001")
    assert str(query.price_usd) == "91250.123456789012345678"


def test_yaml_query_accepted_and_exact():
    text = "\n".join([
        "account: ACC-1", "participant: FCM-ALPHA", "asset: BTC", "quantity: '1.5'", "price_usd: '100.10'",
        "as_of: 2026-11-20T14:00:00Z",
    ])
    query = load_query_text(text, "q.yaml")
    assert query.quantity == Decimal("1.5") and query.as_of.year == 2026


@pytest.mark.parametrize("text", ["", "{", "{'a': 1}", "[1, 2", "{\"a\": 1,}", "nul\x00l", "{\"a\": tru}"])
def test_bad_json(text):
    e = refused(text)
    assert e.where == "query.json" or "query.json" in str(e)


@pytest.mark.parametrize("const", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity(const):
    text = q(BASE).replace('"quantity": "12.5"', f'"quantity": {const}')
    assert const in text
    refused(text, "query.json")


def test_duplicate_keys():
    text = q(BASE).replace('"asset": "BTC"', '"asset": "BTC", "asset": "ETH"')
    refused(text, "duplicate key 'asset'")


def test_nested_duplicate_keys():
    text = q(BASE).replace('"segregated": true', '"segregated": true, "segregated": false')
    refused(text, "duplicate key 'segregated'")


@pytest.mark.parametrize("path,key", [("", "haircut"), ("custody__", "custodain"), ("evidence__", "nav_date"),
                                      ("evidence__fund__", "nav")])
def test_unknown_keys(path, key):
    doc = with_(**{path + key: "x"})
    refused(q(doc), f"unknown key {key!r}")


def test_unknown_key_suggests_the_close_one():
    refused(q(with_(custody__custodain="anchorage")), "did you mean 'custodian'")


@pytest.mark.parametrize("field,value", [
    ("quantity", 12.5), ("quantity", 12), ("price_usd", 91250.0), ("custody__balance", 12.5),
])
def test_json_numbers_refused_where_decimal_strings_required(field, value):
    e = refused(q(with_(**{field: value})), field.split("__")[-1], "decimal string")
    assert isinstance(e, InputError)


def test_portfolio_value_as_number_refused():
    doc = with_()
    doc["portfolio"][0]["collateral_value_usd"] = 2500000
    refused(q(doc), "portfolio.0.collateral_value_usd", "decimal string")


@pytest.mark.parametrize("value,words", [
    ("-1", "not in the expected form"), ("0", "greater than zero"), ("0.000", "greater than zero"),
    ("1000000000001", "absurdly large"), ("999999999999999999", "absurdly large"),
    ("1e5", "not in the expected form"), ("1,5", "not in the expected form"), ("", "not in the expected form"),
    (" 1", "not in the expected form"), ("1.0000000000000000001", "not in the expected form"),
])
def test_bad_quantities(value, words):
    refused(q(with_(quantity=value)), "quantity", words)


def test_bad_price():
    refused(q(with_(price_usd="0")), "price_usd", "greater than zero")
    refused(q(with_(price_usd="1000000001")), "price_usd", "absurdly large")


def test_zero_balance_is_allowed():
    assert load_query_text(q(with_(custody__balance="0")), "x").custody["balance"] == 0


@pytest.mark.parametrize("field,value", [
    ("as_of", "2026-02-30T14:00:00Z"), ("as_of", "2026-13-01T00:00:00Z"), ("as_of", "2026-11-20T25:00:00Z"),
    ("evidence__price_updated_at", "2026-02-29T00:00:00Z"),
    ("as_of", "9999-12-31T23:59:59-05:00"), ("as_of", "0001-01-01T00:00:00+05:00"),
    ("evidence__price_updated_at", "0001-01-01T00:00:00+05:00"), ("as_of", "2026-11-20T14:00:00+99:00"),
])
def test_impossible_timestamps(field, value):
    refused(q(with_(**{field: value})), field.split("__")[-1], "not a real date")


@pytest.mark.parametrize("field,value", [
    ("evidence__stablecoin__reserve_attestation_date", "2026-02-30"),
    ("evidence__stablecoin__reserve_attestation_date", "2026-00-10"),
])
def test_impossible_dates(field, value):
    refused(q(with_(USDC, **{field: value})), "reserve_attestation_date", "not a real calendar date")


def test_impossible_nav_date():
    refused(q(with_(BUIDL, evidence__fund__nav_date="2026-02-30")), "nav_date", "not a real calendar date")


@pytest.mark.parametrize("value", ["2026-11-20T14:00:00", "2026-11-20 14:00:00Z", "2026-11-20", "20261120T140000Z",
                                   "2026-11-20T14:00:00z+01:00"])
def test_timestamp_without_zone_or_bad_form(value):
    refused(q(with_(as_of=value)), "as_of", "expected form")


def test_timestamp_with_offset_is_converted_to_utc():
    query = load_query_text(q(with_(as_of="2026-11-20T23:30:00-05:00")), "x")
    assert query.as_of.tzinfo == timezone.utc and query.as_of.hour == 4 and query.day.isoformat() == "2026-11-21"


def test_evidence_dated_after_as_of():
    refused(q(with_(evidence__price_updated_at="2026-11-20T14:00:01Z")), "price_updated_at", "after as_of")
    refused(q(with_(USDC, evidence__stablecoin__reserve_attestation_date="2026-11-21")), "reserve_attestation_date",
            "after as_of")
    refused(q(with_(BUIDL, evidence__fund__nav_date="2026-11-21")), "nav_date", "after as_of")


def test_evidence_at_as_of_is_fine():
    load_query_text(q(with_(evidence__price_updated_at="2026-11-20T14:00:00Z")), "x")


def test_missing_required_fields():
    for key in ("account", "participant", "asset", "quantity", "price_usd", "as_of"):
        refused(q(with_(**{key: ...})), f"'{key}' is missing")


def test_wrong_types():
    refused(q(with_(custody__segregated="yes")), "custody.segregated", "true or false")
    refused(q(with_(custody__confirmations="7")), "custody.confirmations", "whole number")
    refused(q(with_(custody__confirmations=-1)), "custody.confirmations", "too small")
    refused(q(with_(custody__finality="final")), "custody.finality")
    refused(q(with_(asset="BT C")), "asset")


def test_top_level_must_be_object():
    refused("[]", "JSON object")
    refused("- 1\n- 2\n", "JSON object")
    refused("just words", "JSON object")


def test_more_decimal_places_than_the_asset_has():
    query = load_query_text(q(with_(quantity="1.000000001", custody__balance="2")), "x")  # BTC has 8
    with pytest.raises(InputError) as exc:
        engine().decide(query)
    assert exc.value.where == "quantity" and "more decimal places than BTC has (8)" in str(exc.value)
    usdc = load_query_text(q(with_(USDC, quantity="1.1234567")), "x")  # USDC has 6
    with pytest.raises(InputError, match="USDC has \\(6\\)"):
        engine().decide(usdc)
    engine().decide(load_query_text(q(with_(USDC, quantity="1.123456")), "x"))


def test_unknown_asset_in_portfolio():
    doc = with_()
    doc["portfolio"][0]["asset"] = "DOGE"
    with pytest.raises(InputError) as exc:
        engine().decide(load_query_text(q(doc), "x"))
    assert exc.value.where == "portfolio[0].asset"


def test_too_large_document():
    refused(" " * 1_000_001 + "{}", "larger than")


@pytest.fixture
def default_recursion_limit():
    """web3 (via py_ecc) raises the process's recursion limit to 100000 on import; these tests need the default."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    yield
    sys.setrecursionlimit(old)


def test_deeply_nested_json_and_yaml(default_recursion_limit):
    refused('{"a": ' + "[" * 5000 + "]" * 5000 + "}", "nested too deeply")
    refused("a: " + "[" * 5000 + "]" * 5000, "nested too deeply")


def test_deep_nesting_after_web3_import_is_an_input_error():
    code = (
        "import web3, sys\n"
        "assert sys.getrecursionlimit() >= 100000\n"
        "from rules.engine.query import load_query_text\n"
        "from rules.errors import InputError\n"
        "try:\n"
        "    load_query_text('{\"a\": ' + '[' * 99000 + ']' * 99000 + '}', 'q')\n"
        "except InputError:\n"
        "    print('input error')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0 and "input error" in proc.stdout, (proc.returncode, proc.stderr[-500:])


def test_yaml_alias_bomb_query():
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev, cur = chr(96 + i), chr(97 + i)
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 10) + "]")
    refused("\n".join(lines), "alias")


def test_yaml_tag_in_query_refused(tmp_path):
    marker = tmp_path / "ran"
    refused(f"account: !!python/object/apply:os.system ['touch {marker}']\n", "not allowed")
    assert not marker.exists()


def test_parse_query_needs_a_dict():
    with pytest.raises(InputError):
        parse_query("a string")


# -- property: nothing but InputError ever escapes -------------------------------------------------
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
    st.sampled_from(["12.5", "0", "-1", "1e5", "2026-02-30", "2026-11-20T14:00:00Z", "9999-12-31T23:59:59-05:00",
                     "0001-01-01T00:00:00+01:00", "2026-11-20T14:00:00", "BTC", "FCM-ALPHA", "anchorage",
                     "99999999999999999999", "0.0000000000000000001", "finalized"]),
)
_json_ish = st.recursive(_scalars, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=5)), max_leaves=20)
_keys = st.sampled_from(["account", "participant", "asset", "quantity", "price_usd", "as_of", "custody", "evidence",
                         "portfolio", "id", "extra"])


@st.composite
def near_valid_queries(draw):
    """Start from a real example and replace, drop or add fields with arbitrary values."""
    doc = copy.deepcopy(draw(st.sampled_from([BASE, USDC, BUIDL])))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["replace", "drop", "nested"]))
        key = draw(_keys)
        if action == "replace":
            doc[key] = draw(_json_ish)
        elif action == "drop":
            doc.pop(key, None)
        else:
            section = draw(st.sampled_from(["custody", "evidence"]))
            sub = draw(st.sampled_from(["balance", "confirmations", "segregated", "price_updated_at", "fund",
                                        "stablecoin", "finality", "addresses"]))
            if isinstance(doc.get(section), dict):
                doc[section][sub] = draw(_json_ish)
    return doc


def _only_input_errors(text: str) -> None:
    try:
        load_query_text(text, "q")
    except InputError:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_json_ish, st.dictionaries(_keys, _json_ish, max_size=8)))
def test_arbitrary_json_documents_raise_only_input_error(doc):
    _only_input_errors(json.dumps(doc))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(near_valid_queries())
def test_near_valid_queries_raise_only_input_error_and_decide(doc):
    try:
        query = load_query_text(json.dumps(doc), "q")
    except InputError:
        return
    try:
        engine().decide(query)
    except InputError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_raises_only_input_error(text):
    _only_input_errors(text)


@settings(max_examples=150, deadline=None)
@given(near_valid_queries())
def test_yaml_form_of_near_valid_queries(doc):
    import yaml

    _only_input_errors(yaml.safe_dump(doc, default_flow_style=False, allow_unicode=True))
