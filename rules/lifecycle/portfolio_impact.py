"""A policy change's effect on a portfolio: every holding decided under both bundles; each holding whose
eligibility, haircut or collateral value changes, with totals per asset and per account.

Deficit (per account, in the portfolio file): a query line may carry ``margin_requirement_usd`` (a decimal
string; the same for every line of the account). With a requirement, the account is *in deficit* when its
collateral value is below the requirement; it *falls into deficit* when it was not in deficit before the
change and is after it. Without one, the account is in deficit after the change when its collateral value
after is below the value before (the change takes collateral away); the shortfall is before - after.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Sequence

from rules.engine.decide import Engine
from rules.engine.query import Query, parse_json_text, parse_query
from rules.errors import InputError
from rules.values import decimal_text

ZERO = Decimal(0)


@dataclass(frozen=True)
class Holding:
    line: str  # file:line
    query: Query
    requirement: Decimal | None


def read_portfolio(text: str, where: str) -> list[Holding]:
    """JSON Lines of queries; each may carry ``margin_requirement_usd`` (per account). All lines are checked
    before anything is decided; every bad line is reported."""
    out: list[Holding] = []
    errors: list[str] = []
    reqs: dict[str, tuple[Decimal, str]] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        at = f"{where}:{n}"
        try:
            doc = parse_json_text(line, at)
            req = None
            if isinstance(doc, dict) and "margin_requirement_usd" in doc:
                raw = doc.pop("margin_requirement_usd")
                req = _requirement(raw, at)
            q = parse_query(doc, at)
            if req is not None:
                seen = reqs.setdefault(q.account, (req, at))
                if seen[0] != req:
                    raise InputError(f"margin_requirement_usd {raw} for account {q.account} differs from "
                                     f"{seen[0]} given at {seen[1]}", at)
            out.append(Holding(at, q, req))
        except InputError as e:
            errors.append(str(e))
    if errors:
        shown = errors[:20] + ([f"... and {len(errors) - 20} more"] if len(errors) > 20 else [])
        raise InputError(f"{len(errors)} invalid portfolio line(s); nothing was compared:\n  " + "\n  ".join(shown))
    if not out:
        raise InputError("the portfolio file holds no queries", where)
    return out


def _requirement(raw: Any, at: str) -> Decimal:
    if not isinstance(raw, str):
        raise InputError("margin_requirement_usd must be a decimal string, for example \"2500000.00\"", at)
    try:
        d = Decimal(raw)
    except InvalidOperation:
        raise InputError(f"margin_requirement_usd {raw!r} is not a decimal number", at) from None
    if not d.is_finite() or d < 0:
        raise InputError(f"margin_requirement_usd must be zero or more, not {raw}", at)
    return d


@dataclass
class HoldingImpact:
    line: str
    account: str
    asset: str
    quantity: str
    before: dict[str, Any]
    after: dict[str, Any]

    @property
    def changes(self) -> list[str]:
        return [k for k in ("eligible", "haircut", "collateral_value_usd") if self.before[k] != self.after[k]]

    def to_json(self) -> dict[str, Any]:
        return {"line": self.line, "account": self.account, "asset": self.asset, "quantity": self.quantity,
                "before": self.before, "after": self.after, "changed": self.changes}


@dataclass
class Totals:
    before: Decimal = ZERO
    after: Decimal = ZERO
    holdings: int = 0
    changed: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"collateral_before_usd": decimal_text(self.before),
                "collateral_after_usd": decimal_text(self.after), "change_usd": decimal_text(self.after - self.before), "holdings": self.holdings,
                "holdings_changed": self.changed}


@dataclass
class AccountTotals(Totals):
    requirement: Decimal | None = None

    @property
    def deficit_before(self) -> Decimal:
        return max(self.requirement - self.before, ZERO) if self.requirement is not None else ZERO

    @property
    def deficit_after(self) -> Decimal:
        base = self.requirement if self.requirement is not None else self.before
        return max(base - self.after, ZERO)

    @property
    def falls_into_deficit(self) -> bool:
        return self.deficit_before == 0 and self.deficit_after > 0

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(),
                "margin_requirement_usd": decimal_text(self.requirement) if self.requirement is not None else None,
                "deficit_measured_against": "margin requirement" if self.requirement is not None else "value before",
                "deficit_before_usd": decimal_text(self.deficit_before),
                "deficit_after_usd": decimal_text(self.deficit_after),
                "falls_into_deficit": self.falls_into_deficit}


@dataclass
class Impact:
    holdings: list[HoldingImpact]
    per_asset: dict[str, Totals]
    per_account: dict[str, AccountTotals]

    @property
    def changed(self) -> list[HoldingImpact]:
        return [h for h in self.holdings if h.changes]

    @property
    def into_deficit(self) -> list[str]:
        return [a for a, t in self.per_account.items() if t.falls_into_deficit]

    def to_json(self) -> dict[str, Any]:
        before = sum((t.before for t in self.per_account.values()), ZERO)
        after = sum((t.after for t in self.per_account.values()), ZERO)
        return {"holdings": len(self.holdings), "holdings_changed": len(self.changed),
                "collateral_before_usd": decimal_text(before), "collateral_after_usd": decimal_text(after),
                "changed": [h.to_json() for h in self.changed],
                "per_asset": {k: v.to_json() for k, v in sorted(self.per_asset.items())},
                "per_account": {k: v.to_json() for k, v in sorted(self.per_account.items())},
                "accounts_falling_into_deficit": self.into_deficit,
                "deficit_definition": "with margin_requirement_usd: collateral after < requirement (and not before); "
                                      "without: collateral after < collateral before"}


def _summary(d: dict[str, Any]) -> dict[str, Any]:
    return {"eligible": d["eligible"], "haircut": (d.get("haircut") or {}).get("total"),
            "collateral_value_usd": d["collateral_value_usd"], "failed_rules": d["failed_rules"]}


def portfolio_impact(old: Engine, new: Engine, holdings: Sequence[Holding],
                     progress: Callable[[int], None] | None = None) -> Impact:
    out: list[HoldingImpact] = []
    per_asset: dict[str, Totals] = {}
    per_account: dict[str, AccountTotals] = {}
    for i, h in enumerate(holdings):
        q = h.query
        try:
            before = _summary(old.decide(q, decision_id="diff-old").to_json())
            after = _summary(new.decide(q, decision_id="diff-new").to_json())
        except InputError as e:
            raise InputError(f"{e}; nothing was compared", h.line) from None
        hi = HoldingImpact(h.line, q.account, q.asset, decimal_text(q.quantity), before, after)
        out.append(hi)
        b, a = Decimal(before["collateral_value_usd"]), Decimal(after["collateral_value_usd"])
        for t in (per_asset.setdefault(q.asset, Totals()), per_account.setdefault(q.account, AccountTotals())):
            t.before += b
            t.after += a
            t.holdings += 1
            t.changed += bool(hi.changes)
        if h.requirement is not None:
            per_account[q.account].requirement = h.requirement
        if progress:
            progress(i + 1)
    return Impact(out, per_asset, per_account)
