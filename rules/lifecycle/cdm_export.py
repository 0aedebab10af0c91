"""The eligibility schedule as a FINOS CDM eligible-collateral specification (``dacp export cdm``).

The document is ``{"format", "bundle", "as_of", "cdmVersion", "eligibleCollateralSpecification", "notes"}``:
``eligibleCollateralSpecification`` is CDM's ``EligibleCollateralSpecification`` (cdm.product.collateral,
CDM 7) in its JSON form - one ``EligibleCollateralCriteria`` per asset (or per maturity bucket of a
bucketed schedule) with the asset as ``AssetType`` (``Other``, the symbol in ``otherAssetType``: CDM has
no digital-asset collateral type), the phase's inclusion as ``treatment.isIncluded`` and the base haircut
as ``treatment.valuationTreatment.haircutPercentage``. What CDM cannot express is never dropped: each such
rule is a ``notes`` entry naming the rule, its file:line and why (Letter 26-05's highest-of-DCOs rule and
the sources it chose from, the FCM's stricter own overlay, add-ons that depend on facts, on-chain token
restrictions, the eligibility criteria, the par cap). ``schedule_of`` reads a document back into
(asset, bucket bound, haircut, included) rows - the round trip the tests hold to the bundle.

Every document is validated against ``rules/schema/cdm-ecs.schema.json``, the subset of CDM 7.8.0's
classes it uses, field by field (``check``). The ``finos-cdm`` package (7.8.0) was tried and not used: its
import takes over a minute, its ``rune_deserialize``/``model_validate`` want the rune envelope
(``@data``...) rather than the CDM JSON, and its condition code raised NameError on a plain document.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from rules.engine.haircut import by_sources, with_stricter_own
from rules.errors import InputError
from rules.policy.schema_check import validator
from rules.policy.model import Asset, Bundle, HaircutSchedule

FORMAT = "dacp-cdm-eligible-collateral/1"
CDM_VERSION = "7.8.0"  # the finos-cdm release whose EligibleCollateralSpecification this shape is checked against


def _num(d: Decimal) -> str:
    return format(d.normalize(), "f")


def _asset_criteria(symbol: str) -> dict[str, Any]:
    return {"AssetType": {"assetType": "Other", "otherAssetType": [symbol]}}


def _period(days: int) -> dict[str, Any]:
    return {"periodMultiplier": days, "period": "D"}


def _criterion(asset: Asset, haircut: Decimal, included: bool, lower: int | None = None,
               upper: int | None = None) -> dict[str, Any]:
    crit = _asset_criteria(asset.symbol)
    if lower is not None or upper is not None:
        rng: dict[str, Any] = {}
        if lower is not None:
            rng["lowerBound"] = {"period": _period(lower), "inclusive": False}
        if upper is not None:
            rng["upperBound"] = {"period": _period(upper), "inclusive": True}
        crit = {"AllCriteria": {"allCriteria": [crit, {"AssetMaturity": {"maturityType": "RemainingMaturity",
                                                                         "maturityRange": rng}}]}}
    return {"collateralCriteria": crit,
            "treatment": {"valuationTreatment": {"haircutPercentage": _num(haircut)}, "isIncluded": included}}


def _schedule(bundle: Bundle, asset: Asset, day: date) -> HaircutSchedule | None:
    return next((h for h in bundle.haircuts if h.applies.matches(asset) and h.dated.in_force(day)), None)


def export_cdm(bundle: Bundle, day: date) -> dict[str, Any]:
    """The eligibility schedule of ``bundle`` on ``day`` as a CDM document with its notes."""
    phase = bundle.phase_at(day)
    if phase is None:
        raise InputError(f"no programme phase is in force on {day} (the programme starts {bundle.start_date})",
                         "--as-of")
    criteria: list[dict[str, Any]] = []
    notes: list[dict[str, str]] = []

    def note(rule: str, src: Any, why: str) -> None:
        notes.append({"rule": rule, "where": str(src), "note": why})

    for sym, asset in sorted(bundle.assets.items()):
        included = phase.eligible.matches(asset)
        sched = _schedule(bundle, asset, day)
        if sched is None:
            note(f"{sym}", asset.src, "no haircut schedule is in force: the asset is not eligible (fail closed)")
            continue
        if sched.sources:
            base, decided_by, components, why = by_sources(sched, sym)
            base, decided_by, why = with_stricter_own(sched, base, decided_by, components, why)
            criteria.append(_criterion(asset, base, included))
            if sched.dco_sources:
                chosen = ", ".join(f"{s.dco} {_num(s.haircut)}" for s in sched.dco_sources)
                note(sched.id, sched.src, f"{sym}: the haircut is Letter 26-05's highest accepting DCO's ({chosen}), "
                     "worked out on the export date; CDM states one figure, not the rule that chose it")
            if sched.floor is not None:
                note(f"{sched.id}.stricter_own", sched.src, f"{sym}: the FCM's stricter own overlay "
                     f"{_num(sched.floor)} is in the figure; CDM has no label for it ({why})")
        else:
            lower = None
            for b in sched.buckets:
                criteria.append(_criterion(asset, b.haircut, included, lower, b.up_to))
                lower = b.up_to
            note(sched.id, sched.src, f"{sym}: the buckets are by the fund's weighted average maturity "
                 f"({sched.bucket_fact}, days), written as CDM's AssetMaturity (remaining maturity)")
        for a in sched.add_ons:
            cond = a.when.describe() if a.when else f"the asset's share of the account above {_num(a.when_share_above)}"
            note(a.id, a.src, f"{sym}: add {_num(a.haircut)} when {cond}; CDM's additionalHaircutPercentage is "
                 "unconditional, so the add-on is not in the figures")
        if asset.restrictions:
            views = ", ".join(f"{k}: {v}" for k, v in sorted(asset.restrictions.items()))
            note(f"{sym}.restrictions", asset.src, f"{sym}: on-chain token restrictions read from the contract "
                 f"({views}); CDM cannot express them")
        if asset.klass == "payment_stablecoin" and not asset.value_above_par:
            note(f"{sym}.valuation", asset.src, f"{sym}: valued at no more than par (1 USD); CDM has no price cap")
    for c in bundle.criteria:
        note(c.id, c.src, f"eligibility criterion ({c.applies.describe()}): {c.check.describe()}; CDM's collateral "
             "criteria describe the asset, not custody, evidence or prices")
    spec = {"identifier": [{"assignedIdentifier": [{"identifier": {"value": f"{bundle.name} {bundle.version}"}}]},
                           {"assignedIdentifier": [{"identifier": {"value": f"sha256:{bundle.hash}"}}]}],
            "criteria": criteria}
    doc = {"format": FORMAT, "bundle": {"name": bundle.name, "version": bundle.version, "sha256": bundle.hash},
           "as_of": day.isoformat(), "phase": phase.id, "cdmVersion": CDM_VERSION,
           "eligibleCollateralSpecification": spec, "notes": notes}
    check(doc)
    return doc


def check(doc: dict[str, Any]) -> None:
    """Refuse a document that is not of the CDM shape (``rules/schema/cdm-ecs.schema.json``), naming where."""
    errors = sorted(validator("cdm-ecs").iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        e = errors[0]
        raise InputError(f"not a CDM eligible-collateral document: {e.message}",
                         ".".join(map(str, e.absolute_path)) or "(top)")


def schedule_of(doc: dict[str, Any]) -> list[tuple[str, int | None, Decimal, bool]]:
    """(asset, bucket upper bound in days or None, haircut, included) of each criterion of a document."""
    check(doc)
    rows = []
    for c in doc["eligibleCollateralSpecification"]["criteria"]:
        crit, upper = c["collateralCriteria"], None
        if "AllCriteria" in crit:
            parts = crit["AllCriteria"]["allCriteria"]
            crit = next(p for p in parts if "AssetType" in p)
            mat = next(p for p in parts if "AssetMaturity" in p)["AssetMaturity"]["maturityRange"]
            upper = mat["upperBound"]["period"]["periodMultiplier"] if "upperBound" in mat else None
        t = c["treatment"]
        rows.append((crit["AssetType"]["otherAssetType"][0], upper,
                     Decimal(t["valuationTreatment"]["haircutPercentage"]), bool(t["isIncluded"])))
    return rows
