"""The ``[service]`` settings section, checked: address, limits, on-chain verification and the tokens."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rules.errors import InputError
from rules.http.auth import ROLES, Token
from rules.settings import Settings

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
    """The ``[service]`` settings (typed and range-checked by ``rules.settings.ServiceSettings``), with its
    tokens checked: roles known, hashes well formed, names and hashes unique."""
    sec = settings.service
    tokens = _tokens(sec.tokens, "[service] tokens")
    if sec.tokens_file is not None:
        tokens += _tokens_file(Path(sec.tokens_file).expanduser())
    names = [t.name for t in tokens]
    hashes = [t.sha256 for t in tokens]
    if len(set(names)) != len(names) or len(set(hashes)) != len(hashes):
        raise InputError("token names and hashes must be unique", "[service] tokens")
    return ServiceConfig(host=sec.host, port=sec.port, max_body_bytes=sec.max_body_bytes, max_batch=sec.max_batch,
                         verify=sec.verify, tokens=tuple(tokens))


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
