"""rules.engine.money: money text rounds down, shares are exact to the basis point."""

from __future__ import annotations

from decimal import Decimal

from rules.engine.money import cents, share_text


def test_cents_round_down_and_never_print_an_exponent():
    assert cents(Decimal("912500.009")) == "912500.00"
    assert cents(Decimal("0.019")) == "0.01"
    assert cents(Decimal("1E+6")) == "1000000.00"
    assert cents(Decimal(0)) == "0.00"


def test_a_share_is_rounded_down_to_the_basis_point():
    assert share_text(Decimal(1), Decimal(3)) == "0.3333"
    assert share_text(Decimal(2), Decimal(3)) == "0.6666"
    assert share_text(Decimal(5), Decimal(5)) == "1.0000"
    assert share_text(Decimal(0), Decimal(5)) == "0.0000"
    assert share_text(Decimal(5), Decimal(0)) == "0.0000"  # nothing at all: no share
