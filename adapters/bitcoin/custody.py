"""Bitcoin custody evidence: the confirmed balance of a set of addresses at one pinned block.

How it reads the chain, and why:

* ``scantxoutset`` scans the node's UTXO set for ``addr(...)`` descriptors. It needs no wallet and
  no ``-txindex``, and it reports the block its snapshot was taken at (``height``, ``bestblock``).
* The tip is read before the scan (``getblockchaininfo``) and again after it (``getbestblockhash``).
  If the scan's block is not the tip on both sides, a new block or a reorg raced the scan: the whole
  read is retried a bounded number of times, then refused with reason ``reorg``.
* Confirmations are ``scan height - utxo height + 1``; outputs below ``min_confirmations`` are not
  counted but are listed in ``details`` so that an auditor sees why a deposit is missing.
  Unconfirmed (mempool) outputs are not in the UTXO set and so never appear.
* Amounts arrive as JSON numbers in BTC and are parsed as ``Decimal``; each must be an exact whole
  number of satoshi, and the scan's ``total_amount`` must equal the sum of its outputs.

The adapter never decides eligibility: it returns ``CustodyEvidence`` or raises ``EvidenceError``.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Mapping, Sequence

from adapters.bitcoin.address import DecodedAddress, network_params, validate_address
from adapters.bitcoin.rpc import BitcoinRpcClient, BitcoinRpcError
from adapters.retry import RetryPolicy
from rules.errors import EvidenceError, InputError
from rules.evidence import CustodyEvidence

__all__ = ["BitcoinCustodyReader", "BitcoinRpcClient", "BitcoinRpcError"]

_SCAN_IN_PROGRESS = "scan already in progress"


class BitcoinCustodyReader:
    """Reads ``CustodyEvidence`` for addresses on one Bitcoin network through a ``BitcoinRpcClient``.

    ``network`` is a key of ``adapters.bitcoin.address.NETWORKS`` (``main``, ``test``, ``testnet4``,
    ``signet``, ``regtest``), or of ``TEST_NETWORKS`` (``litecoin-regtest``, the integration tests'
    stand-in) with ``allow_test_networks=True``. ``race_retries`` bounds
    how often a scan raced by a new block is repeated; ``scan_busy_retries`` how often a scan is
    retried while another client's scan holds the node's single scan slot.
    """

    def __init__(
        self,
        client: BitcoinRpcClient,
        network: str,
        *,
        asset: str = "BTC",
        decimals: int = 8,
        scan_timeout_s: float = 300.0,
        race_retries: int = 3,
        scan_busy_retries: int = 3,
        busy_backoff_s: float = 1.0,
        allow_test_networks: bool = False,
        recheck_client: BitcoinRpcClient | None = None,
    ):
        params = network_params(network, allow_test_networks=allow_test_networks)
        if isinstance(decimals, bool) or not isinstance(decimals, int) or not 0 <= decimals <= 18:
            raise InputError(f"decimals must be an integer 0..18, got {decimals!r}", "decimals")
        if not isinstance(asset, str) or not asset:
            raise InputError("asset must be a non-empty string", "asset")
        for name, n in (("race_retries", race_retries), ("scan_busy_retries", scan_busy_retries)):
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise InputError(f"{name} must be a non-negative integer, got {n!r}", name)
        self.client = client
        self.recheck_client = recheck_client  # ``recheck``'s one request (one attempt, a short deadline)
        self.network = network
        self.params = params
        self.asset = asset
        self.decimals = decimals
        self.scan_timeout_s = scan_timeout_s
        self.race_retries = race_retries
        self.scan_busy_retries = scan_busy_retries
        self.busy_backoff_s = busy_backoff_s
        # waits while another client's scan holds the node's one scan slot (each scan is bounded by its call)
        self._busy = RetryPolicy(request_timeout_s=scan_timeout_s, retries=scan_busy_retries, backoff_s=busy_backoff_s,
                                 max_total_s=None)

    # ------------------------------------------------------------------ public

    def verify(self, addresses: Sequence[str], *, min_confirmations: int = 6) -> CustodyEvidence:
        """Confirmed balance of ``addresses`` at the node's current tip, in base units (satoshi)."""
        if isinstance(addresses, (str, bytes)) or not isinstance(addresses, Sequence) or not addresses:
            raise InputError("addresses must be a non-empty list of address strings", "addresses")
        if isinstance(min_confirmations, bool) or not isinstance(min_confirmations, int) or min_confirmations < 1:
            raise InputError(f"min_confirmations must be an integer >= 1, got {min_confirmations!r}", "min_confirmations")
        decoded = [validate_address(a, self.network) for a in addresses]
        seen: dict[bytes, str] = {}
        for text, d in zip(addresses, decoded):  # one script twice (a repeat, Q../2.., upper/lower bech32)
            if d.script_pubkey in seen:
                raise InputError(f"{text} repeats {seen[d.script_pubkey]} (same output script)", "addresses")
            seen[d.script_pubkey] = text

        races: list[dict[str, Any]] = []
        busy = 0
        checked = False
        while True:
            info = self._check_chain()
            if not checked:  # on the right chain: now the node's reading of each address
                for d in decoded:
                    self._same_script_as_node(d)
                checked = True
            try:
                return self._read(decoded, min_confirmations, info, races, busy)
            except _Raced as r:
                races.append(r.record)
                if len(races) > self.race_retries:
                    raise EvidenceError(
                        "reorg",
                        f"the chain tip moved during every one of {len(races)} scans "
                        f"(new block or reorg); last: {r.record['what']}",
                    ) from None
            except _Busy as b:
                busy += 1
                wait = self._busy.next_wait(busy, None)
                if wait is None:
                    raise b.error from None
                time.sleep(wait)

    def on_chain(self, height: int, block_hash: str) -> bool:
        """True if ``block_hash`` is still the main chain's block at ``height`` on this node.

        A height above the tip (``getblockhash`` error -8: a reorg to a shorter chain) is False; any
        other failure raises ``EvidenceError``, never a guess."""
        self._check_chain()
        try:
            return self.client.call("getblockhash", int(height)) == block_hash
        except BitcoinRpcError as e:
            if e.code == -8:  # "Block height out of range"
                return False
            raise

    def recheck(self, evidence: CustodyEvidence) -> None:
        """Refuse (``EvidenceError('reorg')``) if the tip ``evidence`` was read at is no longer the tip.

        The same tip means the same UTXO set (mempool outputs are never in it), so the outputs counted are
        still there. Any other tip (a new block that may spend them, or a reorg) refuses: a scan again would
        take minutes on mainnet with the ledger's locks held, and the credit is retryable (the same key
        reads the chain afresh). One request, through ``recheck_client`` (one attempt, a short deadline)."""
        tip = (self.recheck_client or self.client).call("getbestblockhash")
        if tip != evidence.block_hash:
            raise EvidenceError("reorg", f"the tip at {self.client.source} moved from block {evidence.block_number} "
                                f"({evidence.block_hash}) the balance was read at to {tip} before the credit "
                                "committed; nothing is credited against it (retry: the chain is read afresh)")

    # ------------------------------------------------------------------ steps

    def _same_script_as_node(self, d: DecodedAddress) -> None:
        """The node's ``validateaddress`` must pay the output script decoded here (custody is keyed by it)."""
        info = self.client.call("validateaddress", d.address)
        if not isinstance(info, dict) or info.get("isvalid") is not True:
            raise EvidenceError("invalid_address", f"node at {self.client.source} says {d.address} is not valid")
        if str(info.get("scriptPubKey", "")).lower() != d.script_pubkey.hex():
            raise EvidenceError("bad_response", f"node at {self.client.source} decodes {d.address} to script "
                                f"{info.get('scriptPubKey')!r}, not {d.script_pubkey.hex()}")

    def _check_chain(self) -> Mapping[str, Any]:
        info = self.client.call("getblockchaininfo")
        if not isinstance(info, dict):
            raise EvidenceError("bad_response", "getblockchaininfo did not return an object")
        chain = info.get("chain")
        if chain != self.params.chain:
            raise EvidenceError(
                "wrong_network",
                f"node at {self.client.source} is on chain {chain!r}, but the adapter is configured for "
                f"{self.params.description} (expects chain {self.params.chain!r})",
            )
        if info.get("initialblockdownload") is True:
            # Its UTXO set lags the network: outputs spent in blocks it has not processed would be counted.
            raise EvidenceError(
                "not_synced",
                f"node at {self.client.source} is in initial block download "
                f"(blocks {info.get('blocks')}, headers {info.get('headers')})",
            )
        _int(info, "blocks", "getblockchaininfo")
        _hash(info, "bestblockhash", "getblockchaininfo")
        return info

    def _scan(self, decoded: list[DecodedAddress]) -> Mapping[str, Any]:
        descriptors = [f"addr({d.address})" for d in decoded]
        try:
            result = self.client.call("scantxoutset", "start", descriptors, timeout_s=self.scan_timeout_s)
        except BitcoinRpcError as e:
            if e.code == -8 and _SCAN_IN_PROGRESS in (e.rpc_message or "").lower():
                raise _Busy(
                    BitcoinRpcError(
                        "scan_in_progress",
                        f"{e.message}: another scantxoutset holds the node's scan slot",
                        method=e.method,
                        code=e.code,
                        rpc_message=e.rpc_message,
                        http_status=e.http_status,
                    )
                ) from None
            raise
        if not isinstance(result, dict) or result.get("success") is not True:
            raise EvidenceError("rpc_error", f"scantxoutset did not succeed: {str(result)[:200]}")
        return result

    def _read(
        self,
        decoded: list[DecodedAddress],
        min_conf: int,
        info: Mapping[str, Any],
        races: list[dict[str, Any]],
        busy: int,
    ) -> CustodyEvidence:
        scan = self._scan(decoded)
        height = _int(scan, "height", "scantxoutset")
        best = _hash(scan, "bestblock", "scantxoutset")
        after = self.client.call("getbestblockhash")
        before_hash, before_height = info["bestblockhash"], info["blocks"]
        if not (best == before_hash == after and height == before_height):
            raise _Raced(
                {
                    "what": f"tip before scan {before_height}/{before_hash}, scan at {height}/{best}, tip after {after}",
                    "before": {"height": before_height, "hash": before_hash},
                    "scan": {"height": height, "hash": best},
                    "after": after,
                }
            )
        header = self.client.call("getblockheader", best)
        if not isinstance(header, dict) or header.get("height") != height or header.get("hash") != best:
            raise EvidenceError("bad_response", f"getblockheader {best} does not match the scan's height {height}")
        block_time = _int(header, "time", "getblockheader")

        by_script = {d.script_pubkey.hex(): d.address for d in decoded}
        per_address = {d.address: 0 for d in decoded}
        counted: list[dict[str, Any]] = []
        too_few: list[dict[str, Any]] = []
        seen: set[tuple[str, int]] = set()
        total_seen = 0
        unspents = scan.get("unspents")
        if not isinstance(unspents, list):
            raise EvidenceError("bad_response", "scantxoutset returned no unspents list")
        for u in unspents:
            if not isinstance(u, dict):
                raise EvidenceError("bad_response", "scantxoutset returned a malformed unspent")
            txid = _hash(u, "txid", "scantxoutset unspent")
            vout = _int(u, "vout", "scantxoutset unspent")
            utxo_height = _int(u, "height", "scantxoutset unspent")
            if (txid, vout) in seen:
                raise EvidenceError("bad_response", f"scantxoutset listed outpoint {txid}:{vout} twice")
            seen.add((txid, vout))
            if not 0 <= utxo_height <= height:
                raise EvidenceError("bad_response", f"output {txid}:{vout} at height {utxo_height} above scan height {height}")
            sat = self._to_base_units(u.get("amount"), f"output {txid}:{vout}")
            total_seen += sat
            confirmations = height - utxo_height + 1
            if "confirmations" in u and u["confirmations"] != confirmations:  # newer Bitcoin Core reports it too
                raise EvidenceError(
                    "bad_response", f"output {txid}:{vout}: node says {u['confirmations']} confirmations, height says {confirmations}"
                )
            address = by_script.get(str(u.get("scriptPubKey", "")).lower())
            if address is None:
                raise EvidenceError(
                    "bad_response", f"output {txid}:{vout} pays a script no requested address has: {u.get('scriptPubKey')!r}"
                )
            row: dict[str, Any] = {
                "txid": txid,
                "vout": vout,
                "address": address,
                "amount_sat": str(sat),
                "height": utxo_height,
                "confirmations": confirmations,
            }
            if "coinbase" in u:
                row["coinbase"] = bool(u["coinbase"])
            if confirmations >= min_conf:
                counted.append(row)
                per_address[address] += sat
            else:
                too_few.append(row)
        if "total_amount" in scan:
            total = self._to_base_units(scan["total_amount"], "scantxoutset total_amount")
            if total != total_seen:
                raise EvidenceError(
                    "bad_response", f"scantxoutset total_amount {total} differs from the sum of its outputs {total_seen}"
                )
        raw_balance = sum(per_address.values())
        key = lambda r: (r["height"], r["txid"], r["vout"])  # noqa: E731 - stable order for auditors
        return CustodyEvidence(
            asset=self.asset,
            chain="bitcoin",
            network=self.network,
            addresses=tuple(d.address for d in decoded),
            raw_balance=raw_balance,
            decimals=self.decimals,
            block_number=height,
            block_hash=best,
            block_timestamp=datetime.fromtimestamp(block_time, tz=timezone.utc),
            source=self.client.source,
            confirmations=min_conf,
            details={
                "method": "scantxoutset",
                "node_chain": info["chain"],
                "min_confirmations": min_conf,
                "per_address_sat": {a: str(v) for a, v in per_address.items()},
                "counted": sorted(counted, key=key),
                "too_few_confirmations": sorted(too_few, key=key),
                "scan_txouts": scan.get("txouts"),
                "race_retries": races,
                "busy_retries": busy,
            },
        )

    def _to_base_units(self, amount: Any, what: str) -> int:
        """Exact conversion of a node amount (Decimal, in whole coins) to base units; fail closed."""
        if isinstance(amount, bool) or not isinstance(amount, (int, Decimal)):
            raise EvidenceError("bad_response", f"{what}: amount {amount!r} is not a JSON number")
        value = Decimal(amount).scaleb(self.decimals)
        if not value.is_finite() or value != value.to_integral_value() or value < 0:
            raise EvidenceError(
                "bad_response", f"{what}: amount {amount} is not a whole, non-negative number of base units"
            )
        return int(value)


class _Raced(Exception):
    def __init__(self, record: dict[str, Any]):
        super().__init__(record["what"])
        self.record = record


class _Busy(Exception):
    def __init__(self, error: BitcoinRpcError):
        super().__init__(error.message)
        self.error = error


def _int(doc: Mapping[str, Any], key: str, what: str) -> int:
    v = doc.get(key)
    if isinstance(v, bool) or not isinstance(v, int):
        raise EvidenceError("bad_response", f"{what}: field {key!r} is not an integer: {v!r}")
    return v


def _hash(doc: Mapping[str, Any], key: str, what: str) -> str:
    v = doc.get(key)
    if not isinstance(v, str) or len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
        raise EvidenceError("bad_response", f"{what}: field {key!r} is not a 32-byte hex hash: {v!r}")
    return v

