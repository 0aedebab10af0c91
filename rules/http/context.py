"""What a route takes from its request: the running service and the bundle snapshot it answers under."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from rules.http.service import Active, Service


async def service(request: Request) -> Service:
    """The app's ``Service`` (a route dependency)."""
    return request.app.state.service


def snapshot(request: Request) -> Active:
    """The bundle in force, read once: the whole request (decision, header, body) uses this one."""
    active = request.app.state.service.active
    request.state.bundle = active.hash
    return active


def reply(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status)
