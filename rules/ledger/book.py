"""The collateral ledger: credit only verified, eligible value, once.

``Ledger`` is the ledger's one entry point (the CLI, the HTTP service and Python use it): the parts
it works with (``rules.ledger.context``) and its operations, each in a module of its own:

- ``credit``    verify on-chain -> decide -> credit, idempotent, the custody invariant (``rules.ledger.credit``);
- ``withdraw``  debit the newest credits first (``rules.ledger.withdraw``);
- ``reverify``  read the custody addresses again, reduce what the chain no longer covers (``rules.ledger.reverify``);
- ``revalue``   re-decide every holding with current prices and/or another bundle (``rules.ledger.revalue``);
- ``holdings`` and ``check``: positions, the invariants (``rules.ledger.invariants``), and the rows against
  the ledger recomputed from the log's leaves (``reconcile``: ``rules.ledger.projection``).

The requests it takes are ``rules.ledger.requests`` (exported here too, with ``check_key``). Money and
quantities are exact: integer base units and ``Decimal`` cents, values rounded down. No SQL here
(``rules.ledger.store``); no chain client here (the verifier and prices are injected).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

from rules.engine.decide import Engine
from rules.audit.incident_format import IncidentNotice
from rules.ledger import invariants, notices, projection, weekly_report
from rules.ledger.amounts import plain
from rules.ledger.context import LedgerContext
from rules.ledger.credit import credit
from rules.ledger.requests import ACCOUNT_TYPES, DEFAULT_ACCOUNT_TYPE, CreditRequest, WithdrawRequest, check_key
from rules.ledger.reverify import reverify
from rules.ledger.revalue import revalue
from rules.ledger.shortfall import per_address_balances
from rules.ledger.store import LedgerStore
from rules.ledger.withdraw import withdraw
from rules.values import decimal_text

__all__ = ["ACCOUNT_TYPES", "DEFAULT_ACCOUNT_TYPE", "CreditRequest", "Ledger", "WithdrawRequest", "check_key",
           "per_address_balances"]


class Ledger(LedgerContext):
    """The crediting workflow over a ``LedgerStore`` (see ``LedgerContext`` for its parts)."""

    @classmethod
    def from_dacp(cls, dacp: Any, store: LedgerStore, **kw: Any) -> "Ledger":
        """From a ``rules.app.Dacp`` (its bundle and evaluator; its verifier and prices unless given)."""
        kw.setdefault("verifier", dacp.verifier)
        kw.setdefault("prices", getattr(dacp, "prices", None))
        if "withdrawal_guard" not in kw and hasattr(dacp, "withdrawal_guard"):
            kw["withdrawal_guard"] = dacp.withdrawal_guard(store)
        kw.setdefault("as_of_window_s", dacp.settings.ledger.as_of_window_s)
        return cls(dacp.bundle, dacp.engine, store, **kw)

    def credit(self, req: CreditRequest) -> dict[str, Any]:
        return credit(self, req)

    def withdraw(self, req: WithdrawRequest) -> dict[str, Any]:
        return withdraw(self, req)

    def reverify(self, asset: str | None = None) -> dict[str, Any]:
        """Verify every custody address that carries credit again; reduce credits the chain no longer covers."""
        return reverify(self, asset)

    def revalue(self, *, engine: Engine | None = None, as_of: datetime | None = None,
                progress: Callable[[int], None] | None = None, dry_run: bool = False) -> dict[str, Any]:
        """Re-decide every position under ``engine`` (default: the ledger's) with current prices."""
        return revalue(self, engine=engine, as_of=as_of, progress=progress, dry_run=dry_run)

    def holdings(self, account: str | None = None) -> list[dict[str, Any]]:
        """Every position (of ``account``) with its values, as ``dacp ledger holdings`` shows them."""
        accts = {a.account: a for a in self.store.accounts()}
        return [{"account": p.account, "participant": p.participant,
                 "account_type": accts[p.account].account_type if p.account in accts else "?", "asset": p.asset,
                 "address": p.address, "quantity": plain(p.quantity), "price_usd": decimal_text(p.price_usd),
                 "market_value_usd": decimal_text(p.market_value_usd),
                 "after_haircut_usd": decimal_text(p.after_haircut_usd),
                 "collateral_value_usd": decimal_text(p.collateral_value_usd),
                 "excluded_by_limits_usd": decimal_text(p.after_haircut_usd - p.collateral_value_usd),
                 "decision_id": p.decision_id}
                for p in self.store.positions(account=account)]

    def record_incident(self, *, kind: str, significant: bool, start: datetime, end: datetime | None = None,
                        description: str, recorded_by: str | None = None) -> IncidentNotice:
        """Record an operational incident notice: a row and an ``incident`` entry of the log, together
        (``rules.ledger.notices``)."""
        return notices.record(self.store, self.log, kind=kind, significant=significant, start=start, end=end,
                              description=description, recorded_by=recorded_by)

    def incident_notices(self, since: datetime | None = None, until: datetime | None = None) -> list[IncidentNotice]:
        """The notices going on at some time in [since, until), each read from its log entry, verified."""
        return notices.listed(self.store, self.log, since, until)

    def weekly_report(self, week: str, *, first_week: str | None = None) -> dict[str, Any]:
        """The weekly pilot report of ``week`` at the week-end price from the ledger's price source, as of its
        clock (``rules.ledger.weekly_report.weekly``)."""
        return weekly_report.weekly(self.store, week, prices=self.prices, first_week=first_week, clock=self.clock)

    def reconcile(self) -> projection.Reconciliation:
        """The ledger's rows against the ledger recomputed from the log's leaves (streaming the log)."""
        return projection.reconcile(self.store, self.log)

    def check(self, reconciled: projection.Reconciliation | None = None) -> list[str]:
        """Problems with the ledger: the custody invariant, positions against the journal, the journal's
        append-only triggers, and every row the log does not recompute (``reconcile``). Empty = sound."""
        rec = reconciled if reconciled is not None else self.reconcile()
        return invariants.problems(self.store) + self.store.append_only_problems() + rec.problems
