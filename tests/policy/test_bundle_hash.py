"""rules.policy.bundle_hash: the canonical form hashes a number by its value, keys in any order."""

from __future__ import annotations

from decimal import Decimal

from rules.policy.bundle_hash import canonical_json


def test_canonical_json_numbers():
    assert canonical_json({"a": Decimal("0.20")}) == canonical_json({"a": Decimal("0.2")})
    assert canonical_json({"a": Decimal("1E+2")}) == canonical_json({"a": 100})
    assert canonical_json({"a": True}) != canonical_json({"a": 1})
    assert canonical_json({"b": 1, "a": 2}) == canonical_json({"a": 2, "b": 1})
    assert canonical_json({"a": "0.2"}) != canonical_json({"a": Decimal("0.2")})
