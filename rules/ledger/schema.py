"""The ledger's tables (prefix ``ledger_``), created on first use in the database it shares with the
decision log. Existing databases keep working: the statements only ever create what is missing, a
ledger of an earlier ``schema_version`` is brought up to this one by ``MIGRATIONS`` when it opens (in the
same transaction), and a version this code does not know is refused.

Numbers are stored as exact decimal TEXT (quantities as integer base units, money as decimal strings):
SQLite's INTEGER is 64-bit and wei overflow it, and no float ever touches a value.

  accounts   account -> participant, account type, customer (None: not named; fixed by the first credit naming it)
  requests   idempotency key -> operation, fingerprint of the parameters, status, stored result
  custody    (asset, address) -> last verified on-chain balance (base units) and its block
  positions  (account, asset, address) -> quantity credited (base units) and its values now
  entries    the journal: every credit, withdrawal, shortfall reduction and revaluation as signed deltas;
             append-only (triggers refuse UPDATE and DELETE, and TRUNCATE on PostgreSQL)
  incidents  verification failures, node outages, shortfalls, deficits, refused double counts
"""

from __future__ import annotations

SCHEMA_VERSION = "2"

COMMON = [
    """CREATE TABLE IF NOT EXISTS ledger_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS ledger_accounts (
        account TEXT PRIMARY KEY, participant TEXT NOT NULL, account_type TEXT NOT NULL, created_at TEXT NOT NULL,
        customer TEXT)""",
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
# The journal is append-only, as the log's own tables are (``rules.audit.store``). Positions, custody and
# accounts are state that changes; what protects them is that they are recomputed from the log's leaves
# (``rules.ledger.projection``), and so is the journal: a trigger keeps honest mistakes out, the tree proves.
APPEND_ONLY = ("ledger_entries",)
SQLITE_TRIGGERS = [f"""CREATE TRIGGER IF NOT EXISTS {t}_no_{op.lower()} BEFORE {op} ON {t}
    BEGIN SELECT RAISE(ABORT, '{t} is append-only'); END""" for t in APPEND_ONLY for op in ("UPDATE", "DELETE")]
PG_TRIGGER_NAMES = [f"{t}_{what}" for t in APPEND_ONLY for what in ("no_change", "no_truncate")]
PG_TRIGGERS = [
    """CREATE OR REPLACE FUNCTION ledger_refuse() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN RAISE EXCEPTION '%', TG_ARGV[0]; END $$""",
] + [s for t in APPEND_ONLY for s in (
    f"""CREATE OR REPLACE TRIGGER {t}_no_change BEFORE UPDATE OR DELETE ON {t}
        FOR EACH ROW EXECUTE FUNCTION ledger_refuse('{t} is append-only')""",
    f"""CREATE OR REPLACE TRIGGER {t}_no_truncate BEFORE TRUNCATE ON {t}
        FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse('{t} is append-only')""")]
# version -> what brings a ledger of that version to the next (each step runs once, then the version moves on).
# 1 -> 2: the account's customer (``ledger_accounts.customer``, NULL for the accounts opened before it).
MIGRATIONS: dict[str, tuple[str, list[str]]] = {
    "1": ("2", ["ALTER TABLE ledger_accounts ADD COLUMN customer TEXT"]),
}
LATE_INDEXES = [  # on columns a migration may add: made after the migrations ran
    "CREATE INDEX IF NOT EXISTS ledger_accounts_customer ON ledger_accounts (customer)",
]
INDEXES = [
    "CREATE INDEX IF NOT EXISTS ledger_entries_at ON ledger_entries (at)",
    "CREATE INDEX IF NOT EXISTS ledger_incidents_at ON ledger_incidents (at)",
]
