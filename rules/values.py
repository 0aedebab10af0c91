"""Shared value helpers: money and quantities as text, times in UTC. One piece each, used by every layer
(adapters included: this module imports nothing of the engine).

Money and quantities are ``Decimal`` or integer base units, never binary floats; their text is plain
positional notation (``format(d, "f")``: no exponent). Times are timezone-aware and shown in UTC with ``Z``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal


def decimal_text(d: Decimal) -> str:
    """``Decimal`` as plain positional text, exactly as it is (``Decimal("1E+2")`` -> ``"100"``)."""
    return format(d, "f")


def units_text(raw: int, decimals: int) -> str:
    """Integer base units as whole units without trailing zeros (``150000000, 8`` -> ``"1.5"``)."""
    t = format(Decimal(raw).scaleb(-decimals), "f")
    return t.rstrip("0").rstrip(".") if "." in t else t


def now_utc() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(timezone.utc)


def utc_text(ts: datetime, timespec: str = "auto") -> str:
    """An aware time as RFC 3339 text in UTC with ``Z`` (``timespec`` as for ``datetime.isoformat``)."""
    return ts.astimezone(timezone.utc).isoformat(timespec=timespec).replace("+00:00", "Z")


def parse_utc_text(text: str) -> datetime:
    """RFC 3339 text (``Z`` or an offset) as a datetime; raises ``ValueError``/``OverflowError`` on bad text."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def eip55_checksum(address: str) -> str:
    """The EIP-55 checksummed form of an Ethereum address (``0x`` and 40 hex digits, any case).

    A mixed-case address *is* a checksum: it is valid only if it equals this form. Callers check the
    shape first (``ValueError`` otherwise)."""
    # Imported here, not at the top, for start-up time only: eth_utils takes ~0.2 s to import and
    # only a bundle with a mixed-case contract address or an Ethereum read needs it.
    from eth_utils import to_checksum_address

    return str(to_checksum_address(address))
