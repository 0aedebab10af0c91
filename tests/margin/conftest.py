"""The margin room's tests run on the ledger's real parts (tests/ledger/conftest.py): an anvil node with
TestFiatToken as USDC, and a ledger on each backend (SQLite file, PostgreSQL server)."""

from tests.ledger.conftest import chain, ledger, setup  # noqa: F401 - pytest fixtures
from tests.support.postgres_node import postgres  # noqa: F401 - pytest fixture
