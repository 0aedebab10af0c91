"""Custody balances on Ethereum (native ETH or an ERC-20), read at one pinned block.

``EthereumCustodyReader.verify`` returns ``CustodyEvidence`` or raises ``EvidenceError``; never a
partial result. It *reports* token restrictions (paused, frozen, not allow-listed) in
``details`` and leaves the judgement to the engine's rules.

Why pin: the balance of several addresses is only meaningful as a sum if every read is at the
same block, and only final once that block cannot be reorganised away. So the selector is
resolved once to a number and hash, every read is made at that number, and at the end the hash
at that number is read again: if it changed, the whole verification is retried (bounded).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping, Sequence

from eth_abi import decode as abi_decode
from web3.providers import BaseProvider

from adapters.ethereum.address import checksum_address, checksum_addresses
from rules.evidence import CustodyEvidence
from adapters.ethereum.rpc import (
    BlockSelector,
    Budget,
    EvmRpc,
    PinnedBlock,
    call_view,
    has_code,
    require_aware,
)
from adapters.retry import RetryPolicy
from rules.errors import EvidenceError, InputError

NATIVE_DECIMALS = 18

# restriction kind -> (argument types of the view, details key)
RESTRICTION_KINDS: dict[str, tuple[list[str], str]] = {
    "pause": ([], "paused"),
    "blacklist": (["address"], "frozen_addresses"),
    "allowlist": (["address"], "not_allowed_addresses"),
}
_IDENTIFIER = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")
# The restriction views this adapter reads (name -> argument types; each returns bool). The policy loader
# checks a bundle's restriction names against the same file, so a name validation accepts is one read here.
RESTRICTION_ABI_PATH = Path(__file__).resolve().parents[2] / "rules" / "schema" / "restriction_views.abi.json"


def restriction_views() -> dict[str, tuple[str, ...]]:
    entries = json.loads(RESTRICTION_ABI_PATH.read_text(encoding="utf-8"))
    return {e["name"]: tuple(i["type"] for i in e["inputs"]) for e in entries
            if e.get("type") == "function" and [o["type"] for o in e.get("outputs", [])] == ["bool"]}


class EthereumCustodyReader:
    """Reads custody balances from one Ethereum JSON-RPC node that must be on ``expected_chain_id``.

    Transport: each request is retried up to ``retries`` times with exponential backoff from
    ``backoff_s``, and a whole verification stops retrying after ``max_total_s``. A reorg of the
    pinned block restarts the verification at most ``max_reorg_retries`` times. ``on_chain(...,
    quick=True)`` (a credit's read again before it commits) makes one attempt within ``recheck_timeout_s``.
    """

    def __init__(
        self,
        rpc_url: str,
        expected_chain_id: int,
        *,
        request_timeout_s: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.25,
        max_total_s: float = 30.0,
        max_reorg_retries: int = 2,
        recheck_timeout_s: float = 2.0,
        provider: BaseProvider | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if isinstance(max_reorg_retries, bool) or not isinstance(max_reorg_retries, int) or max_reorg_retries < 0:
            raise InputError(f"must be a non-negative integer, got {max_reorg_retries!r}", "max_reorg_retries")
        policy = RetryPolicy(request_timeout_s=request_timeout_s, retries=retries, backoff_s=backoff_s,
                             max_total_s=max_total_s)
        self.rpc = EvmRpc(rpc_url, expected_chain_id, policy, provider=provider, sleep=sleep)
        # The read again before a credit commits runs with the ledger's locks held (on the decision worker, in
        # dacp serve): one attempt, its own short deadline, never the verification's retries.
        quick = RetryPolicy(request_timeout_s=recheck_timeout_s, retries=0, max_total_s=recheck_timeout_s)
        self._quick = EvmRpc(rpc_url, expected_chain_id, quick, provider=provider, sleep=sleep)
        self.max_reorg_retries = max_reorg_retries

    @property
    def source(self) -> str:
        return self.rpc.source

    def verify(
        self,
        asset: str,
        addresses: Sequence[str],
        *,
        contract: str | None,
        decimals: int,
        symbol: str | None,
        block: str = "finalized",
        max_block_age: timedelta | None = None,
        now: datetime | None = None,
        restrictions: Mapping[str, str] | None = None,
    ) -> CustodyEvidence:
        """Sum the balance of ``asset`` over ``addresses`` at one pinned block.

        ``contract`` None means native ETH (``decimals`` must then be 18). For an ERC-20 the
        contract's ``decimals()`` and ``symbol()`` at the pinned block must equal the registry's
        ``decimals`` / ``symbol`` (``symbol`` None skips that check). ``restrictions`` maps
        ``pause`` / ``blacklist`` / ``allowlist`` to the names of view functions to read.
        """
        if not isinstance(asset, str) or not asset:
            raise InputError("an asset name is required", "asset")
        holders = checksum_addresses(addresses, "address")
        token = None if contract is None else checksum_address(contract, "contract")
        if isinstance(decimals, bool) or not isinstance(decimals, int) or not 0 <= decimals <= 255:
            raise InputError(f"must be an integer 0..255, got {decimals!r}", "decimals")
        if token is None and decimals != NATIVE_DECIMALS:
            raise InputError(f"native ETH has {NATIVE_DECIMALS} decimals, the registry says {decimals}", "decimals")
        if symbol is not None and (not isinstance(symbol, str) or not symbol):
            raise InputError(f"must be a non-empty string or None, got {symbol!r}", "symbol")
        checks = _parse_restrictions(restrictions, token)
        selector = BlockSelector.parse(block)
        if max_block_age is not None and (not isinstance(max_block_age, timedelta) or max_block_age < timedelta(0)):
            raise InputError(f"must be a non-negative timedelta, got {max_block_age!r}", "max_block_age")
        at = require_aware(now)

        budget = self.rpc.budget()
        for attempt in range(1, self.max_reorg_retries + 2):
            try:
                pinned, balances, details = self._read_once(
                    holders, token, decimals, symbol, selector, max_block_age, at, checks, budget
                )
            except EvidenceError as exc:
                if exc.reason == "rpc_error":
                    self.rpc.probe_chain(budget)
                raise
            self.rpc.check_chain(budget)  # a node swapped under us mid-way is no evidence
            if self.rpc.still_canonical(pinned, budget):
                head = self.rpc.call("eth_blockNumber", lambda: self.rpc.w3.eth.block_number, budget)
                details.update(
                    {
                        "block_selector": selector.text,
                        "attempts": attempt,
                        "rpc_requests": budget.requests,
                        "rpc_retries": budget.retries,
                    }
                )
                return CustodyEvidence(
                    asset=asset,
                    chain="ethereum",
                    network=str(self.rpc.expected_chain_id),
                    addresses=holders,
                    raw_balance=sum(balances.values()),
                    decimals=decimals,
                    block_number=pinned.number,
                    block_hash=pinned.hash,
                    block_timestamp=pinned.timestamp,
                    source=self.rpc.source,
                    contract=token,
                    confirmations=max(int(head) - pinned.number + 1, 1),
                    details=details,
                )
        raise EvidenceError(
            "reorg",
            f"block {pinned.number} ({selector.text}) was reorganised during each of "
            f"{self.max_reorg_retries + 1} attempts at {self.rpc.source}; no balance reported",
        )

    def on_chain(self, block_number: int, block_hash: str, *, quick: bool = False) -> bool:
        """True if this node (on the expected chain) still has ``block_hash`` at ``block_number``.

        A credit asks this after it holds the ledger's locks and before it commits (a reorg between the
        read and the commit is no evidence), and re-verification asks it of a stored balance's block before
        a reading at a lower block replaces it (a reorg to a shorter chain). A block the node no longer has
        at that height is False; an unreachable node raises ``EvidenceError``, never a guess.
        ``quick``: one attempt within ``recheck_timeout_s`` (what a credit asks with its locks held)."""
        rpc = self._quick if quick else self.rpc
        budget = rpc.budget()
        rpc.check_chain(budget)
        again = rpc.get_block(int(block_number), budget)
        return again is not None and again.hash == block_hash

    def _read_once(
        self,
        holders: tuple[str, ...],
        token: str | None,
        decimals: int,
        symbol: str | None,
        selector: BlockSelector,
        max_block_age: timedelta | None,
        now: datetime,
        checks: dict[str, str],
        budget: Budget,
    ) -> tuple[PinnedBlock, dict[str, int], dict[str, Any]]:
        rpc = self.rpc
        rpc.check_chain(budget)
        pinned = rpc.resolve_block(selector, budget)
        if max_block_age is not None and now - pinned.timestamp > max_block_age:
            raise EvidenceError(
                "stale_block",
                f"block {pinned.number} ({selector.text}) is from {pinned.timestamp.isoformat()}, "
                f"{now - pinned.timestamp} before {now.isoformat()}; the limit is {max_block_age}",
            )
        n = pinned.number
        details: dict[str, Any] = {}
        balances: dict[str, int] = {}
        if token is None:
            for a in holders:
                balances[a] = int(rpc.call(f"eth_getBalance({a})", lambda a=a: rpc.w3.eth.get_balance(a, n), budget))
        else:
            if not has_code(rpc, token, n, budget):
                raise EvidenceError(
                    "no_contract_code",
                    f"no contract code at {token} in block {n} ({selector.text}); wrong address, wrong chain, "
                    "or the pinned block predates the deployment",
                )
            self._check_token(token, decimals, symbol, n, budget, details)
            for a in holders:
                raw = call_view(rpc, token, "balanceOf(address)", ["address"], [a], n, budget)
                value = _decode_uint(raw)
                if value is None:
                    raise EvidenceError(
                        "contract_call_failed", f"balanceOf({a}) on {token} at block {n} reverted or returned no uint256"
                    )
                balances[a] = value
            details.update(self._read_restrictions(token, holders, checks, n, budget))
        details["balances"] = {a: str(v) for a, v in balances.items()}
        return pinned, balances, details

    def _check_token(
        self, token: str, decimals: int, symbol: str | None, n: int, budget: Budget, details: dict[str, Any]
    ) -> None:
        onchain_decimals = _decode_uint(call_view(self.rpc, token, "decimals()", [], [], n, budget))
        if onchain_decimals != decimals:
            seen = "could not be read" if onchain_decimals is None else f"is {onchain_decimals}"
            raise EvidenceError(
                "decimals_mismatch",
                f"decimals() of {token} at block {n} {seen}; the asset registry expects {decimals}",
            )
        onchain_symbol = _decode_symbol(call_view(self.rpc, token, "symbol()", [], [], n, budget))
        details["symbol"] = onchain_symbol
        if symbol is not None and onchain_symbol != symbol:
            seen = "could not be read" if onchain_symbol is None else f"is {onchain_symbol!r}"
            raise EvidenceError(
                "symbol_mismatch", f"symbol() of {token} at block {n} {seen}; the asset registry expects {symbol!r}"
            )

    def _read_restrictions(
        self, token: str, holders: tuple[str, ...], checks: dict[str, str], n: int, budget: Budget
    ) -> dict[str, Any]:
        """Read the named restriction views. Unknown (revert, missing, not a bool) is None, never a guess."""
        out: dict[str, Any] = {}
        reads: dict[str, Any] = {}
        for kind, fn in checks.items():
            arg_types, key = RESTRICTION_KINDS[kind]
            if not arg_types:
                value = _decode_bool(call_view(self.rpc, token, f"{fn}()", [], [], n, budget))
                out[key] = value
                reads[kind] = {"function": f"{fn}()", "value": value}
                if value is None:
                    reads[kind]["unreadable"] = _unreadable(f"{fn}()", token, n)
                continue
            by_address = {
                a: _decode_bool(call_view(self.rpc, token, f"{fn}(address)", ["address"], [a], n, budget))
                for a in holders
            }
            reads[kind] = {"function": f"{fn}(address)", "by_address": by_address}
            if None in by_address.values():
                reads[kind]["unreadable"] = _unreadable(f"{fn}(address)", token, n)
            flagged = True if kind == "blacklist" else False  # value that marks an address as restricted
            out[key] = None if None in by_address.values() else [a for a, v in by_address.items() if v is flagged]
        if reads:
            out["restriction_reads"] = reads
        return out


def _parse_restrictions(restrictions: Mapping[str, str] | None, token: str | None) -> dict[str, str]:
    if not restrictions:
        return {}
    if token is None:
        raise InputError("native ETH has no token restrictions to read", "restrictions")
    if not isinstance(restrictions, Mapping):
        raise InputError("must be a mapping of restriction kind to view-function name", "restrictions")
    checks: dict[str, str] = {}
    views = restriction_views()
    for kind, fn in restrictions.items():
        if kind not in RESTRICTION_KINDS:
            raise InputError(f"unknown kind {kind!r}; expected one of {sorted(RESTRICTION_KINDS)}", "restrictions")
        if not isinstance(fn, str) or not _IDENTIFIER.match(fn):
            raise InputError(f"{kind}: {fn!r} is not a Solidity function name", "restrictions")
        if views.get(fn) != tuple(RESTRICTION_KINDS[kind][0]):
            raise InputError(f"{kind}: {fn!r} is not {'an' if kind[0] in 'aeiou' else 'a'} {kind} view this adapter reads ({RESTRICTION_ABI_PATH.name}: "
                             f"{', '.join(sorted(views))})", "restrictions")
        checks[kind] = fn
    return checks


def _unreadable(function: str, token: str, n: int) -> str:
    return (f"{function} on {token} at block {n} reverted or returned no bool (the contract lacks it, or it failed):"
            " the restriction is unknown, so it fails closed")


def _decode_uint(raw: bytes | None) -> int | None:
    if raw is None or len(raw) != 32:
        return None
    return int.from_bytes(raw, "big")


def _decode_bool(raw: bytes | None) -> bool | None:
    value = _decode_uint(raw)
    return None if value not in (0, 1) else bool(value)


def _decode_symbol(raw: bytes | None) -> str | None:
    """ABI ``string``, or the ``bytes32`` some old tokens (MKR) return."""
    if raw is None:
        return None
    if len(raw) >= 64:
        try:
            (text,) = abi_decode(["string"], raw)
            return str(text)
        except Exception:  # noqa: BLE001 - any decoding failure means "not a string"
            pass
    if len(raw) == 32:
        try:
            return raw.rstrip(b"\0").decode("utf-8") or None
        except UnicodeDecodeError:
            return None
    return None
