"""Customer cross-margining eligibility (CME Treasury futures against FICC-cleared cash Treasuries) as rules
of the bundle's margin policy (``cross_margin`` in its ``kind: margin`` file), decided with the same trace as
collateral rules: every rule's id, outcome (``pass`` / ``fail``), observed value, threshold and policy
file:line, and the rationale in the policy.

Facts are read from an account's cross-margin profile (imported with the requirements: ``rules.margin.inputs``)
and type-checked before any rule sees them; a fact that is missing or of the wrong type fails its rule
(fail closed). The facts:

- ``xm.agreement_on_file`` (true/false): the customer's cross-margining agreement is on file;
- ``xm.account_designated`` (true/false): the account is designated a cross-margin account;
- ``xm.eligible_futures`` (count): futures positions in the programme's eligible CME Treasury contracts;
- ``xm.ficc_cash_treasuries`` (count): cash Treasury positions cleared at FICC.

Each position says whether it qualifies, and why not. Here, not in ``rules.margin``, so that ``dacp test``
(``rules.lifecycle.policy_tests``) runs the cross-margin cases against the same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping

from rules.policy.model import Bundle, Src
from rules.policy.yaml_reader import load_yaml_text

FACTS = {"xm.agreement_on_file": bool, "xm.account_designated": bool, "xm.eligible_futures": int,
         "xm.ficc_cash_treasuries": int}


@dataclass(frozen=True)
class CrossRule:
    id: str
    description: str
    rationale: str
    fact: str
    op: str  # equals | at_least
    value: Any
    src: Src


@dataclass(frozen=True)
class CrossMargin:
    """The programme: its id, the DCO whose requirement its reduction lowers, the eligible futures contracts,
    the clearing agency of eligible cash Treasuries, and its rules."""

    programme: str
    description: str
    rationale: str
    dco: str
    contracts: frozenset[str]
    cash_clearing: str
    rules: tuple[CrossRule, ...]
    src: Src


def cross_margin(bundle: Bundle) -> CrossMargin | None:
    """The bundle's cross-margin programme (None: its margin policy has none, or there is no margin policy)."""
    for name in sorted(bundle.sources):
        text = bundle.sources[name]
        if "kind: margin" not in text:
            continue
        doc, _ = load_yaml_text(text, name)
        if doc is None or not isinstance(doc.data, dict) or doc.data.get("kind") != "margin":
            continue
        x = doc.data.get("cross_margin")
        if x is None:
            return None
        rules = []
        for i, r in enumerate(x["rules"]):
            op = "equals" if "equals" in r["check"] else "at_least"
            rules.append(CrossRule(r["id"], r["description"], r["rationale"], r["check"]["fact"], op,
                                   r["check"][op], Src(name, doc.where(("cross_margin", "rules", i))[0])))
        return CrossMargin(x["programme"], x["description"], x["rationale"], x["dco"],
                           frozenset(x["eligible_futures"]), x["cash_clearing"], tuple(rules),
                           Src(name, doc.where(("cross_margin",))[0]))
    return None


def _quantity(v: Any) -> Decimal | None:
    try:
        return Decimal(v) if isinstance(v, str) else None
    except InvalidOperation:
        return None


def positions(xm: CrossMargin, profile: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every position of the profile with whether it qualifies for the programme, and why not."""
    out = []
    for f in profile.get("futures") or []:
        q, why = _quantity(f.get("quantity")), None
        if f.get("contract") not in xm.contracts:
            why = f"{f.get('contract')} is not an eligible Treasury futures contract ({', '.join(sorted(xm.contracts))})"
        elif f.get("dco") != xm.dco:
            why = f"cleared at {f.get('dco')}, not {xm.dco}"
        elif q is None or q == 0:
            why = "no open quantity"
        out.append({"kind": "future", "contract": f.get("contract"), "quantity": f.get("quantity"),
                    "qualifies": why is None, "why_not": why})
    for t in profile.get("cash_treasuries") or []:
        why = None if t.get("cleared_by") == xm.cash_clearing else f"cleared by {t.get('cleared_by')}, not {xm.cash_clearing}"
        out.append({"kind": "cash-treasury", "cusip": t.get("cusip"), "face_value_usd": t.get("face_value_usd"),
                    "qualifies": why is None, "why_not": why})
    return out


def facts(xm: CrossMargin, profile: Mapping[str, Any] | None) -> dict[str, Any]:
    """The facts of a profile, type-checked: a value of the wrong type is left out (its rule fails)."""
    if profile is None:
        return {}
    held = positions(xm, profile)
    raw = {"xm.agreement_on_file": profile.get("agreement_on_file"),
           "xm.account_designated": profile.get("designated"),
           "xm.eligible_futures": sum(1 for p in held if p["kind"] == "future" and p["qualifies"]),
           "xm.ficc_cash_treasuries": sum(1 for p in held if p["kind"] == "cash-treasury" and p["qualifies"])}
    return {k: v for k, v in raw.items() if type(v) is FACTS[k]}  # bool is not int here, nor int bool


def decide(xm: CrossMargin, account: str, profile: Mapping[str, Any] | None) -> dict[str, Any]:
    """Whether ``account`` qualifies: every rule's trace entry, the failed rules, the positions."""
    f = facts(xm, profile)
    reasons, failed = [], []
    for r in xm.rules:
        observed = f.get(r.fact)
        ok = observed is not None and (observed == r.value if r.op == "equals" else observed >= r.value)
        if not ok:
            failed.append(r.id)
        reasons.append({"rule": r.id, "outcome": "pass" if ok else "fail", "description": r.description,
                        "observed": "missing" if observed is None else observed,
                        "threshold": {r.op: r.value}, "policy": r.src.to_json()})
    return {"programme": xm.programme, "account": account, "eligible": not failed, "failed_rules": failed,
            "reasons": reasons, "positions": positions(xm, profile) if profile is not None else [],
            "rationale": xm.rationale, "policy": xm.src.to_json()}
