"""Read deadlines on every connection: uvicorn's h11 protocol with a header timer and a body backstop.

uvicorn (0.54, h11) has no header or body read timeout of its own: ``timeout_keep_alive`` runs only between
requests and is cancelled by the first byte of the next one, so a client that sends its request line and
headers one byte at a time (slow loris), or that never sends anything, holds its connection for ever.

``guarded_h11(header_timeout_s, body_timeout_s)`` is a subclass of uvicorn's ``H11Protocol`` (passed as
``http=`` to ``uvicorn.run``) that keeps one timer per connection, armed by phase:

- **headers**: from the connection's start (or, on a keep-alive connection, the first byte of the next
  request) until h11 has parsed the request line and headers. On expiry the client gets a plain
  ``408 request_timeout`` (written directly: no request exists yet to route) and the connection is closed.
- **body**: from the end of the headers until the body's last byte. The app's own deadline
  (``rules.http.reading.read_body``: 408 ``request_timeout`` with the usual JSON error body) fires first when
  a route reads the body; this backstop, ``BODY_GRACE_S`` later, closes the connection of a body nobody reads
  (a refusal sent before the body, a 503 over ``limit_concurrency``) that keeps trickling in.
- between requests: no timer of ours (``timeout_keep_alive`` governs an idle keep-alive connection).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from rules.http.logs import event

BODY_GRACE_S = 1.0  # the backstop after the app's own body deadline


def timeout_response(message: str) -> bytes:
    """A complete ``408`` answer with the service's JSON error body (no bundle: no request was routed)."""
    body = json.dumps({"error": {"code": "request_timeout", "message": message, "retryable": True}}).encode()
    return (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"content-length: %d\r\n\r\n" % len(body)) + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with read deadlines (see the module). The class attributes are set by
    ``guarded_h11``."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._phase: str | None = None
        self._fresh = True  # no request parsed yet on this connection: its start counts as the first byte

    # uvicorn's protocol interface, each followed by a look at the phase
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:  # called on data received and after each response (pipelining)
        super().handle_events()
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def _current_phase(self) -> str | None:
        if self.transport is None or self.transport.is_closing():
            return None
        state = self.conn.their_state
        if state is h11.IDLE:
            return "headers" if self._fresh or self.conn.trailing_data[0] else None
        self._fresh = False
        return "body" if state is h11.SEND_BODY else None

    def _watch(self) -> None:
        phase = self._current_phase()
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
        if self.transport is None or self.transport.is_closing():
            return
        limit = self.header_timeout_s if phase == "headers" else self.body_timeout_s
        client = "%s:%d" % self.client if self.client else None
        event(logging.WARNING, f"request {phase} not received in time; connection closed", event="request_timeout",
              phase=phase, limit_s=limit, client=client)
        if phase == "headers":
            self.transport.write(timeout_response(
                f"the request line and headers did not arrive within {limit:g} s ([service] header_timeout_s)"))
        self.transport.close()


def guarded_h11(header_timeout_s: float, body_timeout_s: float) -> type[GuardedH11Protocol]:
    """The protocol class to pass as ``uvicorn.run(http=...)``, with these deadlines."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,),
                {"header_timeout_s": float(header_timeout_s), "body_timeout_s": float(body_timeout_s)})
