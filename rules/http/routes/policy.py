"""GET /v1/policy (the bundle in force) and POST /v1/policy/reload (swap in the configured bundle)."""

from __future__ import annotations

from functools import partial
from typing import Any

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from rules.http.auth import Principal, require
from rules.http.bodies import ReloadBody
from rules.http.context import reply, service, snapshot
from rules.http.openapi import body_of, error_responses, response
from rules.http.reading import parse_json, read_body
from rules.http.responses import ref
from rules.http.service import Active, Service

router = APIRouter(tags=["policy"])
_MAX_RELOAD_BODY = 64 * 1024


@router.get("/v1/policy", operation_id="get_policy",
            summary="The policy bundle in force: hash, name, version, effective dates, phases, each participant's phase clock",
            responses={200: response("The active bundle", ref("Policy")), **error_responses(401, 403)})
async def get_policy(request: Request, who: Principal = Depends(require("get_policy"))) -> JSONResponse:
    active = snapshot(request)
    return reply({**_policy(active), "policy_bundle": active.hash})


def _policy(active: Active) -> dict[str, Any]:
    b = active.dacp.bundle
    return {"bundle": b.hash, "name": b.name, "version": b.version,
            "effective_from": b.dated.effective_from.isoformat() if b.dated.effective_from else None,
            "effective_to": b.dated.effective_to.isoformat() if b.dated.effective_to else None,
            "phases": [{"id": p.id, "starts": p.starts.isoformat(), "ends": p.ends.isoformat() if p.ends else None}
                       for p in b.phases],
            "phase_clocks": b.phase_clocks(),
            "rules": len(b.rule_ids()), "assets": sorted(b.assets), "loaded_at": active.loaded_at}


@router.post("/v1/policy/reload", operation_id="reload_policy",
             summary="Load, validate and compile the configured policies beside the running bundle, then swap",
             responses={200: response("Swapped in (or unchanged)", ref("ReloadResult")),
                        **error_responses(400, 401, 403, 409, 413, 415, 422, 503)},
             openapi_extra=body_of(ReloadBody, required=False))
async def reload_policy(request: Request, who: Principal = Depends(require("reload_policy")),
                        svc: Service = Depends(service)) -> JSONResponse:
    raw = await read_body(request, _MAX_RELOAD_BODY)
    expect = ReloadBody.parse(parse_json(raw)).expect_bundle if raw.strip() else None  # the body is optional
    request.state.bundle = svc.active.hash  # a failed reload answers under the bundle still serving
    old, new = await anyio.to_thread.run_sync(partial(svc.reload, expect, who.name))
    request.state.bundle = new.hash
    b = new.dacp.bundle
    return reply({"reloaded": True, "changed": old.hash != new.hash, "previous": old.hash,
                  "policy_bundle": new.hash, "name": b.name, "version": b.version})
