"""The OpenAPI document: what the routes declare (responses, request bodies), and its rendering from an app.

The routes say which statuses they answer with (``responses``/``error_responses``) and which body they take
(``body_spec``, from the body's model in rules.http.bodies, or the query schema). ``install_openapi`` makes
an app serve the document with every component schema, a default error response on every operation, and no
security requirement on the public operations.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from rules.http.auth import PUBLIC
from rules.http.bodies import BODIES, Body
from rules.http.responses import RESPONSES, ref
from rules.policy.schema_check import SCHEMA_DIR

_ERROR_WORDS = {400: "Malformed request", 401: "Missing or invalid bearer token",
                403: "The token's role may not do this", 404: "Not found", 409: "Conflict",
                413: "Request body too large", 415: "Not JSON",
                422: "Invalid input (every problem named)", 500: "The engine could not decide (fails closed)",
                502: "Evidence could not be gathered", 503: "Storage unavailable"}


def response(desc: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """A JSON response with ``schema`` (default: the error body)."""
    return {"description": desc, "content": {"application/json": {"schema": schema or ref("Error")}}}


def error_responses(*codes: int) -> dict[int, Any]:
    """The error responses an operation may give, each with the error body."""
    return {c: response(_ERROR_WORDS[c]) for c in codes}


def body_spec(schema_name: str, example: dict[str, Any], required: bool = True) -> dict[str, Any]:
    """``openapi_extra`` for an operation whose body the route reads itself (rules.http.reading)."""
    return {"requestBody": {"required": required, "content": {"application/json": {
        "schema": ref(schema_name), "example": example}}}}


def body_of(model: type[Body], required: bool = True) -> dict[str, Any]:
    return body_spec(model.schema_name, model.example, required)


def query_schema() -> dict[str, Any]:
    """rules/schema/query.schema.json with its $defs inlined (OpenAPI resolves refs from the document root)."""
    schema = json.loads((SCHEMA_DIR / "query.schema.json").read_text(encoding="utf-8"))
    defs = schema.pop("$defs", {})
    schema.pop("$schema", None)

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref_ = node.get("$ref")
            if isinstance(ref_, str) and ref_.startswith("#/$defs/"):
                rest = {k: v for k, v in node.items() if k != "$ref"}
                return {**inline(defs[ref_[len("#/$defs/"):]]), **inline(rest)}
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(x) for x in node]
        return node

    return inline(schema)


def components() -> dict[str, Any]:
    """Every component schema: the query, the request bodies and the responses."""
    return {"Query": query_schema(), **RESPONSES, **{b.schema_name: b.json_schema() for b in BODIES}}


def render(app: FastAPI) -> dict[str, Any]:
    """The document of ``app``'s routes."""
    spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    spec.setdefault("components", {}).setdefault("schemas", {}).update(components())
    for path in spec["paths"].values():
        for op in path.values():
            op.setdefault("responses", {}).setdefault("default", response("Error"))
            if op.get("operationId") in PUBLIC:
                op.pop("security", None)
    return spec


def install_openapi(app: FastAPI) -> None:
    """``app`` serves ``render(app)`` at /openapi.json (rendered once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = render(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def document_text(app: FastAPI) -> str:
    """The document as committed in docs/openapi.json: sorted keys, two-space indents, a final newline."""
    return json.dumps(app.openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
