"""Shared value helpers: money and quantities as text, times in UTC. One piece each, used by every layer
(adapters included: this module imports nothing of the engine).

Money and quantities are ``Decimal`` or integer base units, never binary floats; their text is plain
positional notation (``format(d, "f")``: no exponent). Times are timezone-aware and shown in UTC with ``Z``.

**The value grammar** (``decimal_value``, ``time_value``, ``identifier``, ``bounded_int_text``) is the one strict
reading of value text that every door uses - CLI flags, JSON and YAML documents, HTTP bodies - so the same text
gets the same answer everywhere:

* decimals are ASCII digits with at most one ``.``: no sign, space, exponent, underscore, ``NaN`` or non-ASCII
  digits (``١٢`` is not 12); the digit count is bounded *before* any ``int`` or ``Decimal`` conversion;
* every pattern is matched whole (``re.fullmatch``; the schema patterns end with ``\\Z``): ``"12.5\\n"`` is
  not ``12.5``;
* times are RFC 3339 with a zone, and must lie within ``MIN_YEAR``..``MAX_YEAR`` in UTC, far enough from
  Python's representable range that no offset or look-back can overflow (refused, never a crash);
* identifiers (account, participant, custodian, query id) share ``IDENTIFIER``; assets ``ASSET``.

A refusal is an ``InputError`` naming ``where`` and what is wrong.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from decimal import Decimal

from rules.errors import InputError

MAX_INT_DIGITS = 30  # digits before the point of any decimal text; far above any quantity or price
MAX_FRACTION_DIGITS = 30  # digits after it (the query contract allows 18: rules/schema/query.schema.json)
MAX_NUMBER_TEXT = 100  # a number token in a JSON or YAML document longer than this is refused unread
MIN_YEAR, MAX_YEAR = 1900, 9000  # in UTC: a year away from datetime's ends (1 and 9999) for any offset
DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")
TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,9})?)?"
                       r"(?:Z|[+-][0-9]{2}:[0-9]{2})")
DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,79}")
ASSET = re.compile(r"[A-Za-z0-9]{1,12}")
_KINDS = {"identifier": (IDENTIFIER, "1-80 characters: ASCII letters, digits and . _ : / - (starting with a "
                         "letter or digit)"),
          "asset": (ASSET, "1-12 ASCII letters and digits, e.g. BTC")}


def _shown(text: str) -> str:
    return repr(text[:40] + ("…" if len(text) > 40 else ""))


def decimal_value(text: object, where: str, *, int_digits: int = MAX_INT_DIGITS,
                  fraction_digits: int = MAX_FRACTION_DIGITS) -> Decimal:
    """Plain ASCII decimal text (``"12.5"``) as an exact ``Decimal``; ``InputError`` naming ``where`` otherwise.
    The length is checked first, then the whole text against ``DECIMAL``, and only then is it converted."""
    if not isinstance(text, str):
        raise InputError('write the number as a decimal string, e.g. "12.5"', where)
    plain = ("is not a plain decimal number (ASCII digits, at most one '.', e.g. \"12.5\"; no sign, space, "
             "exponent, underscore, NaN or Infinity)")
    if len(text) > int_digits + fraction_digits + 1:  # refused unconverted; only its head is looked at
        if DECIMAL.fullmatch(text[:200]) is None:
            raise InputError(f"{_shown(text)} {plain}", where)
    elif DECIMAL.fullmatch(text) is None:
        raise InputError(f"{_shown(text)} {plain}", where)
    whole, _, fraction = text.partition(".")
    if len(whole) > int_digits or len(fraction) > fraction_digits:
        raise InputError(f"{_shown(text)} has too many digits (at most {int_digits} before the point and "
                         f"{fraction_digits} after it)", where)
    return Decimal(text)


def time_value(text: object, where: str) -> datetime:
    """RFC 3339 text with a zone (``Z`` or ``+hh:mm``) as an aware datetime in UTC, within ``MIN_YEAR`` ..
    ``MAX_YEAR``; ``InputError`` naming ``where`` otherwise (never ``OverflowError``)."""
    if not isinstance(text, str) or len(text) > 64 or TIMESTAMP.fullmatch(text) is None:
        shown = _shown(text) if isinstance(text, str) else "it"
        raise InputError(f"{shown} is not an RFC 3339 date and time with a zone, e.g. 2026-11-20T14:00:00Z", where)
    try:
        ts = parse_utc_text(text).astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise InputError(f"{_shown(text)} is not a real date and time", where) from None
    if not MIN_YEAR <= ts.year <= MAX_YEAR:
        raise InputError(f"{_shown(text)} is out of range (years {MIN_YEAR} to {MAX_YEAR} in UTC)", where)
    return ts


def identifier(text: object, where: str, kind: str = "identifier") -> str:
    """An account, participant, custodian or query id (``kind="identifier"``) or an asset symbol
    (``kind="asset"``), matched whole; ``InputError`` naming ``where`` otherwise."""
    pattern, says = _KINDS[kind]
    if not isinstance(text, str) or len(text) > 80 or pattern.fullmatch(text) is None:
        shown = _shown(text) if isinstance(text, str) else "it"
        raise InputError(f"{shown} is not a valid {'asset' if kind == 'asset' else 'identifier'}: {says}", where)
    return text


MAX_TEXT = 200  # characters of a free-text field or a custody address
MAX_ADDRESSES = 100  # custody addresses named by one request


def address_list(v: object, where: str) -> tuple[str, ...]:
    """Custody addresses as a request names them (1 to ``MAX_ADDRESSES`` distinct non-empty strings); their
    chain's grammar (checksum, network) is the verifier's, which reads them."""
    if not isinstance(v, (list, tuple)) or not 1 <= len(v) <= MAX_ADDRESSES:
        raise InputError(f"must be a list of 1 to {MAX_ADDRESSES} custody addresses", where)
    if not all(isinstance(a, str) and a.strip() and len(a) <= MAX_TEXT for a in v):
        raise InputError(f"each address must be a non-empty string of at most {MAX_TEXT} characters", where)
    if len(set(v)) != len(v):
        raise InputError("an address is listed twice", where)
    return tuple(v)


def bounded_int_text(text: str, where: str | None = None) -> int:
    """An integer token of a JSON or YAML document (sign and ASCII digits), refused beyond ``MAX_NUMBER_TEXT``
    characters before ``int`` sees it (Python refuses over 4,300 digits with a ``ValueError``)."""
    if len(text) > MAX_NUMBER_TEXT:
        raise InputError(f"a number of {len(text):,} characters is too long (at most {MAX_NUMBER_TEXT})", where)
    return int(text)


def bounded_decimal_text(text: str, where: str | None = None) -> Decimal:
    """A JSON or YAML number token with a point or exponent as an exact ``Decimal``, length-bounded the same way."""
    if len(text) > MAX_NUMBER_TEXT:
        raise InputError(f"a number of {len(text):,} characters is too long (at most {MAX_NUMBER_TEXT})", where)
    return Decimal(text)


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
