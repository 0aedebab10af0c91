"""The checked, immutable model of a policy bundle. Built by ``rules.policy.loader``; read by everything else."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, Mapping


@dataclass(frozen=True)
class Src:
    """Where a rule was written: policy file (relative to the bundle) and line."""

    file: str
    line: int | None

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line}

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass(frozen=True)
class AppliesTo:
    """Matches an asset by symbol, class or chain (any). Empty means every asset."""

    assets: frozenset[str] = frozenset()
    classes: frozenset[str] = frozenset()
    chains: frozenset[str] = frozenset()

    @property
    def everything(self) -> bool:
        return not (self.assets or self.classes or self.chains)

    def matches(self, asset: "Asset") -> bool:
        return self.everything or asset.symbol in self.assets or asset.klass in self.classes or asset.chain in self.chains

    def describe(self) -> str:
        if self.everything:
            return "every asset"
        parts = []
        for label, values in (("assets", self.assets), ("classes", self.classes), ("chains", self.chains)):
            if values:
                parts.append(f"{label} {', '.join(sorted(values))}")
        return "; ".join(parts)


@dataclass(frozen=True)
class Check:
    """One comparison of a fact: op is equals, one_of, at_least, at_most or in_list."""

    fact: str
    op: str
    value: Any

    def describe(self) -> str:
        words = {"equals": "=", "at_least": ">=", "at_most": "<=", "one_of": "one of", "in_list": "on the list of"}
        v = self.value
        if isinstance(v, bool):
            v = str(v).lower()
        elif isinstance(v, (list, tuple)):
            v = ", ".join(map(str, v))
        return f"{self.fact} {words[self.op]} {v}"


@dataclass(frozen=True)
class Dated:
    effective_from: date | None = None
    effective_to: date | None = None  # exclusive

    def in_force(self, day: date) -> bool:
        return (self.effective_from is None or day >= self.effective_from) and (
            self.effective_to is None or day < self.effective_to)


@dataclass(frozen=True)
class Asset:
    symbol: str
    name: str
    klass: str
    chain: str
    network: int | str
    decimals: int
    src: Src
    contract: str | None = None
    issuer: str | None = None
    restrictions: Mapping[str, str] = field(default_factory=dict)  # kind -> view function read on-chain
    off_chain: Mapping[str, str] = field(default_factory=dict)  # kind -> why it cannot be read on-chain
    # Payment stablecoins are valued at no more than par (1 USD) unless the registry says ``valuation:
    # {above_par: true}`` (issue 16): a price above par never adds collateral value.
    value_above_par: bool = False

    def value_price(self, price: Decimal) -> Decimal:
        """The price a position is valued at: the observed price, capped at par for a payment stablecoin."""
        if self.klass == "payment_stablecoin" and not self.value_above_par and price > 1:
            return Decimal(1)
        return price


@dataclass(frozen=True)
class PhaseWindow:
    """A phase as one participant's clock runs it: [starts, ends), ``ends`` None for the last phase."""

    phase: "Phase"
    starts: date
    ends: date | None

    def holds(self, day: date) -> bool:
        return self.starts <= day and (self.ends is None or day < self.ends)


@dataclass(frozen=True)
class Participant:
    id: str
    name: str
    admitted: Dated
    accepting_from: date | None = None  # the date it notified it starts accepting digital assets (Letter 26-05)
    clock: tuple[PhaseWindow, ...] = ()  # the programme's phases counted from its own start


@dataclass(frozen=True)
class Custodian:
    id: str
    name: str
    chains: frozenset[str]


@dataclass(frozen=True)
class Phase:
    id: str
    description: str
    rationale: str
    starts: date
    ends: date | None  # exclusive; None for the last, open-ended phase
    eligible: AppliesTo
    src: Src
    months: int | None = None  # its length; each participant's clock counts it from its own start


@dataclass(frozen=True)
class Criterion:
    id: str
    description: str
    rationale: str
    applies: AppliesTo
    check: Check
    dated: Dated
    src: Src


@dataclass(frozen=True)
class HaircutSource:
    """One haircut source of a schedule (Letter 26-05): a DCO that accepts the asset (``kind`` dco: its
    name, schedule and the schedule's date) or the FCM's own risk policy (``kind`` own), used only where
    no DCO accepts the asset."""

    id: str
    haircut: Decimal
    source: str | None
    src: Src
    kind: str = "own"  # dco | own | source (the language before issue 16: a source of no kind)
    dco: str | None = None
    schedule: str | None = None
    as_of: date | None = None

    def label(self) -> str:
        """How the decision names it: "Bitnomial schedule of 2026-01", "FCM risk policy"."""
        if self.kind == "dco":
            return f"{self.dco} schedule of {self.as_of:%Y-%m}" if self.as_of else f"{self.dco} schedule"
        return self.source or "the FCM's own risk policy"


@dataclass(frozen=True)
class Bucket:
    up_to: int | None
    haircut: Decimal


@dataclass(frozen=True)
class AddOn:
    id: str
    description: str
    rationale: str
    haircut: Decimal
    src: Src
    when: Check | None = None
    when_share_above: Decimal | None = None


@dataclass(frozen=True)
class HaircutSchedule:
    id: str
    description: str
    rationale: str
    applies: AppliesTo
    dated: Dated
    src: Src
    sources: tuple[HaircutSource, ...] = ()
    bucket_fact: str | None = None
    buckets: tuple[Bucket, ...] = ()
    floor: Decimal | None = None  # the FCM's stricter own overlay (``stricter_own: {floor}``): base >= floor
    add_ons: tuple[AddOn, ...] = ()
    legacy_floor: bool = False  # ``floor`` as written before issue 16: decided and labelled as it was then

    @property
    def dco_sources(self) -> tuple[HaircutSource, ...]:
        return tuple(s for s in self.sources if s.kind == "dco")


@dataclass(frozen=True)
class Limit:
    id: str
    description: str
    rationale: str
    scope: str  # asset | class
    applies: AppliesTo
    dated: Dated
    src: Src
    max_share: Decimal | None = None
    max_value_usd: Decimal | None = None
    min_total_usd: Decimal | None = None
    across: str = "account"  # account | customer | participant | programme: whose holdings the limit counts
    per: str | None = None  # issuer | custodian: only the holdings of the deposit's issuer / custodian
    max_quantity: Decimal | None = None  # whole units of the asset (scope asset only)
    source: str | None = None  # who asks for it (a DCO's schedule, the FCM's risk policy)


ACROSS = ("account", "customer", "participant", "programme")  # the reach of a limit, narrowest first
PER = ("issuer", "custodian")


@dataclass(frozen=True)
class Bundle:
    """A checked policy bundle. ``hash`` is sha256 over the canonical form of its policy files."""

    name: str
    version: str
    dated: Dated
    owner: str | None
    programme_id: str
    programme_description: str
    programme_rationale: str
    programme_src: Src
    start_date: date
    phases: tuple[Phase, ...]
    participants: tuple[Participant, ...]
    custodians: tuple[Custodian, ...]
    participants_src: Src
    custodians_src: Src
    assets: Mapping[str, Asset]
    criteria: tuple[Criterion, ...]
    haircuts: tuple[HaircutSchedule, ...]
    limits: tuple[Limit, ...]
    hash: str
    sources: Mapping[str, str]  # relative file name -> text, for storage and replay
    calendar: str = "XSIF"  # the holiday calendar business-day facts count in (rules.policy.calendar)

    def phase_at(self, day: date) -> Phase | None:
        """The phase of the programme's own clock (from its start date) on ``day``."""
        for p in self.phases:
            if p.starts <= day and (p.ends is None or day < p.ends):
                return p
        return None

    def clock_of(self, participant: str) -> tuple[PhaseWindow, ...]:
        """The phases as ``participant``'s clock runs them (Letter 26-05: from the date it starts
        accepting digital assets); the programme's own clock for anyone not listed."""
        for pt in self.participants:
            if pt.id == participant and pt.clock:
                return pt.clock
        return tuple(PhaseWindow(p, p.starts, p.ends) for p in self.phases)

    def phase_clocks(self) -> list[dict[str, Any]]:
        """Each participant's phase clock as plain data (``dacp bundle show`` and GET /v1/policy show the
        same): its accepting_from (None: it runs the programme's clock) and the phase windows [starts, ends)."""
        return [{"participant": pt.id, "accepting_from": pt.accepting_from.isoformat() if pt.accepting_from else None,
                 "phases": [{"id": w.phase.id, "starts": w.starts.isoformat(),
                             "ends": w.ends.isoformat() if w.ends else None} for w in self.clock_of(pt.id)]}
                for pt in self.participants]

    def window_of(self, participant: str, day: date) -> PhaseWindow | None:
        """The phase in force for ``participant`` on ``day`` (None before its clock starts)."""
        return next((w for w in self.clock_of(participant) if w.holds(day)), None)

    def rule_ids(self) -> list[str]:
        """Every rule id of the bundle, in file order."""
        ids = [p.id for p in self.phases] + [c.id for c in self.criteria]
        for h in self.haircuts:
            ids.append(h.id)
            ids.extend(a.id for a in h.add_ons)
        ids.extend(lim.id for lim in self.limits)
        return ids
