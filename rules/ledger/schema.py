"""The ledger's tables (prefix ``ledger_``), created on first use in the database it shares with the
decision log. Existing databases keep working: the statements only ever create what is missing, and
the stored ``schema_version`` must match.

Numbers are stored as exact decimal TEXT (quantities as integer base units, money as decimal strings):
SQLite's INTEGER is 64-bit and wei overflow it, and no float ever touches a value.

  accounts   account -> participant, account type
  requests   idempotency key -> operation, fingerprint of the parameters, status, stored result
  custody    (asset, address) -> last verified on-chain balance (base units) and its block
  positions  (account, asset, address) -> quantity credited (base units) and its values now
  entries    the journal: every credit, withdrawal, shortfall reduction and revaluation as signed deltas
  incidents  verification failures, node outages, shortfalls, deficits, refused double counts
"""

from __future__ import annotations

SCHEMA_VERSION = "1"

COMMON = [
    """CREATE TABLE IF NOT EXISTS ledger_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS ledger_accounts (
        account TEXT PRIMARY KEY, participant TEXT NOT NULL, account_type TEXT NOT NULL, created_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS ledger_requests (
        idempotency_key TEXT PRIMARY KEY, operation TEXT NOT NULL, fingerprint TEXT NOT NULL,
        status TEXT NOT NULL, result TEXT NOT NULL, created_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS ledger_custody (
        asset TEXT NOT NULL, address TEXT NOT NULL, chain TEXT NOT NULL, balance_raw TEXT NOT NULL,
        decimals INTEGER NOT NULL, block_number BIGINT NOT NULL, block_hash TEXT NOT NULL, verified_at TEXT NOT NULL,
        PRIMARY KEY (asset, address))""",
    """CREATE TABLE IF NOT EXISTS ledger_positions (
        account TEXT NOT NULL, asset TEXT NOT NULL, address TEXT NOT NULL, participant TEXT NOT NULL,
        quantity_raw TEXT NOT NULL, decimals INTEGER NOT NULL, market_value_usd TEXT NOT NULL,
        after_haircut_usd TEXT NOT NULL, collateral_value_usd TEXT NOT NULL, price_usd TEXT NOT NULL,
        haircut TEXT, decision_id TEXT NOT NULL, bundle_hash TEXT NOT NULL, facts TEXT NOT NULL,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
        PRIMARY KEY (account, asset, address))""",
    "CREATE INDEX IF NOT EXISTS ledger_positions_custody ON ledger_positions (asset, address)",
]
SQLITE = [
    """CREATE TABLE IF NOT EXISTS ledger_entries (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, entry_id TEXT NOT NULL UNIQUE, at TEXT NOT NULL, kind TEXT NOT NULL,
        account TEXT NOT NULL, participant TEXT NOT NULL, asset TEXT NOT NULL, address TEXT NOT NULL,
        quantity_raw TEXT NOT NULL, decimals INTEGER NOT NULL, market_value_usd TEXT NOT NULL,
        after_haircut_usd TEXT NOT NULL, collateral_value_usd TEXT NOT NULL, price_usd TEXT,
        decision_id TEXT, idempotency_key TEXT, reason TEXT, evidence TEXT)""",
    """CREATE TABLE IF NOT EXISTS ledger_incidents (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, incident_id TEXT NOT NULL UNIQUE, at TEXT NOT NULL, kind TEXT NOT NULL,
        severity TEXT NOT NULL, account TEXT, asset TEXT, address TEXT, message TEXT NOT NULL, details TEXT NOT NULL)""",
]
POSTGRES = [s.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY") for s in SQLITE]
INDEXES = [
    "CREATE INDEX IF NOT EXISTS ledger_entries_at ON ledger_entries (at)",
    "CREATE INDEX IF NOT EXISTS ledger_incidents_at ON ledger_incidents (at)",
]
