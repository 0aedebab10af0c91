"""StaticPriceFile: exact Decimal prices from YAML/JSON, strict checks naming file and key."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from adapters.prices import StaticPriceFile
from rules.errors import EvidenceError, InputError

NOW = datetime(2026, 1, 5, 17, 0, tzinfo=timezone.utc)
GOOD_YAML = """\
USDC:
  price_usd: "1.0000"
  updated_at: "2026-01-05T16:00:00Z"
  source: ops desk
BTC: {price_usd: 97123.123456789012345678, updated_at: 2026-01-05T16:30:00+01:00, source: "manual"}
BUIDL: {price_usd: 1_000.5, updated_at: "2026-01-05T16:00:00Z", source: "NAV letter"}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_yaml_prices_are_exact_decimals(tmp_path: Path) -> None:
    prices = StaticPriceFile(write(tmp_path, "prices.yaml", GOOD_YAML))
    assert prices.assets() == ["BTC", "BUIDL", "USDC"]
    usdc = prices.read("USDC", max_age=timedelta(hours=2), now=NOW)
    assert usdc.price_usd == Decimal("1.0000") and str(usdc.price_usd) == "1.0000"
    assert usdc.updated_at == datetime(2026, 1, 5, 16, 0, tzinfo=timezone.utc)
    assert "ops desk" in usdc.source and "prices.yaml" in usdc.source
    assert usdc.round_id is None
    # an unquoted YAML number keeps every digit: it never went through float
    btc = prices.read("BTC", now=NOW)
    assert btc.price_usd == Decimal("97123.123456789012345678")
    assert btc.updated_at == datetime(2026, 1, 5, 15, 30, tzinfo=timezone.utc)
    assert prices.read("BUIDL").price_usd == Decimal("1000.5")


def test_json_prices(tmp_path: Path) -> None:
    p = write(tmp_path, "p.json", '{"ETH": {"price_usd": 3456.789012345678901, "updated_at": "2026-01-05T16:00:00+00:00", "source": "x"}}')
    assert StaticPriceFile(p).read("ETH").price_usd == Decimal("3456.789012345678901")


def test_stale_and_missing(tmp_path: Path) -> None:
    prices = StaticPriceFile(write(tmp_path, "prices.yaml", GOOD_YAML))
    assert prices.read("USDC", max_age=timedelta(hours=1), now=NOW)  # exactly one hour: fresh
    with pytest.raises(EvidenceError) as e:
        prices.read("USDC", max_age=timedelta(minutes=59), now=NOW)
    assert e.value.reason == "stale_price"
    with pytest.raises(EvidenceError) as e:
        prices.read("DOGE", now=NOW)
    assert e.value.reason == "price_unavailable"
    with pytest.raises(InputError):
        prices.read("USDC", max_age=timedelta(hours=1), now=datetime(2026, 1, 5))  # naive now


ENTRY = 'updated_at: "2026-01-05T16:00:00Z", source: s'


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (f"ETH: {{price_usd: .nan, {ENTRY}}}", "ETH.price_usd"),
        (f"ETH: {{price_usd: .inf, {ENTRY}}}", "ETH.price_usd"),
        (f"ETH: {{price_usd: 'NaN', {ENTRY}}}", "ETH.price_usd"),
        (f"ETH: {{price_usd: '-1', {ENTRY}}}", "ETH.price_usd"),
        (f"ETH: {{price_usd: -0.5, {ENTRY}}}", "ETH.price_usd"),
        (f"ETH: {{price_usd: 0, {ENTRY}}}", "ETH.price_usd"),
        (f"ETH: {{price_usd: 'abc', {ENTRY}}}", "ETH.price_usd"),
        (f"ETH: {{price_usd: true, {ENTRY}}}", "ETH.price_usd"),
        (f"ETH: {{{ENTRY}}}", "ETH.price_usd"),
        ("ETH: {price_usd: '1', updated_at: '2026-01-05T16:00:00', source: s}", "ETH.updated_at"),
        ("ETH: {price_usd: '1', updated_at: 'yesterday', source: s}", "ETH.updated_at"),
        ("ETH: {price_usd: '1', updated_at: '2026-01-05T16:00:00Z'}", "ETH.source"),
        (f"ETH: {{price_usd: '1', {ENTRY}, prise_usd: '2'}}", "ETH.prise_usd"),
        (f"ETH: {{price_usd: '1', {ENTRY}}}\nETH: {{price_usd: '2', {ENTRY}}}", "twice"),
        ("ETH: 3000", "ETH"),
        ("- ETH", "mapping"),
        ("", "mapping"),
        ("ETH: {price_usd: '1'", "not valid YAML"),
    ],
)
def test_bad_yaml_names_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    p = write(tmp_path, "bad.yaml", text)
    with pytest.raises(InputError) as e:
        StaticPriceFile(p)
    assert e.value.where == str(p)
    assert key in e.value.message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('{"ETH": {"price_usd": NaN, "updated_at": "2026-01-05T16:00:00Z", "source": "s"}}', "ETH.price_usd"),
        ('{"ETH": {"price_usd": -Infinity, "updated_at": "2026-01-05T16:00:00Z", "source": "s"}}', "ETH.price_usd"),
        ('{"ETH": 1, "ETH": 2}', "twice"),
        ('{"ETH": ', "not valid JSON"),
    ],
)
def test_bad_json(tmp_path: Path, text: str, key: str) -> None:
    p = write(tmp_path, "bad.json", text)
    with pytest.raises(InputError) as e:
        StaticPriceFile(p)
    assert key in e.value.message and e.value.where == str(p)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError) as e:
        StaticPriceFile(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(e.value)
