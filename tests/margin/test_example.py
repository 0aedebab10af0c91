"""The shipped margin example (examples/margin/btc_path.py) end to end: real BTC closes, custody on a
litecoind regtest node, the real ledger; calls are issued as the price falls and deliveries meet them, the
log verifies, the coverage CSV and chart are written."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from tests.support import ROOT, require_binary

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_the_btc_price_path_creates_calls_and_deliveries_meet_them(tmp_path):
    require_binary("litecoind")
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "margin" / "btc_path.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "ACC-A  call issued" in out and "ACC-A  call met" in out and "ACC-C  call escalated (overdue)" in out
    assert "verified" in out.splitlines()[-1] and "NOT VERIFIED" not in out
    rows = list(csv.DictReader(open(tmp_path / "coverage.csv")))
    assert {r["account"] for r in rows} == {"ACC-A", "ACC-B", "ACC-C"} and len(rows) == 3 * 52
    assert (tmp_path / "coverage.png").stat().st_size > 10_000
