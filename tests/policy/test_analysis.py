"""Static analysis in ``dacp validate`` (issue 16, item 8): each finding at file:line; ``--strict`` (CI)
makes them errors. The shipped bundle has none."""

from __future__ import annotations

import dataclasses
import shutil
from datetime import date

import pytest

from rules.cli.run import main
from rules.policy.analysis import analyse, phases_contiguous
from rules.policy.loader import load_bundle, load_bundle_from_sources
from tests.support import ROOT
from tests.support.bundles import shipped_sources


def _edited(file: str, old: str, new: str):
    s = shipped_sources()
    assert old in s[file], old
    s[file] = s[file].replace(old, new, 1)
    return load_bundle_from_sources(s)


def test_the_shipped_bundle_has_no_finding():
    assert analyse(load_bundle(ROOT / "policies")) == []


def test_a_day_without_a_haircut_schedule_is_a_gap():
    b = _edited("haircuts.yaml", "    applies_to: {assets: [BTC]}\n",
                "    applies_to: {assets: [BTC]}\n    effective_from: 2026-06-01\n")
    (f,) = analyse(b)
    assert f.check == "schedule-gap" and f.src.file == "assets.yaml" and f.src.line is not None
    assert "BTC from 2025-12-08 until 2026-06-01" in f.message


def test_a_bucket_table_that_falls_with_maturity():
    b = _edited("haircuts.yaml", "{up_to: 1826, haircut: 0.03}", "{up_to: 1826, haircut: 0.01}")
    (f,) = analyse(b)
    assert (f.check, f.rule_id, f.src.file) == ("bucket-order", "haircut.tokenized-funds", "haircuts.yaml")
    assert "<= 1826 (1%) is below the bucket <= 1095 (2%)" in f.message


def test_a_schedule_that_can_total_above_100_percent():
    s = shipped_sources()
    s["haircuts.yaml"] = s["haircuts.yaml"].replace("        haircut: 0.05\n        when_share_above: 0.40",
                                                    "        haircut: 0.85\n        when_share_above: 0.40", 1)
    (f,) = analyse(load_bundle_from_sources(s))
    assert (f.check, f.rule_id) == ("total-above-100", "haircut.btc") and "totals 105%" in f.message


def test_a_rule_testing_a_fact_never_produced_for_its_assets():
    b = _edited("eligibility.yaml", "    applies_to: {classes: [tokenized_treasury_fund, tokenized_money_market_fund]}\n"
                "    check: {fact: fund.nav_age_business_days",
                "    applies_to: {classes: [tokenized_treasury_fund, tokenized_money_market_fund, digital_commodity]}\n"
                "    check: {fact: fund.nav_age_business_days")
    (f,) = analyse(b)
    assert (f.check, f.rule_id, f.src.file) == ("fact-not-produced", "fund.nav-fresh", "eligibility.yaml")
    assert "never produced for BTC, ETH" in f.message


def test_phases_with_a_gap_or_an_overlap():
    b = load_bundle(ROOT / "policies")
    first, second = b.phases
    gap = dataclasses.replace(b, phases=(first, dataclasses.replace(second, starts=date(2026, 4, 1))))
    assert [f.check for f in phases_contiguous(gap)] == ["phase-gap"]
    over = dataclasses.replace(b, phases=(first, dataclasses.replace(second, starts=date(2026, 1, 1))))
    assert [f.check for f in phases_contiguous(over)] == ["phase-overlap"]
    late = dataclasses.replace(b, phases=(dataclasses.replace(first, starts=date(2025, 12, 9)), second))
    assert "not on the programme's start 2025-12-08" in phases_contiguous(late)[0].message


@pytest.fixture
def gap_bundle(tmp_path):
    d = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", d, ignore=shutil.ignore_patterns("approvals", "tests"))
    p = d / "haircuts.yaml"
    p.write_text(p.read_text().replace("    applies_to: {assets: [BTC]}\n",
                                       "    applies_to: {assets: [BTC]}\n    effective_from: 2026-06-01\n", 1))
    return d


def test_validate_warns_and_strict_refuses(gap_bundle, capsys):
    assert main(["validate", str(gap_bundle)]) == 0
    out, err = capsys.readouterr()
    assert "valid" in out and "1 finding(s)" in out and "warning: assets.yaml:" in err and "[schedule-gap]" in err
    assert main(["validate", "--strict", str(gap_bundle)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "policy bundle is invalid: 1 problem" in err and "assets.yaml:" in err
