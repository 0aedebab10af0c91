"""docs/errors.md against the code, both ways: every error class's code, exit code, HTTP status and retryable
flag; every code of the HTTP door (``rules.http.errors.HTTP_CODES``, and every code its modules answer with);
every ``EvidenceError`` reason raised in adapters/ and rules/ (``rules.errors.EVIDENCE_REASONS``)."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

from rules.errors import EVIDENCE_REASONS, DacpError, EvidenceError
from rules.http.errors import HTTP_CODES
from tests.support import ROOT

DOC = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
SOURCES = sorted([*(ROOT / "rules").rglob("*.py"), *(ROOT / "adapters").rglob("*.py")])
EVIDENCE_CALLS = {"EvidenceError", "BitcoinRpcError", "_err"}  # the first argument is the reason
RELAYED = {"reason", "err.reason"}  # a reason passed on from a table checked below (_classify, _REASON_BY_CODE)


def _section(title: str) -> list[list[str]]:
    """The rows of the table under the heading that starts with ``title``, cells stripped of backticks."""
    part = DOC.split("\n## " + title, 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip().strip("`") for c in line.strip().strip("|").split("|")]
            for line in part.splitlines() if line.startswith("| `")]
    assert rows, f"no table under {title!r}"
    return rows


def _yes(cell: str) -> bool:
    assert cell in ("yes", "no"), cell
    return cell == "yes"


def _error_classes() -> set[type[DacpError]]:
    """Every DacpError subclass defined in rules/ and adapters/ (their modules imported, found with ast)."""
    for path in SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(isinstance(n, ast.ClassDef) and n.bases for n in tree.body):
            importlib.import_module(".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"))
    found, todo = set(), [DacpError]
    while todo:
        c = todo.pop()
        found.add(c)
        todo += c.__subclasses__()
    return {c for c in found if c.__module__.split(".")[0] in ("rules", "adapters")}


def test_every_error_class_is_in_the_table_with_its_code_exit_status_and_retryable():
    rows = {r[0]: r for r in _section("Domain errors")}
    assert len(rows) == len(_section("Domain errors")), "a code listed twice"
    classes = _error_classes()
    for c in classes:
        name = f"{c.__module__}.{c.__name__}"
        assert c.code in rows, f"{name}: code {c.code!r} is not in docs/errors.md"
        code, listed, exit_code, status, retryable, meaning = rows[c.code]
        assert name in [x.strip().strip("`") for x in listed.split(",")], f"{name} not listed under {c.code}"
        assert (int(exit_code), int(status)) == (c.exit_code, c.http_status), name
        if issubclass(c, EvidenceError):
            assert retryable == "by reason", name
        else:
            assert _yes(retryable) is c.retryable, name
        assert meaning, c.code
    listed_names = {x.strip().strip("`") for r in rows.values() for x in r[1].split(",")}
    assert listed_names == {f"{c.__module__}.{c.__name__}" for c in classes}, "a class listed that does not exist"


def _literal_codes() -> dict[str, set[str]]:
    """Codes the HTTP door answers with: HttpError(status, CODE, ...), error_response(request, status, CODE, ...)
    and the codes of dict displays in rules/http/errors.py; with where they are."""
    out: dict[str, set[str]] = {}
    for path in (ROOT / "rules" / "http").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for n in ast.walk(tree):
            if isinstance(n, ast.Call):
                name = getattr(n.func, "id", getattr(n.func, "attr", None))
                pos = {"HttpError": 1, "error_response": 2}.get(name)
                if pos is not None and len(n.args) > pos:
                    arg = n.args[pos]
                    if isinstance(arg, ast.Constant):
                        out.setdefault(arg.value, set()).add(f"{path.name}:{n.lineno}")
                    else:  # a code passed on: only from a domain error or the handlers' own dict
                        assert path.name == "errors.py", f"{path}:{n.lineno}: code is not a literal"
            if path.name == "errors.py" and isinstance(n, ast.Dict) and all(isinstance(k, ast.Constant) and
                                                                              isinstance(k.value, int) for k in n.keys):
                for v in n.values:
                    out.setdefault(v.value, set()).add(f"{path.name}:{n.lineno}")
        for m in re.finditer(r'"code": "([a-z_]+)"', path.read_text(encoding="utf-8")):  # raw answers (deadlines.py)
            out.setdefault(m.group(1), set()).add(path.name)
    return out


def test_every_http_code_is_in_the_table_and_every_answered_code_is_declared():
    rows = {r[0]: r for r in _section("The HTTP door")}
    assert set(rows) == set(HTTP_CODES), "docs/errors.md and rules.http.errors.HTTP_CODES differ"
    for code, (status, retryable, _) in HTTP_CODES.items():
        assert (int(rows[code][1]), _yes(rows[code][2])) == (status, retryable), code
    domain = {c.code for c in _error_classes()}
    for code, where in _literal_codes().items():
        assert code in HTTP_CODES or code in domain, f"{code!r} ({', '.join(sorted(where))}) is not declared"


def _raised_reasons() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for path in SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        rel = str(path.relative_to(ROOT))
        for n in ast.walk(tree):
            if isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", None)) in EVIDENCE_CALLS:
                if not n.args:
                    continue
                arg = n.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    out.setdefault(arg.value, set()).add(f"{rel}:{n.lineno}")
                else:
                    assert ast.unparse(arg) in RELAYED, f"{rel}:{n.lineno}: a reason that is not a literal"
            if isinstance(n, ast.FunctionDef) and n.name == "_classify":  # (reason, retryable, words)
                for r in ast.walk(n):
                    if isinstance(r, ast.Return) and isinstance(r.value, ast.Tuple):
                        out.setdefault(r.value.elts[0].value, set()).add(f"{rel}:{r.lineno}")
            if isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "_REASON_BY_CODE" for t in n.targets):
                for v in n.value.values:
                    out.setdefault(v.value, set()).add(f"{rel}:{n.lineno}")
            if (isinstance(n, ast.Call) and getattr(n.func, "attr", None) == "get" and len(n.args) == 2
                    and getattr(n.func.value, "id", "") == "_REASON_BY_CODE"):
                out.setdefault(n.args[1].value, set()).add(f"{rel}:{n.lineno}")
    return out


def test_every_evidence_reason_raised_is_declared_and_in_the_table():
    raised = _raised_reasons()
    assert {"node_unreachable", "wrong_chain", "stale_block", "reorg", "timeout"} <= set(raised)  # the scan works
    missing = {r: sorted(w) for r, w in raised.items() if r not in EVIDENCE_REASONS}
    assert not missing, f"reasons raised but not in rules.errors.EVIDENCE_REASONS: {missing}"
    unused = set(EVIDENCE_REASONS) - set(raised)
    assert not unused, f"reasons declared but raised nowhere: {unused}"
    rows = {r[0]: r for r in _section("Evidence reasons")}
    assert set(rows) == set(EVIDENCE_REASONS), "docs/errors.md and rules.errors.EVIDENCE_REASONS differ"
    for reason, (retryable, _) in EVIDENCE_REASONS.items():
        assert _yes(rows[reason][1]) is retryable, reason


@pytest.mark.parametrize("reason", ["node_unreachable", "wrong_chain", "reorg", "no_such_reason"])
def test_an_evidence_error_says_why_and_whether_to_retry(reason):
    e = EvidenceError(reason, "in plain words")
    retryable = EVIDENCE_REASONS.get(reason, (False, ""))[0]  # an unknown reason: not retryable
    assert e.details() == {"reason": reason, "retryable": retryable}
    assert e.to_json() == {"code": "evidence_unavailable", "message": "in plain words", "retryable": retryable,
                           "reason": reason}
    assert e.exit_code == 4 and e.http_status == 502
