"""POST /v1/credits and /v1/withdrawals: the doors onto rules.ledger.book.Ledger, as dacp credit/withdraw.

Both run on the engine thread under the request's snapshot; the ``Idempotency-Key`` header is required.
A credit refused by policy is a 200 (a decision, not an error); one refused because custody could not be
verified is a 502 that may be retried with the same key (nothing was stored under it).
"""

from __future__ import annotations

from functools import partial

import anyio
from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse

from rules.errors import InputError
from rules.http.auth import Principal, require
from rules.http.bodies import CreditBody, WithdrawBody
from rules.http.context import reply, service, snapshot
from rules.http.errors import HttpError
from rules.http.openapi import body_of, error_responses, response
from rules.http.reading import read_json
from rules.http.responses import ref
from rules.http.service import Service
from rules.ledger.requests import check_key

router = APIRouter(tags=["ledger"])
_MAX_CREDIT_BODY = 256 * 1024
_MAX_WITHDRAW_BODY = 64 * 1024
_KEY_DOC = ("the request's idempotency key (1-80 characters: letters, digits and . _ : / -, starting with a "
            "letter or digit): the same key with the same body returns the same result and never credits twice; "
            "the same key with another body is refused (409)")


def _key(key: str) -> str:
    try:
        return check_key(key)
    except InputError as e:
        raise InputError(e.message, "Idempotency-Key") from None


@router.post("/v1/credits", operation_id="credit",
             summary="Verify custody on-chain, decide under the bundle in force and credit the collateral value once",
             responses={200: response("Replayed (same key, same body), or refused by policy (status refused)",
                                      ref("CreditResult")),
                        201: response("Credited", ref("CreditResult")),
                        **error_responses(400, 401, 403, 409, 413, 415, 422, 500, 502, 503)},
             openapi_extra=body_of(CreditBody))
async def credit(request: Request, idempotency_key: str = Header(alias="Idempotency-Key", description=_KEY_DOC),
                 who: Principal = Depends(require("credit")), svc: Service = Depends(service)) -> JSONResponse:
    active = snapshot(request)
    key = _key(idempotency_key)
    req = CreditBody.parse(await read_json(request, _MAX_CREDIT_BODY)).request(key)
    result = await svc.credit_async(active, req)  # chain I/O on the chain's pool, the commit on the engine thread
    refusal = result.get("refusal") or {}
    if result["status"] != "credited" and refusal.get("retryable"):
        raise HttpError(502, "custody_unverified", f"custody could not be verified on-chain: "
                        f"{refusal.get('message', 'unavailable')}; nothing was credited; retry with the same "
                        "Idempotency-Key", retryable=True, reason=refusal.get("reason"), result=result)
    status = 201 if result["status"] == "credited" and not result.get("replayed") else 200
    return reply({**result, "policy_bundle": active.hash}, status)


@router.post("/v1/withdrawals", operation_id="withdraw",
             summary="Debit collateral from an account (frees the custody balance)",
             responses={200: response("Replayed (same key, same body)", ref("WithdrawResult")),
                        201: response("Withdrawn", ref("WithdrawResult")),
                        **error_responses(400, 401, 403, 409, 413, 415, 422, 500, 503)},
             openapi_extra=body_of(WithdrawBody))
async def withdraw(request: Request, idempotency_key: str = Header(alias="Idempotency-Key", description=_KEY_DOC),
                   who: Principal = Depends(require("withdraw")), svc: Service = Depends(service)) -> JSONResponse:
    active = snapshot(request)
    key = _key(idempotency_key)
    req = WithdrawBody.parse(await read_json(request, _MAX_WITHDRAW_BODY)).request(key)
    result = await anyio.to_thread.run_sync(partial(svc.withdraw, active, req), limiter=svc.engine_limiter)
    return reply({**result, "policy_bundle": active.hash}, 200 if result.get("replayed") else 201)
