"""Margin records as leaves of the verifiable log: one encoder and one frozen decoder per kind.

- ``margin.requirement``: one import of a requirements file (``dacp margin import``, ``POST
  /v1/margin/requirements``): the file's name and sha256, and every requirement row and off-ledger
  collateral row it stored and every cross-margin profile, exactly as stored (money as exact decimal text,
  never a float);
- ``margin.call``: one step of a margin call (``issued``, ``met``, ``withdrawn``, ``escalated``) with the call
  as it stands after the step and the coverage that caused it.

Body layout, version 1: ``{"margin": {"version": 1, "operation": <kind's operation>, "at": <time>, ...}}``.
The reader of version 1 is frozen (as ``rules.audit.entries``' decoders are): a new layout is a new version
read beside it.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from rules.errors import StorageError

VERSION = 1  # the margin block's layout this version writes
READS = (1,)
IMPORT_KIND = "margin.requirement"
CALL_KIND = "margin.call"
CALL_STEPS = ("issued", "met", "withdrawn", "escalated")
_REQ_FIELDS = ("account", "dco", "business_day", "requirement_usd", "net_of_offsets", "cross_margin_reduction_usd")
_COL_FIELDS = ("account", "holding", "class", "amount_usd", "face_value_usd", "price_pct", "maturity", "cusip", "as_of")
_CALL_FIELDS = ("call_id", "account", "business_day", "amount_usd", "deficit_usd", "issued_at", "deadline", "status",
                "level", "closed_at")


def import_body(at: str, source: str, sha256: str, requirements: Sequence[Mapping[str, Any]],
                collateral: Sequence[Mapping[str, Any]], profiles: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The body of a ``margin.requirement`` leaf (rows as ``rules.margin.store`` stores them)."""
    return {"margin": {"version": VERSION, "operation": "import", "at": at, "source": source, "sha256": sha256,
                       "requirements": [{k: r[k] for k in _REQ_FIELDS} for r in requirements],
                       "collateral": [{k: c.get(k) for k in _COL_FIELDS} for c in collateral],
                       "cross_margin": [dict(p) for p in profiles]}}


def call_body(at: str, step: str, call: Mapping[str, Any], coverage: Mapping[str, Any]) -> dict[str, Any]:
    """The body of a ``margin.call`` leaf: the step, the call after it and the account's coverage then."""
    if step not in CALL_STEPS:
        raise StorageError(f"margin call step {step!r} is not one of {', '.join(CALL_STEPS)}")
    return {"margin": {"version": VERSION, "operation": "call", "at": at, "step": step,
                       "call": {k: call.get(k) for k in _CALL_FIELDS}, "coverage": dict(coverage)}}


# -- reading (frozen: version 1) -------------------------------------------------------------------
def _block(body: Mapping[str, Any], operation: str, where: str) -> dict[str, Any]:
    b = body.get("margin")
    if not isinstance(b, dict) or b.get("version") not in READS or b.get("operation") != operation:
        raise StorageError(f"{where}: not a margin {operation} entry of a version this code reads")
    if not isinstance(b.get("at"), str):
        raise StorageError(f"{where}: a margin {operation} entry without its time")
    return b


def read_import(body: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A ``margin.requirement`` leaf's block: source, sha256, requirement and collateral rows (checked)."""
    b = _block(body, "import", where)
    for part, fields in (("requirements", _REQ_FIELDS), ("collateral", _COL_FIELDS)):
        rows = b.get(part)
        if not isinstance(rows, list) or not all(isinstance(r, dict) and set(r) == set(fields) for r in rows):
            raise StorageError(f"{where}: its {part} do not have the layout of version 1")
    if not isinstance(b.get("cross_margin"), list) or not all(isinstance(p, dict) and isinstance(p.get("account"), str)
                                                              for p in b["cross_margin"]):
        raise StorageError(f"{where}: its cross-margin profiles do not have the layout of version 1")
    return b


def read_call(body: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A ``margin.call`` leaf's block: the step, the call and the coverage (checked)."""
    b = _block(body, "call", where)
    call = b.get("call")
    if b.get("step") not in CALL_STEPS or not isinstance(call, dict) or set(call) != set(_CALL_FIELDS):
        raise StorageError(f"{where}: its call does not have the layout of version 1")
    return b
