"""POST /v1/eligibility and /v1/eligibility/batch: decide queries, log them, answer with the decisions.

A single query joins the group the decision worker commits next (``Service.decide_one``: one transaction for
the queries that arrived together, each answered once it is durable); a batch is one group of its own.

Both answer from the decisions' compact form (``Decision.to_json_bytes``, the bytes ``dacp evaluate``
prints), not from dicts for a JSON encoder to walk: building and encoding ~10 KB of dicts a decision was
half a batch's time.
"""

from __future__ import annotations

import anyio
import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from rules.engine.query import MAX_QUERY_BYTES, Query, parse_query
from rules.errors import InputError
from rules.errors import DacpError
from rules.http.auth import Principal, bearer, require
from rules.http.bodies import EXAMPLE_QUERY, BatchBody
from rules.http.context import service, snapshot
from rules.http.errors import HttpError, dacp_error, http_error
from rules.http.openapi import body_of, body_spec, error_responses, response
from rules.http.reading import read_json
from rules.http.responses import ref
from rules.http.service import Service

router = APIRouter(tags=["eligibility"])
_MAX_SHOWN = 20  # invalid queries named in a refused batch's message


@router.post("/v1/eligibility", operation_id="evaluate",
             summary="Decide one query (rules/schema/query.schema.json) -> decision JSON, logged",
             responses={200: response("The decision (same JSON as dacp evaluate)", ref("Decision")),
                        **error_responses(400, 401, 403, 413, 415, 422, 500, 502, 503)},
             openapi_extra=body_spec("Query", EXAMPLE_QUERY))
async def evaluate(request: Request, who: Principal = Depends(require("evaluate")),
                   svc: Service = Depends(service)) -> Response:
    return await decide_one(request, svc)


async def decide_one(request: Request, svc: Service) -> Response:
    """The route's work once its caller is let in: also what ``evaluate_direct`` runs."""
    active = snapshot(request)
    query = parse_query(await read_json(request, min(svc.config.max_body_bytes, MAX_QUERY_BYTES)), "query")
    decision = await svc.decide_one(active, query)  # group commit: answered once its entry is committed
    return Response(decision.to_json_bytes(), media_type="application/json")


_allow = require("evaluate")


async def evaluate_direct(request: Request, svc: Service) -> Response:
    """``POST /v1/eligibility`` without FastAPI's routing and dependency solving (rules.http.door calls it for
    that one method and path): the same token check (the same ``HTTPBearer`` and ``require``), the same body
    reading and the same work; refusals rendered by the app's own handlers (rules.http.errors). FastAPI's
    per-request machinery (routing, dependency solving, exit stacks) was a fifth of a single query's time
    (bench/bench_service.py)."""
    try:
        await _allow(request, await bearer(request))
        return await decide_one(request, svc)
    except HttpError as e:
        return await http_error(request, e)
    except DacpError as e:
        return await dacp_error(request, e)


@router.post("/v1/eligibility/batch", operation_id="evaluate_batch",
             summary="Decide many queries at once; all are checked first, then decided and logged together",
             responses={200: response("The decisions, in order", ref("BatchResult")),
                        **error_responses(400, 401, 403, 413, 415, 422, 500, 502, 503)},
             openapi_extra=body_of(BatchBody))
async def evaluate_batch(request: Request, who: Principal = Depends(require("evaluate_batch")),
                         svc: Service = Depends(service)) -> Response:
    active = snapshot(request)
    items = BatchBody.parse(await read_json(request, svc.config.max_body_bytes)).queries
    if len(items) > svc.config.max_batch:
        raise HttpError(413, "too_large", f"{len(items)} queries; the most accepted in one batch is "
                        f"{svc.config.max_batch}")
    queries = _parse_all(items)

    gathered = await svc.gather(active, queries)  # [service] verify: the chains first, on their pools

    def decide_and_encode() -> bytes:
        decisions = svc.decide(active, queries, gathered)
        return b"".join((b'{"decisions":[', b",".join([d.to_json_bytes() for d in decisions]),
                         b'],"policy_bundle":', orjson.dumps(active.hash), b"}"))

    body = await anyio.to_thread.run_sync(decide_and_encode, limiter=svc.engine_limiter)
    return Response(body, media_type="application/json")


def _parse_all(items: list) -> list[Query]:
    """Every query of a batch, or one InputError naming every invalid one (nothing is decided or logged)."""
    queries, errors = [], []
    for i, item in enumerate(items):
        try:
            queries.append(parse_query(item, f"queries[{i}]"))
        except InputError as e:
            errors.append(str(e))
    if errors:
        shown = errors[:_MAX_SHOWN] + ([f"... and {len(errors) - _MAX_SHOWN} more"] if len(errors) > _MAX_SHOWN else [])
        raise InputError(f"{len(errors)} invalid quer{'y' if len(errors) == 1 else 'ies'}; nothing was decided "
                         "or logged: " + "; ".join(shown), "body.queries")
    return queries
