"""``create_app``: the HTTP door onto rules.app.Dacp (FastAPI on uvicorn), assembled from its parts.

A thin door: every decision goes through ``rules.app.Dacp`` exactly as ``dacp evaluate`` does (same query
contract, same decision JSON, same decision log). Roles deny by default (rules.http.auth); bad input is a
4xx with a plain message and no traceback ever reaches a client (rules.http.errors); the policy bundle is
reloaded without downtime and decisions run on one worker thread (rules.http.service); every response
carries ``X-Policy-Bundle`` and ``X-Request-Id``, JSON-lines logs go to stderr and Prometheus metrics to
``/metrics`` (rules.http.door). See docs/service.md.
"""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import anyio
from fastapi import FastAPI

from rules.http.config import ServiceConfig, service_config
from rules.http.door import Door
from rules.http.errors import install_error_handlers
from rules.http.logs import event
from rules.http.openapi import document_text, install_openapi
from rules.http.routes import audit, eligibility, ledger, ledger_incidents, margin, operations, policy
from rules.http.service import Service
from rules.settings import Settings

API_VERSION = "0.1.0"
DESCRIPTION = ("Eligibility decisions for the digital asset collateral pilot. Bearer tokens map to roles (clearing, "
               "auditor, compliance); deny by default. Every response names the policy bundle in force (header "
               "X-Policy-Bundle). See docs/service.md.")
ROUTERS = (eligibility.router, audit.router, policy.router, ledger.router, ledger_incidents.router, margin.router,
           operations.router)


def _routes_app(**kw: Any) -> FastAPI:
    """The app with its routes and their document, nothing running behind them.

    The routers' routes are the app's own (``routes=``), not included routers: this FastAPI includes a
    router lazily, as one opaque entry of ``app.routes``, and the access table is checked against the
    operations that ``app.routes`` lists. (So ``app.dependency_overrides`` does not reach them.)"""
    routes = [route for router in ROUTERS for route in router.routes]
    app = FastAPI(title="dacp", version=API_VERSION, docs_url=None, redoc_url=None, description=DESCRIPTION,
                  routes=routes, **kw)
    install_openapi(app)
    return app


def create_app(settings: Settings, config: ServiceConfig | None = None, **service_kw: Any) -> FastAPI:
    """The service on ``settings``: loads, validates and compiles the bundle now (an invalid one raises)."""
    svc = Service(settings, config or service_config(settings), **service_kw)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_checkpoints, svc)
            try:
                yield
            finally:
                tasks.cancel_scope.cancel()
                await anyio.to_thread.run_sync(svc.close, limiter=svc.engine_limiter)  # after the last ledger call

    app = _routes_app(lifespan=lifespan)
    app.state.service = svc
    install_error_handlers(app)
    evaluate = next(r for r in app.routes if getattr(r, "operation_id", None) == "evaluate")
    app.add_middleware(Door, service=svc, direct={("POST", "/v1/eligibility"): (evaluate, eligibility.evaluate_direct)})
    return app


async def _checkpoints(svc: Service, tick_s: float = 1.0) -> None:
    """Sign a checkpoint whenever one is due (settings [audit] checkpoint_every_s / _entries); a failure is
    logged and tried again at the next tick, never the end of the service."""
    a = svc.settings.audit
    if a.signing_key_file is None or (a.checkpoint_every_s is None and a.checkpoint_every_entries is None):
        return
    while True:
        await anyio.sleep(min(tick_s, a.checkpoint_every_s or tick_s))
        try:
            if await anyio.to_thread.run_sync(svc.checkpoint_due, time.monotonic()):
                await anyio.to_thread.run_sync(svc.checkpoint, time.monotonic())
        except Exception as e:  # noqa: BLE001 - the service goes on; the failure is in its log
            event(logging.ERROR, "checkpoint failed", event="checkpoint", error=str(e))


def openapi_document() -> str:
    """The OpenAPI document as committed in docs/openapi.json (independent of settings, tokens, bundle and log:
    the routes are the same whatever runs behind them)."""
    return document_text(_routes_app())
