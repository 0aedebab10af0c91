"""The uvicorn protocol class ``dacp serve`` runs (``[service] http``), with the read deadlines and the
header bound of rules.http.deadlines (each protocol's own module imported only when it is the one chosen)."""

from __future__ import annotations


def guarded(http: str, header_timeout_s: float, body_timeout_s: float, max_header_bytes: int) -> type:
    """The protocol class to pass as ``uvicorn.run(http=...)``: ``http`` is ``"httptools"`` or ``"h11"``."""
    attrs = {"header_timeout_s": float(header_timeout_s), "body_timeout_s": float(body_timeout_s),
             "max_header_bytes": int(max_header_bytes)}
    if http == "httptools":
        from rules.http.deadlines_httptools import GuardedHttpToolsProtocol as base
    elif http == "h11":
        from rules.http.deadlines_h11 import GuardedH11Protocol as base  # type: ignore[assignment]
    else:
        raise ValueError(f"unknown HTTP protocol {http!r}")
    return type(base.__name__, (base,), attrs)
