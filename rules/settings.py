"""One settings object, from a TOML file and environment variables (environment wins).

File: ``$DACP_CONFIG`` or ``./dacp.toml`` if present. Keys (all optional)::

    policies = "policies"             # DACP_POLICIES
    log = "var/dacp.sqlite"           # DACP_LOG
    engine = "durable_rules"          # DACP_ENGINE: durable_rules | python | checked
    [ethereum]
    rpc_url = "http://127.0.0.1:8545" # DACP_ETH_RPC_URL
    chain_id = 1                      # DACP_ETH_CHAIN_ID
    block = "finalized"               # DACP_ETH_BLOCK
    [bitcoin]
    rpc_url = "http://127.0.0.1:8332" # DACP_BTC_RPC_URL
    cookie_file = "~/.bitcoin/.cookie"# DACP_BTC_COOKIE_FILE
    network = "main"                  # DACP_BTC_NETWORK
    [prices]                          # read with --verify; replaces the query's price
    file = "prices.yaml"              # DACP_PRICES_FILE (static prices), and/or:
    rpc_url = "http://127.0.0.1:8545"
    chain_id = 1
    feeds = { ETH = "0x5f4e...", BTC = "0xF403..." }   # Chainlink-style aggregators
    max_age_s = 3600
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from rules.errors import InputError

ENGINES = ("durable_rules", "python", "checked")
# Further settings sections other parts own (read generically): [ledger], [approvals], [service].
SECTIONS = ("ledger", "approvals", "service")


@dataclass(frozen=True)
class Settings:
    policies: Path = Path("policies")
    log: Path = Path("var/dacp.sqlite")
    engine: str = "durable_rules"
    ethereum: Mapping[str, Any] = field(default_factory=dict)
    bitcoin: Mapping[str, Any] = field(default_factory=dict)
    prices: Mapping[str, Any] = field(default_factory=dict)
    sections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # further [sections], e.g. ledger
    source: str = "defaults"

    def section(self, name: str) -> Mapping[str, Any]:
        """A further settings section (file table ``[name]``; environment ``DACP_<NAME>_<KEY>`` wins)."""
        return self.sections.get(name, {})

    def with_overrides(self, **kw: Any) -> "Settings":
        return replace(self, **{k: v for k, v in kw.items() if v is not None})


def load_settings(env: Mapping[str, str] | None = None, config: str | Path | None = None) -> Settings:
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
    known = {"policies", "log", "engine", "ethereum", "bitcoin", "prices"} | set(SECTIONS)
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"unknown settings {', '.join(unknown)} (known: {', '.join(sorted(known))})", str(path))
    eth = dict(data.get("ethereum", {}))
    btc = dict(data.get("bitcoin", {}))
    for key, target, name in (("DACP_ETH_RPC_URL", eth, "rpc_url"), ("DACP_ETH_CHAIN_ID", eth, "chain_id"),
                              ("DACP_ETH_BLOCK", eth, "block"), ("DACP_BTC_RPC_URL", btc, "rpc_url"),
                              ("DACP_BTC_COOKIE_FILE", btc, "cookie_file"), ("DACP_BTC_NETWORK", btc, "network"),
                              ("DACP_BTC_USER", btc, "user"), ("DACP_BTC_PASSWORD", btc, "password")):
        if env.get(key):
            target[name] = env[key]
    prices = dict(data.get("prices", {}))
    if env.get("DACP_PRICES_FILE"):
        prices["file"] = env["DACP_PRICES_FILE"]
    sections: dict[str, dict[str, Any]] = {}
    for name in SECTIONS:
        sec = dict(data.get(name, {}))
        prefix = f"DACP_{name.upper()}_"
        for key, value in env.items():
            if key.startswith(prefix):
                sec[key[len(prefix):].lower()] = value
        sections[name] = sec
    engine = env.get("DACP_ENGINE") or data.get("engine") or "durable_rules"
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r} (use one of {', '.join(ENGINES)})", "engine")
    return Settings(
        policies=Path(env.get("DACP_POLICIES") or data.get("policies") or "policies"),
        log=Path(env.get("DACP_LOG") or data.get("log") or "var/dacp.sqlite"),
        engine=engine, ethereum=eth, bitcoin=btc, prices=prices, sections=sections, source=source,
    )
