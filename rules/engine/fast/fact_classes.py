"""Fact classes: which facts a compiled bundle cannot tell apart, so that one evaluation serves them all.

Every condition the compiler emits compares one fact with a constant (``eq``, ``neq``, ``ge``, ``gt``,
``le``, ``lt``) or tests that it exists. Two levels use that:

``FactClasses`` (whole bundle): two fact dicts that agree on which facts exist and, for every fact, on
how it compares with *every constant any condition compares that fact with*, make every condition -
hence every rule outcome - come out the same, in durable_rules and in the Python evaluator alike:

* an int fact: its position among the sorted constants;
* a str fact: itself if some condition names it, else one token for "any other word";
* a bool fact: itself; a fact no condition tests: left out; a missing fact: missing;
* a value of an unexpected type, or an int beyond 2**53: itself, with its type (never merged with
  anything: the evaluator gets it and refuses it).

``PlanClasses`` (one asset on one day, what ``Engine`` uses): the asset's and the day's facts are folded
into every rule first (``fold``); the rules whose applicability folds to false drop out; then, fact by
fact, the kinds above are merged when they fold every remaining rule to the same formula - the three
custodians approved for the asset's chain are one class, the admitted FCMs another, every price age
within the limit a third. Syntactically equal formulas give equal outcomes whatever the other facts
are, so merging never changes an outcome.

``rules.engine.criteria`` evaluates the first fact dict of each class and reuses the outcomes for the rest
(the observed values in the trace are always the decision's own), and checks the evaluator's outcomes
against the plan's applicability on every new class. ``tests/engine/fast/test_fact_classes.py`` checks that facts
of one class have the same outcomes in both evaluators.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any, Callable, Iterable, Mapping, NamedTuple

from rules.engine.compiler import QID, CompiledBundle, Cond
from rules.engine.evaluators.python import build  # the evaluator's own semantics for one atom (fold)
from rules.policy.facts import DAY_KEY, FACTS, MAX_INT_FACT

_MISSING = ("missing",)
_OTHER = ("other word",)
_COMPARE = ("eq", "neq", "ge", "gt", "le", "lt")

_KEY_TYPES: dict[str, type] = {s.key: {"bool": bool, "int": int, "str": str}[s.type] for s in FACTS.values()}
_KEY_TYPES[DAY_KEY] = int


def _atoms(c: Cond, out: list[Cond]) -> None:
    if c[0] in ("and", "or"):
        for x in c[1]:
            _atoms(x, out)
    else:
        out.append(c)


def constants(compiled: CompiledBundle) -> dict[str, tuple[set[Any], set[str]]]:
    """Per fact key: every constant a condition of ``compiled`` compares it with, and the comparisons used."""
    return constants_of([c for r in compiled.rules for c in (r.applies, r.passes)])


class FactClasses:
    """The class functions of one compiled bundle: over every fact it tests, or over some of them."""

    def __init__(self, compiled: CompiledBundle):
        self._how: dict[str, tuple[type, Any]] = {}
        for key, (values, ops) in constants(compiled).items():
            want = _KEY_TYPES.get(key)
            if want is None:  # pragma: no cover - the compiler only names catalogued facts
                raise ValueError(f"unknown fact key {key!r}")
            if any(type(v) is not want for v in values):  # a constant of another type: compare exactly
                self._how[key] = (want, None)
            elif want is int:
                self._how[key] = (int, _int_kind(tuple(sorted(values))))
            elif want is str and ops <= {"eq", "neq", "ex", "nex"}:  # words are only ever equal or not
                self._how[key] = (str, frozenset(values))
            else:
                self._how[key] = (want, None)
        self.keys = tuple(sorted(self._how))
        self._plan = tuple((k, *self._how[k]) for k in self.keys)

    def kind(self, key: str, value: Any) -> Any:
        """Which of the values the rules tell apart ``value`` is, for fact ``key`` alone (an int: its
        position among the constants; anything else: itself)."""
        want, how = self._how.get(key, (None, None))
        return how(value) if want is int and how is not None and type(value) is int else value

    def of(self, facts: Mapping[str, Any]) -> tuple:
        """The class of ``facts`` over every fact the bundle tests."""
        out: list[Any] = [None]  # never a plan's tag (the engine uses one kind of class or the other)
        get = facts.get
        for key, want, how in self._plan:
            v = get(key, _MISSING)
            if v is _MISSING:
                out.append(v)
            elif type(v) is not want:
                out.append((type(v).__name__, v))  # never equal to a class value of the right type
            elif how is None:
                out.append(v)
            elif want is int:
                # beyond what durable_rules compares exactly: the evaluator must see (and refuse) it
                out.append(how(v) if -MAX_INT_FACT <= v <= MAX_INT_FACT else ("big", v))
            else:
                out.append(v if v in how else _OTHER)
        return tuple(out)


# -- per plan: the facts of the asset and the day folded in, values that act alike merged -----------
TRUE: Cond = ("true",)
FALSE: Cond = ("false",)


def fold(c: Cond, key: str, value: Any) -> Cond:
    """``c`` with the fact ``key`` set to ``value`` (``_MISSING``: absent), simplified.

    Atoms on ``key`` become true or false with the Python evaluator's semantics (which the differential
    tests hold equal to durable_rules'); ``and``/``or`` drop what no longer matters. The result is a
    deterministic function of ``c``: two values that fold ``c`` to the same formula make it come out
    the same whatever the other facts are."""
    op = c[0]
    if op in ("and", "or"):
        absorbing, neutral = (FALSE, TRUE) if op == "and" else (TRUE, FALSE)
        parts = []
        for x in c[1]:
            f = fold(x, key, value)
            if f == absorbing:
                return absorbing
            if f != neutral:
                parts.append(f)
        if not parts:
            return neutral
        return parts[0] if len(parts) == 1 else (op, tuple(parts))
    if op in ("true", "false"):
        return c
    if c[1] == QID:  # every evaluation fact carries it (the guard against durable's session state)
        return TRUE if op == "ex" else FALSE
    if c[1] != key:
        return c
    return TRUE if build(c)({} if value is _MISSING else {key: value}) else FALSE


def fold_all(c: Cond, facts: Mapping[str, Any]) -> Cond:
    for key, value in facts.items():
        c = fold(c, key, value)
    return c


def _other_word(words: frozenset[str]) -> str:
    w = "\x00other"
    while w in words:
        w += "\x00"
    return w


def _int_kind(points: tuple[int, ...]) -> Callable[[int], int]:
    """0 below the first constant, 1 at it, 2 between it and the next, ... 2n above the last."""
    n = len(points)

    def kind(v: int) -> int:
        i = bisect_left(points, v)
        return 2 * i + 1 if i < n and points[i] == v else 2 * i
    return kind


def _candidates(want: type, values: set[Any]) -> tuple[list[Any], Callable[[Any], int]]:
    """One value of each kind the atoms on a fact tell apart (``None`` for a kind no value has),
    and the function from a value to the position of its kind in that list."""
    if want is bool:
        return [False, True], lambda v: int(v)
    if want is str:
        words = sorted(values)
        index = {w: i for i, w in enumerate(words)}
        other = len(words)
        return [*words, _other_word(frozenset(words))], lambda v: index.get(v, other)
    points = tuple(sorted(values))
    reps: list[Any] = []
    for i, c in enumerate(points):  # below c (or strictly between the previous constant and c), then c
        reps.append(c - 1 if i == 0 or c - points[i - 1] > 1 else None)
        reps.append(c)
    reps.append(points[-1] + 1 if points else 0)
    return reps, _int_kind(points)


def _one_value(want: type, pos: int, kinds: int) -> bool:
    """Whether the kind at ``pos`` of ``kinds`` candidates holds a single value (missing: -1, one)."""
    if pos < 0 or want is bool:
        return True
    if want is str:
        return pos < kinds - 1  # a word a rule names; the last kind is every other word
    return pos % 2 == 1  # an int equal to a constant; the other kinds are ranges


class FactKinds(NamedTuple):
    """How ``PlanClasses.of`` finds one fact's merged kind (kept as an exact tuple: see
    ``rules.engine.fast.plans``)."""

    key: str
    want: type  # the fact's type: bool, int or str
    table: dict[Any, int] | None  # a word or a flag -> its merged kind (None for an int fact)
    other: int | None  # the merged kind of every word no rule names (a str fact)
    points: tuple[int, ...]  # an int fact: the constants its rules compare it with, sorted
    merged: tuple[int, ...]  # an int fact: its kind (position among the points) -> merged kind
    missing: int  # the merged kind of a missing fact


class PlanClasses:
    """The class function for the decisions of one plan (one asset on one day).

    ``base`` - the facts of the asset and the day - is folded into every rule first; the rules whose
    applicability folds to false cannot be changed by any fact (they are not applicable) and drop out.
    Then, fact by fact, values are merged when they fold every remaining rule to the same formula:
    the three approved custodians of a chain, two admitted participants, every price age within the
    limit. The class of a decision is the tuple of its facts' merged kinds."""

    def __init__(self, compiled: CompiledBundle, base: Mapping[str, Any], tag: Any):
        rules = []
        self.applies: list[tuple[int, bool]] = []
        for r in compiled.rules:
            applies = fold_all(r.applies, base)
            if applies not in (TRUE, FALSE):
                raise ValueError(f"rule {r.id}: applicability depends on more than the asset and the day")
            self.applies.append((r.index, applies == TRUE))
            if applies == TRUE:
                passes = fold_all(r.passes, base)
                if passes not in (TRUE, FALSE):
                    rules.append(passes)
        consts = constants_of(rules)
        fast: list[tuple] = []  # FactKinds
        self._single: list[frozenset[int]] = []  # per fact: the classes only one value can be in
        for key in sorted(consts):
            want = _KEY_TYPES[key]
            values = consts[key][0]
            if any(type(v) is not want for v in values):  # pragma: no cover - the loader types every check
                raise ValueError(f"fact {key!r} is compared with a value of another type")
            mine = [f for f in rules if key in keys_of(f)]
            reps, kind = _candidates(want, values)
            signatures: dict[tuple, int] = {}
            merged: list[int] = []
            members: dict[int, list[Any]] = {}
            for pos, rep in enumerate(reps):
                if rep is None:
                    merged.append(-1)  # no integer lies strictly between two consecutive ones
                    continue
                cls = signatures.setdefault(tuple(fold(f, key, rep) for f in mine), len(signatures))
                merged.append(cls)
                members.setdefault(cls, []).append((pos, rep))
            missing = signatures.setdefault(tuple(fold(f, key, _MISSING) for f in mine), len(signatures))
            members.setdefault(missing, []).append((-1, _MISSING))
            self._single.append(frozenset(c for c, m in members.items() if len(m) == 1 and _one_value(want, m[0][0], len(reps))))
            # What ``of`` runs: a word or a flag straight to its merged kind; an int through its constants.
            if want is int:
                fast.append(tuple(FactKinds(key, int, None, None, tuple(sorted(values)), tuple(merged), missing)))
            else:
                table = {rep: merged[kind(rep)] for rep in reps[:-1 if want is str else None]}
                fast.append(tuple(FactKinds(key, want, table, merged[kind(reps[-1])] if want is str else None, (), (),
                                            missing)))
        self._fast = tuple(fast)
        self.tag = tag
        self.keys = tuple(f[0] for f in fast)

    def pinned(self, cls: tuple) -> set[str]:
        """The facts whose value ``cls`` leaves no choice about (every decision of the class has it)."""
        return {key for key, single, c in zip(self.keys, self._single, cls[1:]) if type(c) is int and c in single}

    def of(self, facts: Mapping[str, Any]) -> tuple:
        out: list[Any] = [self.tag]
        get = facts.get
        for key, want, table, other, points, merged, missing in self._fast:
            v = get(key, _MISSING)
            if v is _MISSING:
                out.append(missing)
            elif type(v) is not want or (want is int and not -MAX_INT_FACT <= v <= MAX_INT_FACT):
                out.append((type(v).__name__, v))  # the evaluator must see (and refuse) it: never merged
            elif table is not None:
                out.append(table.get(v, other))  # a bool is always in its table: False, True
            else:
                i = bisect_left(points, v)
                out.append(merged[2 * i + 1 if i < len(points) and points[i] == v else 2 * i])
        return tuple(out)


def constants_of(conds: Iterable[Cond]) -> dict[str, tuple[set[Any], set[str]]]:
    """Per fact key: every constant the conditions compare it with, and the comparisons used."""
    out: dict[str, tuple[set[Any], set[str]]] = {}
    for c in conds:
        atoms: list[Cond] = []
        _atoms(c, atoms)
        for a in atoms:
            if a[0] in ("true", "false") or a[1] == QID:
                continue
            values, ops = out.setdefault(a[1], (set(), set()))
            ops.add(a[0])
            if a[0] in _COMPARE:
                values.add(a[2])
            elif a[0] not in ("ex", "nex"):  # pragma: no cover - the compiler emits nothing else
                raise ValueError(f"fact classes do not know the condition {a[0]!r}")
    return out


def keys_of(c: Cond) -> set[str]:
    """The fact keys a condition tests."""
    atoms: list[Cond] = []
    _atoms(c, atoms)
    return {a[1] for a in atoms if a[0] not in ("true", "false") and a[1] != QID}
