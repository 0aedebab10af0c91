"""The margin room's tables (prefix ``margin_``), in the ledger's database, made on first use.

Money is exact decimal TEXT, never a float; days are ``YYYY-MM-DD``, times RFC 3339 UTC text.

  requirements  (account, dco, business_day) -> requirement (as the DCO gave it, maybe net of its own
                offsets), the import that stored it; a later import of the same key replaces it
  collateral    (account, holding) -> collateral held off the ledger: cash (amount) or a US Treasury
                (CUSIP, face value, price in percent of face, maturity); a later import replaces it
  cross_profiles  account -> its cross-margin profile (agreement, designation, futures and cash Treasury
                positions: ``rules.engine.cross_margin``); a later import replaces it
  calls         margin calls and where they stand (open, met, withdrawn; escalation level)
  events        the margin journal: every import and every call step, append-only (triggers refuse
                UPDATE and DELETE, and TRUNCATE on PostgreSQL), beside the log's leaf of the same id
"""

from __future__ import annotations

SCHEMA_VERSION = "1"
META_KEY = "margin_schema_version"  # in ledger_meta

COMMON = [
    """CREATE TABLE IF NOT EXISTS margin_requirements (
        account TEXT NOT NULL, dco TEXT NOT NULL, business_day TEXT NOT NULL, requirement_usd TEXT NOT NULL,
        net_of_offsets TEXT NOT NULL, cross_margin_reduction_usd TEXT NOT NULL, import_id TEXT NOT NULL,
        imported_at TEXT NOT NULL,
        PRIMARY KEY (account, dco, business_day))""",
    """CREATE TABLE IF NOT EXISTS margin_collateral (
        account TEXT NOT NULL, holding TEXT NOT NULL, class TEXT NOT NULL, amount_usd TEXT,
        face_value_usd TEXT, price_pct TEXT, maturity TEXT, cusip TEXT, as_of TEXT NOT NULL,
        import_id TEXT NOT NULL, PRIMARY KEY (account, holding))""",
    """CREATE TABLE IF NOT EXISTS margin_cross_profiles (
        account TEXT PRIMARY KEY, profile TEXT NOT NULL, import_id TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS margin_calls (
        call_id TEXT PRIMARY KEY, account TEXT NOT NULL, business_day TEXT NOT NULL, amount_usd TEXT NOT NULL,
        deficit_usd TEXT NOT NULL, issued_at TEXT NOT NULL, deadline TEXT NOT NULL, status TEXT NOT NULL,
        level TEXT, closed_at TEXT)""",
    "CREATE INDEX IF NOT EXISTS margin_calls_account ON margin_calls (account, status)",
]
SQLITE = ["""CREATE TABLE IF NOT EXISTS margin_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE, at TEXT NOT NULL, kind TEXT NOT NULL,
        account TEXT, detail TEXT NOT NULL)"""]
POSTGRES = [s.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY") for s in SQLITE]
APPEND_ONLY = ("margin_events",)
SQLITE_TRIGGERS = [f"""CREATE TRIGGER IF NOT EXISTS {t}_no_{op.lower()} BEFORE {op} ON {t}
    BEGIN SELECT RAISE(ABORT, '{t} is append-only'); END""" for t in APPEND_ONLY for op in ("UPDATE", "DELETE")]
# ledger_refuse() is the ledger's trigger function (rules.ledger.schema), made before these by the ledger's store
PG_TRIGGERS = [s for t in APPEND_ONLY for s in (
    f"""CREATE OR REPLACE TRIGGER {t}_no_change BEFORE UPDATE OR DELETE ON {t}
        FOR EACH ROW EXECUTE FUNCTION ledger_refuse('{t} is append-only')""",
    f"""CREATE OR REPLACE TRIGGER {t}_no_truncate BEFORE TRUNCATE ON {t}
        FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse('{t} is append-only')""")]
