"""Every fast path of the engine held to the reference decider (``rules.engine.evaluators.reference``).

The reference works each decision out straight from the policy model and the README; the fast path
(plans, fact classes, compiled conditions, durable_rules) must give the same public decision - every
field and every trace entry, apart from what differs by design (``rules.app.comparable``: the id and
the evaluator's name). Four engines - durable_rules and the Python evaluator, each with and without
fact-class reuse - each deciding one query at a time (``decide``) and in a batch (``decide_many``):

* on the shipped bundle, with the workload's books and corpora and with queries of this file's own
  strategies (assets, quantities, prices, custody facts, evidence objects, dates, portfolios that make
  the limits bite, bad input);
* on generated bundles (``tests.support.bundles``: the shipped bundle mutated - thresholds, operators,
  applies_to, effective dates, haircut sources / floors / buckets / add-ons, limits, programme, assets)
  with queries drawn near each bundle's own thresholds and dates.

Where the engine departed from the documented rule the reference kept the documented rule; the two
departures this file found (a failed bucket schedule's add-ons left out of the trace; StopIteration out of
a closed bucket table) are fixed, and each keeps a test at the end that reproduces it.

Bounded for CI: derandomized, no example database, every generated bundle registers its durable_rules
rulesets once (≤ 25 of them; the generated-bundle test does not shrink, so a failure does not register
hundreds - its message carries the bundle's mutations and the query instead).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, localcontext
from functools import lru_cache
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from rules.app import comparable, diff_decisions
from rules.engine.decide import Engine
from rules.engine.evaluators.reference import decide_reference
from rules.engine.query import Query, parse_query
from rules.errors import InputError
from rules.evidence import CustodyEvidence, PriceEvidence
from rules.policy.loader import load_bundle, load_bundle_from_sources
from rules.policy.model import Bundle
from tests.support import ROOT
from tests.support.bundles import bundles, shipped_sources
from tests.support.workload import book, corpus

PATHS = [(evaluator, reuse) for evaluator in ("durable_rules", "python") for reuse in (True, False)]
QUICK = dict(deadline=None, database=None, derandomize=True,
             suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@lru_cache(maxsize=1)
def shipped() -> Bundle:
    return load_bundle(ROOT / "policies")


_ENGINES: dict[str, dict[tuple[str, bool], Engine]] = {}


def engines(bundle: Bundle) -> dict[tuple[str, bool], Engine]:
    """The four fast paths of a bundle, made once (their plans and fact classes carry over between
    examples, as in a long-running service)."""
    if bundle.hash not in _ENGINES:
        _ENGINES[bundle.hash] = {(ev, reuse): Engine.for_bundle(bundle, ev, reuse_facts=reuse) for ev, reuse in PATHS}
    return _ENGINES[bundle.hash]


@dataclass
class Case:
    doc: dict[str, Any]
    query: Query
    evidence: tuple = ()
    verification: dict[str, Any] | None = None
    note: list[str] = field(default_factory=list)

    def show(self) -> str:
        extra = f"\n  evidence: {[e.to_json() for e in self.evidence]}" if self.evidence else ""
        extra += f"\n  verification: {self.verification}" if self.verification is not None else ""
        return json.dumps(self.doc, sort_keys=True) + extra


# -- known departures of the engine from the documented rules ------------------------------------------
def _failed_bucket_schedule(ref: dict[str, Any]) -> dict[str, Any] | None:
    """The reference decision's bucket schedule entry when it failed for want of a bucket, else None."""
    hc_rules = {r["rule"]: r for r in ref["reasons"]}
    for rule in ref["failed_rules"]:
        entry = hc_rules.get(rule)
        if entry and entry["threshold"] in ("a bucket needs this fact", "no bucket covers this value"):
            return entry
    return None


def issue_closed_bucket_table(ref: dict[str, Any]) -> bool:
    """A bucket table whose last bucket has an up_to (the loader accepts it) and a fact above it: no bucket
    applies, so no haircut (fail closed, like a missing fact). Found by this file: the engine used to raise
    StopIteration out of ``Engine.decide`` (``next()`` over the table without a default)."""
    failed = _failed_bucket_schedule(ref)
    return failed is not None and failed["threshold"] == "no bucket covers this value"


def _dump(d: dict[str, Any]) -> str:
    return json.dumps(comparable(d), sort_keys=True, default=repr)  # exact: true is not 1 here


def assert_same(ref: dict[str, Any], got: dict[str, Any], bundle: Bundle, where: str, case: Case) -> None:
    if _dump(ref) == _dump(got):
        return
    diffs = diff_decisions(comparable(ref), comparable(got)) or ["(a difference of type only, e.g. true vs 1)"]
    pytest.fail(f"{where} differs from the reference ({len(diffs)} differences; reference -> engine):\n  "
                + "\n  ".join(diffs[:12]) + f"\nquery: {case.show()}" + "".join(f"\n{n}" for n in case.note))


def reference_of(bundle: Bundle, case: Case) -> dict[str, Any] | InputError:
    try:
        return decide_reference(bundle, case.query, case.evidence, "ref", case.verification)
    except InputError as e:
        return e


def check_cases(bundle: Bundle, cases: list[Case]) -> dict[str, int]:
    """Every fast path against the reference, one query at a time and as one batch. Returns counts of
    what was decided (eligible, limited, refused as bad input...)."""
    refs = [reference_of(bundle, c) for c in cases]
    seen = {"eligible": 0, "ineligible": 0, "limited": 0, "bad_input": 0, "closed_bucket_table": 0}
    for ref in refs:
        if isinstance(ref, InputError):
            seen["bad_input"] += 1
        else:
            seen["closed_bucket_table"] += issue_closed_bucket_table(ref)
            seen["eligible" if ref["eligible"] else "ineligible"] += 1
            seen["limited"] += ref["excluded_by_limits_usd"] not in (None, "0.00")
    for (evaluator, reuse), engine in engines(bundle).items():
        name = f"{evaluator} (reuse_facts={reuse})"
        for case, ref in zip(cases, refs):
            if isinstance(ref, InputError):
                with pytest.raises(InputError):
                    engine.decide(case.query, case.evidence, "x", case.verification)
                continue
            got = engine.decide(case.query, case.evidence, "x", case.verification).to_json()
            assert got["engine"] == evaluator
            assert_same(ref, got, bundle, f"{name}, decide", case)
        good = [(c, r) for c, r in zip(cases, refs) if not isinstance(r, InputError)]
        if len(good) < len(cases) and any(isinstance(r, InputError) for r in refs):
            with pytest.raises(InputError):  # a batch with one bad query decides nothing
                engine.decide_many([c.query for c in cases], [c.evidence for c in cases],
                                   [c.verification for c in cases])
        batch = engine.decide_many([c.query for c, _ in good], [c.evidence for c, _ in good],
                                   [c.verification for c, _ in good])
        for (case, ref), got in zip(good, batch):
            assert_same(ref, got.to_json(), bundle, f"{name}, decide_many", case)
    return seen


# -- queries ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Near:
    """What queries against a bundle should come near: its dates, whole-number thresholds, money."""

    days: tuple[date, ...]
    ints: tuple[int, ...]
    usd: tuple[Decimal, ...]


_NEAR: dict[str, Near] = {}


def near(bundle: Bundle) -> Near:
    if bundle.hash not in _NEAR:
        _NEAR[bundle.hash] = _near(bundle)
    return _NEAR[bundle.hash]


def _near(bundle: Bundle) -> Near:
    ds = {bundle.start_date, date(2026, 11, 20)}
    for d in [bundle.dated] + [p.admitted for p in bundle.participants] + \
            [x.dated for x in (*bundle.criteria, *bundle.haircuts, *bundle.limits)]:
        ds |= {x for x in (d.effective_from, d.effective_to) if x}
    ds |= {x for p in bundle.phases for x in (p.starts, p.ends) if x}
    checks = [c.check for c in bundle.criteria] + [a.when for h in bundle.haircuts for a in h.add_ons if a.when]
    ints = {0, 1, 6, 60}
    ints |= {c.value + k for c in checks if type(c.value) is int for k in (-1, 0, 1)}
    ints |= {b.up_to + k for h in bundle.haircuts for b in h.buckets if b.up_to is not None for k in (0, 1)}
    usd = {Decimal(v) + k for lim in bundle.limits for v in (lim.max_value_usd, lim.min_total_usd) if v is not None
           for k in (Decimal("-0.01"), 0, Decimal("0.01"))}
    return Near(tuple(sorted(d + timedelta(days=k) for d in ds for k in (-1, 0, 1))), tuple(sorted(ints)),
                tuple(sorted(u for u in usd if u >= 0)))


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _money(x: Decimal) -> str:
    return format(max(Decimal(0), x).quantize(Decimal("0.01")), "f")


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    """Set (or, with None, remove) a dotted path of a query document; a missing section is made."""
    *parents, last = path.split(".")
    node = doc
    for p in parents:
        node = node.setdefault(p, {})
    if value is None:
        node.pop(last, None)
    else:
        node[last] = value


@st.composite
def query_cases(draw, bundle: Bundle) -> Case | None:
    """One query: a base that passes the shipped criteria for a registered asset (or an unknown one now
    and then), worth enough for the limits to matter, then up to four changes - each a fact taken near a
    threshold of the bundle, an other participant, custodian or date, or a piece of evidence left out -
    and a portfolio of the account's other collateral sized against the deposit, so that the shares bite.
    Evidence objects and a verification now and then; a quantity with too many places (bad input) rarely."""
    n = near(bundle)
    symbols = sorted(bundle.assets)
    symbol = draw(st.sampled_from(symbols)) if draw(st.integers(0, 15)) else "DOGE"
    asset = bundle.assets.get(symbol)
    decimals = asset.decimals if asset else 8
    places = min(decimals, draw(st.sampled_from([0, 2, 4, 8]))) if draw(st.integers(0, 20)) else decimals + 1
    ulp = Decimal(1).scaleb(-places)
    stable = asset is not None and asset.klass == "payment_stablecoin"
    if stable:
        price = Decimal(1) + Decimal(draw(st.sampled_from([0, 2, -3, 10, -10]))) / 10000
    else:
        price = draw(st.sampled_from([Decimal("91250.00"), Decimal("3120.55"), Decimal("1.00"), Decimal("112.4367")])
                     | st.integers(1, 10**8).map(lambda c: Decimal(c) / 100))
    target = Decimal(draw(st.sampled_from([1, 400_000, 900_000, 2_000_000, 20_000_000, 300_000_000])))
    qty = max(ulp, (target / price).quantize(ulp) if target / price < 10**11 else Decimal(10**11))
    day = draw(st.sampled_from(n.days)) if draw(st.booleans()) else date(2026, 11, 20)
    # the query date is the UTC day: an offset can move it to the day before or after
    as_of_text = day.isoformat() + "T" + draw(st.sampled_from(["14:00:00Z", "00:00:00Z", "23:59:59.999999Z",
                                                               "01:30:00+05:00", "22:30:00-04:00", "09:15Z"]))
    as_of = datetime.fromisoformat(as_of_text.replace("Z", "+00:00")).astimezone(timezone.utc)
    utc_day = as_of.date()
    ago = lambda days: (utc_day - timedelta(days=days)).isoformat()  # noqa: E731
    chain = asset.chain if asset else "bitcoin"
    custodians = [c.id for c in bundle.custodians if chain in c.chains] or [bundle.custodians[0].id]
    doc: dict[str, Any] = {
        "id": f"g-{draw(st.integers(0, 999))}", "account": "ACC-9", "participant": bundle.participants[0].id,
        "asset": symbol, "quantity": format(qty, "f"), "price_usd": format(price, "f"), "as_of": as_of_text,
        "custody": {"custodian": draw(st.sampled_from(custodians)), "segregated": True,
                    "balance": format(qty, "f"), "confirmations": draw(st.sampled_from([6, 7, 120])),
                    "finality": "finalized", "token_paused": False, "address_frozen": False},
        "evidence": {"price_updated_at": _iso(as_of - timedelta(minutes=draw(st.sampled_from([0, 15, 59])))),
                     "stablecoin": {"issuer": (asset.issuer if asset and asset.issuer else "Circle Internet Financial"),
                                    "reserve_attestation_date": ago(draw(st.integers(0, 35)))},
                     "fund": {"nav_date": ago(draw(st.integers(0, 3))),
                              "holder_allowlisted": True, "redemption_days": draw(st.integers(0, 2)),
                              "wam_days": draw(st.sampled_from([10, 45, 90, 200, 1000]))}}}
    if draw(st.integers(0, 3)) == 0:
        doc["custody"]["holder_allowed"] = True
    ints = [i for i in n.ints if i >= 0]
    changes = {
        "participant": [p.id for p in bundle.participants] + ["FCM-DELTA"],
        "custody.custodian": [c.id for c in bundle.custodians] + ["self-custody"],
        "custody.segregated": [False, None], "custody.finality": ["safe", "latest", None],
        "custody.confirmations": [0, 5, None] + [i for i in ints if i <= 10**8],
        "custody.balance": [format(qty - ulp, "f"), format(qty + ulp, "f"), None],
        "custody.token_paused": [True, None], "custody.address_frozen": [True, None],
        "custody.holder_allowed": [False, True],
        "evidence.price_updated_at": [None] + [_iso(as_of - timedelta(minutes=m, seconds=sec))
                                               for m in [60, 61] + ints[:12] for sec in (0, 1)],
        "evidence.stablecoin.issuer": ["Paxos Trust Company", "Tether Operations", None],
        "evidence.stablecoin.reserve_attestation_date": [None] + [ago(d) for d in [36] + [i for i in ints if i < 3000]],
        "evidence.fund.nav_date": [None] + [ago(d) for d in [4] + [i for i in ints if i < 3000]],
        "evidence.fund.holder_allowlisted": [False, None],
        "evidence.fund.redemption_days": [3, None] + [i for i in ints if i <= 3650],
        "evidence.fund.wam_days": [91, 182, 183, 1095, 1096, 36500, None] + [i for i in ints if i <= 36500],
        "evidence.fund": [None], "evidence": [None], "custody": [None],
        "price_usd": [format(Decimal(1) + Decimal(b) / 10000, "f") for b in (-25, 26, -50, 51, -90)]
        + ["1.00255", "0.99745", "1.005001", "0.9949999"]  # part-basis points: the deviation rounds up
        + [format(Decimal(1) - Decimal(min(i, 9000)) / 10000, "f") for i in ints if 0 < i < 9000][:6],
    }
    for _ in range(draw(st.integers(0, 4))):
        path = draw(st.sampled_from(sorted(changes)))
        _set(doc, path, draw(st.sampled_from(changes[path])))
    mv = qty * Decimal(doc["price_usd"])
    holdings = []
    for _ in range(draw(st.sampled_from([0, 1, 2, 3, 5]))):
        how = draw(st.sampled_from(["ratio", "ratio", "ratio", "near", "plain"]))
        if how == "ratio":
            value = mv * draw(st.sampled_from([Decimal("0.05"), Decimal("0.3"), Decimal(1), Decimal(3)]))
        elif how == "near":
            value = draw(st.sampled_from(n.usd or (Decimal(1000000),)))
        else:
            value = Decimal(draw(st.integers(0, 5 * 10**9))) / 100
        holdings.append({"asset": draw(st.sampled_from(symbols)) if draw(st.integers(0, 80)) else "DOGE",
                         "collateral_value_usd": _money(min(value, Decimal(10**14)))})
    if holdings or draw(st.booleans()):
        doc["portfolio"] = holdings
    try:
        query = parse_query(json.loads(json.dumps(doc)))
    except InputError:
        return None  # outside the query schema (a date after as_of, a balance too precise...): not compared
    if draw(st.integers(0, 5)) == 0:
        doc, query = at_a_threshold(bundle, doc, query, draw(st.sampled_from(n.usd or (Decimal(1000000),))),
                                    draw(st.booleans()))
    return Case(doc, query, *draw(evidence_objects(bundle, query)))


def at_a_threshold(bundle: Bundle, doc: dict[str, Any], query: Query, threshold: Decimal, same: bool
                   ) -> tuple[dict, Query]:
    """The query with one more holding that puts the account (``same``: the deposit's asset in it),
    deposit included after its haircut, exactly at ``threshold`` (a limit's min_total_usd or
    max_value_usd): where 'reaches' and 'exceeds' part. The deposit's value after haircut comes from the
    reference - it moves with the holding through a share add-on, so a few rounds; unchanged if none fits."""
    others = [doc["asset"]] if same else [s for s in bundle.assets if s != doc["asset"]]
    if not others or doc["asset"] not in bundle.assets:
        return doc, query
    base = [h for h in doc.get("portfolio", []) if not same or h["asset"] == doc["asset"]]
    rest = [h for h in doc.get("portfolio", []) if same and h["asset"] != doc["asset"]]
    new_doc, new_query, extra = doc, query, None
    with localcontext() as ctx:
        ctx.prec = 120
        for _ in range(3):
            try:
                ref = decide_reference(bundle, new_query)
            except InputError:
                return doc, query
            if ref["haircut"] is None:
                return doc, query
            after = Decimal(doc["quantity"]) * Decimal(ref["price_usd"]) * (1 - Decimal(ref["haircut"]["total"]))
            want = threshold - sum((Decimal(h["collateral_value_usd"]) for h in base), Decimal(0)) - after
            if want == extra:
                return new_doc, new_query
            if want < 0 or want.as_tuple().exponent < -18 or want >= 10**15:
                return doc, query
            extra = want
            added = {"asset": others[0], "collateral_value_usd": format(want, "f")}
            new_doc = dict(doc, portfolio=base + rest + [added])
            new_query = parse_query(json.loads(json.dumps(new_doc)))
    return doc, query


@st.composite
def evidence_objects(draw, bundle: Bundle, query: Query) -> tuple[tuple, dict[str, Any] | None]:
    """Now and then: verified price and custody evidence (as the adapters give it), and a verification."""
    if draw(st.integers(0, 5)):
        return (), None
    asset = bundle.assets.get(query.asset)
    chain, decimals = (asset.chain, asset.decimals) if asset else ("bitcoin", 8)
    out: list[Any] = []
    if draw(st.booleans()):
        out.append(PriceEvidence(query.asset, query.price_usd * draw(st.sampled_from([Decimal(1), Decimal("0.99"),
                                                                                   Decimal("1.006")])), "static",
                                 query.as_of - timedelta(minutes=draw(st.sampled_from([0, 30, 61, 90])))))
    if draw(st.booleans()):
        raw = int(query.quantity.scaleb(decimals)) + draw(st.sampled_from([0, 0, 1, -1]))
        nones = lambda *v: draw(st.sampled_from(list(v) + [None]))  # noqa: E731
        out.append(CustodyEvidence(
            query.asset, chain, "1" if chain == "ethereum" else "main", ("0x8ba1f109551bD432803012645Ac136ddd64DBA72",),
            max(raw, 0), decimals, 19_000_000, "0x" + "ab" * 32, query.as_of, "test",
            confirmations=draw(st.sampled_from([None, 0, 6, 7])) if chain == "bitcoin" else None,
            details={"block_selector": draw(st.sampled_from(["finalized", "safe", "latest", "123"])),
                     "paused": nones(True, False), "frozen_addresses": nones([], ["0x8ba1"]),
                     "not_allowed_addresses": nones([], ["0x8ba1"])}))
    failed = {"status": "failed", "reason": "custody.balance-verified", "message": "short"}
    verification = draw(st.sampled_from([None, {"status": "verified"}, failed]))
    return tuple(out), verification


def workload_cases(docs: list[dict[str, Any]]) -> list[Case]:
    return [Case(d, parse_query(d)) for d in docs]


# -- (a) the shipped bundle ------------------------------------------------------------------------
def test_workload_books_and_corpus_match_the_reference():
    """The benchmark's kind of book and the differential corpus (days the policy changes around,
    evidence missing): every decision of every fast path equals the reference."""
    cases = workload_cases(corpus(300, seed=31) + book(250, seed=32) + book(100, seed=33, move=-0.3))
    seen = check_cases(shipped(), cases)
    assert seen["eligible"] > 200 and seen["ineligible"] > 200 and seen["limited"] > 10, seen


@settings(max_examples=120, **QUICK)
@given(st.data())
def test_shipped_bundle_generated_queries_match_the_reference(data):
    cases = [c for c in data.draw(st.lists(query_cases(shipped()), min_size=1, max_size=6)) if c is not None]
    check_cases(shipped(), cases)


@settings(max_examples=25, **QUICK)
@given(st.integers(0, 10**6), st.sampled_from([datetime(2026, 11, 20, 14, tzinfo=timezone.utc),
                                               datetime(2026, 3, 8, 0, 30, tzinfo=timezone.utc),
                                               datetime(2026, 9, 1, 9, tzinfo=timezone.utc)]))
def test_shipped_bundle_workload_books_by_seed_match_the_reference(seed, as_of):
    check_cases(shipped(), workload_cases(book(8, seed=seed, as_of=as_of, move=(seed % 7 - 3) / 10)
                                          + corpus(8, seed=seed)))


# -- (b) generated bundles ---------------------------------------------------------------------------
@settings(max_examples=25, phases=(Phase.explicit, Phase.generate), **QUICK)
@given(bundles(), st.data())
def test_generated_bundles_match_the_reference(generated, data):
    sources, mutations = generated
    bundle = load_bundle_from_sources(sources)  # a PolicyError here is a bug of tests/support/bundles.py
    cases = [c for c in data.draw(st.lists(query_cases(bundle), min_size=6, max_size=12)) if c is not None]
    for c in cases:
        c.note = ["bundle: the shipped one, with " + "; ".join(mutations)]
    check_cases(bundle, cases)


def test_the_bundle_generator_writes_the_shipped_bundle_back_unchanged():
    """Unmutated, the generator's documents load to the shipped bundle itself (same hash)."""
    from tests.support.bundles import render, shipped_documents

    assert load_bundle_from_sources(render(shipped_documents())).hash == shipped().hash


# -- the reference itself, by hand -------------------------------------------------------------------
README_QUERY = {"account": "ACC-1001", "participant": "FCM-ALPHA", "asset": "BTC", "quantity": "12.5",
                "price_usd": "91250.00", "as_of": "2026-11-20T14:00:00Z",
                "custody": {"custodian": "anchorage", "addresses": ["bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"],
                            "segregated": True, "confirmations": 7, "balance": "12.5"},
                "evidence": {"price_updated_at": "2026-11-20T13:45:00Z"},
                "portfolio": [{"asset": "USDC", "collateral_value_usd": "2500000.00"}]}


def test_the_readme_query_by_hand():
    """12.5 BTC at 91,250 = 1,140,625.00. Haircut: Bitnomial 15% < the FCM's stricter own 20%, so 20% (the
    overlay decides, alone);
    BTC would be 912,500 / 3,412,500 = 26.7% of the account, not above 40%: no add-on. Limits (T =
    2,500,000, A = 0): BTC 50%: x <= (0.5 * 2,500,000 - 0) / 0.5 = 2,500,000; BTC+ETH 70%: 5,833,333.33;
    the 100M cap: none binds. Collateral 912,500.00, the whole quantity counted."""
    d = decide_reference(shipped(), parse_query(README_QUERY))
    assert (d["eligible"], d["market_value_usd"], d["value_after_haircut_usd"], d["collateral_value_usd"]) == \
        (True, "1140625.00", "912500.00", "912500.00")
    assert d["haircut"]["total"] == "0.2" and d["haircut"]["decided_by"] == "haircut.btc.stricter_own"
    assert d["haircut"]["why"] == ("the FCM's stricter own haircut 20%, above 15% (Bitnomial schedule of 2026-01: "
                                   "highest of 1 accepting DCO)")
    assert [c["rule"] for c in d["haircut"]["components"] if c.get("decisive")] == ["haircut.btc.stricter_own"]
    assert d["counted_quantity"] == "12.50000000" and d["excluded_by_limits_usd"] == "0.00"
    by = {r["rule"]: r for r in d["reasons"]}
    assert by["haircut.btc.concentration"]["observed"] == "0.2673"  # 912500 / 3412500 = 0.26739...
    assert by["price.fresh"]["observed"] == 15 and by["custody.btc-confirmations"]["outcome"] == "pass"
    check_cases(shipped(), [Case(README_QUERY, parse_query(README_QUERY))])


def test_a_share_limit_by_hand():
    """50 BTC at 91,250 = 4,562,500; the account holds 3,000,000 USDC and 500,000 BTC (T = 3,500,000,
    A = 500,000). After the 20% base BTC would be 4,150,000 / 7,150,000 = 58% > 40%: +5%, total 25%,
    value 3,421,875.00. BTC share 50%: x <= (0.5 * 3,500,000 - 500,000) / (1 - 0.5) = 2,500,000 - it
    binds; BTC+ETH 70%: (2,450,000 - 500,000) / 0.3 = 6,500,000 does not; nor the 100M cap. Counted
    2,500,000.00 of 3,421,875.00 (921,875.00 excluded): 50 * 2,500,000 / 3,421,875 = 36.52968036... BTC."""
    doc = dict(README_QUERY, quantity="50", portfolio=[{"asset": "USDC", "collateral_value_usd": "3000000"},
                                                       {"asset": "BTC", "collateral_value_usd": "500000"}],
               custody=dict(README_QUERY["custody"], balance="50"))
    d = decide_reference(shipped(), parse_query(doc))
    assert (d["haircut"]["total"], d["value_after_haircut_usd"], d["collateral_value_usd"], d["excluded_by_limits_usd"],
            d["counted_quantity"]) == ("0.25", "3421875.00", "2500000.00", "921875.00", "36.52968036")
    by = {r["rule"]: r for r in d["reasons"]}
    assert by["limit.btc-share"]["outcome"] == "applied" and by["limit.btc-share"]["counted_usd"] == "2500000.00"
    assert by["limit.btc-share"]["observed"] == {"group_value_usd": "500000.00", "share_after": "0.5665",
                                                 "requested_usd": "3421875.00", "room_left_usd": "0.00"}
    # 3,921,875 / 6,921,875; no room left: the BTC holding counts its 50 % of the account
    assert d["holdings"] == {"source": "what-if (caller's portfolio)", "counted_before_usd": "500000.00",
                             "counted_after_usd": "3000000.00"}
    assert by["limit.digital-commodities"]["outcome"] == "pass" and by["limit.btc-fcm-cap"]["outcome"] == "pass"
    check_cases(shipped(), [Case(doc, parse_query(doc))])


def test_the_share_limit_threshold_by_hand():
    """min_total_usd is 1,000,000. 1 BTC at 100,000 into an account of 700,000 BTC and 225,000 USDC:
    after the 20% base, BTC would be 780,000 / 1,005,000 of it (> 40%): +5%, value 75,000.00, and the
    account with it is exactly 1,000,000 - the share (50%) does not bind yet: all of it counts. At
    100,000.02 the value is 75,000.015 and the account passes 1,000,000 by 0.015: the share binds
    ((0.5 * 925,000 - 700,000) / 0.5 < 0), so what counts is what keeps the account at 1,000,000 -
    75,000.00 - and 0.015 is excluded (0.01 written, rounded down)."""
    doc = dict(README_QUERY, quantity="1", price_usd="100000", custody=dict(README_QUERY["custody"], balance="1"),
               portfolio=[{"asset": "BTC", "collateral_value_usd": "700000"},
                          {"asset": "USDC", "collateral_value_usd": "225000"}])
    at = decide_reference(shipped(), parse_query(doc))
    assert (at["value_after_haircut_usd"], at["collateral_value_usd"], at["excluded_by_limits_usd"]) == \
        ("75000.00", "75000.00", "0.00")
    assert {r["rule"]: r["outcome"] for r in at["reasons"]}["limit.btc-share"] == "pass"
    above = dict(doc, price_usd="100000.02")
    over = decide_reference(shipped(), parse_query(above))
    assert (over["value_after_haircut_usd"], over["collateral_value_usd"], over["excluded_by_limits_usd"],
            over["counted_quantity"]) == ("75000.01", "75000.00", "0.01", "0.99999980")
    assert {r["rule"]: r.get("counted_usd") for r in over["reasons"]}["limit.btc-share"] == "75000.00"
    check_cases(shipped(), [Case(doc, parse_query(doc)), Case(above, parse_query(above))])


def test_the_account_cap_threshold_by_hand():
    """The BTC cap is 100,000,000 per account. 1 BTC at 100,000 (80,000.00 after the 20% floor; BTC is a
    third of the account, no add-on) beside 99,920,000 of BTC and 200,000,000 of USDC: exactly at the cap,
    all of it counts; at 100,000.02 (80,000.016) the cap lets 80,000.00 count and 0.016 is excluded."""
    doc = dict(README_QUERY, quantity="1", price_usd="100000", custody=dict(README_QUERY["custody"], balance="1"),
               portfolio=[{"asset": "BTC", "collateral_value_usd": "99920000"},
                          {"asset": "USDC", "collateral_value_usd": "200000000"}])
    at = decide_reference(shipped(), parse_query(doc))
    assert (at["value_after_haircut_usd"], at["collateral_value_usd"], at["excluded_by_limits_usd"]) == \
        ("80000.00", "80000.00", "0.00")
    assert {r["rule"]: r["outcome"] for r in at["reasons"]}["limit.btc-fcm-cap"] == "pass"
    above = dict(doc, price_usd="100000.02")
    over = decide_reference(shipped(), parse_query(above))
    assert (over["collateral_value_usd"], over["excluded_by_limits_usd"]) == ("80000.00", "0.01")
    assert {r["rule"]: r.get("counted_usd") for r in over["reasons"]}["limit.btc-fcm-cap"] == "80000.00"
    check_cases(shipped(), [Case(doc, parse_query(doc)), Case(above, parse_query(above))])


def test_the_concentration_add_on_threshold_by_hand():
    """The BTC add-on applies "when BTC makes up MORE than 40%". 1 BTC at 100,000 is 80,000 after the
    20% base; beside 320,000 of BTC and 600,000 of USDC, BTC is 400,000 / 1,000,000 = exactly 40%: no
    add-on (20%). With 599,999.99 of USDC it is just over 40%: +5% (25%)."""
    doc = dict(README_QUERY, quantity="1", price_usd="100000", custody=dict(README_QUERY["custody"], balance="1"),
               portfolio=[{"asset": "BTC", "collateral_value_usd": "320000"},
                          {"asset": "USDC", "collateral_value_usd": "600000"}])
    at = decide_reference(shipped(), parse_query(doc))
    assert at["haircut"]["total"] == "0.2"
    assert {r["rule"]: (r["outcome"], r["observed"]) for r in at["reasons"]}["haircut.btc.concentration"] == \
        ("not_applicable", "0.4000")
    over_doc = dict(doc, portfolio=[doc["portfolio"][0], {"asset": "USDC", "collateral_value_usd": "599999.99"}])
    over = decide_reference(shipped(), parse_query(over_doc))
    assert over["haircut"]["total"] == "0.25" and over["value_after_haircut_usd"] == "75000.00"
    check_cases(shipped(), [Case(doc, parse_query(doc)), Case(over_doc, parse_query(over_doc))])


def test_a_floor_equal_to_the_highest_source_by_hand():
    """A stricter_own overlay equal to the highest DCO raises nothing: the DCO decides (the overlay is not
    decisive)."""
    sources = shipped_sources()
    sources["haircuts.yaml"] = sources["haircuts.yaml"].replace("    floor: 0.20\n", "    floor: 0.15\n", 1)
    bundle = load_bundle_from_sources(sources)
    d = decide_reference(bundle, parse_query(README_QUERY))
    assert d["haircut"]["decided_by"] == "haircut.btc.bitnomial" and d["haircut"]["base"] == "0.15"
    assert [c["decisive"] for c in d["haircut"]["components"] if c["kind"] in ("dco", "stricter_own")] == [True, False]
    assert d["haircut"]["why"] == "Bitnomial schedule of 2026-01: highest of 1 accepting DCO"
    check_cases(bundle, [Case(README_QUERY, parse_query(README_QUERY))])


def test_the_shipped_examples_match_the_reference():
    cases = [Case(json.loads(p.read_text()), parse_query(json.loads(p.read_text())))
             for p in sorted((ROOT / "examples" / "queries").glob("*.json"))]
    assert len(cases) >= 10
    check_cases(shipped(), cases)


# -- departures this file found in the engine (fixed): each reproduced ----------------------------------------
FUND_WITHOUT_WAM = {"account": "A-1", "participant": "FCM-ALPHA", "asset": "OUSG", "quantity": "10", "price_usd": "100",
                    "as_of": "2026-11-20T14:00:00Z",
                    "custody": {"custodian": "anchorage", "segregated": True, "finality": "finalized", "balance": "10"},
                    "evidence": {"price_updated_at": "2026-11-20T13:30:00Z",
                                 "fund": {"nav_date": "2026-11-19", "holder_allowlisted": True, "redemption_days": 1}}}


@pytest.mark.parametrize("evaluator,reuse", PATHS)
def test_a_failed_bucket_schedule_keeps_its_add_ons_in_the_trace(evaluator, reuse):
    """Found by this file: a bucket schedule that failed for want of its fact (haircut.tokenized-funds without
    fund.wam_days) left its add-ons out of the trace, though every rule appears there."""
    query = parse_query(FUND_WITHOUT_WAM)
    ref = decide_reference(shipped(), query)
    assert {"haircut.tokenized-funds.token-risk", "haircut.tokenized-funds.slow-redemption"} <= \
        {r["rule"] for r in ref["reasons"]}
    got = engines(shipped())[(evaluator, reuse)].decide(query).to_json()
    assert _dump(got) == _dump(ref)


def closed_bucket_bundle() -> Bundle:
    """The shipped bundle with the funds' last bucket closed at 10,000 days (schema: "leave out on the
    last bucket" - but the loader accepts it)."""
    sources = shipped_sources()
    text = sources["haircuts.yaml"]
    assert "        - {haircut: 0.06}\n" in text
    sources["haircuts.yaml"] = text.replace("        - {haircut: 0.06}\n", "        - {up_to: 10000, haircut: 0.06}\n")
    return load_bundle_from_sources(sources)


@pytest.mark.parametrize("evaluator,reuse", PATHS)
def test_a_value_above_a_closed_bucket_table_fails_closed(evaluator, reuse):
    bundle = closed_bucket_bundle()
    doc = json.loads(json.dumps(FUND_WITHOUT_WAM))
    doc["evidence"]["fund"]["wam_days"] = 20000
    query = parse_query(doc)
    ref = decide_reference(bundle, query)
    assert ref["eligible"] is False and "haircut.tokenized-funds" in ref["failed_rules"]
    assert issue_closed_bucket_table(ref)
    got = engines(bundle)[(evaluator, reuse)].decide(query).to_json()
    assert _dump(got) == _dump(ref)
