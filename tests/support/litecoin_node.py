"""A throw-away ``litecoind -regtest`` node for integration tests (a Bitcoin Core fork, same RPC).

Start it with the ``litecoin`` fixture (module scope) or the ``litecoin_node`` context manager.
The node listens for RPC on 127.0.0.1 only, on a free port, makes no outbound connections and
accepts both its cookie file and a fixed rpcuser/rpcpassword (given as ``-rpcauth``, which keeps
the cookie enabled). It is stopped with the ``stop`` RPC and killed if that does not work, even
when the test fails.

Import the fixture explicitly in a test module: ``from tests.support.litecoin_node import litecoin``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

import pytest

from adapters.bitcoin.rpc import BitcoinRpcClient
from rules.errors import EvidenceError
from tests.support import free_port, require_binary

RPC_USER = "dacp-test"
STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


def rpcauth_line(user: str, password: str) -> str:
    """The ``-rpcauth`` value for ``user``/``password`` (as Bitcoin Core's share/rpcauth/rpcauth.py makes it)."""
    salt = secrets.token_hex(16)
    digest = hmac.new(salt.encode(), password.encode(), hashlib.sha256).hexdigest()
    return f"{user}:{salt}${digest}"


@dataclass
class LitecoinNode:
    """A running regtest node and how to reach it."""

    datadir: Path
    rpc_port: int
    p2p_port: int
    process: subprocess.Popen[bytes]
    rpc_user: str
    rpc_password: str
    _clients: dict[str | None, BitcoinRpcClient] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.rpc_port}/"

    @property
    def cookie_file(self) -> Path:
        return self.datadir / "regtest" / ".cookie"

    def client(self, wallet: str | None = None, **kw: Any) -> BitcoinRpcClient:
        """A cookie-authenticated client; ``wallet`` selects the ``/wallet/NAME`` endpoint."""
        url = self.url + (f"wallet/{wallet}" if wallet else "")
        kw.setdefault("timeout_s", 30.0)
        kw.setdefault("retries", 2)
        kw.setdefault("backoff_s", 0.05)
        return BitcoinRpcClient(url, cookie_file=self.cookie_file, **kw)

    def rpc(self, method: str, *params: Any, wallet: str | None = None) -> Any:
        if wallet not in self._clients:
            self._clients[wallet] = self.client(wallet)
        return self._clients[wallet].call(method, *params)

    # --- conveniences for tests -----------------------------------------------------------

    def create_wallet(self, name: str) -> None:
        self.rpc("createwallet", name)

    def new_address(self, wallet: str, address_type: str = "bech32") -> str:
        return self.rpc("getnewaddress", "", address_type, wallet=wallet)

    def mine(self, n: int, address: str) -> list[str]:
        return self.rpc("generatetoaddress", n, address)

    def send(self, wallet: str, address: str, amount: Decimal) -> str:
        # JSON numbers are sent as strings: bitcoind accepts "0.12345678" for amounts, so no float is involved.
        return self.rpc("sendtoaddress", address, str(amount), wallet=wallet)


def _args(binary: str, datadir: Path, rpc_port: int, p2p_port: int, auth: str) -> list[str]:
    return [
        binary,
        "-regtest",
        f"-datadir={datadir}",
        "-server=1",
        "-rpcbind=127.0.0.1",
        "-rpcallowip=127.0.0.1",
        f"-rpcport={rpc_port}",
        f"-rpcauth={auth}",
        f"-port={p2p_port}",
        "-listen=0",
        "-connect=0",
        "-dnsseed=0",
        "-listenonion=0",
        "-discover=0",
        "-upnp=0",
        "-fallbackfee=0.0001",
        "-printtoconsole=0",
        "-txindex=0",
    ]


def _log_tail(datadir: Path, n: int = 20) -> str:
    out = []
    for log in (datadir / "litecoind.out", datadir / "regtest" / "debug.log"):
        try:
            out.append(f"--- {log.name}:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-n:]))
        except OSError:
            out.append(f"--- {log.name}: (none)")
    return "\n".join(out)


def _stop(node: LitecoinNode) -> None:
    proc = node.process
    if proc.poll() is None:
        try:
            BitcoinRpcClient(node.url, cookie_file=node.cookie_file, timeout_s=5, retries=0, max_total_s=5).call("stop")
        except EvidenceError:
            pass
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)


@contextmanager
def litecoin_node(binary: str, datadir: Path) -> Iterator[LitecoinNode]:
    """Start ``litecoind -regtest`` in ``datadir``, wait for its RPC, and always stop it."""
    password = secrets.token_hex(16)
    node: LitecoinNode | None = None
    try:
        for attempt in range(3):  # a free port may be taken between free_port() and bind: try again
            rpc_port, p2p_port = free_port(), free_port()
            log = open(datadir / "litecoind.out", "ab")
            try:
                proc = subprocess.Popen(
                    _args(binary, datadir, rpc_port, p2p_port, rpcauth_line(RPC_USER, password)),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            finally:
                log.close()
            node = LitecoinNode(datadir, rpc_port, p2p_port, proc, RPC_USER, password)
            if _wait_ready(node):
                break
            _stop(node)
            node = None
        else:
            raise RuntimeError(f"litecoind did not start; last log lines:\n{_log_tail(datadir)}")
        yield node
    finally:
        if node is not None:
            _stop(node)


def _wait_ready(node: LitecoinNode) -> bool:
    """True once RPC answers (past -28 warming up); False if the process died (e.g. port taken)."""
    probe = BitcoinRpcClient(node.url, cookie_file=node.cookie_file, timeout_s=2, retries=0, max_total_s=2)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if node.process.poll() is not None:
            return False
        try:
            probe.call("getblockchaininfo")
            return True
        except EvidenceError as e:
            # cookie not yet written (unauthorized), RPC not yet bound (node_unreachable), warming_up
            if e.reason not in {"unauthorized", "node_unreachable", "warming_up", "timeout"}:
                raise
        time.sleep(0.1)
    raise RuntimeError(f"litecoind RPC not ready after {STARTUP_TIMEOUT_S} s:\n{_log_tail(node.datadir)}")


@pytest.fixture(scope="module")
def litecoin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LitecoinNode]:
    """A regtest node shared by the tests of one module (skips locally, fails in CI, if missing)."""
    binary = require_binary("litecoind")
    with litecoin_node(binary, tmp_path_factory.mktemp("litecoind")) as node:
        yield node
