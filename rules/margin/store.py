"""The margin room's SQL, in the ledger's database (``rules.ledger.store.LedgerStore``: the same
``adapters.storage.sql.Database``, so an import or a call step commits with its log leaf in one transaction).
Tables: ``rules.margin.schema``. Sums are made in Python with ``Decimal``, never in SQL."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from typing import Any, Iterable

from rules.errors import StorageError
from rules.ledger.store import LedgerStore
from rules.margin import schema
from rules.margin.records import Call, OffLedger, Requirement


def _d(text: Any) -> Decimal | None:
    return None if text is None else Decimal(str(text))


def _day(text: Any) -> date | None:
    return None if text is None else date.fromisoformat(str(text))


class MarginStore:
    """Requirements, off-ledger collateral, calls and the margin journal, beside the ledger's tables."""

    def __init__(self, ledger: LedgerStore):
        self.ledger = ledger
        self.db = ledger.db
        self._init()

    def _init(self) -> None:
        with self.db.transaction(["dacp.schema"]):
            if self.db.kind == "postgresql":
                if self.db.execute("SELECT to_regclass('margin_events')").fetchone()[0] is None:
                    self.db.script(schema.COMMON + schema.POSTGRES + schema.PG_TRIGGERS)
            else:
                self.db.script(schema.COMMON + schema.SQLITE + schema.SQLITE_TRIGGERS)
            row = self.db.execute("SELECT value FROM ledger_meta WHERE key = ?", (schema.META_KEY,)).fetchone()
            if row is None:
                self.db.execute("INSERT INTO ledger_meta VALUES (?, ?)", (schema.META_KEY, schema.SCHEMA_VERSION))
            elif row[0] != schema.SCHEMA_VERSION:
                raise StorageError(f"{self.ledger.where}: margin schema version {row[0]}, "
                                   f"expected {schema.SCHEMA_VERSION}")

    # -- requirements ------------------------------------------------------------------------------
    def put_requirement(self, r: Requirement) -> None:
        self.db.execute("DELETE FROM margin_requirements WHERE account = ? AND dco = ? AND business_day = ?",
                        (r.account, r.dco, r.business_day.isoformat()))
        row = r.row()
        self.db.execute("INSERT INTO margin_requirements VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (r.account, r.dco, row["business_day"], row["requirement_usd"],
                         "true" if r.net_of_offsets else "false", row["cross_margin_reduction_usd"], r.import_id,
                         r.imported_at))

    def requirements(self, account: str | None = None, until: date | None = None) -> list[Requirement]:
        """Requirements (of ``account``), on business days up to ``until`` (inclusive), oldest first."""
        where, params = [], []
        if account is not None:
            where.append("account = ?")
            params.append(account)
        if until is not None:
            where.append("business_day <= ?")
            params.append(until.isoformat())
        sql = ("SELECT account, dco, business_day, requirement_usd, net_of_offsets, cross_margin_reduction_usd, "
               "import_id, imported_at "
               "FROM margin_requirements" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY account, dco, business_day")
        return [Requirement(r[0], r[1], date.fromisoformat(r[2]), Decimal(r[3]), r[4] == "true", Decimal(r[5]), r[6],
                            r[7])
                for r in self.db.execute(sql, params).fetchall()]

    # -- off-ledger collateral ---------------------------------------------------------------------
    def put_offledger(self, c: OffLedger, import_id: str) -> None:
        self.db.execute("DELETE FROM margin_collateral WHERE account = ? AND holding = ?", (c.account, c.holding))
        row = c.row()
        self.db.execute("INSERT INTO margin_collateral VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (c.account, c.holding, c.cls, row["amount_usd"], row["face_value_usd"], row["price_pct"],
                         row["maturity"], c.cusip, row["as_of"], import_id))

    def offledger(self, account: str | None = None) -> list[OffLedger]:
        sql = ("SELECT account, holding, class, as_of, amount_usd, face_value_usd, price_pct, maturity, cusip, import_id "
               "FROM margin_collateral" + (" WHERE account = ?" if account is not None else "")
               + " ORDER BY account, holding")
        return [OffLedger(r[0], r[1], r[2], date.fromisoformat(r[3]), _d(r[4]), _d(r[5]), _d(r[6]), _day(r[7]), r[8],
                          r[9])
                for r in self.db.execute(sql, [account] if account is not None else []).fetchall()]

    # -- cross-margin profiles ---------------------------------------------------------------------
    def put_profile(self, profile: dict[str, Any], import_id: str) -> None:
        self.db.execute("DELETE FROM margin_cross_profiles WHERE account = ?", (profile["account"],))
        self.db.execute("INSERT INTO margin_cross_profiles VALUES (?, ?, ?)",
                        (profile["account"], json.dumps(profile, sort_keys=True), import_id))

    def profiles(self, account: str | None = None) -> dict[str, dict[str, Any]]:
        sql = "SELECT account, profile FROM margin_cross_profiles" + (" WHERE account = ?" if account else "")
        return {r[0]: json.loads(r[1]) for r in self.db.execute(sql, [account] if account else []).fetchall()}

    # -- calls -------------------------------------------------------------------------------------
    _CALL = "call_id, account, business_day, amount_usd, deficit_usd, issued_at, deadline, status, level, closed_at"

    def put_call(self, c: Call) -> None:
        self.db.execute("DELETE FROM margin_calls WHERE call_id = ?", (c.call_id,))
        row = c.row()
        self.db.execute(f"INSERT INTO margin_calls ({self._CALL}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        tuple(row[k] for k in self._CALL.split(", ")))

    def calls(self, account: str | None = None, status: str | None = None) -> list[Call]:
        where, params = [], []
        for col, val in (("account", account), ("status", status)):
            if val is not None:
                where.append(f"{col} = ?")
                params.append(val)
        sql = (f"SELECT {self._CALL} FROM margin_calls" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY issued_at, call_id")
        return [Call(r[0], r[1], date.fromisoformat(r[2]), Decimal(r[3]), Decimal(r[4]), r[5], r[6], r[7], r[8], r[9])
                for r in self.db.execute(sql, params).fetchall()]

    # -- the ledger's own rows, read as coverage needs them (the ledger's tables, never written here) ------
    def counted_values(self, until: str | None = None, account: str | None = None) -> dict[str, Decimal]:
        """Each account's counted value on the ledger: its positions' ``collateral_value_usd`` now, or the sum
        of its journal lines' signed ``collateral_value_usd`` recorded before ``until``. Summed in Python."""
        if until is None:
            sql, params = "SELECT account, collateral_value_usd FROM ledger_positions WHERE quantity_raw <> '0'", []
        else:
            sql, params = "SELECT account, collateral_value_usd FROM ledger_entries WHERE at < ?", [until]
        if account is not None:
            sql += " AND account = ?"
            params.append(account)
        out: dict[str, Decimal] = {}
        for acct, value in self.db.execute(sql, params).fetchall():
            out[acct] = out.get(acct, Decimal(0)) + Decimal(value)
        return out

    def credited_since(self, account: str, since: str) -> Decimal:
        """The counted value credited to ``account`` after ``since`` (its journal's credit lines)."""
        rows = self.db.execute("SELECT collateral_value_usd FROM ledger_entries WHERE account = ? AND kind = 'credit' "
                               "AND at > ?", (account, since)).fetchall()
        return sum((Decimal(r[0]) for r in rows), Decimal(0))

    # -- the margin journal (append-only) ----------------------------------------------------------
    def add_event(self, event_id: str, at: str, kind: str, account: str | None, detail: Any) -> None:
        self.db.execute("INSERT INTO margin_events (event_id, at, kind, account, detail) VALUES (?, ?, ?, ?, ?)",
                        (event_id, at, kind, account, json.dumps(detail, sort_keys=True)))

    def events(self, kinds: Iterable[str] | None = None) -> list[tuple[str, str, str, str | None, Any]]:
        rows = self.db.execute("SELECT event_id, at, kind, account, detail FROM margin_events ORDER BY seq").fetchall()
        wanted = None if kinds is None else set(kinds)
        return [(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows if wanted is None or r[2] in wanted]
