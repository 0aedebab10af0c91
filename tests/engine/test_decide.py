"""The public decision contract, on the shipped examples, for both evaluators."""

from __future__ import annotations

import copy
import json
from decimal import ROUND_DOWN, Decimal
from functools import lru_cache

import pytest

from rules.engine.decide import Engine
from rules.policy.loader import load_bundle, load_bundle_from_sources
from rules.engine.query import load_query_text, parse_query
from tests.support import ROOT

EXAMPLES = sorted((ROOT / "examples" / "queries").glob("*.json"))
EVALUATORS = ["durable_rules", "python"]
OUTCOMES = {"pass", "fail", "not_applicable", "applied"}
BUILT_IN_WITHOUT_LINE = {"bundle.in-force", "registry.asset-registered", "haircut.schedule"}


@lru_cache(maxsize=1)
def bundle():
    return load_bundle(ROOT / "policies")


@lru_cache(maxsize=None)
def engine(name: str) -> Engine:
    return Engine.for_bundle(bundle(), name)


def example(stem: str) -> dict:
    return json.loads((ROOT / "examples" / "queries" / f"{stem}.json").read_text())


def decide(doc: dict, evaluator: str = "durable_rules") -> dict:
    return engine(evaluator).decide(parse_query(copy.deepcopy(doc))).to_json()


def reason_of(d: dict, rule: str) -> dict:
    (r,) = [x for x in d["reasons"] if x["rule"] == rule]
    return r


def without_id(d: dict) -> dict:
    d = dict(d)
    d.pop("decision_id")
    return d


@pytest.fixture(params=EVALUATORS)
def evaluator(request):
    return request.param


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_examples(path, evaluator):
    d = engine(evaluator).decide(load_query_text(path.read_text(), path.name)).to_json()
    want = "-eligible" in path.stem and "-ineligible" not in path.stem
    assert d["eligible"] is want, d["failed_rules"]
    assert d["engine"] == evaluator
    assert d["policy"]["bundle"] == bundle().hash
    assert d["query_id"] == json.loads(path.read_text())["id"]
    if want:
        assert d["failed_rules"] == []
        assert Decimal(d["collateral_value_usd"]) > 0
    else:
        assert d["failed_rules"]
        assert d["collateral_value_usd"] in ("0", "0.00") and Decimal(d["counted_quantity"]) == 0
    expected_failures = {
        "btc-ineligible-confirmations": ["custody.btc-confirmations"],
        "buidl-ineligible-phase-1": ["programme.asset-in-phase"],
        "doge-ineligible-unknown-asset": ["registry.asset-registered"],
        "eth-ineligible-unadmitted-participant": ["programme.participant-admitted"],
        "ousg-ineligible-not-allowlisted": ["fund.holder-allowlisted"],
        "usdc-ineligible-stale-attestation": ["stablecoin.reserve-attestation-fresh"],
    }
    if path.stem in expected_failures:
        assert d["failed_rules"] == expected_failures[path.stem]


def test_examples_identical_across_evaluators():
    for path in EXAMPLES:
        q = load_query_text(path.read_text(), path.name)
        a = engine("durable_rules").decide(q, decision_id="x").to_json()
        b = engine("python").decide(q, decision_id="x").to_json()
        a.pop("engine"), b.pop("engine")
        assert a == b


# -- fail closed -----------------------------------------------------------------------------------
def _drop(doc: dict, path: str) -> dict:
    doc = copy.deepcopy(doc)
    node = doc
    parts = path.split(".")
    for p in parts[:-1]:
        node = node[p]
    del node[parts[-1]]
    return doc


@pytest.mark.parametrize("stem,path,rule", [
    ("btc-eligible", "custody.confirmations", "custody.btc-confirmations"),
    ("btc-eligible", "custody.custodian", "custody.approved-custodian"),
    ("btc-eligible", "custody.segregated", "custody.segregated"),
    ("btc-eligible", "custody.balance", "custody.balance-verified"),
    ("btc-eligible", "evidence.price_updated_at", "price.fresh"),
    ("eth-eligible", "custody.finality", "custody.ethereum-finalized"),
    ("usdc-eligible", "evidence.stablecoin.reserve_attestation_date", "stablecoin.reserve-attestation-fresh"),
    ("usdc-eligible", "evidence.stablecoin.issuer", "stablecoin.permitted-issuer"),
    ("usdc-eligible", "custody.token_paused", "custody.token-not-paused"),
    ("usdc-eligible", "custody.address_frozen", "custody.address-not-frozen"),
    ("buidl-eligible", "evidence.fund.nav_date", "fund.nav-fresh"),
    ("buidl-eligible", "evidence.fund.holder_allowlisted", "fund.holder-allowlisted"),
    ("ousg-eligible", "evidence.fund.redemption_days", "fund.redemption-prompt"),
])
def test_missing_evidence_fails_closed(stem, path, rule, evaluator):
    d = decide(_drop(example(stem), path), evaluator)
    assert d["eligible"] is False
    assert rule in d["failed_rules"]
    r = reason_of(d, rule)
    assert r["outcome"] == "fail" and r["observed"] == "missing"
    assert d["collateral_value_usd"] == "0"


@pytest.mark.parametrize("stem,section,rules", [
    ("btc-eligible", "custody", {"custody.approved-custodian", "custody.segregated", "custody.btc-confirmations",
                                 "custody.balance-verified"}),
    ("eth-eligible", "custody", {"custody.approved-custodian", "custody.segregated", "custody.ethereum-finalized",
                                 "custody.balance-verified"}),
    ("usdc-eligible", "evidence", {"price.fresh", "stablecoin.permitted-issuer", "stablecoin.reserve-attestation-fresh"}),
    ("ousg-eligible", "evidence", {"price.fresh", "fund.nav-fresh", "fund.holder-allowlisted", "fund.redemption-prompt"}),
])
def test_missing_whole_block_fails_closed(stem, section, rules, evaluator):
    d = decide(_drop(example(stem), section), evaluator)
    assert d["eligible"] is False
    assert rules <= set(d["failed_rules"])
    for rule in rules:
        assert reason_of(d, rule)["observed"] == "missing"


def test_missing_wam_fails_the_bucket_schedule(evaluator):
    d = decide(_drop(example("ousg-eligible"), "evidence.fund.wam_days"), evaluator)
    assert d["eligible"] is False and "haircut.tokenized-funds" in d["failed_rules"]
    assert reason_of(d, "haircut.tokenized-funds")["observed"] == {"fund.wam_days": "missing"}
    assert d["collateral_value_usd"] == "0"


def test_unknown_asset(evaluator):
    d = decide(example("doge-ineligible-unknown-asset"), evaluator)
    assert d["eligible"] is False
    assert d["failed_rules"] == ["registry.asset-registered"]
    r = reason_of(d, "registry.asset-registered")
    assert r["observed"] == "DOGE" and sorted(bundle().assets) == r["threshold"]["value"]
    assert d["collateral_value_usd"] == "0"


def test_price_exactly_60_minutes_old_passes_61_fails(evaluator):
    doc = example("btc-eligible")
    doc["evidence"]["price_updated_at"] = "2026-11-20T13:00:00Z"
    assert decide(doc, evaluator)["eligible"] is True
    doc["evidence"]["price_updated_at"] = "2026-11-20T12:59:59Z"  # 60 min 1 s: rounded up to 61
    d = decide(doc, evaluator)
    assert d["failed_rules"] == ["price.fresh"] and reason_of(d, "price.fresh")["observed"] == 61


# -- money -------------------------------------------------------------------------------------------
def test_collateral_is_rounded_down_to_the_cent(evaluator):
    d = decide(example("eth-eligible"), evaluator)
    # 250 x 3120.55 = 780137.50; x (1 - 0.25) = 585103.125 exactly: down to 585103.12
    assert d["market_value_usd"] == "780137.50"
    assert d["haircut"]["total"] == "0.25"
    assert d["value_after_haircut_usd"] == "585103.12"
    assert d["collateral_value_usd"] == "585103.12"
    d = decide(example("ousg-eligible"), evaluator)
    # 15000 x 112.4367 = 1686550.5; haircut 0.005 + 0.02 + 0.01 = 0.035; x 0.965 = 1627521.2325
    assert d["haircut"]["total"] == "0.035"
    assert d["collateral_value_usd"] == "1627521.23"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_collateral_formula(path, evaluator):
    d = engine(evaluator).decide(load_query_text(path.read_text(), path.name)).to_json()
    if not d["eligible"] or d["haircut"] is None:
        return
    exact = Decimal(d["quantity"]) * Decimal(d["price_usd"]) * (1 - Decimal(d["haircut"]["total"]))
    assert Decimal(d["excluded_by_limits_usd"]) == 0
    assert Decimal(d["collateral_value_usd"]) == exact.quantize(Decimal("0.01"), rounding=ROUND_DOWN)
    assert Decimal(d["collateral_value_usd"]) <= exact


def test_rounding_down_never_up(evaluator):
    doc = example("btc-eligible")
    doc["quantity"], doc["custody"]["balance"], doc["price_usd"] = "0.00000001", "1", "99999.99"
    d = decide(doc, evaluator)
    # 0.00000001 x 99999.99 x 0.80 = 0.000799999920: less than a cent
    assert d["eligible"] is True and d["collateral_value_usd"] == "0.00"


def test_haircut_total_never_exceeds_one(evaluator):
    sources = dict(bundle().sources)
    sources["haircuts.yaml"] = sources["haircuts.yaml"].replace("    floor: 0.20\n", "    floor: 0.99\n", 1)
    heavy = load_bundle_from_sources(sources)
    eng = Engine.for_bundle(heavy, evaluator)
    doc = example("btc-eligible")
    doc["portfolio"] = []  # BTC is 100% of the account: the 5% concentration add-on applies
    d = eng.decide(parse_query(doc)).to_json()
    assert Decimal(d["haircut"]["total"]) == 1
    assert d["haircut"]["base"] == "0.99"
    assert reason_of(d, "haircut.btc.concentration")["outcome"] == "applied"
    assert d["collateral_value_usd"] == "0.00"
    for path in EXAMPLES:
        d = engine(evaluator).decide(load_query_text(path.read_text(), path.name)).to_json()
        if d["haircut"]:
            assert 0 <= Decimal(d["haircut"]["total"]) <= 1


def test_binding_limit_reduces_value_and_quantity(evaluator):
    doc = example("btc-eligible")
    doc["quantity"] = doc["custody"]["balance"] = "50"
    doc["price_usd"] = "100000"
    doc["portfolio"] = [{"asset": "USDC", "collateral_value_usd": "1000000"}]
    d = decide(doc, evaluator)
    assert d["eligible"] is True
    # 5,000,000 market; BTC would be 80% of the account: +5% concentration, haircut 0.25 -> 3,750,000
    assert d["haircut"]["total"] == "0.25"
    assert d["value_after_haircut_usd"] == "3750000.00"
    # 50% share limit: x <= (0.5 x 1,000,000 - 0) / 0.5 = 1,000,000
    lim = reason_of(d, "limit.btc-share")
    assert lim["outcome"] == "applied" and lim["counted_usd"] == "1000000.00"
    assert d["collateral_value_usd"] == "1000000.00"
    assert d["excluded_by_limits_usd"] == "2750000.00"
    assert Decimal(d["excluded_by_limits_usd"]) == Decimal(d["value_after_haircut_usd"]) - Decimal(d["collateral_value_usd"])
    # 50 x 1,000,000 / 3,750,000 = 13.333333333...: down to BTC's 8 places
    assert d["counted_quantity"] == "13.33333333"
    assert Decimal(d["counted_quantity"]) < Decimal(d["quantity"])
    # not binding when the account is small: below min_total_usd the share limit does not bite
    doc["quantity"] = doc["custody"]["balance"] = "1"
    doc["portfolio"] = []
    small = decide(doc, evaluator)
    assert reason_of(small, "limit.btc-share")["outcome"] == "pass"
    assert small["excluded_by_limits_usd"] == "0.00" and small["counted_quantity"] == "1.00000000"


def test_account_cap_binds(evaluator):
    doc = example("eth-eligible")
    doc["quantity"] = doc["custody"]["balance"] = "100000"
    doc["price_usd"] = "3000"
    doc["portfolio"] = [{"asset": "USDC", "collateral_value_usd": "900000000"}, {"asset": "ETH", "collateral_value_usd": "5000000"}]
    d = decide(doc, evaluator)
    assert reason_of(d, "limit.eth-fcm-cap")["outcome"] == "applied"
    assert d["collateral_value_usd"] == "40000000.00"  # 45 million cap minus 5 million already held
    assert Decimal(d["excluded_by_limits_usd"]) == Decimal(d["value_after_haircut_usd"]) - Decimal("40000000.00")


# -- shape ---------------------------------------------------------------------------------------------
def _walk(x, path="$"):
    yield path, x
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from _walk(v, f"{path}[{i}]")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_decision_shape(path, evaluator):
    d = engine(evaluator).decide(load_query_text(path.read_text(), path.name)).to_json()
    for where, v in _walk(d):
        assert not isinstance(v, float), where
        assert not isinstance(v, Decimal), where  # money is decimal *strings*
    assert json.loads(json.dumps(d)) == d
    for r in d["reasons"]:
        assert r["outcome"] in OUTCOMES, r
        assert isinstance(r["rule"], str) and r["rule"]
        assert r["policy"] and r["policy"]["file"] in bundle().sources, r
        if r["policy"]["line"] is None:
            assert r["rule"] in BUILT_IN_WITHOUT_LINE, r
        else:
            assert isinstance(r["policy"]["line"], int) and r["policy"]["line"] > 0
    rules = [r["rule"] for r in d["reasons"]]
    assert len(rules) == len(set(rules)), "a rule appears once"
    assert d["failed_rules"] == [r["rule"] for r in d["reasons"] if r["outcome"] == "fail"]
    if d["asset"] in bundle().assets:
        assert set(bundle().rule_ids()) <= set(rules)
    for key in ("market_value_usd", "value_after_haircut_usd", "excluded_by_limits_usd", "collateral_value_usd",
                "counted_quantity"):
        if d.get(key) is not None:
            assert isinstance(d[key], str) and Decimal(d[key]) >= 0


def test_reason_lines_point_at_the_rule():
    d = decide(example("btc-eligible"))
    for r in d["reasons"]:
        line = r["policy"]["line"]
        if line is None or r["rule"] in BUILT_IN_WITHOUT_LINE:
            continue
        text = bundle().sources[r["policy"]["file"]].splitlines()[line - 1]
        assert r["rule"] in text, (r["rule"], text)


def test_determinism(evaluator):
    for path in EXAMPLES:
        q = load_query_text(path.read_text(), path.name)
        a, b = engine(evaluator).decide(q).to_json(), engine(evaluator).decide(q).to_json()
        assert a["decision_id"] != b["decision_id"]
        assert without_id(a) == without_id(b)
        q2 = load_query_text(path.read_text(), path.name)  # parsed again
        assert without_id(engine(evaluator).decide(q2).to_json()) == without_id(a)


def test_same_hash_same_decision():
    sources = dict(bundle().sources)
    sources["haircuts.yaml"] = sources["haircuts.yaml"].replace("    floor: 0.20\n", "    floor: 0.2\n", 1)
    other = load_bundle_from_sources(sources)
    assert other.hash == bundle().hash
    q = parse_query(example("btc-eligible"))
    a = Engine.for_bundle(other, "python").decide(q, decision_id="x").to_json()
    b = engine("python").decide(q, decision_id="x").to_json()
    assert a == b
