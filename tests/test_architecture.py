"""The house's rules, read from the code itself (issue 13; docs/architecture.md).

Every import in rules/ and adapters/ is read with ``ast`` — module-level and function-level alike — and the
graph is held to the layering: doors (cli, http) -> app -> margin -> ledger, lifecycle -> audit -> engine -> policy ->
base (errors, evidence, values, settings, collector); adapters use only errors, evidence and values. No
cycle between modules, no dynamic import, no module over 400 lines, at most 8 modules directly in rules/.

``python -m tests.test_architecture`` prints the room-to-room graph with its edge counts, module counts and
the largest modules (the figures quoted in the issue's closing note).
"""

from __future__ import annotations

import ast
import sys
from collections import Counter
from pathlib import Path

from tests.support import ROOT

PACKAGES = ("rules", "adapters")
MAX_LINES = 400
MAX_TOP_LEVEL = 8
BASE = {"rules.errors", "rules.evidence", "rules.values", "rules.settings", "rules.collector", "rules"}

# room -> the rooms it may import (its own room always)
ALLOWED: dict[str, set[str]] = {
    "base": set(),
    "adapters": set(),  # adapters: only ADAPTER_MAY_USE of rules/ (checked apart)
    "policy": {"base"},
    "engine": {"base", "policy"},
    "audit": {"base", "policy", "engine", "storage"},
    "lifecycle": {"base", "policy", "engine", "audit"},
    "ledger": {"base", "policy", "engine", "audit", "storage"},
    # margin sits right above the ledger: coverage reads the ledger's positions and journal, and the ledger
    # reaches margin only through the withdrawal guard the composition root hands it (no edge back)
    "margin": {"base", "policy", "engine", "audit", "ledger", "storage"},
    "app": {"base", "policy", "engine", "audit", "lifecycle", "ledger", "margin", "adapters", "storage"},
    "http": {"base", "policy", "engine", "audit", "lifecycle", "ledger", "margin", "app"},
    "cli": {"base", "policy", "engine", "audit", "lifecycle", "ledger", "margin", "app", "http"},
}
ADAPTER_MAY_USE = {"rules.errors", "rules.evidence", "rules.values"}


def modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def room(module: str) -> str:
    if module in BASE or module.startswith("rules.settings."):  # the settings package: its parts are base too
        return "base"
    if module.startswith("adapters.storage"):
        return "storage"
    if module.startswith("adapters"):
        return "adapters"
    if module == "rules.app":
        return "app"
    return module.split(".")[1]


def imports(path: Path, module: str, known: set[str]) -> list[tuple[str, int]]:
    """Every project module ``path`` imports (resolved to the longest known module name), with its line."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, int]] = []

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        for name in names:
            if name.split(".")[0] in PACKAGES:
                target = resolve(name)
                if target and target != module:
                    found.append((target, node.lineno))
    return found


def graph() -> dict[str, list[tuple[str, int]]]:
    mods = modules()
    known = set(mods)
    return {m: sorted(set(imports(p, m, known))) for m, p in mods.items()}


def test_dependencies_point_one_way():
    bad = []
    for src, targets in graph().items():
        r = room(src)
        for dst, line in targets:
            d = room(dst)
            if src.startswith("adapters"):
                ok = dst.startswith("adapters") or dst in ADAPTER_MAY_USE
            elif d == r:
                ok = True
            else:
                ok = d in ALLOWED[r]
            if not ok:
                bad.append(f"{src} ({r}) imports {dst} ({d}) at line {line}")
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_no_import_cycle():
    g = {m: {d for d, _ in ts} for m, ts in graph().items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10_000)

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    # a package's __init__ importing its own submodules is not a cycle of meaning; none is allowed anyway
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_no_dynamic_import():
    bad = []
    for m, path in modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import) and any(a.name == "importlib" or a.name.startswith("importlib.")
                                                    for a in node.names):
                bad.append(f"{m}:{node.lineno} imports importlib")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("importlib"):
                bad.append(f"{m}:{node.lineno} imports from importlib")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "__import__":
                bad.append(f"{m}:{node.lineno} calls __import__")
    assert not bad, "\n".join(bad)


def test_modules_are_short_and_rules_has_few_top_level_modules():
    long = [f"{m}: {n} lines" for m, n in line_counts().items() if n > MAX_LINES]
    assert not long, f"modules over {MAX_LINES} lines:\n" + "\n".join(long)
    top = sorted(p.name for p in (ROOT / "rules").glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL, f"{len(top)} modules directly in rules/: {top}"


def line_counts() -> dict[str, int]:
    return {m: len(p.read_text(encoding="utf-8").splitlines()) for m, p in modules().items()}


def report() -> str:
    edges: Counter[tuple[str, str]] = Counter()
    for src, targets in graph().items():
        for dst, _ in targets:
            a, b = room(src), room(dst)
            if a != b:
                edges[(a, b)] += 1
    counts = line_counts()
    lines = [f"{len(counts)} modules in rules/ and adapters/; "
             f"{len(list((ROOT / 'rules').glob('*.py')))} directly in rules/; "
             f"largest: " + ", ".join(f"{m} {n}" for m, n in sorted(counts.items(), key=lambda kv: -kv[1])[:6]),
             "room -> room (imports):"]
    lines += [f"  {a:10} -> {b:10} {n}" for (a, b), n in sorted(edges.items())]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(report())
