"""The ledger's real parts, shared by the modules of tests/ledger: an anvil node (chain id 1, TestFiatToken as
USDC) per module, and a ledger on each backend (an SQLite file; a database on the session's throw-away
PostgreSQL server, tests/support/postgres_node.py) with the policy copy's USDC contract replaced."""

from __future__ import annotations

import pytest

from tests.support import ROOT
from tests.support.anvil_node import anvil_node, deploy
from tests.support.ledger_workload import Setup, make_ledger, write_policies, write_prices
from tests.support.postgres_node import postgres  # noqa: F401 - pytest fixture


@pytest.fixture(scope="module")
def chain():
    with anvil_node(chain_id=1) as node:
        token = deploy(node.w3, "TestFiatToken", "USD Coin", "USDC")
        yield node, token


@pytest.fixture(params=["sqlite", "postgresql"])
def setup(request, chain, tmp_path) -> Setup:
    node, token = chain
    if request.param == "sqlite":
        target = str(tmp_path / "ledger.sqlite")
    else:
        target = request.getfixturevalue("postgres").create_database()
    pol = write_policies(ROOT, tmp_path / "policies", token.address)
    prices = write_prices(tmp_path / "prices.yaml")
    return Setup(target, str(pol), str(prices), node.url)


@pytest.fixture
def ledger(setup):
    led = make_ledger(setup)
    yield led
    led.store.close()
