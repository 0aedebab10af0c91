"""``MarginBook``: margin coverage on the ledger's database - imports, coverage, calls, what is free, and the
withdrawal check the ledger calls (``rules.ledger.context.LedgerContext.withdrawal_guard``).

Every write (an import, a call's step) holds the lock ``margin:<what>``, and commits its rows, its
``margin_events`` row and its leaf of the decision log (``rules.audit.margin_entries``) in one transaction.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, Callable

from rules.audit.log import DecisionLog
from rules.audit.margin_entries import CALL_KIND, IMPORT_KIND, call_body, import_body
from rules.engine.ids import new_id
from rules.errors import MarginError
from rules.ledger.store import LedgerStore
from rules.margin import calls as calling
from rules.engine.cross_margin import cross_margin
from rules.margin.cross import reductions
from rules.margin.coverage import Coverage, coverage, latest_requirements
from rules.margin.inputs import Parsed
from rules.margin.policy import MarginPolicy, margin_doc, margin_policy
from rules.margin.records import Call
from rules.margin.release import free_quantities
from rules.margin.store import MarginStore
from rules.margin.valuation import usd, value
from rules.margin import verify
from rules.margin.verify import MarginCheck
from rules.policy.model import Bundle
from rules.values import now_utc, utc_text

ZERO = Decimal(0)


class MarginBook:
    """Margin coverage for the accounts of one ledger, under the bundle's margin policy."""

    def __init__(self, bundle: Bundle, store: LedgerStore, *, clock: Callable[[], datetime] = now_utc):
        self.bundle = bundle
        self.policy: MarginPolicy = margin_policy(bundle)
        self.cross = cross_margin(bundle)
        self.ledger = store
        self.store = MarginStore(store)
        self.log = DecisionLog(database=store.db)
        self.clock = clock

    # -- imports -----------------------------------------------------------------------------------
    def import_requirements(self, parsed: Parsed) -> dict[str, Any]:
        """Store every record of ``parsed`` (a later import of the same key replaces it) and log the import."""
        import_id = new_id()
        with self.store.db.transaction(["margin:import"]):
            at = utc_text(self.clock(), "microseconds")
            for r in parsed.requirements:
                self.store.put_requirement(r.__class__(**{**r.__dict__, "import_id": import_id, "imported_at": at}))
            for c in parsed.collateral:
                self.store.put_offledger(c, import_id)
            for p in parsed.profiles:
                self.store.put_profile(p, import_id)
            accounts = sorted({r.account for r in parsed.requirements} | {c.account for c in parsed.collateral}
                              | {p["account"] for p in parsed.profiles})
            self.store.add_event(import_id, at, "import", None, {"source": parsed.source, "sha256": parsed.sha256,
                                                                 "accounts": accounts})
            self.log.append([(IMPORT_KIND, import_id, self.bundle, import_body(
                at, parsed.source, parsed.sha256, [r.row() for r in parsed.requirements],
                [c.row() for c in parsed.collateral], parsed.profiles))])
        return {"import_id": import_id, "recorded_at": at, "source": parsed.source, "sha256": parsed.sha256,
                "requirements": len(parsed.requirements), "collateral": len(parsed.collateral),
                "cross_margin": len(parsed.profiles), "accounts": accounts}

    # -- coverage ----------------------------------------------------------------------------------
    def coverage(self, account: str | None = None, as_of: datetime | None = None) -> list[Coverage]:
        """Coverage of every account (or ``account``) now, or as of ``as_of`` (the ledger's journal before it)."""
        when = as_of or self.clock()
        day = when.date()
        reqs = latest_requirements(self.store.requirements(account, until=day))
        ledger = self.store.counted_values(None if as_of is None else utc_text(as_of, "microseconds"), account)
        held = self.store.offledger(account)
        cuts = reductions(self.cross, reqs, self.store.profiles(account))
        return coverage(self.policy, ledger, reqs, held, day, utc_text(when, "seconds"), cuts,
                        [account] if account is not None else None)

    # -- calls -------------------------------------------------------------------------------------
    def calls(self, account: str | None = None, status: str | None = None) -> list[Call]:
        return self.store.calls(account, status)

    def run_calls(self, as_of: datetime | None = None) -> list[dict[str, Any]]:
        """Take every step the coverage now (or at ``as_of``) calls for; the steps taken, in order."""
        now = as_of or self.clock()
        done = []
        open_now = {c.account: c for c in self.store.calls(status="open")}
        for cov in self.coverage(as_of=as_of):
            if cov.account not in open_now and (cov.deficit_usd <= 0 or cov.deficit_usd < self.policy.minimum_call_usd):
                continue  # nothing to do: no transaction
            with self.store.db.transaction([f"margin:{cov.account}"]):
                open_calls = self.store.calls(cov.account, "open")  # again, under the account's lock
                first = open_calls[0] if open_calls else None
                delivered = self._delivered(cov.account, first.issued_at, now.date()) if first else ZERO
                todo = calling.steps(self.policy, cov, open_calls, now, delivered, new_id())
                for step, call, extra in todo:
                    at = utc_text(now, "microseconds")
                    self.store.put_call(call)
                    event = new_id()
                    cov_json = {**calling.summary(cov), **extra}
                    self.store.add_event(event, at, f"call.{step}", cov.account, {"call_id": call.call_id, **extra})
                    self.log.append([(CALL_KIND, event, self.bundle, call_body(at, step, call.row(), cov_json))])
                    done.append({"step": step, "entry_id": event, **call.row(), **extra})
        return done

    def _delivered(self, account: str, since: str, day: date) -> Decimal:
        """Collateral delivered to ``account`` since a call issued at ``since``: its ledger credits' counted
        value recorded after it, and the value on ``day`` of its off-ledger holdings struck after the call's
        day (or on that day and imported after the call)."""
        total = self.store.credited_since(account, since)
        issued = date.fromisoformat(since[:10])
        return total + sum((value(self.policy, h, day).counted_usd for h in self.store.offledger(account)
                            if issued < h.as_of <= day), ZERO)

    # -- the verifiable record -------------------------------------------------------------------
    def check(self) -> MarginCheck:
        """The margin tables against what the log's margin leaves recompute (``rules.margin.verify``)."""
        return verify.check(self.store, self.log)

    # -- release -----------------------------------------------------------------------------------
    def free(self, account: str) -> dict[str, Any]:
        """What ``account`` may withdraw now without a deficit: the excess, and per asset the quantity."""
        cov = self.coverage(account)[0]
        positions = self.ledger.positions(account=account)
        limit = cov.excess_usd if cov.has_requirement else None
        return {"account": account, "status": cov.status, "requirement_usd": usd(cov.requirement_usd),
                "collateral_usd": usd(cov.collateral_usd),
                "free_usd": usd(cov.excess_usd if cov.has_requirement else cov.collateral_usd),
                "assets": free_quantities(positions, limit)}

    def check_withdrawal(self, account: str) -> None:
        """Refuse (``MarginError``) a withdrawal that leaves ``account`` under-margined; called by the ledger
        inside the withdrawal's transaction, once its reductions are written (so they are read as they stand)."""
        cov = self.coverage(account)[0]
        if cov.has_requirement and cov.deficit_usd > 0:
            raise MarginError(
                f"account {account} would be under-margined by {usd(cov.deficit_usd)} USD "
                f"(collateral {usd(cov.collateral_usd)} USD against a requirement of "
                f"{usd(cov.requirement_usd)} USD); nothing was withdrawn (dacp margin free --account "
                f"{account} says what may be)", account=account, deficit_usd=usd(cov.deficit_usd))


def withdrawal_guard(bundle: Bundle, store: LedgerStore) -> Callable[[str], None] | None:
    """The check every withdrawal on ``store`` goes through (``LedgerContext.withdrawal_guard``), or None when
    the bundle has no margin policy. The margin tables are made on its first use (joining the withdrawal's
    transaction), so a ledger that never withdraws never gets them."""
    if margin_doc(bundle) is None:
        return None
    book: list[MarginBook] = []

    def check(account: str) -> None:
        if not book:
            book.append(MarginBook(bundle, store))
        book[0].check_withdrawal(account)
    return check
