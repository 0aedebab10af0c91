"""Reorg safety on a real anvil node (issue 17, point 2): a reorg between the custody read and the commit is
never credited, and re-verification sees a reorg to a shorter chain.

The reorg is real: ``evm_snapshot`` before the mint, then, from the ledger's ``locked`` hook (called once the
credit holds its locks, before it reads the chain again and commits), ``evm_revert`` past the mint and 70
other blocks mined at the same heights. Nothing of the chain is mocked."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest

from tests.support import ROOT
from tests.support.anvil_node import anvil_mine, anvil_node, deploy, rpc
from tests.support.ledger_workload import Setup, fund, make_ledger, usdc_request, write_policies, write_prices

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def chain():
    with anvil_node(chain_id=1) as node:
        token = deploy(node.w3, "TestFiatToken", "USD Coin", "USDC")
        anvil_mine(node.w3, 80)  # a finalized block after the deployment, whatever is reverted later
        yield node, token


@pytest.fixture
def ledger(chain, tmp_path):
    node, token = chain
    pol = write_policies(ROOT, tmp_path / "policies", token.address)
    led = make_ledger(Setup(str(tmp_path / "ledger.sqlite"), str(pol), str(write_prices(tmp_path / "p.yaml")),
                            node.url))
    yield led
    led.store.close()


def _reorg_past(node, snapshot: str) -> None:
    """Revert to ``snapshot`` (before the mint) and mine other blocks at the same heights and beyond."""
    assert rpc(node.w3, "evm_revert", [snapshot]) is True
    anvil_mine(node.w3, 70)


def test_a_reorg_between_read_and_commit_is_refused_with_reason_reorg(ledger, chain):
    node, _ = chain
    snap = rpc(node.w3, "evm_snapshot", [])
    a = fund(chain, usdc=100)
    ledger.hooks["locked"] = lambda: _reorg_past(node, snap)
    r = ledger.credit(usdc_request("ACC-1", "100", a, "reorg-1"))
    assert r["status"] == "refused" and r["quantity_credited"] == "0", r
    assert r["refusal"]["reason"] == "reorg" and r["refusal"]["retryable"] is True
    assert "no longer on the chain" in r["refusal"]["message"]
    assert ledger.store.positions() == [] and ledger.store.custody("USDC", a) is None  # nothing stored
    assert [i.kind for i in ledger.store.incidents()] == ["verification_failure"]
    assert ledger.store.request("reorg-1") is None  # retryable: the key is not spent
    del ledger.hooks["locked"]
    again = ledger.credit(usdc_request("ACC-1", "100", a, "reorg-1"))  # the chain now shows 0
    assert again["status"] == "refused" and "custody.balance-verified" in again["failed_rules"]
    assert ledger.check() == [] and ledger.log.verify().ok


def test_new_blocks_between_read_and_commit_are_no_reorg(ledger, chain):
    node, _ = chain
    a = fund(chain, usdc=100)
    ledger.hooks["locked"] = lambda: anvil_mine(node.w3, 5)  # the chain grows; the pinned block stays
    r = ledger.credit(usdc_request("ACC-1", "100", a, "grow-1"))
    assert r["status"] == "credited" and r["quantity_credited"] == "100", r


def test_reverify_sees_a_reorg_to_a_shorter_chain(ledger, chain):
    node, _ = chain
    snap = rpc(node.w3, "evm_snapshot", [])
    a = fund(chain, usdc=100)
    assert ledger.credit(usdc_request("ACC-1", "100", a, "short-1"))["status"] == "credited"
    stored = ledger.store.custody("USDC", a)
    assert stored.balance_raw == 100 * 10**6
    assert rpc(node.w3, "evm_revert", [snap]) is True  # the chain is now shorter than the stored block
    assert node.w3.eth.get_block("finalized")["number"] < stored.block_number
    r = ledger.reverify()
    assert r["failures"] == [] and r["reductions"] == [{"asset": "USDC", "address": a, "shortfall": "100"}], r
    now = ledger.store.custody("USDC", a)
    assert now.balance_raw == 0 and now.block_number < stored.block_number and now.block_hash != stored.block_hash
    assert sum(p.quantity for p in ledger.store.positions(include_empty=True)) == Decimal(0)
    assert "shortfall" in [i.kind for i in ledger.store.incidents()]
    assert ledger.check() == [] and ledger.log.verify().ok


def test_a_lagging_read_keeps_a_stored_block_still_on_the_chain(ledger, chain):
    """A reading at a lower block replaces the stored one only if the stored block left the chain."""
    from rules.ledger.journal import Movement
    from rules.ledger.shortfall import record_balance

    a = fund(chain, usdc=100)
    assert ledger.credit(usdc_request("ACC-1", "100", a, "lag-1"))["status"] == "credited"
    stored = ledger.store.custody("USDC", a)
    asset = ledger.bundle.assets["USDC"]
    older = ledger.verifier.verify(asset, [a])
    older = dataclasses.replace(older, block_number=stored.block_number - 10, raw_balance=0,
                                block_hash=node_hash(chain, stored.block_number - 10))
    with ledger.store.transaction([f"custody:USDC:{a}"]):
        newest = record_balance(ledger, Movement(ledger.store), asset, a, 0, older, ledger.now_text())
    assert newest == 100 * 10**6 and ledger.store.custody("USDC", a) == stored


def node_hash(chain, number: int) -> str:
    return "0x" + bytes(chain[0].w3.eth.get_block(number)["hash"]).hex()


def test_one_address_under_three_spellings_is_credited_once(ledger, chain):
    """Custody is keyed by the EIP-55 address: lower-case, upper-case and checksummed text are one key."""
    a = fund(chain, usdc=100)
    assert ledger.credit(usdc_request("ACC-1", "100", a.lower(), "case-1"))["status"] == "credited"
    for i, spelled in enumerate((a, "0x" + a[2:].upper())):
        r = ledger.credit(usdc_request(f"ACC-{i + 2}", "100", spelled, f"case-{i + 2}", participant="FCM-BRAVO"))
        assert r["status"] == "refused" and r["refusal"]["rule"] == "custody.already-credited", r
    assert [p.address for p in ledger.store.positions()] == [a]
