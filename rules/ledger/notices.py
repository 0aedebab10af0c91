"""Operational incident notices (``dacp incident record`` / ``list``): what Letter 26-05 asks an FCM to give
prompt notice of - significant cybersecurity incidents and disruptions of its systems - and any other
operational incident worth a record.

Each notice is an ``incident`` entry of the verifiable log (``rules.audit.incident_format``) and a row of
``ledger_incidents`` (its kind, ``significant`` or ``not_significant`` as severity, the description, the times,
and the entry's id) written in ONE transaction. Listing reads the rows and serves each notice from its log
entry, verified (an edited row or entry is refused, never served). The ledger's own automatic incidents
(node outages, shortfalls, refused double counts...) stay rows of the same table; value deficits are margin
events, not incidents.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rules.audit.incident_format import KINDS, IncidentNotice, incident_body, read_incident
from rules.audit.log import DecisionLog
from rules.engine.ids import new_id
from rules.errors import InputError, TamperedError
from rules.ledger.records import Incident
from rules.ledger.store import LedgerStore
from rules.values import utc_text

MAX_DESCRIPTION = 4000
SEVERITY = {True: "significant", False: "not_significant"}


def check(kind: str, significant: bool, start: datetime, end: datetime | None, description: str) -> str:
    """A notice's parts checked (``InputError`` naming the part); the description as recorded."""
    if kind not in KINDS:
        raise InputError(f"unknown incident kind {kind!r} (use one of {', '.join(KINDS)})", "kind")
    if not isinstance(significant, bool):
        raise InputError("must be true or false", "significant")
    text = description.strip() if isinstance(description, str) else ""
    if not text or len(text) > MAX_DESCRIPTION:
        raise InputError(f"describe the incident in 1-{MAX_DESCRIPTION} characters", "description")
    if end is not None and end < start:
        raise InputError(f"the incident ends ({utc_text(end)}) before it starts ({utc_text(start)})", "end")
    return text


def record(store: LedgerStore, log: DecisionLog, *, kind: str, significant: bool, start: datetime,
           end: datetime | None, description: str, recorded_by: str | None = None) -> IncidentNotice:
    """Record one notice (checked first: nothing is written for bad input); the notice as logged."""
    text = check(kind, significant, start, end, description)
    body = incident_body(kind, significant, start, end, text, recorded_by)
    entry_id = new_id()
    with store.transaction(["incidents"]):
        entry = log.append([("incident", entry_id, None, body)])[0]
        notice = read_incident(entry.entry_id, entry.recorded_at, body)
        store.add_incident(Incident(entry.entry_id, entry.recorded_at, kind, SEVERITY[significant], text,
                                    details={"notice": 1, **notice.to_json()}))
    return notice


def listed(store: LedgerStore, log: DecisionLog, since: datetime | None = None,
           until: datetime | None = None) -> list[IncidentNotice]:
    """Every notice going on at some time in [since, until) (all of them without bounds), in the order they
    were recorded; each read from its log entry, verified, and held to its row."""
    out = []
    for row in store.incidents():
        if row.kind not in KINDS or not row.details.get("notice"):
            continue
        entry = log.get(row.incident_id)
        if entry.kind != "incident":
            raise TamperedError(f"incident {row.incident_id}: its log entry is a {entry.kind}, not an incident")
        notice = read_incident(entry.entry_id, entry.recorded_at, entry.body)
        if (notice.kind, SEVERITY[notice.significant], notice.description) != (row.kind, row.severity, row.message):
            raise TamperedError(f"incident {row.incident_id}: its row differs from its log entry")
        lo = since or notice.start
        hi = until or datetime.max.replace(tzinfo=notice.start.tzinfo)
        if notice.overlaps(lo, hi):
            out.append(notice)
    return out


def summary(notices: list[IncidentNotice]) -> dict[str, Any]:
    """Counts by kind and how many were significant (the weekly report's block)."""
    by_kind: dict[str, int] = {}
    for n in notices:
        by_kind[n.kind] = by_kind.get(n.kind, 0) + 1
    return {"count": len(notices), "significant": sum(1 for n in notices if n.significant),
            "by_kind": dict(sorted(by_kind.items())), "items": [n.to_json() for n in notices]}
