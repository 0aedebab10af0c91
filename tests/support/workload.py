"""A realistic book of eligibility queries: what a clearing system sends when prices move.

Used by the benchmark (``bench/bench_decisions.py``) and by the differential and golden tests, so
that the figures are measured on the same kind of queries the tests prove identical across
evaluators. Deterministic for a seed.

The book: accounts of the pilot's FCMs (and a few that are not admitted, or no longer are), each
with positions in every asset class of the shipped registry - BTC, ETH, USDC, tokenized money-market
and Treasury fund shares - and the rest of the account's collateral as the portfolio (so that the
concentration limits bite on concentrated accounts). Most positions are eligible; the rest fail for
the reasons real ones do: too few confirmations, an unfinalized block, a stale attestation, a depeg,
a fund holder not allow-listed, a stale NAV or price, an unapproved custodian, an unknown asset, a
date before the funds' phase.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any

AS_OF = datetime(2026, 11, 20, 14, 0, tzinfo=timezone.utc)
INITIAL_PHASE_DAY = datetime(2026, 1, 20, 15, 30, tzinfo=timezone.utc)  # before the funds were eligible
BTC_ADDRESSES = ["bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq", "bc1q9d4ywgfnd8h43da5tpcxcn6ajv590cg6d3tg6axemvljvt2k76zs50tv4q"]
EVM_ADDRESSES = ["0x8ba1f109551bD432803012645Ac136ddd64DBA72", "0x742d35Cc6634C0532925a3b844Bc454e4438f44e",
                 "0xdAC17F958D2ee523a2206206994597C13D831ec7"]
PARTICIPANTS = [("FCM-ALPHA", 55), ("FCM-BRAVO", 41), ("FCM-CHARLIE", 3), ("FCM-DELTA", 1)]  # CHARLIE left; DELTA never
ASSETS = [("BTC", 30), ("ETH", 25), ("USDC", 25), ("BUIDL", 10), ("OUSG", 8), ("DOGE", 1), ("SOL", 1)]
CUSTODIANS = [("anchorage", 40), ("bny-digital", 32), ("coinbase-custody", 27), ("self-custody", 1)]
PRICES = {"BTC": ("91250.00", 2), "ETH": ("3120.55", 2), "USDC": ("0.9998", 4), "BUIDL": ("1.00", 2),
          "OUSG": ("112.4367", 4), "DOGE": ("0.3812", 4), "SOL": ("141.20", 2)}
DECIMALS = {"BTC": 8, "ETH": 18, "USDC": 6, "BUIDL": 6, "OUSG": 18, "DOGE": 8, "SOL": 9}
SIZES = {"BTC": (0.5, 400), "ETH": (5, 9000), "USDC": (10_000, 40_000_000), "BUIDL": (50_000, 30_000_000),
         "OUSG": (500, 250_000), "DOGE": (1000, 900_000), "SOL": (10, 50_000)}
HOLDINGS = ["BTC", "ETH", "USDC", "BUIDL", "OUSG"]


def _pick(rnd: random.Random, weighted: list[tuple[str, int]]) -> str:
    return rnd.choices([w[0] for w in weighted], [w[1] for w in weighted])[0]


def _amount(rnd: random.Random, asset: str) -> str:
    """A positive quantity with at most the asset's decimal places (and at most 8 of them)."""
    low, high = SIZES[asset]
    places = min(DECIMALS[asset], 8)
    units = int(rnd.uniform(low, high) * 10**places) or 1
    whole, frac = divmod(units, 10**places)
    text = f"{whole}.{frac:0{places}d}".rstrip("0").rstrip(".")
    return text if text not in ("", "0") else "1"


def _price(rnd: random.Random, asset: str, move: float) -> str:
    base, places = PRICES[asset]
    if asset == "USDC":
        bps = rnd.choices([rnd.randint(-10, 6), rnd.randint(-45, -26), rnd.randint(-90, -51)], [96, 3, 1])[0]
        return f"{1 + bps / 10_000:.4f}"
    if asset == "BUIDL":
        return base
    return f"{float(base) * (1 + move) * rnd.uniform(0.999, 1.001):.{places}f}"


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def query(rnd: random.Random, i: int, account: str, participant: str, as_of: datetime, move: float = 0.0,
          portfolio: list[dict[str, str]] | None = None) -> dict[str, Any]:
    asset = _pick(rnd, ASSETS)
    if as_of < datetime(2026, 3, 8, tzinfo=timezone.utc) and asset in ("BUIDL", "OUSG") and rnd.random() < 0.5:
        asset = "BTC"  # fewer fund positions before the funds' phase: a realistic book, some still refused
    qty = _amount(rnd, asset)
    chain_btc = asset in ("BTC", "DOGE")
    custody: dict[str, Any] = {
        "custodian": _pick(rnd, CUSTODIANS),
        "addresses": rnd.sample(BTC_ADDRESSES if chain_btc else EVM_ADDRESSES, rnd.choice([1, 1, 1, 2])),
        "segregated": rnd.random() > 0.015,
        "balance": qty if rnd.random() > 0.02 else _amount(rnd, asset),
    }
    if chain_btc:
        custody["confirmations"] = rnd.choice([rnd.randint(6, 120_000), rnd.randint(6, 400)]) \
            if rnd.random() < 0.97 else rnd.randint(0, 5)
    else:
        custody["finality"] = rnd.choices(["finalized", "safe", "latest"], [97, 2, 1])[0]
    evidence: dict[str, Any] = {"price_updated_at": _iso(as_of - timedelta(
        minutes=rnd.randint(0, 59) if rnd.random() < 0.98 else rnd.randint(61, 600), seconds=rnd.randint(0, 59)))}
    if asset == "USDC":
        custody["token_paused"] = rnd.random() < 0.003
        custody["address_frozen"] = rnd.random() < 0.005
        evidence["stablecoin"] = {
            "issuer": "Circle Internet Financial" if rnd.random() < 0.99 else "Paxos Trust Company",
            "reserve_attestation_date": (as_of.date() - timedelta(
                days=rnd.randint(0, 35) if rnd.random() < 0.97 else rnd.randint(36, 90))).isoformat()}
    if asset in ("BUIDL", "OUSG"):
        evidence["fund"] = {
            "nav_date": (as_of.date() - timedelta(days=rnd.randint(0, 3) if rnd.random() < 0.97 else rnd.randint(4, 9))).isoformat(),
            "holder_allowlisted": rnd.random() < 0.97,
            "redemption_days": rnd.choices([0, 1, 2, rnd.randint(3, 10)], [20, 55, 20, 5])[0],
            "wam_days": rnd.randint(10, 60) if asset == "BUIDL" else rnd.randint(30, 1400)}
        if rnd.random() < 0.3:
            custody["holder_allowed"] = rnd.random() > 0.02
    return {"id": f"q-{i}", "account": account, "participant": participant, "asset": asset, "quantity": qty,
            "price_usd": _price(rnd, asset, move), "as_of": _iso(as_of), "custody": custody, "evidence": evidence,
            "portfolio": portfolio if portfolio is not None else []}


def _portfolio(rnd: random.Random) -> list[dict[str, str]]:
    """The rest of an account's collateral: diversified mostly, concentrated sometimes, empty for new accounts."""
    kind = rnd.choices(["empty", "small", "diversified", "concentrated"], [8, 12, 60, 20])[0]
    if kind == "empty":
        return []
    n = rnd.randint(1, 3) if kind == "small" else rnd.randint(2, 8)
    scale = 200_000 if kind == "small" else 5_000_000
    out = []
    for _ in range(n):
        asset = rnd.choice(["BTC", "ETH"]) if kind == "concentrated" and rnd.random() < 0.8 else rnd.choice(HOLDINGS)
        out.append({"asset": asset, "collateral_value_usd": f"{rnd.randint(1_000, scale * 10)}.{rnd.randint(0, 99):02d}"})
    return out


def book(n: int, seed: int = 7, as_of: datetime = AS_OF, move: float = 0.0) -> list[dict[str, Any]]:
    """``n`` queries over about ``n / 4`` accounts: one revaluation of a book at ``as_of``.

    ``move`` shifts BTC, ETH, OUSG prices (a revaluation after the market moved)."""
    rnd = random.Random(seed)
    out: list[dict[str, Any]] = []
    accounts = max(1, n // 4)
    plans = []
    for a in range(accounts):
        plans.append((f"ACC-{a:06d}", _pick(rnd, PARTICIPANTS), _portfolio(rnd)))
    for i in range(n):
        account, participant, portfolio = plans[rnd.randrange(accounts)]
        when = as_of if rnd.random() > 0.03 else INITIAL_PHASE_DAY
        out.append(query(rnd, i, account, participant, when, move, portfolio))
    return out


def _degrade(rnd: random.Random, q: dict[str, Any]) -> dict[str, Any]:
    """The same query with some evidence missing (it must fail closed, with the reason)."""
    q = {**q, "custody": dict(q["custody"]), "evidence": {k: dict(v) if isinstance(v, dict) else v
                                                           for k, v in q["evidence"].items()}}
    for section in ("custody", "evidence"):
        keys = list(q[section])
        for k in rnd.sample(keys, rnd.randint(1, len(keys))) if keys else []:
            if isinstance(q[section][k], dict) and rnd.random() < 0.5:
                inner = q[section][k]
                for kk in rnd.sample(list(inner), rnd.randint(1, len(inner))) if inner else []:
                    del inner[kk]
            else:
                del q[section][k]
    for section in ("custody", "evidence", "portfolio"):
        if not q[section] or rnd.random() < 0.1:
            del q[section]
    return q


def corpus(n: int, seed: int = 101) -> list[dict[str, Any]]:
    """A differential test corpus: books on the days the policy changes around (before the
    programme, in the initial phase, after a participant left) and queries with evidence missing."""
    rnd = random.Random(seed)
    days = [AS_OF, INITIAL_PHASE_DAY, datetime(2025, 12, 7, 23, 59, tzinfo=timezone.utc),
            datetime(2025, 12, 8, 0, 0, tzinfo=timezone.utc), datetime(2026, 3, 7, 23, 0, tzinfo=timezone.utc),
            datetime(2026, 3, 8, 0, 0, 1, tzinfo=timezone.utc), datetime(2026, 8, 31, 12, tzinfo=timezone.utc),
            datetime(2026, 9, 1, 12, tzinfo=timezone.utc)]
    out: list[dict[str, Any]] = []
    per_day = max(1, n // (2 * len(days)))
    for k, day in enumerate(days):
        out.extend(book(per_day, seed=seed * 100 + k, as_of=day, move=rnd.uniform(-0.2, 0.2)))
    while len(out) < n:
        base = book(1, seed=rnd.randrange(10**9), as_of=rnd.choice(days))[0]
        out.append(_degrade(rnd, base))
    for i, q in enumerate(out):
        q["id"] = f"c-{i}"
    return out[:n]
