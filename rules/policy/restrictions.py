"""Token restrictions in the policy: which view functions tell whether a token can be delivered.

A restriction kind is ``pause`` (the whole token), ``blacklist`` (a frozen holder) or ``allowlist`` (a
holder the token lets hold it). The asset registry declares them per class (``restrictions_by_class``)
and per token (``restrictions``, which overrides its class kind by kind). Each is either the name of a
view function of the token contract, checked here against the ABI the Ethereum adapter reads
(``rules/schema/restriction_views.abi.json``: a pause view takes nothing, the others one address, all
return bool), or ``{off_chain: <reason>}`` for a restriction kept elsewhere (a transfer agent's
registry): it cannot be read on-chain, so under on-chain verification its fact is unknown and every
check on it fails closed, with that reason.

Every payment stablecoin must declare ``pause`` and ``blacklist``, every fund token ``allowlist``
(``REQUIRED``): a token whose restrictions nobody declared cannot be said to be deliverable.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping

from rules.policy.model import Asset

ABI_PATH = Path(__file__).resolve().parent.parent / "schema" / "restriction_views.abi.json"
KINDS = ("pause", "blacklist", "allowlist")
REQUIRED: dict[str, tuple[str, ...]] = {
    "payment_stablecoin": ("pause", "blacklist"),
    "tokenized_treasury_fund": ("allowlist",),
    "tokenized_money_market_fund": ("allowlist",),
}


def restriction_abi() -> dict[str, tuple[str, ...]]:
    """The view functions the adapter reads: name -> argument types."""
    entries = json.loads(ABI_PATH.read_text(encoding="utf-8"))
    return {e["name"]: tuple(i["type"] for i in e["inputs"]) for e in entries
            if e.get("type") == "function" and [o["type"] for o in e.get("outputs", [])] == ["bool"]}


def _wants(kind: str) -> tuple[str, ...]:
    return () if kind == "pause" else ("address",)


def resolve(checks: Any, doc: Any, assets: Mapping[str, Asset], require: bool = True) -> dict[str, Asset]:
    """The registry's assets with their restrictions resolved (class, then token); problems found are
    added to ``checks`` (a ``CrossChecks``) at the file:line of the declaration. ``require`` False (a
    bundle the decision log stored, valid when approved): the ABI and the required kinds are not checked."""
    data = doc.data
    abi = restriction_abi()
    by_class: dict[str, Mapping[str, Any]] = data.get("restrictions_by_class") or {}

    def known(value: Any, kind: str, path: tuple, rule: str | None) -> bool:
        if isinstance(value, Mapping) or not require:
            return True  # off_chain: the schema has checked its reason
        if value not in abi:
            checks.problem(doc, path, f"{kind}: {value!r} is not a view function the Ethereum adapter reads "
                           f"(rules/schema/restriction_views.abi.json: {', '.join(sorted(abi))})", rule)
            return False
        if abi[value] != _wants(kind):
            args = ", ".join(abi[value]) or "nothing"
            checks.problem(doc, path, f"{kind}: {value}() takes {args}; a {kind} view takes "
                           f"{'nothing' if kind == 'pause' else 'one address'}", rule)
            return False
        return True

    for klass, kinds in by_class.items():
        for kind, value in kinds.items():
            known(value, kind, ("restrictions_by_class", klass, kind), None)
    out: dict[str, Asset] = {}
    first: dict[str, int] = {}
    for i, a in enumerate(data["assets"]):
        first.setdefault(a["symbol"], i)
    for sym, asset in assets.items():
        i = first[sym]
        raw = data["assets"][i]
        own = raw.get("restrictions") or {}
        for kind, value in own.items():
            known(value, kind, ("assets", i, "restrictions", kind), None)
        merged = {**(by_class.get(asset.klass) or {}), **own} if asset.contract else dict(own)
        missing = [k for k in REQUIRED.get(asset.klass, ()) if k not in merged]
        if missing and require:
            checks.problem(doc, ("assets", i), f"{sym} ({asset.klass}) declares no {' or '.join(missing)} restriction; "
                           f"every {asset.klass} token needs {', '.join(REQUIRED[asset.klass])} (under restrictions, "
                           "or restrictions_by_class; {off_chain: <reason>} where it cannot be read on-chain)")
        readable = {k: v for k, v in merged.items() if isinstance(v, str)}
        off_chain = {k: str(v["off_chain"]) for k, v in merged.items() if isinstance(v, Mapping)}
        out[sym] = dataclasses.replace(asset, restrictions=readable, off_chain=off_chain)
    return out
