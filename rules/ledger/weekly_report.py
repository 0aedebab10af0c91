"""The weekly pilot report an FCM sends the regulator: customer digital-asset collateral held at the
end of an ISO week, by asset, participant and account type (quantities; values before and after
haircut; value counted as collateral after concentration limits), the week's ledger activity and
its operational incidents (verification failures, node outages, shortfalls, deficits...).

Holdings are rebuilt from the ledger journal (every credit, withdrawal, shortfall reduction and
revaluation is a signed delta), so any past week can be reported again and gives the same figures.
Output: JSON (``weekly``), CSV (``holdings_csv``, ``incidents_csv``) and a PNG chart of holdings by
asset over the pilot's weeks (``chart``, matplotlib).
"""

from __future__ import annotations

import csv
import io
import re
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from rules.errors import InputError
from rules.ledger.store import LedgerStore
from rules.values import decimal_text, now_utc, parse_utc_text, units_text, utc_text

WEEK = re.compile(r"^(\d{4})-W(\d{2})$")


def parse_week(text: str) -> tuple[datetime, datetime]:
    """``2026-W47`` -> (Monday 00:00 UTC, the next Monday 00:00 UTC)."""
    m = WEEK.match(text or "")
    if not m:
        raise InputError("write the week as YYYY-Www, e.g. 2026-W47 (ISO 8601 week)", "week")
    try:
        monday = date.fromisocalendar(int(m.group(1)), int(m.group(2)), 1)
    except ValueError:
        raise InputError(f"{text} is not a week of that year", "week") from None
    start = datetime.combine(monday, time(0), tzinfo=timezone.utc)
    return start, start + timedelta(days=7)


def week_of(ts: datetime) -> str:
    y, w, _ = ts.isocalendar()
    return f"{y}-W{w:02d}"


def holdings_at(store: LedgerStore, until: datetime) -> list[dict[str, Any]]:
    """Per (account, asset): quantity and values held just before ``until``, from the journal."""
    accounts = {a.account: a for a in store.accounts()}
    acc: dict[tuple[str, str], dict[str, Any]] = {}
    for e in store.entries(until=utc_text(until, "microseconds")):
        h = acc.setdefault((e.account, e.asset), {"account": e.account, "participant": e.participant, "asset": e.asset,
                                                  "decimals": e.decimals, "quantity_raw": 0, "market": Decimal(0),
                                                  "after": Decimal(0), "counted": Decimal(0)})
        h["quantity_raw"] += e.quantity_raw
        h["market"] += e.market_value_usd
        h["after"] += e.after_haircut_usd
        h["counted"] += e.collateral_value_usd
    out = []
    for (account, _), h in sorted(acc.items()):
        if h["quantity_raw"] == 0 and h["counted"] == 0:
            continue
        a = accounts.get(account)
        h["account_type"] = a.account_type if a else "unknown"
        out.append(h)
    return out


def _group(holdings: list[dict[str, Any]], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    groups: dict[tuple, dict[str, Any]] = {}
    for h in holdings:
        k = tuple(h[x] for x in keys)
        g = groups.setdefault(k, {**{x: h[x] for x in keys}, "decimals": h["decimals"], "quantity_raw": 0,
                                  "market": Decimal(0), "after": Decimal(0), "counted": Decimal(0), "accounts": 0})
        g["quantity_raw"] += h["quantity_raw"]
        g["accounts"] += 1
        for f in ("market", "after", "counted"):
            g[f] += h[f]
    rows = []
    for k in sorted(groups):
        g = groups[k]
        row = {x: g[x] for x in keys}
        if "asset" in keys:
            row["quantity"] = units_text(g["quantity_raw"], g["decimals"])
        row.update({"accounts": g["accounts"], "market_value_usd": decimal_text(g["market"]),
                    "haircut_usd": decimal_text(g["market"] - g["after"]),
                    "value_after_haircut_usd": decimal_text(g["after"]),
                    "excluded_by_limits_usd": decimal_text(g["after"] - g["counted"]),
                    "collateral_value_usd": decimal_text(g["counted"])})
        rows.append(row)
    return rows


def weekly(store: LedgerStore, week: str, *, first_week: str | None = None) -> dict[str, Any]:
    start, end = parse_week(week)
    holdings = holdings_at(store, end)
    activity: dict[str, dict[str, Any]] = {}
    for e in store.entries(until=utc_text(end, "microseconds")):
        if e.at < utc_text(start, "microseconds"):
            continue
        a = activity.setdefault(e.kind, {"entries": 0, "collateral_value_usd": Decimal(0)})
        a["entries"] += 1
        a["collateral_value_usd"] += e.collateral_value_usd
    incidents = store.incidents(since=utc_text(start, "microseconds"), until=utc_text(end, "microseconds"))
    by_kind: dict[str, int] = {}
    for i in incidents:
        by_kind[i.kind] = by_kind.get(i.kind, 0) + 1
    totals = _group([{**h, "all": "all"} for h in holdings], ("all",))
    return {
        "report": "weekly pilot report: customer digital-asset collateral",
        "week": week, "from": utc_text(start, "microseconds"), "to": utc_text(end, "microseconds"),
        "generated_at": utc_text(now_utc(), "microseconds"),
        "totals": {k: v for k, v in totals[0].items() if k != "all"} if totals else
        {"accounts": 0, "market_value_usd": "0", "haircut_usd": "0", "value_after_haircut_usd": "0",
         "excluded_by_limits_usd": "0", "collateral_value_usd": "0"},
        "by_asset": _group(holdings, ("asset",)),
        "by_participant_and_account_type": _group(holdings, ("participant", "account_type", "asset")),
        "activity": {k: {"entries": v["entries"], "collateral_value_usd": decimal_text(v["collateral_value_usd"])}
                     for k, v in sorted(activity.items())},
        "incidents": {"count": len(incidents), "by_kind": dict(sorted(by_kind.items())),
                      "items": [{"at": i.at, "kind": i.kind, "severity": i.severity, "account": i.account,
                                 "asset": i.asset, "address": i.address, "message": i.message} for i in incidents]},
        "series": series(store, week, first_week=first_week),
    }


def series(store: LedgerStore, last_week: str, *, first_week: str | None = None) -> list[dict[str, Any]]:
    """Holdings by asset at the end of every week from the first ledger entry (or ``first_week``)."""
    _, end = parse_week(last_week)
    first_at = store.first_entry_at()
    if first_week:
        start, _ = parse_week(first_week)
    elif first_at:
        start, _ = parse_week(week_of(parse_utc_text(first_at)))
    else:
        start = end - timedelta(days=7)
    entries = list(store.entries(until=utc_text(end, "microseconds")))
    out = []
    wk = start
    while wk < end:
        wk_end = wk + timedelta(days=7)
        cutoff = utc_text(wk_end, "microseconds")
        by: dict[str, dict[str, Decimal]] = {}
        for e in entries:
            if e.at >= cutoff:
                continue
            b = by.setdefault(e.asset, {"market": Decimal(0), "after": Decimal(0), "counted": Decimal(0)})
            b["market"] += e.market_value_usd
            b["after"] += e.after_haircut_usd
            b["counted"] += e.collateral_value_usd
        out.append({"week": week_of(wk), "assets": {a: {"market_value_usd": decimal_text(v["market"]),
                                                        "value_after_haircut_usd": decimal_text(v["after"]),
                                                        "collateral_value_usd": decimal_text(v["counted"])}
                                                    for a, v in sorted(by.items())}})
        wk = wk_end
    return out


HOLDING_COLUMNS = ("week", "participant", "account_type", "asset", "quantity", "accounts", "market_value_usd",
                   "haircut_usd", "value_after_haircut_usd", "excluded_by_limits_usd", "collateral_value_usd")
INCIDENT_COLUMNS = ("week", "at", "kind", "severity", "account", "asset", "address", "message")


def holdings_csv(report: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=HOLDING_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in report["by_participant_and_account_type"]:
        w.writerow({"week": report["week"], **{k: r.get(k, "") for k in HOLDING_COLUMNS if k != "week"}})
    for r in report["by_asset"]:
        w.writerow({"week": report["week"], "participant": "ALL", "account_type": "ALL",
                    **{k: r.get(k, "") for k in HOLDING_COLUMNS if k not in ("week", "participant", "account_type")}})
    t = report["totals"]
    w.writerow({"week": report["week"], "participant": "ALL", "account_type": "ALL", "asset": "ALL", "quantity": "",
                **{k: t.get(k, "") for k in HOLDING_COLUMNS[5:]}})
    return buf.getvalue()


def incidents_csv(report: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=INCIDENT_COLUMNS, lineterminator="\n")
    w.writeheader()
    for i in report["incidents"]["items"]:
        w.writerow({"week": report["week"], **{k: i.get(k) or "" for k in INCIDENT_COLUMNS if k != "week"}})
    return buf.getvalue()


def _usd(v: float, _pos: Any = None) -> str:
    a = abs(v)
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if a >= div:
            t = f"{v / div:.1f}".rstrip("0").rstrip(".")
            return f"${t}{suffix}"
    return f"${v:,.0f}"


# Colour per asset (colour-blind safe, Okabe-Ito), stable across weeks and reports.
COLOURS = {"BTC": "#E69F00", "ETH": "#0072B2", "USDC": "#009E73", "BUIDL": "#CC79A7", "OUSG": "#56B4E9"}
SPARE = ["#D55E00", "#F0E442", "#999999", "#000000"]


def chart(report: dict[str, Any], path: str | Path) -> Path:
    """Stacked bars: value counted as collateral (after haircut and concentration limits) by asset at
    each week's end; dashed line: market value before haircut; the reported week highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    weeks = [s["week"] for s in report["series"]]
    assets = sorted({a for s in report["series"] for a in s["assets"]},
                    key=lambda a: (list(COLOURS).index(a) if a in COLOURS else 99, a))
    fig, ax = plt.subplots(figsize=(11, 6), dpi=120)
    x = list(range(len(weeks)))
    bottom = [0.0] * len(weeks)
    spare = iter(SPARE)
    for a in assets:
        # float only for drawing: every figure in the report itself is an exact Decimal string
        vals = [float(Decimal(s["assets"].get(a, {}).get("collateral_value_usd", "0"))) for s in report["series"]]
        ax.bar(x, vals, bottom=bottom, color=COLOURS.get(a) or next(spare, "#777777"), label=f"{a}",
               width=0.72, edgecolor="white", linewidth=0.6)
        bottom = [b + v for b, v in zip(bottom, vals)]
    market = [float(sum((Decimal(v["market_value_usd"]) for v in s["assets"].values()), Decimal(0)))
              for s in report["series"]]
    ax.plot(x, market, color="#333333", linestyle="--", marker="o", markersize=4, linewidth=1.5,
            label="All assets, market value before haircut")
    if weeks:
        i = weeks.index(report["week"]) if report["week"] in weeks else len(weeks) - 1
        ax.axvspan(i - 0.45, i + 0.45, color="#FFE9A8", alpha=0.5, zorder=0)
        top = max(bottom[i], market[i])
        ax.annotate(f"{report['week']}: {_usd(bottom[i])} counted\n{_usd(market[i])} market value", (i, top),
                    xytext=(0, 10),
                    textcoords="offset points", ha="center", va="bottom", fontsize=9, fontweight="bold",
                    parse_math=False)
        ax.set_ylim(0, max(max(bottom + market, default=0) * 1.18, 1))
    step = max(1, len(weeks) // 14)
    ax.set_xticks(x[::step])
    ax.set_xticklabels(weeks[::step], rotation=45, ha="right", fontsize=9)
    ax.yaxis.set_major_formatter(FuncFormatter(_usd))
    ax.set_xlabel("ISO week (holdings at the end of the week)")
    ax.set_ylabel("Collateral value (USD)")
    ax.set_title("Customer digital-asset collateral held, by asset\n"
                 f"CFTC digital assets pilot - weekly report {report['week']}", fontsize=13)
    ax.grid(axis="y", color="#DDDDDD", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.legend(loc="upper left", fontsize=9, frameon=False,
              title="Bars: value counted as collateral (after haircut and limits)", title_fontsize=9, alignment="left")
    inc = report["incidents"]["count"]
    t = report["totals"]
    fig.text(0.01, 0.01, f"Week {report['week']}: market value {_usd(float(Decimal(t['market_value_usd'])))}, haircuts "
             f"{_usd(float(Decimal(t['haircut_usd'])))}, excluded by concentration limits "
             f"{_usd(float(Decimal(t['excluded_by_limits_usd'])))}, counted "
             f"{_usd(float(Decimal(t['collateral_value_usd'])))}; {inc} operational incident{'s' if inc != 1 else ''}"
             + (" (" + ", ".join(f"{k} {v}" for k, v in report["incidents"]["by_kind"].items()) + ")" if inc else ""),
             fontsize=8.5, color="#444444", parse_math=False)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
