"""The backtest's chart for a risk committee (PNG, matplotlib): the price above, every window's loss
against the haircut below.

Floats appear here only, at the very edge: matplotlib draws floats. No figure of the report is computed
from them. matplotlib is imported when a chart is drawn, for start-up time.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from rules.errors import InputError
from rules.lifecycle.loss_windows import BacktestResult, conf_words, days, pct
from rules.lifecycle.price_series import PriceSeries
from rules.values import decimal_text


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
                 f"{decimal_text(worst.close_start)} → {decimal_text(worst.close_end)} USD", xy=(worst.end, wy),
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
