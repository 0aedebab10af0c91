"""Error paths of the Bitcoin adapter against a loopback JSON-RPC server speaking Bitcoin Core's shapes.

The server listens on 127.0.0.1 on a free port, in a thread, answers a bounded number of calls and
is stopped at the end of each test (a hanging handler is released first). Every failure must end
in an ``EvidenceError`` with a stable reason, and never in evidence.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from adapters.bitcoin.custody import BitcoinCustodyReader, BitcoinRpcClient
from adapters.bitcoin.address import encode_segwit, validate_address
from rules.errors import EvidenceError
from tests.support import free_port

pytestmark = pytest.mark.integration

MAX_CALLS = 200  # a runaway retry loop fails the test instead of spinning
HANG_S = 5.0  # the longest a "hanging" handler holds a connection

# ---------------------------------------------------------------------------------------- replies


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None  # written as-is instead of an HTTP response (garbage status line)
    hang: bool = False


def _dumps(doc: Any) -> bytes:
    """JSON with Decimals written as JSON numbers, as bitcoind writes amounts (50.00000000)."""
    marked = json.dumps(doc, default=lambda d: f"__DEC__{d}__")
    return re.sub(r'"__DEC__([-0-9.Ee+]+)__"', r"\1", marked).encode()


def ok(result: Any, request_id: Any) -> Reply:
    return Reply(200, _dumps({"result": result, "error": None, "id": request_id}))


def rpc_error(code: int, message: str, request_id: Any) -> Reply:
    # Bitcoin Core: HTTP 404 for "Method not found", HTTP 500 for every other error (JSON-RPC 1.0).
    status = 404 if code == -32601 else 500
    return Reply(status, _dumps({"result": None, "error": {"code": code, "message": message}, "id": request_id}))


UNAUTHORIZED = Reply(401, b"", {"WWW-Authenticate": 'Basic realm="jsonrpc"'})

# ---------------------------------------------------------------------------------------- server

Responder = Callable[[str, list[Any], Any], Reply]


@dataclass
class Call:
    method: str
    params: list[Any]
    auth: str | None


class StubServer:
    """A scripted JSON-RPC server on 127.0.0.1. ``responder(method, params, id)`` makes each reply."""

    def __init__(self, responder: Responder):
        self.responder = responder
        self.calls: list[Call] = []
        self.release = threading.Event()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", "0"))
                doc = json.loads(self.rfile.read(length))
                stub.calls.append(Call(doc["method"], doc["params"], self.headers.get("Authorization")))
                if len(stub.calls) > MAX_CALLS:
                    reply = Reply(500, b"too many calls")
                else:
                    reply = stub.responder(doc["method"], doc["params"], doc["id"])
                if reply.hang:
                    stub.release.wait(HANG_S)
                    return
                if reply.raw is not None:
                    self.wfile.write(reply.raw)
                    return
                self.send_response(reply.status)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def methods(self) -> list[str]:
        return [c.method for c in self.calls]

    def __enter__(self) -> StubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def serve() -> Iterator[Callable[[Responder], StubServer]]:
    """Start stub servers for a test; all are stopped when it ends, pass or fail."""
    started: list[StubServer] = []

    def start(responder: Responder) -> StubServer:
        s = StubServer(responder).__enter__()
        started.append(s)
        return s

    yield start
    for s in started:
        s.__exit__(None, None, None)


def client(url: str, **kw: Any) -> BitcoinRpcClient:
    kw.setdefault("user", "u")
    kw.setdefault("password", "p")
    kw.setdefault("timeout_s", 2.0)
    kw.setdefault("retries", 3)
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("max_total_s", 5.0)
    return BitcoinRpcClient(url, **kw)


# ---------------------------------------------------------------------------------------- fake node

A = encode_segwit("bcrt", 0, bytes(range(20)))
B = encode_segwit("bcrt", 0, bytes(range(100, 132)))


def _hash(n: int) -> str:
    return f"{n:064x}"


class FakeNode:
    """Just enough of a regtest bitcoind for BitcoinCustodyReader: tip, one scan result, headers."""

    def __init__(self, height: int = 200, chain: str = "regtest"):
        self.height = height
        self.chain = chain
        self.ibd = False
        self.unspents: list[dict[str, Any]] = [
            self.utxo(A, Decimal("1.00000001"), 150, txid=1),
            self.utxo(B, Decimal("0.5"), 195, txid=2),  # 6 confirmations at 200
            self.utxo(B, Decimal("0.25"), 196, txid=3),  # 5: not counted
        ]
        self.total: Decimal | None = None
        self.after_scan: Callable[[], None] = lambda: None

    @staticmethod
    def utxo(address: str, amount: Decimal, height: int, txid: int) -> dict[str, Any]:
        script = validate_address(address, "regtest").script_pubkey.hex()
        return {
            "txid": _hash(1000 + txid),
            "vout": 0,
            "scriptPubKey": script,
            "desc": f"addr({address})#xxxxxxxx",
            "amount": amount,
            "height": height,
        }

    def __call__(self, method: str, params: list[Any], rid: Any) -> Reply:
        if method == "getblockchaininfo":
            info = {"chain": self.chain, "blocks": self.height, "headers": self.height}
            info |= {"bestblockhash": _hash(self.height), "initialblockdownload": self.ibd}
            return ok(info, rid)
        if method == "scantxoutset":
            total = self.total if self.total is not None else sum((u["amount"] for u in self.unspents), Decimal(0))
            result = {"success": True, "txouts": 1000, "height": self.height, "bestblock": _hash(self.height)}
            result |= {"unspents": self.unspents, "total_amount": total}
            self.after_scan()
            return ok(result, rid)
        if method == "getbestblockhash":
            return ok(_hash(self.height), rid)
        if method == "validateaddress":  # the node's reading of the address: the script custody is keyed by
            script = validate_address(params[0], "regtest").script_pubkey.hex()
            return ok({"isvalid": True, "address": params[0], "scriptPubKey": script}, rid)
        if method == "getblockheader":
            h = int(params[0], 16)
            return ok({"hash": params[0], "height": h, "time": 1_700_000_000 + h, "confirmations": 1}, rid)
        return rpc_error(-32601, "Method not found", rid)


def first(n: int, reply: Callable[[Any], Reply], then: Responder) -> Responder:
    """Answer the first ``n`` calls with ``reply(id)``, then hand over to ``then``."""
    count = 0

    def responder(method: str, params: list[Any], rid: Any) -> Reply:
        nonlocal count
        count += 1
        return reply(rid) if count <= n else then(method, params, rid)

    return responder


def always(reply: Callable[[Any], Reply]) -> Responder:
    return lambda method, params, rid: reply(rid)


def verify(url: str, **client_kw: Any) -> Any:
    return BitcoinCustodyReader(client(url, **client_kw), "regtest", busy_backoff_s=0.01).verify([A, B])


# ---------------------------------------------------------------------------------------- the happy path


def test_fake_node_gives_evidence(serve: Callable[[Responder], StubServer]) -> None:
    s = serve(FakeNode())
    ev = verify(s.url)
    assert ev.raw_balance == 100000001 + 50000000
    assert [r["amount_sat"] for r in ev.details["too_few_confirmations"]] == ["25000000"]
    assert s.methods() == ["getblockchaininfo", "validateaddress", "validateaddress", "scantxoutset",
                           "getbestblockhash", "getblockheader"]
    assert s.calls[3].params == ["start", [f"addr({A})", f"addr({B})"]]


# ---------------------------------------------------------------------------------------- Bitcoin Core's error shapes


def test_method_not_found_http_404(serve: Callable[[Responder], StubServer]) -> None:
    s = serve(always(lambda rid: rpc_error(-32601, "Method not found", rid)))
    with pytest.raises(EvidenceError) as e:
        verify(s.url)
    assert e.value.reason == "method_not_found"
    assert (e.value.code, e.value.http_status) == (-32601, 404)  # type: ignore[attr-defined]
    assert len(s.calls) == 1  # not retried


def test_invalid_parameter_http_500(serve: Callable[[Responder], StubServer]) -> None:
    s = serve(always(lambda rid: rpc_error(-8, "Block height out of range", rid)))
    with pytest.raises(EvidenceError) as e:
        verify(s.url)
    assert e.value.reason == "invalid_parameter"
    assert "Block height out of range" in e.value.message
    assert len(s.calls) == 1


def test_other_rpc_error_keeps_code_and_message(serve: Callable[[Responder], StubServer]) -> None:
    s = serve(always(lambda rid: rpc_error(-1, "something broke", rid)))
    with pytest.raises(EvidenceError) as e:
        verify(s.url)
    assert e.value.reason == "rpc_error"
    assert "-1" in e.value.message and "something broke" in e.value.message


def test_warming_up_is_retried_then_succeeds(serve: Callable[[Responder], StubServer]) -> None:
    s = serve(first(2, lambda rid: rpc_error(-28, "Loading block index...", rid), FakeNode()))
    ev = verify(s.url, retries=3)
    assert ev.raw_balance == 150000001
    assert s.methods()[:3] == ["getblockchaininfo"] * 3


def test_warming_up_forever_is_bounded(serve: Callable[[Responder], StubServer]) -> None:
    s = serve(always(lambda rid: rpc_error(-28, "Verifying blocks...", rid)))
    with pytest.raises(EvidenceError) as e:
        verify(s.url, retries=3)
    assert e.value.reason == "warming_up"
    assert len(s.calls) == 4 and "4 attempts" in e.value.message


def test_unauthorized_empty_body(serve: Callable[[Responder], StubServer], tmp_path: Path) -> None:
    s = serve(always(lambda rid: UNAUTHORIZED))
    with pytest.raises(EvidenceError) as e:
        verify(s.url)
    assert e.value.reason == "unauthorized"
    assert len(s.calls) == 1

    cookie = tmp_path / ".cookie"
    cookie.write_text("__cookie__:abc\n")
    with pytest.raises(EvidenceError) as e:
        BitcoinCustodyReader(BitcoinRpcClient(s.url, cookie_file=cookie), "regtest").verify([A])
    assert e.value.reason == "unauthorized"
    assert len(s.calls) == 3  # the cookie was read again once, then the call gave up
    assert s.calls[-1].auth == "Basic X19jb29raWVfXzphYmM="  # __cookie__:abc


def test_hang_times_out_within_bounds(serve: Callable[[Responder], StubServer]) -> None:
    s = serve(always(lambda rid: Reply(200, b"", hang=True)))
    t0 = time.monotonic()
    with pytest.raises(EvidenceError) as e:
        verify(s.url, timeout_s=0.2, retries=1, max_total_s=2.0)
    assert e.value.reason == "timeout"
    assert time.monotonic() - t0 < 1.5
    assert len(s.calls) == 2


def test_total_time_budget_caps_retries(serve: Callable[[Responder], StubServer]) -> None:
    s = serve(always(lambda rid: Reply(200, b"", hang=True)))
    t0 = time.monotonic()
    with pytest.raises(EvidenceError) as e:
        verify(s.url, timeout_s=0.3, retries=50, max_total_s=0.8)
    assert e.value.reason == "timeout"
    assert time.monotonic() - t0 < 1.5


@pytest.mark.parametrize(
    "reply,reason",
    [
        (Reply(200, b"<html>not json</html>"), "bad_response"),
        (Reply(500, b"Internal Server Error"), "http_error"),
        (Reply(200, b'{"jsonrpc": "2.0"}'), "bad_response"),
        (Reply(200, b'{"result": NaN, "error": null, "id": 1}'), "bad_response"),
        (Reply(200, b"", raw=b"garbage\r\n\r\n"), "bad_response"),
    ],
    ids=["html", "http500-text", "no-result", "nan", "no-status-line"],
)
def test_garbage_answers(serve: Callable[[Responder], StubServer], reply: Reply, reason: str) -> None:
    s = serve(always(lambda rid: reply))
    with pytest.raises(EvidenceError) as e:
        verify(s.url)
    assert e.value.reason == reason


def test_response_for_another_request_is_refused(serve: Callable[[Responder], StubServer]) -> None:
    s = serve(always(lambda rid: ok({"chain": "regtest"}, "someone-else")))
    with pytest.raises(EvidenceError) as e:
        verify(s.url)
    assert e.value.reason == "bad_response"


def test_busy_http_503_is_retried_then_fails(serve: Callable[[Responder], StubServer]) -> None:
    s = serve(always(lambda rid: Reply(503, b"Work queue depth exceeded")))
    with pytest.raises(EvidenceError) as e:
        verify(s.url, retries=2)
    assert e.value.reason == "http_error"
    assert len(s.calls) == 3


def test_connection_refused() -> None:
    url = f"http://127.0.0.1:{free_port()}/"  # nothing listens there
    t0 = time.monotonic()
    with pytest.raises(EvidenceError) as e:
        verify(url, retries=2)
    assert e.value.reason == "node_unreachable"
    assert "3 attempts" in e.value.message
    assert time.monotonic() - t0 < 2


def test_credentials_never_in_messages(serve: Callable[[Responder], StubServer]) -> None:
    s = serve(always(lambda rid: UNAUTHORIZED))
    url = s.url.replace("http://", "http://alice:s3cret@")
    with pytest.raises(EvidenceError) as e:
        BitcoinCustodyReader(BitcoinRpcClient(url), "regtest").verify([A])
    assert "s3cret" not in str(e.value) and "alice" not in str(e.value)
    assert s.calls[0].auth == "Basic YWxpY2U6czNjcmV0"  # alice:s3cret


# ---------------------------------------------------------------------------------------- the reader's own checks


def test_new_block_during_scan_is_retried(serve: Callable[[Responder], StubServer]) -> None:
    node = FakeNode()
    raced = [True]

    def one_block_once() -> None:
        if raced.pop() if raced else False:
            node.height += 1

    node.after_scan = one_block_once
    s = serve(node)
    ev = verify(s.url)
    assert ev.block_number == 201
    assert len(ev.details["race_retries"]) == 1
    assert ev.raw_balance == 100000001 + 50000000 + 25000000  # at 201 the 0.25 has 6 confirmations


def test_tip_moving_on_every_scan_fails_as_reorg(serve: Callable[[Responder], StubServer]) -> None:
    node = FakeNode()

    def new_block() -> None:
        node.height += 1

    node.after_scan = new_block
    s = serve(node)
    with pytest.raises(EvidenceError) as e:
        verify(s.url)
    assert e.value.reason == "reorg"
    assert s.methods().count("scantxoutset") == 4  # 1 + race_retries (3)


def test_scan_already_in_progress_is_retried_bounded(serve: Callable[[Responder], StubServer]) -> None:
    node = FakeNode()
    busy = [2]

    def responder(method: str, params: list[Any], rid: Any) -> Reply:
        if method == "scantxoutset" and busy[0] > 0:
            busy[0] -= 1
            return rpc_error(-8, "Scan already in progress, use action \"abort\" or \"status\"", rid)
        return node(method, params, rid)

    s = serve(responder)
    assert verify(s.url).details["busy_retries"] == 2

    busy[0] = 100
    with pytest.raises(EvidenceError) as e:
        verify(s.url)
    assert e.value.reason == "scan_in_progress"


def test_wrong_chain_and_initial_download(serve: Callable[[Responder], StubServer]) -> None:
    s = serve(FakeNode(chain="main"))
    with pytest.raises(EvidenceError) as e:
        verify(s.url)
    assert e.value.reason == "wrong_network"
    assert s.methods() == ["getblockchaininfo"]  # nothing scanned

    node = FakeNode()
    node.ibd = True
    with pytest.raises(EvidenceError) as e:
        verify(serve(node).url)
    assert e.value.reason == "not_synced"


@pytest.mark.parametrize(
    "amount", [Decimal("1.000000001"), Decimal("-1"), "1.0", None], ids=["sub-satoshi", "negative", "string", "null"]
)
def test_amount_that_is_not_whole_satoshi_is_refused(serve: Callable[[Responder], StubServer], amount: Any) -> None:
    node = FakeNode()
    node.unspents[0]["amount"] = amount
    node.total = Decimal("1.75000001")
    with pytest.raises(EvidenceError) as e:
        verify(serve(node).url)
    assert e.value.reason == "bad_response"
    assert f"output {_hash(1001)}:0" in e.value.message


def test_scan_total_must_equal_its_outputs(serve: Callable[[Responder], StubServer]) -> None:
    node = FakeNode()
    node.total = Decimal("1.75000002")
    with pytest.raises(EvidenceError) as e:
        verify(serve(node).url)
    assert e.value.reason == "bad_response" and "total_amount" in e.value.message


def test_output_for_a_script_not_asked_for_is_refused(serve: Callable[[Responder], StubServer]) -> None:
    node = FakeNode()
    node.unspents.append(FakeNode.utxo(encode_segwit("bcrt", 0, bytes(20)), Decimal("5"), 100, txid=9))
    with pytest.raises(EvidenceError) as e:
        verify(serve(node).url)
    assert e.value.reason == "bad_response"


def test_a_node_that_reads_an_address_as_another_script_is_refused(serve: Callable[[Responder], StubServer]) -> None:
    """Custody is keyed by the output script: the node's ``validateaddress`` must agree with the decoding here."""
    fake = FakeNode()

    def responder(method: str, params: list[Any], rid: Any) -> Reply:
        if method == "validateaddress" and params[0] == B:
            return ok({"isvalid": True, "address": B, "scriptPubKey": "0014" + "00" * 20}, rid)
        return fake(method, params, rid)

    s = serve(responder)
    with pytest.raises(EvidenceError) as e:
        verify(s.url)
    assert e.value.reason == "bad_response" and "decodes" in e.value.message
    assert "scantxoutset" not in s.methods()  # nothing scanned
