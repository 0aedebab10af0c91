"""POST /v1/incidents and GET /v1/incidents: operational incident notices (rules.ledger.notices), as
``dacp incident record`` and ``dacp incident list``. Each notice is an ``incident`` entry of the decision log
and a row of the ledger's database, written together; a listing serves each from its log entry, verified."""

from __future__ import annotations

from datetime import datetime
from functools import partial

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from rules.http.auth import Principal, require
from rules.http.bodies import IncidentBody
from rules.http.context import reply, service
from rules.http.openapi import body_of, error_responses, response
from rules.http.reading import read_json
from rules.http.responses import ref
from rules.audit.log import DecisionLog
from rules.http.service import Service
from rules.ledger import notices
from rules.values import time_value

router = APIRouter(tags=["ledger"])
_MAX_BODY = 64 * 1024


@router.post("/v1/incidents", operation_id="record_incident",
             summary="Record an operational incident notice (cybersecurity, system disruption, custody, other)",
             responses={201: response("Recorded (an entry of the decision log)", ref("IncidentRecord")),
                        **error_responses(400, 401, 403, 413, 415, 422, 500, 503)},
             openapi_extra=body_of(IncidentBody))
async def record_incident(request: Request, who: Principal = Depends(require("record_incident")),
                          svc: Service = Depends(service)) -> JSONResponse:
    body = IncidentBody.parse(await read_json(request, _MAX_BODY))
    notice = await anyio.to_thread.run_sync(partial(_record, svc, body, who.name), limiter=svc.engine_limiter)
    return reply(notice, 201)


@router.get("/v1/incidents", operation_id="list_incidents",
            summary="Incident notices going on at some time in [since, until), each served from its log entry",
            responses={200: response("The notices", ref("IncidentList")),
                       **error_responses(401, 403, 422, 500, 503)})
async def list_incidents(since: str | None = Query(None, description="RFC 3339 time"),
                         until: str | None = Query(None, description="RFC 3339 time"),
                         who: Principal = Depends(require("list_incidents")),
                         svc: Service = Depends(service)) -> JSONResponse:
    lo: datetime | None = None if since is None else time_value(since, "since")
    hi: datetime | None = None if until is None else time_value(until, "until")
    found = await anyio.to_thread.run_sync(partial(_listed, svc, lo, hi), limiter=svc.engine_limiter)
    return reply({"incidents": found, "count": len(found)})


def _record(svc: Service, body: IncidentBody, who: str) -> dict:
    """Record an incident notice (``rules.ledger.notices``) in the ledger's database. Engine thread."""
    store = svc._store()
    n = notices.record(store, DecisionLog(database=store.db), kind=body.kind, significant=body.significant,
                       start=body.start, end=body.end, description=body.description, recorded_by=who)
    return n.to_json()


def _listed(svc: Service, since: datetime | None, until: datetime | None) -> list[dict]:
    store = svc._store()
    return [n.to_json() for n in notices.listed(store, DecisionLog(database=store.db), since, until)]
