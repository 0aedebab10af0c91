"""A tiny misbehaving JSON-RPC server on 127.0.0.1, to test transport failures for real.

Each mode answers every POST the same way and counts requests. The server runs in a daemon
thread, serves only loopback, and is shut down by the context manager; the "hang" mode sleeps a
bounded time per request so that no thread outlives the test by more than that.
"""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

HANG_S = 1.5


class StubServer(ThreadingHTTPServer):
    daemon_threads = True
    mode: str
    requests_seen: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: StubServer

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("content-length", 0))
        body = self.rfile.read(length)
        self.server.requests_seen += 1
        mode = self.server.mode
        if mode == "hang":
            time.sleep(HANG_S)
            return
        if mode.startswith("status_"):
            self._send(int(mode.split("_")[1]), b'{"message": "stub refuses"}')
        elif mode == "not_json":
            self._send(200, b"<html>bad gateway page</html>")
        elif mode == "rpc_error":
            req_id = json.loads(body or b"{}").get("id", 1)
            err = {"code": -32000, "message": "stub: internal node trouble"}
            self._send(200, json.dumps({"jsonrpc": "2.0", "id": req_id, "error": err}).encode())
        else:
            raise AssertionError(f"unknown stub mode {mode}")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def stub_server(mode: str) -> Iterator[StubServer]:
    """``mode``: ``status_500``, ``status_401`` (any ``status_NNN``), ``not_json``, ``rpc_error``, ``hang``."""
    server = StubServer(("127.0.0.1", 0), _Handler)
    server.mode = mode
    server.requests_seen = 0
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
