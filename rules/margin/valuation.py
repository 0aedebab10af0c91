"""Collateral held off the ledger, valued under the margin policy's own schedules (``offledger``): cash in
full (or its schedule's haircut), US Treasuries by time to maturity (SEC Rule 15c3-1's table). Values are
rounded down to the cent, haircuts taken up: conservative both ways. A Treasury that has matured, or has no
price, counts nothing (fail closed), and says why."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import ROUND_DOWN, Decimal

from rules.margin.policy import MarginPolicy, Schedule
from rules.margin.records import OffLedger
from rules.values import decimal_text

CENT = Decimal("0.01")


def cents_down(x: Decimal) -> Decimal:
    return x.quantize(CENT, rounding=ROUND_DOWN)


def usd(x: Decimal) -> str:
    """Money as text with its cents (every margin amount has at most two places: exact)."""
    return decimal_text(x.quantize(CENT))


def months_between(start: date, end: date) -> int:
    """Whole months from ``start`` to ``end`` (a month counts once its day is reached)."""
    months = (end.year - start.year) * 12 + (end.month - start.month)
    return months - 1 if end.day < start.day else months


@dataclass(frozen=True)
class Valued:
    holding: OffLedger
    market_value_usd: Decimal
    haircut: Decimal
    counted_usd: Decimal
    rule: str
    note: str

    def to_json(self) -> dict[str, str | None]:
        return {"holding": self.holding.holding, "class": self.holding.cls, "cusip": self.holding.cusip,
                "market_value_usd": usd(self.market_value_usd), "haircut": decimal_text(self.haircut),
                "counted_usd": usd(self.counted_usd), "rule": self.rule, "note": self.note}


def bucket_haircut(s: Schedule, months: int) -> tuple[Decimal, str]:
    for below, haircut in s.buckets:
        if below is None or months < below:
            return haircut, (f"{months} months to maturity: below {below}" if below else f"{months} months to maturity")
    return Decimal(1), "beyond the table"  # pragma: no cover - the schema requires a last open bucket


def value(policy: MarginPolicy, h: OffLedger, day: date) -> Valued:
    """``h`` valued on ``day``."""
    s = policy.schedules.get(h.cls)
    if s is None:
        return Valued(h, Decimal(0), Decimal(1), Decimal(0), "", f"no schedule for class {h.cls}: counts nothing")
    if h.cls == "cash":
        mv = cents_down(h.amount_usd or Decimal(0))
        haircut, note = (s.haircut if s.haircut is not None else Decimal(0)), "cash"
    else:
        if h.maturity is None or h.face_value_usd is None or h.price_pct is None:
            return Valued(h, Decimal(0), Decimal(1), Decimal(0), s.id, "no price or maturity: counts nothing")
        if h.maturity <= day:
            return Valued(h, Decimal(0), Decimal(1), Decimal(0), s.id, f"matured {h.maturity}: counts nothing")
        mv = cents_down(h.face_value_usd * h.price_pct / 100)
        if s.buckets:
            haircut, note = bucket_haircut(s, months_between(day, h.maturity))
        else:
            haircut, note = s.haircut or Decimal(0), "flat"
    return Valued(h, mv, haircut, cents_down(mv * (1 - haircut)), s.id, note)
