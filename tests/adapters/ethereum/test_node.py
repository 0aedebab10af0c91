"""EthereumCustodyReader against a real anvil node (and a misbehaving loopback HTTP stub)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Callable

import pytest
from web3.providers import HTTPProvider

from adapters.ethereum.custody import EthereumCustodyReader
from rules.errors import EvidenceError, InputError
from tests.support.anvil_node import (  # noqa: F401 - anvil, fresh_anvil are pytest fixtures
    AnvilNode,
    anvil,
    anvil_mine,
    deploy,
    fresh_anvil,
    new_address,
    rpc,
    send_eth,
    tag_number,
    transact,
)
from tests.support.http_stub import HANG_S, stub_server
from tests.support import free_port

pytestmark = pytest.mark.integration

CHAIN = 31337
# What the installed anvil does (measured in test_anvil_finality_lag): tags trail the head by this.
SAFE_LAG = 32
FINALIZED_LAG = 64
ETHER = 10**18
FAST = {"retries": 2, "backoff_s": 0.01, "request_timeout_s": 2.0, "max_total_s": 5.0}


def reader(url: str, chain_id: int = CHAIN, **kw: Any) -> EthereumCustodyReader:
    return EthereumCustodyReader(url, chain_id, **{**FAST, **kw})


class HookProvider(HTTPProvider):
    """A real HTTP provider that runs ``action`` just before the n-th request of ``method``.

    Used to do something real to the node (kill it, reorganise it, restart it) in the middle of a
    verification, between two of the reader's own requests.
    """

    def __init__(self, url: str, method: str, action: Callable[[], None], *, on_call: int = 1, every: bool = False):
        super().__init__(url, request_kwargs={"timeout": 2}, exception_retry_configuration=None)
        self.method, self.action, self.on_call, self.every = method, action, on_call, every
        self.seen = 0
        self.methods: list[str] = []

    def make_request(self, method: Any, params: Any) -> Any:
        self.methods.append(method)
        if method == self.method:
            self.seen += 1
            if self.seen == self.on_call or (self.every and self.seen > self.on_call):
                self.action()
        return super().make_request(method, params)


def finalize(w3: Any) -> None:
    """Mine enough blocks that everything so far is below the finalized tag."""
    anvil_mine(w3, FINALIZED_LAG)


def token(w3: Any, kind: str, symbol: str = "TKN", decimals: int = 18) -> Any:
    if kind == "fiat":
        return deploy(w3, "TestFiatToken", "USD Coin", symbol)
    if kind == "fund":
        return deploy(w3, "FundToken", "Fund Share", symbol)
    return deploy(w3, "TestToken", "Test Token", symbol, decimals)


# --- balances -------------------------------------------------------------------------------


def test_eth_balance_summed_over_two_addresses_at_finalized_block(anvil: AnvilNode) -> None:
    w3 = anvil.w3
    a, b = new_address(w3), new_address(w3)
    send_eth(w3, a, 3 * ETHER)
    send_eth(w3, b, 250_000_000_000_000_001)  # 0.25 ETH + 1 wei: exact sums, no float anywhere
    finalize(w3)

    ev = reader(anvil.url).verify("ETH", [a, b.lower()], contract=None, decimals=18, symbol=None)

    assert ev.raw_balance == 3_250_000_000_000_000_001
    assert ev.quantity == Decimal("3.250000000000000001")
    assert ev.addresses == (a, b)  # checksummed
    fin = w3.eth.get_block("finalized")
    assert ev.block_number == fin["number"] and ev.block_hash == "0x" + bytes(fin["hash"]).hex()
    assert ev.block_timestamp == datetime.fromtimestamp(fin["timestamp"], tz=timezone.utc)
    assert (ev.chain, ev.network, ev.contract, ev.decimals) == ("ethereum", "31337", None, 18)
    assert ev.source == anvil.url
    assert ev.details["balances"] == {a: str(3 * ETHER), b: "250000000000000001"}
    assert ev.details["block_selector"] == "finalized" and ev.details["attempts"] == 1
    assert ev.confirmations == FINALIZED_LAG + 1  # the head block counts as one confirmation
    assert ev.to_json()["raw_balance"] == "3250000000000000001"


@pytest.mark.parametrize(("kind", "decimals", "symbol"), [("fiat", 6, "USDC"), ("plain", 18, "OUSG")])
def test_erc20_balance_summed_for_6_and_18_decimals(anvil: AnvilNode, kind: str, decimals: int, symbol: str) -> None:
    w3 = anvil.w3
    tok = token(w3, kind, symbol, decimals)
    a, b = new_address(w3), new_address(w3)
    transact(w3, tok.functions.mint(a, 7 * 10**decimals))
    transact(w3, tok.functions.mint(b, 5))
    finalize(w3)

    ev = reader(anvil.url).verify(symbol, [a, b], contract=tok.address.lower(), decimals=decimals, symbol=symbol)

    assert ev.raw_balance == 7 * 10**decimals + 5
    assert ev.quantity == Decimal(7) + Decimal(5).scaleb(-decimals)
    assert ev.contract == tok.address and ev.decimals == decimals
    assert ev.details["symbol"] == symbol
    assert "paused" not in ev.details  # restrictions not asked for are not reported at all


# --- finality -------------------------------------------------------------------------------


def test_anvil_finality_lag_measured(fresh_anvil: AnvilNode) -> None:
    """How far the installed anvil's ``safe`` / ``finalized`` tags trail ``latest``."""
    w3 = fresh_anvil.w3
    anvil_mine(w3, 10)
    assert (tag_number(w3, "safe"), tag_number(w3, "finalized")) == (0, 0)  # young chain: clamped at genesis
    for head in (100, 101, 250):
        anvil_mine(w3, head - w3.eth.block_number)
        latest, safe, fin = tag_number(w3, "latest"), tag_number(w3, "safe"), tag_number(w3, "finalized")
        print(f"anvil latest={latest} safe={safe} (-{latest - safe}) finalized={fin} (-{latest - fin})")
        assert (latest - safe, latest - fin) == (SAFE_LAG, FINALIZED_LAG)


def test_deposit_counted_only_once_its_block_is_finalized(anvil: AnvilNode) -> None:
    w3 = anvil.w3
    a = new_address(w3)
    send_eth(w3, a, ETHER)
    finalize(w3)
    r = reader(anvil.url)
    deposit_block = send_eth(w3, a, 2 * ETHER)

    def seen(block: str = "finalized") -> int:
        return r.verify("ETH", [a], contract=None, decimals=18, symbol=None, block=block).raw_balance

    assert seen("latest") == 3 * ETHER
    assert seen() == ETHER

    anvil_mine(w3, SAFE_LAG)  # head = D + 32: safe now includes the deposit, finalized does not
    assert seen("safe") == 3 * ETHER
    anvil_mine(w3, FINALIZED_LAG - SAFE_LAG - 1)  # head = D + 63: finalized = D - 1
    ev = r.verify("ETH", [a], contract=None, decimals=18, symbol=None)
    assert (ev.block_number, ev.raw_balance) == (deposit_block - 1, ETHER)

    anvil_mine(w3, 1)  # head = D + 64: finalized = D
    ev = r.verify("ETH", [a], contract=None, decimals=18, symbol=None)
    assert (ev.block_number, ev.raw_balance) == (deposit_block, 3 * ETHER)


def test_latest_minus_n_selector(anvil: AnvilNode) -> None:
    w3 = anvil.w3
    a = new_address(w3)
    d = send_eth(w3, a, ETHER)
    anvil_mine(w3, 3)  # head = d + 3
    r = reader(anvil.url)
    ev = r.verify("ETH", [a], contract=None, decimals=18, symbol=None, block="latest-3")
    assert (ev.block_number, ev.raw_balance, ev.details["block_selector"]) == (d, ETHER, "latest-3")
    ev = r.verify("ETH", [a], contract=None, decimals=18, symbol=None, block="latest-4")
    assert (ev.block_number, ev.raw_balance) == (d - 1, 0)
    with pytest.raises(EvidenceError) as e:
        r.verify("ETH", [a], contract=None, decimals=18, symbol=None, block="latest-99999999")
    assert e.value.reason == "block_not_found"


# --- reorgs ---------------------------------------------------------------------------------


def reorg_head(w3: Any, to: str) -> Callable[[], None]:
    """An action that replaces the head block by one paying ``to`` 1, 2, 3... wei (a new hash each time)."""
    paid = [0]

    def action() -> None:
        paid[0] += 1
        tx = {"from": w3.eth.accounts[0], "to": to, "value": hex(paid[0])}
        rpc(w3, "anvil_reorg", [1, [[tx, 0]]])

    return action


def test_reorg_during_verification_is_retried_and_the_new_chain_wins(anvil: AnvilNode) -> None:
    w3 = anvil.w3
    a = new_address(w3)
    send_eth(w3, a, ETHER)  # the head block holds this deposit
    # Between pinning "latest" and re-checking its hash, the head block is replaced by another
    # that pays only 1 wei instead of the 1 ETH deposit.
    hook = HookProvider(anvil.url, "eth_getBalance", reorg_head(w3, a))
    r = EthereumCustodyReader(anvil.url, CHAIN, provider=hook, backoff_s=0.01)

    ev = r.verify("ETH", [a], contract=None, decimals=18, symbol=None, block="latest")

    assert ev.details["attempts"] == 2
    assert ev.raw_balance == 1  # the reorganised-away deposit is not counted; the new chain's is
    assert ev.block_hash == "0x" + bytes(w3.eth.get_block(ev.block_number)["hash"]).hex()


def test_reorg_on_every_attempt_fails_closed(anvil: AnvilNode) -> None:
    w3 = anvil.w3
    a = new_address(w3)
    send_eth(w3, a, ETHER)
    hook = HookProvider(anvil.url, "eth_getBalance", reorg_head(w3, a), every=True)
    r = EthereumCustodyReader(anvil.url, CHAIN, provider=hook, max_reorg_retries=2, backoff_s=0.01)
    with pytest.raises(EvidenceError) as e:
        r.verify("ETH", [a], contract=None, decimals=18, symbol=None, block="latest")
    assert e.value.reason == "reorg"
    assert hook.seen == 3  # 1 + max_reorg_retries attempts, then no evidence


# --- registry checks ------------------------------------------------------------------------


def test_contract_deployed_after_the_finalized_block_has_no_code_there(anvil: AnvilNode) -> None:
    w3 = anvil.w3
    finalize(w3)
    tok = token(w3, "fiat", "USDC")
    transact(w3, tok.functions.mint(new_address(w3), 10))
    r = reader(anvil.url)
    with pytest.raises(EvidenceError) as e:
        r.verify("USDC", [new_address(w3)], contract=tok.address, decimals=6, symbol="USDC")
    assert e.value.reason == "no_contract_code"
    assert "predates the deployment" in e.value.message and tok.address in e.value.message
    # the same call at latest sees the contract
    assert r.verify("USDC", [new_address(w3)], contract=tok.address, decimals=6, symbol="USDC", block="latest")


def test_decimals_mismatch_fails_closed(anvil: AnvilNode) -> None:
    w3 = anvil.w3
    tok = token(w3, "plain", "USDC", 18)  # an impostor "USDC" with 18 decimals
    transact(w3, tok.functions.mint(w := new_address(w3), 10**18))
    finalize(w3)
    with pytest.raises(EvidenceError) as e:
        reader(anvil.url).verify("USDC", [w], contract=tok.address, decimals=6, symbol="USDC")
    assert e.value.reason == "decimals_mismatch"
    assert "is 18" in e.value.message and "expects 6" in e.value.message


def test_symbol_mismatch_fails_closed(anvil: AnvilNode) -> None:
    w3 = anvil.w3
    tok = token(w3, "fiat", "USDT")
    finalize(w3)
    with pytest.raises(EvidenceError) as e:
        reader(anvil.url).verify("USDC", [new_address(w3)], contract=tok.address, decimals=6, symbol="USDC")
    assert e.value.reason == "symbol_mismatch" and "'USDT'" in e.value.message


def test_contract_that_is_not_a_token_fails_closed(anvil: AnvilNode) -> None:
    w3 = anvil.w3
    feed = deploy(w3, "MockAggregator", 8, "ETH / USD", 1)  # has decimals() but no balanceOf/symbol
    finalize(w3)
    with pytest.raises(EvidenceError) as e:
        reader(anvil.url).verify("X", [new_address(w3)], contract=feed.address, decimals=8, symbol="X")
    assert e.value.reason == "symbol_mismatch" and "could not be read" in e.value.message


@pytest.mark.parametrize(
    "address",
    [
        "0x12345",  # too short
        "12" * 20,  # no 0x
        "0x" + "g" * 40,  # not hex
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD",  # EIP-55 example with one letter's case flipped
    ],
)
def test_invalid_address_is_refused_before_any_read(anvil: AnvilNode, address: str) -> None:
    hook = HookProvider(anvil.url, "never", lambda: None)
    r = EthereumCustodyReader(anvil.url, CHAIN, provider=hook)
    with pytest.raises(EvidenceError) as e:
        r.verify("ETH", [new_address(anvil.w3), address], contract=None, decimals=18, symbol=None)
    assert e.value.reason == "invalid_address" and address in e.value.message
    assert hook.methods == []


def test_duplicate_address_would_double_count_and_is_refused(anvil: AnvilNode) -> None:
    a = new_address(anvil.w3)
    with pytest.raises(InputError):
        reader(anvil.url).verify("ETH", [a, a.lower()], contract=None, decimals=18, symbol=None)


def test_stale_block(anvil: AnvilNode) -> None:
    w3 = anvil.w3
    finalize(w3)
    ts = datetime.fromtimestamp(w3.eth.get_block("finalized")["timestamp"], tz=timezone.utc)
    r = reader(anvil.url)
    a = new_address(w3)
    ok = r.verify("ETH", [a], contract=None, decimals=18, symbol=None, max_block_age=timedelta(minutes=30),
                  now=ts + timedelta(minutes=29))
    assert ok.block_timestamp == ts
    with pytest.raises(EvidenceError) as e:
        r.verify("ETH", [a], contract=None, decimals=18, symbol=None, max_block_age=timedelta(minutes=30),
                 now=ts + timedelta(hours=2))
    assert e.value.reason == "stale_block"


def test_wrong_chain_names_both_ids(anvil: AnvilNode) -> None:
    with pytest.raises(EvidenceError) as e:
        reader(anvil.url, chain_id=1).verify("ETH", [new_address(anvil.w3)], contract=None, decimals=18, symbol=None)
    assert e.value.reason == "wrong_chain"
    assert "31337" in e.value.message and "chain id 1" in e.value.message


# --- restrictions: reported, never judged ---------------------------------------------------

FIAT_RESTRICTIONS = {"pause": "paused", "blacklist": "isBlacklisted"}


def test_paused_token_and_blacklisted_address_are_reported(anvil: AnvilNode) -> None:
    w3 = anvil.w3
    tok = token(w3, "fiat", "USDC")
    a, b = new_address(w3), new_address(w3)
    transact(w3, tok.functions.mint(a, 100))
    transact(w3, tok.functions.mint(b, 200))
    r = reader(anvil.url)
    finalize(w3)
    ev = r.verify("USDC", [a, b], contract=tok.address, decimals=6, symbol="USDC", restrictions=FIAT_RESTRICTIONS)
    assert (ev.details["paused"], ev.details["frozen_addresses"]) == (False, [])

    transact(w3, tok.functions.blacklist(b))
    transact(w3, tok.functions.pause())
    finalize(w3)
    ev = r.verify("USDC", [a, b], contract=tok.address, decimals=6, symbol="USDC", restrictions=FIAT_RESTRICTIONS)
    assert ev.raw_balance == 300  # the balance is still reported: the engine decides what it is worth
    assert ev.details["paused"] is True
    assert ev.details["frozen_addresses"] == [b]
    assert ev.details["restriction_reads"]["blacklist"]["by_address"] == {a: False, b: True}


def test_fund_token_holder_not_on_allow_list_is_reported(anvil: AnvilNode) -> None:
    w3 = anvil.w3
    fund = token(w3, "fund", "BUIDL")
    a, b = new_address(w3), new_address(w3)
    for holder in (a, b):
        transact(w3, fund.functions.setAllowed(holder, True))
    transact(w3, fund.functions.mint(a, 1_000_000))
    transact(w3, fund.functions.mint(b, 2_000_000))
    transact(w3, fund.functions.setAllowed(b, False))  # b was removed from the allow-list later
    finalize(w3)
    ev = reader(anvil.url).verify(
        "BUIDL", [a, b], contract=fund.address, decimals=6, symbol="BUIDL", restrictions={"allowlist": "isAllowed"}
    )
    assert ev.raw_balance == 3_000_000
    assert ev.details["not_allowed_addresses"] == [b]


def test_restriction_view_that_does_not_exist_is_unknown_not_guessed(anvil: AnvilNode) -> None:
    w3 = anvil.w3
    tok = token(w3, "plain", "OUSG", 18)  # no paused(), no isBlacklisted(), no isAllowed()
    finalize(w3)
    ev = reader(anvil.url).verify(
        "OUSG", [new_address(w3)], contract=tok.address, decimals=18, symbol="OUSG",
        restrictions={"pause": "paused", "blacklist": "isBlacklisted", "allowlist": "isAllowed"},
    )
    assert ev.details["paused"] is None
    assert ev.details["frozen_addresses"] is None
    assert ev.details["not_allowed_addresses"] is None


# --- the node goes away ---------------------------------------------------------------------


def test_node_killed_mid_verification(fresh_anvil: AnvilNode) -> None:
    w3 = fresh_anvil.w3
    a, b = new_address(w3), new_address(w3)
    send_eth(w3, a, ETHER)
    finalize(w3)
    hook = HookProvider(fresh_anvil.url, "eth_getBalance", fresh_anvil.kill, on_call=2)  # after a's balance
    r = EthereumCustodyReader(fresh_anvil.url, CHAIN, provider=hook, retries=2, backoff_s=0.01)
    t0 = time.monotonic()
    with pytest.raises(EvidenceError) as e:
        r.verify("ETH", [a, b], contract=None, decimals=18, symbol=None)
    assert e.value.reason == "node_unreachable"
    assert "gave up after 3 attempts" in e.value.message
    assert time.monotonic() - t0 < 2
    assert fresh_anvil.proc is None  # really gone


def test_node_restarted_on_another_chain(fresh_anvil: AnvilNode) -> None:
    w3 = fresh_anvil.w3
    a = new_address(w3)
    send_eth(w3, a, ETHER)
    finalize(w3)
    r = reader(fresh_anvil.url)
    assert r.verify("ETH", [a], contract=None, decimals=18, symbol=None).raw_balance == ETHER

    fresh_anvil.restart(chain_id=1)
    with pytest.raises(EvidenceError) as e:
        r.verify("ETH", [a], contract=None, decimals=18, symbol=None)
    assert e.value.reason == "wrong_chain"


def test_node_restarted_on_another_chain_mid_verification(fresh_anvil: AnvilNode) -> None:
    w3 = fresh_anvil.w3
    a = new_address(w3)
    send_eth(w3, a, ETHER)
    finalize(w3)
    hook = HookProvider(fresh_anvil.url, "eth_getBalance", lambda: fresh_anvil.restart(chain_id=1))
    r = EthereumCustodyReader(fresh_anvil.url, CHAIN, provider=hook, backoff_s=0.01)
    with pytest.raises(EvidenceError) as e:
        r.verify("ETH", [a], contract=None, decimals=18, symbol=None)
    assert e.value.reason == "wrong_chain"


def test_unreachable_port() -> None:
    port = free_port()  # nothing listens here
    t0 = time.monotonic()
    with pytest.raises(EvidenceError) as e:
        reader(f"http://127.0.0.1:{port}").verify("ETH", ["0x" + "11" * 20], contract=None, decimals=18, symbol=None)
    assert e.value.reason == "node_unreachable" and "gave up after 3 attempts" in e.value.message
    assert time.monotonic() - t0 < 2


@pytest.mark.parametrize(("mode", "reason", "requests"), [
    ("status_500", "http_error", 3),  # server trouble: retried (1 + retries=2)
    ("status_502", "http_error", 3),
    ("status_401", "http_error", 1),  # bad credentials will not heal: not retried
    ("not_json", "bad_response", 3),
    ("rpc_error", "rpc_error", 3),
])
def test_http_and_json_rpc_failures(mode: str, reason: str, requests: int) -> None:
    with stub_server(mode) as srv:
        with pytest.raises(EvidenceError) as e:
            reader(srv.url).verify("ETH", ["0x" + "11" * 20], contract=None, decimals=18, symbol=None)
    assert e.value.reason == reason
    assert srv.requests_seen == requests
    if mode.startswith("status_"):
        assert mode.split("_")[1] in e.value.message


def test_timeout_is_bounded() -> None:
    with stub_server("hang") as srv:
        t0 = time.monotonic()
        with pytest.raises(EvidenceError) as e:
            reader(srv.url, request_timeout_s=0.2, retries=1).verify(
                "ETH", ["0x" + "11" * 20], contract=None, decimals=18, symbol=None
            )
        elapsed = time.monotonic() - t0
    assert e.value.reason == "timeout"
    assert srv.requests_seen == 2
    assert elapsed < HANG_S


def test_total_time_budget_stops_retries_early() -> None:
    port = free_port()
    sleeps: list[float] = []
    r = EthereumCustodyReader(
        f"http://127.0.0.1:{port}", CHAIN, retries=50, backoff_s=0.05, max_total_s=0.5, sleep=lambda s: (sleeps.append(s), time.sleep(s))
    )
    t0 = time.monotonic()
    with pytest.raises(EvidenceError) as e:
        r.verify("ETH", ["0x" + "11" * 20], contract=None, decimals=18, symbol=None)
    assert e.value.reason == "node_unreachable" and "time budget spent" in e.value.message
    assert time.monotonic() - t0 < 1.0
    assert sleeps == [0.05, 0.1, 0.2]  # exponential, and stopped once the next wait would overrun


def test_credentials_are_stripped_from_source(anvil: AnvilNode) -> None:
    url = anvil.url.replace("http://", "http://user:s3cret@") + "/?apikey=abc"
    r = reader(url)
    ev = r.verify("ETH", [new_address(anvil.w3)], contract=None, decimals=18, symbol=None)
    assert ev.source == anvil.url + "/"
    assert "s3cret" not in str(ev.to_json())
