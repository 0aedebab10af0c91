"""The collateral ledger: credit only verified, eligible value, once.

Workflow of a credit (``Ledger.credit``):

1. Idempotency: a key already used returns the stored result (same parameters) or is refused
   (different parameters); nothing is verified or written again.
2. Evidence, outside any transaction (network): the price (``prices``) and the custody balance
   on-chain (``verifier``, as ``dacp evaluate --verify`` does), per custody address.
3. ONE transaction, holding the locks ``account:<id>`` and ``custody:<asset>:<address>`` (PostgreSQL
   advisory locks in sorted order; SQLite's database write lock):
   - the newest verified balance per address is stored; if the addresses already carry more credit
     than the chain now shows, the shortfall is flagged and the newest credits reduced first;
   - the decision: ``Engine.decide`` under the bundle in force, with the account's ledger holdings as
     the ``portfolio`` (concentration limits across the account);
   - the invariant: the quantity asked for must be free at the addresses (verified balance minus what
     every account already has credited there), else the credit is refused (``custody.already-credited``);
   - positions, journal entry, the stored idempotency result and the decision-log entry are written,
     and committed together (a crash before COMMIT leaves nothing).

Money and quantities are exact: integer base units and ``Decimal`` cents, values rounded down.
No SQL here (``adapters.storage.ledger_store``); no chain client here (the verifier and prices are injected).
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import ROUND_DOWN, Decimal
from typing import Any, Callable, Mapping

from rules.evidence import CustodyEvidence, PriceEvidence, custody_from_json
from adapters.storage.ledger_store import Account, Incident, JournalEntry, LedgerStore, Position, StoredRequest
from rules.engine.decide import Engine
from rules.audit.log import DecisionLog
from rules.errors import EvidenceError, InputError
from rules.policy.model import Asset, Bundle
from rules.engine.query import MAX_QUANTITY, parse_query

CENT = Decimal("0.01")
KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,79}$")
# Account types of the FCM's customer funds (CFTC Regulations): the weekly report groups by them.
ACCOUNT_TYPES = {
    "customer-segregated": "Customer segregated account - futures (CEA 4d(a)(2), Reg. 1.20)",
    "cleared-swaps": "Cleared swaps customer account (CEA 4d(f), Part 22)",
    "30.7-secured": "Foreign futures secured amount (Reg. 30.7)",
}
DEFAULT_ACCOUNT_TYPE = "customer-segregated"
OUTAGE_REASONS = {"node_unreachable", "timeout", "rpc_error", "not_configured", "bad_response"}


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def iso(ts: datetime) -> str:
    return ts.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _s(d: Decimal) -> str:
    return format(d, "f")


def _plain(d: Decimal) -> str:
    """A decimal without trailing zeros or exponent (for fingerprints and queries)."""
    t = format(d, "f")
    return t.rstrip("0").rstrip(".") if "." in t else t


def _cents(d: Decimal) -> Decimal:
    return d.quantize(CENT, rounding=ROUND_DOWN)


def _to_raw(q: Decimal, decimals: int, where: str) -> int:
    raw = q.scaleb(decimals)
    if raw != raw.to_integral_value():
        raise InputError(f"{_plain(q)} has more decimal places than the asset has ({decimals})", where)
    return int(raw)


def _from_raw(raw: int, decimals: int) -> Decimal:
    return Decimal(raw).scaleb(-decimals)


def check_key(key: str) -> str:
    if not isinstance(key, str) or not KEY.fullmatch(key):
        raise InputError("an idempotency key is 1-80 characters: letters, digits and . _ : / - "
                         "(starting with a letter or digit)", "idempotency key")
    return key


def _fingerprint(doc: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class CreditRequest:
    """What a clearing system asks to credit. ``evidence`` holds the query's off-chain evidence
    (``stablecoin`` / ``fund`` blocks, as in a query); ``as_of`` defaults to now."""

    account: str
    participant: str
    asset: str
    quantity: Decimal
    addresses: tuple[str, ...]
    idempotency_key: str
    account_type: str | None = None
    custodian: str | None = None
    segregated: bool | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)
    as_of: datetime | None = None

    def fingerprint(self) -> str:
        return _fingerprint({"op": "credit", "account": self.account, "participant": self.participant,
                             "asset": self.asset, "quantity": _plain(self.quantity), "addresses": list(self.addresses),
                             "account_type": self.account_type, "custodian": self.custodian,
                             "segregated": self.segregated, "evidence": self.evidence,
                             "as_of": None if self.as_of is None else iso(self.as_of)})


@dataclass(frozen=True)
class WithdrawRequest:
    account: str
    asset: str
    quantity: Decimal
    idempotency_key: str
    address: str | None = None

    def fingerprint(self) -> str:
        return _fingerprint({"op": "withdraw", "account": self.account, "asset": self.asset,
                             "quantity": _plain(self.quantity), "address": self.address})


def per_address_balances(ev: CustodyEvidence) -> dict[str, int]:
    """Verified balance per custody address (base units) from the adapters' evidence details."""
    raw = ev.details.get("balances") or ev.details.get("per_address_sat")
    if raw:
        out = {a: 0 for a in ev.addresses}
        for a, v in dict(raw).items():
            out[a] = int(v)
    elif len(ev.addresses) == 1:
        out = {ev.addresses[0]: ev.raw_balance}
    else:
        raise EvidenceError("no_per_address_balances", "the custody evidence does not give a balance per address")
    if sum(out.values()) != ev.raw_balance:
        raise EvidenceError("bad_response", "per-address balances do not add up to the verified balance")
    return out


class Ledger:
    """The crediting workflow over a ``LedgerStore``; decisions through ``rules.engine.decide.Engine``.

    ``verifier``: ``adapters.custody.CustodyVerifier`` (or anything with ``verify(asset, addresses)``);
    ``prices``: ``adapters.custody.PriceReader`` (or anything with ``read(asset)`` -> PriceEvidence).
    ``hooks``: test points called by name (``verified``, ``before_commit``)."""

    def __init__(self, bundle: Bundle, engine: Engine, store: LedgerStore, *, verifier: Any = None,
                 prices: Any = None, clock: Callable[[], datetime] = now_utc):
        self.bundle = bundle
        self.engine = engine
        self.store = store
        self.log = DecisionLog(database=store.db)
        self.verifier = verifier
        self.prices = prices
        self.clock = clock
        self.hooks: dict[str, Callable[[], None]] = {}

    @classmethod
    def from_dacp(cls, dacp: Any, store: LedgerStore, **kw: Any) -> "Ledger":
        """From a ``rules.app.Dacp`` (its bundle and evaluator; its verifier and prices unless given)."""
        kw.setdefault("verifier", dacp.verifier)
        kw.setdefault("prices", getattr(dacp, "prices", None))
        return cls(dacp.bundle, dacp.engine, store, **kw)

    def _hook(self, name: str) -> None:
        if name in self.hooks:
            self.hooks[name]()

    def _asset(self, symbol: str) -> Asset:
        asset = self.bundle.assets.get(symbol)
        if asset is None:
            raise InputError(f"unknown asset (known: {', '.join(sorted(self.bundle.assets))})", symbol)
        return asset

    # -- idempotency -------------------------------------------------------------------------------
    def _replayed(self, key: str, operation: str, fingerprint: str) -> dict[str, Any] | None:
        stored = self.store.request(key)
        if stored is None:
            return None
        if stored.operation != operation or stored.fingerprint != fingerprint:
            raise InputError(f"this idempotency key was already used on {stored.created_at} for a different "
                             f"{stored.operation} request; use a new key for a new request", key)
        return {**stored.result, "replayed": True}

    # -- evidence ----------------------------------------------------------------------------------
    def _price(self, asset: Asset, account: str | None = None) -> PriceEvidence:
        if self.prices is None or not getattr(self.prices, "configured", True):
            raise InputError("no price source configured (settings [prices] file or feeds, or --prices FILE)", "prices")
        try:
            return self.prices.read(asset)
        except EvidenceError as e:
            self._incident("price_unavailable", "critical", f"{asset.symbol}: {e.message}", account=account,
                           asset=asset.symbol, details={"reason": e.reason})
            raise

    def _incident(self, kind: str, severity: str, message: str, **kw: Any) -> Incident:
        inc = Incident(str(uuid.uuid4()), iso(self.clock()), kind, severity, message, **kw)
        with self.store.transaction():
            self.store.add_incident(inc)
        return inc

    # -- credit ------------------------------------------------------------------------------------
    def credit(self, req: CreditRequest) -> dict[str, Any]:
        check_key(req.idempotency_key)
        asset = self._asset(req.asset)
        if req.account_type is not None and req.account_type not in ACCOUNT_TYPES:
            raise InputError(f"unknown account type {req.account_type!r} (use one of {', '.join(ACCOUNT_TYPES)})",
                             "account type")
        if not req.addresses:
            raise InputError("name at least one custody address", "addresses")
        if not (0 < req.quantity <= MAX_QUANTITY):
            raise InputError(f"must be greater than zero and at most {MAX_QUANTITY:,}", "quantity")
        qty_raw = _to_raw(req.quantity, asset.decimals, "quantity")
        fp = req.fingerprint()
        done = self._replayed(req.idempotency_key, "credit", fp)
        if done is not None:
            return done
        known = self.store.account(req.account)
        if known is not None and known.participant != req.participant:
            raise InputError(f"account {req.account} belongs to {known.participant}, not {req.participant}", "account")

        as_of = req.as_of or self.clock()
        price = self._price(asset, req.account)
        evidence: list[Any] = [price]
        balances: dict[str, int] = {}
        custody_ev: CustodyEvidence | None = None
        if self.verifier is None:
            raise InputError("crediting needs on-chain verification, but no verifier is configured", "verify")
        try:
            custody_ev = self.verifier.verify(asset, list(req.addresses))
            balances = per_address_balances(custody_ev)
            evidence.insert(0, custody_ev)
            verification: dict[str, Any] = {"status": "verified"}
        except EvidenceError as e:
            custody_ev = None
            verification = {"status": "failed", "reason": e.reason, "message": e.message}
        self._hook("verified")

        locks = [f"key:{req.idempotency_key}", f"account:{req.account}"]
        locks += [f"custody:{asset.symbol}:{a}" for a in balances]
        at = iso(self.clock())
        with self.store.transaction(locks):
            done = self._replayed(req.idempotency_key, "credit", fp)  # a racing request with the same key won
            if done is not None:
                return done
            account = self.store.account(req.account)
            new_account = account is None
            if account is None:  # opened with its first credit
                account = Account(req.account, req.participant, req.account_type or DEFAULT_ACCOUNT_TYPE, at)
            elif account.participant != req.participant:
                raise InputError(f"account {req.account} belongs to {account.participant}", "account")
            elif req.account_type is not None and req.account_type != account.account_type:
                raise InputError(f"account {req.account} is a {account.account_type} account, not {req.account_type}",
                                 "account type")
            effective: dict[str, int] = {}
            if custody_ev is not None:
                for addr, bal in balances.items():
                    effective[addr] = self._record_balance(asset, addr, bal, custody_ev, at)
            holdings = self._portfolio(req.account)
            query = self._query(req, asset, price, holdings, as_of)
            decision = self.engine.decide(query, evidence, verification=verification).to_json()
            free = {a: max(effective[a] - self._allocated(asset.symbol, a), 0) for a in effective}
            result = self._result(req, account, decision, at)
            incidents: list[Incident] = []
            status = "refused"
            if verification["status"] != "verified":
                kind = "node_outage" if verification["reason"] in OUTAGE_REASONS else "verification_failure"
                incidents.append(Incident(str(uuid.uuid4()), at, kind, "warning",
                                          f"credit {req.idempotency_key}: custody of {asset.symbol} not verified: "
                                          f"{verification['message']}", req.account, asset.symbol,
                                          ",".join(req.addresses), dict(verification)))
                result["refusal"] = {"rule": "custody.onchain-verification", "retryable": True,
                                     "message": verification["message"]}
            elif not decision["eligible"]:
                result["refusal"] = {"rule": decision["failed_rules"][0] if decision["failed_rules"] else "ineligible",
                                     "retryable": False, "message": "not eligible: " + ", ".join(decision["failed_rules"])}
            elif qty_raw > sum(free.values()):
                msg = (f"{_plain(req.quantity)} {asset.symbol} asked for, but only "
                       f"{_plain(_from_raw(sum(free.values()), asset.decimals))} is verified and not yet credited "
                       f"at {', '.join(free)} (the same coins are never counted twice)")
                result["refusal"] = {"rule": "custody.already-credited", "retryable": False, "message": msg}
                incidents.append(Incident(str(uuid.uuid4()), at, "double_count_refused", "warning", msg, req.account,
                                          asset.symbol, ",".join(free),
                                          {"free": {a: str(v) for a, v in free.items()}, "asked": str(qty_raw)}))
            else:
                status = "credited"
                if new_account:
                    self.store.add_account(account)
                result["allocations"] = self._allocate(req, account, asset, decision, free, custody_ev, query, at)
            result["status"] = status
            result["eligible"] = decision["eligible"]
            if status != "credited":
                result["quantity_credited"] = "0"
                result["collateral_value_usd"] = "0"
            for inc in incidents:
                self.store.add_incident(inc)
            retryable = status == "refused" and result.get("refusal", {}).get("retryable")
            if not retryable:  # a node outage may be retried with the same key; a decision may not
                self.store.add_request(StoredRequest(req.idempotency_key, "credit", fp, status, result, at))
            self.log.append([("decision", decision["decision_id"], self.bundle,
                              {"query": query.raw, "decision": decision,
                               "ledger": {"operation": "credit", "idempotency_key": req.idempotency_key,
                                          "status": status, "allocations": result.get("allocations", [])}})])
            self._hook("before_commit")
        return {**result, "replayed": False}

    def _result(self, req: CreditRequest, account: Account, d: dict[str, Any], at: str) -> dict[str, Any]:
        return {"operation": "credit", "idempotency_key": req.idempotency_key, "account": req.account,
                "participant": req.participant, "account_type": account.account_type, "asset": req.asset,
                "quantity_requested": _plain(req.quantity),
                "quantity_credited": _plain(Decimal(d.get("counted_quantity") or "0")),
                "collateral_value_usd": d.get("collateral_value_usd") or "0",
                "market_value_usd": d.get("market_value_usd"), "value_after_haircut_usd": d.get("value_after_haircut_usd"),
                "excluded_by_limits_usd": d.get("excluded_by_limits_usd"),
                "haircut": (d.get("haircut") or {}).get("total"), "price_usd": d.get("price_usd"),
                "decision_id": d["decision_id"], "failed_rules": d.get("failed_rules", []),
                "bundle": d["policy"]["bundle"], "recorded_at": at,
                "evidence": [{k: e.get(k) for k in ("kind", "chain", "network", "block_number", "block_hash",
                                                    "raw_balance", "price_usd", "source", "updated_at") if k in e}
                             for e in d.get("evidence", [])]}

    def _query(self, req: CreditRequest, asset: Asset, price: PriceEvidence, holdings: Mapping[str, Decimal],
               as_of: datetime) -> Any:
        custody: dict[str, Any] = {"addresses": list(req.addresses)}
        if req.custodian is not None:
            custody["custodian"] = req.custodian
        if req.segregated is not None:
            custody["segregated"] = req.segregated
        evidence = {k: v for k, v in dict(req.evidence).items() if k != "price_updated_at"}
        evidence["price_updated_at"] = iso(price.updated_at)
        doc = {"id": req.idempotency_key, "account": req.account, "participant": req.participant, "asset": asset.symbol,
               "quantity": _plain(req.quantity), "price_usd": _plain(price.price_usd), "as_of": iso(as_of),
               "custody": custody, "evidence": evidence,
               "portfolio": [{"asset": a, "collateral_value_usd": _s(v)} for a, v in sorted(holdings.items())]}
        return parse_query(doc, "credit request")

    def _portfolio(self, account: str) -> dict[str, Decimal]:
        out: dict[str, Decimal] = {}
        for p in self.store.positions(account=account):
            out[p.asset] = out.get(p.asset, Decimal(0)) + p.collateral_value_usd
        return out

    def _allocated(self, asset: str, address: str) -> int:
        return sum(p.quantity_raw for p in self.store.positions(asset=asset, address=address))

    def _record_balance(self, asset: Asset, address: str, balance: int, ev: CustodyEvidence, at: str) -> int:
        """Store a verified balance unless a newer block is already stored; reduce credits the chain no
        longer covers. Returns the balance of the newest block."""
        from adapters.storage.ledger_store import CustodyState

        stored = self.store.custody(asset.symbol, address)
        if stored is None or ev.block_number >= stored.block_number:
            self.store.put_custody(CustodyState(asset.symbol, address, ev.chain, balance, asset.decimals,
                                                ev.block_number, ev.block_hash, at))
            newest = balance
        else:
            newest = stored.balance_raw
        self._reduce_shortfall(asset, address, newest, ev, at)
        return newest

    def _reduce_shortfall(self, asset: Asset, address: str, balance: int, ev: CustodyEvidence, at: str) -> list[dict]:
        positions = self.store.positions(asset=asset.symbol, address=address)
        excess = sum(p.quantity_raw for p in positions) - balance
        if excess <= 0:
            return []
        reductions = []
        for p in sorted(positions, key=lambda p: (p.created_at, p.account), reverse=True):  # newest position first
            if excess <= 0:
                break
            cut = min(excess, p.quantity_raw)
            excess -= cut
            reductions.append(self._reduce(p, cut, "shortfall", at, evidence=ev.to_json(),
                                           reason=f"on-chain balance at {address} is "
                                                  f"{_plain(_from_raw(balance, asset.decimals))} {asset.symbol} "
                                                  f"(block {ev.block_number})"))
        total = sum(Decimal(r["quantity"]) for r in reductions)
        msg = (f"shortfall at {address}: the chain shows {_plain(_from_raw(balance, asset.decimals))} {asset.symbol} "
               f"at block {ev.block_number}; credits reduced by {_plain(total)} {asset.symbol}")
        self.store.add_incident(Incident(str(uuid.uuid4()), at, "shortfall", "critical", msg, None, asset.symbol,
                                         address, {"block_number": ev.block_number, "block_hash": ev.block_hash,
                                                   "balance_raw": str(balance), "reductions": reductions}))
        self.log.append([("ledger", f"shortfall-{uuid.uuid4()}", None,
                          {"ledger": {"operation": "shortfall", "asset": asset.symbol, "address": address,
                                      "balance_raw": str(balance), "reductions": reductions,
                                      "evidence": ev.to_json()}})])
        return reductions

    def _reduce(self, p: Position, cut: int, kind: str, at: str, *, evidence: Any = None, reason: str | None = None,
                key: str | None = None) -> dict[str, Any]:
        """Take ``cut`` base units off a position; its values shrink in proportion (rounded down)."""
        left = p.quantity_raw - cut
        scale = (lambda v: _cents(v * left / p.quantity_raw)) if p.quantity_raw else (lambda v: Decimal(0))
        new = p.but(quantity_raw=left, market_value_usd=scale(p.market_value_usd),
                    after_haircut_usd=scale(p.after_haircut_usd), collateral_value_usd=scale(p.collateral_value_usd),
                    updated_at=at)
        self.store.put_position(new)
        entry = JournalEntry(str(uuid.uuid4()), at, kind, p.account, p.participant, p.asset, p.address, -cut, p.decimals,
                             new.market_value_usd - p.market_value_usd, new.after_haircut_usd - p.after_haircut_usd,
                             new.collateral_value_usd - p.collateral_value_usd, p.price_usd, p.decision_id, key, reason,
                             evidence)
        self.store.add_entry(entry)
        return {"account": p.account, "asset": p.asset, "address": p.address,
                "quantity": _plain(_from_raw(cut, p.decimals)),
                "collateral_value_usd": _s(p.collateral_value_usd - new.collateral_value_usd), "entry_id": entry.entry_id}

    def _allocate(self, req: CreditRequest, account: Account, asset: Asset, d: dict[str, Any], free: dict[str, int],
                  ev: CustodyEvidence | None, query: Any, at: str) -> list[dict[str, Any]]:
        """Credit the counted quantity, address by address in the order given, within what is free."""
        counted = _to_raw(Decimal(d["counted_quantity"]), asset.decimals, "counted quantity")
        values = {k: Decimal(d[k] or "0") for k in ("market_value_usd", "value_after_haircut_usd", "collateral_value_usd")}
        qty_total = _to_raw(req.quantity, asset.decimals, "quantity")
        facts = {"query": query.raw, "custody_evidence": ev.to_json() if ev else None}
        out, left = [], counted
        order = [a for a in free if free[a] > 0]
        shares: list[tuple[str, int]] = []
        for addr in order:
            take = min(left, free[addr])
            if take > 0:
                shares.append((addr, take))
                left -= take
        if not shares:  # eligible but nothing counts (limits): record the decision, no position
            return []
        assigned = {k: Decimal(0) for k in values}
        for i, (addr, take) in enumerate(shares):
            last = i == len(shares) - 1
            part = {}
            for k, v in values.items():
                base = v if k == "collateral_value_usd" else v * counted / qty_total  # market/after-haircut of counted
                base = _cents(base)
                part[k] = base - assigned[k] if last else _cents(base * take / counted)
                assigned[k] += part[k]
            old = self.store.positions(account=req.account, asset=asset.symbol, address=addr, include_empty=True)
            prev = old[0] if old else None
            pos = Position(req.account, asset.symbol, addr, req.participant,
                           (prev.quantity_raw if prev else 0) + take, asset.decimals,
                           (prev.market_value_usd if prev else Decimal(0)) + part["market_value_usd"],
                           (prev.after_haircut_usd if prev else Decimal(0)) + part["value_after_haircut_usd"],
                           (prev.collateral_value_usd if prev else Decimal(0)) + part["collateral_value_usd"],
                           Decimal(d["price_usd"]), (d.get("haircut") or {}).get("total"), d["decision_id"],
                           d["policy"]["bundle"], facts, prev.created_at if prev and prev.quantity_raw else at, at)
            self.store.put_position(pos)
            self.store.add_entry(JournalEntry(str(uuid.uuid4()), at, "credit", req.account, req.participant, asset.symbol,
                                              addr, take, asset.decimals, part["market_value_usd"],
                                              part["value_after_haircut_usd"], part["collateral_value_usd"],
                                              Decimal(d["price_usd"]), d["decision_id"], req.idempotency_key, None,
                                              ev.to_json() if ev else None))
            out.append({"address": addr, "quantity": _plain(_from_raw(take, asset.decimals)),
                        "collateral_value_usd": _s(part["collateral_value_usd"])})
        return out

    # -- withdraw ----------------------------------------------------------------------------------
    def withdraw(self, req: WithdrawRequest) -> dict[str, Any]:
        check_key(req.idempotency_key)
        asset = self._asset(req.asset)
        if req.quantity <= 0:
            raise InputError("must be greater than zero", "quantity")
        cut_total = _to_raw(req.quantity, asset.decimals, "quantity")
        fp = req.fingerprint()
        done = self._replayed(req.idempotency_key, "withdraw", fp)
        if done is not None:
            return done
        for _ in range(5):
            addrs = {p.address for p in self.store.positions(account=req.account, asset=asset.symbol)}
            locks = [f"key:{req.idempotency_key}", f"account:{req.account}"]
            locks += [f"custody:{asset.symbol}:{a}" for a in addrs]
            with self.store.transaction(locks):
                done = self._replayed(req.idempotency_key, "withdraw", fp)
                if done is not None:
                    return done
                positions = self.store.positions(account=req.account, asset=asset.symbol, address=req.address)
                if {p.address for p in positions} - addrs:
                    continue  # a credit at a new address came in between: take its lock too
                held = sum(p.quantity_raw for p in positions)
                if cut_total > held:
                    where = f" at {req.address}" if req.address else ""
                    raise InputError(f"account {req.account} holds {_plain(_from_raw(held, asset.decimals))} "
                                     f"{asset.symbol}{where}; cannot withdraw {_plain(req.quantity)}", "quantity")
                at = iso(self.clock())
                left, parts = cut_total, []
                for p in sorted(positions, key=lambda p: (p.updated_at, p.created_at), reverse=True):
                    if left <= 0:
                        break
                    cut = min(left, p.quantity_raw)
                    left -= cut
                    parts.append(self._reduce(p, cut, "withdraw", at, key=req.idempotency_key, reason="withdrawal"))
                result = {"operation": "withdraw", "status": "withdrawn", "idempotency_key": req.idempotency_key,
                          "account": req.account, "asset": asset.symbol, "quantity": _plain(req.quantity),
                          "collateral_value_usd": _s(sum((Decimal(p["collateral_value_usd"]) for p in parts), Decimal(0))),
                          "reductions": parts, "recorded_at": at}
                self.store.add_request(StoredRequest(req.idempotency_key, "withdraw", fp, "withdrawn", result, at))
                self.log.append([("ledger", f"withdraw-{uuid.uuid4()}", None, {"ledger": result})])
                return {**result, "replayed": False}
        raise InputError("the account's holdings kept changing; try again", "withdraw")  # pragma: no cover

    # -- re-verification ---------------------------------------------------------------------------
    def reverify(self, asset: str | None = None) -> dict[str, Any]:
        """Verify every custody address that carries credit again; reduce credits the chain no longer covers."""
        if self.verifier is None:
            raise InputError("re-verification needs a verifier (configured nodes)", "verify")
        by_asset: dict[str, set[str]] = {}
        for p in self.store.positions(asset=asset):
            by_asset.setdefault(p.asset, set()).add(p.address)
        report: dict[str, Any] = {"verified": [], "failures": [], "reductions": []}
        for symbol, addrs in sorted(by_asset.items()):
            a = self._asset(symbol)
            try:
                ev = self.verifier.verify(a, sorted(addrs))
                balances = per_address_balances(ev)
            except EvidenceError as e:
                kind = "node_outage" if e.reason in OUTAGE_REASONS else "verification_failure"
                self._incident(kind, "warning", f"re-verification of {symbol} failed: {e.message}", asset=symbol,
                               address=",".join(sorted(addrs)), details={"reason": e.reason})
                report["failures"].append({"asset": symbol, "reason": e.reason, "message": e.message})
                continue
            at = iso(self.clock())
            with self.store.transaction([f"custody:{symbol}:{x}" for x in balances]):
                before = {x: self._allocated(symbol, x) for x in balances}
                for x, bal in balances.items():
                    newest = self._record_balance(a, x, bal, ev, at)
                    report["verified"].append({"asset": symbol, "address": x, "balance": _plain(_from_raw(newest, a.decimals)),
                                               "credited_before": _plain(_from_raw(before[x], a.decimals)),
                                               "block_number": ev.block_number})
                    if newest < before[x]:
                        report["reductions"].append({"asset": symbol, "address": x,
                                                     "shortfall": _plain(_from_raw(before[x] - newest, a.decimals))})
        return report

    # -- revaluation -------------------------------------------------------------------------------
    def revalue(self, *, engine: Engine | None = None, as_of: datetime | None = None, progress: Any = None,
                dry_run: bool = False) -> dict[str, Any]:
        """Re-decide every position under ``engine`` (default: the ledger's) with current prices.

        Positions are re-decided account by account in the order they were first credited, each with
        the account's already re-valued holdings as its portfolio (concentration limits), the facts
        and custody evidence stored with its credit and the price read now. Quantities do not change;
        values do. A fall in an account's collateral value is a deficit (an incident)."""
        engine = engine or self.engine
        bundle = engine.bundle
        as_of = as_of or self.clock()
        positions = self.store.positions()
        total, done = len(positions), 0
        prices: dict[str, PriceEvidence] = {}
        accounts = {a.account: a for a in self.store.accounts()}
        rows = []
        for account in sorted({p.account for p in positions}):
            mine = [p for p in positions if p.account == account]
            locks = [f"account:{account}"] + [f"custody:{p.asset}:{p.address}" for p in mine]
            ctx = self.store.transaction(locks) if not dry_run else _Null()
            with ctx:
                if not dry_run:
                    mine = self.store.positions(account=account)
                before = sum((p.collateral_value_usd for p in mine), Decimal(0))
                holdings: dict[str, Decimal] = {}
                new_positions, records = [], []
                at = iso(self.clock())
                for p in sorted(mine, key=lambda p: (p.created_at, p.asset, p.address)):
                    a = bundle.assets.get(p.asset)
                    if a is None:
                        d = None
                    else:
                        if p.asset not in prices:
                            prices[p.asset] = self._price(a, account)
                        q, d = self._redecide(engine, p, prices[p.asset], holdings, as_of)
                        records.append(("decision", d["decision_id"], bundle,
                                        {"query": q.raw, "decision": d,
                                         "ledger": {"operation": "revalue", "account": account, "asset": p.asset,
                                                    "address": p.address}}))
                    new = self._revalued(p, d, at)
                    holdings[p.asset] = holdings.get(p.asset, Decimal(0)) + new.collateral_value_usd
                    new_positions.append((p, new))
                    done += 1
                    if progress:
                        progress(done)
                after = sum((n.collateral_value_usd for _, n in new_positions), Decimal(0))
                acct = accounts.get(account)
                row = {"account": account, "participant": acct.participant if acct else mine[0].participant,
                       "account_type": acct.account_type if acct else "?", "before_usd": _s(before),
                       "after_usd": _s(after), "change_usd": _s(after - before),
                       "deficit_usd": _s(max(before - after, Decimal(0))),
                       "positions": [{"asset": n.asset, "address": n.address, "quantity": _plain(n.quantity),
                                      "before_usd": _s(o.collateral_value_usd), "after_usd": _s(n.collateral_value_usd),
                                      "counts": n.collateral_value_usd > 0} for o, n in new_positions]}
                rows.append(row)
                if dry_run:
                    continue
                for o, n in new_positions:
                    self.store.put_position(n)
                    self.store.add_entry(JournalEntry(str(uuid.uuid4()), at, "revalue", o.account, o.participant, o.asset,
                                                      o.address, 0, o.decimals, n.market_value_usd - o.market_value_usd,
                                                      n.after_haircut_usd - o.after_haircut_usd,
                                                      n.collateral_value_usd - o.collateral_value_usd, n.price_usd,
                                                      n.decision_id, None, "revaluation", None))
                if after < before:
                    self.store.add_incident(Incident(str(uuid.uuid4()), at, "deficit", "critical",
                                                     f"account {account}: collateral value fell from {_s(before)} to "
                                                     f"{_s(after)} USD on revaluation (deficit {_s(before - after)})",
                                                     account, None, None, {"before_usd": _s(before), "after_usd": _s(after),
                                                                           "bundle": bundle.hash}))
                self.log.append(records)
        tb = sum((Decimal(r["before_usd"]) for r in rows), Decimal(0))
        ta = sum((Decimal(r["after_usd"]) for r in rows), Decimal(0))
        return {"operation": "revalue", "dry_run": dry_run, "as_of": iso(as_of), "bundle": bundle.hash,
                "positions": total, "accounts": rows, "total_before_usd": _s(tb), "total_after_usd": _s(ta),
                "total_deficit_usd": _s(sum((Decimal(r["deficit_usd"]) for r in rows), Decimal(0))),
                "prices": {k: {"price_usd": _s(v.price_usd), "source": v.source, "updated_at": iso(v.updated_at)}
                           for k, v in sorted(prices.items())}}

    def _redecide(self, engine: Engine, p: Position, price: PriceEvidence, holdings: Mapping[str, Decimal],
                  as_of: datetime) -> tuple[Any, dict[str, Any]]:
        doc = dict(p.facts.get("query") or {})
        doc.update({"quantity": _plain(p.quantity), "price_usd": _plain(price.price_usd), "as_of": iso(as_of),
                    "portfolio": [{"asset": a, "collateral_value_usd": _s(v)} for a, v in sorted(holdings.items())]})
        doc["evidence"] = {**dict(doc.get("evidence") or {}), "price_updated_at": iso(price.updated_at)}
        doc.pop("id", None)
        q = parse_query(doc, f"revaluation of {p.account}/{p.asset}/{p.address}")
        evidence: list[Any] = [price]
        verification = None
        if p.facts.get("custody_evidence"):
            evidence.insert(0, custody_from_json(p.facts["custody_evidence"]))
            verification = {"status": "verified"}
        return q, engine.decide(q, evidence, verification=verification).to_json()

    @staticmethod
    def _revalued(p: Position, d: dict[str, Any] | None, at: str) -> Position:
        if d is None or not d["eligible"]:
            return p.but(collateral_value_usd=Decimal(0), updated_at=at,
                         decision_id=d["decision_id"] if d else p.decision_id,
                         market_value_usd=Decimal(d["market_value_usd"]) if d and d.get("market_value_usd") else
                         p.market_value_usd, after_haircut_usd=Decimal(0),
                         price_usd=Decimal(d["price_usd"]) if d else p.price_usd)
        return p.but(market_value_usd=Decimal(d["market_value_usd"]),
                     after_haircut_usd=Decimal(d["value_after_haircut_usd"]),
                     collateral_value_usd=Decimal(d["collateral_value_usd"]), price_usd=Decimal(d["price_usd"]),
                     haircut=(d.get("haircut") or {}).get("total"), decision_id=d["decision_id"],
                     bundle_hash=d["policy"]["bundle"], updated_at=at)

    # -- views and checks --------------------------------------------------------------------------
    def holdings(self, account: str | None = None) -> list[dict[str, Any]]:
        accts = {a.account: a for a in self.store.accounts()}
        return [{"account": p.account, "participant": p.participant,
                 "account_type": accts[p.account].account_type if p.account in accts else "?", "asset": p.asset,
                 "address": p.address, "quantity": _plain(p.quantity), "price_usd": _s(p.price_usd),
                 "market_value_usd": _s(p.market_value_usd), "after_haircut_usd": _s(p.after_haircut_usd),
                 "collateral_value_usd": _s(p.collateral_value_usd), "decision_id": p.decision_id}
                for p in self.store.positions(account=account)]

    def check(self) -> list[str]:
        """Problems with the ledger: the custody invariant, positions against the journal. Empty = sound."""
        problems = []
        allocated: dict[tuple[str, str], int] = {}
        for p in self.store.positions(include_empty=True):
            if p.quantity_raw < 0:
                problems.append(f"{p.account}/{p.asset}/{p.address}: negative quantity")
            allocated[(p.asset, p.address)] = allocated.get((p.asset, p.address), 0) + p.quantity_raw
        for c in self.store.custody_states():
            held = allocated.pop((c.asset, c.address), 0)
            if held > c.balance_raw:
                problems.append(f"{c.asset} at {c.address}: {held} base units credited, verified balance "
                                f"{c.balance_raw} (block {c.block_number})")
        for (a, addr), held in allocated.items():
            if held:
                problems.append(f"{a} at {addr}: credited without a verified balance")
        sums: dict[tuple[str, str, str], list[Decimal | int]] = {}
        for e in self.store.entries():
            s = sums.setdefault((e.account, e.asset, e.address), [0, Decimal(0)])
            s[0] += e.quantity_raw
            s[1] += e.collateral_value_usd
        for p in self.store.positions(include_empty=True):
            q, v = sums.get((p.account, p.asset, p.address), [0, Decimal(0)])
            if q != p.quantity_raw or v != p.collateral_value_usd:
                problems.append(f"{p.account}/{p.asset}/{p.address}: position {p.quantity_raw} / {p.collateral_value_usd} "
                                f"differs from its journal {q} / {v}")
        return problems


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None
