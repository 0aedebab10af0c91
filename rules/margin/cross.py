"""The customer cross-margin reduction in coverage: where an account's requirement at the programme's DCO
carries a cross-margin reduction (the DCO's figure, imported with it) the programme's rules decide whether the
account qualifies (``rules.engine.cross_margin``: trace, rule ids, policy file:line); if it does, the
reduction comes off that requirement (never below zero), else it does not and the decision says why. Either
way the coverage names the decision."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Mapping

from rules.engine.cross_margin import CrossMargin, decide
from rules.margin.records import Requirement
from rules.margin.valuation import usd


@dataclass(frozen=True)
class Reduction:
    dco: str
    asked_usd: Decimal  # the DCO's reduction
    amount_usd: Decimal  # what comes off the requirement (0 when the account does not qualify)
    decision: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"dco": self.dco, "programme": self.decision["programme"], "eligible": self.decision["eligible"],
                "reduction_usd": usd(self.asked_usd), "applied_usd": usd(self.amount_usd), "decision": self.decision}


def reductions(xm: CrossMargin | None, reqs: Mapping[str, list[Requirement]],
               profiles: Mapping[str, dict[str, Any]]) -> dict[tuple[str, str], Reduction]:
    """(account, dco) -> the reduction decided for each requirement at the programme's DCO that asks for one."""
    out: dict[tuple[str, str], Reduction] = {}
    if xm is None:
        return out
    for account, rows in reqs.items():
        for r in rows:
            if r.dco != xm.dco or r.cross_margin_reduction_usd <= 0:
                continue
            d = decide(xm, account, profiles.get(account))
            amount = min(r.cross_margin_reduction_usd, r.requirement_usd) if d["eligible"] else Decimal(0)
            out[(account, r.dco)] = Reduction(r.dco, r.cross_margin_reduction_usd, amount, d)
    return out
