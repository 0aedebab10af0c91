"""The ledger's state as a projection of its leaves in the log (``dacp ledger check``).

The log's ``credit``, ``withdrawal``, ``reverification`` and ``revaluation`` leaves (``rules.ledger.journal``)
are read in log order, streaming (``DecisionLog.entries``: every leaf checked against its hash), and the
ledger is recomputed from them alone:

- the journal: every line, exactly (``ledger_entries``, every column but ``seq``);
- positions: quantities and the three values as the sums of their lines; price and decision of the last
  line; the haircut, bundle, facts (the credit's query and custody evidence) and first-credit time of the
  last credit, or a revaluation's ``after``; the time of the last line (``ledger_positions``);
- custody: the last balance each leaf stored per address (``ledger_custody``);
- accounts: opened by their first credit, with its participant and account type, and their customer as the
  first credit naming one named it (``ledger_accounts``).

``reconcile`` compares that with the rows and names every row that differs: table, key, field, stored
and recomputed. An edited row (a position's value, a journal line, a custody balance, an account type)
is found whether or not its neighbours were edited to match, since the leaves are not rows: editing them
changes their hashes, which every read and ``dacp audit verify`` check (and signed checkpoints fix).

Idempotency results and incidents are not recomputed (they are not holdings); the weekly report sums the
journal rows, which this check holds to the log.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Iterable, Mapping, NamedTuple

from rules.audit.entries import Entry, body_bytes
from rules.audit.log import DecisionLog
from rules.errors import StorageError
from rules.ledger import journal
from rules.ledger.records import Account, CustodyState, JournalEntry, Position
from rules.ledger.store import LedgerStore
from rules.values import decimal_text

POSITION_FIELDS = ("participant", "quantity_raw", "decimals", "market_value_usd", "after_haircut_usd",
                   "collateral_value_usd", "price_usd", "haircut", "decision_id", "bundle_hash", "facts",
                   "created_at", "updated_at")
LINE_FIELDS = ("at", "kind", "account", "participant", "asset", "address", "quantity_raw", "decimals",
               "market_value_usd", "after_haircut_usd", "collateral_value_usd", "price_usd", "decision_id",
               "idempotency_key", "reason", "evidence")
CUSTODY_FIELDS = ("chain", "balance_raw", "decimals", "block_number", "block_hash", "verified_at")
ACCOUNT_FIELDS = ("participant", "account_type", "created_at", "customer")


class Difference(NamedTuple):
    """One ledger row that is not what the log recomputes. ``stored`` None: the row is missing;
    ``recomputed`` None: no leaf accounts for the row."""

    table: str
    key: str
    field: str
    stored: str | None
    recomputed: str | None

    def __str__(self) -> str:
        if self.recomputed is None:
            return f"{self.table} {self.key}: stored, but no entry of the log accounts for it"
        if self.stored is None:
            return f"{self.table} {self.key}: missing; the log recomputes it ({self.recomputed})"
        return f"{self.table} {self.key}: {self.field} stored {self.stored}, recomputed from the log {self.recomputed}"


@dataclass
class Projection:
    """The ledger recomputed from the log (``lines``: journal entry id -> (digest of its line, leaf id))."""

    positions: dict[tuple[str, str, str], Position] = field(default_factory=dict)
    custody: dict[tuple[str, str], CustodyState] = field(default_factory=dict)
    accounts: dict[str, Account] = field(default_factory=dict)
    lines: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    leaves: int = 0
    legacy: int = 0
    problems: list[str] = field(default_factory=list)  # in the log itself


class Reconciliation(NamedTuple):
    differences: list[Difference]
    log_problems: list[str]
    leaves: int  # the ledger's leaves read
    lines: int  # journal lines recomputed

    @property
    def problems(self) -> list[str]:
        return self.log_problems + [str(d) for d in self.differences]


def _digest(line: Mapping[str, Any]) -> bytes:
    return hashlib.blake2b(body_bytes(dict(line), "journal line"), digest_size=16).digest()


def _text(v: Any) -> str:
    if isinstance(v, Decimal):
        return decimal_text(v)
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True, separators=(",", ":"))
    return "null" if v is None else str(v)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (dict, list)) or isinstance(b, (dict, list)):
        return _text(a) == _text(b)
    return a == b  # Decimals by value: 0 == 0.00


def project(log: DecisionLog) -> Projection:
    """Recompute the ledger from the log's leaves (streaming; a leaf that does not read is a log problem)."""
    proj = Projection()
    try:
        for e in log.entries():
            if e.kind in journal.KINDS:
                proj.leaves += 1
                try:
                    _apply(proj, e)
                except StorageError as err:
                    proj.problems.append(str(err))
            elif e.kind == "ledger" or (e.kind == "decision" and "ledger" in e.body):
                proj.legacy += 1
    except StorageError as err:  # a leaf whose bytes no longer hash to it, a damaged chunk
        proj.problems.append(f"the log cannot be read to the end, so the ledger cannot be recomputed: {err}")
    if proj.legacy:
        proj.problems.append(f"the log holds {proj.legacy} ledger entries of an earlier version (kind 'ledger', "
                             "or 'decision' with a ledger block): the rows they wrote cannot be recomputed")
    return proj


def _apply(proj: Projection, e: Entry) -> None:
    where = f"log entry {e.seq} ({e.kind} {e.entry_id})"
    b = journal.read_block(e.kind, e.body, where)
    for c in b["custody"]:
        s = journal.read_custody(c, where)
        proj.custody[(s.asset, s.address)] = s
    if e.kind == "credit" and b.get("status") == "credited":  # opens the account; names its customer once
        acc = proj.accounts.get(b["account"])
        if acc is None:
            proj.accounts[b["account"]] = Account(b["account"], b["participant"], b["account_type"], b["at"],
                                                  b.get("customer"))
        elif acc.customer is None and b.get("customer") is not None:
            proj.accounts[b["account"]] = replace(acc, customer=b["customer"])
    states = {(p["asset"], p["address"]): p for p in b.get("positions", [])} if e.kind == "revaluation" else {}
    for d in b["lines"]:
        ln = journal.read_line(d, where)
        if ln.entry_id in proj.lines:
            proj.problems.append(f"{where}: journal line {ln.entry_id} is in the log twice")
        proj.lines[ln.entry_id] = (_digest(journal.line(ln)), e.entry_id)
        key = (ln.account, ln.asset, ln.address)
        prev = proj.positions.get(key)
        base = prev or Position(ln.account, ln.asset, ln.address, ln.participant, 0, ln.decimals, Decimal(0),
                                Decimal(0), Decimal(0), Decimal(0), None, "", "", {}, ln.at, ln.at)
        new = base.but(participant=ln.participant, decimals=ln.decimals,
                       quantity_raw=base.quantity_raw + ln.quantity_raw,
                       market_value_usd=base.market_value_usd + ln.market_value_usd,
                       after_haircut_usd=base.after_haircut_usd + ln.after_haircut_usd,
                       collateral_value_usd=base.collateral_value_usd + ln.collateral_value_usd,
                       price_usd=ln.price_usd if ln.price_usd is not None else base.price_usd,
                       decision_id=ln.decision_id or base.decision_id, updated_at=ln.at)
        if ln.kind == "credit":
            new = new.but(haircut=b.get("haircut"), bundle_hash=e.bundle_hash or "",
                          facts={"query": e.body.get("query"), "custody_evidence": ln.evidence},
                          created_at=prev.created_at if prev is not None and prev.quantity_raw else ln.at)
        elif ln.kind == "revalue":
            st = states.get((ln.asset, ln.address))
            if st is None:
                raise StorageError(f"{where}: no before/after for {ln.asset} at {ln.address}")
            stated = journal.read_state(base, st["before"], where)
            if prev is not None and any(not _same(getattr(stated, f), getattr(prev, f)) for f in
                                        ("quantity_raw", "market_value_usd", "after_haircut_usd",
                                         "collateral_value_usd")):
                proj.problems.append(f"{where}: {ln.account}/{ln.asset}/{ln.address} was "
                                     f"revalued from {stated.quantity_raw} / {stated.collateral_value_usd} USD, but "
                                     f"the entries before it come to {prev.quantity_raw} / {prev.collateral_value_usd}"
                                     " (the rows were edited before this revaluation)")
            after = journal.read_state(new, st["after"], where)
            new = new.but(haircut=after.haircut, bundle_hash=after.bundle_hash)
        proj.positions[key] = new


def reconcile(store: LedgerStore, log: DecisionLog) -> Reconciliation:
    """The ledger's rows against the ledger recomputed from the log: every row that differs, named."""
    proj = project(log)
    diffs: list[Difference] = []
    _compare(diffs, "ledger_positions", {(p.account, p.asset, p.address): p for p in store.positions(include_empty=True)},
             proj.positions, POSITION_FIELDS, _pos_summary)
    _compare(diffs, "ledger_custody", {(c.asset, c.address): c for c in store.custody_states()}, proj.custody,
             CUSTODY_FIELDS, lambda c: f"balance {c.balance_raw} at block {c.block_number}")
    _compare(diffs, "ledger_accounts", {a.account: a for a in store.accounts()}, proj.accounts, ACCOUNT_FIELDS,
             lambda a: f"{a.participant}, {a.account_type}, customer {a.customer}")
    diffs += _journal(store, log, proj)
    return Reconciliation(diffs, proj.problems, proj.leaves, len(proj.lines))


def _key(k: Any) -> str:
    return "(" + ", ".join(k) + ")" if isinstance(k, tuple) else f"({k})"


def _pos_summary(p: Position) -> str:
    return f"{p.quantity_raw} base units, {decimal_text(p.collateral_value_usd)} USD"


def _compare(out: list[Difference], table: str, rows: Mapping[Any, Any], recomputed: Mapping[Any, Any],
             fields: Iterable[str], summary: Any) -> None:
    for k in sorted(set(rows) | set(recomputed)):
        row, want = rows.get(k), recomputed.get(k)
        if want is None:
            out.append(Difference(table, _key(k), "", summary(row), None))
        elif row is None:
            out.append(Difference(table, _key(k), "", None, summary(want)))
        else:
            out += [Difference(table, _key(k), f, _text(getattr(row, f)), _text(getattr(want, f)))
                    for f in fields if not _same(getattr(row, f), getattr(want, f))]


def _journal(store: LedgerStore, log: DecisionLog, proj: Projection) -> list[Difference]:
    """Journal rows against the lines: digests first; the lines of rows that differ are read again."""
    left = dict(proj.lines)
    out: list[Difference] = []
    suspects: dict[str, JournalEntry] = {}
    for row in store.entries():
        found = left.pop(row.entry_id, None)
        if found is None:
            out.append(Difference("ledger_entries", _line_key(row), "", f"{row.kind} {row.quantity_raw}", None))
        elif found[0] != _digest(journal.line(row)):
            suspects[row.entry_id] = row
    by_leaf: dict[str, list[str]] = {}  # the lines to read again (of rows that differ, or are missing)
    for entry_id in [*suspects, *left]:
        by_leaf.setdefault(proj.lines[entry_id][1], []).append(entry_id)
    for leaf_id, ids in by_leaf.items():
        e = log.get(leaf_id)  # verified read
        lines = {d["entry_id"]: journal.read_line(d, leaf_id) for d in journal.read_block(e.kind, e.body, leaf_id)["lines"]}
        for entry_id in ids:
            want, row = lines[entry_id], suspects.get(entry_id)
            if row is None:
                out.append(Difference("ledger_entries", _line_key(want), "", None,
                                      f"{want.kind} {want.quantity_raw} in log entry {e.seq}, {e.kind} {leaf_id}"))
                continue
            out += [Difference("ledger_entries", _line_key(row), f, _text(getattr(row, f)), _text(getattr(want, f)))
                    for f in LINE_FIELDS if not _same(getattr(row, f), getattr(want, f))]
    return out


def _line_key(e: JournalEntry) -> str:
    return f"({e.entry_id}: {e.kind} {e.account}, {e.asset}, {e.address})"
