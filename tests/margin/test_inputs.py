"""Requirements files (CSV and JSON), the margin policy's schema (file:line problems), the 15c3-1 table, call
rounding and deadlines on the DCOs' calendars, and bad input at the CLI: exit 3, no traceback, nothing written."""

from __future__ import annotations

import shutil
from datetime import date, datetime, timezone
from decimal import Decimal

import pytest

from rules.cli.run import main
from rules.errors import InputError, PolicyError
from rules.margin.calls import deadline, round_call
from rules.margin.inputs import parse_text
from rules.margin.policy import margin_policy
from rules.margin.records import OffLedger
from rules.margin.valuation import value
from rules.policy.loader import load_bundle
from tests.support import ROOT

POLICY = margin_policy(load_bundle(ROOT / "policies"))
HEAD = "account,dco,business_day,requirement_usd,net_of_offsets\n"


def test_csv_and_json_read_the_same_requirements():
    csv = parse_text(HEAD + "ACC-1,CME,2026-11-20,500000.00,true\nACC-1,FICC,2026-11-20,1.5,\n", "r.csv", POLICY)
    js = parse_text('{"requirements": [{"account": "ACC-1", "dco": "CME", "business_day": "2026-11-20", '
                    '"requirement_usd": "500000.00", "net_of_offsets": true}, {"account": "ACC-1", "dco": "FICC", '
                    '"business_day": "2026-11-20", "requirement_usd": "1.5"}]}', "r.json", POLICY)
    assert [r.row() for r in csv.requirements] == [r.row() for r in js.requirements]
    assert csv.requirements[0].net_of_offsets is True and csv.requirements[1].requirement_usd == Decimal("1.5")


@pytest.mark.parametrize("text, where, says", [
    (HEAD + "ACC-1,CME,2026-11-21,1.00,\n", "r.csv:2: business_day", "not a business day of CME"),  # Saturday
    (HEAD + "ACC-1,CME,2026-11-26,1.00,\n", "r.csv:2: business_day", "not a business day"),  # Thanksgiving
    (HEAD + "ACC-1,LCH,2026-11-20,1.00,\n", "r.csv:2: dco", "not a DCO of the margin policy"),
    (HEAD + "ACC-1,CME,2026-11-20,1e6,\n", "r.csv:2: requirement_usd", "not a plain decimal"),
    (HEAD + "ACC-1,CME,2026-11-20,-5,\n", "r.csv:2: requirement_usd", "not a plain decimal"),
    (HEAD + "ACC-1,CME,2026-11-20,1.00,maybe\n", "r.csv:2: net_of_offsets", "true or false"),
    (HEAD + "ACC-1,CME,2026-11-20\n", "r.csv:2", "3 values for 5 columns"),
    (HEAD + "ACC-1,CME,2026-11-20,1,\nACC-1,CME,2026-11-20,2,\n", "r.csv", "given twice"),
    ("account,x\n", "r.csv:1", "neither requirements"),
    ('{"requirements": [{"account": "A", "dco": "CME", "business_day": "2026-11-20", "requirement_usd": 5}]}',
     "r.csv: requirements[0]: requirement_usd", "decimal string"),
    ('{"requirements": [', "r.csv:1:", "not valid JSON"),
    ("account,holding,class,as_of,amount_usd,face_value_usd,price_pct,maturity,cusip\n"
     "A,h,us-treasury,2026-11-20,,100,99,2027-01-01,XYZ\n", "r.csv:2: cusip", "9 ASCII"),
    ("account,holding,class,as_of,amount_usd,face_value_usd,price_pct,maturity,cusip\n"
     "A,h,cash,2026-11-20,10,100,,,\n", "r.csv:2", "face_value_usd is not used by class cash"),
    ("account,holding,class,as_of,amount_usd,face_value_usd,price_pct,maturity,cusip\n"
     "A,h,gold,2026-11-20,10,,,,\n", "r.csv:2: class", "not a class"),
])
def test_bad_records_are_named_by_file_line_and_field(text, where, says):
    with pytest.raises(InputError) as e:
        parse_text(text, "r.csv", POLICY)
    assert e.value.where.startswith(where) and says in e.value.message, (e.value.where, e.value.message)


@pytest.mark.parametrize("maturity, haircut", [
    ("2027-02-19", "0"), ("2027-02-20", "0.005"), ("2027-11-19", "0.01"), ("2027-11-20", "0.015"),
    ("2031-11-19", "0.03"), ("2036-11-20", "0.045"), ("2056-11-20", "0.06"),
])
def test_treasuries_take_the_15c3_1_haircut_of_their_time_to_maturity(maturity, haircut):
    h = OffLedger("A", "t", "us-treasury", date(2026, 11, 20), face_value_usd=Decimal("1000000"),
                  price_pct=Decimal("99.5"), maturity=date.fromisoformat(maturity), cusip="912828XX1")
    v = value(POLICY, h, date(2026, 11, 20))
    assert v.haircut == Decimal(haircut) and v.market_value_usd == Decimal("995000.00")
    assert v.counted_usd == (Decimal("995000") * (1 - Decimal(haircut))).quantize(Decimal("0.01"), "ROUND_DOWN")


def test_a_matured_treasury_counts_nothing_and_cash_counts_in_full():
    matured = OffLedger("A", "t", "us-treasury", date(2026, 11, 20), face_value_usd=Decimal(100),
                        price_pct=Decimal(100), maturity=date(2026, 11, 20), cusip="912828XX1")
    assert value(POLICY, matured, date(2026, 11, 20)).counted_usd == 0
    cash = OffLedger("A", "c", "cash", date(2026, 11, 20), amount_usd=Decimal("12.345"))
    assert value(POLICY, cash, date(2026, 11, 20)).counted_usd == Decimal("12.34")


def test_calls_round_up_and_fall_due_on_the_strictest_calendar():
    assert round_call(POLICY, Decimal("98039.20")) == Decimal("99000.00")
    assert round_call(POLICY, Decimal("99000")) == Decimal("99000")
    friday = datetime(2026, 11, 20, 20, 0, tzinfo=timezone.utc)
    assert deadline(POLICY, ["CME"], friday).isoformat() == "2026-11-23T22:00:00+00:00"  # Mon 16:00 Chicago
    assert deadline(POLICY, ["CME", "FICC"], friday).isoformat() == "2026-11-23T21:00:00+00:00"  # 16:00 New York
    wednesday = datetime(2026, 11, 25, 15, 0, tzinfo=timezone.utc)  # Thanksgiving next: Friday
    assert deadline(POLICY, ["CME"], wednesday).date() == date(2026, 11, 27)


def test_a_bad_margin_policy_is_named_at_file_line(tmp_path):
    pol = tmp_path / "p"
    shutil.copytree(ROOT / "policies", pol, ignore=shutil.ignore_patterns("tests", "approvals"))
    text = (pol / "margin.yaml").read_text()
    (pol / "margin.yaml").write_text(text.replace("rounding_usd: 1000.00", "rounding_usd: -1")
                                     .replace("class: cash", "class: gold"))
    with pytest.raises(PolicyError) as e:
        load_bundle(pol)
    found = {(p.file, p.line) for p in e.value.problems}
    lines = text.splitlines()
    assert ("margin.yaml", 1 + next(i for i, l in enumerate(lines) if "rounding_usd" in l)) in found
    assert ("margin.yaml", 1 + next(i for i, l in enumerate(lines) if "class: cash" in l)) in found


def test_cli_bad_input_exits_3_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.csv").write_text(HEAD + "ACC-1,CME,2026-11-20,1.00,\nACC-1,CME,2026-11-21,1.00,\n")
    code = main(["margin", "import", "r.csv", "--policies", str(ROOT / "policies"), "--log", "l.sqlite",
                 "--config", str(ROOT / "dacp.toml")])
    err = capsys.readouterr().err
    assert code == 3 and "r.csv:3: business_day" in err and "Traceback" not in err
    assert not (tmp_path / "l.sqlite").exists()  # checked before the ledger is opened
