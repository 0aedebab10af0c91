"""The decision trace, compact and full.

A decision's trace names every rule of the bundle with its outcome. Most of a trace entry is the
same for every decision - the rule's description, where it is written, its threshold - so the
engine keeps, and the decision log stores, the *compact* trace: one short list per rule,

    [ref, code]                                   observed "missing", the rule's own threshold
    [ref, code, observed]                         the rule's own threshold
    [ref, code, observed, threshold]              a threshold of this decision's (or none: null)
    [ref, code, observed, threshold, extra]       extra: more fields of the entry, e.g. counted_usd

A limit in force has a layout of its own (its threshold is always the rule's own, and a book has
several a decision, so the keys are left out):

    [ref, code, [group_value_usd, share_after, requested_usd]]              the limit does not bind
    [ref, code, [group_value_usd, share_after, requested_usd], counted_usd] it binds: the value it allows

(decision-log format 2 wrote it in the general layout, observed as a dict; both decode the same.)
``ref`` is the rule's position in the bundle's rule ids *sorted* (``Statics.rules``; a function of
the bundle's content alone, so of its hash), or the id itself for the engine's own rules (bundle in
force, asset registered, haircut schedule found, custody verified on-chain). ``code`` is ``p`` pass,
``f`` fail, ``n`` not applicable, ``a`` applied. The static parts come from the bundle the decision
names, stored in the decision log by its hash; ``expand`` turns the compact trace into the public
form, one dict per rule::

    {"rule", "outcome", "description", "observed", "threshold", "policy", **extra}
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Iterable, NamedTuple, Sequence

import orjson

from rules.policy.model import Bundle, Check, Limit, Src
from rules.policy.reserved import ENGINE_RULES, IN_FORCE, REGISTERED, SCHEDULE, VERIFIED
from rules.values import decimal_text

CODE = {"pass": "p", "fail": "f", "not_applicable": "n", "applied": "a"}
OUTCOME = {v: k for k, v in CODE.items()}
MISSING = "missing"  # the observed value of a fact the query and evidence did not give
STATIC = object()  # "the rule's own threshold"
# A limit's observed values, in order: the group's value before the deposit (used before), its share of
# the reach after it, the deposit's value after haircut (this deposit), the room left after it (USD; null:
# no cap in USD). Entries logged before the room was traced have the first three.
LIMIT_OBSERVED = ("group_value_usd", "share_after", "requested_usd", "room_left_usd")

Item = Sequence[Any]  # a compact trace entry
_CONTAINERS = (dict, list)


def _as_is(v: Any) -> Any:
    return v


def plain(d: Decimal | int) -> str:
    """A Decimal (or a policy's int) as plain text without exponent: ``rules.values.decimal_text``, the
    same text, in the form the hot path can afford (a decision prints a dozen of them)."""
    if type(d) is not Decimal:  # format(1000000, "f") would be '1000000.000000'
        d = Decimal(d)
    t = str(d)  # the same digits as format(d, "f") unless it chose an exponent; 3x cheaper
    return decimal_text(d) if "E" in t else t


def iso(d: Any) -> str | None:
    return None if d is None else d.isoformat()


def check_threshold(check: Check) -> dict[str, Any]:
    v = check.value
    return {"op": check.op, "value": list(v) if isinstance(v, tuple) else v}


def limit_threshold(lim: Limit) -> dict[str, str]:
    out = {k: plain(v) for k, v in (("max_share", lim.max_share), ("max_value_usd", lim.max_value_usd),
                                    ("min_total_usd", lim.min_total_usd), ("max_quantity", lim.max_quantity))
           if v is not None}
    if lim.across != "account":
        out["across"] = lim.across
    if lim.per is not None:
        out["per"] = lim.per
    return out


class RuleStatics(NamedTuple):
    """What every trace entry of one rule shares."""

    description: str
    policy: dict[str, Any] | None  # where the rule is written: {"file", "line"}
    threshold: Any  # the rule's own threshold (public form)


class _Decoding(NamedTuple):
    rule: str
    description: str
    policy: dict[str, Any] | None
    threshold: Any


class Statics:
    """What every decision under one bundle shares, per rule: id, description, policy location and
    the rule's own threshold; and the compact reference of each rule."""

    def __init__(self, bundle: Bundle):
        self.bundle_hash = bundle.hash
        self.rules: tuple[str, ...] = tuple(sorted(bundle.rule_ids()))
        self.ref: dict[str, int | str] = {r: i for i, r in enumerate(self.rules)}
        by: dict[str, RuleStatics] = {}

        def put(rule: str, description: str, src: Src | None, threshold: Any = None) -> None:
            by[rule] = RuleStatics(description, src.to_json() if src else None, threshold)

        put(IN_FORCE[0], IN_FORCE[1], bundle.programme_src,
            {"from": iso(bundle.dated.effective_from), "to": iso(bundle.dated.effective_to)})
        first_asset = next(iter(bundle.assets.values()), None)
        put(REGISTERED[0], REGISTERED[1], Src(first_asset.src.file, None) if first_asset else None,
            {"op": "one_of", "value": sorted(bundle.assets)})
        put(SCHEDULE[0], SCHEDULE[1], None)  # its location (the asset's entry) travels with the entry
        put(VERIFIED[0], VERIFIED[1], None)
        for p in bundle.phases:
            put(p.id, p.description, p.src, {"from": iso(p.starts), "to": iso(p.ends)})
        for c in bundle.criteria:
            put(c.id, c.description, c.src, check_threshold(c.check))
        for h in bundle.haircuts:
            put(h.id, h.description, h.src)  # the applied schedule's threshold is the decision's
            for a in h.add_ons:
                put(a.id, a.description, a.src, check_threshold(a.when) if a.when is not None
                    else {"op": "share_above", "value": plain(a.when_share_above)})
        for lim in bundle.limits:
            put(lim.id, lim.description, lim.src, limit_threshold(lim))
        self.limits = frozenset(lim.id for lim in bundle.limits)
        self.by_rule = by
        # Decoding: a bundle rule by its position or by its id (either form reads back).
        self._decode: dict[int | str, tuple] = {}  # _Decodings
        for rule, statics in by.items():
            entry = tuple(_Decoding(rule, *statics))  # an exact tuple: unpacked per entry (rules.engine.fast.plans)
            self._decode[rule] = entry
            if rule in self.ref:
                self._decode[self.ref[rule]] = entry
        for rule in ENGINE_RULES:
            self.ref[rule] = rule
        self._json: dict[Any, bytes] = {}

    def threshold(self, rule: str) -> Any:
        return self.by_rule[rule].threshold

    def item(self, rule: str, outcome: str, observed: Any = MISSING, threshold: Any = STATIC,
             extra: dict[str, Any] | None = None) -> tuple:
        """The compact entry for one rule (the shortest form that expands back to the same entry)."""
        ref = self.ref[rule]
        if extra:
            return (ref, CODE[outcome], observed, self.threshold(rule) if threshold is STATIC else threshold, extra)
        if threshold is not STATIC and threshold != self.threshold(rule):
            return (ref, CODE[outcome], observed, threshold)
        if observed == MISSING and type(observed) is str:
            return (ref, CODE[outcome])
        return (ref, CODE[outcome], observed)

    def entry_json(self, item: Item) -> bytes:
        """The JSON of one entry's public form, remembered for entries that recur (bounded)."""
        n = len(item)
        if n > 2 and (n > 4 or type(item[2]) in _CONTAINERS or (n > 3 and type(item[3]) in _CONTAINERS)):
            return orjson.dumps(self.decode(item, fresh=False))  # a limit's or a schedule's: made each time
        key = (item, type(item[2])) if n > 2 else item  # True == 1 in Python, not in JSON
        found = self._json.get(key)
        if found is None:
            if len(self._json) >= 65536:
                self._json.clear()
            found = self._json[key] = orjson.dumps(self.decode(item, fresh=False))
        return found

    def decode(self, item: Item, fresh: bool = True) -> dict[str, Any]:
        """One compact entry -> its public form (with ``fresh``, new objects the caller may change;
        without, parts shared with the bundle's statics: only to serialise at once)."""
        known = self._decode.get(item[0])
        if known is None:
            raise ValueError(f"trace names rule {item[0]!r}, which bundle {self.bundle_hash[:12]} does not have")
        rule, description, policy, threshold = known
        n = len(item)
        outcome = OUTCOME.get(item[1], item[1])
        copy = copy_json if fresh else _as_is
        if n > 2 and type(item[2]) is list and rule in self.limits:  # a limit in force: its own layout
            observed: Any = dict(zip(LIMIT_OBSERVED, item[2]))  # 3 or 4 values
            extra: Any = {"counted_usd": item[3] if n > 3 else None}
        else:
            observed = copy(item[2]) if n > 2 else MISSING
            threshold = item[3] if n > 3 else threshold
            extra = item[4] if n > 4 else None
        r = {"rule": rule, "outcome": outcome, "description": description, "observed": observed,
             "threshold": copy(threshold), "policy": dict(policy) if fresh and policy else policy}
        if extra:
            r.update(copy(extra))
        return r


_STATICS: dict[str, Statics] = {}


def statics_for(bundle: Bundle) -> Statics:
    """The statics of ``bundle`` (kept per bundle hash; a bundle is immutable)."""
    s = _STATICS.get(bundle.hash)
    if s is None:
        if len(_STATICS) >= 64:
            _STATICS.clear()
        s = _STATICS[bundle.hash] = Statics(bundle)
    return s


def copy_json(v: Any) -> Any:
    """A fresh copy of plain JSON data (static parts are shared between decisions)."""
    if isinstance(v, dict):
        return {k: copy_json(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [copy_json(x) for x in v]
    return v


def expand(items: Iterable[Item], statics: Statics) -> list[dict[str, Any]]:
    """Compact trace -> the public list of reasons."""
    decode = statics.decode
    return [decode(item) for item in items]


def compact(reasons: Iterable[dict[str, Any]], statics: Statics) -> list[tuple]:
    """The public list of reasons -> compact trace (the inverse of ``expand`` for one bundle)."""
    out: list[tuple] = []
    for r in reasons:
        rule = r["rule"]
        description, policy, _ = statics.by_rule[rule]
        extra = {k: v for k, v in r.items() if k not in ("rule", "outcome", "description", "observed", "threshold",
                                                         "policy")}
        if r.get("description") != description:
            extra["description"] = r.get("description")
        if r.get("policy") != policy:
            extra["policy"] = r.get("policy")
        observed = r.get("observed")
        if (rule in statics.limits and type(observed) is dict and tuple(observed) in (LIMIT_OBSERVED, LIMIT_OBSERVED[:3])
                and r.get("threshold") == statics.threshold(rule) and set(extra) == {"counted_usd"}):
            code, values, counted = CODE[r["outcome"]], list(observed.values()), extra["counted_usd"]
            out.append((statics.ref[rule], code, values) if counted is None else (statics.ref[rule], code, values, counted))
            continue
        out.append(statics.item(rule, r["outcome"], observed, r.get("threshold"), extra or None))
    return out
