"""Storage of the collateral ledger: SQLite (embedded default) or PostgreSQL (several replicas), one interface.

The ledger lives in the SAME database as the decision log (``rules.audit.log``), so a credit and
its decision-log entry commit in one transaction. All SQL of the ledger is here; the workflow
(verify -> decide -> credit, idempotency, the custody invariant) is ``rules.ledger.book``.

Numbers are stored as exact decimal TEXT (quantities as integer base units, money as decimal
strings): SQLite's INTEGER is 64-bit and wei overflow it, and no float ever touches a value. Sums
are made in Python with ``Decimal``/``int``.

Tables (prefix ``ledger_``):
  accounts   account -> participant, account type
  requests   idempotency key -> operation, fingerprint of the parameters, status, stored result
  custody    (asset, address) -> last verified on-chain balance (base units) and its block
  positions  (account, asset, address) -> quantity credited (base units) and its values now
  entries    the journal: every credit, withdrawal, shortfall reduction and revaluation as signed deltas
  incidents  verification failures, node outages, shortfalls, deficits, refused double counts

Locking (see ``adapters.storage.sql``): writers call ``transaction(locks)`` with ``account:<id>`` and
``custody:<asset>:<address>`` names; on PostgreSQL these are advisory locks taken in sorted order
(the decision-log lock is always taken last), on SQLite the whole database is locked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Iterator, Sequence

from adapters.storage.sql import Database, open_database
from rules.errors import StorageError

SCHEMA_VERSION = "1"

_COMMON = [
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
_SQLITE = [
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
_PG = [s.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY") for s in _SQLITE]
_INDEXES = [
    "CREATE INDEX IF NOT EXISTS ledger_entries_at ON ledger_entries (at)",
    "CREATE INDEX IF NOT EXISTS ledger_incidents_at ON ledger_incidents (at)",
]


def _d(text: Any) -> Decimal:
    return Decimal(str(text))


def _s(d: Decimal) -> str:
    return format(d, "f")


@dataclass(frozen=True)
class Account:
    account: str
    participant: str
    account_type: str
    created_at: str


@dataclass(frozen=True)
class StoredRequest:
    idempotency_key: str
    operation: str
    fingerprint: str
    status: str
    result: dict[str, Any]
    created_at: str


@dataclass(frozen=True)
class CustodyState:
    asset: str
    address: str
    chain: str
    balance_raw: int
    decimals: int
    block_number: int
    block_hash: str
    verified_at: str


@dataclass(frozen=True)
class Position:
    account: str
    asset: str
    address: str
    participant: str
    quantity_raw: int
    decimals: int
    market_value_usd: Decimal
    after_haircut_usd: Decimal
    collateral_value_usd: Decimal
    price_usd: Decimal
    haircut: str | None
    decision_id: str
    bundle_hash: str
    facts: dict[str, Any]
    created_at: str
    updated_at: str

    @property
    def quantity(self) -> Decimal:
        return Decimal(self.quantity_raw).scaleb(-self.decimals)

    def but(self, **kw: Any) -> "Position":
        return replace(self, **kw)


@dataclass(frozen=True)
class JournalEntry:
    entry_id: str
    at: str
    kind: str  # credit | withdraw | shortfall | revalue
    account: str
    participant: str
    asset: str
    address: str
    quantity_raw: int  # signed delta
    decimals: int
    market_value_usd: Decimal  # signed deltas
    after_haircut_usd: Decimal
    collateral_value_usd: Decimal
    price_usd: Decimal | None = None
    decision_id: str | None = None
    idempotency_key: str | None = None
    reason: str | None = None
    evidence: Any = None
    seq: int | None = None


@dataclass(frozen=True)
class Incident:
    incident_id: str
    at: str
    kind: str  # verification_failure | node_outage | price_unavailable | shortfall | deficit | double_count_refused
    severity: str  # warning | critical
    message: str
    account: str | None = None
    asset: str | None = None
    address: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


class LedgerStore:
    """The ledger's tables in one database (shared with the decision log)."""

    def __init__(self, target: str | Any = None, *, database: Database | None = None, timeout_s: float = 60.0):
        self.db = database or open_database(target, timeout_s=timeout_s)
        self._owns_db = database is None
        self.where = self.db.where
        self._init()

    def _init(self) -> None:
        with self.db.transaction(["dacp.schema"]):
            if self.db.kind == "postgresql":
                exists = self.db.execute("SELECT to_regclass('ledger_incidents')").fetchone()[0]
                if exists is None:
                    self.db.script(_COMMON + _PG + _INDEXES)
            else:
                self.db.script(_COMMON + _SQLITE + _INDEXES)
            row = self.db.execute("SELECT value FROM ledger_meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                self.db.execute("INSERT INTO ledger_meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
            elif row[0] != SCHEMA_VERSION:
                raise StorageError(f"{self.where}: ledger schema version {row[0]}, expected {SCHEMA_VERSION}")

    def close(self) -> None:
        if self._owns_db:
            self.db.close()

    def transaction(self, locks: Sequence[str] = ()) -> Any:
        return self.db.transaction(locks)

    # -- accounts ----------------------------------------------------------------------------------
    def account(self, account: str) -> Account | None:
        r = self.db.execute("SELECT account, participant, account_type, created_at FROM ledger_accounts "
                            "WHERE account = ?", (account,)).fetchone()
        return Account(*r) if r else None

    def add_account(self, a: Account) -> None:
        self.db.execute("INSERT INTO ledger_accounts VALUES (?, ?, ?, ?)",
                        (a.account, a.participant, a.account_type, a.created_at))

    def accounts(self) -> list[Account]:
        return [Account(*r) for r in self.db.execute(
            "SELECT account, participant, account_type, created_at FROM ledger_accounts ORDER BY account").fetchall()]

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
                         _s(p.market_value_usd), _s(p.after_haircut_usd), _s(p.collateral_value_usd), _s(p.price_usd),
                         p.haircut, p.decision_id, p.bundle_hash, json.dumps(p.facts, sort_keys=True),
                         p.created_at, p.updated_at))

    # -- journal -----------------------------------------------------------------------------------
    _ENT = ("entry_id, at, kind, account, participant, asset, address, quantity_raw, decimals, market_value_usd, "
            "after_haircut_usd, collateral_value_usd, price_usd, decision_id, idempotency_key, reason, evidence")

    def add_entry(self, e: JournalEntry) -> None:
        self.db.execute(f"INSERT INTO ledger_entries ({self._ENT}) VALUES ({', '.join('?' * 17)})",
                        (e.entry_id, e.at, e.kind, e.account, e.participant, e.asset, e.address, str(e.quantity_raw),
                         e.decimals, _s(e.market_value_usd), _s(e.after_haircut_usd), _s(e.collateral_value_usd),
                         None if e.price_usd is None else _s(e.price_usd), e.decision_id, e.idempotency_key, e.reason,
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
