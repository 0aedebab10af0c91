"""Who may call what: bearer tokens, roles, and the one access table (deny by default).

Only a token's sha256 is configured (tokens are 256 random bits, so an unsalted hash is enough: see
docs/service.md); a presented token is hashed and compared with every stored hash in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Callable

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from rules.http.errors import HttpError

ROLES = ("clearing", "auditor", "compliance")

# operation id -> roles allowed. Anything not listed here (and not in PUBLIC) is refused: deny by default.
ACCESS: dict[str, frozenset[str]] = {
    "evaluate": frozenset({"clearing"}),
    "evaluate_batch": frozenset({"clearing"}),
    "get_decision": frozenset({"auditor"}),
    "get_receipt": frozenset({"clearing", "auditor"}),  # a clearing system keeps receipts of its decisions
    "verify_audit": frozenset({"auditor"}),
    "get_checkpoint": frozenset({"clearing", "auditor"}),
    "get_policy": frozenset({"clearing", "auditor", "compliance"}),
    "reload_policy": frozenset({"compliance"}),
    "credit": frozenset({"clearing"}),
    "withdraw": frozenset({"clearing"}),
    "margin_import": frozenset({"clearing"}),
    "margin_coverage": frozenset({"clearing", "auditor"}),
    "margin_calls": frozenset({"clearing"}),
    "margin_free": frozenset({"clearing"}),
    "record_incident": frozenset({"clearing", "compliance"}),  # operations and compliance give notice
    "list_incidents": frozenset({"clearing", "auditor", "compliance"}),
}
PUBLIC = frozenset({"health", "ready", "metrics"})  # liveness, readiness and metrics: no token (see docs/service.md)


@dataclass(frozen=True)
class Token:
    """A configured token: who holds it, its role, and the sha256 hex of the token (never the token)."""

    name: str
    role: str
    sha256: str


@dataclass(frozen=True)
class Principal:
    name: str
    role: str


def hash_token(token: str) -> str:
    """sha256 hex of a bearer token: what the settings store (tokens are random, 256 bits; see docs)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return "dacp_" + secrets.token_urlsafe(32)


def authenticate(tokens: tuple[Token, ...], presented: str) -> Principal | None:
    """The token's principal, or None. Every stored hash is compared, in constant time, whatever matches."""
    digest = hash_token(presented)
    found = None
    for t in tokens:
        if hmac.compare_digest(digest, t.sha256):
            found = t
    return Principal(found.name, found.role) if found else None


# one instance: the OpenAPI document names its security scheme after it (HTTPBearer)
bearer = HTTPBearer(auto_error=False, description="a dacp service token (dacp service-token)")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def require(operation: str) -> Callable[..., Principal]:
    """A route dependency: the caller's principal, if its token's role may call ``operation`` (401/403 else).

    The tokens are the running service's (``request.app.state.service.config``); the principal is kept on
    ``request.state`` for the request's log line."""
    allowed = ACCESS[operation]

    async def check(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Principal:
        if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
            raise HttpError(401, "unauthenticated", "send a bearer token: Authorization: Bearer <token>", _CHALLENGE)
        who = authenticate(request.app.state.service.config.tokens, creds.credentials)
        if who is None:
            raise HttpError(401, "unauthenticated", "the bearer token is not valid", _CHALLENGE)
        request.state.principal = who
        if who.role not in allowed:
            raise HttpError(403, "forbidden", f"role {who.role!r} may not {operation.replace('_', ' ')} "
                            f"(allowed: {', '.join(sorted(allowed))})")
        return who
    return check
