"""rules.policy.loader: loading a bundle, every problem located, content hash."""

from __future__ import annotations

import shutil
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

import pytest

from rules.errors import PolicyError
from rules.policy.loader import load_bundle, load_bundle_from_sources, read_policy_dir
from tests.support import ROOT

POLICIES = ROOT / "policies"


@lru_cache(maxsize=1)
def shipped():
    return load_bundle(POLICIES)


def copy_bundle(tmp_path: Path) -> Path:
    d = tmp_path / "policies"
    d.mkdir()
    for p in POLICIES.glob("*.yaml"):
        shutil.copy(p, d / p.name)
    return d


def edit(d: Path, file: str, old: str, new: str, count: int = 1) -> None:
    p = d / file
    text = p.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {file}"
    p.write_text(text.replace(old, new, count), encoding="utf-8")


def line_of(d: Path, file: str, needle: str, nth: int = 0) -> int:
    lines = [i + 1 for i, line in enumerate((d / file).read_text().splitlines()) if needle in line]
    return lines[nth]


def problems_of(d: Path):
    with pytest.raises(PolicyError) as exc:
        load_bundle(d)
    return exc.value.problems


def only(problems, file=None):
    return [p for p in problems if file is None or p.file == file]


# -- the shipped bundle ------------------------------------------------------------------------
def test_shipped_bundle_loads():
    b = shipped()
    assert len(b.hash) == 64
    assert set(b.assets) == {"BTC", "ETH", "USDC", "BUIDL", "OUSG"}
    assert len(b.rule_ids()) == len(set(b.rule_ids()))
    h = {x.id: x for x in b.haircuts}
    assert h["haircut.btc"].floor == Decimal("0.20") and type(h["haircut.btc"].floor) is Decimal
    assert h["haircut.tokenized-funds"].buckets[1].haircut == Decimal("0.005")
    for c in b.criteria:
        assert c.src.file == "eligibility.yaml" and c.src.line


def test_tests_folder_is_not_part_of_bundle(tmp_path):
    d = copy_bundle(tmp_path)
    (d / "tests").mkdir()
    (d / "tests" / "x.yaml").write_text("kind: tests\ntests: []\n")
    assert load_bundle(d).hash == shipped().hash


# -- YAML level problems, through the loader -----------------------------------------------------
def test_duplicate_key_in_policy_names_both_lines(tmp_path):
    d = copy_bundle(tmp_path)
    edit(d, "haircuts.yaml", "      floor: 0.20\n", "      floor: 0.20\n      floor: 0.25\n")
    (p,) = problems_of(d)
    first = line_of(d, "haircuts.yaml", "floor: 0.20")
    assert (p.file, p.line) == ("haircuts.yaml", first + 1)
    assert f"line {first}" in p.message


def test_python_tag_in_policy_refused_not_executed(tmp_path):
    d = copy_bundle(tmp_path)
    marker = tmp_path / "pwned"
    edit(d, "assets.yaml", "    name: Bitcoin\n", f"    name: !!python/object/apply:os.system ['touch {marker}']\n")
    probs = problems_of(d)
    assert any("is not allowed" in p.message and p.file == "assets.yaml" for p in probs)
    assert not marker.exists()


def test_nan_haircut_refused(tmp_path):
    d = copy_bundle(tmp_path)
    edit(d, "haircuts.yaml", "    floor: 0.20", "    floor: .nan")
    probs = problems_of(d)
    assert any("NaN" in p.message and p.line == line_of(d, "haircuts.yaml", "floor: .nan") for p in probs)


def test_malformed_policy_file_located(tmp_path):
    d = copy_bundle(tmp_path)
    edit(d, "limits.yaml", "    scope: asset\n", "    scope: [asset\n")
    probs = problems_of(d)
    assert len(probs) == 1
    assert probs[0].file == "limits.yaml" and probs[0].line and probs[0].column
    assert "not valid YAML" in probs[0].message


# -- schema problems ------------------------------------------------------------------------------
def test_unknown_key_at_its_line_with_rule_id(tmp_path):
    d = copy_bundle(tmp_path)
    edit(d, "haircuts.yaml", "        haircut: 0.05\n        when_share_above: 0.40",
         "        haircutt: 0.05\n        when_share_above: 0.40")
    probs = problems_of(d)
    unknown = [p for p in probs if "unknown key 'haircutt'" in p.message]
    assert len(unknown) == 1
    p = unknown[0]
    assert p.file == "haircuts.yaml" and p.line == line_of(d, "haircuts.yaml", "haircutt:") and p.column
    assert p.rule_id == "haircut.btc.concentration"
    assert "did you mean 'haircut'" in p.message
    assert "[rule haircut.btc.concentration]" in p.render()
    # the now missing 'haircut' is reported too
    assert any("'haircut' is missing" in q.message for q in probs)


def test_several_problems_reported_at_once(tmp_path):
    d = copy_bundle(tmp_path)
    edit(d, "limits.yaml", "    max_share: 0.50", "    max_shar: 0.50")
    edit(d, "eligibility.yaml", "at_least: 6", "at_least: six")
    edit(d, "assets.yaml", "    decimals: 8", "    decimals: eight")
    edit(d, "programme.yaml", "months: 3", "months: -3")
    probs = problems_of(d)
    files = {p.file for p in probs}
    assert files == {"limits.yaml", "eligibility.yaml", "assets.yaml", "programme.yaml"}
    msgs = " | ".join(p.message for p in probs)
    assert "expected a whole number, found 'six'" in msgs
    assert "expected a whole number, found 'eight'" in msgs
    assert "unknown key 'max_shar'" in msgs
    assert "-3 is too small" in msgs
    # the rendering lists every problem
    with pytest.raises(PolicyError) as exc:
        load_bundle(d)
    assert f"{len(probs)} problems" in str(exc.value)


def test_type_error_wording_and_location(tmp_path):
    d = copy_bundle(tmp_path)
    edit(d, "eligibility.yaml", "at_least: 6", "at_least: six")
    (p,) = problems_of(d)
    assert p.message == "expected a whole number, found 'six'"
    assert p.file == "eligibility.yaml" and p.line == line_of(d, "eligibility.yaml", "at_least: six")
    assert p.rule_id == "custody.btc-confirmations"


def test_float_where_whole_number_needed(tmp_path):
    d = copy_bundle(tmp_path)
    edit(d, "eligibility.yaml", "at_least: 6", "at_least: 6.5")
    (p,) = problems_of(d)
    assert "expected a whole number, found 6.5" in p.message


def test_fraction_out_of_range(tmp_path):
    d = copy_bundle(tmp_path)
    edit(d, "haircuts.yaml", "floor: 0.20", "floor: 1.20")
    (p,) = problems_of(d)
    assert "too large" in p.message and p.rule_id == "haircut.btc"


# -- cross-reference problems ------------------------------------------------------------------
def test_operator_does_not_fit_fact_type(tmp_path):
    d = copy_bundle(tmp_path)
    edit(d, "eligibility.yaml", "check: {fact: custody.segregated, equals: true}",
         "check: {fact: custody.segregated, at_least: 1}")
    (p,) = problems_of(d)
    assert p.rule_id == "custody.segregated"
    assert "at_least compares numbers" in p.message and "true or false" in p.message
    assert p.line == line_of(d, "eligibility.yaml", "fact: custody.segregated, at_least")


def test_equals_value_of_wrong_type(tmp_path):
    d = copy_bundle(tmp_path)
    edit(d, "eligibility.yaml", "check: {fact: custody.segregated, equals: true}",
         "check: {fact: custody.segregated, equals: 'true'}")
    (p,) = problems_of(d)
    assert p.rule_id == "custody.segregated" and "cannot equal 'true'" in p.message


def test_one_of_on_a_number_fact(tmp_path):
    d = copy_bundle(tmp_path)
    edit(d, "eligibility.yaml", "check: {fact: price.age_minutes, at_most: 60}",
         "check: {fact: price.age_minutes, one_of: [a, b]}")
    (p,) = problems_of(d)
    assert p.rule_id == "price.fresh" and "one_of lists words" in p.message


def test_unknown_asset_in_applies_to(tmp_path):
    d = copy_bundle(tmp_path)
    edit(d, "eligibility.yaml", "applies_to: {classes: [payment_stablecoin]}", "applies_to: {assets: [USDT]}")
    probs = problems_of(d)
    assert len(probs) == 1
    p = probs[0]
    assert p.file == "eligibility.yaml" and p.rule_id == "custody.token-not-paused"
    assert "'USDT' is not in the asset registry" in p.message
    assert p.line == line_of(d, "eligibility.yaml", "[USDT]")


def test_duplicate_rule_ids_across_files(tmp_path):
    d = copy_bundle(tmp_path)
    edit(d, "limits.yaml", "  - id: limit.btc-share", "  - id: custody.segregated")
    probs = problems_of(d)
    dup = [p for p in probs if "already used" in p.message]
    assert len(dup) == 1
    p = dup[0]
    assert p.file == "limits.yaml" and p.rule_id == "custody.segregated"
    assert f"eligibility.yaml:{line_of(d, 'eligibility.yaml', 'id: custody.segregated')}" in p.message


def test_duplicate_rule_ids_across_two_eligibility_files(tmp_path):
    d = copy_bundle(tmp_path)
    (d / "more.yaml").write_text(
        "kind: eligibility\ncriteria:\n  - id: price.fresh\n    description: Another price rule.\n"
        "    rationale: Testing duplicates.\n    check: {fact: price.age_minutes, at_most: 30}\n")
    (p,) = problems_of(d)
    assert p.file == "more.yaml" and p.line == 3 and "already used at eligibility.yaml:" in p.message


@pytest.mark.parametrize("reserved", ["bundle.in-force", "registry.asset-registered", "haircut.schedule",
                                      "custody.onchain-verification"])
def test_the_engines_own_rule_ids_are_reserved(tmp_path, reserved):
    """A decision's trace names each rule once: a bundle rule cannot take the id of an engine rule."""
    d = copy_bundle(tmp_path)
    edit(d, "eligibility.yaml", "  - id: price.fresh", f"  - id: {reserved}")
    (p,) = problems_of(d)
    assert p.file == "eligibility.yaml" and p.rule_id == reserved and "is reserved for the engine's own rule" in p.message


def test_effective_to_before_effective_from(tmp_path):
    d = copy_bundle(tmp_path)
    edit(d, "eligibility.yaml", "    check: {fact: price.age_minutes, at_most: 60}",
         "    check: {fact: price.age_minutes, at_most: 60}\n    effective_from: 2026-06-01\n    effective_to: 2026-05-01")
    (p,) = problems_of(d)
    assert p.rule_id == "price.fresh" and p.line == line_of(d, "eligibility.yaml", "effective_to: 2026-05-01")
    assert "effective_to (2026-05-01) must be after effective_from (2026-06-01)" in p.message


def test_impossible_calendar_date(tmp_path):
    d = copy_bundle(tmp_path)
    edit(d, "eligibility.yaml", "    check: {fact: price.age_minutes, at_most: 60}",
         "    check: {fact: price.age_minutes, at_most: 60}\n    effective_from: 2026-02-30")
    (p,) = problems_of(d)
    assert "'2026-02-30' is not a real calendar date" in p.message and p.rule_id == "price.fresh"


def test_overlapping_haircut_schedules(tmp_path):
    d = copy_bundle(tmp_path)
    edit(d, "haircuts.yaml", "applies_to: {assets: [ETH]}", "applies_to: {assets: [ETH, BTC]}")
    probs = problems_of(d)
    assert len(probs) == 1
    p = probs[0]
    assert p.file == "haircuts.yaml" and p.rule_id == "haircut.eth"
    assert "haircut.btc" in p.message and "BTC" in p.message and "overlap" in p.message
    assert p.line == line_of(d, "haircuts.yaml", "  - id: haircut.eth")


def test_consecutive_haircut_schedules_do_not_overlap(tmp_path):
    d = copy_bundle(tmp_path)
    edit(d, "haircuts.yaml", "applies_to: {assets: [ETH]}", "applies_to: {assets: [ETH, BTC]}\n    effective_to: 2026-01-01")
    edit(d, "haircuts.yaml", "applies_to: {assets: [BTC]}", "applies_to: {assets: [BTC]}\n    effective_from: 2026-01-01")
    # ETH now has no schedule from 2026 on: that is allowed by the loader; BTC is covered twice, never together
    b = load_bundle(d)
    assert {h.id for h in b.haircuts if h.applies.matches(b.assets["BTC"])} == {"haircut.btc", "haircut.eth"}


def test_asset_without_haircut_schedule(tmp_path):
    d = copy_bundle(tmp_path)
    edit(d, "haircuts.yaml", "applies_to: {assets: [ETH]}", "applies_to: {assets: [BTC]}\n    effective_to: 2025-01-01")
    probs = problems_of(d)
    eth = [p for p in probs if "no haircut schedule applies to ETH" in p.message]
    assert len(eth) == 1
    assert eth[0].file == "assets.yaml" and eth[0].line == line_of(d, "assets.yaml", "- symbol: ETH")


@pytest.mark.parametrize("missing", ["eligibility.yaml", "haircuts.yaml", "limits.yaml", "programme.yaml", "assets.yaml"])
def test_missing_kinds(tmp_path, missing):
    d = copy_bundle(tmp_path)
    (d / missing).unlink()
    probs = problems_of(d)
    kind = missing.removesuffix(".yaml")
    assert any(f"kind {kind!r}" in p.message for p in probs)


def test_two_programme_files(tmp_path):
    d = copy_bundle(tmp_path)
    shutil.copy(d / "programme.yaml", d / "programme2.yaml")
    probs = problems_of(d)
    assert any("exactly one file of kind 'programme'" in p.message and "programme2.yaml" in p.message for p in probs)


def test_bad_eip55_checksum(tmp_path):
    d = copy_bundle(tmp_path)
    # flip the case of one letter of USDC's contract
    edit(d, "assets.yaml", "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48", "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eb48")
    (p,) = problems_of(d)
    assert p.file == "assets.yaml" and "not a valid EIP-55" in p.message
    assert p.line == line_of(d, "assets.yaml", "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eb48")


def test_lower_case_contract_accepted(tmp_path):
    d = copy_bundle(tmp_path)
    edit(d, "assets.yaml", "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48", "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48")
    load_bundle(d)


def test_contract_on_bitcoin_and_second_native_coin(tmp_path):
    d = copy_bundle(tmp_path)
    edit(d, "assets.yaml", "    network: main\n", "    network: main\n    contract: \"0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48\"\n")
    edit(d, "assets.yaml", "    contract: \"0x1B19C19393e2d034D8Ff31ff34c81252FcBbee92\"\n", "")
    probs = problems_of(d)
    msgs = " | ".join(p.message for p in probs)
    assert "Bitcoin assets have no contract address" in msgs
    assert "already the native coin of ethereum" in msgs


def test_policy_tests_file_beside_policies_refused(tmp_path):
    d = copy_bundle(tmp_path)
    (d / "t.yaml").write_text("kind: tests\ntests:\n  - name: abc\n    query: {}\n    expect: {eligible: true}\n")
    (p,) = problems_of(d)
    assert p.file == "t.yaml" and "tests/ folder" in p.message


def test_not_a_directory_and_empty_directory(tmp_path):
    with pytest.raises(PolicyError):
        read_policy_dir(tmp_path / "nope")
    with pytest.raises(PolicyError):
        read_policy_dir(tmp_path)


def test_non_utf8_file(tmp_path):
    d = copy_bundle(tmp_path)
    (d / "limits.yaml").write_bytes(b"kind: limits\n\xff\xfe\n")
    (p,) = problems_of(d)
    assert p.file == "limits.yaml" and "not UTF-8" in p.message


# -- content hash ----------------------------------------------------------------------------------
def test_hash_stable_under_whitespace_comments_and_key_order(tmp_path):
    d = copy_bundle(tmp_path)
    edit(d, "limits.yaml", "kind: limits\n", "\n\n# a new comment\nkind:    limits   # trailing comment\n")
    # key order inside a rule, and flow vs block style
    edit(d, "limits.yaml",
         "    scope: asset\n    applies_to: {assets: [BTC]}\n    max_share: 0.50\n",
         "    max_share: 0.50\n    applies_to:\n      assets:\n        - BTC\n    scope: asset\n")
    edit(d, "haircuts.yaml", "{id: haircut.usdc.fcm-policy, kind: own, haircut: 0.02, source: FCM risk policy (capital charge parity)}",
         "{source: FCM risk policy (capital charge parity),   haircut: 0.02, kind: own, id: haircut.usdc.fcm-policy}")
    assert (d / "limits.yaml").read_text() != (POLICIES / "limits.yaml").read_text()
    assert load_bundle(d).hash == shipped().hash


@pytest.mark.parametrize("file,old,new", [
    ("haircuts.yaml", "haircut: 0.02, source", "haircut: 0.020, source"),
    ("haircuts.yaml", "floor: 0.20", "floor: 0.200"),
    ("limits.yaml", "max_share: 0.50", "max_share: 5e-1"),
    ("haircuts.yaml", "{up_to: 90, haircut: 0.00}", "{up_to: 90, haircut: 0}"),
    ("limits.yaml", "max_value_usd: 100000000", "max_value_usd: 100000000.00"),
])
def test_same_number_same_hash(tmp_path, file, old, new):
    d = copy_bundle(tmp_path)
    edit(d, file, old, new)
    assert load_bundle(d).hash == shipped().hash


@pytest.mark.parametrize("file,old,new", [
    ("haircuts.yaml", "haircut: 0.02, source", "haircut: 0.021, source"),
    ("haircuts.yaml", "floor: 0.20", "floor: 0.2000001"),
    ("eligibility.yaml", "at_least: 6", "at_least: 7"),
    ("eligibility.yaml", "must be at most 60 minutes old", "must be at most 60 minutes old."),
    ("programme.yaml", "version: \"2026.11.1\"", "version: \"2026.11.2\""),
    ("assets.yaml", "    decimals: 8", "    decimals: 9"),
    ("limits.yaml", "applies_to: {assets: [BTC]}", "applies_to: {assets: [BTC, ETH]}"),
])
def test_any_real_change_changes_hash(tmp_path, file, old, new):
    d = copy_bundle(tmp_path)
    edit(d, file, old, new)
    assert load_bundle(d).hash != shipped().hash


def test_renaming_a_file_changes_hash(tmp_path):
    d = copy_bundle(tmp_path)
    (d / "limits.yaml").rename(d / "limits2.yaml")
    assert load_bundle(d).hash != shipped().hash


def test_bundle_from_sources_equals_bundle_from_dir():
    b = shipped()
    again = load_bundle_from_sources(b.sources)
    assert again.hash == b.hash and again.rule_ids() == b.rule_ids()

