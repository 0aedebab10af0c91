"""The statistics of a haircut backtest: loss windows over a price series, breaches, the empirical
quantile, and the result with its JSON form (definitions: ``rules.lifecycle.backtest``).

Prices and losses are ``Decimal``; nothing here is a float.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal, localcontext
from typing import Any, Sequence

from rules.errors import InputError
from rules.lifecycle.price_series import PriceSeries
from rules.values import decimal_text

DEFAULT_CONFIDENCES = (Decimal("0.99"), Decimal("0.997"))
LOSS_PLACES = Decimal("1e-12")  # losses are exact quotients; stored to 12 places (far below any display)
PCT = Decimal("0.1")


@dataclass(frozen=True)
class Window:
    start: date
    end: date
    close_start: Decimal
    close_end: Decimal
    loss: Decimal

    def to_json(self) -> dict[str, Any]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(),
                "close_start_usd": decimal_text(self.close_start), "close_end_usd": decimal_text(self.close_end),
                "loss": decimal_text(self.loss), "loss_pct": pct(self.loss)}


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
            "asset": self.asset, "haircut": decimal_text(self.haircut), "haircut_pct": pct(self.haircut),
            "haircut_from": self.haircut_explanation, "horizon_days": self.horizon_days,
            "since": iso_day(self.since), "until": iso_day(self.until), "prices": self.prices_source,
            "first_window_start": self.windows[0].start.isoformat(), "last_window_end": self.windows[-1].end.isoformat(),
            "windows": len(self.windows), "windows_skipped_for_gaps": self.skipped,
            "loss_definition": "1 - close[end] / close[start], end = start + horizon days; overlapping windows",
            "quantile_method": "empirical inverted CDF (ceil(q*n)-th smallest loss)",
            "breaches": len(self.breaches), "breach_rate": decimal_text(self.breach_rate.quantize(Decimal("1e-6"))),
            "breach_rate_pct": pct(self.breach_rate, Decimal("0.01")), "breach_episodes": len(self.episodes),
            "worst_loss": worst.to_json(), "worst_breach": worst.to_json() if worst.loss > self.haircut else None,
            "implied_haircut": {decimal_text(q): {"loss": decimal_text(v), "loss_pct": pct(v)}
                                for q, v in self.implied.items()},
            "verdict": {"confidence": decimal_text(self.verdict_confidence), "covers": self.covers},
            "components": [{"rule": label, "haircut": decimal_text(h), "breaches": self.breaches_of(h)}
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



def pct(x: Decimal, places: Decimal = PCT) -> str:
    """0.12597 -> '12.6%' (half-even, like the committee's table)."""
    return f"{(x * 100).quantize(places, rounding=ROUND_HALF_EVEN)}%"


def days(n: int) -> str:
    return f"{n} day" if n == 1 else f"{n} days"


def conf_words(q: Decimal) -> str:
    return pct(q, Decimal("0.1")).replace(".0%", "%")


def iso_day(d: date | None) -> str | None:
    """A day as ``YYYY-MM-DD``, or None."""
    return d.isoformat() if d else None
