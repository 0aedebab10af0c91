"""A decision as a value: its head (verdict, values, policy) and its compact trace."""

from __future__ import annotations

from typing import Any

import orjson

from rules.engine.trace import Item, Statics, copy_json, expand


class Decision:
    """One decision: ``head`` (verdict, values, policy) and the compact trace.

    ``to_json()`` is the public form, with the trace expanded into ``reasons`` (fresh objects each
    call); the decision log stores its compact form (``rules.audit.entry_format``)."""

    __slots__ = ("head", "trace", "statics")

    def __init__(self, head: dict[str, Any], trace: list[Item], statics: Statics):
        self.head = head
        self.trace = trace
        self.statics = statics

    @property
    def id(self) -> str:
        return self.head["decision_id"]

    @property
    def eligible(self) -> bool:
        return self.head["eligible"]

    @property
    def data(self) -> dict[str, Any]:
        return self.to_json()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in self.head.items():
            if k == "failed_rules":
                out["reasons"] = expand(self.trace, self.statics)
            out[k] = copy_json(v) if type(v) in (dict, list) else v  # parts are shared with the plan
        return out

    def to_json_bytes(self) -> bytes:
        """``orjson.dumps(self.to_json())``, without building the public dicts: each trace entry's JSON
        is kept per bundle (most entries recur across a book: the plan's, and criteria with the same
        observed value), so printing a batch costs a fraction of expanding it."""
        head = self.head
        before = {}
        after = {}
        part = before
        for k, v in head.items():
            if k == "failed_rules":
                part = after
            part[k] = v
        entry = self.statics.entry_json
        reasons = b",".join([entry(item) for item in self.trace])
        return b"".join((orjson.dumps(before)[:-1], b',"reasons":[', reasons, b"],", orjson.dumps(after)[1:]))
