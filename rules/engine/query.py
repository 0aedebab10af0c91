"""Parsing and checking eligibility queries (JSON or YAML) into typed, exact values.

The public contract is ``rules/schema/query.schema.json``. Numbers for money and quantities must
be decimal strings; a JSON number there is refused (it may already have lost precision), and so
are NaN, Infinity, duplicate keys, unknown keys, negative or absurd values and bad dates. Values follow the
one grammar of every door (``rules.values``): patterns match whole text (``"12.5\\n"`` is refused), number
tokens of a document are length-bounded before they are converted, times stay well inside the representable
range.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal
from functools import cached_property
from typing import Any, NamedTuple

import orjson

from rules.engine.query_fastcheck import certainly_valid
from rules.errors import InputError
from rules.policy.schema_check import describe, schema, validator
from rules.policy.yaml_reader import MAX_DEPTH, load_yaml_text, too_deep
from rules.values import MAX_YEAR, MIN_YEAR, bounded_decimal_text, bounded_int_text, decimal_value, time_value, utc_text

MAX_QUANTITY = Decimal(10) ** 12  # whole units; far above any real holding, far below overflow
MAX_PRICE = Decimal(10) ** 9
MAX_HOLDING_USD = Decimal(10) ** 15
MAX_QUERY_BYTES = 1_000_000


class Holding(NamedTuple):
    """One other holding of the account (for the concentration limits)."""

    asset: str
    collateral_value_usd: Decimal


@dataclass(frozen=True)
class Query:
    """A checked query. ``raw`` is the document as given (stored in the decision log); ``raw_json`` the
    same as compact JSON, encoded while the document is fresh from parsing (the log stores it as is)."""

    account: str
    participant: str
    asset: str
    quantity: Decimal
    price_usd: Decimal
    as_of: datetime
    raw: dict[str, Any]
    id: str | None = None
    custody: dict[str, Any] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)
    portfolio: tuple[Holding, ...] = ()
    raw_json: bytes | None = None

    @cached_property
    def day(self) -> date:
        """The UTC day of ``as_of`` (worked out once: the engine and the facts both need it)."""
        return self.as_of.astimezone(timezone.utc).date()


def _reject_constant(name: str) -> Any:
    raise InputError(f"{name} is not a number that can be used", None)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise InputError(f"duplicate key {k!r}: a key may appear only once", None)
        out[k] = v
    return out


def parse_json_text(text: str, where: str) -> Any:
    """Strict JSON: no NaN/Infinity, no duplicate keys, numbers kept exact as Decimal."""
    if too_deep(text):
        raise InputError(f"the document is nested too deeply (more than {MAX_DEPTH} levels)", where)
    try:
        return json.loads(text, parse_float=bounded_decimal_text, parse_int=bounded_int_text,
                          parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except InputError as e:
        raise InputError(e.message, where) from None
    except json.JSONDecodeError as e:
        raise InputError(f"not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})", where) from None
    except RecursionError:
        raise InputError("the document is nested too deeply", where) from None


def parse_document(text: str, where: str) -> Any:
    """A query document: JSON if it looks like JSON, else YAML (read exactly, like policies)."""
    if len(text.encode("utf-8", "replace")) > MAX_QUERY_BYTES:
        raise InputError(f"the document is larger than {MAX_QUERY_BYTES} bytes", where)
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        return parse_json_text(text, where)
    doc, problems = load_yaml_text(text, where)
    if problems:
        raise InputError("; ".join(p.render() for p in problems), None)
    assert doc is not None
    return doc.data


def parse_time(text: str, where: str) -> datetime:
    """A query's (schema-checked) time as an aware datetime in UTC; ``InputError`` naming ``where`` if
    it is not a real one."""
    return time_value(text, where)  # 9999-12-31T23:59-05:00 is past year 9999 in UTC: refused, never a crash


def as_of_text(as_of: datetime) -> str:
    """A query's time as decisions show it: ISO 8601 in UTC with ``Z`` (the log restores it the same way)."""
    return utc_text(as_of)


def _date(text: str, where: str) -> date:
    try:
        d = date.fromisoformat(text)
    except ValueError:
        raise InputError(f"{text!r} is not a real calendar date", where) from None
    if not MIN_YEAR <= d.year <= MAX_YEAR:
        raise InputError(f"{text!r} is out of range (years {MIN_YEAR} to {MAX_YEAR})", where)
    return d


def _redemption_dates(fund: dict[str, Any], where: str) -> None:
    """A redemption's request and settlement dates, both or neither, settlement not before the request
    (the engine counts the business days between them: fund.redemption_days)."""
    for key in ("redemption_requested_on", "redemption_settles_on"):
        if key not in fund:
            other = "redemption_settles_on" if key == "redemption_requested_on" else "redemption_requested_on"
            raise InputError(f"{other} needs {key} too (the redemption days are counted between the two dates)",
                             f"{where}.{key}")
        fund[key] = _date(fund[key], f"{where}.{key}")
    if fund["redemption_settles_on"] < fund["redemption_requested_on"]:
        raise InputError("the redemption settles before it is requested", f"{where}.redemption_settles_on")


def _decimal(text: str, where: str, *, maximum: Decimal, positive: bool = True) -> Decimal:
    value = decimal_value(text, where)  # the schema's pattern admitted it already: plain, bounded
    if positive and value <= 0:
        raise InputError(f"must be greater than zero, got {text}", where)
    if value > maximum:
        raise InputError(f"{text} is absurdly large (the most accepted is {maximum:,})", where)
    return value


def _holding(h: dict[str, Any], i: int, where: str) -> Holding:
    value = Decimal(h["collateral_value_usd"])  # the schema's pattern: a plain non-negative decimal
    if value > MAX_HOLDING_USD:  # the place named only when something is wrong (most books hold many)
        _decimal(h["collateral_value_usd"], f"{where}.portfolio[{i}].collateral_value_usd", maximum=MAX_HOLDING_USD,
                 positive=False)
    return Holding(h["asset"], value)


def parse_query(doc: Any, where: str = "query") -> Query:
    """Check a parsed document against the query schema and convert it to a ``Query``."""
    if not isinstance(doc, dict):
        raise InputError("a query must be a JSON object", where)
    errors = [] if certainly_valid("query")(doc) else \
        sorted(validator("query").iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        msgs = []
        for e in errors[:10]:
            path = ".".join(str(p) for p in e.absolute_path)
            if e.validator == "type" and isinstance(e.instance, (Decimal, int)) and not isinstance(e.instance, bool) \
                    and e.schema == schema("query")["$defs"]["decimal"]:  # a number where a decimal string goes
                msg = f"write the number as a decimal string, e.g. \"{e.instance}\" (JSON numbers can lose precision)"
            else:
                msg = describe(e)
            msgs.append(f"{path or '(top)'}: {msg}")
        raise InputError("; ".join(msgs), where)
    as_of = parse_time(doc["as_of"], f"{where}.as_of")
    evidence = dict(doc.get("evidence") or {})
    ev_checked: dict[str, Any] = {}
    if "price_updated_at" in evidence:
        ts = parse_time(evidence["price_updated_at"], f"{where}.evidence.price_updated_at")
        if ts > as_of:
            raise InputError("the price is dated after as_of", f"{where}.evidence.price_updated_at")
        ev_checked["price_updated_at"] = ts
    for section, key in (("stablecoin", "reserve_attestation_date"), ("fund", "nav_date")):
        sec = dict(evidence.get(section) or {})
        if key in sec:
            d = _date(sec[key], f"{where}.evidence.{section}.{key}")
            if d > as_of.date():
                raise InputError(f"{key} is after as_of", f"{where}.evidence.{section}.{key}")
            sec[key] = d
        if section == "fund" and ("redemption_requested_on" in sec or "redemption_settles_on" in sec):
            _redemption_dates(sec, f"{where}.evidence.fund")
        if section == "fund" and "nav_usd" in sec:
            sec["nav_usd"] = _decimal(sec["nav_usd"], f"{where}.evidence.fund.nav_usd", maximum=MAX_PRICE)
        if sec:
            ev_checked[section] = sec
    custody = dict(doc.get("custody") or {})
    if "balance" in custody:
        custody["balance"] = _decimal(custody["balance"], f"{where}.custody.balance", maximum=MAX_QUANTITY, positive=False)
    portfolio = tuple(_holding(h, i, where) for i, h in enumerate(doc.get("portfolio") or ()))
    return Query(
        account=doc["account"], participant=doc["participant"], asset=doc["asset"],
        quantity=_decimal(doc["quantity"], f"{where}.quantity", maximum=MAX_QUANTITY),
        price_usd=_decimal(doc["price_usd"], f"{where}.price_usd", maximum=MAX_PRICE),
        as_of=as_of, raw=doc, id=doc.get("id"), custody=custody, evidence=ev_checked, portfolio=portfolio,
        raw_json=_compact_json(doc),
    )


def _compact_json(doc: dict[str, Any]) -> bytes | None:
    try:
        return orjson.dumps(doc)
    except (TypeError, orjson.JSONEncodeError):  # beyond what orjson writes: the log encodes the dict itself
        return None


def load_query_text(text: str, where: str) -> Query:
    return parse_query(parse_document(text, where), where)
