"""The settings' sections and top-level keys as frozen dataclasses: names, types, defaults, bounds and the two
checks beyond types (``CHECKS``). ``rules.settings`` reads them; ``rules.settings.checked`` mirrors them as
pydantic models for what is not plain."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

ENGINES = ("durable_rules", "python", "checked")
Seconds = float  # timeouts and intervals: the only floats in settings (never money)


def _key(default: Any = None, *, factory: Callable[[], Any] | None = None, **bounds: Any) -> Any:
    """A settings key with its default and bounds (``ge``, ``gt``, ``le``: pydantic's ``Field`` arguments)."""
    if factory is not None:
        return field(default_factory=factory, metadata=bounds)
    return field(default=default, metadata=bounds)


@dataclass(frozen=True)
class Section:
    """A settings table: unknown keys are errors; values are coerced from the TOML or environment text."""

    def __post_init__(self) -> None:  # built directly: the keys that differ from their defaults count as set
        given = frozenset(f.name for f in dataclasses.fields(self) if getattr(self, f.name) != default(f))
        object.__setattr__(self, "_given", given)

    @classmethod
    def _build(cls, values: Mapping[str, Any]) -> "Section":
        obj = cls.__new__(cls)
        object.__setattr__(obj, "_given", frozenset(values))
        for f in dataclasses.fields(cls):
            object.__setattr__(obj, f.name, values[f.name] if f.name in values else default(f))
        return obj

    def _values(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def given(self) -> dict[str, Any]:
        """The keys that were set (file or environment), typed: what an adapter's constructor reads."""
        return {k: v for k, v in self._values().items() if k in self.__dict__["_given"]}


def default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _quorum(v: int) -> int:
    if v < 1:
        raise ValueError("must be at least 1 (to switch approvals off set required = false)")
    return v


def _pin(v: str | None) -> str | None:
    if v is not None and not (len(v) == 64 and all(c in "0123456789abcdef" for c in v.lower())):
        raise ValueError("must be a sha256 in hex (64 characters)")
    return v.lower() if v else None


CHECKS: dict[tuple[str, str], Callable[[Any], Any]] = {("approvals", "quorum"): _quorum,
                                                       ("approvals", "approvers_sha256"): _pin}


@dataclass(frozen=True)
class EthereumSettings(Section):
    rpc_url: str | None = None
    chain_id: int | None = _key(None, ge=1)
    block: str = "finalized"
    max_block_age_s: Seconds | None = _key(None, gt=0)
    retries: int | None = _key(None, ge=0, le=100)
    request_timeout_s: Seconds | None = _key(None, gt=0)
    backoff_s: Seconds | None = _key(None, ge=0)
    max_total_s: Seconds | None = _key(None, gt=0)
    max_reorg_retries: int | None = _key(None, ge=0, le=100)
    recheck_timeout_s: Seconds | None = _key(None, gt=0, le=600)  # a credit's read again, locks held: one attempt


@dataclass(frozen=True)
class BitcoinSettings(Section):
    rpc_url: str | None = None
    cookie_file: str | None = None
    user: str | None = None
    password: str | None = None
    network: str | None = None
    min_confirmations: int | None = _key(None, ge=0)
    timeout_s: Seconds | None = _key(None, gt=0)
    retries: int | None = _key(None, ge=0, le=100)
    backoff_s: Seconds | None = _key(None, ge=0)
    max_total_s: Seconds | None = _key(None, gt=0)
    scan_timeout_s: Seconds | None = _key(None, gt=0)
    race_retries: int | None = _key(None, ge=0, le=100)
    scan_busy_retries: int | None = _key(None, ge=0, le=100)
    busy_backoff_s: Seconds | None = _key(None, ge=0)
    recheck_timeout_s: Seconds | None = _key(None, gt=0, le=600)  # a credit's read again, locks held: one attempt
    allow_test_networks: bool = False  # test stand-ins (litecoin-regtest) only on this opt-in: docs/bitcoin.md


@dataclass(frozen=True)
class PricesSettings(Section):
    file: str | None = None
    rpc_url: str | None = None
    chain_id: int | None = _key(None, ge=1)
    feeds: dict[str, str] = _key(factory=dict)
    max_age_s: Seconds | None = _key(None, gt=0)
    request_timeout_s: Seconds | None = _key(None, gt=0)
    retries: int | None = _key(None, ge=0, le=100)
    backoff_s: Seconds | None = _key(None, ge=0)
    max_total_s: Seconds | None = _key(None, gt=0)


@dataclass(frozen=True)
class LedgerSettings(Section):
    url: str | None = None
    # How far a credit's as_of may lie from the ledger's clock, either way (seconds): membership, eligibility
    # and the price are judged at as_of, so a back-dated as_of would judge them at a time that is gone.
    as_of_window_s: Seconds = _key(300.0, ge=0, le=86400)


@dataclass(frozen=True)
class ApprovalsSettings(Section):
    required: bool = True
    approvers: Path | None = None
    signatures: Path | None = None
    quorum: int = 2  # CHECKS: at least 1
    approvers_sha256: str | None = None  # CHECKS: a sha256 in hex, kept lower-case
    require_publication: bool = False
    # The approvers file is the trust root: inside the policy directory, whoever writes policies could list
    # their own keys. evaluate, credit and serve refuse that unless this demo switch says otherwise (the
    # repository's dacp.toml sets it for the shipped DEMO keys; a real deployment never does).
    demo_keys_in_policy_dir: bool = False


@dataclass(frozen=True)
class ServiceSettings(Section):
    """``[service]``: the address, the request limits, and uvicorn's bounds (handed to ``uvicorn.run``): an idle
    keep-alive connection is closed after ``timeout_keep_alive_s``; beyond ``limit_concurrency`` connections at
    once new requests get 503; ``backlog`` bounds the accept queue; a request line and headers larger than
    ``max_incomplete_event_bytes`` are refused; on SIGTERM open connections get ``graceful_shutdown_s``. A request's
    line and headers must arrive within ``header_timeout_s`` of its first byte (or of the connection), its body
    within ``body_timeout_s`` (rules.http.deadlines, rules.http.reading)."""

    host: str = "127.0.0.1"
    port: int = _key(8080, ge=1, le=65535)
    max_body_bytes: int = _key(4_000_000, ge=1024, le=1_000_000_000)
    max_batch: int = _key(1000, ge=1, le=1_000_000)
    verify: bool = False
    tokens: list[dict[str, Any]] = _key(factory=list)  # checked by the HTTP door (rules.http)
    tokens_file: Path | None = None
    timeout_keep_alive_s: Seconds = _key(5.0, gt=0, le=600)  # an idle keep-alive connection is closed
    limit_concurrency: int = _key(1000, ge=1, le=1_000_000)  # more at once: 503 Service Unavailable
    backlog: int = _key(2048, ge=1, le=65535)  # the listen socket's accept queue
    max_incomplete_event_bytes: int = _key(16384, ge=1024, le=1_048_576)  # request line + headers: 400 beyond
    http: Literal["httptools", "h11"] = "httptools"  # uvicorn's HTTP/1.1 parser: llhttp (C) or h11 (pure Python)
    loop: Literal["uvloop", "asyncio"] = "uvloop"  # the event loop: uvloop (libuv) or the standard library's
    graceful_shutdown_s: Seconds = _key(10.0, gt=0, le=600)  # on SIGTERM, then open connections are closed
    header_timeout_s: Seconds = _key(10.0, gt=0, le=600)  # request line + headers must arrive within this (slow loris)
    body_timeout_s: Seconds = _key(30.0, gt=0, le=3600)  # the whole body must arrive within this: 408 request_timeout
    # credits read their chain on its own bounded pool, never on the decision worker (rules.http.service)
    ethereum_workers: int = _key(4, ge=1, le=256)
    bitcoin_workers: int = _key(1, ge=1, le=64)  # a node runs one scantxoutset at a time


@dataclass(frozen=True)
class AuditSettings(Section):
    signing_key_file: Path | None = None  # the operator's Ed25519 key that signs checkpoints (dacp audit keygen)
    public_keys: list[str] = _key(factory=list)  # more verifier keys trusted for checkpoints
    origin: str | None = None  # a new log's name in its checkpoints (default: a random one, kept in the log)
    checkpoint_every_s: Seconds | None = _key(None, gt=0)  # dacp serve signs a checkpoint this often ...
    checkpoint_every_entries: int | None = _key(None, ge=1)  # ... or after this many new entries


SECTIONS: dict[str, tuple[str, type[Section]]] = {  # field -> (environment short name, class)
    "ethereum": ("eth", EthereumSettings), "bitcoin": ("btc", BitcoinSettings), "prices": ("prices", PricesSettings),
    "ledger": ("ledger", LedgerSettings), "approvals": ("approvals", ApprovalsSettings),
    "service": ("service", ServiceSettings), "audit": ("audit", AuditSettings),
}
TOP = {"policies": "Path", "log": "Path", "engine": "engine", "source": "str"}  # the top-level keys' kinds
TOP_DEFAULTS: dict[str, Any] = {"policies": Path("policies"), "log": Path("var/dacp.sqlite"), "engine": "durable_rules",
                                "source": "defaults"}  # where the settings came from: the file's path, or "defaults"
FIELDS = (*TOP, *SECTIONS)
