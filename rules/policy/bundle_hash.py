"""A bundle's content hash: sha256 over the canonical form of its policy documents.

Frozen: every stored bundle, signature and logged decision names a bundle by this hash, so the
canonical form must give the same bytes for the same documents forever. Whitespace, comments, key
order and how a number is written (``0.2`` or ``0.20``, ``100`` or ``1E+2``) do not change it; any real
change does.
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from typing import Any, Mapping

from rules.values import decimal_text


def canonical_json(value: Any) -> str:
    """Canonical JSON: sorted keys, no whitespace, Decimals as normalised decimal strings."""

    def norm(v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):
            v = Decimal(v)  # a number is hashed by its value: 0 and 0.00 are the same number
        if isinstance(v, Decimal):
            n = v.normalize()
            return {"$decimal": decimal_text(n) if n == n.to_integral_value() or n.adjusted() > -30 else str(n)}
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        if isinstance(v, list):
            return [norm(x) for x in v]
        return v

    return json.dumps(norm(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def bundle_hash(docs: Mapping[str, Any]) -> str:
    """sha256 over the canonical form of the policy documents (file name -> parsed content)."""
    return hashlib.sha256(canonical_json(dict(docs)).encode("utf-8")).hexdigest()
