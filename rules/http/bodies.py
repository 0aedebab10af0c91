"""The JSON bodies of the POST requests: one pydantic model each, which is both the body's parser
(``Body.parse``) and its OpenAPI schema (``Body.json_schema``, as ``components/schemas/<schema_name>``).

The fields' checks and schemas are their types' (rules.http.fields). A body is first checked whole (an
object, no unknown field, every required field there: ``check_shape``), then field by field, in order;
a field sent as ``null`` counts as not sent. The queries of a batch are checked by ``parse_query`` (their
schema is rules/schema/query.schema.json), after the service's batch limit.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.json_schema import GenerateJsonSchema

from rules.errors import InputError
from rules.http.fields import (Addresses, AssetSymbol, BundleHash, Identifier, OptionalBool, OptionalEvidence,
                               OptionalIdentifier, OptionalText, OptionalTime, Quantity, Queries, Text, Description)
from rules.ledger.requests import CreditRequest, WithdrawRequest

# the example query of the OpenAPI document (POST /v1/eligibility's body is a query: rules.engine.query)
EXAMPLE_QUERY = {"id": "ex-btc-eligible", "account": "ACC-1001", "participant": "FCM-ALPHA", "asset": "BTC",
                 "quantity": "12.5", "price_usd": "91250.00", "as_of": "2026-11-20T14:00:00Z",
                 "custody": {"custodian": "anchorage", "addresses": ["bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"],
                             "segregated": True, "confirmations": 7, "balance": "12.5"},
                 "evidence": {"price_updated_at": "2026-11-20T13:45:00Z"},
                 "portfolio": [{"asset": "USDC", "collateral_value_usd": "2500000.00"}]}


class _DocumentSchema(GenerateJsonSchema):
    """pydantic's JSON schema as the OpenAPI document carries it: no titles, no defaults, and no ``$defs``.

    The bodies are flat: the one definition is the model's own, inlined here. Their one ``$ref`` is to
    another component of the document (a batch's items: ``#/components/schemas/Query``), which pydantic's
    ref bookkeeping (in ``GenerateJsonSchema.generate``, not called) would refuse as unknown."""

    def generate(self, schema: Any, mode: Any = "validation") -> Any:
        self._mode = mode
        out = self.generate_inner(schema)
        ref = out.get("$ref")  # the model itself, as a definition: its schema, inlined
        return self.get_schema_from_definitions(ref) if ref and len(out) == 1 else out

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def default_schema(self, schema: Any) -> Any:
        return self.generate_inner(schema["schema"])


def _extra(doc: dict[str, Any], allowed: set[str]) -> str:
    extra = sorted(set(doc) - allowed)
    return f"; unknown field(s): {', '.join(map(str, extra))}" if extra else ""


class Body(BaseModel):
    """A request body: ``parse`` a JSON document (already read by rules.http.reading) or refuse it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_name: ClassVar[str]  # its name under components/schemas
    example: ClassVar[dict[str, Any]]  # the example of the OpenAPI document

    @model_validator(mode="before")
    @classmethod
    def _whole(cls, doc: Any) -> Any:
        return cls.check_shape(doc)

    @classmethod
    def check_shape(cls, doc: Any) -> dict[str, Any]:
        """The document checked whole (an object, no unknown field, ...) and handed on to the fields' checks."""
        raise NotImplementedError

    @classmethod
    def parse(cls, doc: Any) -> Self:
        return cls.model_validate(doc)

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        schema = cls.model_json_schema(schema_generator=_DocumentSchema)
        schema.pop("title", None)
        schema.pop("description", None)  # the docstring is for the code; the document describes the fields
        return schema

    def given(self) -> dict[str, Any]:
        """The fields sent (not null), as parsed."""
        return {name: getattr(self, name) for name in self.model_fields_set}


class _LedgerBody(Body):
    what: ClassVar[str]  # "credit", "withdraw": names the request in a refusal

    @classmethod
    def check_shape(cls, doc: Any) -> dict[str, Any]:
        if not isinstance(doc, dict):
            raise InputError(f"send a JSON object: the {cls.what} request", "body")
        fields = cls.model_fields
        unknown = sorted(set(doc) - set(fields))
        if unknown:
            raise InputError(f"unknown field(s): {', '.join(map(repr, unknown))} (known: {', '.join(fields)})",
                             "body")
        missing = [k for k, f in fields.items() if f.is_required() and doc.get(k) is None]
        if missing:
            raise InputError(f"missing field(s): {', '.join(missing)}", "body")
        return {k: v for k, v in doc.items() if v is not None}


class CreditBody(_LedgerBody):
    """POST /v1/credits (rules.ledger.requests.CreditRequest less the idempotency key, which is a header)."""

    schema_name = "CreditRequest"
    what = "credit"
    example = {"account": "ACC-1001", "participant": "FCM-ALPHA", "asset": "USDC", "quantity": "400000",
               "addresses": ["0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc"], "custodian": "coinbase-custody",
               "segregated": True, "evidence": {"stablecoin": {"issuer": "Circle Internet Financial",
                                                               "reserve_attestation_date": "2026-11-17"}}}

    account: Identifier
    participant: Identifier
    asset: AssetSymbol = Field(description="a registry asset, e.g. USDC")
    quantity: Quantity = Field(description="whole units as a decimal string (BTC, not satoshi)")
    addresses: Addresses = Field(description="custody addresses")
    account_type: OptionalText = Field(None, description="for a new account: customer-segregated (default), "
                                       "cleared-swaps, 30.7-secured")
    custodian: OptionalIdentifier = None
    customer: OptionalIdentifier = Field(None, description="the account's customer: fixed by the first credit that "
                                         "names it (another customer for the account is refused, 409 "
                                         "customer_mismatch); the limits across a customer count all its accounts")
    segregated: OptionalBool = None
    evidence: OptionalEvidence = Field(None, description="off-chain evidence of a query: stablecoin and/or fund")
    as_of: OptionalTime = Field(None, description="decision time, RFC 3339 (default now)")

    def request(self, idempotency_key: str) -> CreditRequest:
        return CreditRequest(idempotency_key=idempotency_key, **self.given())


class WithdrawBody(_LedgerBody):
    """POST /v1/withdrawals (rules.ledger.requests.WithdrawRequest less the idempotency key)."""

    schema_name = "WithdrawRequest"
    what = "withdraw"
    example = {"account": "ACC-1001", "asset": "USDC", "quantity": "40000"}

    account: Identifier
    asset: AssetSymbol
    quantity: Quantity
    address: OptionalText = Field(None, description="only from this custody address (default: newest credits first)")

    def request(self, idempotency_key: str) -> WithdrawRequest:
        return WithdrawRequest(idempotency_key=idempotency_key, **self.given())


class BatchBody(Body):
    """POST /v1/eligibility/batch: ``{"queries": [...]}``."""

    schema_name = "Batch"
    example = {"queries": [EXAMPLE_QUERY]}

    queries: Queries = Field(description="Every query is checked first: one bad query means nothing is decided "
                             "or logged.")

    @classmethod
    def check_shape(cls, doc: Any) -> dict[str, Any]:
        if not isinstance(doc, dict) or set(doc) != {"queries"}:
            raise InputError("send an object with one field, queries (a list of queries)"
                             + (_extra(doc, {"queries"}) if isinstance(doc, dict) else ""), "body")
        return doc


class ReloadBody(Body):
    """POST /v1/policy/reload (optional body): ``{"expect_bundle": "<sha256>"}``."""

    schema_name = "Reload"
    example = {}

    expect_bundle: BundleHash = Field(None, description="refuse (409) unless the directory holds this bundle")

    @classmethod
    def check_shape(cls, doc: Any) -> dict[str, Any]:
        if not isinstance(doc, dict) or set(doc) - {"expect_bundle"}:
            raise InputError("send an object with at most one field, expect_bundle"
                             + (_extra(doc, {"expect_bundle"}) if isinstance(doc, dict) else ""), "body")
        return {k: v for k, v in doc.items() if v is not None}


BODIES: tuple[type[Body], ...] = (BatchBody, ReloadBody, CreditBody, WithdrawBody)


class IncidentBody(_LedgerBody):
    """POST /v1/incidents (rules.ledger.notices.record): an operational incident notice."""

    schema_name = "IncidentNotice"
    what = "incident"
    example = {"kind": "system_disruption", "significant": True, "start": "2026-11-20T09:00:00Z",
               "end": "2026-11-20T11:30:00Z", "description": "Ethereum node unreachable; credits paused 2.5 hours"}

    kind: Text = Field(description="cybersecurity, system_disruption, custody or other")
    significant: OptionalBool = Field(description="significant (Letter 26-05 asks for prompt notice) or not")
    start: OptionalTime = Field(description="when it began, RFC 3339")
    end: OptionalTime = Field(None, description="when it ended, RFC 3339 (leave out while it goes on)")
    description: Description = Field(description="what happened, in plain words")
