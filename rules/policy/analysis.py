"""Static analysis of a loaded bundle (``dacp validate``; ``--strict`` makes every finding an error).

The loader refuses what cannot be decided at all (schema, references, overlapping schedules). These
checks find what would decide wrongly or fail in silence on some day or for some asset, each at the
file:line of the rule concerned:

* every asset has exactly one haircut schedule on every day of the programme (from its start to the
  bundle's end, or for ever): a day with none is a gap (the asset is refused for want of a schedule);
* bucket tables are non-decreasing: a longer maturity never takes a smaller haircut;
* no schedule can total more than 100% (its highest base plus every add-on; the engine caps at 100%, which
  would hide the error);
* every fact a rule tests is produced for the assets it applies to (a ``stablecoin.*`` fact exists for
  payment stablecoins only, a ``fund.*`` fact for fund shares only): otherwise the rule fails for them always;
* phases are contiguous: the first starts with the programme, each ends where the next starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Iterable

from rules.errors import Problem
from rules.policy.model import AppliesTo, Bundle, Check, Dated, HaircutSchedule, Src

FUND_CLASSES = frozenset(("tokenized_treasury_fund", "tokenized_money_market_fund"))
# Facts the engine derives for some classes only (rules.engine.fact_builder.normalize): prefix -> classes
CLASS_FACTS = {"stablecoin.": frozenset(("payment_stablecoin",)), "fund.": FUND_CLASSES}


@dataclass(frozen=True)
class Finding:
    """One finding: where, what, and which check found it."""

    src: Src
    check: str
    message: str
    rule_id: str | None = None

    def problem(self) -> Problem:
        return Problem(self.src.file, self.src.line, None, f"[{self.check}] {self.message}", self.rule_id)

    def render(self) -> str:
        return self.problem().render()


def analyse(bundle: Bundle) -> list[Finding]:
    out: list[Finding] = []
    out += schedule_gaps(bundle)
    out += bucket_order(bundle)
    out += totals(bundle)
    out += facts_produced(bundle)
    out += phases_contiguous(bundle)
    out += legacy_language(bundle)
    return sorted(out, key=lambda f: (f.src.file, f.src.line or 0, f.message))


def _span(bundle: Bundle) -> tuple[date, date | None]:
    start = max(bundle.start_date, bundle.dated.effective_from or bundle.start_date)
    return start, bundle.dated.effective_to


def _covers(dated: Dated, day: date) -> bool:
    return dated.in_force(day)


def schedule_gaps(bundle: Bundle) -> list[Finding]:
    """Every asset: the days of the programme on which no schedule applies. The days to try are the
    programme's start and every schedule's boundary: between two boundaries nothing changes."""
    start, end = _span(bundle)
    out = []
    for sym, asset in bundle.assets.items():
        mine = [h for h in bundle.haircuts if h.applies.matches(asset)]
        if not mine:
            continue  # the loader refuses an asset without any schedule
        days = {start} | {d for h in mine for d in (h.dated.effective_from, h.dated.effective_to) if d is not None}
        for day in sorted(d for d in days if d >= start and (end is None or d < end)):
            if not any(_covers(h.dated, day) for h in mine):
                nxt = min((h.dated.effective_from for h in mine if h.dated.effective_from and h.dated.effective_from > day),
                          default=None)
                until = f"until {nxt}" if nxt else "for the rest of the programme"
                out.append(Finding(asset.src, "schedule-gap", f"no haircut schedule applies to {sym} from {day} "
                                   f"{until}: it would be refused for want of a haircut; every day of the programme "
                                   "needs exactly one schedule"))
    return out


def bucket_order(bundle: Bundle) -> list[Finding]:
    out = []
    for h in bundle.haircuts:
        for a, b in zip(h.buckets, h.buckets[1:]):
            if b.haircut < a.haircut:
                lo = f"<= {a.up_to}" if a.up_to is not None else "the last"
                hi = f"<= {b.up_to}" if b.up_to is not None else "above"
                out.append(Finding(h.src, "bucket-order", f"{h.id}: the bucket {hi} ({_pct(b.haircut)}) is below the "
                                   f"bucket {lo} ({_pct(a.haircut)}); a longer {h.bucket_fact} must not take a "
                                   "smaller haircut", h.id))
    return out


def totals(bundle: Bundle) -> list[Finding]:
    out = []
    for h in bundle.haircuts:
        total = _highest_base(h) + sum((a.haircut for a in h.add_ons), Decimal(0))
        if total > 1:
            out.append(Finding(h.src, "total-above-100", f"{h.id}: its highest base with every add-on totals "
                               f"{_pct(total)}, above 100%", h.id))
    return out


def _highest_base(h: HaircutSchedule) -> Decimal:
    figures = [s.haircut for s in h.sources] + [b.haircut for b in h.buckets]
    if h.floor is not None:
        figures.append(h.floor)
    return max(figures, default=Decimal(0))


def _uses(bundle: Bundle) -> Iterable[tuple[str, str, AppliesTo, Src]]:
    """(rule id, fact, what it applies to, where) for every check and bucket fact."""
    for c in bundle.criteria:
        yield c.id, c.check.fact, c.applies, c.src
    for h in bundle.haircuts:
        if h.bucket_fact:
            yield h.id, h.bucket_fact, h.applies, h.src
        for a in h.add_ons:
            if isinstance(a.when, Check):
                yield a.id, a.when.fact, h.applies, a.src


def facts_produced(bundle: Bundle) -> list[Finding]:
    out = []
    for rule_id, fact, applies, src in _uses(bundle):
        classes = next((cl for prefix, cl in CLASS_FACTS.items() if fact.startswith(prefix)), None)
        if classes is None:
            continue
        never = sorted(sym for sym, a in bundle.assets.items() if applies.matches(a) and a.klass not in classes)
        if never:
            out.append(Finding(src, "fact-not-produced", f"{rule_id} tests {fact}, which is never produced for "
                               f"{', '.join(never)} (only for {', '.join(sorted(classes))}): the rule would always "
                               "fail for them; narrow its applies_to", rule_id))
    return out


def phases_contiguous(bundle: Bundle) -> list[Finding]:
    out = []
    phases = sorted(bundle.phases, key=lambda p: p.starts)
    if phases and phases[0].starts != bundle.start_date:
        out.append(Finding(phases[0].src, "phase-gap", f"the first phase {phases[0].id} starts on {phases[0].starts}, "
                           f"not on the programme's start {bundle.start_date}", phases[0].id))
    for a, b in zip(phases, phases[1:]):
        if a.ends is None or a.ends > b.starts:
            out.append(Finding(b.src, "phase-overlap", f"{b.id} starts on {b.starts}, before {a.id} ends "
                               f"({a.ends or 'never'})", b.id))
        elif a.ends < b.starts:
            out.append(Finding(b.src, "phase-gap", f"no phase from {a.ends} to {b.starts}: {a.id} ends before {b.id} "
                               "starts", b.id))
    if phases and phases[-1].ends is not None and (bundle.dated.effective_to is None
                                                   or phases[-1].ends < bundle.dated.effective_to):
        out.append(Finding(phases[-1].src, "phase-gap", f"the last phase {phases[-1].id} ends on {phases[-1].ends}; "
                           "no phase after it", phases[-1].id))
    return out


def legacy_language(bundle: Bundle) -> list[Finding]:
    """The haircut language before issue 16 - a source of no kind, ``floor`` - is read so that stored bundles
    replay as they decided; a bundle written now states Letter 26-05's cases (``kind: dco|own``,
    ``stricter_own``)."""
    out = []
    for h in bundle.haircuts:
        for s in h.sources:
            if s.kind == "source":
                out.append(Finding(s.src, "legacy-language", f"{s.id} has no kind: say dco (with its dco, schedule and "
                                   "as_of) or own", s.id))
        if h.legacy_floor:
            out.append(Finding(h.src, "legacy-language", f"{h.id}: floor is the language before issue 16; write "
                               "stricter_own: {floor, rationale}", h.id))
    return out


def _pct(d: Decimal) -> str:
    return f"{(d * 100).normalize():f}%"


__all__ = ["Finding", "analyse"]
