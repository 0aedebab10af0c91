"""USD prices with provenance: a Chainlink-style aggregator on an EVM chain, or a static file.

Both return ``PriceEvidence`` with an exact ``Decimal`` price; neither ever goes through float.
A price that is stale, not positive or from an unfinished round is an ``EvidenceError``: no
price is better than a wrong one.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Callable

import yaml
from eth_abi import decode as abi_decode
from web3.providers import BaseProvider

from adapters.ethereum.address import checksum_address
from adapters.ethereum.rpc import BlockSelector, EvmRpc, call_view, has_code, require_aware
from adapters.retry import RetryPolicy
from rules.errors import EvidenceError, InputError
from rules.evidence import PriceEvidence


def _check_max_age(max_age: timedelta | None, required: bool) -> None:
    if max_age is None and not required:
        return
    if not isinstance(max_age, timedelta) or max_age < timedelta(0):
        raise InputError(f"must be a non-negative timedelta, got {max_age!r}", "max_age")


def _too_old(asset: str, updated_at: datetime, now: datetime, max_age: timedelta, where: str) -> None:
    if now - updated_at > max_age:
        raise EvidenceError(
            "stale_price",
            f"{asset} price from {where} was updated at {updated_at.isoformat()}, "
            f"{now - updated_at} before {now.isoformat()}; the limit is {max_age}",
        )


class ChainlinkPriceSource:
    """Reads ``latestRoundData()`` of an AggregatorV3-style feed on a node on ``expected_chain_id``."""

    def __init__(
        self,
        rpc_url: str,
        expected_chain_id: int,
        *,
        request_timeout_s: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.25,
        max_total_s: float = 30.0,
        provider: BaseProvider | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        policy = RetryPolicy(request_timeout_s=request_timeout_s, retries=retries, backoff_s=backoff_s,
                             max_total_s=max_total_s)
        self.rpc = EvmRpc(rpc_url, expected_chain_id, policy, provider=provider, sleep=sleep)

    def read(
        self,
        asset: str,
        aggregator_address: str,
        *,
        max_age: timedelta,
        now: datetime | None = None,
        block: str = "latest",
        description: str | None = None,
    ) -> PriceEvidence:
        """The feed's latest answer as a USD price, exact: ``answer * 10**-decimals``.

        ``description`` (e.g. ``"ETH / USD"``), if given, must equal the feed's own
        ``description()``, so a registry pointing at the wrong feed fails closed.
        """
        if not isinstance(asset, str) or not asset:
            raise InputError("an asset name is required", "asset")
        feed = checksum_address(aggregator_address, "aggregator")
        _check_max_age(max_age, required=True)
        selector = BlockSelector.parse(block)
        at = require_aware(now)
        rpc = self.rpc
        budget = rpc.budget()
        rpc.check_chain(budget)
        pinned = rpc.resolve_block(selector, budget)
        n = pinned.number
        where = f"aggregator {feed} on chain {rpc.expected_chain_id} at block {n} via {rpc.source}"
        if not has_code(rpc, feed, n, budget):
            raise EvidenceError("no_contract_code", f"no contract code at {where}")
        if description is not None:
            raw_desc = call_view(rpc, feed, "description()", [], [], n, budget)
            seen = _decode_string(raw_desc)
            if seen != description:
                raise EvidenceError("feed_mismatch", f"{where} describes itself as {seen!r}, expected {description!r}")
        raw_dec = call_view(rpc, feed, "decimals()", [], [], n, budget)
        if raw_dec is None or len(raw_dec) != 32 or int.from_bytes(raw_dec, "big") > 255:
            raise EvidenceError("contract_call_failed", f"decimals() of {where} reverted or is not a uint8")
        decimals = int.from_bytes(raw_dec, "big")
        raw = call_view(rpc, feed, "latestRoundData()", [], [], n, budget)
        if raw is None or len(raw) != 5 * 32:
            raise EvidenceError("contract_call_failed", f"latestRoundData() of {where} reverted or is malformed")
        words = [raw[i : i + 32] for i in range(0, 160, 32)]
        round_id = int.from_bytes(words[0], "big")
        answer = int.from_bytes(words[1], "big", signed=True)
        updated_ts = int.from_bytes(words[3], "big")
        answered_in = int.from_bytes(words[4], "big")
        if answer <= 0:
            raise EvidenceError("non_positive_price", f"{asset}: {where} answers {answer} in round {round_id}")
        if updated_ts == 0:
            raise EvidenceError("stale_price", f"{asset}: round {round_id} of {where} is not complete (updatedAt 0)")
        if answered_in < round_id:
            raise EvidenceError(
                "stale_price",
                f"{asset}: {where} round {round_id} carries an answer from round {answered_in} (answeredInRound < roundId)",
            )
        try:
            updated_at = datetime.fromtimestamp(updated_ts, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            raise EvidenceError("contract_call_failed", f"{where} has an impossible updatedAt {updated_ts}") from None
        _too_old(asset, updated_at, at, max_age, where)
        return PriceEvidence(
            asset=asset,
            price_usd=Decimal(answer).scaleb(-decimals),
            source=f"chainlink:{feed}@{rpc.expected_chain_id}/block {n} ({pinned.hash}) via {rpc.source}",
            updated_at=updated_at,
            round_id=round_id,
            raw_answer=answer,
            decimals=decimals,
        )


def _decode_string(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        (text,) = abi_decode(["string"], raw)
        return str(text)
    except Exception:  # noqa: BLE001 - any failure means "not a string"
        return None


class _TextKeepingLoader(yaml.SafeLoader):
    """YAML loader that never makes a float (or a datetime): numbers become Decimal from their text."""


def _yaml_number(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    text = loader.construct_scalar(node).replace("_", "")
    try:
        return Decimal(text)
    except InvalidOperation:
        return text  # .inf / .nan spellings: left as text, rejected by the checks below


def _yaml_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node)
        if key in out:
            raise InputError(f"key {key!r} appears twice (line {key_node.start_mark.line + 1})")
        out[key] = loader.construct_object(value_node, deep=True)
    return out


_TextKeepingLoader.add_constructor("tag:yaml.org,2002:float", _yaml_number)
_TextKeepingLoader.add_constructor("tag:yaml.org,2002:int", _yaml_number)
_TextKeepingLoader.add_constructor("tag:yaml.org,2002:timestamp", lambda loader, node: loader.construct_scalar(node))
_TextKeepingLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _yaml_mapping)


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise InputError(f"key {k!r} appears twice")
        out[k] = v
    return out


class StaticPriceFile:
    """Prices from a small YAML or JSON file, for tests, demos and assets without a feed::

        USDC: {price_usd: "1.0000", updated_at: "2026-01-05T16:00:00Z", source: "manual, ops desk"}

    The whole file is checked when it is opened: a bad entry anywhere is an ``InputError`` naming
    the file and the key, even for an asset nobody asks about yet.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._entries = self._load()

    def _load(self) -> dict[str, PriceEvidence]:
        where = str(self.path)
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read price file: {exc}", where) from None
        try:
            if self.path.suffix.lower() == ".json":
                doc = json.loads(
                    text, parse_float=Decimal, parse_int=Decimal, parse_constant=lambda c: c, object_pairs_hook=_json_pairs
                )
            else:
                doc = yaml.load(text, Loader=_TextKeepingLoader)  # noqa: S506 - a SafeLoader subclass
        except InputError as exc:
            raise InputError(exc.message, where) from None
        except (ValueError, yaml.YAMLError) as exc:
            raise InputError(f"not valid {'JSON' if self.path.suffix.lower() == '.json' else 'YAML'}: {exc}", where) from None
        if not isinstance(doc, dict) or not doc:
            raise InputError("must be a non-empty mapping of asset to {price_usd, updated_at, source}", where)
        return {str(asset): self._entry(str(asset), entry, where) for asset, entry in doc.items()}

    @staticmethod
    def _entry(asset: str, entry: Any, file: str) -> PriceEvidence:
        def bad(key: str, why: str) -> InputError:
            return InputError(f"{asset}.{key}: {why}", file)

        if not isinstance(entry, dict):
            raise bad("", "must be a mapping with price_usd, updated_at and source")
        unknown = set(entry) - {"price_usd", "updated_at", "source"}
        if unknown:
            raise bad(sorted(map(str, unknown))[0], "unknown key")
        raw = entry.get("price_usd")
        if isinstance(raw, bool) or not isinstance(raw, (str, Decimal)):
            raise bad("price_usd", f"must be a decimal string, got {raw!r}")
        try:
            price = Decimal(raw.strip()) if isinstance(raw, str) else raw
        except InvalidOperation:
            raise bad("price_usd", f"{raw!r} is not a decimal number") from None
        if not price.is_finite():
            raise bad("price_usd", f"{raw!r} is not a finite number")
        if price <= 0:
            raise bad("price_usd", f"{raw!r} is not positive")
        stamp = entry.get("updated_at")
        if not isinstance(stamp, str):
            raise bad("updated_at", f"must be an RFC 3339 timestamp, got {stamp!r}")
        try:
            updated = datetime.fromisoformat(stamp.strip())
        except ValueError:
            raise bad("updated_at", f"{stamp!r} is not an RFC 3339 timestamp") from None
        if updated.tzinfo is None or updated.utcoffset() is None:
            raise bad("updated_at", f"{stamp!r} has no timezone (write Z or +00:00)")
        source = entry.get("source")
        if not isinstance(source, str) or not source.strip():
            raise bad("source", "must say where the price came from")
        return PriceEvidence(
            asset=asset,
            price_usd=price,
            source=f"{source.strip()} (file {file})",
            updated_at=updated.astimezone(timezone.utc),
        )

    def assets(self) -> list[str]:
        return sorted(self._entries)

    def read(self, asset: str, *, max_age: timedelta | None = None, now: datetime | None = None) -> PriceEvidence:
        """The file's price for ``asset``; ``stale_price`` if older than ``max_age`` (when given)."""
        _check_max_age(max_age, required=False)
        at = require_aware(now)
        found = self._entries.get(asset)
        if found is None:
            raise EvidenceError("price_unavailable", f"no price for {asset!r} in {self.path}")
        if max_age is not None:
            _too_old(asset, found.updated_at, at, max_age, f"file {self.path}")
        return found
