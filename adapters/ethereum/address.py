"""Ethereum address validation: strict, so a typo never reaches a balance read.

An address is ``0x`` followed by 40 hex digits. All-lowercase or all-uppercase hex carries no
checksum and is accepted; mixed case *is* an EIP-55 checksum and must be a valid one, because a
mixed-case address with one wrong letter is exactly the typo EIP-55 exists to catch.
"""

from __future__ import annotations

import re
from typing import Iterable

from rules.errors import EvidenceError, InputError
from rules.values import eip55_checksum

_SHAPE = re.compile(r"^0x[0-9a-fA-F]{40}$")


def checksum_address(text: object, where: str = "address") -> str:
    """The EIP-55 form of ``text``, or ``EvidenceError('invalid_address')`` naming it."""
    if not isinstance(text, str) or not _SHAPE.match(text):
        raise EvidenceError("invalid_address", f"{where} {text!r} is not 0x followed by 40 hex digits")
    body = text[2:]
    canonical = eip55_checksum(text)
    if body != body.lower() and body != body.upper() and text != canonical:
        raise EvidenceError(
            "invalid_address", f"{where} {text} has mixed case but a bad EIP-55 checksum (expected {canonical})"
        )
    return canonical


def checksum_addresses(texts: Iterable[object], where: str = "address") -> tuple[str, ...]:
    """Validate a non-empty list of distinct addresses (a duplicate would be counted twice).

    Bad shape or checksum is ``EvidenceError('invalid_address')``; an empty list, a bare string
    or a duplicate is a malformed argument, so ``InputError``.
    """
    if isinstance(texts, (str, bytes)):
        raise InputError("must be a list of addresses, not one string", where)
    out = tuple(checksum_address(t, where) for t in texts)
    if not out:
        raise InputError("at least one address is required", where)
    seen: set[str] = set()
    for a in out:
        if a in seen:
            raise InputError(f"{a} is listed twice; its balance would be counted twice", where)
        seen.add(a)
    return out
