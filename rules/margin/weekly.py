"""The margin section of the weekly pilot report (``dacp report weekly``; the ledger's report is
``rules.ledger.weekly_report``, which knows nothing of margin - the report's door adds this section).

Per FCM (the ledger account's participant; an account with requirements but no ledger account is
``unknown``), at the week's end (or as far as a partial week has gone): the accounts with a requirement,
their total requirement, counted collateral (ledger and off-ledger, as ``rules.margin.coverage`` counts it),
the sum of the accounts' excesses and of their deficits, the accounts in deficit, and the margin calls open
at that time and issued and met within the week (``margin_calls``). The same figures at the end of every
week of the report's ``series`` make the coverage-over-time panel of its chart. A week with no requirement
on file is ``no requirements``, with no figures: nothing was there to cover, which is not a coverage of 0.

Off-ledger collateral is read as last imported (its ``as_of`` keeps a holding out of the weeks before it was
struck); requirements are the latest business day's on or before the week's last day.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Callable, Mapping, Sequence

from rules.ledger.weekly_report import parse_week
from rules.margin.book import MarginBook
from rules.margin.coverage import Coverage
from rules.margin.records import Call
from rules.margin.valuation import usd
from rules.values import parse_utc_text, utc_text

ZERO = Decimal(0)
NO_REQUIREMENTS = "no requirements"
_TICK = timedelta(microseconds=1)  # the week's last instant: its last day's requirements, not the next Monday's


def _fcm_rows(covs: Sequence[Coverage], calls: Sequence[Call], owners: Mapping[str, str], start: str,
              until: str) -> list[dict[str, Any]]:
    by: dict[str, dict[str, Any]] = {}
    for c in covs:
        if not c.has_requirement:
            continue
        g = by.setdefault(owners.get(c.account, "unknown"), {"accounts": 0, "requirement": ZERO, "collateral": ZERO,
                                                            "excess": ZERO, "deficit": ZERO, "in_deficit": 0,
                                                            "open": 0, "issued": 0, "met": 0})
        g["accounts"] += 1
        g["requirement"] += c.requirement_usd
        g["collateral"] += c.collateral_usd
        g["excess"] += c.excess_usd
        g["deficit"] += c.deficit_usd
        g["in_deficit"] += c.deficit_usd > 0
    for call in calls:
        g = by.get(owners.get(call.account, "unknown"))
        if g is None:
            continue
        g["open"] += call.issued_at < until and (call.closed_at is None or call.closed_at >= until)
        g["issued"] += start <= call.issued_at < until
        g["met"] += call.status == "met" and call.closed_at is not None and start <= call.closed_at < until
    return [{"participant": p, "status": "deficit" if g["in_deficit"] else "covered", "accounts": g["accounts"],
             "requirement_usd": usd(g["requirement"]), "collateral_usd": usd(g["collateral"]),
             "excess_usd": usd(g["excess"]), "deficit_usd": usd(g["deficit"]), "accounts_in_deficit": g["in_deficit"],
             "calls_open": g["open"], "calls_issued": g["issued"], "calls_met": g["met"]}
            for p, g in sorted(by.items())]


def _total(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"participant": "ALL"}
    for k in ("requirement_usd", "collateral_usd", "excess_usd", "deficit_usd"):
        out[k] = usd(sum((Decimal(r[k]) for r in rows), ZERO))
    for k in ("accounts", "accounts_in_deficit", "calls_open", "calls_issued", "calls_met"):
        out[k] = sum(r[k] for r in rows)
    out["status"] = "deficit" if out["accounts_in_deficit"] else "covered"
    return out


def at_week_end(book: MarginBook, owners: Mapping[str, str], calls: Sequence[Call], start: datetime,
                until: datetime) -> dict[str, Any]:
    """Coverage per FCM at ``until`` and the calls of [``start``, ``until``)."""
    covs = book.coverage(as_of=until - _TICK)
    rows = _fcm_rows(covs, calls, owners, utc_text(start, "microseconds"), utc_text(until, "microseconds"))
    if not rows:
        return {"status": NO_REQUIREMENTS, "as_of": utc_text(until, "microseconds"), "by_participant": []}
    return {"status": "reported", "as_of": utc_text(until, "microseconds"), "by_participant": rows,
            "totals": _total(rows)}


def section(book: MarginBook, report: Mapping[str, Any]) -> dict[str, Any]:
    """The margin section of ``report`` (``rules.ledger.weekly_report.weekly``): its week, and each week of
    its ``series`` (at that week's end; the reported week as far as it has gone)."""
    owners = {a.account: a.participant for a in book.ledger.accounts()}
    calls = book.calls()
    start, until = parse_utc_text(report["from"]), parse_utc_text(report["as_of"])
    week = {"week": report["week"], **at_week_end(book, owners, calls, start, until)}
    series = []
    for s in report["series"]:
        wk_start, wk_end = parse_week(s["week"])
        wk_end = min(wk_end, until)
        series.append({"week": s["week"], **at_week_end(book, owners, calls, wk_start, wk_end)})
    return {**week, "policy": book.policy.id, "series": series}


COLUMNS = ("week", "partial", "participant", "status", "accounts", "requirement_usd", "collateral_usd", "excess_usd",
           "deficit_usd", "accounts_in_deficit", "calls_open", "calls_issued", "calls_met")


def margin_csv(report: Mapping[str, Any]) -> str:
    """One row per FCM, then ``ALL``; a week with no requirement on file: one row saying so, no figures."""
    m = report["margin"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    head = {"week": report["week"], "partial": "yes" if report.get("partial") else "no"}
    if m["status"] == NO_REQUIREMENTS:
        w.writerow({**head, "participant": "ALL", "status": NO_REQUIREMENTS})
        return buf.getvalue()
    for r in [*m["by_participant"], m["totals"]]:
        w.writerow({**head, **{k: r[k] for k in COLUMNS if k not in head}})
    return buf.getvalue()


def panel(report: Mapping[str, Any]) -> Callable[[Any], None]:
    """The chart's coverage-over-time panel (``rules.ledger.weekly_chart.chart(panels=...)``): per week, the
    total requirement and the counted collateral against it (lines), the deficit (bars); a week with no
    requirement on file is left blank and labelled."""
    series = report["margin"]["series"]

    def draw(ax: Any) -> None:
        from matplotlib.ticker import FuncFormatter

        from rules.ledger.weekly_chart import _usd

        x = list(range(len(series)))
        # float only for drawing: every figure in the report is an exact decimal string
        def fig(s: dict[str, Any], k: str) -> float | None:
            return float(Decimal(s["totals"][k])) if s["status"] != NO_REQUIREMENTS else None
        req = [fig(s, "requirement_usd") for s in series]
        col = [fig(s, "collateral_usd") for s in series]
        deficit = [fig(s, "deficit_usd") or 0.0 for s in series]
        ax.bar(x, deficit, color="#D55E00", width=0.6, label="Deficit (sum over accounts)")
        ax.plot(x, [float("nan") if v is None else v for v in req], color="#000000", marker="s", markersize=4,
                linewidth=1.5, label="Requirement")
        ax.plot(x, [float("nan") if v is None else v for v in col], color="#009E73", marker="o", markersize=4,
                linewidth=1.5, label="Counted collateral (ledger and off-ledger)")
        for i, s in enumerate(series):
            if s["status"] == NO_REQUIREMENTS:
                ax.text(i, 0, "no requirements", rotation=90, ha="center", va="bottom", fontsize=7, color="#777777")
            elif s["totals"]["calls_issued"]:
                ax.annotate(f"{s['totals']['calls_issued']} call(s)", (i, deficit[i]), xytext=(0, 3),
                            textcoords="offset points", ha="center", fontsize=7, color="#D55E00")
        step = max(1, len(series) // 14)
        ax.set_xticks(x[::step])
        ax.set_xticklabels([s["week"] for s in series][::step], rotation=45, ha="right", fontsize=9)
        ax.yaxis.set_major_formatter(FuncFormatter(_usd))
        ax.set_ylabel("Margin (USD)")
        ax.set_title("Margin coverage at each week's end, all FCMs", fontsize=11)
        ax.grid(axis="y", color="#DDDDDD", linewidth=0.8)
        ax.set_axisbelow(True)
        ax.legend(loc="upper left", fontsize=8, frameon=False)
    return draw


def add_to(report: dict[str, Any], load_bundle: Callable[[], Any], store: Any) -> list[Callable[[Any], None]]:
    """Add the margin section to ``report`` when the ledger's database has margin records (an import, at
    least: the tables alone, made by a withdrawal's margin check, are not) and the bundle
    (``load_bundle()``, loaded only then) a margin policy - else the report stays the ledger's alone; the
    chart panels to draw with it."""
    from rules.margin.policy import margin_doc
    from rules.margin.verify import has_margin_records

    if not has_margin_records(store):
        return []
    bundle = load_bundle()
    if margin_doc(bundle) is None:
        return []
    report["margin"] = section(MarginBook(bundle, store), report)
    return [panel(report)]
