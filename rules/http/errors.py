"""Every refusal as one JSON error body: ``{"error": {"code", "message", ...}, "policy_bundle"}``.

Domain errors (``rules.errors``) carry their own ``http_status``, ``code``, ``summary()`` and ``details()``:
one handler renders them all, with no mapping kept here. ``HttpError`` is for what only HTTP refuses (auth,
size, media type, unknown id); its codes are ``HTTP_CODES``. Every body says whether the same request may succeed
later (``retryable``). docs/errors.md lists every code; tests/test_error_codes.py holds it to the code. No
traceback ever reaches a client (the door middleware catches bugs).
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rules.errors import DacpError
from rules.http.logs import event


# The HTTP door's own codes (beside the domain errors' ``code``): status, retryable, meaning. Every
# ``HttpError(...)`` and ``error_response(...)`` code in rules/http/ is one of these (tests/test_error_codes.py).
HTTP_CODES: dict[str, tuple[int, bool, str]] = {
    "bad_request": (400, False, "the request is malformed at the HTTP level (Content-Length not a number)"),
    "unauthenticated": (401, False, "no bearer token, a malformed one, or one that is not configured"),
    "forbidden": (403, False, "the token's role may not use this endpoint"),
    "not_found": (404, False, "no such route, decision id or checkpoint"),
    "method_not_allowed": (405, False, "the route exists, not with this method"),
    "request_timeout": (408, True, "the request line and headers, or the body, did not arrive within "
                                   "[service] header_timeout_s / body_timeout_s; nothing was decided"),
    "bundle_mismatch": (409, False, "reload: the policies directory holds another bundle than expect_bundle"),
    "idempotency_key_reused": (409, False, "an Idempotency-Key already used with another body or operation"),
    "not_checkpointed": (409, True, "no signed checkpoint covers the entry yet"),
    "too_large": (413, False, "the body is larger than max_body_bytes, or a batch larger than max_batch"),
    "unsupported_media_type": (415, False, "the body is not application/json"),
    "invalid_input": (422, False, "the request does not match the endpoint's parameters"),
    "internal": (500, False, "a bug: logged with its traceback; the body has only a reference id"),
    "custody_unverified": (502, True, "a credit whose custody could not be verified on-chain; nothing credited; "
                                      "retry with the same Idempotency-Key"),
    "not_configured": (503, False, "a credit with no price source configured"),
    "http_error": (400, False, "any other HTTP-level refusal (its status is the one answered)"),
}


def retryable_code(code: str) -> bool:
    """Whether a refusal with the HTTP door's ``code`` may succeed later, unchanged (unknown: no)."""
    return HTTP_CODES.get(code, (0, False, ""))[1]


class HttpError(Exception):
    """An HTTP-level refusal (auth, size, media type, unknown id) with a plain message."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None,
                 **extra: Any):
        super().__init__(message)
        self.status, self.code, self.message, self.headers, self.extra = status, code, message, headers or {}, extra


def status_for(e: DacpError) -> tuple[int, str]:
    """The HTTP status and stable error code for a domain error: carried by the error's class."""
    return e.http_status, e.code


def bundle_of(request: Request) -> str:
    """The bundle a request is answered under: its snapshot's, else the one serving now."""
    return getattr(request.state, "bundle", None) or request.app.state.service.active.hash


def error_response(request: Request, status: int, code: str, message: str,
                   headers: Mapping[str, str] | None = None, **extra: Any) -> JSONResponse:
    bundle = bundle_of(request)
    extra.setdefault("retryable", retryable_code(code))
    body = {"error": {"code": code, "message": message, **extra}, "policy_bundle": bundle}
    return JSONResponse(body, status, headers={**(headers or {}), "X-Policy-Bundle": bundle})


async def http_error(request: Request, e: HttpError) -> JSONResponse:
    extra = {k: v for k, v in e.extra.items() if k != "policy_bundle"}
    return error_response(request, e.status, e.code, e.message, e.headers, **extra)


async def dacp_error(request: Request, e: DacpError) -> JSONResponse:
    status, code = status_for(e)
    if status >= 500:
        event(logging.ERROR, "request failed", event="error", code=code, error=str(e),
              request_id=getattr(request.state, "request_id", None))
    return error_response(request, status, code, e.summary(), **{"retryable": e.retryable, **e.details()})


async def _validation(request: Request, e: RequestValidationError) -> JSONResponse:
    msgs = ["{}: {}".format(".".join(str(x) for x in err.get("loc", ())), err.get("msg", "invalid"))
            for err in e.errors()]
    return error_response(request, 422, "invalid_input", "; ".join(msgs) or "invalid request")


async def _starlette(request: Request, e: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
    return error_response(request, e.status_code, code, str(e.detail), getattr(e, "headers", None))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HttpError, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(DacpError, dacp_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _starlette)  # type: ignore[arg-type]
