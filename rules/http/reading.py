"""Reading a request body: its size capped before and while streaming, JSON only, parsed strictly.

Bodies are read here rather than by FastAPI so that a body too large is refused without reading more than
the limit, and so that JSON is parsed as the CLI parses it (``rules.engine.query.parse_json_text``: no NaN,
no duplicate keys, numbers kept exact as Decimal). The whole body must arrive within ``[service]
body_timeout_s`` of the first read (a client that stops halfway gets 408 ``request_timeout`` and the connection
is closed); the connection's own read deadlines are in ``rules.http.deadlines``.
"""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import Request

from rules.engine.query import parse_json_text
from rules.errors import InputError
from rules.http.errors import HttpError


DEFAULT_BODY_TIMEOUT_S = 30.0  # an app built without settings ([service] body_timeout_s otherwise)


def body_timeout_s(request: Request) -> float:
    """``[service] body_timeout_s`` of the service answering ``request``."""
    service = getattr(request.app.state, "service", None)
    settings = getattr(getattr(service, "settings", None), "service", None)
    return float(getattr(settings, "body_timeout_s", DEFAULT_BODY_TIMEOUT_S))


async def read_body(request: Request, limit: int, timeout_s: float | None = None) -> bytes:
    """The request body, refused (413) beyond ``limit`` bytes without reading more than that, and (408) when
    it has not all arrived ``timeout_s`` (default: ``[service] body_timeout_s``) after this call."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise HttpError(400, "bad_request", "Content-Length is not a number")
        if int(declared) > limit:
            raise HttpError(413, "too_large", f"the request body is {declared} bytes; the most accepted is {limit}")
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if ctype not in {"application/json", ""}:
        raise HttpError(415, "unsupported_media_type", f"send JSON (Content-Type: application/json), not {ctype}")
    limit_s = body_timeout_s(request) if timeout_s is None else timeout_s
    chunks: list[bytes] = []
    size = 0
    with anyio.move_on_after(limit_s) as deadline:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HttpError(413, "too_large", f"the request body is larger than {limit} bytes")
            chunks.append(chunk)
    if deadline.cancelled_caught:
        raise HttpError(408, "request_timeout", f"the request body did not arrive within {limit_s:g} s "
                        f"({size} bytes received); nothing was decided", headers={"Connection": "close"})
    return b"".join(chunks)


def parse_json(raw: bytes, where: str = "body") -> Any:
    """The body as a JSON document (InputError, naming ``where``, if it is not UTF-8 JSON or is empty)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("the request body is not UTF-8 text", where) from None
    if not text.strip():
        raise InputError("the request body is empty; send a JSON document", where)
    return parse_json_text(text, where)


async def read_json(request: Request, limit: int) -> Any:
    """``read_body`` then ``parse_json``."""
    return parse_json(await read_body(request, limit))
