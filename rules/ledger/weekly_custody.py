"""The weekly report's custody reconciliation: on-chain custody at the week's end against the ledger.

Custody at a time is the last balance the ledger verified on-chain at each custody address before it (the
``custody`` rows every ``credit`` and ``reverification`` leaf of the log carries, block number and hash
included: ``rules.ledger.journal``), read from the log, verified leaf by leaf. The ledger at that time is the
journal summed per address. Per address and per asset:

- ``balanced``: every verified coin is on somebody's books;
- ``not_credited``: the address holds coins nobody has deposited (custody above the ledger: not a break,
  but coins that count for no one);
- ``break``: the ledger holds more than custody verified (a shortfall not yet reduced) - the report says so.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Mapping

from rules.audit.log import DecisionLog
from rules.ledger import journal
from rules.ledger.amounts import cents
from rules.ledger.records import CustodyState
from rules.ledger.store import LedgerStore
from rules.values import decimal_text, units_text, utc_text


def custody_at(log: DecisionLog, until: datetime) -> dict[tuple[str, str], CustodyState]:
    """(asset, address) -> the last custody state verified before ``until``, from the log's ledger leaves."""
    cutoff = utc_text(until, "microseconds")
    out: dict[tuple[str, str], CustodyState] = {}
    for e in log.entries():
        if e.kind not in ("credit", "reverification"):
            continue
        b = journal.read_block(e.kind, e.body, f"log entry {e.seq}")
        if b["at"] >= cutoff:
            continue
        for c in b["custody"]:
            s = journal.read_custody(c, f"log entry {e.seq}")
            old = out.get((s.asset, s.address))
            if old is None or s.block_number >= old.block_number:
                out[(s.asset, s.address)] = s
    return out


def reconcile(store: LedgerStore, states: Mapping[tuple[str, str], CustodyState], until: datetime,
              prices: Mapping[str, Decimal]) -> dict[str, Any]:
    """Custody verified before ``until`` (``custody_at``) against the journal's quantities per address, by
    asset, with the custody quantity's value at the given (week-end) ``prices``."""
    ledger: dict[tuple[str, str], int] = {}
    decimals: dict[str, int] = {}
    for e in store.entries(until=utc_text(until, "microseconds")):
        ledger[(e.asset, e.address)] = ledger.get((e.asset, e.address), 0) + e.quantity_raw
        decimals[e.asset] = e.decimals
    for (asset, _), s in states.items():
        decimals[asset] = s.decimals
    by_asset: dict[str, Any] = {}
    for key in sorted(set(states) | {k for k, v in ledger.items() if v}):
        asset, address = key
        s = states.get(key)
        held, on_chain = ledger.get(key, 0), (s.balance_raw if s else 0)
        status = "balanced" if held == on_chain else "not_credited" if held < on_chain else "break"
        d = decimals[asset]
        a = by_asset.setdefault(asset, {"custody_raw": 0, "ledger_raw": 0, "addresses": []})
        a["custody_raw"] += on_chain
        a["ledger_raw"] += held
        a["addresses"].append({"address": address, "custody_quantity": units_text(on_chain, d),
                               "ledger_quantity": units_text(held, d),
                               "block_number": s.block_number if s else None, "block_hash": s.block_hash if s else None,
                               "verified_at": s.verified_at if s else None, "status": status})
    out: dict[str, Any] = {}
    for asset, a in by_asset.items():
        d = decimals[asset]
        statuses = {x["status"] for x in a["addresses"]}
        price = prices.get(asset)
        out[asset] = {
            "custody_quantity": units_text(a["custody_raw"], d), "ledger_quantity": units_text(a["ledger_raw"], d),
            "not_credited_quantity": units_text(max(a["custody_raw"] - a["ledger_raw"], 0), d),
            "custody_value_usd": None if price is None else decimal_text(cents(Decimal(a["custody_raw"]).scaleb(-d)
                                                                               * price)),
            "status": "break" if "break" in statuses else "not_credited" if "not_credited" in statuses
            else "balanced", "addresses": a["addresses"]}
    statuses = {v["status"] for v in out.values()}
    return {"status": "break" if "break" in statuses else "balanced" if statuses <= {"balanced"} else "not_credited",
            "source": "the last on-chain verification before the week's end at each custody address (log leaves)",
            "by_asset": out}
