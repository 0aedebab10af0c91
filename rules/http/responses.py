"""The JSON the service answers with, as OpenAPI component schemas (the request bodies' schemas are their
models': rules.http.bodies). Money is decimal strings; every body names the bundle in force (``policy_bundle``).
"""

from __future__ import annotations

from typing import Any


def ref(name: str) -> dict[str, Any]:
    """A reference to the component schema ``name`` of the document."""
    return {"$ref": f"#/components/schemas/{name}"}


RESPONSES: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {
        "error": {"type": "object", "required": ["code", "message"], "properties": {
            "code": {"type": "string"}, "message": {"type": "string"}, "where": {"type": ["string", "null"]},
            "problems": {"type": "array", "items": {"type": "object"}}}},
        "policy_bundle": {"type": "string", "description": "sha256 of the bundle in force"}}},
    "Decision": {"type": "object", "description": "The decision JSON of `dacp evaluate` (see README: Queries and "
                 "decisions): decision_id, eligible, haircut, collateral_value_usd, reasons (the trace), failed_rules, "
                 "policy {bundle, name, version}, ... Money is decimal strings.",
                 "required": ["decision_id", "eligible", "reasons", "policy"], "properties": {
                     "decision_id": {"type": "string"}, "eligible": {"type": "boolean"},
                     "reasons": {"type": "array", "items": {"type": "object"}},
                     "policy": {"type": "object", "properties": {"bundle": {"type": "string"}}}}},
    "BatchResult": {"type": "object", "required": ["decisions", "policy_bundle"], "properties": {
        "decisions": {"type": "array", "items": ref("Decision")}, "policy_bundle": {"type": "string"}}},
    "LoggedDecision": {"type": "object", "required": ["decision_id", "decision", "explanation"], "properties": {
        "decision_id": {"type": "string"}, "seq": {"type": "integer"}, "recorded_at": {"type": "string"},
        "bundle": {"type": "string", "description": "the bundle the decision was made under"},
        "entry_hash": {"type": "string"}, "query": {"type": "object"}, "decision": ref("Decision"),
        "explanation": {"type": "string", "description": "the trace in plain words (dacp explain)"},
        "receipt": {"oneOf": [ref("Receipt"), {"type": "null"}],
                    "description": "with ?receipt=true: the receipt, or null while no checkpoint covers the entry"},
        "policy_bundle": {"type": "string", "description": "the bundle in force now"}}},
    "Receipt": {"type": "object", "required": ["format", "entry", "index", "size", "proof", "checkpoint"],
                "description": "entry: the leaf's bytes (base64); index: its 0-based position; proof: the RFC 9162 "
                               "audit path (base64 hashes); checkpoint: the signed note of the tree it is in",
                "properties": {"format": {"type": "string"}, "entry": {"type": "string"}, "index": {"type": "integer"},
                               "size": {"type": "integer"}, "proof": {"type": "array", "items": {"type": "string"}},
                               "checkpoint": {"type": "string"}, "policy_bundle": {"type": "string"}}},
    "Checkpoint": {"type": "object", "required": ["size", "root", "note"], "properties": {
        "size": {"type": "integer"}, "root": {"type": "string", "description": "the tree's root (hex)"},
        "recorded_at": {"type": "string"}, "note": {"type": "string", "description": "the signed note"},
        "policy_bundle": {"type": "string"}}},
    "AuditResult": {"type": "object", "required": ["ok", "entries", "head"], "properties": {
        "ok": {"type": "boolean"}, "entries": {"type": "integer"}, "head": {"type": "string"},
        "problem": {"type": ["string", "null"]}, "seq": {"type": ["integer", "null"]}, "report": {"type": "string"},
        "checkpoints": {"type": "integer", "description": "stored checkpoints the tree was checked against"},
        "policy_bundle": {"type": "string"}}},
    "Policy": {"type": "object", "required": ["bundle", "name", "version"], "properties": {
        "bundle": {"type": "string"}, "name": {"type": "string"}, "version": {"type": "string"},
        "effective_from": {"type": ["string", "null"]}, "effective_to": {"type": ["string", "null"]},
        "phases": {"type": "array", "items": {"type": "object"}},
        "phase_clocks": {"type": "array", "description": "each participant's phase clock (Letter 26-05: from its "
                         "accepting_from): {participant, accepting_from, phases: [{id, starts, ends}]}",
                         "items": {"type": "object"}},
        "rules": {"type": "integer"},
        "assets": {"type": "array", "items": {"type": "string"}}, "loaded_at": {"type": "string"},
        "policy_bundle": {"type": "string"}}},
    "ReloadResult": {"type": "object", "required": ["reloaded", "policy_bundle"], "properties": {
        "reloaded": {"type": "boolean"}, "changed": {"type": "boolean"}, "previous": {"type": "string"},
        "policy_bundle": {"type": "string"}, "name": {"type": "string"}, "version": {"type": "string"}}},
    "CreditResult": {"type": "object", "required": ["operation", "status", "idempotency_key", "replayed", "bundle"],
                     "description": "rules.ledger.book.Ledger.credit's result (as dacp credit prints it); money is "
                     "decimal strings. status credited (201; 200 on replay) or refused (200, with refusal {rule, "
                     "retryable, message}).", "properties": {
        "operation": {"type": "string"}, "status": {"type": "string", "enum": ["credited", "refused"]},
        "idempotency_key": {"type": "string"}, "replayed": {"type": "boolean"}, "eligible": {"type": "boolean"},
        "account": {"type": "string"}, "asset": {"type": "string"}, "quantity_requested": {"type": "string"},
        "quantity_credited": {"type": "string"}, "collateral_value_usd": {"type": "string"},
        "decision_id": {"type": "string"}, "failed_rules": {"type": "array", "items": {"type": "string"}},
        "allocations": {"type": "array", "items": {"type": "object"}}, "refusal": {"type": "object"},
        "bundle": {"type": "string"}, "policy_bundle": {"type": "string"}}},
    "WithdrawResult": {"type": "object", "required": ["operation", "status", "idempotency_key", "replayed"],
                       "properties": {
        "operation": {"type": "string"}, "status": {"type": "string", "enum": ["withdrawn"]},
        "idempotency_key": {"type": "string"}, "replayed": {"type": "boolean"}, "account": {"type": "string"},
        "asset": {"type": "string"}, "quantity": {"type": "string"}, "collateral_value_usd": {"type": "string"},
        "reductions": {"type": "array", "items": {"type": "object"}}, "policy_bundle": {"type": "string"}}},
    "IncidentRecord": {"type": "object", "required": ["incident_id", "kind", "significant", "start"],
                       "description": "rules.audit.incident_format.IncidentNotice.to_json: an incident notice, "
                       "its id the id of its decision-log entry", "properties": {
        "incident_id": {"type": "string"}, "recorded_at": {"type": "string"}, "kind": {"type": "string"},
        "significant": {"type": "boolean"}, "start": {"type": "string"}, "end": {"type": ["string", "null"]},
        "description": {"type": "string"}, "recorded_by": {"type": ["string", "null"]}}},
    "IncidentList": {"type": "object", "required": ["incidents", "count"], "properties": {
        "incidents": {"type": "array", "items": {"$ref": "#/components/schemas/IncidentRecord"}},
        "count": {"type": "integer"}}},
    "Health": {"type": "object", "required": ["status"], "properties": {
        "status": {"type": "string"}, "policy_bundle": {"type": ["string", "null"]}, "checks": {"type": "object"}}},
    "MarginRequirements": {"type": "object", "description": "The JSON form of a requirements file (docs/margin.md): "
                           "requirements and/or off-ledger collateral; money as decimal strings",
                           "properties": {"requirements": {"type": "array", "items": {"type": "object"}},
                                          "collateral": {"type": "array", "items": {"type": "object"}}}},
    "MarginImport": {"type": "object", "required": ["import_id", "requirements", "collateral"], "properties": {
        "import_id": {"type": "string", "description": "the log entry's id"}, "recorded_at": {"type": "string"},
        "sha256": {"type": "string"}, "requirements": {"type": "integer"}, "collateral": {"type": "integer"},
        "accounts": {"type": "array", "items": {"type": "string"}}, "policy_bundle": {"type": "string"}}},
    "MarginCoverage": {"type": "object", "required": ["coverage"], "properties": {
        "coverage": {"type": "array", "items": {"type": "object", "description": "account, status (covered, "
                     "deficit, no requirement), requirement_usd, requirements per DCO, ledger_collateral_usd, "
                     "offledger_collateral_usd, collateral_usd, excess_usd, deficit_usd"}},
        "policy_bundle": {"type": "string"}}},
    "MarginCalls": {"type": "object", "required": ["steps", "calls"], "properties": {
        "steps": {"type": "array", "items": {"type": "object"}}, "calls": {"type": "array", "items": {"type": "object"}},
        "policy_bundle": {"type": "string"}}},
    "MarginFree": {"type": "object", "required": ["account", "free_usd", "assets"], "properties": {
        "account": {"type": "string"}, "status": {"type": "string"}, "free_usd": {"type": "string"},
        "assets": {"type": "array", "items": {"type": "object"}}, "policy_bundle": {"type": "string"}}},
}
