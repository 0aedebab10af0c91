"""The collateral ledger's store: its records in SQL, on SQLite (embedded default) or PostgreSQL
(several replicas), through the generic ``adapters.storage.sql.Database``.

The ledger lives in the SAME database as the decision log (``rules.audit.log``), so a credit and its
decision-log entry commit in one transaction. All SQL of the ledger is here (tables: ``rules.ledger.schema``);
the workflow (verify -> decide -> credit, idempotency, the custody invariant) is ``rules.ledger.book``.
Sums are made in Python with ``Decimal``/``int``, never in SQL.

Locking (see ``adapters.storage.sql``): writers call ``transaction(locks)`` with ``account:<id>`` and
``custody:<asset>:<address>`` names; on PostgreSQL these are advisory locks taken in sorted order
(the decision-log lock is always taken last), on SQLite the whole database is locked.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, ContextManager, Iterator, Sequence

from pathlib import Path

from adapters.storage.sql import Database, is_postgres, open_database
from rules.errors import InputError, StorageError
from rules.ledger import schema
from rules.ledger.records import Account, CustodyState, Incident, JournalEntry, Position, StoredRequest
from rules.values import decimal_text


def _require_existing(target: Any) -> None:
    """A SQLite ledger must be a file that exists (opening a missing one would create it)."""
    text = str(target)
    if is_postgres(text):
        return
    path = Path(text[len("sqlite:///"):] if text.startswith("sqlite:///") else text)
    if not path.is_file():
        raise InputError(f"no ledger at {path}: nothing has been credited there yet", "ledger")


def _d(text: Any) -> Decimal:
    return Decimal(str(text))


class LedgerStore:
    """The ledger's tables in one database (shared with the decision log)."""

    def __init__(self, target: str | Any = None, *, database: Database | None = None, timeout_s: float = 60.0,
                 create: bool = True):
        """``create=False`` (the read-only commands): a database without a ledger is an ``InputError``,
        and nothing is made - no SQLite file, no table."""
        if not create and database is None:
            _require_existing(target)
        self.db = database or open_database(target, timeout_s=timeout_s)
        self._owns_db = database is None
        self.where = self.db.where
        if not create and self.db.kind == "postgresql":
            if self.db.execute("SELECT to_regclass('ledger_meta')").fetchone()[0] is None:
                self.close()
                raise InputError(f"no ledger at {self.where}: nothing has been credited there yet", "ledger")
        self._init()

    def _init(self) -> None:
        with self.db.transaction(["dacp.schema"]):
            if self.db.kind == "postgresql":
                exists = self.db.execute("SELECT to_regclass('ledger_incidents')").fetchone()[0]
                if exists is None:
                    self.db.script(schema.COMMON + schema.POSTGRES + schema.INDEXES)
                if len(self._pg_triggers()) < len(schema.PG_TRIGGER_NAMES):  # a ledger of an earlier version
                    self.db.script(schema.PG_TRIGGERS)
            else:
                self.db.script(schema.COMMON + schema.SQLITE + schema.INDEXES + schema.SQLITE_TRIGGERS)
            row = self.db.execute("SELECT value FROM ledger_meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                self.db.execute("INSERT INTO ledger_meta VALUES ('schema_version', ?)", (schema.SCHEMA_VERSION,))
            else:
                self._migrate(str(row[0]))
            self.db.script(schema.LATE_INDEXES)

    def _migrate(self, version: str) -> None:
        """Bring a ledger of an earlier schema version up to this one (``schema.MIGRATIONS``), step by step,
        in the opening transaction; a version this code does not know is refused."""
        while version != schema.SCHEMA_VERSION:
            if version not in schema.MIGRATIONS:
                raise StorageError(f"{self.where}: ledger schema version {version}, expected {schema.SCHEMA_VERSION}")
            version, steps = schema.MIGRATIONS[version]
            if "customer" not in self._columns("ledger_accounts"):  # the one column the steps so far add
                self.db.script(steps)
            self.db.execute("UPDATE ledger_meta SET value = ? WHERE key = 'schema_version'", (version,))

    def _columns(self, table: str) -> set[str]:
        if self.db.kind == "postgresql":
            rows = self.db.execute("SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                                   "AND table_schema = current_schema()", (table,)).fetchall()
            return {str(r[0]) for r in rows}
        return {str(r[1]) for r in self.db.execute(f"PRAGMA table_info({table})").fetchall()}

    def _pg_triggers(self) -> dict[str, str]:
        """The journal's append-only triggers on PostgreSQL: name -> pg_trigger.tgenabled ('D' disabled)."""
        rows = self.db.execute("SELECT tgname, tgenabled FROM pg_trigger WHERE tgname = ANY(?)",
                               (list(schema.PG_TRIGGER_NAMES),)).fetchall()
        return {r[0]: str(r[1]) for r in rows}

    def append_only_problems(self) -> list[str]:
        """The journal's append-only triggers that are missing or disabled (they are made when the store opens)."""
        if self.db.kind == "postgresql":
            found = self._pg_triggers()
            return [f"ledger_entries: its append-only trigger {name} is "
                    f"{'missing' if name not in found else 'disabled'}"
                    for name in schema.PG_TRIGGER_NAMES if found.get(name, "D") == "D"]
        names = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' "
                                               "AND tbl_name = 'ledger_entries'").fetchall()}
        return [f"ledger_entries: its append-only trigger {t} is missing"
                for t in (f"{x}_no_{op}" for x in schema.APPEND_ONLY for op in ("update", "delete")) if t not in names]

    def close(self) -> None:
        if self._owns_db:
            self.db.close()

    def transaction(self, locks: Sequence[str] = ()) -> ContextManager[Database]:
        return self.db.transaction(locks)

    # -- accounts ----------------------------------------------------------------------------------
    _ACC = "account, participant, account_type, created_at, customer"

    def account(self, account: str) -> Account | None:
        r = self.db.execute(f"SELECT {self._ACC} FROM ledger_accounts WHERE account = ?", (account,)).fetchone()
        return Account(*r) if r else None

    def add_account(self, a: Account) -> None:
        self.db.execute(f"INSERT INTO ledger_accounts ({self._ACC}) VALUES (?, ?, ?, ?, ?)",
                        (a.account, a.participant, a.account_type, a.created_at, a.customer))

    def set_customer(self, account: str, customer: str) -> None:
        """Name the customer of an account opened without one (``rules.ledger.customers``: once, never changed)."""
        self.db.execute("UPDATE ledger_accounts SET customer = ? WHERE account = ? AND customer IS NULL",
                        (customer, account))

    def accounts(self) -> list[Account]:
        return [Account(*r) for r in self.db.execute(
            f"SELECT {self._ACC} FROM ledger_accounts ORDER BY account").fetchall()]

    def customers(self) -> dict[str, str]:
        """account -> customer, of the accounts whose customer is named."""
        return {str(r[0]): str(r[1]) for r in self.db.execute(
            "SELECT account, customer FROM ledger_accounts WHERE customer IS NOT NULL").fetchall()}

    # -- idempotency -------------------------------------------------------------------------------
    def request(self, key: str) -> StoredRequest | None:
        r = self.db.execute("SELECT idempotency_key, operation, fingerprint, status, result, created_at "
                            "FROM ledger_requests WHERE idempotency_key = ?", (key,)).fetchone()
        return StoredRequest(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5]) if r else None

    def add_request(self, r: StoredRequest) -> None:
        self.db.execute("INSERT INTO ledger_requests VALUES (?, ?, ?, ?, ?, ?)",
                        (r.idempotency_key, r.operation, r.fingerprint, r.status,
                         json.dumps(r.result), r.created_at))  # key order kept: a replay prints the same

    def request_count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM ledger_requests").fetchone()[0])

    # -- custody -----------------------------------------------------------------------------------
    def custody(self, asset: str, address: str) -> CustodyState | None:
        r = self.db.execute("SELECT asset, address, chain, balance_raw, decimals, block_number, block_hash, verified_at "
                            "FROM ledger_custody WHERE asset = ? AND address = ?", (asset, address)).fetchone()
        return CustodyState(r[0], r[1], r[2], int(r[3]), int(r[4]), int(r[5]), r[6], r[7]) if r else None

    def put_custody(self, c: CustodyState) -> None:
        self.db.execute("DELETE FROM ledger_custody WHERE asset = ? AND address = ?", (c.asset, c.address))
        self.db.execute("INSERT INTO ledger_custody VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (c.asset, c.address, c.chain, str(c.balance_raw), c.decimals, c.block_number, c.block_hash,
                         c.verified_at))

    def custody_states(self) -> list[CustodyState]:
        return [CustodyState(r[0], r[1], r[2], int(r[3]), int(r[4]), int(r[5]), r[6], r[7]) for r in self.db.execute(
            "SELECT asset, address, chain, balance_raw, decimals, block_number, block_hash, verified_at "
            "FROM ledger_custody ORDER BY asset, address").fetchall()]

    # -- positions ---------------------------------------------------------------------------------
    _POS = ("account, asset, address, participant, quantity_raw, decimals, market_value_usd, after_haircut_usd, "
            "collateral_value_usd, price_usd, haircut, decision_id, bundle_hash, facts, created_at, updated_at")

    @staticmethod
    def _pos(r: Sequence[Any]) -> Position:
        return Position(r[0], r[1], r[2], r[3], int(r[4]), int(r[5]), _d(r[6]), _d(r[7]), _d(r[8]), _d(r[9]), r[10],
                        r[11], r[12], json.loads(r[13]), r[14], r[15])

    def positions(self, account: str | None = None, asset: str | None = None, address: str | None = None,
                  include_empty: bool = False) -> list[Position]:
        where, params = [], []
        for col, val in (("account", account), ("asset", asset), ("address", address)):
            if val is not None:
                where.append(f"{col} = ?")
                params.append(val)
        if not include_empty:
            where.append("quantity_raw <> '0'")
        sql = f"SELECT {self._POS} FROM ledger_positions" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY created_at, account, asset, address"
        return [self._pos(r) for r in self.db.execute(sql, params).fetchall()]

    def put_position(self, p: Position) -> None:
        self.db.execute("DELETE FROM ledger_positions WHERE account = ? AND asset = ? AND address = ?",
                        (p.account, p.asset, p.address))
        self.db.execute(f"INSERT INTO ledger_positions ({self._POS}) VALUES ({', '.join('?' * 16)})",
                        (p.account, p.asset, p.address, p.participant, str(p.quantity_raw), p.decimals,
                         decimal_text(p.market_value_usd), decimal_text(p.after_haircut_usd),
                         decimal_text(p.collateral_value_usd), decimal_text(p.price_usd),
                         p.haircut, p.decision_id, p.bundle_hash, json.dumps(p.facts, sort_keys=True),
                         p.created_at, p.updated_at))

    # -- journal -----------------------------------------------------------------------------------
    _ENT = ("entry_id, at, kind, account, participant, asset, address, quantity_raw, decimals, market_value_usd, "
            "after_haircut_usd, collateral_value_usd, price_usd, decision_id, idempotency_key, reason, evidence")

    def add_entry(self, e: JournalEntry) -> None:
        self.db.execute(f"INSERT INTO ledger_entries ({self._ENT}) VALUES ({', '.join('?' * 17)})",
                        (e.entry_id, e.at, e.kind, e.account, e.participant, e.asset, e.address, str(e.quantity_raw),
                         e.decimals, decimal_text(e.market_value_usd), decimal_text(e.after_haircut_usd),
                         decimal_text(e.collateral_value_usd),
                         None if e.price_usd is None else decimal_text(e.price_usd),
                         e.decision_id, e.idempotency_key, e.reason,
                         None if e.evidence is None else json.dumps(e.evidence, sort_keys=True)))

    def entries(self, *, until: str | None = None, kind: str | None = None) -> Iterator[JournalEntry]:
        where, params = [], []
        if until is not None:
            where.append("at < ?")
            params.append(until)
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        sql = f"SELECT {self._ENT}, seq FROM ledger_entries" + (" WHERE " + " AND ".join(where) if where else "")
        for r in self.db.execute(sql + " ORDER BY seq", params).fetchall():
            yield JournalEntry(r[0], r[1], r[2], r[3], r[4], r[5], r[6], int(r[7]), int(r[8]), _d(r[9]), _d(r[10]),
                               _d(r[11]), None if r[12] is None else _d(r[12]), r[13], r[14], r[15],
                               None if r[16] is None else json.loads(r[16]), int(r[17]))

    def first_entry_at(self) -> str | None:
        r = self.db.execute("SELECT MIN(at) FROM ledger_entries").fetchone()
        return r[0] if r else None

    # -- incidents ---------------------------------------------------------------------------------
    def add_incident(self, i: Incident) -> None:
        self.db.execute("INSERT INTO ledger_incidents (incident_id, at, kind, severity, account, asset, address, "
                        "message, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (i.incident_id, i.at, i.kind, i.severity, i.account, i.asset, i.address, i.message,
                         json.dumps(i.details, sort_keys=True, default=str)))

    def incidents(self, since: str | None = None, until: str | None = None) -> list[Incident]:
        where, params = [], []
        if since is not None:
            where.append("at >= ?")
            params.append(since)
        if until is not None:
            where.append("at < ?")
            params.append(until)
        sql = ("SELECT incident_id, at, kind, severity, message, account, asset, address, details FROM ledger_incidents"
               + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY seq")
        return [Incident(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], json.loads(r[8]))
                for r in self.db.execute(sql, params).fetchall()]
