"""Haircut backtests on real BTC/USD closes: the committee's figures reproduced exactly, breaches, the chart,
bad input, and backtest expectations in the policy tests."""

from __future__ import annotations

import json
import shutil
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from rules.errors import InputError
from rules.lifecycle import backtest as bt
from rules.cli.run import main
from rules.engine.decide import Engine
from rules.errors import InputError
from rules.policy.loader import load_bundle
from rules.lifecycle.policy_tests import run_tests
from tests.support import ROOT

PRICES = ROOT / "data" / "prices" / "btc_usd_daily.csv"
POLICIES = ROOT / "policies"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


@pytest.fixture(scope="module")
def series() -> bt.PriceSeries:
    return bt.load_prices(PRICES)


def test_the_price_file_is_the_shared_one_with_its_note(series):
    assert (series.dates[0], series.dates[-1], len(series.dates)) == (date(2011, 8, 18), date(2025, 9, 24), 5152)
    note = (PRICES.parent / "README.md").read_text()
    assert "mathaszip/BTCprice" in note and "BTCUSD_1d_candles_full.csv" in note


# data/prices/README.md (and shared/data/README.md): close-to-close losses since 2018-01-01
TABLE = [(1, "9.9%", "13.2%", "38.8%"), (2, "12.6%", "15.7%", "38.5%"), (5, "19.0%", "26.4%", "45.4%"),
         (10, "28.4%", "35.6%", "45.5%")]


@pytest.mark.parametrize("horizon,q99,q997,worst", TABLE)
def test_the_committee_table_is_reproduced_exactly(series, horizon, q99, q997, worst):
    r = bt.run_backtest(series, Decimal("0.2"), horizon, since=date(2018, 1, 1))
    assert bt.pct(r.implied[Decimal("0.99")]) == q99
    assert bt.pct(r.implied[Decimal("0.997")]) == q997
    assert bt.pct(r.worst.loss) == worst
    assert all(isinstance(w.loss, Decimal) for w in r.windows)


def test_the_quantile_is_the_inverted_cdf_and_interpolation_would_not_reproduce_the_table(series):
    assert bt.quantile([Decimal(x) for x in (5, 1, 4, 2, 3)], Decimal("0.5")) == 3
    assert bt.quantile([Decimal(x) for x in (1, 2, 3, 4)], Decimal("0.5")) == 2  # no averaging
    assert bt.quantile([Decimal(x) for x in range(1, 101)], Decimal("0.99")) == 99
    assert bt.quantile([Decimal(x) for x in range(1, 101)], Decimal("0.997")) == 100
    # the "linear" rule (numpy's default) on the same 5-day losses gives 26.0%, not the table's 26.4%
    losses = sorted(w.loss for w in bt.loss_windows(series, 5, date(2018, 1, 1))[0])
    pos = Decimal("0.997") * (len(losses) - 1)
    k = int(pos)
    linear = losses[k] + (losses[k + 1] - losses[k]) * (pos - k)
    assert bt.pct(linear) == "26.0%" and bt.pct(bt.quantile(losses, Decimal("0.997"))) == "26.4%"


def test_loss_definition_windows_breaches_and_gaps():
    text = "date,close_usd\n2024-01-01,100\n2024-01-02,90\n2024-01-03,70\n2024-01-05,80\n2024-01-06,40\n"
    s = bt.parse_prices(text, "t.csv")
    windows, skipped = bt.loss_windows(s, 1)
    assert [(w.start.day, w.loss) for w in windows] == [(1, Decimal("0.1")), (2, Decimal("0.222222222222")),
                                                        (5, Decimal("0.5"))]
    assert skipped == 1  # 2024-01-03 -> 2024-01-04 has no close; 2024-01-06 is the last day, not a gap
    r = bt.run_backtest(s, Decimal("0.2"), 1)
    assert len(r.breaches) == 2 and r.breach_rate == Decimal(2) / 3 and len(r.episodes) == 2
    assert (r.worst.start, r.worst.end) == (date(2024, 1, 5), date(2024, 1, 6))
    r = bt.run_backtest(s, Decimal("0.5"), 1)
    assert r.breaches == []  # a loss equal to the haircut is covered
    r = bt.run_backtest(s, Decimal("0.2"), 2, since=date(2024, 1, 1), until=date(2024, 1, 4))
    assert [(w.start.day, w.end.day, w.loss) for w in r.windows] == [(1, 3, Decimal("0.3"))]  # 2 -> 4: no close
    with pytest.raises(InputError, match="no 2-day window"):
        bt.run_backtest(s, Decimal("0.2"), 2, since=date(2024, 1, 2), until=date(2024, 1, 4))


def test_the_shipped_btc_haircut_and_its_backtest(series):
    ph = bt.policy_haircut(load_bundle(POLICIES), "BTC", date(2026, 1, 1))
    assert ph.haircut == Decimal("0.2") and ph.schedule == "haircut.btc"
    assert "the FCM's stricter own haircut 20%, above 15% (Bitnomial schedule of 2026-01" in ph.explanation
    assert [c[0] for c in ph.components] == ["haircut.btc.bitnomial", "haircut.btc.stricter_own"]
    r = bt.run_backtest(series, ph, 2, since=date(2018, 1, 1))
    assert (len(r.windows), len(r.breaches), len(r.episodes)) == (2822, 6, 5)
    assert (r.worst.start, r.worst.end, bt.pct(r.worst.loss)) == (date(2020, 3, 10), date(2020, 3, 12), "38.5%")
    assert r.covers and r.breaches_of(Decimal("0.15")) == 12
    doc = r.to_json()
    assert doc["breaches"] == 6 and doc["worst_breach"]["start"] == "2020-03-10"
    assert doc["implied_haircut"]["0.99"]["loss_pct"] == "12.6%"


def test_a_bucketed_schedule_needs_an_explicit_haircut():
    with pytest.raises(InputError, match="--haircut"):
        bt.policy_haircut(load_bundle(POLICIES), "OUSG")  # the maturity table
    with pytest.raises(InputError, match="unknown asset"):
        bt.policy_haircut(load_bundle(POLICIES), "DOGE")


@pytest.mark.parametrize("text,words", [
    ("", "empty"), ("day,close_usd\n2024-01-01,1\n", "no 'date' column"), ("date,price\n", "no 'close_usd'"),
    ("date,close_usd\n2024-01-01,1\n2024-13-01,2\n", "line 3: '2024-13-01' is not a date"),
    ("date,close_usd\n2024-01-01,1\n2024-01-02,-2\n", "positive"),
    ("date,close_usd\n2024-01-01,1\n2024-01-02,NaN\n", "positive"),
    ("date,close_usd\n2024-01-01,1\n2024-01-02,1e\n", "not a decimal"),
    ("date,close_usd\n2024-01-02,1\n2024-01-01,2\n", "out of order"),
    ("date,close_usd\n2024-01-01,1\n2024-01-01,2\n", "repeated"),
    ("date,close_usd\n2024-01-01,1\n", "at least two days"),
])
def test_bad_price_files_are_clear_errors(text, words):
    with pytest.raises(InputError, match=words):
        bt.parse_prices(text, "p.csv")


@pytest.mark.parametrize("text,ok", [("2d", 2), ("10", 10), ("5 days", 5), ("0d", None), ("2w", None), ("-1", None)])
def test_horizons(text, ok):
    if ok:
        assert bt.parse_horizon(text) == ok
    else:
        with pytest.raises(InputError):
            bt.parse_horizon(text)


def test_cli_backtest_prints_the_figures_and_writes_a_png(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DACP_POLICIES", str(POLICIES))
    chart = tmp_path / "btc.png"
    code, out, err = run(capsys, "backtest", "--asset", "BTC", "--prices", str(PRICES), "--horizon", "2d",
                         "--since", "2018-01-01", "--chart", str(chart))
    assert code == 0, err
    assert "6 of 2,822 windows (0.21%)" in out and "38.5% from 2020-03-10" in out
    assert "99%: 12.6%" in out and "99.7%: 15.7%" in out and "COVERS" in out
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 30_000
    code, out, _ = run(capsys, "backtest", "--asset", "BTC", "--prices", str(PRICES), "--horizon", "10d",
                       "--since", "2018-01-01", "--json", "--no-chart", "--check")
    doc = json.loads(out)
    assert code == 1 and doc["verdict"] == {"confidence": "0.99", "covers": False}  # 10 days: 28.4% > 20%
    assert doc["implied_haircut"]["0.997"]["loss_pct"] == "35.6%" and doc["chart"] is None
    code, out, _ = run(capsys, "backtest", "--asset", "BTC", "--prices", str(PRICES), "--horizon", "1",
                       "--haircut", "0.15", "--confidence", "0.995", "--no-chart")
    assert code == 0 and "given on the command line" in out and "99.5%" in out
    assert not list(tmp_path.glob("backtest-*.png"))


@pytest.mark.parametrize("argv,words", [
    (["--horizon", "2x"], "not a horizon"), (["--since", "2018-02-30"], "not a date"),
    (["--confidence", "1.5"], "below 1"), (["--haircut", "2"], "fraction"), (["--asset", "DOGE"], "unknown asset"),
    (["--prices", "nope.csv"], "no such price file"), (["--chart", "x.svg"], "PNG"),
    (["--since", "2030-01-01"], "no 2-day window"), (["--until", "2018-01-01", "--since", "2019-01-01"], "after"),
    (["--asset", "ETH"], "the price file is a series of BTC, not ETH"),
])
def test_cli_backtest_bad_input_writes_nothing(tmp_path, capsys, monkeypatch, argv, words):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DACP_POLICIES", str(POLICIES))
    base = {"--asset": "BTC", "--prices": str(PRICES), "--horizon": "2d"}
    args = dict(base)
    args.update(dict(zip(argv[::2], argv[1::2])))
    code, out, err = run(capsys, "backtest", *[x for kv in args.items() for x in kv])
    assert code == 3 and out == "" and words in err
    assert list(tmp_path.iterdir()) == []


ETH_PRICES = ROOT / "data" / "prices" / "eth_usd_daily.csv"


def test_the_eth_file_names_its_asset_and_source_and_eth_is_backtested():
    """Measured: ``--asset ETH --prices <BTC file>`` tested ETH against Bitcoin's prices and printed COVERS."""
    eth = bt.load_prices(ETH_PRICES)
    assert (eth.asset, eth.dates[0], eth.dates[-1], len(eth.dates)) == ("ETH", date(2015, 8, 7), date(2026, 1, 5), 3804)
    assert bt.load_prices(PRICES).asset == "BTC"
    note = (PRICES.parent / "README.md").read_text()
    assert "markurusov1/defischolar_research" in note and "aa42b76" in note
    r = bt.run_backtest(eth, bt.policy_haircut(load_bundle(POLICIES), "ETH", date(2026, 1, 1)), 2,
                        since=date(2018, 1, 1))
    assert (r.haircut, len(r.windows), len(r.breaches)) == (Decimal("0.25"), 2925, 5) and r.covers
    assert bt.pct(bt.quantile([w.loss for w in r.windows], Decimal("0.99"))) == "16.2%"


@pytest.mark.parametrize("text,words", [
    ("date,close_usd\n2024-01-01,1\n2024-01-02,2\n", "names no asset"),
    ("date,asset,close_usd\n2024-01-01,BTC,1\n2024-01-02,BTC,2\n", "a series of BTC, not ETH"),
])
def test_a_series_of_another_asset_or_of_none_is_refused(text, words):
    s = bt.parse_prices(text, "p.csv")
    with pytest.raises(InputError, match=words):
        s.check_asset("ETH")


@pytest.mark.parametrize("text,words", [
    ("date,asset,close_usd\n2024-01-01,ETH,1\n2024-01-02,BTC,2\n", "line 3: asset BTC"),
    ("date,asset,close_usd\n2024-01-01,,1\n", "line 2: the asset column is empty"),
])
def test_one_asset_a_file(text, words):
    with pytest.raises(InputError, match=words):
        bt.parse_prices(text, "p.csv")


def backtests_file(tmp: Path) -> Path:
    d = tmp / "tests"
    d.mkdir()
    (d / "bt.yaml").write_text(f"""kind: tests
backtests:
  - name: BTC haircut covers the 99% 2-day loss since 2018
    asset: BTC
    prices: {PRICES}
    horizon: 2d
    since: 2018-01-01
    expect: {{covers_quantile: 0.99, max_breach_rate: 0.003}}
""")
    return d


def test_policy_tests_fail_when_a_change_weakens_the_haircut_below_the_evidence(tmp_path):
    tests = backtests_file(tmp_path)
    ok = run_tests(Engine.for_bundle(load_bundle(POLICIES), "python"), tests)
    assert ok.passed == 1 and ok.failed == 0
    weak = tmp_path / "weak"
    shutil.copytree(POLICIES, weak, ignore=shutil.ignore_patterns("tests", "approvals"))
    hc = weak / "haircuts.yaml"
    hc.write_text(hc.read_text().replace("floor: 0.20", "floor: 0.10").replace("        haircut: 0.15\n", "        haircut: 0.10\n"))
    bad = run_tests(Engine.for_bundle(load_bundle(weak), "python"), tests)
    assert bad.failed == 1
    (res,) = bad.results
    assert "BTC haircut 10.0% does not cover the 99% 2-day loss 12.6%" in res.failures[0]
    assert any("more than 0.30%" in f for f in res.failures)


def test_the_shipped_policy_tests_include_the_btc_backtest(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DACP_POLICIES", str(POLICIES))
    code, out, _ = run(capsys, "test", "-v")
    assert code == 0 and "PASS" in out and "BTC haircut covers the 99% 2-day loss since 2018" in out


def test_a_backtest_that_cannot_run_is_a_failed_test_not_a_crash(tmp_path):
    d = tmp_path / "tests"
    d.mkdir()
    (d / "bt.yaml").write_text("kind: tests\nbacktests:\n  - name: missing prices\n    asset: BTC\n"
                               "    prices: nowhere.csv\n    horizon: 2d\n    expect: {covers_quantile: 0.99}\n")
    r = run_tests(Engine.for_bundle(load_bundle(POLICIES), "python"), d)
    assert r.failed == 1 and "no such price file" in r.results[0].failures[0]
