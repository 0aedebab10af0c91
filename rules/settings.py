"""One typed settings tree, from a TOML file and environment variables (environment wins).

File: ``$DACP_CONFIG`` or ``./dacp.toml`` if present. Every key is optional; each section is a typed model
below, and a key that is unknown or of the wrong type is refused with its place (``[service] port``)::

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

Reading is pydantic-settings: a TOML source and an environment source (``DACP_`` prefix, the section's short
name, then the key: one split, so ``DACP_ETH_RPC_URL`` is ``[ethereum] rpc_url``), merged with the environment
on top, then validated into ``Settings``. Constructing ``Settings(...)`` directly reads neither file nor
environment: it is exactly what it is given (tests and embedding code rely on that).

The chain sections are handed to the adapters as plain mappings of the keys that were set
(``Section.given()``): adapters import nothing of ``rules`` but errors, evidence and values.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from rules.errors import InputError

ENGINES = ("durable_rules", "python", "checked")
Seconds = float  # timeouts and intervals: the only floats in settings (never money)


class Section(BaseModel):
    """A settings table: unknown keys are errors; values are coerced from the TOML or environment text."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def given(self) -> dict[str, Any]:
        """The keys that were set (file or environment), typed: what an adapter's constructor reads."""
        return self.model_dump(exclude_unset=True)


class EthereumSettings(Section):
    rpc_url: str | None = None
    chain_id: int | None = Field(None, ge=1)
    block: str = "finalized"
    max_block_age_s: Seconds | None = Field(None, gt=0)
    retries: int | None = Field(None, ge=0, le=100)
    request_timeout_s: Seconds | None = Field(None, gt=0)
    backoff_s: Seconds | None = Field(None, ge=0)
    max_total_s: Seconds | None = Field(None, gt=0)
    max_reorg_retries: int | None = Field(None, ge=0, le=100)
    recheck_timeout_s: Seconds | None = Field(None, gt=0, le=600)  # a credit's read again, locks held: one attempt


class BitcoinSettings(Section):
    rpc_url: str | None = None
    cookie_file: str | None = None
    user: str | None = None
    password: str | None = None
    network: str | None = None
    min_confirmations: int | None = Field(None, ge=0)
    timeout_s: Seconds | None = Field(None, gt=0)
    retries: int | None = Field(None, ge=0, le=100)
    backoff_s: Seconds | None = Field(None, ge=0)
    max_total_s: Seconds | None = Field(None, gt=0)
    scan_timeout_s: Seconds | None = Field(None, gt=0)
    race_retries: int | None = Field(None, ge=0, le=100)
    scan_busy_retries: int | None = Field(None, ge=0, le=100)
    busy_backoff_s: Seconds | None = Field(None, ge=0)
    recheck_timeout_s: Seconds | None = Field(None, gt=0, le=600)  # a credit's read again, locks held: one attempt
    allow_test_networks: bool = False  # test stand-ins (litecoin-regtest) only on this opt-in: docs/bitcoin.md


class PricesSettings(Section):
    file: str | None = None
    rpc_url: str | None = None
    chain_id: int | None = Field(None, ge=1)
    feeds: dict[str, str] = Field(default_factory=dict)
    max_age_s: Seconds | None = Field(None, gt=0)
    request_timeout_s: Seconds | None = Field(None, gt=0)
    retries: int | None = Field(None, ge=0, le=100)
    backoff_s: Seconds | None = Field(None, ge=0)
    max_total_s: Seconds | None = Field(None, gt=0)


class LedgerSettings(Section):
    url: str | None = None
    # How far a credit's as_of may lie from the ledger's clock, either way (seconds): membership, eligibility
    # and the price are judged at as_of, so a back-dated as_of would judge them at a time that is gone.
    as_of_window_s: float = Field(default=300.0, ge=0, le=86400)


class ApprovalsSettings(Section):
    required: bool = True
    approvers: Path | None = None
    signatures: Path | None = None
    quorum: int = 2
    approvers_sha256: str | None = None
    require_publication: bool = False
    # The approvers file is the trust root: inside the policy directory, whoever writes policies could list
    # their own keys. evaluate, credit and serve refuse that unless this demo switch says otherwise (the
    # repository's dacp.toml sets it for the shipped DEMO keys; a real deployment never does).
    demo_keys_in_policy_dir: bool = False

    @field_validator("quorum")
    @classmethod
    def _quorum(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be at least 1 (to switch approvals off set required = false)")
        return v

    @field_validator("approvers_sha256")
    @classmethod
    def _pin(cls, v: str | None) -> str | None:
        if v is not None and not (len(v) == 64 and all(c in "0123456789abcdef" for c in v.lower())):
            raise ValueError("must be a sha256 in hex (64 characters)")
        return v.lower() if v else None


class ServiceSettings(Section):
    """``[service]``: the address, the request limits, and uvicorn's bounds (handed to ``uvicorn.run``): an idle
    keep-alive connection is closed after ``timeout_keep_alive_s``; beyond ``limit_concurrency`` connections at
    once new requests get 503; ``backlog`` bounds the accept queue; a request line and headers larger than
    ``max_incomplete_event_bytes`` are refused; on SIGTERM open connections get ``graceful_shutdown_s``. A request's
    line and headers must arrive within ``header_timeout_s`` of its first byte (or of the connection), its body
    within ``body_timeout_s`` (rules.http.deadlines, rules.http.reading)."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    max_body_bytes: int = Field(4_000_000, ge=1024, le=1_000_000_000)
    max_batch: int = Field(1000, ge=1, le=1_000_000)
    verify: bool = False
    tokens: list[dict[str, Any]] = Field(default_factory=list)  # checked by the HTTP door (rules.http)
    tokens_file: Path | None = None
    timeout_keep_alive_s: Seconds = Field(5.0, gt=0, le=600)  # an idle keep-alive connection is closed
    limit_concurrency: int = Field(1000, ge=1, le=1_000_000)  # more at once: 503 Service Unavailable
    backlog: int = Field(2048, ge=1, le=65535)  # the listen socket's accept queue
    max_incomplete_event_bytes: int = Field(16384, ge=1024, le=1_048_576)  # request line + headers (h11)
    graceful_shutdown_s: Seconds = Field(10.0, gt=0, le=600)  # on SIGTERM, then open connections are closed
    header_timeout_s: Seconds = Field(10.0, gt=0, le=600)  # request line + headers must arrive within this (slow loris)
    body_timeout_s: Seconds = Field(30.0, gt=0, le=3600)  # the whole body must arrive within this: 408 request_timeout
    # credits read their chain on its own bounded pool, never on the decision worker (rules.http.service)
    ethereum_workers: int = Field(4, ge=1, le=256)
    bitcoin_workers: int = Field(1, ge=1, le=64)  # a node runs one scantxoutset at a time


class AuditSettings(Section):
    signing_key_file: Path | None = None  # the operator's Ed25519 key that signs checkpoints (dacp audit keygen)
    public_keys: list[str] = Field(default_factory=list)  # more verifier keys trusted for checkpoints
    origin: str | None = None  # a new log's name in its checkpoints (default: a random one, kept in the log)
    checkpoint_every_s: Seconds | None = Field(None, gt=0)  # dacp serve signs a checkpoint this often ...
    checkpoint_every_entries: int | None = Field(None, ge=1)  # ... or after this many new entries


SECTIONS: dict[str, tuple[str, type[Section]]] = {  # field -> (environment short name, model)
    "ethereum": ("eth", EthereumSettings), "bitcoin": ("btc", BitcoinSettings), "prices": ("prices", PricesSettings),
    "ledger": ("ledger", LedgerSettings), "approvals": ("approvals", ApprovalsSettings),
    "service": ("service", ServiceSettings), "audit": ("audit", AuditSettings),
}


class Settings(BaseSettings):
    """Everything configurable, typed. ``load_settings`` reads it from the file and the environment."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid")

    policies: Path = Path("policies")
    log: Path = Path("var/dacp.sqlite")
    engine: Literal["durable_rules", "python", "checked"] = "durable_rules"
    ethereum: EthereumSettings = Field(default_factory=EthereumSettings)
    bitcoin: BitcoinSettings = Field(default_factory=BitcoinSettings)
    prices: PricesSettings = Field(default_factory=PricesSettings)
    ledger: LedgerSettings = Field(default_factory=LedgerSettings)
    approvals: ApprovalsSettings = Field(default_factory=ApprovalsSettings)
    service: ServiceSettings = Field(default_factory=ServiceSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    source: str = "defaults"  # where the settings came from: the file's path, or "defaults"

    def __init__(self, **values: Any) -> None:
        for name, table in dict(values.pop("sections", None) or {}).items():  # TRANSITION: old keyword, removed with its callers
            values[name] = table
        try:
            super().__init__(**values)
        except ValidationError as e:
            raise _input_error(e, values.get("source", "settings")) from None

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   **_: PydanticBaseSettingsSource) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)  # plain construction reads nothing else: load_settings() adds file and environment

    def section(self, name: str) -> dict[str, Any]:
        """A section's keys that were set, as a mapping (for code that reads a section generically)."""
        return getattr(self, name).given()

    def with_overrides(self, **kw: Any) -> "Settings":
        """A copy with the given values replaced (``None`` leaves a value as it is)."""
        changes = {k: v for k, v in kw.items() if v is not None}
        return self.model_copy(update=changes) if changes else self


class _Environment(EnvSettingsSource):
    """``DACP_<NAME>`` for top-level keys, ``DACP_<SECTION>_<KEY>`` for section keys, from a given mapping."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]):
        self._given_env = env
        super().__init__(settings_cls, case_sensitive=False, env_prefix="DACP_", env_nested_delimiter="_",
                         env_nested_max_split=1)

    def _load_env_vars(self) -> Mapping[str, str | None]:  # the environment to read: the one given, not os.environ
        out: dict[str, str | None] = {}
        for key, value in self._given_env.items():
            key = key.lower()
            for field, (short, _) in SECTIONS.items():  # the sections' short names: DACP_ETH_ -> [ethereum]
                if short != field and key.startswith(f"dacp_{short}_"):
                    key = f"dacp_{field}_" + key[len(f"dacp_{short}_"):]
            out[key] = value
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
    unknown = sorted(set(data) - set(Settings.model_fields) - {"source"})
    if unknown:
        known = sorted(set(Settings.model_fields) - {"source"})
        raise InputError(f"unknown settings {', '.join(unknown)} (known: {', '.join(known)})", str(path))
    environment = _Environment(Settings, {k: v for k, v in env.items() if v and k.startswith("DACP_")})()
    merged = {**data, "source": source}
    for key, value in environment.items():
        field = _field_for(key)
        if field in SECTIONS:
            merged[field] = {**dict(data.get(field) or {}), **value}
        elif field is not None:
            merged[field] = value
    return Settings(**merged)


def _field_for(key: str) -> str | None:
    """The Settings field an environment source key names; None: not a setting (``DACP_CONFIG``, ``DACP_DEBUG``)."""
    return key if key in Settings.model_fields and key != "source" else None


def _input_error(e: ValidationError, source: str) -> InputError:
    """A pydantic error in our words: where (``[section] key``) and what, the first problem first."""
    problems = []
    for err in e.errors():
        loc = [str(x) for x in err.get("loc", ())]
        section = next((f for f, (short, _) in SECTIONS.items() if loc and loc[0] in (f, short)), None)
        where = f"[{section}] {'.'.join(loc[1:])}" if section and len(loc) > 1 else (".".join(loc) or source)
        problems.append((where, _message(err, section)))
    where, message = problems[0]
    if len(problems) > 1:
        message += "; also " + "; ".join(f"{w}: {m}" for w, m in problems[1:])
    return InputError(message, where)


def _message(err: Mapping[str, Any], section: str | None) -> str:
    kind, value = err.get("type", ""), err.get("input")
    if kind == "extra_forbidden":
        model = SECTIONS[section][1] if section else Settings
        known = sorted(set(model.model_fields) - {"source"})
        return f"unknown settings {err['loc'][-1]} (known: {', '.join(known)})"
    if kind.startswith("int_"):
        return f"must be a whole number, not {value!r}"
    if kind.startswith("bool_"):
        return f"must be true or false, not {value!r}"
    if kind == "literal_error" and err.get("loc") == ("engine",):
        return f"unknown engine {value!r} (use one of {', '.join(ENGINES)})"
    if kind == "value_error":
        return str(err.get("ctx", {}).get("error", err.get("msg", "invalid")))
    return f"{err.get('msg', 'invalid')} (got {value!r})"
