"""The catalogue of facts rules may test.

A fact is a typed, normalised value the engine derives from a query and its evidence. Rules test
facts, never raw query fields, so every value reaching durable_rules has a known type: ``bool``,
``str`` or a bounded ``int`` (|n| < 2**53, exact as a binary float). Raw base units and money never
reach it. The names are the policy language's vocabulary (and the schema's ``fact`` enum).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FactType = Literal["bool", "int", "str"]

MAX_INT_FACT = 2**53 - 1  # largest integer durable_rules (binary floats inside) compares exactly


@dataclass(frozen=True)
class FactSpec:
    name: str
    type: FactType
    unit: str
    description: str

    @property
    def key(self) -> str:
        """The field name used inside durable_rules facts (no dots: they are not plain keys there)."""
        return self.name.replace(".", "__")


_SPECS = [
    FactSpec("asset", "str", "symbol", "asset symbol of the query"),
    FactSpec("asset.class", "str", "class", "asset class from the registry"),
    FactSpec("asset.chain", "str", "chain", "chain of the asset from the registry"),
    FactSpec("participant", "str", "id", "FCM asking"),
    FactSpec("programme.phase", "str", "phase id", "pilot phase in force at as_of ('none' before the start)"),
    FactSpec("custody.custodian", "str", "id", "custodian holding the collateral"),
    FactSpec("custody.segregated", "bool", "", "custody address is a segregated customer address"),
    FactSpec("custody.confirmations", "int", "blocks", "confirmations of the custody balance (Bitcoin)"),
    FactSpec("custody.finality", "str", "tag", "finality of the block the balance was read at: finalized, safe, latest"),
    FactSpec("custody.token_paused", "bool", "", "the token contract is paused"),
    FactSpec("custody.address_frozen", "bool", "", "a custody address is frozen (blacklisted) by the token issuer"),
    FactSpec("custody.holder_allowed", "bool", "", "every custody address may hold the token (transfer allow-list)"),
    FactSpec("custody.balance_covers_quantity", "bool", "", "the verified on-chain balance covers the quantity"),
    FactSpec("stablecoin.issuer", "str", "name", "issuer of the stablecoin as attested"),
    FactSpec("stablecoin.issuer_matches_registry", "bool", "", "the attested issuer is the issuer the asset registry names"),
    FactSpec("stablecoin.reserve_attestation_age_days", "int", "days", "age of the latest reserve attestation at as_of"),
    FactSpec("stablecoin.reserve_attestation_age_business_days", "int", "business days",
             "age of the latest reserve attestation at as_of, in business days of the programme's calendar"),
    FactSpec("stablecoin.peg_deviation_bps", "int", "basis points", "|price - 1 USD| in basis points, rounded up"),
    FactSpec("stablecoin.peg_discount_bps", "int", "basis points", "max(0, 1 USD - price) in basis points, rounded up"),
    FactSpec("stablecoin.peg_premium_bps", "int", "basis points", "max(0, price - 1 USD) in basis points, rounded up"),
    FactSpec("fund.price_nav_deviation_bps", "int", "basis points",
             "|price / NAV per share - 1| in basis points, rounded up (evidence.fund.nav_usd)"),
    FactSpec("fund.nav_age_days", "int", "days", "age of the fund's last struck NAV at as_of"),
    FactSpec("fund.nav_age_business_days", "int", "business days",
             "age of the fund's last struck NAV at as_of, in business days of the programme's calendar"),
    FactSpec("fund.holder_allowlisted", "bool", "", "custody address is on the transfer agent's allow-list"),
    FactSpec("fund.redemption_days", "int", "business days",
             "time to redeem the fund's shares: the business days of the programme's calendar after "
             "evidence.fund.redemption_requested_on up to redemption_settles_on when both are given (the "
             "query's redemption_days is then ignored), else the query's redemption_days"),
    FactSpec("fund.wam_days", "int", "days", "weighted average maturity of the fund's portfolio"),
    FactSpec("price.age_minutes", "int", "minutes", "age of the price at as_of"),
]

FACTS: dict[str, FactSpec] = {s.name: s for s in _SPECS}

# Facts every evaluation has (applicability conditions only test these, so 'not applicable' never
# depends on a missing value).
ALWAYS_PRESENT = ("asset", "asset.class", "asset.chain", "participant", "programme.phase")
DAY_KEY = "as_of__day"  # days since 1970-01-01 of as_of, for effective dating inside the ruleset
