"""For auditors: GET /v1/decisions/{id} (a logged decision, explained, with its receipt on request),
GET /v1/decisions/{id}/receipt (for the clearing system that asked for it), GET /v1/audit/verify (optionally
against an older signed checkpoint) and GET /v1/audit/checkpoint (the newest signed tree head).

Every read verifies what it serves (rules.audit.log): a tampered entry is refused (500 record_tampered).
They read through the service's second ``Dacp`` (``Service.read``) on the default thread pool, so an audit
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
from rules.audit.merkle import EMPTY_ROOT
from rules.audit.verify import VerifyResult
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
DECISION_KINDS = ("decision", "credit")  # a ledger credit's leaf holds its decision in the same form


@router.get("/v1/decisions/{decision_id}", operation_id="get_decision",
            summary="A logged decision with its query, trace and plain-words explanation (verified before served)",
            responses={200: response("The logged decision", ref("LoggedDecision")),
                       **error_responses(401, 403, 404, 422, 500, 503)})
async def get_decision(request: Request, decision_id: str, receipt: bool = False,
                       who: Principal = Depends(require("get_decision")),
                       svc: Service = Depends(service)) -> JSONResponse:
    active = snapshot(request)
    _check_id(decision_id)
    body = await anyio.to_thread.run_sync(partial(svc.read, partial(_logged_decision, decision_id, receipt)))
    return reply({**body, "policy_bundle": active.hash})


@router.get("/v1/decisions/{decision_id}/receipt", operation_id="get_receipt",
            summary="A self-contained receipt of a logged decision: entry, audit path, signed checkpoint "
                    "(dacp audit check-receipt checks it offline)",
            responses={200: response("The receipt (format dacp-receipt/1)", ref("Receipt")),
                       **error_responses(401, 403, 404, 409, 422, 500, 503)})
async def get_receipt(request: Request, decision_id: str, who: Principal = Depends(require("get_receipt")),
                      svc: Service = Depends(service)) -> JSONResponse:
    active = snapshot(request)
    _check_id(decision_id)
    body = await anyio.to_thread.run_sync(partial(svc.read, partial(_receipt, decision_id)))
    if body is None:
        raise HttpError(409, "not_checkpointed", "no signed checkpoint covers this entry yet; try again after the "
                        "next one (settings [audit] checkpoint_every_s)")
    return reply({**body, "policy_bundle": active.hash})


def _check_id(decision_id: str) -> None:
    if not _DECISION_ID.fullmatch(decision_id):
        raise HttpError(404, "not_found", "no decision with this id (ids are letters, digits, '.', ':', '_', '-')")


def _entry(decision_id: str, d: Dacp) -> Any:
    if not d.log_exists():
        raise HttpError(404, "not_found", f"no decision with id {decision_id!r}")
    try:
        return d.reading_log.get(decision_id)
    except InputError:
        raise HttpError(404, "not_found", f"no decision with id {decision_id!r}") from None


def _receipt(decision_id: str, d: Dacp) -> dict[str, Any] | None:
    _entry(decision_id, d)
    try:
        return d.reading_log.prove(decision_id).to_dict()
    except InputError:  # no checkpoint covers it yet
        return None


def _logged_decision(decision_id: str, with_receipt: bool, d: Dacp) -> dict[str, Any]:
    e = _entry(decision_id, d)
    if e.kind not in DECISION_KINDS or "decision" not in e.body:
        raise HttpError(404, "not_found", f"log entry {decision_id!r} is a {e.kind}, not a decision")
    out = {"decision_id": decision_id, "seq": e.seq, "recorded_at": e.recorded_at, "bundle": e.bundle_hash,
           "entry_hash": e.entry_hash, "query": e.body.get("query"), "decision": d.logged_decision(e),
           "explanation": d.explain(decision_id)}
    if with_receipt:
        out["receipt"] = _receipt(decision_id, d)
    return out


@router.get("/v1/audit/verify", operation_id="verify_audit",
            summary="Verify every entry, the tree, its stored checkpoints and bundles (dacp audit verify); with "
                    "checkpoint, prove the log extends that older signed checkpoint",
            responses={200: response("The verification (ok false names what failed)", ref("AuditResult")),
                       **error_responses(401, 403, 422, 503)})
async def verify_audit(request: Request, checkpoint: str | None = None,
                       who: Principal = Depends(require("verify_audit")),
                       svc: Service = Depends(service)) -> JSONResponse:
    active = snapshot(request)
    if checkpoint is not None and len(checkpoint) > 16_384:
        raise InputError("a checkpoint note is at most 16 KiB", "checkpoint")
    res = await anyio.to_thread.run_sync(partial(svc.read, partial(_verify, checkpoint)))
    if not res.ok:
        svc.metrics.audit_failures.inc()
        event(logging.WARNING, "audit verification failed", event="audit_verify", ok=False, problem=res.problem)
    return reply({"ok": res.ok, "entries": res.entries, "head": res.head, "problem": res.problem, "seq": res.seq,
                  "checkpoints": res.checkpoints, "report": res.render(), "policy_bundle": active.hash})


def _verify(checkpoint: str | None, d: Dacp) -> VerifyResult:
    if not d.log_exists():  # nothing decided yet: the empty tree (it extends only the empty checkpoint)
        if checkpoint is None:
            return VerifyResult(True, 0, EMPTY_ROOT.hex())
        return VerifyResult(False, 0, EMPTY_ROOT.hex(), "there is no log here yet, so it extends no checkpoint")
    return d.verify_log(checkpoint)


@router.get("/v1/audit/checkpoint", operation_id="get_checkpoint",
            summary="The newest signed checkpoint (C2SP tlog-checkpoint in a signed note): keep it, and later "
                    "prove the log still extends it",
            responses={200: response("The checkpoint", ref("Checkpoint")), **error_responses(401, 403, 404, 503)})
async def get_checkpoint(request: Request, who: Principal = Depends(require("get_checkpoint")),
                         svc: Service = Depends(service)) -> JSONResponse:
    active = snapshot(request)
    latest = await anyio.to_thread.run_sync(
        partial(svc.read, lambda d: d.reading_log.tree.latest_checkpoint() if d.log_exists() else None))
    if latest is None:
        raise HttpError(404, "not_found", "no checkpoint has been signed yet (dacp audit checkpoint, or settings "
                        "[audit] checkpoint_every_s)")
    size, root, note, at = latest
    return reply({"size": size, "root": root.hex(), "recorded_at": at, "note": note, "policy_bundle": active.hash})
