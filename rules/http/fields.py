"""The field types of the request bodies (rules.http.bodies): each an ``Annotated`` alias that carries its
check beside its JSON schema, so a field's rule and its documentation cannot drift apart.

The check is a ``PlainValidator`` raising ``InputError``: pydantic lets it through unchanged, so a body is
refused with its first problem in field order, in plain words and naming the field (``body.quantity``), as
the CLI words it; pydantic's own coercions and messages never apply. The schema (``WithJsonSchema``) is what
the OpenAPI document says of the field. Quantities are decimal strings, never JSON numbers: no float ever
touches money. A check never sees ``null``: the bodies drop null fields first (null counts as not sent).
Quantities, times and identifiers are read by the one value grammar of every door (``rules.values``), so the
CLI, Python and HTTP give the same text the same answer.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import PlainValidator, ValidationInfo, WithJsonSchema

from rules.errors import InputError
from rules.values import (IDENTIFIER, MAX_ADDRESSES, MAX_FRACTION_DIGITS, MAX_INT_DIGITS, MAX_TEXT, address_list,
                          decimal_value, identifier, time_value)

DECIMAL_PATTERN = rf"^[0-9]{{1,{MAX_INT_DIGITS}}}(\.[0-9]{{1,{MAX_FRACTION_DIGITS}}})?$(?!\n)"  # rules.values.decimal_value
HEX64_PATTERN = r"^[0-9a-f]{64}$(?!\n)"
IDENTIFIER_PATTERN = rf"^{IDENTIFIER.pattern}$(?!\n)"
ASSET_PATTERN = r"^[A-Za-z0-9]{1,12}$(?!\n)"
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _where(info: ValidationInfo) -> str:
    return f"body.{info.field_name}"


def _text(v: Any, info: ValidationInfo) -> str:
    if not isinstance(v, str) or not v.strip() or len(v) > MAX_TEXT:
        raise InputError(f"must be a non-empty string of at most {MAX_TEXT} characters", _where(info))
    return v


def _identifier(v: Any, info: ValidationInfo) -> str:
    return identifier(v, _where(info))


def _asset(v: Any, info: ValidationInfo) -> str:
    return identifier(v, _where(info), "asset")


def _quantity(v: Any, info: ValidationInfo) -> Decimal:
    return decimal_value(v, _where(info))  # exact and finite, its digits bounded before conversion


def _addresses(v: Any, info: ValidationInfo) -> tuple[str, ...]:
    if not isinstance(v, list):
        raise InputError(f"must be a list of 1 to {MAX_ADDRESSES} custody addresses", _where(info))
    return address_list(v, _where(info))  # the CLI's --address checks too


def _bool(v: Any, info: ValidationInfo) -> bool:
    if not isinstance(v, bool):
        raise InputError("must be true or false", _where(info))
    return v


def _time(v: Any, info: ValidationInfo) -> datetime:
    return time_value(v, _where(info))  # a zone required; within the representable range after its offset


def _evidence(v: Any, info: ValidationInfo) -> dict[str, Any]:
    if not isinstance(v, dict) or set(v) - {"stablecoin", "fund"} or not all(isinstance(x, dict) for x in v.values()):
        raise InputError("must be an object with 'stablecoin' and/or 'fund' objects (the evidence block of a "
                         "query)", _where(info))
    return json.loads(json.dumps(v, default=str))  # exact: Decimals as their text, as the CLI reads files


def _queries(v: Any, info: ValidationInfo) -> list[Any]:
    if not isinstance(v, list) or not v:
        raise InputError("must be a non-empty list of queries", _where(info))
    return v


def _bundle_hash(v: Any, info: ValidationInfo) -> str:
    if not (isinstance(v, str) and _HEX64.fullmatch(v)):
        raise InputError("must be a bundle hash: 64 lower-case hex digits", _where(info))
    return v


_TEXT_SCHEMA = {"type": "string", "minLength": 1, "maxLength": MAX_TEXT}
Text = Annotated[str, PlainValidator(_text), WithJsonSchema(_TEXT_SCHEMA)]
MAX_DESCRIPTION = 4000  # an incident notice's description (rules.ledger.notices.MAX_DESCRIPTION)


def _description(v: Any, info: ValidationInfo) -> str:
    if not isinstance(v, str) or not v.strip() or len(v) > MAX_DESCRIPTION:
        raise InputError(f"must be a non-empty string of at most {MAX_DESCRIPTION} characters", _where(info))
    return v


Description = Annotated[str, PlainValidator(_description), WithJsonSchema(
    {"type": "string", "minLength": 1, "maxLength": MAX_DESCRIPTION})]
OptionalText = Annotated[str | None, PlainValidator(_text), WithJsonSchema({"type": ["string", "null"]})]
Identifier = Annotated[str, PlainValidator(_identifier), WithJsonSchema({"type": "string",
                                                                          "pattern": IDENTIFIER_PATTERN})]
OptionalIdentifier = Annotated[str | None, PlainValidator(_identifier), WithJsonSchema(
    {"type": ["string", "null"], "pattern": IDENTIFIER_PATTERN})]
AssetSymbol = Annotated[str, PlainValidator(_asset), WithJsonSchema({"type": "string", "pattern": ASSET_PATTERN})]
Quantity = Annotated[Decimal, PlainValidator(_quantity), WithJsonSchema({"type": "string", "pattern": DECIMAL_PATTERN})]
Addresses = Annotated[tuple[str, ...], PlainValidator(_addresses), WithJsonSchema(
    {"type": "array", "minItems": 1, "maxItems": MAX_ADDRESSES, "uniqueItems": True, "items": _TEXT_SCHEMA})]
OptionalBool = Annotated[bool | None, PlainValidator(_bool), WithJsonSchema({"type": ["boolean", "null"]})]
OptionalTime = Annotated[datetime | None, PlainValidator(_time), WithJsonSchema({"type": ["string", "null"]})]
OptionalEvidence = Annotated[dict[str, Any] | None, PlainValidator(_evidence), WithJsonSchema(
    {"type": ["object", "null"], "additionalProperties": False,
     "properties": {"stablecoin": {"type": "object"}, "fund": {"type": "object"}}})]
Queries = Annotated[list[Any], PlainValidator(_queries), WithJsonSchema(
    {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/Query"}})]
BundleHash = Annotated[str | None, PlainValidator(_bundle_hash), WithJsonSchema({"type": "string",
                                                                                 "pattern": HEX64_PATTERN})]
