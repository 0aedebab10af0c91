"""For auditors: GET /v1/decisions/{id} (a logged decision, explained) and GET /v1/audit/verify.

Both read through the service's second ``Dacp`` (``Service.read``) on the default thread pool, so an audit
does not wait for the engine thread.
"""

from __future__ import annotations

import logging
import re
from functools import partial
from typing import Any

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from rules.app import Dacp
from rules.errors import InputError
from rules.http.auth import Principal, require
from rules.http.context import reply, service, snapshot
from rules.http.errors import HttpError
from rules.http.logs import event
from rules.http.openapi import error_responses, response
from rules.http.responses import ref
from rules.http.service import Service

router = APIRouter(tags=["audit"])
_DECISION_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@router.get("/v1/decisions/{decision_id}", operation_id="get_decision",
            summary="A logged decision with its query, trace and plain-words explanation",
            responses={200: response("The logged decision", ref("LoggedDecision")),
                       **error_responses(401, 403, 404, 422, 503)})
async def get_decision(request: Request, decision_id: str, who: Principal = Depends(require("get_decision")),
                       svc: Service = Depends(service)) -> JSONResponse:
    active = snapshot(request)
    if not _DECISION_ID.fullmatch(decision_id):
        raise HttpError(404, "not_found", "no decision with this id (ids are letters, digits, '.', ':', '_', '-')")
    body = await anyio.to_thread.run_sync(partial(svc.read, partial(_logged_decision, decision_id)))
    return reply({**body, "policy_bundle": active.hash})


def _logged_decision(decision_id: str, d: Dacp) -> dict[str, Any]:
    try:
        e = d.log.get(decision_id)
    except InputError:
        raise HttpError(404, "not_found", f"no decision with id {decision_id!r}") from None
    if e.kind != "decision" or "decision" not in e.body:
        raise HttpError(404, "not_found", f"log entry {decision_id!r} is a {e.kind}, not a decision")
    return {"decision_id": decision_id, "seq": e.seq, "recorded_at": e.recorded_at, "bundle": e.bundle_hash,
            "entry_hash": e.entry_hash, "query": e.body.get("query"), "decision": d.logged_decision(e),
            "explanation": d.explain(decision_id)}


@router.get("/v1/audit/verify", operation_id="verify_audit",
            summary="Verify the whole hash chain and the stored bundles (dacp audit verify)",
            responses={200: response("The verification (ok false names the first entry affected)", ref("AuditResult")),
                       **error_responses(401, 403, 422, 503)})
async def verify_audit(request: Request, expect_head: str | None = None,
                       who: Principal = Depends(require("verify_audit")),
                       svc: Service = Depends(service)) -> JSONResponse:
    active = snapshot(request)
    if expect_head is not None and not _HEX64.match(expect_head):
        raise InputError("must be a head hash: 64 lower-case hex digits", "expect_head")
    res = await anyio.to_thread.run_sync(partial(svc.read, lambda d: d.verify_log(expect_head)))
    if not res.ok:
        svc.metrics.audit_failures.inc()
        event(logging.WARNING, "audit verification failed", event="audit_verify", ok=False, problem=res.problem)
    return reply({"ok": res.ok, "entries": res.entries, "head": res.head, "problem": res.problem, "seq": res.seq,
                  "report": res.render(), "policy_bundle": active.hash})
