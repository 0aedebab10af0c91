"""The middleware every request passes: request id, the bundle header, metrics, one JSON log line, and a
plain 500 (with a reference, never a traceback) for a bug."""

from __future__ import annotations

import logging
import re
import time
import traceback
import uuid
from typing import Awaitable, Callable

from fastapi import Request
from fastapi.responses import Response

from rules.http.errors import bundle_of, error_response
from rules.http.logs import event

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


async def door(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    rid = request.headers.get("x-request-id", "")
    rid = rid if _REQUEST_ID.fullmatch(rid) else uuid.uuid4().hex
    request.state.request_id = rid
    t0 = time.perf_counter()
    try:
        response = await call_next(request)
    except Exception:  # a bug, never the client's fault: logged in full, not shown
        event(logging.ERROR, "internal error", event="internal_error", request_id=rid, path=request.url.path,
              exc=traceback.format_exc()[-4000:])
        response = error_response(request, 500, "internal", f"internal error (reference {rid}); nothing was decided")
    dt = time.perf_counter() - t0
    route = request.scope.get("route")
    op = getattr(route, "operation_id", None) or getattr(route, "name", None) or "unmatched"
    bundle = bundle_of(request)
    response.headers["X-Policy-Bundle"] = bundle
    response.headers["X-Request-Id"] = rid
    metrics = request.app.state.service.metrics
    metrics.requests.labels(op, str(response.status_code)).inc()
    metrics.request_latency.labels(op).observe(dt)
    who = getattr(request.state, "principal", None)
    event(logging.INFO if response.status_code < 500 else logging.ERROR, "request", event="request",
          request_id=rid, method=request.method, path=request.url.path, operation=op,
          status=response.status_code, ms=round(dt * 1000, 3), token=who.name if who else None,
          role=who.role if who else None, bundle=bundle)
    return response
