"""Reorg safety and one key per output script on a real litecoind regtest node (Bitcoin Core RPC; issue 17,
points 2 and 4).

The reorg is real: ``invalidateblock`` on the deposit's block (from the ledger's ``locked`` hook, once the
credit holds its locks and before it reads the chain again and commits), ``reconsiderblock`` to undo it. The
policy copy registers BTC on ``regtest``; litecoind stands in for bitcoind (``litecoin-regtest``, opted in)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from adapters.bitcoin.address import encode_base58check, validate_address
from tests.support import ROOT
from tests.support.ledger_workload import write_policies, write_prices
from tests.support.litecoin_node import litecoin  # noqa: F401 - pytest fixture

pytestmark = pytest.mark.integration
USDC_MAINNET = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"


@pytest.fixture(scope="module")
def node(litecoin):  # noqa: F811
    litecoin.create_wallet("w")
    miner = litecoin.new_address("w")
    litecoin.mine(101, miner)
    return litecoin, miner


@pytest.fixture
def ledger(node, tmp_path: Path):
    from adapters.custody import CustodyVerifier, PriceReader
    from rules.engine.decide import Engine
    from rules.ledger.book import Ledger
    from rules.ledger.store import LedgerStore
    from rules.policy.loader import load_bundle

    ltc, _ = node
    pol = write_policies(ROOT, tmp_path / "policies", USDC_MAINNET)
    (pol / "assets.yaml").write_text((pol / "assets.yaml").read_text().replace("network: main", "network: regtest"))
    bundle = load_bundle(str(pol))
    verifier = CustodyVerifier(bitcoin={"rpc_url": ltc.url, "cookie_file": str(ltc.cookie_file),
                                        "network": "litecoin-regtest", "allow_test_networks": True})
    led = Ledger(bundle, Engine.for_bundle(bundle, "python"), LedgerStore(str(tmp_path / "ledger.sqlite")),
                 verifier=verifier, prices=PriceReader({"file": str(write_prices(tmp_path / "p.yaml")),
                                                        "max_age_s": 86400}))
    yield led
    led.store.close()


def deposit(node, btc: str, address_type: str = "bech32") -> tuple[str, str]:
    """Send ``btc`` to a new address, confirmed 6 times; (address, the deposit's block hash)."""
    ltc, miner = node
    a = ltc.new_address("w", address_type)
    ltc.send("w", a, Decimal(btc))
    block = ltc.mine(1, miner)[0]
    ltc.mine(5, miner)
    return a, block


def btc_request(account: str, quantity: str, addresses: tuple[str, ...], key: str, participant: str = "FCM-ALPHA"):
    from rules.ledger.book import CreditRequest

    return CreditRequest(account=account, participant=participant, asset="BTC", quantity=Decimal(quantity),
                         addresses=addresses, idempotency_key=key, custodian="anchorage", segregated=True)


def test_a_reorg_between_read_and_commit_is_refused_with_reason_reorg(ledger, node):
    ltc, miner = node
    a, block = deposit(node, "1")
    ledger.hooks["locked"] = lambda: ltc.rpc("invalidateblock", block)
    try:
        r = ledger.credit(btc_request("ACC-1", "1", (a,), "btc-reorg-1"))
    finally:
        ltc.rpc("reconsiderblock", block)
    assert r["status"] == "refused" and r["quantity_credited"] == "0", r
    assert r["refusal"]["reason"] == "reorg" and r["refusal"]["retryable"] is True, r
    assert ledger.store.positions() == [] and ledger.store.custody("BTC", a) is None
    del ledger.hooks["locked"]
    again = ledger.credit(btc_request("ACC-1", "1", (a,), "btc-reorg-1"))  # the block is back: the same key
    assert again["status"] == "credited" and again["quantity_credited"] == "1", again
    assert ledger.check() == [] and ledger.log.verify().ok


def test_a_new_block_between_read_and_commit_is_refused_and_the_retry_credits(ledger, node):
    """Any other tip refuses (a new block may spend the outputs; scanning again would hold the locks for minutes
    on mainnet): retryable, and the same key reads the chain afresh."""
    ltc, miner = node
    a, _ = deposit(node, "0.5")
    ledger.hooks["locked"] = lambda: ltc.mine(1, miner)
    r = ledger.credit(btc_request("ACC-1", "0.5", (a,), "btc-grow-1"))
    assert r["status"] == "refused" and r["refusal"]["reason"] == "reorg" and r["refusal"]["retryable"], r
    del ledger.hooks["locked"]
    assert ledger.credit(btc_request("ACC-1", "0.5", (a,), "btc-grow-1"))["status"] == "credited"


def test_reverify_sees_a_reorg_to_a_shorter_chain(ledger, node):
    ltc, _ = node
    a, block = deposit(node, "2")
    assert ledger.credit(btc_request("ACC-1", "2", (a,), "btc-short-1"))["status"] == "credited"
    stored = ledger.store.custody("BTC", a)
    ltc.rpc("invalidateblock", block)  # the tip is now 6 blocks lower; the deposit is back in the mempool
    try:
        r = ledger.reverify()
    finally:
        ltc.rpc("reconsiderblock", block)
    assert r["failures"] == [] and r["reductions"] == [{"asset": "BTC", "address": a, "shortfall": "2"}], r
    now = ledger.store.custody("BTC", a)
    assert now.balance_raw == 0 and now.block_number < stored.block_number
    assert sum(p.quantity for p in ledger.store.positions(include_empty=True)) == Decimal(0)
    assert ledger.check() == [] and ledger.log.verify().ok


def test_one_output_script_under_two_spellings_is_credited_once(ledger, node):
    """Litecoin's P2SH has two version bytes (``Q..`` and ``2..``) for one script; bech32 has two cases."""
    q, _ = deposit(node, "1", "p2sh-segwit")
    program = validate_address(q, "litecoin-regtest").program
    legacy = encode_base58check(0xC4, program)
    assert legacy != q and legacy.startswith("2")
    assert ledger.credit(btc_request("ACC-1", "1", (q,), "spell-1"))["status"] == "credited"
    r = ledger.credit(btc_request("ACC-2", "1", (legacy,), "spell-2", participant="FCM-BRAVO"))
    assert r["status"] == "refused" and r["refusal"]["rule"] == "custody.already-credited", r
    b, _ = deposit(node, "1")
    assert ledger.credit(btc_request("ACC-1", "1", (b,), "spell-3"))["status"] == "credited"
    r = ledger.credit(btc_request("ACC-2", "1", (b.upper(),), "spell-4", participant="FCM-BRAVO"))
    assert r["status"] == "refused" and r["refusal"]["rule"] == "custody.already-credited", r
    assert {p.address for p in ledger.store.positions()} == {q, b}  # one key per script
    assert ledger.check() == []
