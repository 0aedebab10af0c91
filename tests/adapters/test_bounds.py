"""Every timeout and retry bound of the chain readers is a setting (issue 17, point 1): what ``dacp.toml`` says
reaches the Ethereum, Bitcoin and price readers, and a bound out of range is refused with its place."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from adapters.custody import CustodyVerifier, PriceReader
from rules.errors import EvidenceError, InputError
from rules.settings import load_settings


@dataclass(frozen=True)
class _Asset:
    symbol: str
    chain: str
    network: int | str
    contract: str | None = None
    decimals: int = 18
    restrictions: dict = field(default_factory=dict)


TOML = """
[ethereum]
rpc_url = "http://127.0.0.1:9/"
request_timeout_s = 1.5
retries = 1
backoff_s = 0.1
max_total_s = 4
max_reorg_retries = 5
recheck_timeout_s = 0.5
[bitcoin]
rpc_url = "http://127.0.0.1:9/"
user = "u"
password = "p"
network = "regtest"
timeout_s = 2.5
retries = 2
backoff_s = 0.2
max_total_s = 7
scan_timeout_s = 60
race_retries = 4
scan_busy_retries = 6
busy_backoff_s = 0.3
recheck_timeout_s = 0.75
[prices]
rpc_url = "http://127.0.0.1:9/"
chain_id = 1
feeds = {ETH = "0x5f4eC3Df9cbd43714FE2740f5E3616155c5b8419"}
request_timeout_s = 3.5
retries = 0
backoff_s = 0.05
max_total_s = 5
[service]
ethereum_workers = 3
bitcoin_workers = 2
"""


def _settings(tmp_path, text: str):
    p = tmp_path / "dacp.toml"
    p.write_text(text)
    return load_settings(env={}, config=p)


def test_every_bound_in_the_settings_reaches_its_reader(tmp_path):
    s = _settings(tmp_path, TOML)
    v = CustodyVerifier(ethereum=s.ethereum.given(), bitcoin=s.bitcoin.given())
    eth = v._eth_reader(_Asset("ETH", "ethereum", 1))
    assert (eth.rpc.policy.request_timeout_s, eth.rpc.policy.retries, eth.rpc.policy.backoff_s,
            eth.rpc.policy.max_total_s, eth.max_reorg_retries) == (1.5, 1, 0.1, 4.0, 5)
    assert (eth._quick.policy.request_timeout_s, eth._quick.policy.retries) == (0.5, 0)
    btc = v._btc(_Asset("BTC", "bitcoin", "regtest", decimals=8))
    assert (btc.client.timeout_s, btc.client.retries, btc.client.backoff_s, btc.client.max_total_s) == (2.5, 2, 0.2, 7.0)
    assert (btc.scan_timeout_s, btc.race_retries, btc.scan_busy_retries, btc.busy_backoff_s) == (60.0, 4, 6, 0.3)
    assert (btc.recheck_client.timeout_s, btc.recheck_client.retries, btc.recheck_client.max_total_s) == (0.75, 0, 0.75)
    prices = PriceReader(s.prices.given())
    with pytest.raises(EvidenceError):  # nothing listens on port 9: the read fails, after the source was built
        prices.read(_Asset("ETH", "ethereum", 1))
    p = prices._feed.rpc.policy
    assert (p.request_timeout_s, p.retries, p.backoff_s, p.max_total_s) == (3.5, 0, 0.05, 5.0)
    assert (s.service.ethereum_workers, s.service.bitcoin_workers) == (3, 2)


@pytest.mark.parametrize("section, key, value", [("bitcoin", "scan_timeout_s", "0"), ("bitcoin", "race_retries", "-1"),
                                                 ("ethereum", "recheck_timeout_s", "0"), ("prices", "retries", "-1"),
                                                 ("service", "ethereum_workers", "0"), ("bitcoin", "max_total_s", '"x"')])
def test_a_bound_out_of_range_is_refused_with_its_place(tmp_path, section, key, value):
    with pytest.raises(InputError) as e:
        _settings(tmp_path, f"[{section}]\n{key} = {value}\n")
    assert section in str(e.value) and key in str(e.value)
