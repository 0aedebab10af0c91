"""``dacp export cdm`` (issue 16, item 10): the eligibility schedule as a FINOS CDM
EligibleCollateralSpecification, read back to the bundle's figures; what CDM cannot express is a note."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

import pytest

from rules.cli.run import main
from rules.lifecycle.backtest import policy_haircut
from rules.errors import InputError
from rules.lifecycle.cdm_export import check, export_cdm, schedule_of
from rules.policy.loader import load_bundle
from tests.support import ROOT

POLICIES = ROOT / "policies"
DAY = date(2026, 11, 20)


def test_the_export_reads_back_to_the_bundle_figures():
    bundle = load_bundle(POLICIES)
    doc = export_cdm(bundle, DAY)
    rows = schedule_of(json.loads(json.dumps(doc)))
    fixed = {a: h for a, up, h, _ in rows if up is None and a in ("BTC", "ETH", "USDC", "BUIDL")}
    assert fixed == {s: policy_haircut(bundle, s, DAY).haircut for s in ("BTC", "ETH", "USDC", "BUIDL")}
    ousg = [(up, h) for a, up, h, _ in rows if a == "OUSG"]  # a Treasury fund: the maturity table
    sched = next(h for h in bundle.haircuts if h.bucket_fact)
    assert ousg == [(b.up_to, b.haircut) for b in sched.buckets]
    assert {a for a, *_ in rows} == set(bundle.assets) and all(inc for *_, inc in rows)
    early = {a: inc for a, _, _, inc in schedule_of(export_cdm(bundle, date(2026, 1, 20)))}
    assert early["BUIDL"] is False and early["BTC"] is True  # phase 1: funds not yet eligible


def test_what_cdm_cannot_express_is_a_stated_note():
    notes = {n["rule"]: n for n in export_cdm(load_bundle(POLICIES), DAY)["notes"]}
    assert "highest accepting DCO" in notes["haircut.btc"]["note"] and notes["haircut.btc"]["where"] == "haircuts.yaml:11"
    assert "stricter own" in notes["haircut.btc.stricter_own"]["note"]
    assert "on-chain token restrictions" in notes["USDC.restrictions"]["note"]
    assert "par" in notes["USDC.valuation"]["note"]
    assert "haircut.btc.concentration" in notes and "custody.btc-confirmations" in notes


def test_cli_writes_the_file_whole_and_refuses_bad_input(tmp_path, capsys):
    out = tmp_path / "ecs.json"
    assert main(["export", "cdm", "--policies", str(POLICIES), "--as-of", "2026-11-20", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["as_of"] == "2026-11-20" and list(tmp_path.iterdir()) == [out]
    capsys.readouterr()
    assert main(["export", "cdm", "--policies", str(POLICIES), "--as-of", "2026-13-01"]) == 3
    assert "not a date" in capsys.readouterr().err
    assert main(["export", "cdm", "--policies", str(POLICIES), "--as-of", "2025-01-01"]) == 3
    assert "no programme phase" in capsys.readouterr().err
    assert main(["export", "cdm", "--policies", str(POLICIES), "--out", str(tmp_path / "no" / "x.json")]) == 3


def test_the_document_is_held_to_the_cdm_shape():
    doc = export_cdm(load_bundle(POLICIES), DAY)
    check(doc)
    for path, value in ((("treatment", "isIncluded"), "perhaps"), (("treatment", "valuationTreatment", "haircutPercentage"), "1.5"),
                        (("collateralCriteria", "AssetType", "assetType"), "DigitalAsset")):
        bad = json.loads(json.dumps(doc))
        node = bad["eligibleCollateralSpecification"]["criteria"][0]
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
        with pytest.raises(InputError, match="not a CDM eligible-collateral document"):
            schedule_of(bad)
    two = json.loads(json.dumps(doc))
    two["eligibleCollateralSpecification"]["criteria"][0]["collateralCriteria"]["AssetMaturity"] = {
        "maturityType": "RemainingMaturity", "maturityRange": {"upperBound": {"period": {"periodMultiplier": 1, "period": "D"},
                                                                              "inclusive": True}}}
    with pytest.raises(InputError):  # a CDM choice holds one option
        check(two)
