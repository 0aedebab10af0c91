"""Bitcoin custody evidence against a real node: litecoind 0.21 -regtest (same RPC as bitcoind)."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Iterator

import pytest

from adapters.bitcoin.custody import BitcoinCustodyReader, BitcoinRpcClient
from rules.errors import EvidenceError
from tests.support.litecoin_node import LitecoinNode, litecoin  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

NETWORK = "litecoin-regtest"
CUSTODY = "custody"


@pytest.fixture(scope="module")
def miner(litecoin: LitecoinNode) -> Iterator[str]:  # noqa: F811 - fixture injection
    """A wallet with mature coinbase coins (101 blocks mined to it); yields its mining address."""
    litecoin.create_wallet("miner")
    address = litecoin.new_address("miner")
    litecoin.mine(101, address)
    litecoin.create_wallet(CUSTODY)
    yield address


def custody_addresses(node: LitecoinNode, *types: str) -> list[str]:
    """Fresh addresses (one of each type) in the custody wallet: no test sees another's deposits."""
    return [node.new_address(CUSTODY, t) for t in types]


def reader(node: LitecoinNode, **kw: object) -> BitcoinCustodyReader:
    return BitcoinCustodyReader(node.client(), NETWORK, allow_test_networks=True, **kw)  # type: ignore[arg-type]


def sat(amount: str | Decimal) -> int:
    return int(Decimal(amount).scaleb(8))


def test_deposit_counts_only_from_min_confirmations_and_sums_exactly(
    litecoin: LitecoinNode, miner: str  # noqa: F811
) -> None:
    a, b = custody_addresses(litecoin, "bech32", "legacy")
    deposits = {a: ["1.23456789"], b: ["0.1", "0.2", "0.00012345"]}  # 0.1 + 0.2 is the float trap
    for address, amounts in deposits.items():
        for amount in amounts:
            litecoin.send("miner", address, Decimal(amount))
    litecoin.mine(1, miner)

    ev = reader(litecoin).verify([a, b], min_confirmations=6)
    assert ev.raw_balance == 0
    waiting = ev.details["too_few_confirmations"]
    assert len(waiting) == 4 and {r["confirmations"] for r in waiting} == {1}
    assert sorted(int(r["amount_sat"]) for r in waiting) == sorted(sat(x) for xs in deposits.values() for x in xs)
    assert all(r["address"] in (a, b) and isinstance(r["amount_sat"], str) for r in waiting)
    assert ev.details["counted"] == []

    litecoin.mine(4, miner)  # 5 confirmations: one short
    ev = reader(litecoin).verify([a, b], min_confirmations=6)
    assert ev.raw_balance == 0
    assert {r["confirmations"] for r in ev.details["too_few_confirmations"]} == {5}

    litecoin.mine(1, miner)  # 6 confirmations
    ev = reader(litecoin).verify([a, b], min_confirmations=6)
    assert ev.raw_balance == 123456789 + 10000000 + 20000000 + 12345 == 153469134
    assert ev.quantity == Decimal("1.53469134")
    assert ev.details["per_address_sat"] == {a: "123456789", b: "30012345"}
    assert ev.details["too_few_confirmations"] == []
    assert {r["confirmations"] for r in ev.details["counted"]} == {6}

    # The evidence is pinned to the node's tip, and says where it came from.
    tip = litecoin.rpc("getblockchaininfo")
    header = litecoin.rpc("getblockheader", tip["bestblockhash"])
    assert (ev.chain, ev.network, ev.asset, ev.decimals, ev.confirmations) == ("bitcoin", NETWORK, "BTC", 8, 6)
    assert (ev.block_number, ev.block_hash) == (tip["blocks"], tip["bestblockhash"])
    assert ev.block_timestamp == datetime.fromtimestamp(header["time"], tz=timezone.utc)
    assert ev.addresses == (a, b)
    assert ev.source == litecoin.url
    # The node's own wallet agrees (its amounts parsed as Decimal, never float).
    for x in (a, b):
        assert sat(litecoin.rpc("getreceivedbyaddress", x, 6, wallet=CUSTODY)) == int(ev.details["per_address_sat"][x])


def test_new_deposit_is_listed_beside_counted_ones(litecoin: LitecoinNode, miner: str) -> None:  # noqa: F811
    (a,) = custody_addresses(litecoin, "p2sh-segwit")
    litecoin.send("miner", a, Decimal("2"))
    litecoin.mine(6, miner)
    litecoin.send("miner", a, Decimal("0.5"))
    litecoin.mine(1, miner)

    ev = reader(litecoin).verify([a], min_confirmations=6)
    assert ev.raw_balance == 200_000_000
    (waiting,) = ev.details["too_few_confirmations"]
    assert (waiting["amount_sat"], waiting["confirmations"], waiting["address"]) == ("50000000", 1, a)
    assert ev.to_json()["raw_balance"] == "200000000"

    # min_confirmations=1 counts both.
    assert reader(litecoin).verify([a], min_confirmations=1).raw_balance == 250_000_000


def test_address_of_another_network_is_refused(litecoin: LitecoinNode, miner: str) -> None:  # noqa: F811
    (a,) = custody_addresses(litecoin, "bech32")
    with pytest.raises(EvidenceError) as e:
        reader(litecoin).verify([a, "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"])
    assert e.value.reason == "wrong_network"
    assert "litecoin-regtest" in e.value.message


def test_reader_for_another_chain_is_refused_by_the_node(litecoin: LitecoinNode, miner: str) -> None:  # noqa: F811
    with pytest.raises(EvidenceError) as e:
        BitcoinCustodyReader(litecoin.client(), "main").verify(["1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa"])
    assert e.value.reason == "wrong_network"
    assert "'regtest'" in e.value.message

    # A Bitcoin regtest address passes our check (same chain name) but the node refuses it.
    with pytest.raises(EvidenceError) as e:
        BitcoinCustodyReader(litecoin.client(), "regtest").verify(["bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"])
    assert e.value.reason == "invalid_address"


def test_user_password_auth_and_credentials_never_in_source(litecoin: LitecoinNode, miner: str) -> None:  # noqa: F811
    (a,) = custody_addresses(litecoin, "bech32")
    client = BitcoinRpcClient(litecoin.url, user=litecoin.rpc_user, password=litecoin.rpc_password)
    ev = BitcoinCustodyReader(client, NETWORK, allow_test_networks=True).verify([a], min_confirmations=1)
    assert ev.source == litecoin.url

    in_url = litecoin.url.replace("http://", f"http://{litecoin.rpc_user}:{litecoin.rpc_password}@")
    in_url_reader = BitcoinCustodyReader(BitcoinRpcClient(in_url), NETWORK, allow_test_networks=True)
    ev = in_url_reader.verify([a], min_confirmations=1)
    assert ev.source == litecoin.url
    assert litecoin.rpc_password not in repr(ev.to_json())


def test_wrong_password_is_unauthorized(litecoin: LitecoinNode, miner: str) -> None:  # noqa: F811
    client = BitcoinRpcClient(litecoin.url, user=litecoin.rpc_user, password="wrong", retries=3)
    with pytest.raises(EvidenceError) as e:
        BitcoinCustodyReader(client, NETWORK, allow_test_networks=True).verify(["mqeebgsYb7dyoeJrCdCyv4KYmbaxmCQPpg"])
    assert e.value.reason == "unauthorized"
    assert "wrong" not in e.value.message


def test_cookie_is_read_again_after_401(litecoin: LitecoinNode, miner: str, tmp_path: Path) -> None:  # noqa: F811
    cookie = tmp_path / ".cookie"
    cookie.write_text("__cookie__:stale")  # as if the node had restarted and written a new cookie
    client = BitcoinRpcClient(litecoin.url, cookie_file=cookie, retries=0)
    with pytest.raises(EvidenceError) as e:
        client.call("getblockcount")
    assert e.value.reason == "unauthorized"

    cookie.write_text(litecoin.cookie_file.read_text())  # the client still holds the stale one
    assert client.call("getblockcount") == litecoin.rpc("getblockcount")

    cookie.unlink()
    fresh = BitcoinRpcClient(litecoin.url, cookie_file=cookie)
    with pytest.raises(EvidenceError) as e:
        fresh.call("getblockcount")
    assert e.value.reason == "unauthorized" and "cookie file" in e.value.message
