"""Exact amounts for the ledger: quantities in integer base units, money in ``Decimal`` cents rounded down.

No float anywhere. Text forms are ``rules.values`` (``decimal_text`` for money, ``units_text`` for base
units); ``plain`` is the one text form the ledger adds: a ``Decimal`` *quantity* without trailing zeros, so
that ``1.50`` and ``1.5`` fingerprint and read the same.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal

from rules.errors import InputError

CENT = Decimal("0.01")


def plain(d: Decimal) -> str:
    """A decimal without trailing zeros or exponent (for fingerprints, queries and messages)."""
    t = format(d, "f")
    return t.rstrip("0").rstrip(".") if "." in t else t


def cents(d: Decimal) -> Decimal:
    """Money rounded down to the cent (a credit never counts more than it is worth)."""
    return d.quantize(CENT, rounding=ROUND_DOWN)


def to_raw(q: Decimal, decimals: int, where: str) -> int:
    """A quantity in whole units as integer base units; more decimal places than the asset has is bad input."""
    raw = q.scaleb(decimals)
    if raw != raw.to_integral_value():
        raise InputError(f"{plain(q)} has more decimal places than the asset has ({decimals})", where)
    return int(raw)


def from_raw(raw: int, decimals: int) -> Decimal:
    return Decimal(raw).scaleb(-decimals)
