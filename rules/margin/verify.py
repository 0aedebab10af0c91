"""The margin tables recomputed from the verifiable log: every ``margin.requirement`` leaf (an import) and
every ``margin.call`` leaf (a call's step) is replayed in log order, and the rows the margin room keeps
(``rules.margin.store``) are held to the result; every row that differs, is missing, or that no leaf
accounts for is named (``rules.ledger.projection.Difference``, as ``dacp ledger check`` names the ledger's).

- ``margin_requirements``: (account, dco, business_day) -> the row of the latest import of that key, with
  that import's id and time; ``margin_collateral``: (account, holding) and ``margin_cross_profiles``
  (account) likewise;
- ``margin_calls``: call_id -> the call as its latest step left it;
- ``margin_events``: one row per leaf (same id, time, kind and account).

Leaves are read verified (``DecisionLog.entries``: a leaf whose bytes no longer hash to the tree is a
``TamperedError``), so a row edited in SQL, with the triggers dropped, is found here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from rules.audit.log import DecisionLog
from rules.audit.margin_entries import CALL_KIND, IMPORT_KIND, read_call, read_import
from rules.ledger.projection import Difference
from rules.ledger.store import LedgerStore
from rules.margin.store import MarginStore

_REQ = ("requirement_usd", "net_of_offsets", "cross_margin_reduction_usd", "import_id", "imported_at")
_COL = ("class", "amount_usd", "face_value_usd", "price_pct", "maturity", "cusip", "as_of", "import_id")
_CALL = ("account", "business_day", "amount_usd", "deficit_usd", "issued_at", "deadline", "status", "level", "closed_at")
_EVENT = ("at", "kind", "account")


@dataclass
class MarginCheck:
    """What the margin leaves recompute, against the rows; ``leaves``: how many margin leaves were read."""

    differences: list[Difference] = field(default_factory=list)
    leaves: int = 0
    rows: int = 0

    @property
    def ok(self) -> bool:
        return not self.differences

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "leaves": self.leaves, "rows": self.rows,
                "differences": [{**d._asdict(), "message": str(d)} for d in self.differences]}


def _text(v: Any) -> str:
    return json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else str(v)


def _compare(out: list[Difference], table: str, rows: Mapping[tuple, dict[str, Any]],
             want: Mapping[tuple, dict[str, Any]], fields: tuple[str, ...], summary: Callable[[dict], str]) -> None:
    for k in sorted(set(rows) | set(want), key=lambda t: tuple(str(x) for x in t)):
        key = "(" + ", ".join(str(x) for x in k) + ")"
        row, w = rows.get(k), want.get(k)
        if w is None:
            out.append(Difference(table, key, "", summary(row), None))
        elif row is None:
            out.append(Difference(table, key, "", None, summary(w)))
        else:
            out += [Difference(table, key, f, _text(row.get(f)), _text(w.get(f)))
                    for f in fields if _text(row.get(f)) != _text(w.get(f))]


def recompute(log: DecisionLog) -> tuple[dict[str, dict], int]:
    """The margin tables as the log's margin leaves make them (table -> key -> row), and how many leaves."""
    reqs: dict[tuple, dict] = {}
    cols: dict[tuple, dict] = {}
    profiles: dict[tuple, dict] = {}
    calls: dict[tuple, dict] = {}
    events: dict[tuple, dict] = {}
    n = 0
    for e in log.entries():
        if e.kind == IMPORT_KIND:
            b = read_import(e.body, f"log entry {e.seq} ({e.entry_id})")
            for r in b["requirements"]:
                reqs[(r["account"], r["dco"], r["business_day"])] = {**r, "import_id": e.entry_id,
                                                                      "imported_at": b["at"]}
            for c in b["collateral"]:
                cols[(c["account"], c["holding"])] = {**c, "import_id": e.entry_id}
            for p in b["cross_margin"]:
                profiles[(p["account"],)] = {"profile": p, "import_id": e.entry_id}
            events[(e.entry_id,)] = {"at": b["at"], "kind": "import", "account": None}
        elif e.kind == CALL_KIND:
            b = read_call(e.body, f"log entry {e.seq} ({e.entry_id})")
            call = b["call"]
            calls[(call["call_id"],)] = call
            events[(e.entry_id,)] = {"at": b["at"], "kind": f"call.{b['step']}", "account": call["account"]}
        else:
            continue
        n += 1
    return {"margin_requirements": reqs, "margin_collateral": cols, "margin_cross_profiles": profiles,
            "margin_calls": calls, "margin_events": events}, n


def stored(store: MarginStore) -> dict[str, dict]:
    """The margin tables as they stand (table -> key -> row, in the leaves' layout)."""
    reqs = {(r.account, r.dco, r.business_day.isoformat()): {**r.row(), "import_id": r.import_id,
                                                            "imported_at": r.imported_at}
            for r in store.requirements()}
    cols = {(c.account, c.holding): {**c.row(), "import_id": c.import_id} for c in store.offledger()}
    rows = store.db.execute("SELECT account, profile, import_id FROM margin_cross_profiles").fetchall()
    profiles = {(r[0],): {"profile": json.loads(r[1]), "import_id": r[2]} for r in rows}
    calls = {(c.call_id,): c.row() for c in store.calls()}
    events = {(eid,): {"at": at, "kind": kind, "account": acct} for eid, at, kind, acct, _ in store.events()}
    return {"margin_requirements": reqs, "margin_collateral": cols, "margin_cross_profiles": profiles,
            "margin_calls": calls, "margin_events": events}


def check(store: MarginStore, log: DecisionLog) -> MarginCheck:
    """Every margin row against what the log's margin leaves recompute (see the module's docstring)."""
    want, leaves = recompute(log)
    have = stored(store)
    out = MarginCheck(leaves=leaves, rows=sum(len(v) for v in have.values()))
    _compare(out.differences, "margin_requirements", have["margin_requirements"], want["margin_requirements"], _REQ,
             lambda r: f"{r['requirement_usd']} USD")
    _compare(out.differences, "margin_collateral", have["margin_collateral"], want["margin_collateral"], _COL,
             lambda r: f"{r['class']}")
    _compare(out.differences, "margin_cross_profiles", have["margin_cross_profiles"], want["margin_cross_profiles"],
             ("profile", "import_id"), lambda r: f"import {r['import_id']}")
    _compare(out.differences, "margin_calls", have["margin_calls"], want["margin_calls"], _CALL,
             lambda r: f"{r['status']} {r['amount_usd']} USD")
    _compare(out.differences, "margin_events", have["margin_events"], want["margin_events"], _EVENT,
             lambda r: f"{r['kind']} at {r['at']}")
    return out


def has_margin_tables(ledger: LedgerStore) -> bool:
    """Whether the ledger's database has the margin tables (made on first margin use); read, nothing made."""
    db = ledger.db
    if db.kind == "postgresql":
        return db.execute("SELECT to_regclass('margin_events')").fetchone()[0] is not None
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'margin_events'").fetchone() is not None


def has_margin_records(ledger: LedgerStore) -> bool:
    """Whether anything was ever recorded in the margin room (an import): the tables alone are made by the
    withdrawal guard's first use, and say nothing."""
    return has_margin_tables(ledger) and ledger.db.execute("SELECT 1 FROM margin_events LIMIT 1").fetchone() is not None


def check_ledger(ledger: LedgerStore, log: DecisionLog) -> MarginCheck | None:
    """``check`` on the ledger's database, or None when it has no margin tables and the log no margin leaf
    (a margin leaf without the tables is every row missing)."""
    if has_margin_tables(ledger):
        return check(MarginStore(ledger), log)
    want, leaves = recompute(log)
    if not leaves:
        return None
    out = MarginCheck(leaves=leaves)
    for table, rows in want.items():
        for k in sorted(rows, key=lambda t: tuple(str(x) for x in t)):
            out.differences.append(Difference(table, "(" + ", ".join(str(x) for x in k) + ")", "", None,
                                              "the margin tables are missing"))
    return out
