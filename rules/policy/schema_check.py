"""JSON Schema validation of policy and query documents, with errors in plain words at file:line:col."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rules.errors import Problem
from rules.policy.cache import mark_schema_checked, schema_checked
from rules.policy.yaml_reader import SourceDoc

if TYPE_CHECKING:  # jsonschema is imported where a document is validated, for start-up time (~60 ms)
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schema"


@lru_cache(maxsize=None)
def schema(name: str) -> dict[str, Any]:
    """``rules/schema/<name>.schema.json``, checked against the meta-schema: once per text, the check
    remembered by the text's sha256 (``rules.policy.cache``; it took 0.12-0.18 s a start for the two)."""
    text = (SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8")
    data = json.loads(text)
    if not schema_checked(name, text):
        from jsonschema import Draft202012Validator  # here, not at the top: for start-up time

        Draft202012Validator.check_schema(data)
        mark_schema_checked(name, text)
    return data


@lru_cache(maxsize=None)
def validator(name: str) -> Draft202012Validator:
    """The validator for ``rules/schema/<name>.schema.json`` (the schema checked, as ``schema``)."""
    from jsonschema import Draft202012Validator  # here, not at the top: for start-up time

    return Draft202012Validator(schema(name), format_checker=Draft202012Validator.FORMAT_CHECKER)


def _plain(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "nothing (null)"
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    return str(value)


_TYPE_WORDS = {"string": "text", "number": "a number", "integer": "a whole number", "boolean": "true or false",
               "object": "a mapping of keys", "array": "a list", "null": "nothing"}


def _type_words(t: Any) -> str:
    if isinstance(t, list):
        return " or ".join(_TYPE_WORDS.get(x, x) for x in t)
    return _TYPE_WORDS.get(t, str(t))


def describe(error: ValidationError) -> str:
    """One validation error in words a compliance officer understands."""
    v, schema, inst = error.validator, error.schema, error.instance
    if v == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extras = [k for k in inst if k not in schema.get("properties", {})] if isinstance(inst, dict) else []
        msgs = []
        import difflib  # here: only a message about an unknown key needs it (start-up time)

        for k in extras:
            close = difflib.get_close_matches(k, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            msgs.append(f"unknown key {k!r}{hint}; allowed here: {', '.join(allowed)}")
        return "; ".join(msgs) or error.message
    if v == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return f"the key {missing!r} is missing"
    if v == "type":
        return f"expected {_type_words(error.validator_value)}, found {_plain(inst)}"
    if v == "enum":
        return f"{_plain(inst)} is not allowed here; use one of: {', '.join(map(str, error.validator_value))}"
    if v == "const":
        return f"{_plain(inst)} is not allowed here; expected {_plain(error.validator_value)}"
    if v == "minimum":
        return f"{_plain(inst)} is too small: the least allowed is {error.validator_value}"
    if v == "maximum":
        return f"{_plain(inst)} is too large: the most allowed is {error.validator_value}"
    if v == "pattern":
        desc = schema.get("description")
        return f"{_plain(inst)} is not in the expected form" + (f" ({desc})" if desc else "")
    if v in ("minItems", "minProperties"):
        return "this must not be empty" if error.validator_value == 1 else error.message
    if v == "maxProperties" and "fact" in schema.get("properties", {}):
        return "a check compares its fact in exactly one way (equals, one_of, at_least, at_most or in_list)"
    if v == "minProperties" and "fact" in schema.get("properties", {}):
        return "a check needs a comparison: equals, one_of, at_least, at_most or in_list"
    if v == "uniqueItems":
        return "the list repeats a value"
    if v in ("minLength", "maxLength"):
        return f"{_plain(inst)} is too {'short' if v == 'minLength' else 'long'} (limit {error.validator_value} characters)"
    if v == "anyOf" and all("required" in s for s in error.validator_value):
        keys = " or ".join(repr(s["required"][0]) for s in error.validator_value)
        return f"one of the keys {keys} is needed"
    if v == "oneOf" and all("required" in s for s in error.validator_value):
        keys = " or ".join(repr(s["required"][0]) for s in error.validator_value)
        return f"exactly one of the keys {keys} is needed"
    if v == "format":
        return f"{_plain(inst)} is not a valid {error.validator_value}"
    return error.message


def rule_id_at(data: Any, path: tuple) -> str | None:
    """The id of the innermost rule (a mapping with an 'id') containing ``path``."""
    found = None
    node = data
    for part in path:
        if isinstance(node, dict) and isinstance(node.get("id"), str):
            found = node["id"]
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            break
    if isinstance(node, dict) and isinstance(node.get("id"), str):
        found = node["id"]
    return found


def _key_path(error: ValidationError) -> tuple:
    """Path to point at: for an unknown key, the key itself."""
    path = tuple(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        extras = [k for k in error.instance if k not in error.schema.get("properties", {})]
        if extras:
            return path + (extras[0],)
    return path


def check_document(doc: SourceDoc, schema_name: str) -> list[Problem]:
    """Every schema problem of ``doc``, located."""
    problems = []
    for error in validator(schema_name).iter_errors(doc.data):
        if error.validator == "if":
            continue
        path = _key_path(error)
        line, col = doc.where(path)
        problems.append(Problem(doc.file, line, col, describe(error), rule_id_at(doc.data, path)))
    return problems

