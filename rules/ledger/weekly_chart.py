"""The weekly report's chart (matplotlib, PNG): value counted as collateral by asset at each week's end
(stacked bars, as the ledger last decided it), market value as a dashed line (the reported week's at its
week-end price), the reported week highlighted, and the week's figures and incident notices underneath."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Sequence


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


def chart(report: dict[str, Any], path: str | Path, panels: Sequence[Callable[[Any], None]] = ()) -> Path:
    """Stacked bars: value counted as collateral (after haircut and concentration limits) by asset at
    each week's end; dashed line: market value before haircut; the reported week highlighted. ``panels``:
    more panels underneath, each drawn by its callable on its own axes (the margin section's coverage over
    time, ``rules.margin.weekly.panel``: the report's door passes it, so the ledger knows nothing of margin)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    weeks = [s["week"] for s in report["series"]]
    assets = sorted({a for s in report["series"] for a in s["assets"]},
                    key=lambda a: (list(COLOURS).index(a) if a in COLOURS else 99, a))
    fig, axes = plt.subplots(1 + len(panels), 1, figsize=(11, 6 + 4 * len(panels)), dpi=120, squeeze=False,
                             height_ratios=[6] + [4] * len(panels))
    ax = axes[0][0]
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
    if report["week"] in weeks:  # the reported week at its week-end price
        market[weeks.index(report["week"])] = float(Decimal(report["totals"]["market_value_usd"]))
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
    inc = report["notices"]["count"]
    t = report["totals"]
    fig.text(0.01, 0.01, f"Week {report['week']}: market value {_usd(float(Decimal(t['market_value_usd'])))}, haircuts "
             f"{_usd(float(Decimal(t['haircut_usd'])))}, excluded by concentration limits "
             f"{_usd(float(Decimal(t['excluded_by_limits_usd'])))}, counted "
             f"{_usd(float(Decimal(t['collateral_value_usd'])))}; {inc} incident notice{'s' if inc != 1 else ''}"
             + (" (" + ", ".join(f"{k} {v}" for k, v in report["notices"]["by_kind"].items()) + ")" if inc else "")
             + (" - PARTIAL WEEK, as of " + report["as_of"] if report.get("partial") else ""),
             fontsize=8.5, color="#444444", parse_math=False)
    for draw, row in zip(panels, axes[1:]):
        draw(row[0])
        row[0].set_xlim(ax.get_xlim())  # the panels' weeks under the bars' weeks
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
