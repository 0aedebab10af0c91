"""Revaluation: re-decide every position with the price read now and optionally another bundle.

Accounts are revalued one at a time (each in its own transaction, holding its account and custody
locks), positions in the order they were first credited, each with the ledger's holdings for the limits
(``rules.ledger.positions.ledger_holdings``: the account's positions already re-decided, whole, and the
FCM's and programme's other accounts as they stand), and with the facts and custody evidence stored with
its credit. Each position's whole quantity is decided again, so the excess a limit excluded counts again
as soon as there is room (a price, a withdrawal elsewhere, another bundle). Quantities do not change,
values do; an account whose collateral value falls has a *deficit* (value before - value after): a
margin matter, reported with the revaluation (its leaf and result), not an operational incident.
``dry_run`` writes nothing.

An account's transaction appends its re-decisions (``decision`` leaves, format 3) and one ``revaluation``
leaf: every position before and after, and the ``revalue`` journal lines (``rules.ledger.journal``).
"""

from __future__ import annotations

import uuid
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Callable, Mapping

from rules.audit.entry_format import log_body
from rules.engine.decide import Engine
from rules.engine.decision import Decision
from rules.engine.query import Query, parse_query
from rules.evidence import Held, Holdings, PriceEvidence, custody_from_json, holdings_lines_json
from rules.ledger import journal
from rules.ledger.amounts import plain
from rules.ledger.context import LedgerContext
from rules.ledger.journal import Movement
from rules.ledger.positions import ledger_holdings, own
from rules.ledger.records import Account, JournalEntry, Position
from rules.values import decimal_text, utc_text


def revalue(ctx: LedgerContext, *, engine: Engine | None = None, as_of: datetime | None = None,
            progress: Callable[[int], None] | None = None, dry_run: bool = False) -> dict[str, Any]:
    """Re-decide every position under ``engine`` (default: the ledger's) with current prices; per account
    the value before and after and the deficit."""
    run = _Run(ctx, engine or ctx.engine, as_of or ctx.clock(), progress, dry_run)
    positions = ctx.store.positions()
    accounts = {a.account: a for a in ctx.store.accounts()}
    rows = [run.account(account, [p for p in positions if p.account == account], accounts.get(account))
            for account in sorted({p.account for p in positions})]
    tb = sum((Decimal(r["before_usd"]) for r in rows), Decimal(0))
    ta = sum((Decimal(r["after_usd"]) for r in rows), Decimal(0))
    return {"operation": "revalue", "dry_run": dry_run, "as_of": utc_text(run.as_of, "microseconds"),
            "bundle": run.engine.bundle.hash, "positions": len(positions), "accounts": rows,
            "total_before_usd": decimal_text(tb), "total_after_usd": decimal_text(ta),
            "total_deficit_usd": decimal_text(sum((Decimal(r["deficit_usd"]) for r in rows), Decimal(0))),
            "prices": {k: {"price_usd": decimal_text(v.price_usd), "source": v.source,
                           "updated_at": utc_text(v.updated_at, "microseconds")}
                       for k, v in sorted(run.prices.items())}}


@dataclass
class _Run:
    """One revaluation: its evaluator and time, the prices read so far (once per asset), progress."""

    ctx: LedgerContext
    engine: Engine
    as_of: datetime
    progress: Callable[[int], None] | None
    dry_run: bool
    prices: dict[str, PriceEvidence] = field(default_factory=dict)
    done: int = 0

    def account(self, account: str, mine: list[Position], acct: Account | None) -> dict[str, Any]:
        """Revalue one account's positions (in one transaction unless a dry run); its row of the report."""
        ctx, bundle = self.ctx, self.engine.bundle
        locks = [f"account:{account}"] + [f"custody:{p.asset}:{p.address}" for p in mine]
        with ctx.store.transaction(locks) if not self.dry_run else nullcontext():
            if not self.dry_run:
                mine = ctx.store.positions(account=account)
            before = sum((p.collateral_value_usd for p in mine), Decimal(0))
            done: dict[tuple[str, str], Held] = {}  # (asset, address) -> the position re-decided
            everyone = [p for p in ctx.store.positions() if p.account != account]
            named = ctx.store.customers()  # account -> customer: the limits across a customer
            participant = acct.participant if acct else mine[0].participant
            new_positions, records = [], []
            at = ctx.now_text()
            ordered = sorted(mine, key=lambda p: (p.created_at, p.asset, p.address))
            for p in ordered:
                a = bundle.assets.get(p.asset)
                if a is None:
                    d = None
                else:
                    if p.asset not in self.prices:
                        self.prices[p.asset] = ctx.price(a, account)
                    held = ledger_holdings(everyone, account, participant, _rest(ordered, done, p.asset),
                                           as_of=self.as_of, customer=acct.customer if acct else None,
                                           customers=named)
                    q, decided = _redecide(self.engine, p, self.prices[p.asset], held, self.as_of)
                    d = decided.to_json()
                    records.append(("decision", decided.id, bundle, log_body(q, decided, holdings_lines_json(held))))
                new = _revalued(p, d, at)
                if d is not None and d["eligible"]:  # the whole holding may count less with this position
                    _hold_to(new_positions, done, p.asset, Decimal(d["holdings"]["counted_after_usd"])
                             - new.collateral_value_usd)
                done[(p.asset, p.address)] = own(new)
                new_positions.append((p, new))
                self.done += 1
                if self.progress:
                    self.progress(self.done)
            after = sum((n.collateral_value_usd for _, n in new_positions), Decimal(0))
            row = {"account": account, "participant": participant,
                   "account_type": acct.account_type if acct else "?", "before_usd": decimal_text(before),
                   "after_usd": decimal_text(after), "change_usd": decimal_text(after - before),
                   "deficit_usd": decimal_text(max(before - after, Decimal(0))),
                   "positions": [{"asset": n.asset, "address": n.address, "quantity": plain(n.quantity),
                                  "before_usd": decimal_text(o.collateral_value_usd),
                                  "after_usd": decimal_text(n.collateral_value_usd),
                                  "excluded_usd": decimal_text(n.after_haircut_usd - n.collateral_value_usd),
                                  "counts": n.collateral_value_usd > 0} for o, n in new_positions]}
            if not self.dry_run:
                mv = self._write(new_positions, at)
                ctx.log.append(records + [journal.record("revaluation", journal.block(
                    "revaluation", at, mv, account=account, bundle=bundle.hash,
                    positions=[{"asset": o.asset, "address": o.address, "before": journal.state(o),
                                "after": journal.state(n)} for o, n in new_positions],
                    decisions=[r[1] for r in records], before_usd=row["before_usd"], after_usd=row["after_usd"],
                    deficit_usd=row["deficit_usd"]), bundle)])
        return row

    def _write(self, new_positions: list[tuple[Position, Position]], at: str) -> Movement:
        mv = Movement(self.ctx.store)
        for o, n in new_positions:
            mv.put_position(n)
            mv.add_entry(JournalEntry(str(uuid.uuid4()), at, "revalue", o.account, o.participant, o.asset,
                                  o.address, 0, o.decimals, n.market_value_usd - o.market_value_usd,
                                  n.after_haircut_usd - o.after_haircut_usd,
                                  n.collateral_value_usd - o.collateral_value_usd, n.price_usd,
                                  n.decision_id, None, _reason(o, n), None))
        return mv


def _rest(ordered: list[Position], done: Mapping[tuple[str, str], Held], asset: str) -> list[Held]:
    """The account's holdings a position of ``asset`` is re-decided with: the rest of the account (each
    position as re-decided in this run, or else as stored) but, of ``asset`` itself, only the positions
    already re-decided - so the asset's positions add up to its whole holding re-decided in one."""
    out = []
    for q in ordered:
        d = done.get((q.asset, q.address))
        if d is not None:
            out.append(d)
        elif q.asset != asset:
            out.append(own(q))
    return out


def _hold_to(new_positions: list[tuple[Position, Position]], done: dict[tuple[str, str], Held], asset: str,
             target: Decimal) -> None:
    """Lower the already re-decided positions of ``asset`` to ``target`` in all (newest first), as a credit
    does (``rules.ledger.positions.hold_to``): the asset's positions count what its whole holding counts."""
    excess = sum((n.collateral_value_usd for _, n in new_positions if n.asset == asset), Decimal(0)) - target
    for i in range(len(new_positions) - 1, -1, -1):
        if excess <= 0:
            return
        o, n = new_positions[i]
        if n.asset != asset or n.collateral_value_usd <= 0:
            continue
        cut = min(excess, n.collateral_value_usd)
        excess -= cut
        n = n.but(collateral_value_usd=n.collateral_value_usd - cut)
        new_positions[i] = (o, n)
        done[(n.asset, n.address)] = own(n)


def _reason(o: Position, n: Position) -> str:
    """A revaluation line's reason: what of the position the limits now exclude, if anything."""
    excluded = n.after_haircut_usd - n.collateral_value_usd
    return "revaluation" + (f"; {decimal_text(excluded)} USD excluded by limits" if excluded > 0 else "")


def _redecide(engine: Engine, p: Position, price: PriceEvidence, holdings: Holdings,
              as_of: datetime) -> tuple[Query, Decision]:
    """The position's stored query with today's price and time, its whole quantity decided again with the
    ledger's ``holdings``."""
    doc = dict(p.facts.get("query") or {})
    doc.update({"quantity": plain(p.quantity), "price_usd": plain(price.price_usd),
                "as_of": utc_text(as_of, "microseconds")})
    doc.pop("portfolio", None)
    doc["evidence"] = {**dict(doc.get("evidence") or {}),
                       "price_updated_at": utc_text(price.updated_at, "microseconds")}
    doc.pop("id", None)
    q = parse_query(doc, f"revaluation of {p.account}/{p.asset}/{p.address}")
    evidence: list[Any] = [price]
    verification = None
    if p.facts.get("custody_evidence"):
        evidence.insert(0, custody_from_json(p.facts["custody_evidence"]))
        verification = {"status": "verified"}
    return q, engine.decide(q, evidence, verification=verification, holdings=holdings)


def _revalued(p: Position, d: Mapping[str, Any] | None, at: str) -> Position:
    """The position with the values of decision ``d`` (nothing counts if ineligible or the asset is gone)."""
    if d is None or not d["eligible"]:
        return p.but(collateral_value_usd=Decimal(0), updated_at=at,
                     decision_id=d["decision_id"] if d else p.decision_id,
                     market_value_usd=Decimal(d["market_value_usd"]) if d and d.get("market_value_usd") else
                     p.market_value_usd, after_haircut_usd=Decimal(0),
                     price_usd=Decimal(d["price_usd"]) if d else p.price_usd)
    return p.but(market_value_usd=Decimal(d["market_value_usd"]),
                 after_haircut_usd=Decimal(d["value_after_haircut_usd"]),
                 collateral_value_usd=Decimal(d["collateral_value_usd"]), price_usd=Decimal(d["price_usd"]),
                 haircut=(d.get("haircut") or {}).get("total"), decision_id=d["decision_id"],
                 bundle_hash=d["policy"]["bundle"], updated_at=at)
