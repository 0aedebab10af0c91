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

The parts: ``rules.lifecycle.price_series`` (the closes), ``rules.lifecycle.loss_windows`` (windows, quantile,
result), ``rules.lifecycle.backtest_chart`` (the PNG); here the inputs, the policy's haircut, the run and
the text report, and the names the CLI and the policy tests use (``bt.load_prices``, ``bt.plot``...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation

from rules.errors import InputError
from rules.lifecycle.backtest_chart import plot
from rules.lifecycle.loss_windows import (DEFAULT_CONFIDENCES, BacktestResult, Window, conf_words, days, iso_day,
                                          loss_windows, pct, quantile)
from rules.lifecycle.price_series import PriceSeries, load_prices, parse_prices
from rules.engine.haircut import by_sources, with_stricter_own
from rules.policy.model import Bundle, HaircutSchedule
from rules.values import decimal_text, now_utc

__all__ = ["BacktestResult", "PolicyHaircut", "PriceSeries", "Window", "conf_words", "days", "load_prices",
           "loss_windows", "parse_confidence", "parse_day", "parse_horizon", "parse_prices", "pct", "plot",
           "policy_haircut", "quantile", "render_text", "run_backtest"]


# -- inputs ----------------------------------------------------------------------------------------
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
    components: tuple[tuple[str, Decimal], ...] = ()  # (label, haircut) of each source and the stricter own overlay


def policy_haircut(bundle: Bundle, asset: str, day: date | None = None) -> PolicyHaircut:
    """The haircut the bundle gives ``asset`` on ``day`` (default: today, UTC) before add-ons:
    the letter's base (the highest accepting DCO's, else the FCM's own) raised to the FCM's stricter own
    overlay where there is one, worded as the decision words it - what a position that triggers no add-on (for example no concentration)
    gets. Bucketed schedules depend on a fact (maturity) and have no single haircut: give one explicitly."""
    a = bundle.assets.get(asset)
    if a is None:
        raise InputError(f"unknown asset (known: {', '.join(sorted(bundle.assets))})", asset)
    day = day or now_utc().date()
    sched: HaircutSchedule | None = next((h for h in bundle.haircuts if h.applies.matches(a) and h.dated.in_force(day)),
                                         None)
    if sched is None:
        raise InputError(f"no haircut schedule applies to {asset} on {day}", asset)
    if not sched.sources:
        raise InputError(f"the haircut of {asset} ({sched.id}) depends on {sched.bucket_fact} (buckets), so it has no "
                         "single figure; give the haircut to test with --haircut", asset)
    base, decided_by, components, why = by_sources(sched, asset)
    base, decided_by, why = with_stricter_own(sched, base, decided_by, components, why)
    comps = [(s.id, s.haircut) for s in sched.sources]
    if sched.floor is not None:
        comps.append((f"{sched.id}.stricter_own", sched.floor))
    words = why
    add = f"; add-ons not included ({', '.join(x.id for x in sched.add_ons)})" if sched.add_ons else ""
    return PolicyHaircut(asset, base, sched.id, f"{sched.id} ({sched.src}): {words}{add}", tuple(comps))



def run_backtest(series: PriceSeries, haircut: PolicyHaircut | Decimal, horizon_days: int, since: date | None = None,
                 until: date | None = None, confidence: Decimal | None = None) -> BacktestResult:
    if since and until and until <= since:
        raise InputError(f"--until ({until}) must be after --since ({since})", "until")
    windows, skipped = loss_windows(series, horizon_days, since, until)
    if not windows:
        span = f"{series.dates[0]}..{series.dates[-1]}"
        raise InputError(f"no {horizon_days}-day window of the price history ({span}) lies within "
                         f"{iso_day(since) or 'its start'}..{iso_day(until) or 'its end'}", "window")
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


# -- the text report ------------------------------------------------------------------------------
def render_text(r: BacktestResult) -> str:
    worst = r.worst
    n, b = len(r.windows), len(r.breaches)
    lines = [
        f"Backtest of the {r.asset or 'given'} haircut over a {r.horizon_days}-day liquidation horizon",
        f"  haircut     {pct(r.haircut)}  - {r.haircut_explanation}",
        f"  prices      {r.prices_source}",
        f"  windows     {n:,} overlapping {r.horizon_days}-day windows, {r.windows[0].start} .. {r.windows[-1].end}"
        + (f" ({r.skipped} skipped: no close at their end)" if r.skipped else ""),
        "  loss        1 - close(end) / close(start), close to close",
        f"  breaches    {b:,} of {n:,} windows ({pct(r.breach_rate, Decimal('0.01'))}) lost more than the haircut"
        + (f", in {len(r.episodes)} episode(s)" if b else ""),
    ]
    lines.append(f"  worst loss  {pct(worst.loss)} from {worst.start} ({decimal_text(worst.close_start)} USD) "
                 f"to {worst.end} "
                 f"({decimal_text(worst.close_end)} USD)" + (" - a breach" if worst.loss > r.haircut else " - covered"))
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
