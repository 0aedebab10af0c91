"""The read deadlines (rules.http.deadlines) on uvicorn's httptools protocol (``[service] http =
"httptools"``, the default): the phase follows the parser's callbacks (message begin, headers complete,
message complete), and the request line and headers are bounded in size here, since llhttp does not."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from rules.http.deadlines import _Deadline


class _HeadersTooLarge(Exception):
    """Raised from a parser callback: stops llhttp mid-feed (httptools re-raises it from ``feed_data``)."""


class GuardedHttpToolsProtocol(_Deadline, HttpToolsProtocol):
    """uvicorn's httptools protocol with read deadlines and a header size bound (``max_header_bytes``)."""

    max_header_bytes: int = 16384

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_bytes = 0  # of the request being parsed, while its headers are incomplete

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_bytes = 0
        self._arm("headers")  # the connection's start counts as the first byte of its first request

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        before = self._phase
        try:
            super().data_received(data)
        except _HeadersTooLarge:
            self._refuse_size()
            return
        if before == "headers" and self._phase == "headers" and not self._closing():
            self._header_bytes += len(data)  # still no end of headers in all that was received
            if self._header_bytes > self.max_header_bytes:
                self._refuse_size()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._arm("headers")

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._count(len(name) + len(value) + 4)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._header_bytes = 0
        self._arm("body")

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def _count(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > self.max_header_bytes:
            raise _HeadersTooLarge

    def _refuse_size(self) -> None:
        self._disarm()
        if not self._closing():
            self.send_400_response(f"Request line and headers larger than {self.max_header_bytes} bytes "
                                   "([service] max_incomplete_event_bytes).")
