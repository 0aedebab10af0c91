"""Money in a decision: exact ``Decimal`` arithmetic, shown rounded down to the cent.

Decisions compute in a context of ``PRECISION`` digits (``Engine.decide`` sets it), in which every
product and sum here is exact; only the texts a decision shows are rounded, always down.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal

CENT = Decimal("0.01")
ZERO = Decimal(0)
ONE = Decimal(1)
PRECISION = 80  # digits: quantity (<= 10**12, 18 places) x price (<= 10**9, 18 places) stays exact


def cents(d: Decimal) -> str:
    """Money rounded down to the cent, as text (a value quantized to cents never prints an exponent)."""
    return str(d.quantize(CENT, ROUND_DOWN))


def share_text(part: Decimal, whole: Decimal) -> str:
    """part / whole as a fraction rounded down to the basis point, e.g. '0.4137' (exact: an integer
    division, no rounded quotient in between)."""
    n = part * 10000 // whole if whole else ZERO
    return str(n.scaleb(-4)) if n else "0.0000"  # 0 would print as 0E-4
