"""What a policy change does: rule-level differences between two bundles, and their effect on a portfolio.

``diff_bundles(old, new)`` lists every rule (and registry, programme and bundle entry) added, removed or
changed, field by field (old -> new threshold, haircut, limit, dates), with the policy file and line.
``portfolio_impact(old, new, holdings)`` (``rules.lifecycle.portfolio_impact``, whose names are exported
here too) decides every holding under both bundles and reports each holding whose eligibility, haircut or
collateral value changes, with totals per asset and per account. ``render`` puts both in plain words.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Iterable, Sequence

from rules.lifecycle.portfolio_impact import Holding, Impact, portfolio_impact, read_portfolio
from rules.policy.model import Bundle, Dated, HaircutSchedule, Src
from rules.values import decimal_text

__all__ = ["Change", "Holding", "Impact", "Item", "bundle_items", "diff_bundles", "portfolio_impact",
           "read_portfolio", "render"]


def _pct(d: Decimal | None) -> str | None:
    if d is None:
        return None
    s = decimal_text((d * 100).normalize())
    return f"{s}%"


def _usd(d: Decimal | None) -> str | None:
    return None if d is None else f"{d:,.2f} USD"


def _dated(d: Dated) -> str:
    if d.effective_from is None and d.effective_to is None:
        return "always"
    return f"{d.effective_from or 'start'} .. {d.effective_to or 'open'}"


def _words(v: Any) -> str:
    if v is None:
        return "none"
    return str(v)


@dataclass(frozen=True)
class Item:
    """One comparable entry of a bundle: a rule, a registry entry or a bundle property."""

    key: str  # rule id, or "asset BTC", "participant FCM-ALPHA", ...
    what: str  # criterion, haircut schedule, haircut add-on, limit, phase, asset, participant, custodian, bundle
    src: Src | None
    fields: tuple[tuple[str, str], ...]  # (field label, value in plain words), in display order


@dataclass
class Change:
    kind: str  # added | removed | changed
    item: Item
    old: Item | None = None
    fields: list[tuple[str, str, str]] = field(default_factory=list)  # (label, old, new)

    @property
    def where(self) -> str:
        return str(self.item.src) if self.item.src else "-"

    def describe(self) -> str:
        if self.kind == "added":
            return "added: " + "; ".join(f"{k} {v}" for k, v in self.item.fields)
        if self.kind == "removed":
            return "removed (was: " + "; ".join(f"{k} {v}" for k, v in self.item.fields) + ")"
        return "; ".join(f"{k} {o} -> {n}" for k, o, n in self.fields)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"change": self.kind, "id": self.item.key, "what": self.item.what,
                               "policy": self.item.src.to_json() if self.item.src else None}
        if self.kind == "changed":
            out["old_policy"] = self.old.src.to_json() if self.old and self.old.src else None
            out["fields"] = [{"field": k, "old": o, "new": n} for k, o, n in self.fields]
        else:
            out["fields"] = {k: v for k, v in self.item.fields}
        out["description"] = self.describe()
        return out


def _schedule_fields(h: HaircutSchedule) -> list[tuple[str, str]]:
    f = [("applies to", h.applies.describe()), ("in force", _dated(h.dated))]
    for s in h.sources:
        what = f"dco {s.dco}: {s.schedule} of {s.as_of}" if s.kind == "dco" else f"{s.kind}: {s.source}"
        f.append((f"source {s.id}", f"{_pct(s.haircut)} ({what})"))
    if h.bucket_fact:
        f.append(("buckets by", h.bucket_fact))
        for b in h.buckets:
            f.append((f"bucket {'<= ' + str(b.up_to) if b.up_to is not None else 'above'}", _pct(b.haircut) or ""))
    f.append(("stricter_own", _pct(h.floor) or "none"))
    f.append(("add-ons", ", ".join(a.id for a in h.add_ons) or "none"))
    return f


def bundle_items(b: Bundle) -> dict[str, Item]:
    items: list[Item] = []
    items.append(Item("bundle", "bundle", b.programme_src, (
        ("name", b.name), ("version", b.version), ("in force", _dated(b.dated)), ("owner", _words(b.owner)))))
    items.append(Item(b.programme_id, "programme", b.programme_src, (
        ("start date", b.start_date.isoformat()), ("business days", b.calendar),
        ("description", b.programme_description))))
    for p in b.phases:
        items.append(Item(p.id, "phase", p.src, (("starts", p.starts.isoformat()),
                                                  ("ends", p.ends.isoformat() if p.ends else "open"),
                                                  ("eligible", p.eligible.describe()))))
    for c in b.criteria:
        items.append(Item(c.id, "criterion", c.src, (("check", c.check.describe()), ("applies to", c.applies.describe()),
                                                     ("in force", _dated(c.dated)), ("description", c.description))))
    for h in b.haircuts:
        items.append(Item(h.id, "haircut schedule", h.src, tuple(_schedule_fields(h))))
        for a in h.add_ons:
            when = a.when.describe() if a.when else f"share of the account above {_pct(a.when_share_above)}"
            items.append(Item(a.id, "haircut add-on", a.src, (("add-on", _pct(a.haircut) or ""), ("when", when))))
    for lim in b.limits:
        items.append(Item(lim.id, "limit", lim.src, (
            ("scope", lim.scope), ("applies to", lim.applies.describe()), ("in force", _dated(lim.dated)),
            ("max share", _pct(lim.max_share) or "none"), ("max value", _usd(lim.max_value_usd) or "none"),
            ("from account total", _usd(lim.min_total_usd) or "none"))))
    for a in b.assets.values():
        items.append(Item(f"asset {a.symbol}", "asset", a.src, (
            ("class", a.klass), ("chain", f"{a.chain} {a.network}"), ("contract", _words(a.contract)),
            ("decimals", str(a.decimals)), ("issuer", _words(a.issuer)),
            ("restrictions", ", ".join(f"{k}={v}" for k, v in sorted(a.restrictions.items())) or "none"),
            ("off-chain restrictions", ", ".join(f"{k} ({v})" for k, v in sorted(a.off_chain.items())) or "none"))))
    for pt in b.participants:
        items.append(Item(f"participant {pt.id}", "participant", b.participants_src, (
            ("name", pt.name), ("admitted", _dated(pt.admitted)),
            ("phases from", pt.accepting_from.isoformat() if pt.accepting_from else "the programme's start"))))
    for cu in b.custodians:
        items.append(Item(f"custodian {cu.id}", "custodian", b.custodians_src, (
            ("name", cu.name), ("chains", ", ".join(sorted(cu.chains))))))
    return {i.key: i for i in items}


def diff_bundles(old: Bundle, new: Bundle) -> list[Change]:
    """Every entry added, removed or changed from ``old`` to ``new``: new file order, then the removed ones."""
    a, b = bundle_items(old), bundle_items(new)
    out: list[Change] = []
    for key, item in b.items():
        prev = a.get(key)
        if prev is None:
            out.append(Change("added", item))
            continue
        fo, fn = dict(prev.fields), dict(item.fields)
        labels = list(dict.fromkeys([k for k, _ in prev.fields] + [k for k, _ in item.fields]))
        fields = [(k, fo.get(k, "none"), fn.get(k, "none")) for k in labels if fo.get(k) != fn.get(k)]
        if fields:
            out.append(Change("changed", item, prev, fields))
    for key, item in a.items():
        if key not in b:
            out.append(Change("removed", item))
    return out



# -- rendering -------------------------------------------------------------------------------------
def _table(rows: Iterable[Sequence[Any]]) -> list[str]:
    rows = [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]


def _money(s: str | Decimal) -> str:
    return f"{Decimal(s):,.2f}"


def render(old: Bundle, new: Bundle, old_label: str, new_label: str, changes: list[Change],
           impact: Impact | None) -> str:
    lines = [f"old  {old_label}: {old.name} {old.version}, sha256 {old.hash}",
             f"new  {new_label}: {new.name} {new.version}, sha256 {new.hash}"]
    if old.hash == new.hash:
        lines.append("the two bundles are the same (same content hash): no rule differs")
    elif not changes:
        lines.append("no rule differs (the bundles differ only in wording or order that the hash covers)")
    else:
        counts = {k: sum(c.kind == k for c in changes) for k in ("added", "removed", "changed")}
        lines.append(f"{len(changes)} difference(s): {counts['changed']} changed, {counts['added']} added, "
                     f"{counts['removed']} removed")
        for c in changes:
            lines.append(f"  {c.kind.upper():8} {c.item.key}  [{c.item.what}, {c.where}]")
            if c.kind == "changed":
                for k, o, n in c.fields:
                    lines.append(f"           {k}: {o} -> {n}")
            else:
                lines.append(f"           {c.describe()}")
    if impact is not None:
        lines.append("")
        lines.append(f"portfolio: {len(impact.holdings)} holding(s), {len(impact.changed)} affected by the change")
        if impact.changed:
            rows = [("line", "account", "asset", "quantity", "eligible", "haircut", "collateral USD", "newly failing")]
            for h in impact.changed:
                b, a = h.before, h.after
                elig = "yes" if a["eligible"] else "NO"
                if b["eligible"] != a["eligible"]:
                    elig = f"{'yes' if b['eligible'] else 'no'} -> {elig}"
                hc = a["haircut"] or "-" if b["haircut"] == a["haircut"] else f"{b['haircut'] or '-'} -> {a['haircut'] or '-'}"
                cv = f"{_money(b['collateral_value_usd'])} -> {_money(a['collateral_value_usd'])}"
                newly = sorted(set(a["failed_rules"]) - set(b["failed_rules"]))
                rows.append((h.line, h.account, h.asset, h.quantity, elig, hc, cv, ", ".join(newly) or "-"))
            lines += ["  " + r for r in _table(rows)]
        lines.append("per asset (collateral value, USD):")
        rows = [("asset", "holdings", "changed", "before", "after", "change")]
        for k, t in sorted(impact.per_asset.items()):
            rows.append((k, t.holdings, t.changed, _money(t.before), _money(t.after), _money(t.after - t.before)))
        lines += ["  " + r for r in _table(rows)]
        lines.append("per account (collateral value, USD; deficit against the margin requirement where given, "
                     "else against the value before):")
        rows = [("account", "before", "after", "requirement", "deficit before", "deficit after", "")]
        for k, t in sorted(impact.per_account.items()):
            rows.append((k, _money(t.before), _money(t.after),
                         _money(t.requirement) if t.requirement is not None else "-",
                         _money(t.deficit_before), _money(t.deficit_after),
                         "FALLS INTO DEFICIT" if t.falls_into_deficit else ""))
        lines += ["  " + r for r in _table(rows)]
        n = len(impact.into_deficit)
        lines.append(f"{n} account(s) would fall into deficit" + (f": {', '.join(impact.into_deficit)}" if n else ""))
    return "\n".join(lines)
