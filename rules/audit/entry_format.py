"""The form a decision takes in the decision log, and back.

An entry of kind ``decision`` written by ``Dacp.evaluate`` holds ``{"format": 3, "query": <the query
as given>, "decision": <the decision, compact>}``. The compact decision leaves out what the entry
already says elsewhere - its id (the entry id), the query's own fields (query id, account,
participant, asset, quantity, as of; the price unless evidence replaced it) and the policy (the
entry's bundle, stored by hash) - and keeps its trace compact (``rules.engine.trace``). ``public_decision``
puts them back; ``tests/audit/test_entry_format.py`` checks that the round trip gives every corpus decision
back exactly.

Format 2 differs only in how a limit in force is traced (its observed values as a dict, its threshold
and ``counted_usd`` written out: ``rules.engine.trace``); both read back the same way. Entries written before
the compact form (no ``format`` key: the full decision with ``reasons``) read as they are.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from itertools import islice
from typing import Any

import orjson

from rules.audit.log import RawJSON
from rules.engine.decision import Decision
from rules.engine.query import Query, as_of_text, parse_time
from rules.engine.trace import expand, plain, statics_for
from rules.errors import InputError, StorageError
from rules.policy.model import Bundle

FORMAT = 3
READS = (2, 3)  # compact formats this version reads
_OPEN = b'{"format":%d,"query":' % FORMAT
# Decision keys in their public order; those marked True are restored from the entry.
_KEYS = (("decision_id", True), ("query_id", True), ("eligible", False), ("account", True), ("participant", True),
         ("asset", True), ("quantity", True), ("price_usd", True), ("as_of", True), ("policy", True))


def log_body(query: Query, decision: Decision, holdings: dict[str, Any] | None = None) -> dict[str, Any] | RawJSON:
    """The body of the decision-log entry of ``decision`` (made for ``query``). ``holdings``: the holdings it
    was decided with when they were not the query's portfolio (the ledger's: ``rules.evidence.
    holdings_lines_json``), kept beside it as ``holdings`` so that a replay decides with them."""
    if holdings is not None:
        body = log_body(query, decision)
        if isinstance(body, bytes):
            return RawJSON(bytes(body[:-1]) + b',"holdings":' + orjson.dumps(holdings, option=orjson.OPT_SORT_KEYS)
                           + b"}")
        return {**body, "holdings": holdings}
    head = decision.head
    out = dict(islice(head.items(), len(_KEYS), None))  # the head starts with _KEYS, in that order
    out["eligible"] = head["eligible"]
    if head["price_usd"] != query.raw.get("price_usd"):  # evidence replaced the query's price, or the query
        out["price_usd"] = head["price_usd"]  # wrote it in another form ("064000"): kept, never guessed
    out["trace"] = decision.trace
    if query.raw_json is not None:  # the query as it was encoded when parsed: only the decision is new
        return RawJSON(b"".join((_OPEN, query.raw_json, b',"decision":', orjson.dumps(out), b"}")))
    return {"format": FORMAT, "query": query.raw, "decision": out}


def public_decision(body: dict[str, Any], entry_id: str, bundle: Bundle) -> dict[str, Any]:
    """The public form of a logged decision (``body``: the entry's body; ``bundle``: its stored bundle).
    An entry that does not decode (edited around the triggers, say) is a ``StorageError`` naming it."""
    try:
        return _public(body, entry_id, bundle)
    except (KeyError, IndexError, TypeError, ValueError, InvalidOperation, InputError) as e:
        detail = f"missing {e}" if isinstance(e, KeyError) else str(e) or type(e).__name__
        raise StorageError(f"decision {entry_id}: its log entry cannot be read back ({detail}); "
                           "`dacp audit verify` checks the whole log") from None


def _public(body: dict[str, Any], entry_id: str, bundle: Bundle) -> dict[str, Any]:
    decision = body["decision"]
    if body.get("format") not in READS:
        return decision  # written before the compact form: complete as it is
    raw = body["query"]
    restored = {
        "decision_id": entry_id,
        "query_id": raw.get("id"),
        "account": raw["account"],
        "participant": raw["participant"],
        "asset": raw["asset"],
        "quantity": plain(Decimal(raw["quantity"])),
        "price_usd": decision.get("price_usd", None) or plain(Decimal(raw["price_usd"])),
        "as_of": as_of_text(parse_time(raw["as_of"], "as_of")),
        "policy": {"bundle": bundle.hash, "name": bundle.name, "version": bundle.version},
    }
    out: dict[str, Any] = {}
    for k, derived in _KEYS:
        out[k] = restored[k] if derived else decision[k]
    reasons = expand(decision["trace"], statics_for(bundle))
    for k, v in decision.items():
        if k in out or k == "trace":
            continue
        if k == "failed_rules":
            out["reasons"] = reasons
        out[k] = v
    out.setdefault("reasons", reasons)
    return out
