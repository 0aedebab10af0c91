"""Margin calls under the margin policy (``calls``): a deficit issues a call, a delivery meets it, coverage
coming back without one withdraws it, and a call still unmet past its deadline escalates.

- **Issue**: an account in deficit with no open call, by at least ``minimum_call_usd``, is called for its
  deficit rounded UP to ``rounding_usd``; due ``business_days`` business days after the day it is issued, by
  ``by`` in the DCO's zone, on the calendar of each DCO whose requirement the account carries - the earliest
  such deadline (the strictest) stands.
- **Further call**: a deficit that grows while calls are open, beyond what they call for (the sum of their
  amounts) by at least ``minimum_call_usd``, issues a further call for the increase (rounded up, with its own
  deadline); an increase below the minimum waits, as a first deficit below it would.
- **Met**: the open calls of an account covered again after collateral was delivered since the first of them
  (a ledger credit, or off-ledger collateral imported for it): each ``met``, with what was delivered.
- **Withdrawn**: covered again with nothing delivered (prices rose, the requirement fell): ``withdrawn``.
- **Escalated**: still in deficit ``after_hours`` past its deadline: a call reaches that level (each once).

Every step is a ``margin.call`` leaf (``rules.audit.margin_entries``), a ``margin_events`` row and the call's
row, committed together.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_CEILING, Decimal
from typing import Any, Sequence

from rules.margin.coverage import Coverage
from rules.margin.policy import Calendar, MarginPolicy
from rules.margin.records import Call
from rules.margin.valuation import usd
from rules.values import utc_text

ZERO = Decimal(0)


def round_call(policy: MarginPolicy, deficit: Decimal) -> Decimal:
    """The deficit rounded UP to the policy's increment (or to the cent)."""
    step = policy.rounding_usd if policy.rounding_usd > 0 else Decimal("0.01")
    return (deficit / step).to_integral_value(rounding=ROUND_CEILING) * step


def business_days_after(cal: Calendar, day: date, n: int) -> date:
    """The ``n``-th business day after ``day`` on ``cal`` (``n`` = 0: ``day`` itself if a business day, else the
    next one)."""
    d = day
    if n == 0:
        while not cal.is_business_day(d):
            d += timedelta(days=1)
        return d
    while n:
        d += timedelta(days=1)
        if cal.is_business_day(d):
            n -= 1
    return d


def deadline(policy: MarginPolicy, dcos: Sequence[str], issued: datetime) -> datetime:
    """When a call issued at ``issued`` is due: the earliest over the calendars of ``dcos`` (UTC)."""
    out = []
    for dco in dcos:
        cal = policy.calendar(dco)
        local_day = issued.astimezone(cal.zone).date()
        due_day = business_days_after(cal, local_day, policy.deadline_days)
        out.append(datetime.combine(due_day, policy.deadline_by, tzinfo=cal.zone).astimezone(timezone.utc))
    return min(out)


def summary(c: Coverage) -> dict[str, Any]:
    return {"requirement_usd": usd(c.requirement_usd), "collateral_usd": usd(c.collateral_usd),
            "deficit_usd": usd(c.deficit_usd), "excess_usd": usd(c.excess_usd),
            "requirements": c.requirements, "cross_margin": c.reductions}


def _issue(policy: MarginPolicy, cov: Coverage, now: datetime, at: str, amount: Decimal, new_id: str) -> Call:
    due = deadline(policy, [r["dco"] for r in cov.requirements], now)
    day = max(date.fromisoformat(r["business_day"]) for r in cov.requirements)
    return Call(new_id, cov.account, day, round_call(policy, amount), cov.deficit_usd, at, utc_text(due, "seconds"),
                "open")


def steps(policy: MarginPolicy, cov: Coverage, open_calls: Sequence[Call], now: datetime, delivered: Decimal,
          new_id: str) -> list[tuple[str, Call, dict[str, Any]]]:
    """The steps to take for one account with its ``open_calls`` (oldest first): (step, the call after it,
    what the leaf says beside the call). ``delivered``: collateral delivered since the first open call."""
    at = utc_text(now, "microseconds")
    rule = {"rule": policy.id, "minimum_call_usd": usd(policy.minimum_call_usd),
            "rounding_usd": usd(policy.rounding_usd)}
    if not open_calls:
        if cov.deficit_usd <= 0 or cov.deficit_usd < policy.minimum_call_usd:
            return []
        return [("issued", _issue(policy, cov, now, at, cov.deficit_usd, new_id), rule)]
    if cov.deficit_usd <= 0:
        if delivered > 0:
            return [("met", _close(c, "met", at), {"delivered_usd": usd(delivered)}) for c in open_calls]
        return [("withdrawn", _close(c, "withdrawn", at), {"delivered_usd": "0"}) for c in open_calls]
    out: list[tuple[str, Call, dict[str, Any]]] = []
    levels = [e.level for e in policy.escalation]
    for call in open_calls:
        due = datetime.fromisoformat(call.deadline.replace("Z", "+00:00"))
        reached = levels.index(call.level) if call.level in levels else -1
        for i, e in enumerate(policy.escalation):
            if i > reached and now >= due + timedelta(hours=e.after_hours):
                call = Call(**{**call.__dict__, "level": e.level})
                out.append(("escalated", call, {"rule": e.id, "action": e.action, "policy": e.src.to_json()}))
    called = sum((c.amount_usd for c in open_calls), ZERO)
    increase = cov.deficit_usd - called
    if increase > 0 and increase >= policy.minimum_call_usd:
        out.append(("issued", _issue(policy, cov, now, at, increase, new_id),
                    {**rule, "further": True, "called_usd": usd(called), "increase_usd": usd(increase)}))
    return out


def _close(c: Call, status: str, at: str) -> Call:
    return Call(**{**c.__dict__, "status": status, "closed_at": at})
