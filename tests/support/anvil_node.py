"""A real anvil node for integration tests, and helpers to deploy the test contracts.

Import the fixtures explicitly in a test module::

    from tests.support.anvil_node import anvil, fresh_anvil  # noqa: F401 (pytest fixtures)

``anvil`` is one node per module (cheap to share: each test deploys its own contracts and uses its
own addresses); ``fresh_anvil`` is one node per test, for tests that kill or restart it.

anvil is started from the platform binary that the ``@foundry-rs/anvil`` npm package ships
(``node_modules/@foundry-rs/anvil-<os>-<arch>/bin/anvil``) rather than through
``node_modules/.bin/anvil``, which is a node wrapper: killing the wrapper would leave the real
node running. Either way it runs in its own process group and the whole group is stopped.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Any, Iterator

import pytest
import requests
from web3 import Web3
from web3.providers import HTTPProvider

from tests.support import ROOT, free_port, require_binary

BUILD = ROOT / "contracts" / "build"
DEFAULT_CHAIN_ID = 31337
START_TIMEOUT_S = 15.0


def _die_with_parent() -> None:
    """Linux: have the kernel SIGKILL anvil if the test process dies without running teardown."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def anvil_binary() -> str:
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine().lower(), "")
    system = platform.system().lower()
    native = ROOT / "node_modules" / "@foundry-rs" / f"anvil-{system}-{arch}" / "bin" / "anvil"
    return require_binary("anvil", native, ROOT / "node_modules" / ".bin" / "anvil")


class AnvilNode:
    """One anvil process on 127.0.0.1. ``restart(chain_id=...)`` keeps the port."""

    def __init__(self, binary: str, chain_id: int = DEFAULT_CHAIN_ID, port: int | None = None):
        self.binary = binary
        self.chain_id = chain_id
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def w3(self) -> Web3:
        """A plain web3 client for setting up state (deploy, send, mine); not the code under test."""
        return Web3(HTTPProvider(self.url, request_kwargs={"timeout": 10}))

    def start(self) -> AnvilNode:
        self.proc = subprocess.Popen(
            [self.binary, "--host", "127.0.0.1", "--port", str(self.port), "--chain-id", str(self.chain_id), "--silent"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # own process group: stop() takes any child with it
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                self.proc = None
                raise RuntimeError(f"anvil exited at start (port {self.port}): {err.strip()}")
            try:
                r = requests.post(self.url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}, timeout=1)
                if r.ok and int(r.json()["result"], 16) == self.chain_id:
                    return self
            except (requests.RequestException, ValueError, KeyError):
                pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"anvil did not answer on {self.url} within {START_TIMEOUT_S}s")

    def kill(self) -> None:
        """SIGKILL, as a crash would: no clean shutdown."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        self._signal(signal.SIGTERM)

    def _signal(self, sig: int) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        if proc.stderr:
            proc.stderr.close()

    def restart(self, chain_id: int | None = None) -> None:
        """Kill and start again on the same port (a fresh chain), optionally on another chain id."""
        self.kill()
        if chain_id is not None:
            self.chain_id = chain_id
        self.start()


@contextmanager
def anvil_node(chain_id: int = DEFAULT_CHAIN_ID) -> Iterator[AnvilNode]:
    """Start anvil, yield it, and stop it whatever happens in between."""
    node = AnvilNode(anvil_binary(), chain_id)
    try:
        node.start()
    except RuntimeError:  # the free port was taken between probe and bind: one more try
        node = AnvilNode(node.binary, chain_id)
        node.start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="module")
def anvil() -> Iterator[AnvilNode]:
    with anvil_node() as node:
        yield node


@pytest.fixture
def fresh_anvil() -> Iterator[AnvilNode]:
    with anvil_node() as node:
        yield node


# --- chain helpers -------------------------------------------------------------------------


def rpc(w3: Web3, method: str, params: list[Any]) -> Any:
    resp = w3.provider.make_request(method, params)  # type: ignore[arg-type]
    if "error" in resp:
        raise RuntimeError(f"{method}: {resp['error']}")
    return resp.get("result")


def anvil_mine(w3: Web3, blocks: int = 1) -> int:
    """Mine ``blocks`` empty blocks; returns the new head number."""
    rpc(w3, "anvil_mine", [hex(blocks)])
    return w3.eth.block_number


def tag_number(w3: Web3, tag: str) -> int:
    return int(w3.eth.get_block(tag)["number"])


def artifact(name: str) -> dict[str, Any]:
    return json.loads((BUILD / f"{name}.json").read_text())


def deploy(w3: Web3, name: str, *args: Any) -> Any:
    """Deploy ``contracts/build/<name>.json`` from anvil's first account; returns a web3 contract."""
    art = artifact(name)
    factory = w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
    tx = factory.constructor(*args).transact({"from": w3.eth.accounts[0]})
    receipt = w3.eth.wait_for_transaction_receipt(tx, timeout=10)
    assert receipt["status"] == 1, f"deploying {name} failed"
    return w3.eth.contract(address=receipt["contractAddress"], abi=art["abi"])


def transact(w3: Web3, fn: Any) -> int:
    """Send a contract call from the owner account; returns its block number."""
    receipt = w3.eth.wait_for_transaction_receipt(fn.transact({"from": w3.eth.accounts[0]}), timeout=10)
    assert receipt["status"] == 1
    return int(receipt["blockNumber"])


def send_eth(w3: Web3, to: str, wei: int) -> int:
    """Send ``wei`` from the first account; returns the block it landed in."""
    tx = w3.eth.send_transaction({"from": w3.eth.accounts[0], "to": to, "value": wei})
    receipt = w3.eth.wait_for_transaction_receipt(tx, timeout=10)
    assert receipt["status"] == 1
    return int(receipt["blockNumber"])


def new_address(w3: Web3) -> str:
    """A fresh, empty, checksummed address (no key needed: custody addresses only receive here)."""
    return w3.eth.account.create().address
