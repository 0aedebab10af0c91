"""The middleware every request passes: request id, the bundle header, metrics, one JSON log line, and a
plain 500 (with a reference, never a traceback) for a bug.

A plain ASGI middleware, not Starlette's ``BaseHTTPMiddleware`` (``app.middleware("http")``): that one runs
each request's app in a task of its own and hands the body and the response across memory streams, which
measured about a third of a single query's time in the service (bench/bench_service.py). This one only
watches the ``http.response.start`` message go by and adds its two headers to it.
"""

from __future__ import annotations

import logging
import re
import time
import traceback
import uuid
from typing import Any, Awaitable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rules.http.errors import error_response
from rules.http.logs import event

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_OURS = (b"x-policy-bundle", b"x-request-id")


def request_id(scope: Scope) -> str:
    """The client's ``X-Request-Id`` if it is one we accept (1-64 of ``A-Za-z0-9._-``), else a fresh one."""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            rid = value.decode("latin-1")
            return rid if _REQUEST_ID.fullmatch(rid) else uuid.uuid4().hex
    return uuid.uuid4().hex


Direct = Callable[[Request, Any], Awaitable[Response]]


class Door:
    """The ASGI middleware (see the module); ``service`` is the app's ``rules.http.service.Service``.

    ``direct`` maps (method, path) to (route, handler): such a request is answered by ``handler(request,
    service)`` here, past FastAPI's router (the hot path, ``POST /v1/eligibility``: see
    ``rules.http.routes.eligibility.evaluate_direct``); ``route`` is the FastAPI route it stands for (its
    operation id names the request in metrics and logs, and the OpenAPI document keeps describing it)."""

    def __init__(self, app: ASGIApp, service: Any,
                 direct: Mapping[tuple[str, str], tuple[Any, Direct]] | None = None) -> None:
        self.app, self.service, self.direct = app, service, dict(direct or {})
        self._series: dict[tuple[str, int], tuple[Any, Any]] = {}  # (operation, status) -> its two metric series

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope)
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        t0 = time.perf_counter()
        status = 0

        def bundle() -> str:
            return state.get("bundle") or self.service.active.hash

        async def send_marked(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() not in _OURS]
                headers += [(b"x-policy-bundle", bundle().encode("latin-1")), (b"x-request-id", rid.encode())]
                message = {**message, "headers": headers}
            await send(message)

        direct = self.direct.get((scope["method"], scope["path"])) if self.direct else None
        try:
            if direct is None:
                await self.app(scope, receive, send_marked)
            else:
                scope["route"] = direct[0]
                request = Request(scope, receive)
                await (await direct[1](request, self.service))(scope, receive, send_marked)
        except Exception:  # a bug, never the client's fault: logged in full, not shown
            event(logging.ERROR, "internal error", event="internal_error", request_id=rid, path=scope.get("path"),
                  exc=traceback.format_exc()[-4000:])
            if status:  # the answer had begun: nothing more can be said on this connection
                raise
            await error_response(Request(scope, receive), 500, "internal",
                                 f"internal error (reference {rid}); nothing was decided")(scope, receive, send_marked)
        self._record(scope, state, rid, status, time.perf_counter() - t0, bundle())

    def _record(self, scope: Scope, state: dict, rid: str, status: int, dt: float, bundle: str) -> None:
        route = scope.get("route")
        op = getattr(route, "operation_id", None) or getattr(route, "name", None) or "unmatched"
        series = self._series.get((op, status))
        if series is None:  # a few dozen at most: the operations times the statuses they answer
            metrics = self.service.metrics
            series = self._series[op, status] = (metrics.requests.labels(op, str(status)),
                                                 metrics.request_latency.labels(op))
        series[0].inc()
        series[1].observe(dt)
        who = state.get("principal")
        event(logging.INFO if status < 500 else logging.ERROR, "request", event="request",
              request_id=rid, method=scope.get("method"), path=scope.get("path"), operation=op,
              status=status, ms=round(dt * 1000, 3), token=who.name if who else None,
              role=who.role if who else None, bundle=bundle)
