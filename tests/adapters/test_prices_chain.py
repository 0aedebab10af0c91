"""ChainlinkPriceSource against a MockAggregator on a real anvil node."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from adapters.prices import ChainlinkPriceSource
from rules.errors import EvidenceError, InputError
from tests.support.anvil_node import anvil, anvil_mine, deploy, new_address, transact  # noqa: F401 - fixture
from tests.support.anvil_node import AnvilNode
from tests.support.http_stub import stub_server

pytestmark = pytest.mark.integration

CHAIN = 31337
HOUR = timedelta(hours=1)
FAST = {"retries": 1, "backoff_s": 0.01, "request_timeout_s": 2.0, "max_total_s": 5.0}


def source(node_url: str, chain_id: int = CHAIN) -> ChainlinkPriceSource:
    return ChainlinkPriceSource(node_url, chain_id, **FAST)


def feed(w3: Any, answer: int, decimals: int = 8, description: str = "ETH / USD") -> Any:
    return deploy(w3, "MockAggregator", decimals, description, answer)


def head_time(w3: Any) -> datetime:
    return datetime.fromtimestamp(w3.eth.get_block("latest")["timestamp"], tz=timezone.utc)


def test_round_is_read_exactly(anvil: AnvilNode) -> None:
    w3 = anvil.w3
    f = feed(w3, 3_012_345_678_901)  # 30123.45678901 with 8 decimals
    ev = source(anvil.url).read("ETH", f.address, max_age=HOUR, now=head_time(w3), description="ETH / USD")
    assert ev.price_usd == Decimal("30123.45678901")
    assert (ev.round_id, ev.raw_answer, ev.decimals) == (1, 3_012_345_678_901, 8)
    assert ev.updated_at == head_time(w3)
    assert f.address in ev.source and anvil.url in ev.source
    assert ev.to_json()["price_usd"] == "30123.45678901"


def test_18_decimal_feed_is_exact_beyond_float_precision(anvil: AnvilNode) -> None:
    w3 = anvil.w3
    f = feed(w3, 10**18 + 1, decimals=18, description="USDC / USD")
    ev = source(anvil.url).read("USDC", f.address, max_age=HOUR, now=head_time(w3))
    assert ev.price_usd == Decimal("1.000000000000000001")


def test_new_round_is_seen(anvil: AnvilNode) -> None:
    w3 = anvil.w3
    f = feed(w3, 100_00000000)
    now = head_time(w3)
    transact(w3, f.functions.pushRound(101_50000000, int(now.timestamp())))
    ev = source(anvil.url).read("BTC", f.address, max_age=HOUR, now=now)
    assert (ev.round_id, ev.price_usd) == (2, Decimal("101.5"))


def test_stale_round(anvil: AnvilNode) -> None:
    w3 = anvil.w3
    f = feed(w3, 100_00000000)
    updated = head_time(w3)
    src = source(anvil.url)
    assert src.read("ETH", f.address, max_age=HOUR, now=updated + HOUR)  # exactly at the limit: still fresh
    with pytest.raises(EvidenceError) as e:
        src.read("ETH", f.address, max_age=HOUR, now=updated + HOUR + timedelta(seconds=1))
    assert e.value.reason == "stale_price"


@pytest.mark.parametrize("answer", [0, -1, -(2**255)])
def test_non_positive_answer(anvil: AnvilNode, answer: int) -> None:
    w3 = anvil.w3
    f = feed(w3, 1)
    transact(w3, f.functions.pushRound(answer, int(head_time(w3).timestamp())))
    with pytest.raises(EvidenceError) as e:
        source(anvil.url).read("ETH", f.address, max_age=HOUR, now=head_time(w3))
    assert e.value.reason == "non_positive_price" and str(answer) in e.value.message


def test_answer_carried_over_from_an_earlier_round_is_stale(anvil: AnvilNode) -> None:
    w3 = anvil.w3
    f = feed(w3, 1)
    ts = int(head_time(w3).timestamp())
    transact(w3, f.functions.setRoundData(7, 2000_00000000, ts, ts, 6))
    with pytest.raises(EvidenceError) as e:
        source(anvil.url).read("ETH", f.address, max_age=HOUR, now=head_time(w3))
    assert e.value.reason == "stale_price" and "answeredInRound" in e.value.message


def test_incomplete_round_is_stale(anvil: AnvilNode) -> None:
    w3 = anvil.w3
    f = feed(w3, 1)
    transact(w3, f.functions.setRoundData(3, 2000_00000000, 0, 0, 3))
    with pytest.raises(EvidenceError) as e:
        source(anvil.url).read("ETH", f.address, max_age=HOUR, now=head_time(w3))
    assert e.value.reason == "stale_price"


def test_wrong_feed_description(anvil: AnvilNode) -> None:
    w3 = anvil.w3
    f = feed(w3, 1, description="BTC / USD")
    with pytest.raises(EvidenceError) as e:
        source(anvil.url).read("ETH", f.address, max_age=HOUR, now=head_time(w3), description="ETH / USD")
    assert e.value.reason == "feed_mismatch"


def test_no_feed_at_address(anvil: AnvilNode) -> None:
    with pytest.raises(EvidenceError) as e:
        source(anvil.url).read("ETH", new_address(anvil.w3), max_age=HOUR)
    assert e.value.reason == "no_contract_code"


def test_feed_not_yet_deployed_at_pinned_block(anvil: AnvilNode) -> None:
    w3 = anvil.w3
    anvil_mine(w3, 64)
    f = feed(w3, 1)
    with pytest.raises(EvidenceError) as e:
        source(anvil.url).read("ETH", f.address, max_age=HOUR, block="finalized")
    assert e.value.reason == "no_contract_code"


def test_wrong_chain(anvil: AnvilNode) -> None:
    f = feed(anvil.w3, 1)
    with pytest.raises(EvidenceError) as e:
        source(anvil.url, chain_id=1).read("ETH", f.address, max_age=HOUR)
    assert e.value.reason == "wrong_chain"


def test_bad_arguments() -> None:
    src = source("http://127.0.0.1:9")
    with pytest.raises(InputError):
        src.read("ETH", "0x" + "11" * 20, max_age=None)  # type: ignore[arg-type]
    with pytest.raises(InputError):
        src.read("ETH", "0x" + "11" * 20, max_age=HOUR, now=datetime(2026, 1, 1))  # naive
    with pytest.raises(InputError):
        src.read("ETH", "0x" + "11" * 20, max_age=HOUR, block="pending")


def test_transport_failure_shares_the_retry_policy() -> None:
    with stub_server("status_503") as srv:
        with pytest.raises(EvidenceError) as e:
            source(srv.url).read("ETH", "0x" + "11" * 20, max_age=HOUR)
    assert e.value.reason == "http_error"
    assert srv.requests_seen == 2  # 1 + retries=1
