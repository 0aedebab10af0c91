"""Custody verification: route an asset of the registry to the right chain reader, configured from
settings. Gathers evidence only; eligibility is decided by the rules.

Node endpoints come from settings (file + environment), never from code. The chain a reader must see
comes from the policy's asset registry (``network``: Ethereum chain id, Bitcoin network), so a node
on another chain is refused by the reader.

The registry entry arrives as anything with the attributes of ``RegistryAsset`` (the policy's
``rules.policy.model.Asset`` has them): adapters know nothing of the policy or the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Mapping, Protocol, Sequence

from adapters.bitcoin.address import NETWORKS, TEST_NETWORKS, network_params
from adapters.bitcoin.custody import BitcoinCustodyReader, BitcoinRpcClient
from adapters.ethereum.custody import EthereumCustodyReader
from adapters.prices import ChainlinkPriceSource, StaticPriceFile
from rules.errors import EvidenceError, InputError
from rules.evidence import CustodyEvidence, PriceEvidence


class RegistryAsset(Protocol):
    """What the custody and price readers read of an asset registry entry."""

    @property
    def symbol(self) -> str: ...

    @property
    def chain(self) -> str: ...  # "ethereum" | "bitcoin"

    @property
    def network(self) -> int | str: ...  # Ethereum chain id, or Bitcoin network (main, test, signet, regtest)

    @property
    def contract(self) -> str | None: ...  # ERC-20 contract; None: the chain's native coin

    @property
    def decimals(self) -> int: ...

    @property
    def restrictions(self) -> Mapping[str, str]: ...  # pause / blacklist / allowlist -> view function name


def _int(value: Any, name: str) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise InputError(f"must be a whole number, got {value!r}", name) from None
    if n < 0:
        raise InputError(f"must not be negative, got {n}", name)
    return n


# Every timeout and retry bound of the readers, by settings key (rules.settings; docs/ethereum.md, docs/bitcoin.md).
ETH_SECONDS = ("request_timeout_s", "backoff_s", "max_total_s", "recheck_timeout_s")
ETH_COUNTS = ("retries", "max_reorg_retries")
BTC_CLIENT_SECONDS = ("timeout_s", "backoff_s", "max_total_s")
BTC_READER_SECONDS = ("scan_timeout_s", "busy_backoff_s")
BTC_READER_COUNTS = ("race_retries", "scan_busy_retries")
PRICE_SECONDS = ("request_timeout_s", "backoff_s", "max_total_s")
PRICE_COUNTS = ("retries",)


def _bounds(section: Mapping[str, Any], name: str, seconds: Sequence[str], counts: Sequence[str]) -> dict[str, Any]:
    """The bounds given in ``section`` as keyword arguments: seconds as numbers, counts as whole numbers."""
    out: dict[str, Any] = {k: float(section[k]) for k in seconds if section.get(k) is not None}
    out |= {k: _int(section[k], f"{name}.{k}") for k in counts if section.get(k) is not None}
    return out


@dataclass
class CustodyVerifier:
    """Verifies custody balances for registry assets against the configured nodes."""

    ethereum: Mapping[str, Any] = field(default_factory=dict)
    bitcoin: Mapping[str, Any] = field(default_factory=dict)
    _eth_readers: dict[int, EthereumCustodyReader] = field(default_factory=dict)
    _btc_reader: BitcoinCustodyReader | None = None

    def verify(self, asset: RegistryAsset, addresses: Sequence[str], now: datetime | None = None) -> CustodyEvidence:
        if not addresses:
            raise EvidenceError("no_addresses", "the query names no custody addresses to verify")
        if asset.chain == "ethereum":
            return self._verify_eth(asset, addresses, now)
        if asset.chain == "bitcoin":
            return self._verify_btc(asset, addresses)
        raise EvidenceError("unsupported_chain", f"no adapter for chain {asset.chain!r}")  # pragma: no cover

    def recheck(self, asset: RegistryAsset, evidence: CustodyEvidence) -> None:
        """Read ``evidence``'s block again (Ethereum: the pinned block's hash; Bitcoin: the tip and the UTXOs)
        and raise ``EvidenceError('reorg')`` on any change. Callers hold their locks while asking."""
        if asset.chain == "ethereum":
            if not self._eth_reader(asset).on_chain(evidence.block_number, evidence.block_hash, quick=True):
                raise EvidenceError("reorg", f"block {evidence.block_number} ({evidence.block_hash}) the balance was "
                                    f"read at is no longer on the chain at {evidence.source}; nothing is credited "
                                    "against it")
            return
        self._btc(asset).recheck(evidence)

    def on_chain(self, asset: RegistryAsset, block_number: int, block_hash: str) -> bool:
        """True if the node of ``asset``'s chain still has ``block_hash`` at ``block_number``."""
        if asset.chain == "ethereum":
            return self._eth_reader(asset).on_chain(block_number, block_hash)
        return self._btc(asset).on_chain(block_number, block_hash)

    def _eth_reader(self, asset: RegistryAsset) -> EthereumCustodyReader:
        url = self.ethereum.get("rpc_url")
        if not url:
            raise EvidenceError("not_configured", "no Ethereum node configured (settings [ethereum] rpc_url or "
                                "DACP_ETH_RPC_URL)")
        chain_id = int(asset.network)
        reader = self._eth_readers.get(chain_id)
        if reader is None:
            kw = _bounds(self.ethereum, "ethereum", ETH_SECONDS, ETH_COUNTS)
            reader = self._eth_readers[chain_id] = EthereumCustodyReader(str(url), chain_id, **kw)
        return reader

    def _verify_eth(self, asset: RegistryAsset, addresses: Sequence[str], now: datetime | None) -> CustodyEvidence:
        reader = self._eth_reader(asset)
        max_age = self.ethereum.get("max_block_age_s")
        return reader.verify(asset.symbol, list(addresses), contract=asset.contract, decimals=asset.decimals,
                             symbol=asset.symbol if asset.contract else None,
                             block=str(self.ethereum.get("block", "finalized")),
                             max_block_age=timedelta(seconds=float(max_age)) if max_age is not None else None,
                             now=now, restrictions=dict(asset.restrictions) or None)

    def _btc(self, asset: RegistryAsset) -> BitcoinCustodyReader:
        url = self.bitcoin.get("rpc_url")
        if not url:
            raise EvidenceError("not_configured", "no Bitcoin node configured (settings [bitcoin] rpc_url or "
                                "DACP_BTC_RPC_URL)")
        network = str(self.bitcoin.get("network") or asset.network)
        if network not in NETWORKS and network not in TEST_NETWORKS:
            raise InputError(f"unknown Bitcoin network {network!r} (known: {', '.join(NETWORKS)})", "bitcoin.network")
        allow_test = self.bitcoin.get("allow_test_networks") is True  # an explicit opt-in, never a default
        params = network_params(network, allow_test_networks=allow_test, where="bitcoin.network")
        if params.chain != asset.network:
            raise EvidenceError("wrong_network", f"the node is configured for {network} ({params.chain}), "
                                f"but the policy registers {asset.symbol} on {asset.network}")
        if self._btc_reader is None:
            auth = {"cookie_file": self.bitcoin.get("cookie_file"), "user": self.bitcoin.get("user"),
                    "password": self.bitcoin.get("password")}
            client = BitcoinRpcClient(str(url), **auth, **_bounds(self.bitcoin, "bitcoin", BTC_CLIENT_SECONDS,
                                                                  ("retries",)))
            quick = float(self.bitcoin.get("recheck_timeout_s", 2.0))
            recheck = BitcoinRpcClient(str(url), **auth, timeout_s=quick, retries=0, max_total_s=quick)
            self._btc_reader = BitcoinCustodyReader(client, network, asset=asset.symbol, decimals=asset.decimals,
                                                    allow_test_networks=allow_test, recheck_client=recheck,
                                                    **_bounds(self.bitcoin, "bitcoin", BTC_READER_SECONDS,
                                                              BTC_READER_COUNTS))
        return self._btc_reader

    def _verify_btc(self, asset: RegistryAsset, addresses: Sequence[str]) -> CustodyEvidence:
        return self._btc(asset).verify(list(addresses),
                                       min_confirmations=_int(self.bitcoin.get("min_confirmations", 6),
                                                              "bitcoin.min_confirmations"))


@dataclass
class PriceReader:
    """Prices from settings ``[prices]``: a static ``file``, or Chainlink-style ``feeds`` (asset ->
    aggregator address) on ``rpc_url`` / ``chain_id``; ``max_age_s`` bounds how old a price may be
    when it is read (the policy's ``price.fresh`` rule judges it again at the query's as_of)."""

    prices: Mapping[str, Any] = field(default_factory=dict)
    _file: StaticPriceFile | None = None
    _feed: ChainlinkPriceSource | None = None

    @property
    def configured(self) -> bool:
        return bool(self.prices.get("file") or self.prices.get("feeds"))

    def read(self, asset: RegistryAsset, now: datetime | None = None) -> PriceEvidence:
        max_age = timedelta(seconds=float(self.prices.get("max_age_s", 3600)))
        feeds = dict(self.prices.get("feeds") or {})
        if asset.symbol in feeds:
            if self._feed is None:
                url, chain_id = self.prices.get("rpc_url"), self.prices.get("chain_id")
                if not url or chain_id is None:
                    raise InputError("price feeds need rpc_url and chain_id", "prices")
                self._feed = ChainlinkPriceSource(str(url), _int(chain_id, "prices.chain_id"),
                                                  **_bounds(self.prices, "prices", PRICE_SECONDS, PRICE_COUNTS))
            return self._feed.read(asset.symbol, str(feeds[asset.symbol]), max_age=max_age, now=now)
        if self.prices.get("file"):
            if self._file is None:
                self._file = StaticPriceFile(str(self.prices["file"]))
            return self._file.read(asset.symbol, max_age=max_age, now=now)
        raise EvidenceError("price_unavailable", f"no price source configured for {asset.symbol}")
