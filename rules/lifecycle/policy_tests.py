"""Policy unit tests (``dacp test``), in the spirit of ``opa test``.

A tests file (kind: tests) under ``<policies>/tests/`` holds named base queries and tests. A test
starts from a base (or a full query), changes it with ``with`` (deep merge; a key set to null is
removed), evaluates it and compares what ``expect`` names: eligible, haircut, collateral value and
which rules failed / passed / applied / were not applicable. Coverage: every rule of the bundle must
be seen both holding and not holding (failing, or applied vs not applied) by some test.

A tests file may also hold ``backtests``: the bundle's haircut for an asset against a price history
(``rules.lifecycle.backtest``), expecting it to cover a loss quantile or to be breached at most so often - so a
change that weakens a haircut below the evidence fails its tests.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from rules.engine import cross_margin as xmargin
from rules.engine.decide import Engine
from rules.engine.query import parse_query
from rules.errors import DacpError, PolicyError, Problem
from rules.lifecycle import backtest as bt
from rules.policy.schema_check import check_document
from rules.policy.yaml_reader import SourceDoc, load_yaml_text
from rules.values import decimal_text


@dataclass
class TestResult:
    file: str
    line: int | None
    name: str
    ok: bool
    failures: list[str] = field(default_factory=list)


@dataclass
class Report:
    results: list[TestResult]
    coverage: dict[str, set[str]]  # rule id -> outcomes seen
    rule_ids: list[str]

    @property
    def passed(self) -> int:
        return sum(r.ok for r in self.results)

    @property
    def failed(self) -> int:
        return len(self.results) - self.passed

    def uncovered(self) -> list[str]:
        """Rules not seen both holding and not holding."""
        out = []
        for rid in self.rule_ids:
            seen = self.coverage.get(rid, set())
            holds = bool(seen & {"pass", "applied"})
            not_holds = bool(seen & {"fail", "not_applicable"})
            if not (holds and not_holds):
                out.append(rid)
        return out


def merge(base: Any, changes: Any) -> Any:
    """Deep merge for mappings; lists and scalars replace; None removes the key."""
    if not isinstance(base, dict) or not isinstance(changes, dict):
        return copy.deepcopy(changes)
    out = copy.deepcopy(base)
    for k, v in changes.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _jsonable(v: Any) -> Any:
    """YAML numbers read as Decimal go back to strings: queries take decimals as strings."""
    if isinstance(v, Decimal):
        return decimal_text(v)
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    return v


def load_test_docs(directory: Path) -> list[SourceDoc]:
    files = sorted(p for p in directory.glob("*.y*ml") if p.is_file())
    if not files:
        raise PolicyError([Problem(str(directory), None, None, "no policy test files (*.yaml) found here")])
    docs, problems = [], []
    for p in files:
        doc, found = load_yaml_text(p.read_text(encoding="utf-8"), str(p))
        problems.extend(found)
        if doc is None:
            continue
        problems.extend(check_document(doc, "policy"))
        if isinstance(doc.data, dict) and doc.data.get("kind") != "tests":
            problems.append(Problem(str(p), 1, 1, "files in the tests folder must be of kind 'tests'"))
        docs.append(doc)
    if problems:
        raise PolicyError(problems)
    return docs


def run_tests(engine: Engine, directory: Path) -> Report:
    coverage: dict[str, set[str]] = {}
    results = []
    prices: dict[Path, Any] = {}
    xm = xmargin.cross_margin(engine.bundle)
    for doc in load_test_docs(directory):
        bases = doc.data.get("bases", {})
        for i, c in enumerate(doc.data.get("cross_margin", [])):
            results.append(_cross_margin(xm, doc, i, c, coverage))
        for i, b in enumerate(doc.data.get("backtests", [])):
            results.append(_backtest(engine, doc, i, b, prices))
        for i, t in enumerate(doc.data.get("tests", [])):
            line = doc.where(("tests", i))[0]
            res = TestResult(doc.file, line, t["name"], True)
            results.append(res)
            if "base" in t and t["base"] not in bases:
                res.ok, res.failures = False, [f"unknown base {t['base']!r} (known: {', '.join(sorted(bases))})"]
                continue
            raw = merge(bases[t["base"]], t.get("with", {})) if "base" in t else merge(t["query"], t.get("with", {}))
            try:
                decision = engine.decide(parse_query(_jsonable(raw), f"{doc.file}:{line}")).to_json()
            except DacpError as e:
                res.ok, res.failures = False, [f"the query is not valid: {e}"]
                continue
            for r in decision["reasons"]:
                coverage.setdefault(r["rule"], set()).add(r["outcome"])
            res.failures = _compare(t["expect"], decision)
            res.ok = not res.failures
    return Report(results, coverage, engine.bundle.rule_ids() + ([r.id for r in xm.rules] if xm else []))


def _cross_margin(xm: xmargin.CrossMargin | None, doc: SourceDoc, i: int, case: dict[str, Any],
                  coverage: dict[str, set[str]]) -> TestResult:
    """A cross-margin case: the programme's rules on the case's profile (``rules.engine.cross_margin``)."""
    res = TestResult(doc.file, doc.where(("cross_margin", i))[0], case["name"], True)
    if xm is None:
        res.ok, res.failures = False, ["the bundle has no cross-margin programme (cross_margin in its margin policy)"]
        return res
    d = xmargin.decide(xm, "test", _jsonable(case["profile"]))
    for r in d["reasons"]:
        coverage.setdefault(r["rule"], set()).add(r["outcome"])
    e = case["expect"]
    if "eligible" in e and e["eligible"] != d["eligible"]:
        res.failures.append(f"expected eligible={str(e['eligible']).lower()}, got {str(d['eligible']).lower()} "
                            f"(failing rules: {', '.join(d['failed_rules']) or 'none'})")
    outcomes = {r["rule"]: r["outcome"] for r in d["reasons"]}
    if "failing_rules" in e and set(e["failing_rules"]) != set(d["failed_rules"]):
        res.failures.append(f"expected failing rules {sorted(e['failing_rules'])}, got {sorted(d['failed_rules'])}")
    missing = [r for r in e.get("passing_rules", []) if outcomes.get(r) != "pass"]
    if missing:
        res.failures.append(f"expected pass for {sorted(missing)}")
    if "qualifying_positions" in e:
        got = sum(1 for p in d["positions"] if p["qualifies"])
        if got != e["qualifying_positions"]:
            res.failures.append(f"expected {e['qualifying_positions']} qualifying positions, got {got}")
    res.ok = not res.failures
    return res


def _backtest(engine: Engine, doc: SourceDoc, i: int, b: dict[str, Any], cache: dict[Path, Any]) -> TestResult:
    """A haircut backtest expectation: the bundle's haircut for the asset against the price history."""
    res = TestResult(doc.file, doc.where(("backtests", i))[0], b["name"], True)
    try:
        path = (Path(doc.file).parent / b["prices"]).resolve()
        if path not in cache:
            cache[path] = bt.load_prices(path)
        cache[path].check_asset(b["asset"])
        result = bt.run_backtest(cache[path], bt.policy_haircut(engine.bundle, b["asset"], bt.parse_day(b.get("as_of"), "as_of")),
                                 bt.parse_horizon(b["horizon"]), bt.parse_day(b.get("since"), "since"),
                                 bt.parse_day(b.get("until"), "until"))
    except DacpError as e:
        res.ok, res.failures = False, [f"the backtest cannot run: {e}"]
        return res
    e = b["expect"]
    h = f"{b['asset']} haircut {bt.pct(result.haircut)}"
    if "covers_quantile" in e:
        q = Decimal(str(e["covers_quantile"]))
        need = bt.quantile([w.loss for w in result.windows], q)
        if result.haircut < need:
            res.failures.append(f"{h} does not cover the {bt.conf_words(q)} {result.horizon_days}-day loss "
                                f"{bt.pct(need)} ({len(result.windows)} windows from {result.windows[0].start})")
    if "max_breach_rate" in e and result.breach_rate > Decimal(str(e["max_breach_rate"])):
        res.failures.append(f"{h} was exceeded in {bt.pct(result.breach_rate, Decimal('0.01'))} of windows, "
                            f"more than {bt.pct(Decimal(str(e['max_breach_rate'])), Decimal('0.01'))}")
    if "max_breaches" in e and len(result.breaches) > e["max_breaches"]:
        res.failures.append(f"{h} was exceeded in {len(result.breaches)} windows, more than {e['max_breaches']}")
    res.ok = not res.failures
    return res


def _compare(expect: dict[str, Any], d: dict[str, Any]) -> list[str]:
    fails = []
    if "eligible" in expect and expect["eligible"] != d["eligible"]:
        fails.append(f"expected eligible={str(expect['eligible']).lower()}, got {str(d['eligible']).lower()} "
                     f"(failing rules: {', '.join(d['failed_rules']) or 'none'})")
    if "haircut" in expect:
        got = Decimal(d["haircut"]["total"]) if d.get("haircut") else None
        if got != expect["haircut"]:
            fails.append(f"expected haircut {expect['haircut']}, got {got}")
    if "collateral_value_usd" in expect and Decimal(str(expect["collateral_value_usd"])) != Decimal(d["collateral_value_usd"]):
        fails.append(f"expected collateral value {expect['collateral_value_usd']}, got {d['collateral_value_usd']}")
    by_outcome: dict[str, set[str]] = {}
    for r in d["reasons"]:
        by_outcome.setdefault(r["outcome"], set()).add(r["rule"])
    if "failing_rules" in expect:
        want, got = set(expect["failing_rules"]), by_outcome.get("fail", set())
        if want != got:
            fails.append(f"expected failing rules {sorted(want)}, got {sorted(got)}")
    for key, outcome in (("passing_rules", "pass"), ("applied_rules", "applied"), ("not_applicable_rules", "not_applicable")):
        missing = set(expect.get(key, [])) - by_outcome.get(outcome, set())
        if missing:
            fails.append(f"expected {outcome} for {sorted(missing)}")
    return fails
