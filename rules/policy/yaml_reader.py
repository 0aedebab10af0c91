"""Safe, exact YAML (and JSON) reading with a line:column for every value.

PyYAML's loaders silently keep the last of duplicate keys and turn ``0.1`` into a binary float.
Here the node tree is composed with PyYAML's *safe* composer and converted by hand:

* duplicate mapping keys are errors naming both lines;
* numbers become ``int`` or exact ``Decimal``; ``.nan``/``.inf`` are errors, and so is a number token longer
  than ``rules.values.MAX_NUMBER_TEXT`` characters (refused before conversion: Python's ``int`` raises on
  more than 4,300 digits);
* only the core tags are accepted (``!!python/...`` and custom tags are errors; nothing is executed);
* dates and times stay strings (the schema checks their form);
* every value's position is recorded by its path, so schema errors can be reported at file:line:col.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from rules.errors import Problem
from rules.values import MAX_NUMBER_TEXT

if TYPE_CHECKING:  # PyYAML is imported by load_yaml_text, when a text is parsed: a cold start that parses no
    # YAML (bundle cache hot, a JSON query) never loads it (issue 18)
    import yaml

Path = tuple[str | int, ...]

_INT = re.compile(r"^[-+]?(0|[1-9][0-9_]*)$")
_FLOAT = re.compile(r"^[-+]?([0-9][0-9_]*)?\.?[0-9_]*([eE][-+]?[0-9]+)?$")
_SPECIAL_FLOAT = re.compile(r"^[-+]?\.(inf|Inf|INF|nan|NaN|NAN)$")
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_NULL = {"", "~", "null", "Null", "NULL"}
_CORE_TAGS = {
    "tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null", "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq", "tag:yaml.org,2002:timestamp",
}


@dataclass
class SourceDoc:
    """A parsed document with the position of each path (1-based line and column)."""

    file: str
    data: Any
    marks: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def where(self, path: Path) -> tuple[int | None, int | None]:
        """Position of ``path``, or of its nearest recorded parent."""
        p = tuple(path)
        while True:
            if p in self.marks:
                return self.marks[p]
            if not p:
                return (None, None)
            p = p[:-1]


class _Converter:
    def __init__(self, file: str, text: str = ""):
        self.file = file
        self.lines = text.split("\n")
        self.marks: dict[Path, tuple[int, int]] = {}
        self.problems: list[Problem] = []
        self.seen: set[int] = set()

    def explicit_tag(self, node: yaml.Node) -> bool:
        """Whether the node was written with a tag (``!!str 123``). The composers (PyYAML's and
        LibYAML's) do not say so, and LibYAML tags every plain scalar str: look at the source."""
        m = node.start_mark
        try:
            return self.lines[m.line][m.column] == "!"
        except IndexError:
            return False

    def problem(self, node: yaml.Node, message: str) -> None:
        m = node.start_mark
        self.problems.append(Problem(self.file, m.line + 1, m.column + 1, message))

    def convert(self, node: yaml.Node, path: Path) -> Any:
        self.marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if id(node) in self.seen:  # only an alias (*name) reaches a node twice; refused (no 'billion laughs')
            self.problem(node, "this value is repeated through an alias (*name); aliases are not allowed, write the values out")
            return None
        self.seen.add(id(node))
        if node.tag not in _CORE_TAGS:
            self.problem(node, f"the tag {node.tag!r} is not allowed in policy files (only plain values, lists and mappings)")
            return None
        if node.id == "mapping":  # yaml.MappingNode (PyYAML's node classes name their kind in ``id``)
            return self._mapping(node, path)
        if node.id == "sequence":  # yaml.SequenceNode
            return [self.convert(item, path + (i,)) for i, item in enumerate(node.value)]
        return self._scalar(node)

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, Any]:
        out: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                self.problem(key_node, "merge keys ('<<') are not allowed; write the values out")
                continue
            if key_node.id != "scalar":  # not a yaml.ScalarNode
                self.problem(key_node, "a key must be a plain word, not a list or mapping")
                continue
            key = key_node.value
            if key in out:
                self.problem(key_node, f"duplicate key {key!r}: it is already set on line {first_line[key]}; "
                                       "only one value is allowed")
                continue
            first_line[key] = key_node.start_mark.line + 1
            out[key] = self.convert(value_node, path + (key,))
        return out

    def _scalar(self, node: yaml.ScalarNode) -> Any:
        text = node.value
        if node.style in ("'", '"', "|", ">"):  # LibYAML gives plain scalars style '' (PyYAML: None)
            return text  # quoted or block scalars are always strings
        if node.tag == "tag:yaml.org,2002:str" and self.explicit_tag(node):
            return text  # written !!str: a word, whatever it looks like
        # Other plain scalars follow the YAML 1.2 core schema, not PyYAML's YAML 1.1 resolver: 'yes', 'no',
        # 'on', 'off' stay words (a country code NO must not become false).
        if text in _NULL:
            return None
        if text in _BOOL:
            return _BOOL[text]
        if _SPECIAL_FLOAT.match(text):
            self.problem(node, f"{text!r} is not a number that can be used (no NaN or infinity)")
            return None
        if len(text) > MAX_NUMBER_TEXT and (_INT.match(text) or _FLOAT.match(text)):
            self.problem(node, f"a number of {len(text):,} characters is too long (at most {MAX_NUMBER_TEXT}); "
                               "quote it if it is text")
            return None
        if _INT.match(text):
            return int(text.replace("_", ""))
        if _FLOAT.match(text) and any(c.isdigit() for c in text):
            try:
                value = Decimal(text.replace("_", ""))
            except InvalidOperation:
                return text
            if not value.is_finite():
                self.problem(node, f"{text!r} is not a finite number")
                return None
            return value
        return text  # timestamps and everything else stay text


_COMPOSE_LOCK = threading.Lock()
MAX_DEPTH = 64  # far deeper than any policy or query; keeps parsers off the C stack's edge


def too_deep(text: str, limit: int = MAX_DEPTH) -> bool:
    """True if brackets outside quoted strings nest deeper than ``limit``.

    Checked before parsing: importing web3 raises Python's recursion limit to 100000, after which
    a deeply nested document can overflow the C stack inside json.loads (a segfault, not an error),
    and PyYAML's scanner is quadratic in flow nesting. Cheap: a full scan only runs when the text
    holds more opening brackets than the limit."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    quote = ""
    escaped = False
    prev = "\n"
    for ch in text:
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\" and quote == '"':
                escaped = True
            elif ch == quote:
                quote = ""
        elif ch in "\"'" and prev in " \t\r\n[{,:":  # a quote opens only at a token's start (not in "FCM's")
            quote = ch
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
        prev = ch
    return False


def load_yaml_text(text: str, file: str) -> tuple[SourceDoc | None, list[Problem]]:
    """Parse one YAML document. Returns the document (None on a syntax error) and the problems found."""
    if too_deep(text):
        return None, [Problem(file, None, None, f"the document is nested too deeply (more than {MAX_DEPTH} levels)")]
    import yaml

    # LibYAML's C parser when PyYAML was built with it (about 10x faster on large bundles); same nodes and marks.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        with _COMPOSE_LOCK:  # LibYAML's composer is not safe to run from several threads at once
            nodes = list(yaml.compose_all(text, Loader=loader))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        col = mark.column + 1 if mark else None
        what = (e.problem or "malformed YAML").strip()
        return None, [Problem(file, line, col, f"this is not valid YAML: {what}")]
    except yaml.YAMLError as e:  # pragma: no cover - defensive: other reader errors
        return None, [Problem(file, None, None, f"this is not valid YAML: {e}")]
    except RecursionError:
        return None, [Problem(file, None, None, "the document is nested too deeply")]
    if len(nodes) != 1 or nodes[0] is None:
        msg = "the file is empty" if not nodes or nodes[0] is None else "the file holds several YAML documents; use one"
        return None, [Problem(file, 1, 1, msg)]
    conv = _Converter(file, text)
    try:
        data = conv.convert(nodes[0], ())
    except RecursionError:
        return None, [Problem(file, None, None, "the document is nested too deeply")]
    return SourceDoc(file, data, conv.marks), conv.problems
