"""The margin room's records, as ``rules.margin.store`` reads and writes them. Money is ``Decimal``; days are
``datetime.date``; times RFC 3339 UTC text (``rules.values.utc_text``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from rules.values import decimal_text


@dataclass(frozen=True)
class Requirement:
    """What a DCO requires of one account on one business day (maybe already net of the DCO's own offsets)."""

    account: str
    dco: str
    business_day: date
    requirement_usd: Decimal
    net_of_offsets: bool
    cross_margin_reduction_usd: Decimal = Decimal(0)  # the DCO's reduction, if the account qualifies
    import_id: str = ""
    imported_at: str = ""

    def row(self) -> dict[str, Any]:
        return {"account": self.account, "dco": self.dco, "business_day": self.business_day.isoformat(),
                "requirement_usd": decimal_text(self.requirement_usd), "net_of_offsets": self.net_of_offsets,
                "cross_margin_reduction_usd": decimal_text(self.cross_margin_reduction_usd)}


@dataclass(frozen=True)
class OffLedger:
    """Collateral held off the ledger: ``cash`` (``amount_usd``) or ``us-treasury`` (face value, price in percent
    of face, maturity, CUSIP). ``as_of``: the day its amount or price was struck."""

    account: str
    holding: str
    cls: str
    as_of: date
    amount_usd: Decimal | None = None
    face_value_usd: Decimal | None = None
    price_pct: Decimal | None = None
    maturity: date | None = None
    cusip: str | None = None
    import_id: str = ""  # the import that stored it (not part of its row)

    def row(self) -> dict[str, Any]:
        def t(d: Decimal | None) -> str | None:
            return None if d is None else decimal_text(d)
        return {"account": self.account, "holding": self.holding, "class": self.cls, "amount_usd": t(self.amount_usd),
                "face_value_usd": t(self.face_value_usd), "price_pct": t(self.price_pct),
                "maturity": None if self.maturity is None else self.maturity.isoformat(), "cusip": self.cusip,
                "as_of": self.as_of.isoformat()}


@dataclass(frozen=True)
class Call:
    """A margin call and where it stands: ``open`` (``level`` once escalated), ``met`` or ``withdrawn``."""

    call_id: str
    account: str
    business_day: date
    amount_usd: Decimal
    deficit_usd: Decimal
    issued_at: str
    deadline: str
    status: str
    level: str | None = None
    closed_at: str | None = None

    def row(self) -> dict[str, Any]:
        return {"call_id": self.call_id, "account": self.account, "business_day": self.business_day.isoformat(),
                "amount_usd": decimal_text(self.amount_usd), "deficit_usd": decimal_text(self.deficit_usd),
                "issued_at": self.issued_at, "deadline": self.deadline, "status": self.status, "level": self.level,
                "closed_at": self.closed_at}
