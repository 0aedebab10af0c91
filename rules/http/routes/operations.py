"""For operators, no token needed: GET /v1/health (liveness), /v1/ready (readiness), /metrics (Prometheus)."""

from __future__ import annotations

from functools import partial

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from rules.http.context import reply, service, snapshot
from rules.http.openapi import response
from rules.http.responses import ref
from rules.http.service import Service

router = APIRouter(tags=["operations"])


@router.get("/v1/health", operation_id="health", summary="Liveness (no token needed)",
            responses={200: response("Alive", ref("Health"))})
async def health(request: Request) -> JSONResponse:
    return reply({"status": "ok", "policy_bundle": snapshot(request).hash})


@router.get("/v1/ready", operation_id="ready",
            summary="Readiness: a compiled bundle in force and the decision log reachable (no token needed)",
            responses={200: response("Ready", ref("Health")), 503: response("Not ready", ref("Health"))})
async def ready(request: Request, svc: Service = Depends(service)) -> JSONResponse:
    active = snapshot(request)
    checks = {"policy": "ok"}
    try:
        await anyio.to_thread.run_sync(partial(svc.read, lambda d: d.log.count()))
        checks["decision_log"] = "ok"
    except Exception as e:  # StorageError or sqlite errors: not ready, said plainly
        checks["decision_log"] = f"unavailable: {e}"
    ok = all(v == "ok" for v in checks.values())
    return reply({"status": "ready" if ok else "not ready", "policy_bundle": active.hash, "checks": checks},
                 200 if ok else 503)


@router.get("/metrics", operation_id="metrics", summary="Prometheus metrics (no token needed)",
            responses={200: {"description": "Prometheus text format",
                             "content": {"text/plain": {"schema": {"type": "string"}}}}})
async def metrics(request: Request, svc: Service = Depends(service)) -> Response:
    snapshot(request)
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)
