"""The ``[service]`` settings section, checked: address, limits, on-chain verification and the tokens."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from rules.errors import InputError
from rules.http.auth import ROLES, Token
from rules.settings import Settings

DEFAULTS = {"host": "127.0.0.1", "port": 8080, "max_body_bytes": 4_000_000, "max_batch": 1000, "verify": False}
KNOWN = {"host", "port", "max_body_bytes", "max_batch", "verify", "tokens", "tokens_file"}
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ServiceConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 4_000_000
    max_batch: int = 1000
    verify: bool = False  # every decision verifies custody on-chain (as evaluate --verify)
    tokens: tuple[Token, ...] = ()


def service_config(settings: Settings) -> ServiceConfig:
    """The ``[service]`` settings section (environment ``DACP_SERVICE_<KEY>`` wins), checked."""
    sec = dict(settings.section("service"))
    unknown = sorted(set(sec) - KNOWN)
    if unknown:
        raise InputError(f"unknown settings {', '.join(unknown)} (known: {', '.join(sorted(KNOWN))})", "[service]")
    tokens = _tokens(sec.get("tokens", []), "[service] tokens")
    if sec.get("tokens_file"):
        tokens += _tokens_file(Path(str(sec["tokens_file"])).expanduser())
    names = [t.name for t in tokens]
    hashes = [t.sha256 for t in tokens]
    if len(set(names)) != len(names) or len(set(hashes)) != len(hashes):
        raise InputError("token names and hashes must be unique", "[service] tokens")
    return ServiceConfig(host=str(sec.get("host", DEFAULTS["host"])), port=_int(sec, "port", 1, 65535),
                         max_body_bytes=_int(sec, "max_body_bytes", 1024, 1_000_000_000),
                         max_batch=_int(sec, "max_batch", 1, 1_000_000), verify=_bool(sec, "verify"),
                         tokens=tuple(tokens))


def _tokens_file(path: Path) -> list[Token]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise InputError(f"cannot read the tokens file: {e.strerror or e}", str(path)) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"not a valid TOML tokens file: {e}", str(path)) from None
    if set(data) - {"token"}:
        raise InputError("a tokens file holds only [[token]] tables", str(path))
    return _tokens(data.get("token", []), f"{path} token")


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
