"""The read deadlines (rules.http.deadlines) on uvicorn's pure-Python h11 protocol (``[service] http = "h11"``):
the phase is read from h11's state after every event. h11's own ``max_incomplete_event_size`` bounds only
headers that are still incomplete (a whole oversized block in one read passes), so the request line and
headers are measured here before h11 parses them, as on httptools."""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from rules.http.deadlines import _Deadline


class GuardedH11Protocol(_Deadline, H11Protocol):
    """uvicorn's h11 protocol with read deadlines (h11 bounds the header size itself)."""

    max_header_bytes: int = 16384

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fresh = True  # no request parsed yet on this connection: its start counts as the first byte

    # uvicorn's protocol interface, each followed by a look at the phase
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:  # the next request's line and headers: measured before parsing
            buffered = bytes(self.conn.trailing_data[0]) + data
            end = buffered.find(b"\r\n\r\n")
            if (end + 4 if end >= 0 else len(buffered)) > self.max_header_bytes:
                self._disarm()
                self.send_400_response(f"Request line and headers larger than {self.max_header_bytes} bytes "
                                       "([service] max_incomplete_event_bytes).")
                return
        super().data_received(data)

    def handle_events(self) -> None:  # called on data received and after each response (pipelining)
        super().handle_events()
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def _current_phase(self) -> str | None:
        if self._closing():
            return None
        state = self.conn.their_state
        if state is h11.IDLE:
            return "headers" if self._fresh or self.conn.trailing_data[0] else None
        self._fresh = False
        return "body" if state is h11.SEND_BODY else None

    def _watch(self) -> None:
        self._arm(self._current_phase())
