"""The weekly pilot report an FCM sends the regulator (Letter 26-05): the digital assets held in customer
accounts at the end of an ISO week, by asset, per FCM and account type - the quantity on the books (every
coin deposited, the excess limits excluded included) and its value at the week-end price (from the price
file or feed, with its source and time), and, as the ledger last decided them (credit or revaluation), the
value after haircut, the value excluded by concentration limits and the value counted as collateral - the
custody reconciliation at the week's end (``rules.ledger.weekly_custody``), the week's ledger activity, its
incident notices (``rules.ledger.notices``) and the ledger's automatic incidents. A week not over yet is
reported as far as it has gone and marked ``partial``.

Holdings are rebuilt from the ledger journal (every credit, withdrawal, shortfall reduction and
revaluation is a signed delta), so any past week can be reported again and gives the same figures.
Output: JSON (``weekly``), CSV (``holdings_csv``, ``incidents_csv``) and a PNG chart of holdings by
asset over the pilot's weeks (``chart``: ``rules.ledger.weekly_chart``).
"""

from __future__ import annotations

import csv
import io
import re
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from typing import Callable, Mapping, NamedTuple

from rules.audit.log import DecisionLog
from rules.errors import EvidenceError, InputError
from rules.evidence import PriceEvidence
from rules.ledger import notices as notice_book
from rules.ledger.amounts import cents
from rules.ledger.store import LedgerStore
from rules.ledger.weekly_chart import chart
from rules.ledger.weekly_custody import custody_at, reconcile
from rules.values import decimal_text, now_utc, parse_utc_text, units_text, utc_text

__all__ = ["chart", "holdings_csv", "incidents_csv", "parse_week", "weekly", "week_prices"]

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


class _Symbol(NamedTuple):
    symbol: str


def week_prices(prices: object, symbols: list[str], at: datetime) -> dict[str, PriceEvidence]:
    """The price of each asset as of ``at`` (the week's end, or now for a partial week) from ``prices``
    (``adapters.custody.PriceReader`` or anything with ``read(asset, now=)``); none is an ``InputError``
    naming the asset (a report is not made with a value it could not price)."""
    if not symbols:
        return {}
    if prices is None or not getattr(prices, "configured", True):
        raise InputError("the weekly report values holdings at the week-end price: give --prices FILE or settings "
                         "[prices] (file or feeds)", "prices")
    out = {}
    for sym in symbols:
        try:
            out[sym] = prices.read(_Symbol(sym), now=at)  # type: ignore[attr-defined]
        except EvidenceError as e:
            raise InputError(f"no price for {sym} as of {utc_text(at)}: {e.message}", "prices") from None
    return out


def _group(holdings: list[dict[str, Any]], keys: tuple[str, ...], prices: Mapping[str, Decimal]
           ) -> list[dict[str, Any]]:
    groups: dict[tuple, dict[str, Any]] = {}
    for h in holdings:
        k = tuple(h[x] for x in keys)
        g = groups.setdefault(k, {**{x: h[x] for x in keys}, "decimals": h["decimals"], "quantity_raw": 0,
                                  "now": Decimal(0), "market": Decimal(0), "after": Decimal(0),
                                  "counted": Decimal(0), "accounts": set()})
        g["quantity_raw"] += h["quantity_raw"]
        g["accounts"].add(h["account"])
        g["now"] += cents(Decimal(h["quantity_raw"]).scaleb(-h["decimals"]) * prices[h["asset"]])
        for f in ("market", "after", "counted"):
            g[f] += h[f]
    rows = []
    for k in sorted(groups):
        g = groups[k]
        row = {x: g[x] for x in keys}
        if "asset" in keys:
            row["quantity"] = units_text(g["quantity_raw"], g["decimals"])
            row["price_usd"] = decimal_text(prices[row["asset"]])
        row.update({"accounts": len(g["accounts"]), "market_value_usd": decimal_text(g["now"]),
                    "decided_market_value_usd": decimal_text(g["market"]),
                    "haircut_usd": decimal_text(g["market"] - g["after"]),
                    "value_after_haircut_usd": decimal_text(g["after"]),
                    "excluded_by_limits_usd": decimal_text(g["after"] - g["counted"]),
                    "collateral_value_usd": decimal_text(g["counted"])})
        rows.append(row)
    return rows


def weekly(store: LedgerStore, week: str, *, prices: object = None, first_week: str | None = None,
           now: datetime | None = None, clock: Callable[[], datetime] = now_utc) -> dict[str, Any]:
    """The report of ``week`` (``2026-W47``), valued at the week-end price from ``prices`` (see
    ``week_prices``); ``now`` (default ``clock()``) decides whether the week is over (else: ``partial``,
    as far as it has gone). A week that has not begun is an ``InputError``."""
    start, end = parse_week(week)
    now = now or clock()
    if now <= start:
        raise InputError(f"{week} has not begun ({utc_text(start)}); nothing to report yet", "week")
    partial = now < end
    until = now if partial else end
    holdings = holdings_at(store, until)
    log = DecisionLog(database=store.db)
    states = custody_at(log, until)  # a log that does not read to the end: a StorageError, no report
    evidence = week_prices(prices, sorted({h["asset"] for h in holdings} | {a for a, _ in states}), until)
    price = {k: v.price_usd for k, v in evidence.items()}
    cut_from, cut_to = utc_text(start, "microseconds"), utc_text(until, "microseconds")
    activity: dict[str, dict[str, Any]] = {}
    for e in store.entries(until=cut_to):
        if e.at < cut_from:
            continue
        a = activity.setdefault(e.kind, {"entries": 0, "collateral_value_usd": Decimal(0)})
        a["entries"] += 1
        a["collateral_value_usd"] += e.collateral_value_usd
    incidents = [i for i in store.incidents(since=cut_from, until=cut_to) if i.kind not in notice_book.KINDS]
    by_kind: dict[str, int] = {}
    for i in incidents:
        by_kind[i.kind] = by_kind.get(i.kind, 0) + 1
    totals = _group([{**h, "all": "all"} for h in holdings], ("all",), price)
    return {
        "report": "weekly pilot report: digital assets held in customer accounts",
        "week": week, "from": utc_text(start, "microseconds"), "to": utc_text(end, "microseconds"),
        "partial": partial, "as_of": cut_to, "generated_at": utc_text(now, "microseconds"),
        "prices": {k: {"price_usd": decimal_text(v.price_usd), "source": v.source,
                       "updated_at": utc_text(v.updated_at, "microseconds")} for k, v in sorted(evidence.items())},
        "totals": {k: v for k, v in totals[0].items() if k != "all"} if totals else
        {"accounts": 0, "market_value_usd": "0.00", "decided_market_value_usd": "0.00", "haircut_usd": "0.00",
         "value_after_haircut_usd": "0.00", "excluded_by_limits_usd": "0.00", "collateral_value_usd": "0.00"},
        "by_asset": _group(holdings, ("asset",), price),
        "by_participant": _group(holdings, ("participant", "asset"), price),
        "by_participant_and_account_type": _group(holdings, ("participant", "account_type", "asset"), price),
        "custody": reconcile(store, states, until, price),
        "activity": {k: {"entries": v["entries"], "collateral_value_usd": decimal_text(v["collateral_value_usd"])}
                     for k, v in sorted(activity.items())},
        "notices": notice_book.summary(notice_book.listed(store, log, start, until)),
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


HOLDING_COLUMNS = ("week", "partial", "participant", "account_type", "asset", "quantity", "accounts", "price_usd",
                   "market_value_usd", "decided_market_value_usd", "haircut_usd", "value_after_haircut_usd",
                   "excluded_by_limits_usd", "collateral_value_usd")
INCIDENT_COLUMNS = ("week", "record", "kind", "significant", "severity", "start", "end", "at", "account", "asset",
                    "address", "description")


def holdings_csv(report: dict[str, Any]) -> str:
    """One row per participant x account type x asset, then per participant x asset, per asset, the total."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=HOLDING_COLUMNS, lineterminator="\n")
    w.writeheader()
    head = {"week": report["week"], "partial": "yes" if report.get("partial") else "no"}
    for r in report["by_participant_and_account_type"]:
        w.writerow({**head, **{k: r.get(k, "") for k in HOLDING_COLUMNS if k not in head}})
    for r in report["by_participant"]:
        w.writerow({**head, "account_type": "ALL", **{k: r.get(k, "") for k in HOLDING_COLUMNS
                                                       if k not in head and k != "account_type"}})
    for r in report["by_asset"]:
        w.writerow({**head, "participant": "ALL", "account_type": "ALL",
                    **{k: r.get(k, "") for k in HOLDING_COLUMNS if k not in head and k not in ("participant",
                                                                                             "account_type")}})
    t = report["totals"]
    w.writerow({**head, "participant": "ALL", "account_type": "ALL", "asset": "ALL", "quantity": "", "price_usd": "",
                **{k: t.get(k, "") for k in HOLDING_COLUMNS[6:] if k != "price_usd"}})
    return buf.getvalue()


def incidents_csv(report: dict[str, Any]) -> str:
    """The week's incident notices (record ``notice``), then the ledger's automatic incidents (``ledger``)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=INCIDENT_COLUMNS, lineterminator="\n")
    w.writeheader()
    for n in report["notices"]["items"]:
        w.writerow({"week": report["week"], "record": "notice", "kind": n["kind"],
                    "significant": "yes" if n["significant"] else "no", "severity": "", "start": n["start"],
                    "end": n["end"] or "", "at": n["recorded_at"], "account": "", "asset": "", "address": "",
                    "description": n["description"]})
    for i in report["incidents"]["items"]:
        w.writerow({"week": report["week"], "record": "ledger", "kind": i["kind"], "significant": "",
                    "severity": i["severity"], "start": "", "end": "", "at": i["at"], "account": i["account"] or "",
                    "asset": i["asset"] or "", "address": i["address"] or "", "description": i["message"]})
    return buf.getvalue()
