"""``dacp serve``: the HTTP door onto rules.app.Dacp (FastAPI on uvicorn).

A thin door: every decision goes through ``rules.app.Dacp`` exactly as ``dacp evaluate`` does (same
query contract, same decision JSON, same decision log). What lives here is only what HTTP needs:

* roles, deny by default: bearer tokens from the ``[service]`` settings (stored as sha256 hex, compared
  with ``hmac.compare_digest``) mapped to ``clearing``, ``auditor`` or ``compliance``; ``ACCESS`` is the
  one table that says which role may call which operation;
* bad input is a 4xx with a plain message (``STATUS`` maps every ``DacpError`` to a status in one place);
  no traceback ever reaches a client;
* policy reload without downtime: the new bundle is loaded, validated and compiled beside the running one
  (through ``Dacp``, so any approval check there applies) and swapped in with one reference assignment
  under a lock; requests in flight finish on the bundle they started with; a bundle that fails leaves the
  old one serving. Every response carries ``X-Policy-Bundle``;
* durable_rules is process-wide and not thread-safe: decisions run on ONE worker thread (an anyio
  capacity limiter of 1), never on the event loop;
* JSON-lines logs on stderr and Prometheus metrics at ``/metrics``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import sys
import threading
import time
import tomllib
import traceback
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping

import anyio
import orjson
from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from rules.app import Dacp, custody_verifier, open_ledger_store, price_reader
from rules.engine.decide import Decision
from rules.errors import DacpError, InputError
from rules.engine.query import MAX_QUERY_BYTES, parse_json_text, parse_query
from rules.policy.schema_check import SCHEMA_DIR
from rules.settings import Settings

API_VERSION = "0.1.0"
ROLES = ("clearing", "auditor", "compliance")

# operation id -> roles allowed. Anything not listed here (and not in PUBLIC) is refused: deny by default.
ACCESS: dict[str, frozenset[str]] = {
    "evaluate": frozenset({"clearing"}),
    "evaluate_batch": frozenset({"clearing"}),
    "get_decision": frozenset({"auditor"}),
    "verify_audit": frozenset({"auditor"}),
    "get_policy": frozenset({"clearing", "auditor", "compliance"}),
    "reload_policy": frozenset({"compliance"}),
    "credit": frozenset({"clearing"}),
    "withdraw": frozenset({"clearing"}),
}
PUBLIC = frozenset({"health", "ready", "metrics"})  # liveness, readiness and metrics: no token (see docs/service.md)

DEFAULTS = {"host": "127.0.0.1", "port": 8080, "max_body_bytes": 4_000_000, "max_batch": 1000, "verify": False}
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_DECISION_ID = r"^[A-Za-z0-9._:-]{1,100}$"

log = logging.getLogger("dacp.service")


# -- errors: one place ---------------------------------------------------------------------------------
def status_for(e: DacpError) -> tuple[int, str]:
    """The HTTP status and stable error code for a domain error: carried by the error's class."""
    return e.http_status, e.code


class HttpError(Exception):
    """An HTTP-level refusal (auth, size, media type, unknown id) with a plain message."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None,
                 **extra: Any):
        super().__init__(message)
        self.status, self.code, self.message, self.headers, self.extra = status, code, message, headers or {}, extra


# -- configuration -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Token:
    name: str
    role: str
    sha256: str


@dataclass(frozen=True)
class ServiceConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 4_000_000
    max_batch: int = 1000
    verify: bool = False
    tokens: tuple[Token, ...] = ()


def hash_token(token: str) -> str:
    """sha256 hex of a bearer token: what the settings store (tokens are random, 256 bits; see docs)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    import secrets

    return "dacp_" + secrets.token_urlsafe(32)


def _int(sec: Mapping[str, Any], key: str, lo: int, hi: int) -> int:
    v = sec.get(key, DEFAULTS[key])
    try:
        n = int(v) if not isinstance(v, bool) else None
    except (TypeError, ValueError):
        n = None
    if n is None or not lo <= n <= hi:
        raise InputError(f"must be a whole number from {lo} to {hi}, got {v!r}", f"[service] {key}")
    return n


def _bool(sec: Mapping[str, Any], key: str) -> bool:
    v = sec.get(key, DEFAULTS[key])
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in {"1", "true", "yes", "0", "false", "no"}:
        return v.lower() in {"1", "true", "yes"}
    raise InputError(f"must be true or false, got {v!r}", f"[service] {key}")


def _tokens(entries: Any, where: str) -> list[Token]:
    if not isinstance(entries, list):
        raise InputError("must be a list of tables with name, role and sha256", where)
    out = []
    for i, t in enumerate(entries):
        w = f"{where}[{i}]"
        if not isinstance(t, dict) or set(t) != {"name", "role", "sha256"}:
            raise InputError("each token needs exactly name, role and sha256 (the token itself is never stored)", w)
        if t["role"] not in ROLES:
            raise InputError(f"unknown role {t['role']!r} (roles: {', '.join(ROLES)})", w)
        if not isinstance(t["sha256"], str) or not _HEX64.match(t["sha256"]):
            raise InputError("sha256 must be 64 lower-case hex digits (dacp service-token prints it)", w)
        if not isinstance(t["name"], str) or not t["name"]:
            raise InputError("name must be a non-empty string", w)
        out.append(Token(t["name"], t["role"], t["sha256"]))
    return out


def service_config(settings: Settings) -> ServiceConfig:
    """The ``[service]`` settings section (environment ``DACP_SERVICE_<KEY>`` wins), checked."""
    sec = dict(settings.section("service"))
    known = {"host", "port", "max_body_bytes", "max_batch", "verify", "tokens", "tokens_file"}
    unknown = sorted(set(sec) - known)
    if unknown:
        raise InputError(f"unknown settings {', '.join(unknown)} (known: {', '.join(sorted(known))})", "[service]")
    tokens = _tokens(sec.get("tokens", []), "[service] tokens")
    if sec.get("tokens_file"):
        path = Path(str(sec["tokens_file"])).expanduser()
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise InputError(f"cannot read the tokens file: {e.strerror or e}", str(path)) from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise InputError(f"not a valid TOML tokens file: {e}", str(path)) from None
        if set(data) - {"token"}:
            raise InputError("a tokens file holds only [[token]] tables", str(path))
        tokens += _tokens(data.get("token", []), f"{path} token")
    names = [t.name for t in tokens]
    hashes = [t.sha256 for t in tokens]
    if len(set(names)) != len(names) or len(set(hashes)) != len(hashes):
        raise InputError("token names and hashes must be unique", "[service] tokens")
    return ServiceConfig(host=str(sec.get("host", DEFAULTS["host"])), port=_int(sec, "port", 1, 65535),
                         max_body_bytes=_int(sec, "max_body_bytes", 1024, 1_000_000_000),
                         max_batch=_int(sec, "max_batch", 1, 1_000_000), verify=_bool(sec, "verify"),
                         tokens=tuple(tokens))


# -- authentication ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Principal:
    name: str
    role: str


def authenticate(tokens: tuple[Token, ...], presented: str) -> Principal | None:
    """The token's principal, or None. Every stored hash is compared, in constant time, whatever matches."""
    digest = hash_token(presented)
    found = None
    for t in tokens:
        if hmac.compare_digest(digest, t.sha256):
            found = t
    return Principal(found.name, found.role) if found else None


# -- structured logs -----------------------------------------------------------------------------------
class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
            timespec="milliseconds").replace("+00:00", "Z"), "level": record.levelname.lower(),
            "logger": record.name, "msg": record.getMessage()}
        out.update(getattr(record, "fields", {}))
        if record.exc_info:
            out["exc"] = "".join(traceback.format_exception(*record.exc_info))[-4000:]
        return json.dumps(out, ensure_ascii=False, default=str)


def configure_logging(stream: Any = None, level: int = logging.INFO) -> None:
    """JSON lines on stderr for dacp.service and uvicorn's own loggers."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("dacp.service", "uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers = [handler]
        lg.setLevel(level)
        lg.propagate = False


def _event(level: int, msg: str, **fields: Any) -> None:
    log.log(level, msg, extra={"fields": fields})


# -- metrics -------------------------------------------------------------------------------------------
class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("dacp_http_requests", "HTTP requests by operation and status", ["operation", "status"], registry=r)
        self.request_latency = Histogram("dacp_http_request_seconds", "HTTP request latency", ["operation"], registry=r,
                                         buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.decisions = Counter("dacp_decisions", "Decisions made, by outcome", ["outcome"], registry=r)
        self.decision_latency = Histogram("dacp_decision_seconds", "Time to decide and log one request's queries",
                                          registry=r, buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5))
        self.custody_failures = Counter("dacp_custody_verification_failures", "On-chain custody verifications that failed",
                                        ["reason"], registry=r)
        self.audit_failures = Counter("dacp_audit_verification_failures", "Audit chain verifications that found tampering",
                                      registry=r)
        self.reloads = Counter("dacp_policy_reloads", "Policy reloads by outcome", ["outcome"], registry=r)
        self.bundle = Gauge("dacp_policy_bundle_info", "The policy bundle in force (1)", ["bundle", "name", "version"],
                            registry=r)


# -- the running state ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Active:
    """The bundle in force and the Dacp that decides with it (replaced whole on reload, never mutated)."""

    dacp: Dacp
    loaded_at: str

    @property
    def hash(self) -> str:
        return self.dacp.bundle.hash


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class Service:
    settings: Settings
    config: ServiceConfig
    make_verifier: Callable[[Settings], Any] | None = None  # the door wires adapters; None: from adapters.custody
    make_prices: Callable[[Settings], Any] | None = None
    metrics: Metrics = field(default_factory=Metrics)

    def __post_init__(self) -> None:
        self._swap = threading.Lock()
        self.active = self._load()  # fails (PolicyError) if the configured bundle is invalid: fail closed
        self._show(self.active, None)
        self._reader = Dacp(self.settings, log_enabled=False)  # its own SQLite connection for auditors' reads
        self._read_lock = threading.Lock()
        self.engine_limiter = anyio.CapacityLimiter(1)  # durable_rules: one decision thread
        self._ledger_lock = threading.Lock()
        self._ledger_store: Any = None  # adapters.storage.ledger_store.LedgerStore, opened on first credit/withdrawal
        self._ledger_parts: tuple[Any, Any] | None = None  # (verifier, prices)
        self._ledger_cache: tuple[Active, Any] | None = None  # (snapshot, rules.ledger.book.Ledger)

    def _load(self) -> Active:
        verifier = prices = None
        if self.config.verify:
            verifier = (self.make_verifier or custody_verifier)(self.settings)
            prices = (self.make_prices or price_reader)(self.settings)
        dacp = Dacp(self.settings, verifier=verifier, prices=prices)
        dacp.engine  # load, validate and compile now, beside the running bundle (through Dacp: its checks apply)
        return Active(dacp, _now())

    def _show(self, new: Active, old: Active | None) -> None:
        if old is not None:
            b = old.dacp.bundle
            self.metrics.bundle.remove(b.hash, b.name, b.version)
        b = new.dacp.bundle
        self.metrics.bundle.labels(b.hash, b.name, b.version).set(1)

    def reload(self, expect: str | None, who: str) -> tuple[Active, Active]:
        """Load, validate and compile the configured bundle beside the running one; swap atomically."""
        old = self.active
        try:
            new = self._load()
            if expect is not None and new.hash != expect:
                raise HttpError(409, "bundle_mismatch", f"the policies directory holds bundle {new.hash}, not the "
                                f"expected {expect}; nothing was changed", policy_bundle=old.hash)
        except (DacpError, HttpError) as e:
            self.metrics.reloads.labels("failed").inc()
            _event(logging.ERROR, "policy reload failed; the running bundle keeps serving", event="policy_reload",
                   outcome="failed", by=who, serving=old.hash, error=str(e))
            raise
        with self._swap:
            old, self.active = self.active, new  # the one reference swap
            self._show(new, old)
        self.metrics.reloads.labels("ok").inc()
        _event(logging.INFO, "policy bundle reloaded", event="policy_reload", outcome="ok", by=who,
               previous=old.hash, bundle=new.hash, name=new.dacp.bundle.name, version=new.dacp.bundle.version)
        return old, new

    def decide(self, active: Active, queries: list) -> list[Decision]:
        """Decide and log under ``active`` (the snapshot the request started with). Runs on the engine thread."""
        t0 = time.perf_counter()
        decisions = active.dacp.evaluate(queries, verify=self.config.verify)
        self.metrics.decision_latency.observe(time.perf_counter() - t0)
        for d in decisions:
            self.metrics.decisions.labels("eligible" if d.eligible else "ineligible").inc()
            v = d.head.get("verification") or {}
            if v.get("status") == "failed":
                self.metrics.custody_failures.labels(str(v.get("reason", "unknown"))).inc()
        return decisions

    def read(self, fn: Callable[[Dacp], Any]) -> Any:
        with self._read_lock:
            return fn(self._reader)

    # -- the collateral ledger (credits, withdrawals): runs on the engine thread, like decide ----------
    def _ledger(self, active: Active) -> Any:
        """The ledger under ``active`` (the request's snapshot), on the one ledger store of this service.

        The store is opened once, on first use (settings ``[ledger] url`` / DACP_LEDGER_URL, else the
        decision log, as the CLI does), and closed on shutdown. The verifier and prices are always
        wired (crediting needs them, whatever ``[service] verify`` says for eligibility)."""
        from rules.ledger.book import Ledger

        with self._ledger_lock:
            if self._ledger_store is None:
                self._ledger_store = open_ledger_store(self.settings)
            if self._ledger_parts is None:
                verifier = (self.make_verifier or custody_verifier)(self.settings)
                prices = (self.make_prices or price_reader)(self.settings)
                self._ledger_parts = (verifier, prices)
            cached = self._ledger_cache
            if cached is None or cached[0] is not active:  # a reload: a ledger on the new bundle
                verifier, prices = self._ledger_parts
                cached = self._ledger_cache = (active, Ledger.from_dacp(active.dacp, self._ledger_store,
                                                                        verifier=verifier, prices=prices))
            ledger = cached[1]
        if not getattr(ledger.prices, "configured", True):
            raise HttpError(503, "not_configured", "credits need a price source (settings [prices] file or feeds); "
                            "none is configured; nothing was credited")
        return ledger

    def credit(self, active: Active, req: Any) -> dict[str, Any]:
        """Credit under ``active``. Runs on the engine thread (the ledger decides with the engine)."""
        from rules.ledger.book import check_key

        check_key(req.idempotency_key)
        ledger = self._ledger(active)
        t0 = time.perf_counter()
        try:
            result = ledger.credit(req)
        except InputError as e:
            self._idempotency_conflict(ledger, e, req, "credit")
            raise
        self.metrics.decision_latency.observe(time.perf_counter() - t0)
        if not result.get("replayed"):
            self.metrics.decisions.labels("eligible" if result.get("eligible") else "ineligible").inc()
            if (result.get("refusal") or {}).get("rule") == "custody.onchain-verification":
                self.metrics.custody_failures.labels("credit").inc()
        return result

    def withdraw(self, active: Active, req: Any) -> dict[str, Any]:
        from rules.ledger.book import check_key

        check_key(req.idempotency_key)
        ledger = self._ledger(active)
        try:
            return ledger.withdraw(req)
        except InputError as e:
            self._idempotency_conflict(ledger, e, req, "withdraw")
            raise

    @staticmethod
    def _idempotency_conflict(ledger: Any, e: InputError, req: Any, operation: str) -> None:
        """The ledger refuses a used key with another body (InputError): a 409 here, with its message."""
        stored = ledger.store.request(req.idempotency_key)
        if stored is not None and (stored.operation != operation or stored.fingerprint != req.fingerprint()):
            raise HttpError(409, "idempotency_key_reused", e.message, where="Idempotency-Key") from None

    def close(self) -> None:
        with self._ledger_lock:
            store, self._ledger_store, self._ledger_cache = self._ledger_store, None, None
        if store is not None:
            store.close()


# -- request helpers -----------------------------------------------------------------------------------
async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) beyond ``limit`` bytes without reading more than that."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise HttpError(400, "bad_request", "Content-Length is not a number")
        if int(declared) > limit:
            raise HttpError(413, "too_large", f"the request body is {declared} bytes; the most accepted is {limit}")
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if ctype not in {"application/json", ""}:
        raise HttpError(415, "unsupported_media_type", f"send JSON (Content-Type: application/json), not {ctype}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpError(413, "too_large", f"the request body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _json(raw: bytes, where: str) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("the request body is not UTF-8 text", where) from None
    if not text.strip():
        raise InputError("the request body is empty; send a JSON document", where)
    return parse_json_text(text, where)


_DECIMAL_TEXT = re.compile(r"^[0-9]{1,30}(\.[0-9]{1,30})?$")
_MAX_TEXT = 200
_MAX_ADDRESSES = 100
# field -> (kind, required): the bodies of POST /v1/credits and /v1/withdrawals (rules.ledger.book's requests)
CREDIT_FIELDS = {"account": ("text", True), "participant": ("text", True), "asset": ("text", True),
                 "quantity": ("decimal", True), "addresses": ("addresses", True), "account_type": ("text", False),
                 "custodian": ("text", False), "segregated": ("bool", False), "evidence": ("evidence", False),
                 "as_of": ("time", False)}
WITHDRAW_FIELDS = {"account": ("text", True), "asset": ("text", True), "quantity": ("decimal", True),
                   "address": ("text", False)}


def _fields(doc: Any, spec: Mapping[str, tuple[str, bool]], what: str) -> dict[str, Any]:
    """A ledger request body checked strictly: an object, no unknown fields, each field of its type.
    Quantities are decimal strings (never JSON numbers: no float ever touches money)."""
    from rules.cli.ledger import _decimal, _when

    if not isinstance(doc, dict):
        raise InputError(f"send a JSON object: the {what} request", "body")
    unknown = sorted(set(doc) - set(spec))
    if unknown:
        raise InputError(f"unknown field(s): {', '.join(map(repr, unknown))} (known: {', '.join(spec)})", "body")
    missing = [k for k, (_, req) in spec.items() if req and doc.get(k) is None]
    if missing:
        raise InputError(f"missing field(s): {', '.join(missing)}", "body")
    out: dict[str, Any] = {}
    for key, (kind, _) in spec.items():
        v, where = doc.get(key), f"body.{key}"
        if v is None:
            continue
        if kind == "text":
            if not isinstance(v, str) or not v.strip() or len(v) > _MAX_TEXT:
                raise InputError(f"must be a non-empty string of at most {_MAX_TEXT} characters", where)
            out[key] = v
        elif kind == "decimal":
            if not isinstance(v, str):
                raise InputError('write the number as a decimal string, e.g. "12.5"', where)
            if not _DECIMAL_TEXT.match(v):
                raise InputError(f"{v[:40]!r} is not a plain decimal string (digits, at most one '.', "
                                 "e.g. \"12.5\"; no sign, exponent, NaN or Infinity)", where)
            out[key] = _decimal(v, where)
        elif kind == "addresses":
            if not isinstance(v, list) or not 1 <= len(v) <= _MAX_ADDRESSES:
                raise InputError(f"must be a list of 1 to {_MAX_ADDRESSES} custody addresses", where)
            if not all(isinstance(a, str) and a.strip() and len(a) <= _MAX_TEXT for a in v):
                raise InputError(f"each address must be a non-empty string of at most {_MAX_TEXT} characters", where)
            if len(set(v)) != len(v):
                raise InputError("an address is listed twice", where)
            out[key] = tuple(v)
        elif kind == "bool":
            if not isinstance(v, bool):
                raise InputError("must be true or false", where)
            out[key] = v
        elif kind == "time":
            if not isinstance(v, str) or len(v) > 64:
                raise InputError("must be an RFC 3339 date and time string, e.g. 2026-11-20T14:00:00Z", where)
            out[key] = _when(v, where)
        elif kind == "evidence":
            if not isinstance(v, dict) or set(v) - {"stablecoin", "fund"} or not all(isinstance(x, dict) for x in v.values()):
                raise InputError("must be an object with 'stablecoin' and/or 'fund' objects (the evidence block of a "
                                 "query)", where)
            out[key] = json.loads(json.dumps(v, default=str))  # exact: Decimals as their text, as the CLI reads files
    return out


def credit_request(doc: Any, key: str) -> Any:
    from rules.ledger.book import CreditRequest

    f = _fields(doc, CREDIT_FIELDS, "credit")
    return CreditRequest(idempotency_key=key, **f)


def withdraw_request(doc: Any, key: str) -> Any:
    from rules.ledger.book import WithdrawRequest

    return WithdrawRequest(idempotency_key=key, **_fields(doc, WITHDRAW_FIELDS, "withdraw"))


def _policy(active: Active) -> dict[str, Any]:
    b = active.dacp.bundle
    return {"bundle": b.hash, "name": b.name, "version": b.version,
            "effective_from": b.dated.effective_from.isoformat() if b.dated.effective_from else None,
            "effective_to": b.dated.effective_to.isoformat() if b.dated.effective_to else None,
            "phases": [{"id": p.id, "starts": p.starts.isoformat(), "ends": p.ends.isoformat() if p.ends else None}
                       for p in b.phases],
            "rules": len(b.rule_ids()), "assets": sorted(b.assets), "loaded_at": active.loaded_at}


# -- OpenAPI pieces ------------------------------------------------------------------------------------
def query_schema() -> dict[str, Any]:
    """rules/schema/query.schema.json with its $defs inlined (OpenAPI resolves refs from the document root)."""
    schema = json.loads((SCHEMA_DIR / "query.schema.json").read_text(encoding="utf-8"))
    defs = schema.pop("$defs", {})
    schema.pop("$schema", None)

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                rest = {k: v for k, v in node.items() if k != "$ref"}
                return {**inline(defs[ref[len("#/$defs/"):]]), **inline(rest)}
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(x) for x in node]
        return node

    return inline(schema)


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _resp(desc: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"schema": schema or _ref("Error")}}}


def _errors(*codes: int) -> dict[int, Any]:
    words = {400: "Malformed request", 401: "Missing or invalid bearer token", 403: "The token's role may not do this",
             404: "Not found", 409: "Conflict", 413: "Request body too large", 415: "Not JSON",
             422: "Invalid input (every problem named)", 500: "The engine could not decide (fails closed)",
             502: "Evidence could not be gathered", 503: "Storage unavailable"}
    return {c: _resp(words[c]) for c in codes}


COMPONENTS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {
        "error": {"type": "object", "required": ["code", "message"], "properties": {
            "code": {"type": "string"}, "message": {"type": "string"}, "where": {"type": ["string", "null"]},
            "problems": {"type": "array", "items": {"type": "object"}}}},
        "policy_bundle": {"type": "string", "description": "sha256 of the bundle in force"}}},
    "Decision": {"type": "object", "description": "The decision JSON of `dacp evaluate` (see README: Queries and "
                 "decisions): decision_id, eligible, haircut, collateral_value_usd, reasons (the trace), failed_rules, "
                 "policy {bundle, name, version}, ... Money is decimal strings.",
                 "required": ["decision_id", "eligible", "reasons", "policy"], "properties": {
                     "decision_id": {"type": "string"}, "eligible": {"type": "boolean"},
                     "reasons": {"type": "array", "items": {"type": "object"}},
                     "policy": {"type": "object", "properties": {"bundle": {"type": "string"}}}}},
    "Batch": {"type": "object", "additionalProperties": False, "required": ["queries"], "properties": {
        "queries": {"type": "array", "minItems": 1, "items": _ref("Query"),
                    "description": "Every query is checked first: one bad query means nothing is decided or logged."}}},
    "BatchResult": {"type": "object", "required": ["decisions", "policy_bundle"], "properties": {
        "decisions": {"type": "array", "items": _ref("Decision")}, "policy_bundle": {"type": "string"}}},
    "LoggedDecision": {"type": "object", "required": ["decision_id", "decision", "explanation"], "properties": {
        "decision_id": {"type": "string"}, "seq": {"type": "integer"}, "recorded_at": {"type": "string"},
        "bundle": {"type": "string", "description": "the bundle the decision was made under"},
        "entry_hash": {"type": "string"}, "query": {"type": "object"}, "decision": _ref("Decision"),
        "explanation": {"type": "string", "description": "the trace in plain words (dacp explain)"},
        "policy_bundle": {"type": "string", "description": "the bundle in force now"}}},
    "AuditResult": {"type": "object", "required": ["ok", "entries", "head"], "properties": {
        "ok": {"type": "boolean"}, "entries": {"type": "integer"}, "head": {"type": "string"},
        "problem": {"type": ["string", "null"]}, "seq": {"type": ["integer", "null"]}, "report": {"type": "string"},
        "policy_bundle": {"type": "string"}}},
    "Policy": {"type": "object", "required": ["bundle", "name", "version"], "properties": {
        "bundle": {"type": "string"}, "name": {"type": "string"}, "version": {"type": "string"},
        "effective_from": {"type": ["string", "null"]}, "effective_to": {"type": ["string", "null"]},
        "phases": {"type": "array", "items": {"type": "object"}}, "rules": {"type": "integer"},
        "assets": {"type": "array", "items": {"type": "string"}}, "loaded_at": {"type": "string"},
        "policy_bundle": {"type": "string"}}},
    "Reload": {"type": "object", "additionalProperties": False, "properties": {
        "expect_bundle": {"type": "string", "pattern": "^[0-9a-f]{64}$",
                          "description": "refuse (409) unless the directory holds this bundle"}}},
    "ReloadResult": {"type": "object", "required": ["reloaded", "policy_bundle"], "properties": {
        "reloaded": {"type": "boolean"}, "changed": {"type": "boolean"}, "previous": {"type": "string"},
        "policy_bundle": {"type": "string"}, "name": {"type": "string"}, "version": {"type": "string"}}},
    "CreditRequest": {"type": "object", "additionalProperties": False,
                      "required": ["account", "participant", "asset", "quantity", "addresses"], "properties": {
        "account": {"type": "string", "minLength": 1, "maxLength": 200},
        "participant": {"type": "string", "minLength": 1, "maxLength": 200},
        "asset": {"type": "string", "minLength": 1, "maxLength": 200, "description": "a registry asset, e.g. USDC"},
        "quantity": {"type": "string", "pattern": "^[0-9]{1,30}(\\.[0-9]{1,30})?$",
                     "description": "whole units as a decimal string (BTC, not satoshi)"},
        "addresses": {"type": "array", "minItems": 1, "maxItems": 100, "uniqueItems": True,
                      "items": {"type": "string", "minLength": 1, "maxLength": 200}, "description": "custody addresses"},
        "account_type": {"type": ["string", "null"], "description": "for a new account: customer-segregated "
                         "(default), cleared-swaps, 30.7-secured"},
        "custodian": {"type": ["string", "null"]}, "segregated": {"type": ["boolean", "null"]},
        "evidence": {"type": ["object", "null"], "description": "off-chain evidence of a query: stablecoin and/or fund",
                     "additionalProperties": False, "properties": {"stablecoin": {"type": "object"},
                                                                   "fund": {"type": "object"}}},
        "as_of": {"type": ["string", "null"], "description": "decision time, RFC 3339 (default now)"}}},
    "WithdrawRequest": {"type": "object", "additionalProperties": False, "required": ["account", "asset", "quantity"],
                        "properties": {
        "account": {"type": "string", "minLength": 1, "maxLength": 200},
        "asset": {"type": "string", "minLength": 1, "maxLength": 200},
        "quantity": {"type": "string", "pattern": "^[0-9]{1,30}(\\.[0-9]{1,30})?$"},
        "address": {"type": ["string", "null"], "description": "only from this custody address (default: newest "
                    "credits first)"}}},
    "CreditResult": {"type": "object", "required": ["operation", "status", "idempotency_key", "replayed", "bundle"],
                     "description": "rules.ledger.book.Ledger.credit's result (as dacp credit prints it); money is decimal "
                     "strings. status credited (201; 200 on replay) or refused (200, with refusal {rule, retryable, "
                     "message}).", "properties": {
        "operation": {"type": "string"}, "status": {"type": "string", "enum": ["credited", "refused"]},
        "idempotency_key": {"type": "string"}, "replayed": {"type": "boolean"}, "eligible": {"type": "boolean"},
        "account": {"type": "string"}, "asset": {"type": "string"}, "quantity_requested": {"type": "string"},
        "quantity_credited": {"type": "string"}, "collateral_value_usd": {"type": "string"},
        "decision_id": {"type": "string"}, "failed_rules": {"type": "array", "items": {"type": "string"}},
        "allocations": {"type": "array", "items": {"type": "object"}}, "refusal": {"type": "object"},
        "bundle": {"type": "string"}, "policy_bundle": {"type": "string"}}},
    "WithdrawResult": {"type": "object", "required": ["operation", "status", "idempotency_key", "replayed"],
                       "properties": {
        "operation": {"type": "string"}, "status": {"type": "string", "enum": ["withdrawn"]},
        "idempotency_key": {"type": "string"}, "replayed": {"type": "boolean"}, "account": {"type": "string"},
        "asset": {"type": "string"}, "quantity": {"type": "string"}, "collateral_value_usd": {"type": "string"},
        "reductions": {"type": "array", "items": {"type": "object"}}, "policy_bundle": {"type": "string"}}},
    "Health": {"type": "object", "required": ["status"], "properties": {
        "status": {"type": "string"}, "policy_bundle": {"type": ["string", "null"]}, "checks": {"type": "object"}}},
}


EXAMPLE_QUERY = {"id": "ex-btc-eligible", "account": "ACC-1001", "participant": "FCM-ALPHA", "asset": "BTC",
                 "quantity": "12.5", "price_usd": "91250.00", "as_of": "2026-11-20T14:00:00Z",
                 "custody": {"custodian": "anchorage", "addresses": ["bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"],
                             "segregated": True, "confirmations": 7, "balance": "12.5"},
                 "evidence": {"price_updated_at": "2026-11-20T13:45:00Z"},
                 "portfolio": [{"asset": "USDC", "collateral_value_usd": "2500000.00"}]}
EXAMPLE_CREDIT = {"account": "ACC-1001", "participant": "FCM-ALPHA", "asset": "USDC", "quantity": "400000",
                  "addresses": ["0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc"], "custodian": "coinbase-custody",
                  "segregated": True, "evidence": {"stablecoin": {"issuer": "Circle Internet Financial",
                                                                  "reserve_attestation_date": "2026-11-17"}}}
EXAMPLES = {"Query": EXAMPLE_QUERY, "Batch": {"queries": [EXAMPLE_QUERY]}, "Reload": {},
            "CreditRequest": EXAMPLE_CREDIT,
            "WithdrawRequest": {"account": "ACC-1001", "asset": "USDC", "quantity": "40000"}}


def _body_spec(name: str, required: bool = True) -> dict[str, Any]:
    return {"requestBody": {"required": required, "content": {"application/json": {
        "schema": _ref(name), "example": EXAMPLES[name]}}}}


# -- the application -----------------------------------------------------------------------------------
def create_app(settings: Settings, config: ServiceConfig | None = None, **service_kw: Any) -> FastAPI:
    config = config or service_config(settings)
    svc = Service(settings, config, **service_kw)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(svc.close, limiter=svc.engine_limiter)  # after the last ledger call

    app = FastAPI(title="dacp", version=API_VERSION, docs_url=None, redoc_url=None, lifespan=lifespan,
                  description="Eligibility decisions for the digital asset collateral pilot. Bearer tokens map to "
                  "roles (clearing, auditor, compliance); deny by default. Every response names the policy bundle "
                  "in force (header X-Policy-Bundle). See docs/service.md.")
    app.state.service = svc
    bearer = HTTPBearer(auto_error=False, description="a dacp service token (dacp service-token)")

    def role(operation: str) -> Callable[..., Principal]:
        allowed = ACCESS[operation]

        def check(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Principal:
            challenge = {"WWW-Authenticate": "Bearer"}
            if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
                raise HttpError(401, "unauthenticated", "send a bearer token: Authorization: Bearer <token>", challenge)
            who = authenticate(svc.config.tokens, creds.credentials)
            if who is None:
                raise HttpError(401, "unauthenticated", "the bearer token is not valid", challenge)
            request.state.principal = who
            if who.role not in allowed:
                raise HttpError(403, "forbidden", f"role {who.role!r} may not {operation.replace('_', ' ')} "
                                f"(allowed: {', '.join(sorted(allowed))})")
            return who
        return check

    def snapshot(request: Request) -> Active:
        active = svc.active  # one read of the reference: the whole request uses this bundle
        request.state.bundle = active.hash
        return active

    # -- errors, in one place --
    def error(request: Request, status: int, code: str, message: str, headers: Mapping[str, str] | None = None,
              **extra: Any) -> JSONResponse:
        bundle = getattr(request.state, "bundle", None) or svc.active.hash
        body = {"error": {"code": code, "message": message, **extra}, "policy_bundle": bundle}
        return JSONResponse(body, status, headers={**(headers or {}), "X-Policy-Bundle": bundle})

    @app.exception_handler(HttpError)
    async def _http_error(request: Request, e: HttpError) -> JSONResponse:
        extra = {k: v for k, v in e.extra.items() if k != "policy_bundle"}
        return error(request, e.status, e.code, e.message, e.headers, **extra)

    @app.exception_handler(DacpError)
    async def _dacp_error(request: Request, e: DacpError) -> JSONResponse:
        status, code = status_for(e)
        extra: dict[str, Any] = e.details()
        msg = e.summary()
        if status >= 500:
            _event(logging.ERROR, "request failed", event="error", code=code, error=str(e),
                   request_id=getattr(request.state, "request_id", None))
        return error(request, status, code, msg, **extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, e: RequestValidationError) -> JSONResponse:
        msgs = ["{}: {}".format(".".join(str(x) for x in err.get("loc", ())), err.get("msg", "invalid"))
                for err in e.errors()]
        return error(request, 422, "invalid_input", "; ".join(msgs) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _starlette(request: Request, e: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
        return error(request, e.status_code, code, str(e.detail), getattr(e, "headers", None))

    @app.middleware("http")
    async def _door(request: Request, call_next: Callable) -> Response:
        rid = request.headers.get("x-request-id", "")
        rid = rid if re.fullmatch(r"[A-Za-z0-9._-]{1,64}", rid) else uuid.uuid4().hex
        request.state.request_id = rid
        t0 = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception:  # a bug, never the client's fault: logged in full, not shown
            _event(logging.ERROR, "internal error", event="internal_error", request_id=rid, path=request.url.path,
                   exc=traceback.format_exc()[-4000:])
            response = error(request, 500, "internal", f"internal error (reference {rid}); nothing was decided")
        dt = time.perf_counter() - t0
        route = request.scope.get("route")
        op = getattr(route, "operation_id", None) or getattr(route, "name", None) or "unmatched"
        bundle = getattr(request.state, "bundle", None) or svc.active.hash
        response.headers["X-Policy-Bundle"] = bundle
        response.headers["X-Request-Id"] = rid
        svc.metrics.requests.labels(op, str(response.status_code)).inc()
        svc.metrics.request_latency.labels(op).observe(dt)
        who = getattr(request.state, "principal", None)
        _event(logging.INFO if response.status_code < 500 else logging.ERROR, "request", event="request",
               request_id=rid, method=request.method, path=request.url.path, operation=op,
               status=response.status_code, ms=round(dt * 1000, 3), token=who.name if who else None,
               role=who.role if who else None, bundle=bundle)
        return response

    def reply(body: dict[str, Any], status: int = 200) -> JSONResponse:
        return JSONResponse(body, status)

    # -- eligibility --
    @app.post("/v1/eligibility", operation_id="evaluate", tags=["eligibility"],
              summary="Decide one query (rules/schema/query.schema.json) -> decision JSON, logged",
              responses={200: _resp("The decision (same JSON as dacp evaluate)", _ref("Decision")),
                         **_errors(400, 401, 403, 413, 415, 422, 500, 502, 503)},
              openapi_extra=_body_spec("Query"))
    async def evaluate(request: Request, who: Principal = Depends(role("evaluate"))) -> JSONResponse:
        active = snapshot(request)
        raw = await _body(request, min(svc.config.max_body_bytes, MAX_QUERY_BYTES))
        query = parse_query(_json(raw, "body"), "query")
        decisions = await anyio.to_thread.run_sync(partial(svc.decide, active, [query]), limiter=svc.engine_limiter)
        return Response(decisions[0].to_json_bytes(), media_type="application/json")

    @app.post("/v1/eligibility/batch", operation_id="evaluate_batch", tags=["eligibility"],
              summary="Decide many queries at once; all are checked first, then decided and logged together",
              responses={200: _resp("The decisions, in order", _ref("BatchResult")),
                         **_errors(400, 401, 403, 413, 415, 422, 500, 502, 503)},
              openapi_extra=_body_spec("Batch"))
    async def evaluate_batch(request: Request, who: Principal = Depends(role("evaluate_batch"))) -> JSONResponse:
        active = snapshot(request)
        doc = _json(await _body(request, svc.config.max_body_bytes), "body")
        if not isinstance(doc, dict) or set(doc) != {"queries"}:
            extra = sorted(set(doc) - {"queries"}) if isinstance(doc, dict) else []
            raise InputError("send an object with one field, queries (a list of queries)"
                             + (f"; unknown field(s): {', '.join(map(str, extra))}" if extra else ""), "body")
        items = doc["queries"]
        if not isinstance(items, list) or not items:
            raise InputError("must be a non-empty list of queries", "body.queries")
        if len(items) > svc.config.max_batch:
            raise HttpError(413, "too_large", f"{len(items)} queries; the most accepted in one batch is "
                            f"{svc.config.max_batch}")
        queries, errors = [], []
        for i, item in enumerate(items):
            try:
                queries.append(parse_query(item, f"queries[{i}]"))
            except InputError as e:
                errors.append(str(e))
        if errors:
            shown = errors[:20] + ([f"... and {len(errors) - 20} more"] if len(errors) > 20 else [])
            raise InputError(f"{len(errors)} invalid quer{'y' if len(errors) == 1 else 'ies'}; nothing was decided "
                             "or logged: " + "; ".join(shown), "body.queries")
        def decide_and_encode() -> bytes:
            # The decisions' JSON straight from their compact form (Decision.to_json_bytes), not dicts for a
            # JSON encoder to walk: building and encoding ~10 KB of dicts a decision was half a batch's time.
            decisions = svc.decide(active, queries)
            return b"".join((b'{"decisions":[', b",".join([d.to_json_bytes() for d in decisions]),
                             b'],"policy_bundle":', orjson.dumps(active.hash), b"}"))

        body = await anyio.to_thread.run_sync(decide_and_encode, limiter=svc.engine_limiter)
        return Response(body, media_type="application/json")

    # -- auditors --
    @app.get("/v1/decisions/{decision_id}", operation_id="get_decision", tags=["audit"],
             summary="A logged decision with its query, trace and plain-words explanation",
             responses={200: _resp("The logged decision", _ref("LoggedDecision")), **_errors(401, 403, 404, 422, 503)})
    async def get_decision(request: Request, decision_id: str, who: Principal = Depends(role("get_decision"))) -> JSONResponse:
        active = snapshot(request)
        if not re.fullmatch(_DECISION_ID, decision_id):
            raise HttpError(404, "not_found", "no decision with this id (ids are letters, digits, '.', ':', '_', '-')")

        def read(d: Dacp) -> dict[str, Any]:
            try:
                e = d.log.get(decision_id)
            except InputError:
                raise HttpError(404, "not_found", f"no decision with id {decision_id!r}") from None
            if e.kind != "decision" or "decision" not in e.body:
                raise HttpError(404, "not_found", f"log entry {decision_id!r} is a {e.kind}, not a decision")
            return {"decision_id": decision_id, "seq": e.seq, "recorded_at": e.recorded_at, "bundle": e.bundle_hash,
                    "entry_hash": e.entry_hash, "query": e.body.get("query"), "decision": d.logged_decision(e),
                    "explanation": d.explain(decision_id)}
        body = await anyio.to_thread.run_sync(partial(svc.read, read))
        return reply({**body, "policy_bundle": active.hash})

    @app.get("/v1/audit/verify", operation_id="verify_audit", tags=["audit"],
             summary="Verify the whole hash chain and the stored bundles (dacp audit verify)",
             responses={200: _resp("The verification (ok false names the first entry affected)", _ref("AuditResult")),
                        **_errors(401, 403, 422, 503)})
    async def verify_audit(request: Request, expect_head: str | None = None,
                           who: Principal = Depends(role("verify_audit"))) -> JSONResponse:
        active = snapshot(request)
        if expect_head is not None and not _HEX64.match(expect_head):
            raise InputError("must be a head hash: 64 lower-case hex digits", "expect_head")
        res = await anyio.to_thread.run_sync(partial(svc.read, lambda d: d.verify_log(expect_head)))
        if not res.ok:
            svc.metrics.audit_failures.inc()
            _event(logging.WARNING, "audit verification failed", event="audit_verify", ok=False, problem=res.problem)
        return reply({"ok": res.ok, "entries": res.entries, "head": res.head, "problem": res.problem, "seq": res.seq,
                      "report": res.render(), "policy_bundle": active.hash})

    # -- policy --
    @app.get("/v1/policy", operation_id="get_policy", tags=["policy"],
             summary="The policy bundle in force: hash, name, version, effective dates, phases",
             responses={200: _resp("The active bundle", _ref("Policy")), **_errors(401, 403)})
    async def get_policy(request: Request, who: Principal = Depends(role("get_policy"))) -> JSONResponse:
        active = snapshot(request)
        return reply({**_policy(active), "policy_bundle": active.hash})

    @app.post("/v1/policy/reload", operation_id="reload_policy", tags=["policy"],
              summary="Load, validate and compile the configured policies beside the running bundle, then swap",
              responses={200: _resp("Swapped in (or unchanged)", _ref("ReloadResult")),
                         **_errors(400, 401, 403, 409, 413, 415, 422, 503)},
              openapi_extra=_body_spec("Reload", required=False))
    async def reload_policy(request: Request, who: Principal = Depends(role("reload_policy"))) -> JSONResponse:
        raw = await _body(request, 64 * 1024)
        expect = None
        if raw.strip():
            doc = _json(raw, "body")
            if not isinstance(doc, dict) or set(doc) - {"expect_bundle"}:
                extra = sorted(set(doc) - {"expect_bundle"}) if isinstance(doc, dict) else []
                raise InputError("send an object with at most one field, expect_bundle"
                                 + (f"; unknown field(s): {', '.join(map(str, extra))}" if extra else ""), "body")
            expect = doc.get("expect_bundle")
            if expect is not None and not (isinstance(expect, str) and _HEX64.match(expect)):
                raise InputError("must be a bundle hash: 64 lower-case hex digits", "body.expect_bundle")
        request.state.bundle = svc.active.hash  # a failed reload answers under the bundle still serving
        old, new = await anyio.to_thread.run_sync(partial(svc.reload, expect, who.name))
        request.state.bundle = new.hash
        b = new.dacp.bundle
        return reply({"reloaded": True, "changed": old.hash != new.hash, "previous": old.hash,
                      "policy_bundle": new.hash, "name": b.name, "version": b.version})

    # -- the collateral ledger --
    idem_doc = ("the request's idempotency key (1-80 characters: letters, digits and . _ : / -, starting with a "
                "letter or digit): the same key with the same body returns the same result and never credits twice; "
                "the same key with another body is refused (409)")

    def idem(key: str) -> str:
        from rules.ledger.book import check_key

        try:
            return check_key(key)
        except InputError as e:
            raise InputError(e.message, "Idempotency-Key") from None

    @app.post("/v1/credits", operation_id="credit", tags=["ledger"],
              summary="Verify custody on-chain, decide under the bundle in force and credit the collateral value once",
              responses={200: _resp("Replayed (same key, same body), or refused by policy (status refused)",
                                    _ref("CreditResult")),
                         201: _resp("Credited", _ref("CreditResult")),
                         **_errors(400, 401, 403, 409, 413, 415, 422, 500, 502, 503)},
              openapi_extra=_body_spec("CreditRequest"))
    async def credit(request: Request, idempotency_key: str = Header(alias="Idempotency-Key", description=idem_doc),
                     who: Principal = Depends(role("credit"))) -> JSONResponse:
        active = snapshot(request)
        key = idem(idempotency_key)
        req = credit_request(_json(await _body(request, 256 * 1024), "body"), key)
        result = await anyio.to_thread.run_sync(partial(svc.credit, active, req), limiter=svc.engine_limiter)
        refusal = result.get("refusal") or {}
        if result["status"] != "credited" and refusal.get("retryable"):
            raise HttpError(502, "custody_unverified", f"custody could not be verified on-chain: "
                            f"{refusal.get('message', 'unavailable')}; nothing was credited; retry with the same "
                            "Idempotency-Key", retryable=True, result=result)
        status = 201 if result["status"] == "credited" and not result.get("replayed") else 200
        return reply({**result, "policy_bundle": active.hash}, status)

    @app.post("/v1/withdrawals", operation_id="withdraw", tags=["ledger"],
              summary="Debit collateral from an account (frees the custody balance)",
              responses={200: _resp("Replayed (same key, same body)", _ref("WithdrawResult")),
                         201: _resp("Withdrawn", _ref("WithdrawResult")),
                         **_errors(400, 401, 403, 409, 413, 415, 422, 500, 503)},
              openapi_extra=_body_spec("WithdrawRequest"))
    async def withdraw(request: Request, idempotency_key: str = Header(alias="Idempotency-Key", description=idem_doc),
                       who: Principal = Depends(role("withdraw"))) -> JSONResponse:
        active = snapshot(request)
        key = idem(idempotency_key)
        req = withdraw_request(_json(await _body(request, 64 * 1024), "body"), key)
        result = await anyio.to_thread.run_sync(partial(svc.withdraw, active, req), limiter=svc.engine_limiter)
        return reply({**result, "policy_bundle": active.hash}, 200 if result.get("replayed") else 201)

    # -- operations --
    @app.get("/v1/health", operation_id="health", tags=["operations"], summary="Liveness (no token needed)",
             responses={200: _resp("Alive", _ref("Health"))})
    async def health(request: Request) -> JSONResponse:
        return reply({"status": "ok", "policy_bundle": snapshot(request).hash})

    @app.get("/v1/ready", operation_id="ready", tags=["operations"],
             summary="Readiness: a compiled bundle in force and the decision log reachable (no token needed)",
             responses={200: _resp("Ready", _ref("Health")), 503: _resp("Not ready", _ref("Health"))})
    async def ready(request: Request) -> JSONResponse:
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

    @app.get("/metrics", operation_id="metrics", tags=["operations"], summary="Prometheus metrics (no token needed)",
             responses={200: {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def metrics(request: Request) -> Response:
        snapshot(request)
        return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            spec.setdefault("components", {}).setdefault("schemas", {}).update(
                {"Query": query_schema(), **COMPONENTS})
            for path in spec["paths"].values():
                for op in path.values():
                    op.setdefault("responses", {}).setdefault("default", _resp("Error"))
                    if op.get("operationId") in PUBLIC:
                        op.pop("security", None)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def openapi_document() -> str:
    """The OpenAPI document as committed in docs/openapi.json (independent of tokens, bundle and log)."""
    return json.dumps(_spec_app().openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _spec_app() -> FastAPI:
    """An app built only to render the spec: the routes do not depend on settings, so any bundle will do."""
    from rules.settings import Settings as S

    root = Path(__file__).resolve().parents[2]
    # the spec does not depend on the bundle either: approvals do not matter for rendering it
    return create_app(S(policies=root / "policies", log=Path(":memory:"), sections={"approvals": {"required": False}}),
                      ServiceConfig())
