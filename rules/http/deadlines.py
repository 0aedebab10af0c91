"""Read deadlines on every connection: uvicorn's HTTP protocols with a header timer and a body backstop.

uvicorn (0.55, httptools or h11) has no header or body read timeout of its own: ``timeout_keep_alive`` runs only between
requests and is cancelled by the first byte of the next one, so a client that sends its request line and
headers one byte at a time (slow loris), or that never sends anything, holds its connection for ever.

``rules.http.protocols.guarded(http, header_timeout_s, body_timeout_s, max_header_bytes)`` is a subclass of uvicorn's
``HttpToolsProtocol`` (``[service] http = "httptools"``, the default: its parser is C, llhttp) or
``H11Protocol`` (``"h11"``, pure Python) (passed as ``http=`` to ``uvicorn.run``) that keeps one timer per
connection, armed by phase:

- **headers**: from the connection's start (or, on a keep-alive connection, the first byte of the next
  request) until h11 has parsed the request line and headers. On expiry the client gets a plain
  ``408 request_timeout`` (written directly: no request exists yet to route) and the connection is closed.
- **body**: from the end of the headers until the body's last byte. The app's own deadline
  (``rules.http.reading.read_body``: 408 ``request_timeout`` with the usual JSON error body) fires first when
  a route reads the body; this backstop, ``BODY_GRACE_S`` later, closes the connection of a body nobody reads
  (a refusal sent before the body, a 503 over ``limit_concurrency``) that keeps trickling in.
- between requests: no timer of ours (``timeout_keep_alive`` governs an idle keep-alive connection).

h11 refuses a request line and headers over ``[service] max_incomplete_event_bytes`` itself; llhttp has no
such bound, so the httptools protocol counts them (request target and header names and values, and the
bytes received while the headers are incomplete) and answers 400 past it, as h11 does.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any


from rules.http.logs import event

BODY_GRACE_S = 1.0  # the backstop after the app's own body deadline


def timeout_response(message: str) -> bytes:
    """A complete ``408`` answer with the service's JSON error body (no bundle: no request was routed)."""
    body = json.dumps({"error": {"code": "request_timeout", "message": message, "retryable": True}}).encode()
    return (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"content-length: %d\r\n\r\n" % len(body)) + body


class _Deadline:
    """The per-connection timer: ``_arm(phase)``, ``_disarm()``, and on expiry a 408 (headers) and the close.
    Mixed into a uvicorn protocol (``loop``, ``transport`` and ``client`` are the protocol's)."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    client: Any
    _deadline: asyncio.TimerHandle | None = None
    _phase: str | None = None

    def _closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def _arm(self, phase: str | None) -> None:
        if phase == self._phase:
            return
        self._disarm()
        self._phase = phase
        if phase == "headers":
            self._deadline = self.loop.call_later(self.header_timeout_s, self._expired, phase)
        elif phase == "body":
            self._deadline = self.loop.call_later(self.body_timeout_s + BODY_GRACE_S, self._expired, phase)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._phase = None

    def _expired(self, phase: str) -> None:
        self._deadline = None
        if self._closing():
            return
        limit = self.header_timeout_s if phase == "headers" else self.body_timeout_s
        client = "%s:%d" % self.client if self.client else None
        event(logging.WARNING, f"request {phase} not received in time; connection closed", event="request_timeout",
              phase=phase, limit_s=limit, client=client)
        if phase == "headers":
            self.transport.write(timeout_response(
                f"the request line and headers did not arrive within {limit:g} s ([service] header_timeout_s)"))
        self.transport.close()
