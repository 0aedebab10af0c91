"""A fast acceptance check for JSON Schema documents, in front of jsonschema.

jsonschema takes about 230 µs to validate one eligibility query - nearly ten times what deciding it
takes - so a book of 100,000 positions spent most of its time in validation. ``compile_check`` turns
a schema into nested closures (from the schema's data; no generated source) that answer one question:
*is this document certainly valid?* ``True`` only when every keyword holds under the same rules
jsonschema applies; ``False`` whenever anything is off or unusual (a Decimal where an integer is
expected, a list of non-strings under ``uniqueItems``...). The caller then runs jsonschema, whose
verdict and messages are the ones that count. So the check may be conservative but never lets
through what jsonschema would refuse: ``tests/engine/test_query_fastcheck.py`` holds the two to that on
generated documents.

A ``pattern`` must match whole text: one ending in a bare ``$`` (which in Python's ``re`` also matches before a
final newline, so ``"BTC\\n"`` would pass ``^[A-Z]+$``) or using ``\\d`` (any Unicode digit) is refused when
compiled; write ``$(?!\\n)`` and ``[0-9]``. Only the keywords the query schema uses are known; a schema with any other keyword is refused when
compiled, so the schema cannot grow a rule this check would silently skip.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Callable

from rules.policy.schema_check import schema

Check = Callable[[Any], bool]
_ANNOTATIONS = {"$schema", "$id", "title", "description", "$defs", "$comment", "examples", "default"}
_KNOWN = _ANNOTATIONS | {"type", "properties", "additionalProperties", "required", "items", "$ref", "pattern", "enum",
                         "minimum", "maximum", "minItems", "maxItems", "uniqueItems", "minLength", "maxLength"}
_TYPES: dict[str, Check] = {
    "object": lambda x: type(x) is dict,
    "array": lambda x: type(x) is list,
    "string": lambda x: type(x) is str,
    "boolean": lambda x: type(x) is bool,
    "integer": lambda x: type(x) is int,  # not bool; a Decimal or float: not sure (jsonschema decides)
}


_NOT_NUMBERS = (str, dict, list, bool, type(None))  # what minimum and maximum ignore; a float or Decimal: not sure


def _min(n: int) -> Check:
    return lambda x: x >= n


def _max(n: int) -> Check:
    return lambda x: x <= n


def _min_len(n: int) -> Check:
    return lambda x: len(x) >= n


def _max_len(n: int) -> Check:
    return lambda x: len(x) <= n


# keyword, the JSON type it applies to, the check of a value's length
_SIZES = (("minLength", "string", _min_len), ("maxLength", "string", _max_len),
          ("minItems", "array", _min_len), ("maxItems", "array", _max_len))


class UnsupportedSchema(ValueError):
    pass


def compile_check(schema: dict[str, Any]) -> Check:
    """The fast check of ``schema`` (raises ``UnsupportedSchema`` for a keyword it does not know)."""
    return _compile(schema, schema, "#")


def _resolve(root: dict[str, Any], ref: str) -> dict[str, Any]:
    if not ref.startswith("#/"):
        raise UnsupportedSchema(f"only local references are supported, not {ref!r}")
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def _compile(node: dict[str, Any], root: dict[str, Any], where: str) -> Check:
    unknown = set(node) - _KNOWN
    if unknown:
        raise UnsupportedSchema(f"{where}: keywords {sorted(unknown)} are not supported by the fast check")
    if "$ref" in node:
        if set(node) - _ANNOTATIONS - {"$ref"}:
            raise UnsupportedSchema(f"{where}: $ref beside other keywords is not supported")
        return _compile(_resolve(root, node["$ref"]), root, node["$ref"])
    t = node.get("type")
    if t is not None and (not isinstance(t, str) or t not in _TYPES):
        raise UnsupportedSchema(f"{where}: type {t!r} is not supported")
    for key in ("minLength", "maxLength", "minItems", "maxItems", "minimum", "maximum"):
        if key in node and type(node[key]) is not int:
            raise UnsupportedSchema(f"{where}: {key} must be a whole number here")
    if "enum" in node and not all(type(v) is str for v in node["enum"]):
        raise UnsupportedSchema(f"{where}: only enums of strings are supported")
    if node.get("additionalProperties", True) not in (True, False):
        raise UnsupportedSchema(f"{where}: additionalProperties must be true or false here")
    # Keywords that apply to one JSON type each, as jsonschema applies them: to that type only.
    on: dict[str, list[Check]] = {"string": [], "array": [], "object": [], "integer": []}
    if "pattern" in node:
        _strict(node["pattern"], where)
    search = re.compile(node["pattern"]).search if "pattern" in node else None  # jsonschema searches, unanchored
    if search is not None:
        if t == "string" and len(set(node) - _ANNOTATIONS) == 2:  # the common case, in one call
            return lambda x: type(x) is str and search(x) is not None
        on["string"].append(lambda x: search(x) is not None)
    for key, kind, size in _SIZES:
        if key in node:
            on[kind].append(size(node[key]))
    if node.get("uniqueItems"):
        # strings only: their equality is plain equality (jsonschema's own rules differ for 1 and True)
        on["array"].append(lambda x: all(type(i) is str for i in x) and len(set(x)) == len(x))
    if "items" in node:
        item = _compile(node["items"], root, f"{where}/items")
        on["array"].append(lambda x: all(map(item, x)))
    for key, bound in (("minimum", _min), ("maximum", _max)):
        if key in node:
            on["integer"].append(bound(node[key]))
    if "properties" in node or "required" in node or "additionalProperties" in node:
        props = {k: _compile(v, root, f"{where}/properties/{k}") for k, v in node.get("properties", {}).items()}
        required = tuple(node.get("required", ()))
        closed = node.get("additionalProperties", True) is False

        def obj(x: dict) -> bool:
            for k in required:
                if k not in x:
                    return False
            for k, v in x.items():
                check = props.get(k)
                if check is None:
                    if closed:
                        return False
                elif not check(v):
                    return False
            return True
        on["object"].append(obj)
    allowed = frozenset(node["enum"]) if "enum" in node else None
    return _assemble(t, on, allowed)


def _strict(pattern: str, where: str) -> None:
    """Refuse a pattern that is not anchored at the true end of the text, or that admits non-ASCII digits."""
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        raise UnsupportedSchema(f"{where}: the pattern {pattern!r} ends in a bare '$', which also matches before a "
                                "final newline; end it with '$(?!\\n)'")
    if "\\d" in pattern:
        raise UnsupportedSchema(f"{where}: the pattern {pattern!r} uses \\d, which matches any Unicode digit; "
                                "write [0-9]")


def _all(checks: list[Check]) -> Check:
    if len(checks) == 1:
        return checks[0]
    first, *rest = checks

    def both(x: Any) -> bool:
        if not first(x):
            return False
        for c in rest:
            if not c(x):
                return False
        return True
    return both


def _assemble(t: str | None, on: dict[str, list[Check]], allowed: frozenset[str] | None) -> Check:
    """One check: the type (if any), the enum (if any), then the keywords of the value's JSON type."""
    kinds = {"string": str, "array": list, "object": dict, "integer": int}
    if t is not None:
        want = kinds.get(t)
        if want is None:  # boolean: nothing more to check
            return _TYPES[t]
        rest = on[t]
        if allowed is not None:
            rest = [lambda x: x in allowed] + rest
        if not rest:
            return lambda x: type(x) is want
        inner = _all(rest)
        return lambda x: type(x) is want and inner(x)
    by_type = {kinds[k]: _all(v) for k, v in on.items() if v}

    def untyped(x: Any) -> bool:
        if allowed is not None and not (type(x) is str and x in allowed):
            return False
        check = by_type.get(type(x))
        if check is not None:
            return check(x)
        # a float or Decimal would meet minimum and maximum under jsonschema's rules: not sure
        return not (on["integer"] and type(x) not in _NOT_NUMBERS)
    return untyped


@lru_cache(maxsize=None)
def certainly_valid(name: str) -> Check:
    """The fast acceptance check of ``rules/schema/<name>.schema.json``: ``True`` means jsonschema would
    accept the document; ``False`` means ask jsonschema."""
    return compile_check(schema(name))  # the schema checked against the meta-schema, read once (no jsonschema)
