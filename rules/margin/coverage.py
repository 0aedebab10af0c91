"""Coverage per account: what counts as collateral against what the DCOs require, and the excess or deficit.

- **Collateral on the ledger**: the account's counted value (after haircuts and concentration limits, as
  credited and revalued: ``rules.ledger``). Now: the sum of its positions' ``collateral_value_usd``; as of a
  time T: the sum of its journal lines' signed ``collateral_value_usd`` recorded before T (every credit,
  withdrawal, shortfall and revaluation is such a delta), so the past is read from the ledger's own record.
- **Collateral off the ledger**: cash and US Treasuries imported with the requirements, valued on T's day
  under the margin policy's own schedules (``rules.margin.valuation``); each holding as last imported, and
  not before the day it was struck (its ``as_of``).
- **Requirement**: per DCO, the requirement of the latest business day on or before T's day (a DCO whose
  newest requirement is older still counts it, and the coverage names the day); summed over the DCOs.
  A cross-margin reduction (``rules.margin.cross``), where the account qualifies, comes off its DCO's figure.

``excess_usd`` = collateral − requirement when positive, else ``deficit_usd`` its opposite; an account with no
requirement on file has status ``no requirement`` (nothing to cover: nothing is called or refused for it).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, Iterable, Mapping

from rules.margin.policy import MarginPolicy
from rules.margin.records import OffLedger, Requirement
from rules.margin.valuation import Valued, usd, value

ZERO = Decimal(0)


@dataclass
class Coverage:
    account: str
    as_of: str
    requirements: list[dict[str, Any]]
    requirement_usd: Decimal
    ledger_usd: Decimal
    offledger: list[Valued]
    reductions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def offledger_usd(self) -> Decimal:
        return sum((v.counted_usd for v in self.offledger), ZERO)

    @property
    def collateral_usd(self) -> Decimal:
        return self.ledger_usd + self.offledger_usd

    @property
    def has_requirement(self) -> bool:
        return bool(self.requirements)

    @property
    def excess_usd(self) -> Decimal:
        return max(self.collateral_usd - self.requirement_usd, ZERO)

    @property
    def deficit_usd(self) -> Decimal:
        return max(self.requirement_usd - self.collateral_usd, ZERO) if self.has_requirement else ZERO

    @property
    def status(self) -> str:
        if not self.has_requirement:
            return "no requirement"
        return "deficit" if self.deficit_usd > 0 else "covered"

    def to_json(self) -> dict[str, Any]:
        return {"account": self.account, "as_of": self.as_of, "status": self.status,
                "requirement_usd": usd(self.requirement_usd), "requirements": self.requirements,
                "cross_margin": self.reductions,
                "ledger_collateral_usd": usd(self.ledger_usd),
                "offledger_collateral_usd": usd(self.offledger_usd),
                "offledger": [v.to_json() for v in self.offledger],
                "collateral_usd": usd(self.collateral_usd),
                "excess_usd": usd(self.excess_usd), "deficit_usd": usd(self.deficit_usd)}


def latest_requirements(reqs: Iterable[Requirement]) -> dict[str, list[Requirement]]:
    """Per account, each DCO's requirement of its latest business day (``reqs`` already up to the day)."""
    latest: dict[tuple[str, str], Requirement] = {}
    for r in reqs:
        key = (r.account, r.dco)
        if key not in latest or latest[key].business_day < r.business_day:
            latest[key] = r
    out: dict[str, list[Requirement]] = defaultdict(list)
    for (acct, _), r in sorted(latest.items()):
        out[acct].append(r)
    return dict(out)


def coverage(policy: MarginPolicy, ledger: Mapping[str, Decimal], reqs: Mapping[str, list[Requirement]],
             held: Iterable[OffLedger], day: date, as_of: str, reductions: Mapping[tuple[str, str], Any] | None = None,
             accounts: Iterable[str] | None = None) -> list[Coverage]:
    """Coverage of every account (or of ``accounts``) from its parts; ``reductions``: (account, dco) -> the
    cross-margin reduction (``rules.margin.cross.Reduction``) that applies to that requirement."""
    by_account: dict[str, list[OffLedger]] = defaultdict(list)
    for h in held:
        if h.as_of <= day:  # a holding struck after the day was not held then
            by_account[h.account].append(h)
    names = sorted(set(accounts) if accounts is not None else set(ledger) | set(reqs) | set(by_account))
    out = []
    for acct in names:
        rows, total, cuts = [], ZERO, []
        for r in reqs.get(acct, []):
            cut = (reductions or {}).get((acct, r.dco))
            due = r.requirement_usd - (cut.amount_usd if cut is not None else ZERO)
            rows.append({"dco": r.dco, "business_day": r.business_day.isoformat(),
                         "requirement_usd": usd(r.requirement_usd), "net_of_offsets": r.net_of_offsets,
                         "counted_requirement_usd": usd(due)})
            if cut is not None:
                cuts.append(cut.to_json())
            total += due
        out.append(Coverage(acct, as_of, rows, total, ledger.get(acct, ZERO),
                            [value(policy, h, day) for h in by_account.get(acct, [])], cuts))
    return out
