"""Margin coverage over HTTP, as ``dacp margin`` (rules.margin; docs/margin.md): POST /v1/margin/requirements
(the JSON form of a requirements file: one import, one log entry), GET /v1/margin/coverage, POST
/v1/margin/calls (take the steps coverage calls for, then list the calls) and GET /v1/margin/free.

They run on the engine thread, on the service's one ledger store, under the request's snapshot. A
withdrawal (POST /v1/withdrawals) that would leave the account under-margined is a 409 ``under_margined``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from rules.errors import InputError
from rules.http.auth import Principal, require
from rules.http.context import reply, service, snapshot
from rules.http.openapi import body_spec, error_responses, response
from rules.http.reading import read_body
from rules.http.responses import ref
from rules.http.service import Service
from rules.margin.inputs import parse_text
from rules.values import identifier, time_value

router = APIRouter(tags=["margin"])
_MAX_REQUIREMENTS_BODY = 16 * 1024 * 1024
_EXAMPLE = {"requirements": [{"account": "ACC-1001", "dco": "CME", "business_day": "2026-11-20",
                              "requirement_usd": "2500000.00", "net_of_offsets": True}],
            "collateral": [{"account": "ACC-1001", "holding": "ust-2028", "class": "us-treasury",
                            "as_of": "2026-11-20", "face_value_usd": "1000000.00", "price_pct": "99.25",
                            "maturity": "2028-11-15", "cusip": "91282CJL6"}]}


def _account(account: str | None) -> str | None:
    return None if account is None else identifier(account, "account")


def _as_of(as_of: str | None) -> Any:
    return None if as_of is None else time_value(as_of, "as_of")


@router.post("/v1/margin/requirements", operation_id="margin_import",
             summary="Import margin requirements (per account, DCO and business day) and off-ledger collateral",
             responses={201: response("Imported (one entry of the decision log)", ref("MarginImport")),
                        **error_responses(400, 401, 403, 413, 415, 422, 500, 503)},
             openapi_extra=body_spec("MarginRequirements", _EXAMPLE))
async def margin_import(request: Request, who: Principal = Depends(require("margin_import")),
                        svc: Service = Depends(service)) -> JSONResponse:
    active = snapshot(request)
    raw = await read_body(request, _MAX_REQUIREMENTS_BODY)

    def run() -> dict[str, Any]:
        book = svc.margin(active)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError("the request body is not UTF-8 text", "body") from None
        return book.import_requirements(parse_text(text, "body", book.policy))
    result = await anyio.to_thread.run_sync(run, limiter=svc.engine_limiter)
    return reply({**result, "policy_bundle": active.hash}, 201)


@router.get("/v1/margin/coverage", operation_id="margin_coverage",
            summary="Each account's collateral against its margin requirement: excess or deficit",
            responses={200: response("Coverage per account", ref("MarginCoverage")),
                       **error_responses(401, 403, 422, 500, 503)})
async def margin_coverage(request: Request, account: str | None = Query(None, description="one account only"),
                          as_of: str | None = Query(None, description="RFC 3339: the ledger's journal before it"),
                          who: Principal = Depends(require("margin_coverage")),
                          svc: Service = Depends(service)) -> JSONResponse:
    active = snapshot(request)
    acct, when = _account(account), _as_of(as_of)
    rows = await anyio.to_thread.run_sync(lambda: [c.to_json() for c in svc.margin(active).coverage(acct, when)],
                                          limiter=svc.engine_limiter)
    return reply({"coverage": rows, "policy_bundle": active.hash})


@router.post("/v1/margin/calls", operation_id="margin_calls",
             summary="Take the steps coverage calls for (issue, meet, withdraw, escalate), then list the calls",
             responses={200: response("The steps taken and every call", ref("MarginCalls")),
                        **error_responses(401, 403, 422, 500, 503)})
async def margin_calls(request: Request, account: str | None = Query(None, description="list this account's calls"),
                       as_of: str | None = Query(None, description="RFC 3339 time to take the steps at"),
                       who: Principal = Depends(require("margin_calls")),
                       svc: Service = Depends(service)) -> JSONResponse:
    active = snapshot(request)
    acct, when = _account(account), _as_of(as_of)

    def run() -> dict[str, Any]:
        book = svc.margin(active)
        steps = book.run_calls(when)
        return {"steps": steps, "calls": [c.row() for c in book.calls(acct)]}
    body = await anyio.to_thread.run_sync(run, limiter=svc.engine_limiter)
    return reply({**body, "policy_bundle": active.hash})


@router.get("/v1/margin/free", operation_id="margin_free",
            summary="What an account may withdraw without a margin deficit",
            responses={200: response("The excess and, per asset, the quantity", ref("MarginFree")),
                       **error_responses(401, 403, 422, 500, 503)})
async def margin_free(request: Request, account: str = Query(..., description="the account"),
                      who: Principal = Depends(require("margin_free")),
                      svc: Service = Depends(service)) -> JSONResponse:
    active = snapshot(request)
    acct = identifier(account, "account")
    body = await anyio.to_thread.run_sync(partial(lambda a: svc.margin(active).free(a), acct),
                                          limiter=svc.engine_limiter)
    return reply({**body, "policy_bundle": active.hash})
