"""What a replay compares: a decision against the same query decided again (``dacp replay``,
``rules.app.Dacp.replay``), and the same comparison the evaluators are held to in the tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ReplayResult:
    decision_id: str
    identical: bool
    original: dict[str, Any]
    replayed: dict[str, Any]
    differences: list[str]


def comparable(decision: dict[str, Any]) -> dict[str, Any]:
    """A decision without what differs by design: its id, and which evaluator ran (they must agree)."""
    return {k: v for k, v in decision.items() if k not in ("decision_id", "engine")}


def diff_decisions(a: dict[str, Any], b: dict[str, Any], path: str = "", recorded_only: bool = False) -> list[str]:
    """The differences from ``a`` to ``b``. ``recorded_only``: a field ``a`` does not have is no difference (a
    decision logged by an earlier version lacks fields a later engine adds, e.g. a limit's room left)."""
    out: list[str] = []
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) if recorded_only else set(a) | set(b)):
            out += diff_decisions(a.get(k), b.get(k), f"{path}.{k}" if path else k, recorded_only)
    elif isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b)):
            out += diff_decisions(x, y, f"{path}[{i}]", recorded_only)
        if len(a) != len(b):
            out.append(f"{path}: {len(a)} items -> {len(b)} items")
    elif a != b:
        out.append(f"{path}: {a!r} -> {b!r}")
    return out
