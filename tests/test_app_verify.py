"""`dacp evaluate --verify` and `dacp verify` against real nodes: anvil (Ethereum, chain id 1, the
policy's chain) and litecoind regtest (Bitcoin Core RPC). Custody balances are read on-chain, the
evidence replaces the query's claims and is stored in the decision log; any failure is a reason."""

from __future__ import annotations

import json
import shutil
from decimal import Decimal
from pathlib import Path

import pytest

from rules.cli.run import main
from tests.support.anvil_node import anvil_mine, anvil_node, deploy, new_address, send_eth, transact
from tests.support.litecoin_node import litecoin  # noqa: F401 - pytest fixture
from tests.support import ROOT

pytestmark = pytest.mark.integration
EXAMPLES = ROOT / "examples" / "queries"
USDC_MAINNET = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"


@pytest.fixture(scope="module")
def chain():
    """anvil on chain id 1 with a USDC-like FiatToken deployed and two funded custody addresses."""
    with anvil_node(chain_id=1) as node:
        w3 = node.w3
        token = deploy(w3, "TestFiatToken", "USD Coin", "USDC")
        a, b = new_address(w3), new_address(w3)
        transact(w3, token.functions.mint(a, 600_000 * 10**6))
        transact(w3, token.functions.mint(b, 400_000 * 10**6))
        send_eth(w3, a, 200 * 10**18)
        send_eth(w3, b, 60 * 10**18)
        anvil_mine(w3, 70)  # past anvil's finalized lag (64 blocks)
        yield node, token, (a, b)


@pytest.fixture
def workdir(tmp_path, monkeypatch, chain):
    node, token, _ = chain
    pol = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", pol, ignore=shutil.ignore_patterns("tests"))
    # The test chain's USDC lives at another address than mainnet's: a test bundle says so.
    (pol / "assets.yaml").write_text((pol / "assets.yaml").read_text().replace(USDC_MAINNET, token.address))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DACP_CONFIG", raising=False)
    monkeypatch.setenv("DACP_POLICIES", str(pol))
    monkeypatch.setenv("DACP_LOG", str(tmp_path / "log.sqlite"))
    monkeypatch.setenv("DACP_ETH_RPC_URL", node.url)
    monkeypatch.setenv("DACP_APPROVALS_REQUIRED", "false")  # a test bundle (test chain's USDC): not signed
    return tmp_path


def query(name: str, tmp: Path, **changes) -> Path:
    q = json.loads((EXAMPLES / name).read_text())
    for k, v in changes.items():
        if isinstance(v, dict):
            q[k] = {x: y for x, y in {**q.get(k, {}), **v}.items() if y is not None}
        else:
            q[k] = v
    p = tmp / f"q-{len(list(tmp.glob('q-*')))}.json"
    p.write_text(json.dumps(q))
    return p


def decide(capsys, *argv) -> dict:
    code = main(["evaluate", "--verify", *argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def reason(d: dict, rule: str) -> dict:
    return next(r for r in d["reasons"] if r["rule"] == rule)


def test_usdc_verified_on_chain_is_eligible_and_evidence_is_logged(workdir, chain, capsys):
    _, token, (a, b) = chain
    q = query("usdc-eligible.json", workdir, quantity="1000000", custody={"addresses": [a, b], "balance": None})
    d = decide(capsys, str(q))
    assert d["eligible"] is True, d["failed_rules"]
    ev = d["evidence"][0]
    assert ev["chain"] == "ethereum" and ev["network"] == "1" and ev["raw_balance"] == str(1_000_000 * 10**6)
    assert ev["details"]["block_selector"] == "finalized" and ev["details"]["paused"] is False
    assert reason(d, "custody.onchain-verification")["outcome"] == "pass"
    main(["explain", d["decision_id"], "--json"])
    stored = json.loads(capsys.readouterr()[0])
    assert stored["decision"]["evidence"][0]["block_hash"] == ev["block_hash"]
    code = main(["replay", d["decision_id"]])
    out = capsys.readouterr()[0]
    assert code == 0 and "IDENTICAL" in out, out


def test_claim_above_the_verified_balance_is_refused(workdir, chain, capsys):
    _, _, (a, b) = chain
    q = query("usdc-eligible.json", workdir, quantity="1000000.000001", custody={"addresses": [a, b]})
    d = decide(capsys, str(q))
    assert d["eligible"] is False and d["failed_rules"] == ["custody.balance-verified"]


def test_on_chain_facts_replace_the_query_claims(workdir, chain, capsys):
    """The query claims a balance that covers it; the chain says otherwise - the chain wins."""
    _, _, (a, _) = chain
    q = query("usdc-eligible.json", workdir, quantity="900000", custody={"addresses": [a], "balance": "900000"})
    d = decide(capsys, str(q))
    assert d["eligible"] is False and "custody.balance-verified" in d["failed_rules"]


def test_paused_token_is_refused(workdir, chain, capsys):
    node, token, (a, b) = chain
    transact(node.w3, token.functions.pause())
    try:
        anvil_mine(node.w3, 70)
        d = decide(capsys, str(query("usdc-eligible.json", workdir, custody={"addresses": [a, b]})))
        assert d["eligible"] is False and "custody.token-not-paused" in d["failed_rules"]
    finally:
        transact(node.w3, token.functions.unpause())
        anvil_mine(node.w3, 70)


def test_unfinalized_deposit_does_not_count(workdir, chain, capsys):
    node, token, _ = chain
    c = new_address(node.w3)
    transact(node.w3, token.functions.mint(c, 5_000 * 10**6))
    q = query("usdc-eligible.json", workdir, quantity="5000", custody={"addresses": [c]})
    d = decide(capsys, str(q))
    assert d["eligible"] is False and "custody.balance-verified" in d["failed_rules"]
    anvil_mine(node.w3, 64)
    d = decide(capsys, str(q))
    assert d["eligible"] is True, d["failed_rules"]


def test_native_eth_verified(workdir, chain, capsys):
    _, _, (a, b) = chain
    d = decide(capsys, str(query("eth-eligible.json", workdir, quantity="260", custody={"addresses": [a, b]})))
    assert d["eligible"] is True and d["evidence"][0]["raw_balance"] == str(260 * 10**18)


def test_node_down_is_a_reason_not_a_crash(workdir, chain, capsys, monkeypatch):
    monkeypatch.setenv("DACP_ETH_RPC_URL", "http://127.0.0.1:9/")
    d = decide(capsys, str(query("eth-eligible.json", workdir)))
    assert d["eligible"] is False and d["failed_rules"] == ["custody.onchain-verification"]
    assert reason(d, "custody.onchain-verification")["observed"]["reason"] == "node_unreachable"


def test_wrong_chain_is_refused(workdir, capsys, monkeypatch):
    with anvil_node(chain_id=31337) as other:
        monkeypatch.setenv("DACP_ETH_RPC_URL", other.url)
        d = decide(capsys, str(query("eth-eligible.json", workdir)))
    assert d["eligible"] is False
    assert reason(d, "custody.onchain-verification")["observed"]["reason"] == "wrong_chain"


def test_no_node_configured_fails_closed(workdir, capsys, monkeypatch):
    monkeypatch.delenv("DACP_ETH_RPC_URL")
    d = decide(capsys, str(query("eth-eligible.json", workdir)))
    assert d["eligible"] is False
    assert reason(d, "custody.onchain-verification")["observed"]["reason"] == "not_configured"


def test_dacp_verify_prints_the_evidence(workdir, chain, capsys):
    _, _, (a, b) = chain
    assert main(["verify", "--asset", "USDC", "--address", a, "--address", b]) == 0
    ev = json.loads(capsys.readouterr()[0])
    assert Decimal(ev["quantity"]) == 1_000_000 and ev["decimals"] == 6 and ev["raw_balance"] == str(10**12)


def test_bitcoin_verified_through_core_rpc(workdir, litecoin, capsys, monkeypatch):  # noqa: F811
    pol = Path(workdir / "policies")
    (pol / "assets.yaml").write_text((pol / "assets.yaml").read_text().replace("network: main", "network: regtest"))
    litecoin.create_wallet("w")
    miner = litecoin.new_address("w")
    litecoin.mine(101, miner)
    custody = litecoin.new_address("w")
    litecoin.send("w", custody, Decimal("12.5"))
    litecoin.mine(1, miner)
    monkeypatch.setenv("DACP_BTC_RPC_URL", litecoin.url)
    monkeypatch.setenv("DACP_BTC_COOKIE_FILE", str(litecoin.cookie_file))
    monkeypatch.setenv("DACP_BTC_NETWORK", "litecoin-regtest")
    monkeypatch.setenv("DACP_BTC_ALLOW_TEST_NETWORKS", "true")  # litecoind stands in for bitcoind: an explicit opt-in
    q = query("btc-eligible.json", workdir, custody={"addresses": [custody], "confirmations": 100, "balance": "12.5"})
    d = decide(capsys, str(q))  # 1 confirmation: not counted at 6
    assert d["eligible"] is False and "custody.balance-verified" in d["failed_rules"]
    litecoin.mine(5, miner)
    d = decide(capsys, str(q))
    assert d["eligible"] is True, d["failed_rules"]
    assert d["evidence"][0]["raw_balance"] == "1250000000" and d["evidence"][0]["confirmations"] == 6
    # A node on another network than the policy's is refused.
    monkeypatch.setenv("DACP_BTC_NETWORK", "main")
    d = decide(capsys, str(q))
    assert reason(d, "custody.onchain-verification")["observed"]["reason"] == "wrong_network"


def _feed_config(tmp: Path, node, feed) -> str:
    """A settings file pointing [prices] at ``feed`` on ``node``; returns its path."""
    p = tmp / "dacp.toml"
    p.write_text(f"""
[prices]
rpc_url = "{node.url}"
chain_id = 1
feeds = {{ ETH = "{feed.address}" }}
max_age_s = 600
""")
    return str(p)


def test_price_from_an_on_chain_feed_replaces_the_query_price(workdir, chain, capsys, monkeypatch):
    import time as _time

    node, _, (a, b) = chain
    feed = deploy(node.w3, "MockAggregator", 8, "ETH / USD", 3000_12345678)
    transact(node.w3, feed.functions.pushRound(3000_12345678, int(_time.time())))
    monkeypatch.setenv("DACP_CONFIG", _feed_config(workdir, node, feed))
    q = query("eth-eligible.json", workdir, quantity="100", custody={"addresses": [a, b]},
              as_of=_iso_now(), evidence={"price_updated_at": None})
    d = decide(capsys, str(q))
    assert d["eligible"] is True, d["failed_rules"]
    assert d["price_usd"] == "3000.12345678" and d["market_value_usd"] == "300012.34"
    kinds = {e["kind"]: e for e in d["evidence"]}
    assert kinds["price"]["source"] and kinds["price"]["round_id"] is not None


def test_stale_feed_fails_closed(workdir, chain, capsys, monkeypatch):
    node, _, (a, b) = chain
    feed = deploy(node.w3, "MockAggregator", 8, "ETH / USD", 3000_00000000)
    transact(node.w3, feed.functions.pushRound(3000_00000000, 1_700_000_000))  # November 2023
    monkeypatch.setenv("DACP_CONFIG", _feed_config(workdir, node, feed))
    d = decide(capsys, str(query("eth-eligible.json", workdir, custody={"addresses": [a, b]})))
    assert d["eligible"] is False and d["failed_rules"] == ["custody.onchain-verification"]
    assert reason(d, "custody.onchain-verification")["observed"]["reason"] == "stale_price"


def test_price_from_a_static_file(workdir, chain, capsys, monkeypatch):
    _, _, (a, b) = chain
    prices = workdir / "prices.yaml"
    prices.write_text(f'ETH: {{price_usd: "2999.99", updated_at: "{_iso_now()}", source: "ops desk"}}\n')
    monkeypatch.setenv("DACP_PRICES_FILE", str(prices))
    q = query("eth-eligible.json", workdir, quantity="10", custody={"addresses": [a, b]}, as_of=_iso_now(),
              evidence={"price_updated_at": None})
    d = decide(capsys, str(q))
    assert d["eligible"] is True and d["price_usd"] == "2999.99" and d["market_value_usd"] == "29999.90"


def _iso_now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# -- issue 16: token restrictions by class, fail-closed, never the query's claim ----------------------
def _edit_assets(workdir: Path, old: str, new: str) -> None:
    p = workdir / "policies" / "assets.yaml"
    text = p.read_text()
    assert old in text, old
    p.write_text(text.replace(old, new, 1))


def test_a_blacklist_view_the_contract_lacks_fails_closed_whatever_the_query_claims(workdir, chain, capsys):
    """Measured: with a registry naming a blacklist function the contract lacks, the query's claim
    address_frozen: false stood and the decision was eligible. isFrozen is a view the adapter reads (Paxos'
    tokens have it), so the bundle validates; the deployed FiatToken lacks it: unknown, so refused, with why."""
    _, _, (a, b) = chain
    _edit_assets(workdir, "    issuer: Circle Internet Financial\n",
                 "    issuer: Circle Internet Financial\n    restrictions: {blacklist: isFrozen}\n")
    q = query("usdc-eligible.json", workdir, custody={"addresses": [a, b], "address_frozen": False})
    d = decide(capsys, str(q))
    assert d["eligible"] is False and d["failed_rules"] == ["custody.address-not-frozen"]
    assert reason(d, "custody.address-not-frozen")["observed"] == "missing"
    why = d["verification"]["restrictions_unknown"]["blacklist"]
    assert "isFrozen(address)" in why and "fails closed" in why
    assert d["evidence"][0]["details"]["restriction_reads"]["blacklist"]["unreadable"] == why


def test_a_second_stablecoin_frozen_on_chain_is_refused_though_the_query_says_not(workdir, chain, capsys):
    """A PYUSD entry takes its class's restrictions (paused, isBlacklisted): the chain says frozen."""
    node, _, _ = chain
    w3 = node.w3
    pyusd = deploy(w3, "TestFiatToken", "PayPal USD", "PYUSD")
    holder = new_address(w3)
    transact(w3, pyusd.functions.mint(holder, 500_000 * 10**6))
    transact(w3, pyusd.functions.blacklist(holder))
    anvil_mine(w3, 70)
    _edit_assets(workdir, "\n  - symbol: BUIDL", f"""
  - symbol: PYUSD
    name: PayPal USD (Paxos)
    class: payment_stablecoin
    chain: ethereum
    network: 1
    contract: "{pyusd.address}"
    decimals: 6
    issuer: Paxos Trust Company
""" + "\n  - symbol: BUIDL")
    q = query("usdc-eligible.json", workdir, asset="PYUSD", quantity="500000",
              custody={"addresses": [holder], "address_frozen": False, "token_paused": False},
              evidence={"stablecoin": {"issuer": "Paxos Trust Company", "reserve_attestation_date": "2026-10-31"}})
    d = decide(capsys, str(q))
    assert d["eligible"] is False and d["failed_rules"] == ["custody.address-not-frozen"]
    assert reason(d, "custody.address-not-frozen")["observed"] is True
    assert reason(d, "custody.token-not-paused")["outcome"] == "pass"


def test_a_fund_allowlist_kept_off_chain_is_not_taken_from_the_query_under_verify(workdir, chain, capsys):
    """BUIDL's allow-list lives in its transfer agent's registry (off_chain in the shipped registry): under
    --verify the transfer agent's claim in the query does not stand; declared as the token's isAllowed
    view, the chain answers."""
    node, _, _ = chain
    w3 = node.w3
    fund = deploy(w3, "FundToken", "BlackRock USD Institutional Digital Liquidity Fund", "BUIDL")
    holder = new_address(w3)
    transact(w3, fund.functions.setAllowed(holder, True))
    transact(w3, fund.functions.mint(holder, 2_000_000 * 10**6))
    anvil_mine(w3, 70)
    _edit_assets(workdir, "0x7712c34205737192402172409a8F7ccef8aA2AEc", fund.address)
    q = query("buidl-eligible.json", workdir, custody={"addresses": [holder]})
    d = decide(capsys, str(q))
    assert d["eligible"] is False and d["failed_rules"] == ["fund.holder-allowlisted"]
    assert d["verification"]["restrictions_unknown"]["allowlist"].startswith("off-chain: ")
    _edit_assets(workdir, f'    contract: "{fund.address}"\n',
                 f'    contract: "{fund.address}"\n    restrictions: {{allowlist: isAllowed}}\n')
    d = decide(capsys, str(q))
    assert d["eligible"] is True, d["failed_rules"]
    assert reason(d, "fund.holder-allowlisted")["observed"] is True
