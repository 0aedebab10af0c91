"""The shared EVM transport without a node: selectors, URL redaction, retry accounting."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from web3.providers import BaseProvider

from adapters.ethereum.custody import EthereumCustodyReader
from adapters.ethereum.rpc import BlockSelector, EvmRpc
from adapters.retry import RetryPolicy
from adapters.urls import endpoint as redact_url
from rules.errors import EvidenceError, InputError


@pytest.mark.parametrize(
    ("text", "tag", "offset"),
    [("finalized", "finalized", 0), ("safe", "safe", 0), ("latest", "latest", 0), ("latest-0", "latest", 0),
     ("latest-12", "latest", 12)],
)
def test_block_selectors(text: str, tag: str, offset: int) -> None:
    sel = BlockSelector.parse(text)
    assert (sel.tag, sel.offset, sel.text) == (tag, offset, text)


@pytest.mark.parametrize("bad", ["pending", "earliest", "latest-", "latest+1", "latest--1", "Latest", "12", "", None])
def test_bad_block_selectors(bad: Any) -> None:
    with pytest.raises(InputError) as e:
        BlockSelector.parse(bad)
    assert e.value.where == "block"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://127.0.0.1:8545", "http://127.0.0.1:8545"),
        ("https://user:pa55@node.example:8443/rpc?key=abc#x", "https://node.example:8443/rpc"),
        ("https://mainnet.infura.io/v3/0123456789abcdef0123456789abcdef", "https://mainnet.infura.io/v3/***"),
        ("https://eth-mainnet.g.alchemy.com/v2/AbCdEfGhIjKlMnOpQrStUv-_1", "https://eth-mainnet.g.alchemy.com/v2/***"),
        ("http://[::1]:8545/", "http://[::1]:8545/"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_policy_and_argument_checks() -> None:
    with pytest.raises(InputError):
        RetryPolicy(retries=-1)
    with pytest.raises(InputError):
        RetryPolicy(max_total_s=0)
    with pytest.raises(InputError):
        EvmRpc("http://127.0.0.1:1", 0)
    with pytest.raises(InputError):
        EvmRpc("http://127.0.0.1:1", True)  # type: ignore[arg-type]
    with pytest.raises(InputError):
        EthereumCustodyReader("http://127.0.0.1:1", 1, max_reorg_retries=-1)


class ScriptedProvider(BaseProvider):
    """Answers from a script: an exception instance is raised, anything else is the result."""

    def __init__(self, script: list[Any]):
        super().__init__()
        self.script = list(script)
        self.calls: list[str] = []

    def make_request(self, method: Any, params: Any) -> Any:
        self.calls.append(method)
        step = self.script.pop(0) if self.script else self.script_default(method)
        if isinstance(step, BaseException):
            raise step
        return {"jsonrpc": "2.0", "id": 1, "result": step}

    @staticmethod
    def script_default(method: str) -> Any:
        raise AssertionError(f"unscripted {method}")


def test_retries_then_success_counts_and_backs_off() -> None:
    sleeps: list[float] = []
    prov = ScriptedProvider([requests.ConnectionError("refused"), requests.Timeout("slow"), "0x7a69"])
    rpc = EvmRpc("http://node", 31337, RetryPolicy(retries=3, backoff_s=0.5), provider=prov, sleep=sleeps.append)
    budget = rpc.budget()
    assert rpc.check_chain(budget) == 31337
    assert sleeps == [0.5, 1.0]
    assert (budget.requests, budget.retries) == (3, 2)


def test_time_budget_is_checked_before_each_wait() -> None:
    now = [0.0]
    prov = ScriptedProvider([requests.ConnectionError("refused")] * 10)

    def sleep(s: float) -> None:
        now[0] += s

    rpc = EvmRpc("http://node", 1, RetryPolicy(retries=9, backoff_s=1.0, max_total_s=5.0), provider=prov,
                 sleep=sleep, clock=lambda: now[0])
    with pytest.raises(EvidenceError) as e:
        rpc.check_chain(rpc.budget())
    assert e.value.reason == "node_unreachable" and "time budget spent" in e.value.message
    assert now[0] == 3.0  # waited 1 + 2; the next wait (4) would pass the 5 s budget
    assert len(prov.calls) == 3


def test_wrong_chain_is_not_retried() -> None:
    prov = ScriptedProvider(["0x1"])
    rpc = EvmRpc("http://node", 11155111, provider=prov)
    with pytest.raises(EvidenceError) as e:
        rpc.check_chain(rpc.budget())
    assert e.value.reason == "wrong_chain"
    assert "chain id 1," in e.value.message and "11155111" in e.value.message
