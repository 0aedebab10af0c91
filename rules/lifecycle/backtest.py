"""Haircut backtests on real prices: does the policy's haircut cover the losses history shows?

Definitions (chosen so that the figures of ``data/prices/README.md`` are reproduced exactly, and tested):

- a *window* starts on a day ``d`` of the price file whose close is known and ends ``h`` calendar days later,
  on ``d + h``, whose close must be known too (a gap in the file skips the window, and the count says so);
  windows overlap (one per start day). ``since`` keeps windows that start on or after it, ``until`` those
  that end on or before it;
- the window's *loss* is ``1 - close[d + h] / close[d]`` (close to close, a gain is a negative loss);
- a *breach* is a window whose loss exceeds the haircut (strictly): the haircut would not have covered the
  fall in value over the liquidation horizon;
- the haircut history *implies* at a confidence ``q`` is the empirical quantile of the losses by the
  "inverted CDF" rule (Hyndman & Fan definition 1, numpy ``method="inverted_cdf"``): the smallest observed
  loss that at least ``q`` of the windows do not exceed, i.e. the ``ceil(q * n)``-th smallest of ``n``.
  Interpolating rules (numpy's default "linear") give lower figures in the tail and do not reproduce the
  committee's table (5 days at 99.7%: 26.0% instead of 26.4%).

Prices and losses are ``Decimal``; the chart converts to float only to draw (see ``plot``).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal, InvalidOperation, localcontext
from pathlib import Path
from typing import Any, Sequence

from rules.errors import InputError
from rules.policy.model import Bundle, HaircutSchedule

DEFAULT_CONFIDENCES = (Decimal("0.99"), Decimal("0.997"))
MAX_PRICE_FILE_BYTES = 50_000_000
LOSS_PLACES = Decimal("1e-12")  # losses are exact quotients; stored to 12 places (far below any display)
PCT = Decimal("0.1")


# -- prices ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PriceSeries:
    """Daily closes in US dollars, by UTC day, strictly increasing dates."""

    source: str
    dates: tuple[date, ...]
    closes: tuple[Decimal, ...]

    def close_on(self) -> dict[date, Decimal]:
        return dict(zip(self.dates, self.closes))


def load_prices(path: str | Path) -> PriceSeries:
    """Read a CSV of daily closes: a header with ``date`` and ``close_usd`` (or ``close``), one row per UTC day.

    Every problem is an ``InputError`` naming the file and line: a missing column, a bad date, a price that
    is not a positive decimal, a date repeated or out of order."""
    p = Path(path)
    where = str(path)
    if not p.is_file():
        raise InputError("no such price file", where)
    if p.stat().st_size > MAX_PRICE_FILE_BYTES:
        raise InputError(f"the price file is larger than {MAX_PRICE_FILE_BYTES} bytes", where)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError("the price file is not UTF-8 text", where) from None
    return parse_prices(text, where)


def parse_prices(text: str, where: str) -> PriceSeries:
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise InputError("the price file is empty", where) from None
    if "date" not in header:
        raise InputError(f"line 1: no 'date' column (columns: {', '.join(header) or 'none'})", where)
    col = next((c for c in ("close_usd", "close") if c in header), None)
    if col is None:
        raise InputError(f"line 1: no 'close_usd' column (columns: {', '.join(header)})", where)
    di, ci = header.index("date"), header.index(col)
    dates: list[date] = []
    closes: list[Decimal] = []
    for n, row in enumerate(reader, 2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) <= max(di, ci):
            raise InputError(f"line {n}: expected {len(header)} columns, found {len(row)}", where)
        try:
            day = date.fromisoformat(row[di].strip())
        except ValueError:
            raise InputError(f"line {n}: {row[di]!r} is not a date (YYYY-MM-DD)", where) from None
        raw = row[ci].strip()
        try:
            price = Decimal(raw)
        except InvalidOperation:
            raise InputError(f"line {n}: {raw!r} is not a decimal number", where) from None
        if not price.is_finite() or price <= 0:
            raise InputError(f"line {n}: the close must be a positive number, not {raw!r}", where)
        if dates and day <= dates[-1]:
            what = "repeated" if day == dates[-1] else f"out of order (after {dates[-1]})"
            raise InputError(f"line {n}: the date {day} is {what}; dates must be strictly increasing", where)
        dates.append(day)
        closes.append(price)
    if len(dates) < 2:
        raise InputError("the price file needs at least two days of closes", where)
    return PriceSeries(where, tuple(dates), tuple(closes))


_HORIZON = re.compile(r"^\s*(\d{1,4})\s*(d|day|days)?\s*$", re.IGNORECASE)


def parse_horizon(text: str | int) -> int:
    """``2d``, ``2 days`` or ``2`` -> 2 (calendar days, 1..3650)."""
    m = _HORIZON.match(str(text))
    if not m or not 1 <= int(m.group(1)) <= 3650:
        raise InputError(f"{text!r} is not a horizon in days (for example 2d; 1 to 3650 days)", "horizon")
    return int(m.group(1))


def parse_day(text: str | date | None, what: str) -> date | None:
    if text is None or isinstance(text, date):
        return text
    try:
        return date.fromisoformat(str(text))
    except ValueError:
        raise InputError(f"{text!r} is not a date (YYYY-MM-DD)", what) from None


def parse_confidence(text: str | Decimal) -> Decimal:
    try:
        q = Decimal(str(text))
    except InvalidOperation:
        raise InputError(f"{text!r} is not a number", "confidence") from None
    if not q.is_finite() or not Decimal("0.5") <= q < 1:
        raise InputError(f"{text} must be at least 0.5 and below 1 (for example 0.99)", "confidence")
    return q


# -- the haircut under test ------------------------------------------------------------------------
@dataclass(frozen=True)
class PolicyHaircut:
    asset: str
    haircut: Decimal
    schedule: str | None
    explanation: str
    components: tuple[tuple[str, Decimal], ...] = ()  # (label, haircut) of each source and the floor


def policy_haircut(bundle: Bundle, asset: str, day: date | None = None) -> PolicyHaircut:
    """The haircut the bundle gives ``asset`` on ``day`` (default: today, UTC) before add-ons:
    max(highest source, floor) - what a position that triggers no add-on (for example no concentration)
    gets. Bucketed schedules depend on a fact (maturity) and have no single haircut: give one explicitly."""
    a = bundle.assets.get(asset)
    if a is None:
        raise InputError(f"unknown asset (known: {', '.join(sorted(bundle.assets))})", asset)
    day = day or datetime.now(timezone.utc).date()
    sched: HaircutSchedule | None = next((h for h in bundle.haircuts if h.applies.matches(a) and h.dated.in_force(day)),
                                         None)
    if sched is None:
        raise InputError(f"no haircut schedule applies to {asset} on {day}", asset)
    if not sched.sources:
        raise InputError(f"the haircut of {asset} ({sched.id}) depends on {sched.bucket_fact} (buckets), so it has no "
                         "single figure; give the haircut to test with --haircut", asset)
    top = max(sched.sources, key=lambda s: s.haircut)
    comps = [(s.id, s.haircut) for s in sched.sources]
    base, words = top.haircut, f"highest source {pct(top.haircut)} ({top.id})"
    if sched.floor is not None:
        comps.append((f"{sched.id} floor", sched.floor))
        if sched.floor > base:
            words = f"floor {pct(sched.floor)} (above the {words})"
            base = sched.floor
        else:
            words += f", not below the floor {pct(sched.floor)}"
    add = f"; add-ons not included ({', '.join(x.id for x in sched.add_ons)})" if sched.add_ons else ""
    return PolicyHaircut(asset, base, sched.id, f"{sched.id} ({sched.src}): {words}{add}", tuple(comps))


# -- the backtest ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Window:
    start: date
    end: date
    close_start: Decimal
    close_end: Decimal
    loss: Decimal

    def to_json(self) -> dict[str, Any]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(), "close_start_usd": _s(self.close_start),
                "close_end_usd": _s(self.close_end), "loss": _s(self.loss), "loss_pct": pct(self.loss)}


@dataclass
class BacktestResult:
    asset: str
    haircut: Decimal
    haircut_explanation: str
    horizon_days: int
    since: date | None
    until: date | None
    prices_source: str
    windows: list[Window]
    skipped: int  # windows without a close at their end (gaps in the file)
    confidences: tuple[Decimal, ...]
    verdict_confidence: Decimal
    implied: dict[Decimal, Decimal] = field(default_factory=dict)
    components: tuple[tuple[str, Decimal], ...] = ()

    @property
    def breaches(self) -> list[Window]:
        return [w for w in self.windows if w.loss > self.haircut]

    @property
    def breach_rate(self) -> Decimal:
        return Decimal(len(self.breaches)) / Decimal(len(self.windows))

    @property
    def episodes(self) -> list[list[Window]]:
        """Breach windows grouped into runs of consecutive start days (one market event, many windows)."""
        runs: list[list[Window]] = []
        for w in self.breaches:
            if runs and (w.start - runs[-1][-1].start).days <= 1:
                runs[-1].append(w)
            else:
                runs.append([w])
        return runs

    @property
    def worst(self) -> Window:
        return max(self.windows, key=lambda w: (w.loss, -w.start.toordinal()))

    @property
    def covers(self) -> bool:
        return self.haircut >= self.implied[self.verdict_confidence]

    def breaches_of(self, haircut: Decimal) -> int:
        return sum(1 for w in self.windows if w.loss > haircut)

    def to_json(self) -> dict[str, Any]:
        worst = self.worst
        return {
            "asset": self.asset, "haircut": _s(self.haircut), "haircut_pct": pct(self.haircut),
            "haircut_from": self.haircut_explanation, "horizon_days": self.horizon_days,
            "since": _iso(self.since), "until": _iso(self.until), "prices": self.prices_source,
            "first_window_start": self.windows[0].start.isoformat(), "last_window_end": self.windows[-1].end.isoformat(),
            "windows": len(self.windows), "windows_skipped_for_gaps": self.skipped,
            "loss_definition": "1 - close[end] / close[start], end = start + horizon days; overlapping windows",
            "quantile_method": "empirical inverted CDF (ceil(q*n)-th smallest loss)",
            "breaches": len(self.breaches), "breach_rate": _s(self.breach_rate.quantize(Decimal("1e-6"))),
            "breach_rate_pct": pct(self.breach_rate, Decimal("0.01")), "breach_episodes": len(self.episodes),
            "worst_loss": worst.to_json(), "worst_breach": worst.to_json() if worst.loss > self.haircut else None,
            "implied_haircut": {_s(q): {"loss": _s(v), "loss_pct": pct(v)} for q, v in self.implied.items()},
            "verdict": {"confidence": _s(self.verdict_confidence), "covers": self.covers},
            "components": [{"rule": label, "haircut": _s(h), "breaches": self.breaches_of(h)}
                           for label, h in self.components],
        }


def loss_windows(series: PriceSeries, horizon_days: int, since: date | None = None,
                 until: date | None = None) -> tuple[list[Window], int]:
    """Every window of the series (see the module note) and how many were skipped for a missing end close."""
    closes = series.close_on()
    step = timedelta(days=horizon_days)
    out, skipped = [], 0
    with localcontext() as ctx:
        ctx.prec = 40
        for d, c0 in zip(series.dates, series.closes):
            if since and d < since:
                continue
            end = d + step
            if until and end > until:
                break
            c1 = closes.get(end)
            if c1 is None:
                if end <= series.dates[-1]:
                    skipped += 1
                continue
            out.append(Window(d, end, c0, c1, (1 - c1 / c0).quantize(LOSS_PLACES, rounding=ROUND_HALF_EVEN)))
    return out, skipped


def quantile(values: Sequence[Decimal], q: Decimal) -> Decimal:
    """Empirical quantile, inverted CDF: the ceil(q*n)-th smallest value (1-based)."""
    if not values:
        raise InputError("no values to take a quantile of", "quantile")
    s = sorted(values)
    k = int((q * len(s)).to_integral_value(rounding=ROUND_CEILING))
    return s[min(max(k, 1), len(s)) - 1]


def run_backtest(series: PriceSeries, haircut: PolicyHaircut | Decimal, horizon_days: int, since: date | None = None,
                 until: date | None = None, confidence: Decimal | None = None) -> BacktestResult:
    if since and until and until <= since:
        raise InputError(f"--until ({until}) must be after --since ({since})", "until")
    windows, skipped = loss_windows(series, horizon_days, since, until)
    if not windows:
        span = f"{series.dates[0]}..{series.dates[-1]}"
        raise InputError(f"no {horizon_days}-day window of the price history ({span}) lies within "
                         f"{_iso(since) or 'its start'}..{_iso(until) or 'its end'}", "window")
    levels = tuple(sorted(set(DEFAULT_CONFIDENCES) | ({confidence} if confidence else set())))
    if isinstance(haircut, PolicyHaircut):
        h, words, asset, comps = haircut.haircut, haircut.explanation, haircut.asset, haircut.components
    else:
        h, words, asset, comps = haircut, "given on the command line", "", ()
    if not Decimal(0) <= h <= 1:
        raise InputError(f"a haircut is a fraction from 0 to 1, not {h}", "haircut")
    losses = [w.loss for w in windows]
    return BacktestResult(asset, h, words, horizon_days, since, until, series.source, windows, skipped, levels,
                          confidence or DEFAULT_CONFIDENCES[0], {q: quantile(losses, q) for q in levels}, comps)


# -- presentation ----------------------------------------------------------------------------------
def _s(d: Decimal) -> str:
    return format(d, "f")


def _iso(d: date | None) -> str | None:
    return d.isoformat() if d else None


def pct(x: Decimal, places: Decimal = PCT) -> str:
    """0.12597 -> '12.6%' (half-even, like the committee's table)."""
    return f"{(x * 100).quantize(places, rounding=ROUND_HALF_EVEN)}%"


def days(n: int) -> str:
    return f"{n} day" if n == 1 else f"{n} days"


def conf_words(q: Decimal) -> str:
    return pct(q, Decimal("0.1")).replace(".0%", "%")


def render_text(r: BacktestResult) -> str:
    worst = r.worst
    n, b = len(r.windows), len(r.breaches)
    lines = [
        f"Backtest of the {r.asset or 'given'} haircut over a {r.horizon_days}-day liquidation horizon",
        f"  haircut     {pct(r.haircut)}  - {r.haircut_explanation}",
        f"  prices      {r.prices_source}",
        f"  windows     {n:,} overlapping {r.horizon_days}-day windows, {r.windows[0].start} .. {r.windows[-1].end}"
        + (f" ({r.skipped} skipped: no close at their end)" if r.skipped else ""),
        f"  loss        1 - close(end) / close(start), close to close",
        f"  breaches    {b:,} of {n:,} windows ({pct(r.breach_rate, Decimal('0.01'))}) lost more than the haircut"
        + (f", in {len(r.episodes)} episode(s)" if b else ""),
    ]
    lines.append(f"  worst loss  {pct(worst.loss)} from {worst.start} ({_s(worst.close_start)} USD) to {worst.end} "
                 f"({_s(worst.close_end)} USD)" + (" - a breach" if worst.loss > r.haircut else " - covered"))
    for q, v in r.implied.items():
        mark = "covered" if r.haircut >= v else "NOT covered"
        lines.append(f"  implied     {conf_words(q):>6}: {pct(v)} (the haircut history asks for; {mark} by {pct(r.haircut)})")
    for label, h in r.components:
        if h != r.haircut:
            lines.append(f"  compare     {label} {pct(h)} alone: {r.breaches_of(h):,} breaches "
                         f"({pct(Decimal(r.breaches_of(h)) / n, Decimal('0.01'))})")
    verdict = "COVERS" if r.covers else "DOES NOT COVER"
    lines.append(f"verdict: the {pct(r.haircut)} haircut {verdict} the {conf_words(r.verdict_confidence)} "
                 f"{r.horizon_days}-day loss ({pct(r.implied[r.verdict_confidence])})")
    return "\n".join(lines)


def plot(r: BacktestResult, series: PriceSeries, path: str | Path) -> Path:
    """A two-panel PNG for a risk committee: the price (log scale) above, every window's loss against the
    haircut below, breaches in red, the implied haircuts dashed, the worst loss annotated.

    Floats appear here only, at the very edge: matplotlib draws floats. No figure of the report is
    computed from them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    out = Path(path)
    if out.suffix.lower() != ".png":
        raise InputError("the chart is a PNG: give a file name ending in .png", str(path))
    if not out.parent.is_dir():
        raise InputError("the chart's directory does not exist", str(out.parent))
    first, last = r.windows[0].start, r.windows[-1].end
    px = [(d, float(c)) for d, c in zip(series.dates, series.closes) if first <= d <= last]  # float: drawing only
    xs = [w.end for w in r.windows]
    ys = [float(w.loss) * 100 for w in r.windows]  # float: drawing only
    h = float(r.haircut) * 100
    br = [(w.end, float(w.loss) * 100) for w in r.breaches]

    fig, (ax0, ax1) = plt.subplots(2, 1, figsize=(12, 7.5), sharex=True, height_ratios=[1, 2.2],
                                   gridspec_kw={"hspace": 0.08})
    ax0.plot([d for d, _ in px], [c for _, c in px], color="#34495e", lw=0.9)
    ax0.set_yscale("log")
    ax0.set_ylabel(f"{r.asset or 'price'} close, USD (log)")
    ax0.grid(True, which="major", alpha=0.3)
    ax0.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))

    pos = [max(y, 0.0) for y in ys]  # gains are not a risk to the haircut: drawn as zero loss
    ax1.fill_between(xs, pos, 0, color="#7f8c8d", alpha=0.45, lw=0, step="pre")
    ax1.plot(xs, pos, color="#5d6d7e", lw=0.5, drawstyle="steps-pre", label=f"{r.horizon_days}-day loss, by window end")
    ax1.axhline(h, color="#c0392b", lw=2.2, label=f"policy haircut {pct(r.haircut)}")
    styles = ["--", ":", "-."]
    for i, (q, v) in enumerate(r.implied.items()):
        ax1.axhline(float(v) * 100, color="#1f4e79", lw=1.2, ls=styles[i % 3],
                    label=f"{conf_words(q)} loss {pct(v)} (implied haircut)")
    if br:
        ax1.scatter([d for d, _ in br], [y for _, y in br], s=14, color="#c0392b", zorder=3,
                    label=f"breach: loss > haircut ({len(r.breaches)} windows, {pct(r.breach_rate, Decimal('0.01'))}); "
                          "labelled by window start")
    worst = r.worst
    episodes = sorted(r.episodes, key=lambda e: max(w.loss for w in e), reverse=True)
    labelled = [worst.end]
    for ep in episodes:
        ax0.axvline(ep[0].start, color="#c0392b", alpha=0.5, lw=1)
    for ep in episodes[:10]:  # name the largest breach episodes that have room; the text report has them all
        top = max(ep, key=lambda w: w.loss)
        if any(abs((top.end - d).days) < 75 for d in labelled):
            continue
        labelled.append(top.end)
        ax1.annotate(f"{top.start:%Y-%m-%d}\n{pct(top.loss)}", xy=(top.end, float(top.loss) * 100),
                     xytext=(4, 4), textcoords="offset points", fontsize=7.5, color="#922b21")
    wy = float(worst.loss) * 100
    ax1.annotate(f"worst {pct(worst.loss)}\n{worst.start} → {worst.end}\n"
                 f"{_s(worst.close_start)} → {_s(worst.close_end)} USD", xy=(worst.end, wy),
                 xytext=(18, -4), textcoords="offset points", fontsize=8.5, va="top",
                 arrowprops={"arrowstyle": "->", "color": "#2c3e50", "lw": 0.8})
    ax1.set_ylim(0, max(max(ys), h) * 1.32)  # headroom for the legend
    ax1.set_ylabel(f"loss over {days(r.horizon_days)}, % (gains shown as 0)")
    ax1.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:.0f}%"))
    ax1.grid(True, alpha=0.3)
    ax1.legend(loc="upper right", fontsize=8.5, framealpha=0.95, ncol=2)
    ax1.xaxis.set_major_locator(mdates.YearLocator())
    ax1.xaxis.set_major_formatter(mdates.DateFormatter("%Y"))
    verdict = "covers" if r.covers else "does NOT cover"
    fig.suptitle(f"{r.asset or 'Asset'} haircut backtest: {pct(r.haircut)} haircut vs {r.horizon_days}-day "
                 f"close-to-close losses, {first} to {last}", fontsize=13, fontweight="bold", y=0.975)
    ax0.set_title(f"{len(r.breaches):,} of {len(r.windows):,} windows breached ({pct(r.breach_rate, Decimal('0.01'))}); "
                  f"the haircut {verdict} the {conf_words(r.verdict_confidence)} loss "
                  f"({pct(r.implied[r.verdict_confidence])}); worst {pct(worst.loss)}", fontsize=10.5)
    fig.text(0.01, 0.01, f"haircut: {r.haircut_explanation}\nprices: {r.prices_source}. Empirical quantiles "
             "(inverted CDF) of overlapping windows.", fontsize=7.5, color="#555555", va="bottom")
    fig.subplots_adjust(left=0.08, right=0.98, top=0.91, bottom=0.11)
    tmp = out.with_name(out.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=130)
    plt.close(fig)
    tmp.replace(out)
    return out
