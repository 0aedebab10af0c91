"""The ``incident`` entry of the verifiable log: an operational incident notice (Letter 26-05 asks FCMs for
prompt notice of significant cybersecurity incidents and disruptions of the systems the pilot relies on).

Body, version 1::

    {"incident": {"version": 1, "kind": "cybersecurity" | "system_disruption" | "custody" | "other",
                  "significant": true | false, "start": RFC 3339, "end": RFC 3339 or null,
                  "description": "...", "recorded_by": "..." or null}}

``incident_body`` is the one encoder; ``read_incident`` the frozen decoder of version 1 (a new layout is a
new version read beside this one). Value deficits are not incidents: they are margin events.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping

from rules.errors import StorageError
from rules.values import parse_utc_text, utc_text

VERSION = 1
READS = (1,)
KINDS = ("cybersecurity", "system_disruption", "custody", "other")


@dataclass(frozen=True)
class IncidentNotice:
    """One recorded incident notice (``incident_id``: its log entry's id; ``recorded_at``: the entry's time)."""

    incident_id: str
    recorded_at: str
    kind: str
    significant: bool
    start: datetime
    end: datetime | None
    description: str
    recorded_by: str | None = None

    def overlaps(self, since: datetime, until: datetime) -> bool:
        """Whether it was going on at some time in [since, until) (an open incident is going on still)."""
        return self.start < until and (self.end is None or self.end >= since)

    def to_json(self) -> dict[str, Any]:
        return {"incident_id": self.incident_id, "recorded_at": self.recorded_at, "kind": self.kind,
                "significant": self.significant, "start": utc_text(self.start),
                "end": None if self.end is None else utc_text(self.end), "description": self.description,
                "recorded_by": self.recorded_by}


def incident_body(kind: str, significant: bool, start: datetime, end: datetime | None, description: str,
                  recorded_by: str | None = None) -> dict[str, Any]:
    """The body of an ``incident`` entry (version 1)."""
    return {"incident": {"version": VERSION, "kind": kind, "significant": bool(significant),
                         "start": utc_text(start), "end": None if end is None else utc_text(end),
                         "description": description, "recorded_by": recorded_by}}


def read_incident(entry_id: str, recorded_at: str, body: Mapping[str, Any]) -> IncidentNotice:  # frozen: version 1
    """The notice an ``incident`` entry holds; one that does not read is a ``StorageError`` naming it."""
    b = body.get("incident")
    try:
        if not isinstance(b, dict) or b.get("version") not in READS:
            raise ValueError("no incident block of a version this code reads")
        if b["kind"] not in KINDS or not isinstance(b["significant"], bool) or not isinstance(b["description"], str):
            raise ValueError("kind, significant or description of the wrong kind")
        return IncidentNotice(entry_id, recorded_at, b["kind"], b["significant"], parse_utc_text(b["start"]),
                              None if b["end"] is None else parse_utc_text(b["end"]), b["description"],
                              b.get("recorded_by"))
    except (KeyError, TypeError, ValueError) as e:
        raise StorageError(f"incident entry {entry_id}: does not read back ({e})") from None
