"""The decision trace, compact and full.

A decision's trace names every rule of the bundle with its outcome. Most of a trace entry is the
same for every decision - the rule's description and where it is written - so the engine keeps,
and the decision log stores, the *compact* trace: one entry per rule,

    [rule, outcome, observed, threshold]            or
    [rule, outcome, observed, threshold, extra]     (extra: more fields, e.g. ``counted_usd``)

and the static part comes from the bundle the decision names (stored in the log by its hash).
``expand`` turns it into the public form, one dict per rule::

    {"rule", "outcome", "description", "observed", "threshold", "policy", **extra}

Both forms carry the same facts; ``compact`` is the inverse of ``expand`` for a given bundle.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from rules.model import Bundle, Src

# Rules the engine adds to the bundle's own: the bundle in force, the asset registered, a haircut
# schedule found, on-chain custody verified.
IN_FORCE = ("bundle.in-force", "The policy bundle must be in force on the query date.")
REGISTERED = ("registry.asset-registered", "The asset must be in the asset registry.")
SCHEDULE = ("haircut.schedule", "A haircut schedule must apply to the asset on the query date.")
VERIFIED = ("custody.onchain-verification",
            "The custody balance must be verified on-chain when verification is asked for.")

Item = Sequence[Any]  # a compact trace entry


class Statics:
    """Per rule id of one bundle: description and policy location."""

    def __init__(self, bundle: Bundle):
        s: dict[str, tuple[str, dict[str, Any] | None]] = {}

        def put(rule: str, description: str, src: Src | None) -> None:
            s[rule] = (description, src.to_json() if src else None)

        put(IN_FORCE[0], IN_FORCE[1], bundle.programme_src)
        first_asset = next(iter(bundle.assets.values()), None)
        put(REGISTERED[0], REGISTERED[1], Src(first_asset.src.file, None) if first_asset else None)
        put(SCHEDULE[0], SCHEDULE[1], None)  # its location (the asset's entry) travels with the entry
        put(VERIFIED[0], VERIFIED[1], None)
        for p in bundle.phases:
            put(p.id, p.description, p.src)
        for c in bundle.criteria:
            put(c.id, c.description, c.src)
        for h in bundle.haircuts:
            put(h.id, h.description, h.src)
            for a in h.add_ons:
                put(a.id, a.description, a.src)
        for lim in bundle.limits:
            put(lim.id, lim.description, lim.src)
        self.by_rule = s
        self.bundle_hash = bundle.hash

    def registered_src(self) -> dict[str, Any] | None:
        return self.by_rule[REGISTERED[0]][1]


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
    """A fresh copy of plain JSON data (static thresholds are shared between decisions)."""
    if isinstance(v, dict):
        return {k: copy_json(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [copy_json(x) for x in v]
    return v


def expand(items: Iterable[Item], statics: Statics) -> list[dict[str, Any]]:
    """Compact trace -> the public list of reasons."""
    out = []
    by_rule = statics.by_rule
    for item in items:
        rule = item[0]
        known = by_rule.get(rule)
        if known is None:
            raise ValueError(f"trace names rule {rule!r}, which bundle {statics.bundle_hash[:12]} does not have")
        description, policy = known
        r = {"rule": rule, "outcome": item[1], "description": description, "observed": copy_json(item[2]),
             "threshold": copy_json(item[3]), "policy": dict(policy) if policy else None}
        if len(item) > 4:
            r.update(copy_json(item[4]))
        out.append(r)
    return out


def compact(reasons: Iterable[dict[str, Any]], statics: Statics) -> list[list[Any]]:
    """The public list of reasons -> compact trace (the inverse of ``expand``)."""
    out: list[list[Any]] = []
    for r in reasons:
        description, policy = statics.by_rule[r["rule"]]
        extra = {k: v for k, v in r.items() if k not in ("rule", "outcome", "description", "observed", "threshold",
                                                         "policy")}
        if r.get("description") != description:
            extra["description"] = r.get("description")
        if r.get("policy") != policy:
            extra["policy"] = r.get("policy")
        item = [r["rule"], r["outcome"], r.get("observed"), r.get("threshold")]
        if extra:
            item.append(extra)
        out.append(item)
    return out


def full_decision(logged: dict[str, Any], statics: Statics) -> dict[str, Any]:
    """A decision as logged (compact ``trace``, or an older full ``reasons``) -> the public form."""
    if "trace" not in logged:
        return logged
    out: dict[str, Any] = {}
    reasons = expand(logged["trace"], statics)
    for k, v in logged.items():
        if k == "trace":
            continue
        if k == "failed_rules":
            out["reasons"] = reasons
        out[k] = v
    if "reasons" not in out:
        out["reasons"] = reasons
    return out
