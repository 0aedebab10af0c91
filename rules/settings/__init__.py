"""One typed settings tree, from a TOML file and environment variables (environment wins).

File: ``$DACP_CONFIG`` or ``./dacp.toml`` if present. Every key is optional; each section is a typed class
(``rules.settings.sections``), and a key that is unknown or of the wrong type is refused with its place (``[service] port``)::

    policies = "policies"             # DACP_POLICIES
    log = "var/dacp.sqlite"           # DACP_LOG
    engine = "durable_rules"          # DACP_ENGINE: durable_rules | python | checked
    [ethereum]                        # DACP_ETH_<KEY>, e.g. DACP_ETH_RPC_URL, DACP_ETH_BLOCK
    [bitcoin]                         # DACP_BTC_<KEY>, e.g. DACP_BTC_RPC_URL, DACP_BTC_COOKIE_FILE
    [prices]                          # DACP_PRICES_<KEY>, e.g. DACP_PRICES_FILE
    [ledger]                          # DACP_LEDGER_URL
    [approvals]                       # DACP_APPROVALS_<KEY>
    [service]                         # DACP_SERVICE_<KEY>
    [audit]                           # DACP_AUDIT_<KEY>: signing_key_file, public_keys, origin, checkpoint_every_s

The environment: ``DACP_`` prefix, the section's short name, then the key (one split, so ``DACP_ETH_RPC_URL`` is
``[ethereum] rpc_url``), merged over the file's keys. Constructing ``Settings(...)`` directly reads neither file
nor environment: it is exactly what it is given (tests and embedding code rely on that).

Validation is pydantic's (lax mode; models mirrored from the dataclasses of ``rules.settings.sections`` by
``rules.settings.checked``), and so is the reading of the environment (pydantic-settings' source) - but
pydantic costs most of a cold
``dacp evaluate``'s start (issue 18), so it is imported only when needed. A value already of its field's exact
type (a TOML string for a string, an integer within bounds, ``true``/``false`` or a plain decimal number in an
environment variable, a scalar key of a section named in the environment) is taken as pydantic would take it
(``_plain``); anything else - a value to coerce, out of bounds, an unknown key, a JSON-valued variable - goes
to pydantic, which gives the result or the error. tests/cli/test_settings_paths.py holds the two paths to each
other.

The chain sections are handed to the adapters as plain mappings of the keys that were set
(``Section.given()``): adapters import nothing of ``rules`` but errors, evidence and values.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

from rules.errors import InputError
from rules.settings.sections import (CHECKS, ENGINES, FIELDS, SECTIONS, TOP, TOP_DEFAULTS, ApprovalsSettings,
                                     AuditSettings, BitcoinSettings, EthereumSettings, LedgerSettings, PricesSettings,
                                     Section, Seconds, ServiceSettings)

__all__ = ["ENGINES", "SECTIONS", "ApprovalsSettings", "AuditSettings", "BitcoinSettings", "EthereumSettings",
           "LedgerSettings", "PricesSettings", "Section", "Seconds", "ServiceSettings", "Settings", "load_settings"]


@dataclass(frozen=True, init=False)
class Settings:
    """Everything configurable, typed. ``load_settings`` reads it from the file and the environment;
    ``Settings(**values)`` checks exactly the values given (a bad one: ``InputError`` naming its place)."""

    policies: Path
    log: Path
    engine: Literal["durable_rules", "python", "checked"]
    ethereum: EthereumSettings
    bitcoin: BitcoinSettings
    prices: PricesSettings
    ledger: LedgerSettings
    approvals: ApprovalsSettings
    service: ServiceSettings
    audit: AuditSettings
    source: str

    def __init__(self, **values: Any) -> None:
        for name, table in dict(values.pop("sections", None) or {}).items():  # TRANSITION: old keyword, removed with its callers
            values[name] = table
        checked = _plain(values)
        if checked is None:
            from rules.settings.checked import by_pydantic  # here: pydantic only for what is not plain
            checked = by_pydantic(values)
        for name in FIELDS:
            object.__setattr__(self, name, checked[name])

    def section(self, name: str) -> dict[str, Any]:
        """A section's keys that were set, as a mapping (for code that reads a section generically)."""
        return getattr(self, name).given()

    def with_overrides(self, **kw: Any) -> "Settings":
        """A copy with the given values replaced (``None`` leaves a value as it is; not checked again)."""
        changes = {k: v for k, v in kw.items() if v is not None}
        if not changes:
            return self
        new = object.__new__(Settings)
        for name in FIELDS:
            object.__setattr__(new, name, changes.get(name, getattr(self, name)))
        return new


# -- the plain path: values already of their exact type, taken as pydantic would take them ------------------
_INT_TEXT = re.compile(r"0|[1-9][0-9]{0,17}")
_FLOAT_TEXT = re.compile(r"(0|[1-9][0-9]{0,8})(\.[0-9]{1,9})?")
_NO = object()  # not plain: pydantic decides


def _kind(f: dataclasses.Field) -> tuple[str, bool]:
    """(kind, optional) of a section key from its annotation (a string: ``from __future__ import annotations``)."""
    text = str(f.type)
    return text.removesuffix(" | None"), text.endswith(" | None")


def _plain_value(kind: str, optional: bool, bounds: Mapping[str, Any], v: Any) -> Any:
    if v is None:
        return None if optional else _NO
    t = type(v)
    if kind == "str":
        return v if t is str else _NO
    if kind == "engine":
        return v if t is str and v in ENGINES else _NO
    if kind == "Path":
        return v if t is type(Path()) else Path(v) if t is str and v else _NO
    if kind == "bool":
        return v if t is bool else {"true": True, "false": False}.get(v, _NO) if t is str else _NO
    if kind == "int":
        n = v if t is int else int(v) if t is str and _INT_TEXT.fullmatch(v) else None
    elif kind == "Seconds":
        n = (float(v) if t is int and abs(v) < 2**53 else v if t is float and math.isfinite(v)
             else float(v) if t is str and _FLOAT_TEXT.fullmatch(v) else None)
    elif kind == "dict[str, str]":
        return dict(v) if t is dict and all(type(k) is str and type(x) is str for k, x in v.items()) else _NO
    elif kind == "list[str]":
        return list(v) if t is list and all(type(x) is str for x in v) else _NO
    elif kind == "list[dict[str, Any]]":
        return [dict(x) for x in v] if t is list and all(type(x) is dict and all(type(k) is str for k in x)
                                                         for x in v) else _NO
    else:
        return _NO
    if n is None or ("ge" in bounds and not n >= bounds["ge"]) or ("gt" in bounds and not n > bounds["gt"]) \
            or ("le" in bounds and not n <= bounds["le"]):
        return _NO
    return n


def _plain(values: Mapping[str, Any]) -> dict[str, Any] | None:
    """The checked values when every one is plain (see the module's docstring), else None."""
    if set(values) - set(FIELDS):
        return None
    out: dict[str, Any] = {}
    for name, kind in TOP.items():
        v = _plain_value(kind, False, {}, values[name]) if name in values else TOP_DEFAULTS[name]
        if v is _NO:
            return None
        out[name] = v
    for name, (_, cls) in SECTIONS.items():
        raw = values.get(name, {})
        if type(raw) is cls:
            out[name] = raw
            continue
        if type(raw) is not dict:
            return None
        keys = {f.name: f for f in dataclasses.fields(cls)}
        if set(raw) - set(keys) or not all(type(k) is str for k in raw):
            return None
        table = {}
        for key, v in raw.items():
            kind, optional = _kind(keys[key])
            v = _plain_value(kind, optional, keys[key].metadata, v)
            if v is _NO:
                return None
            if (name, key) in CHECKS:
                try:
                    v = CHECKS[name, key](v)
                except ValueError:
                    return None
            table[key] = v
        out[name] = cls._build(table)
    return out


def _environment(env: Mapping[str, str]) -> dict[str, str]:
    """The ``DACP_`` variables that are set, names lower-case, a section's short name made its field name."""
    out: dict[str, str] = {}
    for key, value in env.items():
        if not value or not key.startswith("DACP_"):
            continue
        key = key.lower()
        for name, (short, _) in SECTIONS.items():  # the sections' short names: DACP_ETH_ -> [ethereum]
            if short != name and key.startswith(f"dacp_{short}_"):
                key = f"dacp_{name}_" + key[len(f"dacp_{short}_"):]
        out[key] = value
    return out


def _plain_environment(env: Mapping[str, str]) -> dict[str, Any] | None:
    """The settings the variables name, as pydantic-settings reads them, when each names a top-level key or a
    section's scalar key; None when one names a whole section or a list, table or unknown key of one."""
    out: dict[str, Any] = {}
    for key, value in env.items():
        name = key[len("dacp_"):]
        if name in TOP:
            if name != "source":  # not a setting: where the settings came from
                out[name] = value
            continue
        section = next((s for s in SECTIONS if name == s or name.startswith(s + "_")), None)
        if section is None:
            continue  # not a setting (DACP_CONFIG, DACP_DEBUG, DACP_CACHE_DIR)
        fields = {f.name: f for f in dataclasses.fields(SECTIONS[section][1])}
        rest = name[len(section) + 1:]
        if rest not in fields or _kind(fields[rest])[0] not in ("str", "int", "Seconds", "bool", "Path"):
            return None
        out.setdefault(section, {})[rest] = value
    return out


def load_settings(env: Mapping[str, str] | None = None, config: str | Path | None = None) -> Settings:
    """Settings from ``config`` (or ``$DACP_CONFIG``, or ``./dacp.toml`` when present) and ``env``
    (default ``os.environ``; it wins). A bad file, key or value is an ``InputError`` naming its place."""
    env = os.environ if env is None else env
    path = Path(config or env.get("DACP_CONFIG") or "dacp.toml")
    data: dict[str, Any] = {}
    source = "defaults"
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise InputError(f"not a valid TOML settings file: {e}", str(path)) from None
        source = str(path)
    elif config or env.get("DACP_CONFIG"):
        raise InputError("settings file not found", str(path))
    known = sorted(set(FIELDS) - {"source"})
    unknown = sorted(set(data) - set(known) - {"source"})
    if unknown:
        raise InputError(f"unknown settings {', '.join(unknown)} (known: {', '.join(known)})", str(path))
    variables = _environment(env)
    environment = _plain_environment(variables)
    if environment is None:
        from rules.settings.checked import read_environment  # here: pydantic only for what is not plain
        environment = read_environment(variables)
    merged = {**data, "source": source}
    for key, value in environment.items():
        if key in SECTIONS:
            merged[key] = {**dict(data.get(key) or {}), **value}
        elif key in TOP and key != "source":  # not a setting: DACP_SOURCE
            merged[key] = value
    return Settings(**merged)
