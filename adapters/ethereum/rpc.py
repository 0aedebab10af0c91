"""JSON-RPC transport shared by the Ethereum custody reader and the Chainlink price source.

One job: turn "ask an EVM node something" into either an answer or an ``EvidenceError`` with a
stable reason: which failures are worth a retry (``adapters.retry`` bounds them in count *and* in
total time, exponential backoff), the chain-id check and block-selector resolution. The node's URL is
shown redacted (``adapters.urls.endpoint``). It decides nothing about eligibility.

web3.py's own retry layer is switched off (``exception_retry_configuration=None``) and the
default middleware is dropped, so that every request a reader makes is one we can see, count
and bound here.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, NoReturn, TypeVar

import requests
from eth_abi import encode as abi_encode
from web3 import Web3
from web3.exceptions import (
    BadFunctionCallOutput,
    BadResponseFormat,
    BlockNotFound,
    ContractLogicError,
    Web3RPCError,
)
from web3.providers import BaseProvider, HTTPProvider

from adapters import retry, urls
from adapters.retry import RetryPolicy
from rules.errors import EvidenceError, InputError
from rules.values import now_utc

T = TypeVar("T")

# HTTP statuses worth retrying; any other 4xx (401, 403, 404...) will not heal by itself.
_TRANSIENT_HTTP = {408, 425, 429}
# JSON-RPC errors that say the request itself is wrong (invalid request/method/params): no retry.
_PERMANENT_RPC = {-32600, -32601, -32602}


class Budget:
    """Time and attempt accounting for one operation (one ``verify`` or one ``read``)."""

    def __init__(self, policy: RetryPolicy, clock: Callable[[], float]):
        self._clock = clock
        self.deadline = clock() + (policy.max_total_s if policy.max_total_s is not None else float("inf"))
        self.requests = 0
        self.retries = 0
        self.chain_checked = False

    def remaining(self) -> float:
        return self.deadline - self._clock()


def _classify(exc: BaseException) -> tuple[str, bool, str]:
    """(reason, retryable, plain words) for a transport or node failure."""
    if isinstance(exc, requests.exceptions.Timeout):  # before ConnectionError: ConnectTimeout is both
        return "timeout", True, "the node did not answer in time"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return "node_unreachable", True, f"cannot connect to the node ({type(exc).__name__})"
    if isinstance(exc, requests.exceptions.HTTPError):
        status = exc.response.status_code if exc.response is not None else None
        again = status is None or status >= 500 or status in _TRANSIENT_HTTP
        return "http_error", again, f"the node answered HTTP {status}"
    if isinstance(exc, Web3RPCError):
        err = (exc.rpc_response or {}).get("error") or {}
        code = err.get("code") if isinstance(err, dict) else None
        words = err.get("message") if isinstance(err, dict) and err.get("message") else exc.message
        return "rpc_error", code not in _PERMANENT_RPC, f"the node returned JSON-RPC error {code}: {words}"
    if isinstance(exc, (BadResponseFormat, json.JSONDecodeError, UnicodeDecodeError)):
        # A body that is not JSON-RPC (a proxy's HTML page, say).
        return "bad_response", True, f"the node's answer could not be read: {exc}"
    if isinstance(exc, requests.exceptions.RequestException):
        return "node_unreachable", True, f"request failed ({type(exc).__name__})"
    raise exc  # a programming error: let it show


class EvmRpc:
    """A node at ``rpc_url`` that must be on ``expected_chain_id``.

    ``provider`` replaces the default ``HTTPProvider`` (tests use it to inject faults between
    requests; production may pass an IPC provider). ``sleep`` and ``clock`` are injectable so the
    backoff can be tested without waiting.
    """

    def __init__(
        self,
        rpc_url: str,
        expected_chain_id: int,
        policy: RetryPolicy | None = None,
        *,
        provider: BaseProvider | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        if not isinstance(rpc_url, str) or not rpc_url:
            raise InputError("an RPC URL is required", "rpc_url")
        if isinstance(expected_chain_id, bool) or not isinstance(expected_chain_id, int) or expected_chain_id <= 0:
            raise InputError(f"must be a positive integer, got {expected_chain_id!r}", "expected_chain_id")
        self.policy = policy or RetryPolicy()
        self.expected_chain_id = expected_chain_id
        self.source = urls.endpoint(rpc_url)
        if provider is None:
            provider = HTTPProvider(
                rpc_url,
                request_kwargs={"timeout": self.policy.request_timeout_s},
                exception_retry_configuration=None,
            )
        self.w3 = Web3(provider, middleware=[])
        self._sleep = sleep
        self._clock = clock

    def budget(self) -> Budget:
        return Budget(self.policy, self._clock)

    def call(self, what: str, fn: Callable[[], T], budget: Budget) -> T:
        """Run one node request with bounded retries; raise ``EvidenceError`` when they run out.

        ``ContractLogicError`` / ``BadFunctionCallOutput`` (a revert, or no such function) are
        answers, not transport failures: they are re-raised at once for the caller to judge.
        """
        def attempt() -> T:
            budget.requests += 1
            return fn()

        def transient(exc: Exception) -> bool:
            if isinstance(exc, (ContractLogicError, BadFunctionCallOutput, BlockNotFound)):
                raise exc  # an answer, not a transport failure
            return _classify(exc)[1]  # unknown exceptions (programming errors) are re-raised there

        def give_up(exc: Exception, stop: retry.Stop) -> NoReturn:
            reason, retryable, words = _classify(exc)
            n, retries = stop.attempts, self.policy.retries
            why = (
                "not retried"
                if not retryable
                else f"gave up after {n} attempt{'s' if n != 1 else ''}"
                + (" (time budget spent)" if stop.out_of_time and (retries is None or n <= retries) else "")
            )
            raise EvidenceError(reason, f"{what} at {self.source}: {words}; {why}") from exc

        def count_retry() -> None:
            budget.retries += 1

        return retry.call(attempt, self.policy, transient=transient, give_up=give_up, remaining=budget.remaining,
                          sleep=self._sleep, on_retry=count_retry)

    def check_chain(self, budget: Budget) -> int:
        """The node's chain id, which must equal the expected one (``wrong_chain`` otherwise)."""
        chain_id = self.call("eth_chainId", lambda: self.w3.eth.chain_id, budget)
        if chain_id != self.expected_chain_id:
            raise EvidenceError(
                "wrong_chain",
                f"node at {self.source} is on chain id {chain_id}, expected chain id {self.expected_chain_id}",
            )
        budget.chain_checked = True
        return chain_id

    def probe_chain(self, budget: Budget) -> None:
        """After a node error, one quick look (no retries) whether the node now serves another chain.

        A node restarted on another chain answers reads at a block it does not have with
        "block out of range" errors; ``wrong_chain`` is then the truer reason. Raises only that;
        anything else (the probe failing too) leaves the caller's error standing.
        """
        if not budget.chain_checked:
            return  # the chain check itself failed: nothing to learn
        budget.requests += 1
        try:
            chain_id = self.w3.eth.chain_id
        except Exception:  # noqa: BLE001 - the original error is the better explanation
            return
        if chain_id != self.expected_chain_id:
            raise EvidenceError(
                "wrong_chain",
                f"node at {self.source} is now on chain id {chain_id}, expected chain id {self.expected_chain_id}",
            )

    def get_block(self, ident: int | str, budget: Budget) -> PinnedBlock | None:
        """The block (number, hash, timestamp) for a number or tag; None if the node has none."""
        try:
            blk = self.call(f"eth_getBlockByNumber({ident})", lambda: self.w3.eth.get_block(ident), budget)
        except BlockNotFound:
            return None
        return PinnedBlock(
            number=int(blk["number"]),
            hash="0x" + bytes(blk["hash"]).hex(),
            timestamp=datetime.fromtimestamp(int(blk["timestamp"]), tz=timezone.utc),
        )

    def resolve_block(self, selector: BlockSelector, budget: Budget) -> PinnedBlock:
        """Pin a selector to one block, read once."""
        if selector.offset == 0:
            blk = self.get_block(selector.tag, budget)
            if blk is None:
                raise EvidenceError(
                    "block_not_found", f"node at {self.source} has no '{selector.tag}' block (does it support the tag?)"
                )
            return blk
        head = self.get_block("latest", budget)
        if head is None or head.number < selector.offset:
            raise EvidenceError(
                "block_not_found",
                f"chain at {self.source} is shorter than {selector.offset} blocks; cannot pin '{selector.text}'",
            )
        blk = self.get_block(head.number - selector.offset, budget)
        if blk is None:
            raise EvidenceError("block_not_found", f"block {head.number - selector.offset} vanished while pinning")
        return blk

    def still_canonical(self, pinned: PinnedBlock, budget: Budget) -> bool:
        """True if the block at the pinned number still has the pinned hash (no reorg)."""
        again = self.get_block(pinned.number, budget)
        return again is not None and again.hash == pinned.hash


@dataclass(frozen=True)
class PinnedBlock:
    number: int
    hash: str
    timestamp: datetime


_SELECTOR = re.compile(r"^(finalized|safe|latest)$|^latest-([0-9]{1,9})$")


@dataclass(frozen=True)
class BlockSelector:
    """``finalized``, ``safe``, ``latest`` or ``latest-N`` (N blocks below the head)."""

    text: str
    tag: str
    offset: int

    @classmethod
    def parse(cls, text: str) -> BlockSelector:
        m = _SELECTOR.match(text) if isinstance(text, str) else None
        if not m:
            raise InputError(
                f"must be 'finalized', 'safe', 'latest' or 'latest-N', got {text!r}", "block"
            )
        if m.group(1):
            return cls(text=text, tag=m.group(1), offset=0)
        return cls(text=text, tag="latest", offset=int(m.group(2)))


def require_aware(now: datetime | None, where: str = "now") -> datetime:
    """``now`` as an aware UTC datetime (the current time if None)."""
    if now is None:
        return now_utc()
    if not isinstance(now, datetime) or now.tzinfo is None or now.utcoffset() is None:
        raise InputError("must be a timezone-aware datetime", where)
    return now.astimezone(timezone.utc)


def has_code(rpc: EvmRpc, address: str, block_number: int, budget: Budget) -> bool:
    """True if ``address`` holds contract code at ``block_number``."""
    code = rpc.call(
        f"eth_getCode({address})", lambda: rpc.w3.eth.get_code(address, block_identifier=block_number), budget
    )
    return len(bytes(code)) > 0


def selector(signature: str) -> bytes:
    """The 4-byte function selector of e.g. ``balanceOf(address)``."""
    return bytes(Web3.keccak(text=signature)[:4])


def call_view(
    rpc: EvmRpc,
    to: str,
    signature: str,
    arg_types: list[str],
    args: list[object],
    block_number: int,
    budget: Budget,
) -> bytes | None:
    """Raw ``eth_call`` of a view function at a pinned block.

    Returns the return data, or None if the call reverted (which includes "no such function" on
    a contract without a fallback). Transport failures go through the retry policy. Decoding is
    the caller's business: a view that does not exist may also answer with empty data.
    """
    data = selector(signature) + (abi_encode(arg_types, args) if arg_types else b"")
    tx = {"to": to, "data": "0x" + data.hex()}
    try:
        out = rpc.call(
            f"eth_call {signature} on {to}", lambda: rpc.w3.eth.call(tx, block_identifier=block_number), budget
        )
    except (ContractLogicError, BadFunctionCallOutput):
        return None
    return bytes(out)


__all__ = [
    "BlockSelector",
    "Budget",
    "EvmRpc",
    "PinnedBlock",
    "call_view",
    "has_code",
    "selector",
    "require_aware",
]
