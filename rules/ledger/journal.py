"""The ledger's journal as leaves of the verifiable log: what every movement writes, and back.

Every transaction of the ledger appends the leaves of what it wrote, in the same transaction as its rows
(``rules.audit.log.DecisionLog.append`` joins it), each of its own kind (``rules.audit.entries.KINDS``):

- ``credit``: the credit's decision in compact format 3 (``rules.audit.entry_format.log_body``: the
  body's ``format``, ``query`` and ``decision``, so ``dacp explain``/``replay`` and ``GET /v1/decisions/{id}``
  read it as any decision), and its ``ledger`` block: account, participant, account type, the account's
  customer (``customer``, when named; absent otherwise, as in the leaves written before it), asset, the
  addresses, quantities in base units, the counted value and haircut, status, the custody balances the
  credit verified and stored, and its journal lines (one per address credited: the allocation);
- ``withdrawal``: the request and its journal lines (the reductions, newest credits first);
- ``reverification``: the custody balances a re-verification stored and its ``shortfall`` lines (a
  credit that finds a shortfall at its addresses writes one before its ``credit`` leaf);
- ``revaluation``: one per account, every position ``before`` and ``after`` and the ``revalue`` lines
  (the re-decisions themselves are ``decision`` leaves in format 3).

The ``ledger`` block's layout is versioned (``"version": 1``); its reader is frozen, as the log's own
decoders are (``rules.audit.entries``): a new layout is a new version read beside this one. A journal
line holds every column of its ``ledger_entries`` row but ``seq`` (numbers as exact text, never a float);
a custody state every column of its ``ledger_custody`` row. So the ledger's rows can be recomputed from
the log alone (``rules.ledger.projection``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Mapping, Sequence

import orjson

from rules.audit.entries import RawJSON
from rules.audit.entry_format import log_body
from rules.engine.decision import Decision
from rules.engine.ids import new_id
from rules.engine.query import Query
from rules.errors import StorageError
from rules.ledger.records import CustodyState, JournalEntry, Position
from rules.ledger.store import LedgerStore
from rules.policy.model import Bundle
from rules.values import decimal_text

VERSION = 1  # the ledger block's layout this version writes
READS = (1,)
KINDS = ("credit", "withdrawal", "reverification", "revaluation")  # the leaves the ledger writes
Record = tuple[str, str, "Bundle | None", Any]  # (kind, entry id, bundle, body): rules.audit.log.DecisionLog.append


class Movement:
    """What one transaction writes to the journal and the custody rows, in order: what its leaves hold.
    Positions are written through it too (they are recomputed from the lines, not carried)."""

    def __init__(self, store: LedgerStore):
        self.store = store
        self.lines: list[JournalEntry] = []
        self.custody: list[CustodyState] = []

    def add_entry(self, e: JournalEntry) -> None:
        self.store.add_entry(e)
        self.lines.append(e)

    def put_custody(self, c: CustodyState) -> None:
        self.store.put_custody(c)
        self.custody.append(c)

    def put_position(self, p: Position) -> None:
        self.store.put_position(p)

    def of_kind(self, *kinds: str) -> list[JournalEntry]:
        return [e for e in self.lines if e.kind in kinds]

    def __bool__(self) -> bool:
        return bool(self.lines or self.custody)


# -- writing --------------------------------------------------------------------------------------
def line(e: JournalEntry) -> dict[str, Any]:
    """A journal row as leaf JSON: every column but ``seq``."""
    return {"entry_id": e.entry_id, "at": e.at, "kind": e.kind, "account": e.account, "participant": e.participant,
            "asset": e.asset, "address": e.address, "quantity_raw": str(e.quantity_raw), "decimals": e.decimals,
            "market_value_usd": decimal_text(e.market_value_usd), "after_haircut_usd": decimal_text(e.after_haircut_usd),
            "collateral_value_usd": decimal_text(e.collateral_value_usd),
            "price_usd": None if e.price_usd is None else decimal_text(e.price_usd), "decision_id": e.decision_id,
            "idempotency_key": e.idempotency_key, "reason": e.reason, "evidence": e.evidence}


def custody(c: CustodyState) -> dict[str, Any]:
    """A custody row as leaf JSON."""
    return {"asset": c.asset, "address": c.address, "chain": c.chain, "balance_raw": str(c.balance_raw),
            "decimals": c.decimals, "block_number": c.block_number, "block_hash": c.block_hash,
            "verified_at": c.verified_at}


def state(p: Position) -> dict[str, Any]:
    """A position's quantity, values and what they were decided with (a revaluation's before and after)."""
    return {"quantity_raw": str(p.quantity_raw), "market_value_usd": decimal_text(p.market_value_usd),
            "after_haircut_usd": decimal_text(p.after_haircut_usd),
            "collateral_value_usd": decimal_text(p.collateral_value_usd), "price_usd": decimal_text(p.price_usd),
            "haircut": p.haircut, "decision_id": p.decision_id, "bundle_hash": p.bundle_hash}


def block(operation: str, at: str, mv: Movement | None, lines: Sequence[JournalEntry] | None = None,
          **fields: Any) -> dict[str, Any]:
    """A ``ledger`` block: the version, the operation, its time, custody states and lines, and ``fields``."""
    out: dict[str, Any] = {"version": VERSION, "operation": operation, "at": at, **fields}
    out["custody"] = [custody(c) for c in (mv.custody if mv is not None else ())]
    out["lines"] = [line(e) for e in (lines if lines is not None else (mv.lines if mv is not None else ()))]
    return out


def credit_record(query: Query, decision: Decision, bundle: Bundle, ledger: Mapping[str, Any],
                  holdings: Mapping[str, Any] | None = None) -> Record:
    """The ``credit`` leaf: the decision in format 3 (``log_body``, with the ledger's ``holdings`` it was
    decided with) and the ``ledger`` block beside it."""
    body = log_body(query, decision, dict(holdings) if holdings is not None else None)
    if isinstance(body, bytes):  # RawJSON: the query as encoded when parsed; the block goes in before the brace
        encoded = orjson.dumps(ledger, option=orjson.OPT_SORT_KEYS)
        return ("credit", decision.id, bundle, RawJSON(bytes(body[:-1]) + b',"ledger":' + encoded + b"}"))
    return ("credit", decision.id, bundle, {**body, "ledger": dict(ledger)})


def record(kind: str, ledger: Mapping[str, Any], bundle: Bundle | None = None) -> Record:
    """A ``withdrawal``, ``reverification`` or ``revaluation`` leaf (a new UUIDv7 id)."""
    return (kind, new_id(), bundle, {"ledger": dict(ledger)})


# -- reading (frozen: version 1) -------------------------------------------------------------------
def read_block(kind: str, body: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The ``ledger`` block of a leaf, checked for the version and the parts every block has."""
    b = body.get("ledger")
    if not isinstance(b, dict) or b.get("version") not in READS:
        raise StorageError(f"{where}: a {kind} entry without a ledger block of a version this code reads")
    if not isinstance(b.get("lines"), list) or not isinstance(b.get("custody"), list) or not isinstance(b.get("at"), str):
        raise StorageError(f"{where}: its ledger block lacks lines, custody or at")
    return b


def read_line(d: Mapping[str, Any], where: str) -> JournalEntry:
    try:
        return JournalEntry(d["entry_id"], d["at"], d["kind"], d["account"], d["participant"], d["asset"],
                            d["address"], int(d["quantity_raw"]), int(d["decimals"]), Decimal(d["market_value_usd"]),
                            Decimal(d["after_haircut_usd"]), Decimal(d["collateral_value_usd"]),
                            None if d["price_usd"] is None else Decimal(d["price_usd"]), d["decision_id"],
                            d["idempotency_key"], d["reason"], d["evidence"])
    except (KeyError, TypeError, ValueError, ArithmeticError) as e:
        raise StorageError(f"{where}: a journal line does not read back ({type(e).__name__}: {e})") from None


def read_custody(d: Mapping[str, Any], where: str) -> CustodyState:
    try:
        return CustodyState(d["asset"], d["address"], d["chain"], int(d["balance_raw"]), int(d["decimals"]),
                            int(d["block_number"]), d["block_hash"], d["verified_at"])
    except (KeyError, TypeError, ValueError) as e:
        raise StorageError(f"{where}: a custody state does not read back ({type(e).__name__}: {e})") from None


def read_state(p: Position, d: Mapping[str, Any], where: str) -> Position:
    """``p`` with a revaluation's stored state (quantity, values, price, haircut, decision, bundle)."""
    try:
        return p.but(quantity_raw=int(d["quantity_raw"]), market_value_usd=Decimal(d["market_value_usd"]),
                     after_haircut_usd=Decimal(d["after_haircut_usd"]),
                     collateral_value_usd=Decimal(d["collateral_value_usd"]), price_usd=Decimal(d["price_usd"]),
                     haircut=d["haircut"], decision_id=d["decision_id"], bundle_hash=d["bundle_hash"])
    except (KeyError, TypeError, ValueError, ArithmeticError) as e:
        raise StorageError(f"{where}: a position state does not read back ({type(e).__name__}: {e})") from None
