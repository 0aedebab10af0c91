"""A decision's trace in plain words, for auditors (``dacp explain``)."""

from __future__ import annotations

from typing import Any

_OUTCOME = {"pass": "PASS", "fail": "FAIL", "not_applicable": "n/a ", "applied": "APPL"}


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, dict):
        if set(v) >= {"op", "value"}:
            op = {"equals": "must be", "one_of": "must be one of", "at_least": "must be at least",
                  "at_most": "must be at most", "in_list": "must be on the list of", "share_above": "share above"}
            val = v["value"]
            val = ", ".join(map(str, val)) if isinstance(val, list) else _value(val)
            return f"{op.get(v['op'], v['op'])} {val}"
        return ", ".join(f"{k} {_value(x)}" for k, x in v.items() if x is not None)
    return "-" if v is None else str(v)


def explain_decision(d: dict[str, Any], recorded_at: str | None = None, seq: int | None = None) -> str:
    lines = []
    verdict = "ELIGIBLE" if d["eligible"] else "NOT ELIGIBLE"
    lines.append(f"Decision {d['decision_id']}: {verdict}")
    if recorded_at:
        lines.append(f"  recorded {recorded_at}" + (f" as log entry {seq}" if seq else ""))
    lines.append(f"  {d['participant']} / account {d['account']}: {d['quantity']} {d['asset']} at {d['price_usd']} USD, "
                 f"as of {d['as_of']}")
    lines.append(f"  policy bundle {d['policy']['name']} {d['policy']['version']} ({d['policy']['bundle']}), "
                 f"evaluated by {d.get('engine', '?')}")
    if d.get("haircut"):
        h = d["haircut"]
        lines.append(f"  market value {d['market_value_usd']} USD; haircut {h['total']} "
                     f"(base {h['base']} decided by {h['decided_by']}); after haircut {d['value_after_haircut_usd']} USD")
        if h.get("why"):
            lines.append(f"  haircut decided by: {h['why']}")
        if d.get("excluded_by_limits_usd") not in (None, "0", "0.00"):
            lines.append(f"  concentration limits exclude {d['excluded_by_limits_usd']} USD; counted quantity "
                         f"{d['counted_quantity']}")
    lines.append(f"  collateral value: {d['collateral_value_usd']} USD")
    if d.get("failed_rules"):
        lines.append(f"  refused because: {', '.join(d['failed_rules'])}")
    lines.append("")
    lines.append("Rules evaluated:")
    for r in d["reasons"]:
        where = ""
        if r.get("policy"):
            where = r["policy"]["file"] + (f":{r['policy']['line']}" if r["policy"].get("line") else "")
        lines.append(f"  [{_OUTCOME.get(r['outcome'], r['outcome'])}] {r['rule']} - {r['description']}")
        detail = []
        if r.get("observed") is not None:
            detail.append(f"observed {_value(r['observed'])}")
        if r.get("threshold") is not None:
            detail.append(f"rule: {_value(r['threshold'])}")
        if r.get("counted_usd") is not None:
            detail.append(f"counted up to {r['counted_usd']} USD")
        if where:
            detail.append(f"({where})")
        if detail:
            lines.append("         " + "; ".join(detail))
    for e in d.get("evidence", []):
        if e["kind"] == "custody":
            lines.append(f"  evidence: {e['quantity']} {e['asset']} on {e['chain']} {e['network']} at block "
                         f"{e['block_number']} ({e['block_hash']}), source {e['source']}")
        else:
            lines.append(f"  evidence: price {e['price_usd']} USD for {e['asset']} from {e['source']}, "
                         f"updated {e['updated_at']}")
    return "\n".join(lines)
