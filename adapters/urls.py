"""URLs safe to show: in evidence ``source``, messages and logs, never a password or an API key.

One place for the two forms the adapters show:

- ``endpoint`` (RPC nodes, Ethereum and Bitcoin): scheme, host, port and path only. User and password,
  the query string and the fragment are dropped (API keys often ride in them), and with ``mask_keys``
  any path segment that looks like an API key (20+ URL-safe characters, as Infura's ``/v3/<key>`` or
  Alchemy's ``/v2/<key>``) becomes ``***``.
- ``database`` (SQL targets): the URL as given with only the password replaced by ``***``, so that the
  message still names the role (``postgresql://dacp:***@db/dacp``).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

__all__ = ["database", "endpoint"]

_SECRET_SEGMENT = re.compile(r"^[A-Za-z0-9_\-]{20,}$")
_PASSWORD = re.compile(r"(://[^:/@]+):[^@]*@")


def endpoint(url: str, *, mask_keys: bool = True, empty_path: str = "") -> str:
    """An RPC URL without credentials: scheme, host, port and path (``empty_path`` when it has none)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    path = parts.path or empty_path
    if mask_keys:
        path = "/".join("***" if _SECRET_SEGMENT.match(seg) else seg for seg in path.split("/"))
    return urlunsplit((parts.scheme, netloc, path, "", ""))


def database(url: str) -> str:
    """A database URL with its password hidden (the user and everything else as given)."""
    return _PASSWORD.sub(r"\1:***@", url)
