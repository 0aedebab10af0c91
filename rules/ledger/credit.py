"""Crediting: only verified, eligible value, after haircut and limits, once.

1. Idempotency: a key already used returns the stored result (same parameters) or is refused
   (different parameters); nothing is written again (nor verified, but in ``dacp serve``, whose chain reads
   come first, off the decision worker, and whose idempotency check is ``commit``'s).
2. Evidence, outside any transaction (network; ``gather``, which touches no ledger row, so that ``dacp serve``
   runs it on the chain's own pool): the price and the custody balance on-chain, per custody address (as
   ``dacp evaluate --verify`` reads them).
3. ONE transaction (``commit``), holding the locks ``key:<k>``, ``account:<id>`` and ``custody:<asset>:<address>``:
   - the chain again (``_still_on_chain``: the verifier's ``recheck``): a reorg since the reading refuses the
     credit with reason ``reorg`` (retryable), so nothing is credited against a block that is gone;
   - the newest verified balance per address is stored; if the addresses already carry more credit
     than the chain now shows, the shortfall is flagged and the newest credits reduced first;
   - the decision: ``Engine.decide`` under the bundle in force, with the ledger's own holdings (the
     account's, its FCM's, the programme's: ``rules.ledger.positions.ledger_holdings``) for the limits;
     no caller's portfolio;
   - the invariant: the quantity asked for must be free at the addresses (verified balance minus what
     every account already has credited there), else the credit is refused (``custody.already-credited``);
   - the WHOLE quantity goes on the depositor's books: the counted part at its collateral value, the
     excess a limit excluded at zero value, with that limit on its journal line (``excluded by ...``);
   - positions, journal entries, the stored idempotency result and the log's leaves are written, and
     committed together (a crash before COMMIT leaves nothing): a ``credit`` leaf (the decision in
     format 3 with its ledger block: custody stored, journal lines), after a ``reverification`` leaf
     when the addresses showed a shortfall (``rules.ledger.journal``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Mapping

from rules.engine.decision import Decision
from rules.engine.query import MAX_QUANTITY, Query, parse_query
from rules.errors import EvidenceError, InputError
from rules.evidence import CustodyEvidence, Holdings, PriceEvidence, holdings_lines_json
from rules.ledger import customers, journal
from rules.ledger.amounts import cents, plain, to_raw
from rules.ledger.context import LedgerContext, failure_kind
from rules.ledger.journal import Movement
from rules.ledger.positions import allocated, hold_to, ledger_holdings
from rules.ledger.records import Account, Incident, JournalEntry, Position, StoredRequest
from rules.ledger.requests import ACCOUNT_TYPES, CreditRequest, check_as_of, check_key
from rules.ledger.shortfall import per_address_balances, record_balance
from rules.policy.model import Asset
from rules.values import decimal_text, identifier, units_text, utc_text


@dataclass
class Gathered:
    """What a credit read of the chains before its transaction (``gather``): no ledger row is read for it."""

    asset: Asset
    qty_raw: int
    as_of: datetime
    price: PriceEvidence | None
    price_error: EvidenceError | None
    evidence: list[Any]
    balances: dict[str, int]
    custody_ev: CustodyEvidence | None
    verification: dict[str, Any]


def credit(ctx: LedgerContext, req: CreditRequest) -> dict[str, Any]:
    """Credit ``req`` (see the module note); the result as stored under its key, with ``replayed``."""
    _checked(ctx, req)
    done = ctx.replayed(req.idempotency_key, "credit", req.fingerprint())  # a retry: no chain read at all
    if done is not None:
        return done
    return commit(ctx, req, gather(ctx, req))


def gather(ctx: LedgerContext, req: CreditRequest) -> Gathered:
    """The credit's chain I/O, touching no ledger row: bad input first, then the price and the custody
    reading. ``dacp serve`` runs it on the chain's own pool and ``commit`` on the decision worker, so a node
    that hangs stalls its credits, never eligibility."""
    asset, qty_raw = _checked(ctx, req)
    as_of = req.as_of or ctx.clock()
    price: PriceEvidence | None = None
    try:
        price = ctx.read_price(asset)
    except EvidenceError as e:  # recorded (an incident) and raised by ``commit``, after the idempotency check
        return Gathered(asset, qty_raw, as_of, None, e, [], {}, None, {})
    evidence: list[Any] = [price]
    balances: dict[str, int] = {}
    custody_ev: CustodyEvidence | None = None
    if ctx.verifier is None:
        raise InputError("crediting needs on-chain verification, but no verifier is configured", "verify")
    try:
        custody_ev = ctx.verifier.verify(asset, list(req.addresses))
        balances = per_address_balances(custody_ev)
        evidence.insert(0, custody_ev)
        verification: dict[str, Any] = {"status": "verified"}
    except EvidenceError as e:
        custody_ev = None
        verification = {"status": "failed", "reason": e.reason, "message": e.message}
    ctx.hook("verified")
    return Gathered(asset, qty_raw, as_of, price, None, evidence, balances, custody_ev, verification)


def commit(ctx: LedgerContext, req: CreditRequest, g: Gathered) -> dict[str, Any]:
    """The credit's ledger part (see the module note) on what ``gather`` read: the idempotency check, then
    one transaction (where the chain is read once more, before the decision and the commit)."""
    fp = req.fingerprint()
    done = ctx.replayed(req.idempotency_key, "credit", fp)
    if done is not None:
        return done
    customers.check(ctx.store.account(req.account), req)  # the account's participant and customer, before anything
    if g.price_error is not None:
        ctx.price_failed(g.asset, g.price_error, req.account)
        raise g.price_error
    asset, qty_raw, as_of, evidence, balances = g.asset, g.qty_raw, g.as_of, list(g.evidence), g.balances
    price, custody_ev, verification = g.price, g.custody_ev, g.verification
    assert price is not None

    locks = [f"key:{req.idempotency_key}", f"account:{req.account}"]
    locks += [f"custody:{asset.symbol}:{a}" for a in balances]
    at = ctx.now_text()
    with ctx.store.transaction(locks):
        done = ctx.replayed(req.idempotency_key, "credit", fp)  # a racing request with the same key won
        if done is not None:
            return done
        ctx.hook("locked")
        if custody_ev is not None:  # the chain again, now that no other credit can move these addresses
            verification = _still_on_chain(ctx, asset, custody_ev) or verification
            if verification["status"] != "verified":
                custody_ev, evidence = None, [price]
        known = ctx.store.account(req.account)
        account, write_account = customers.account_for(known, req, at)  # opened by its first credit
        mv = Movement(ctx.store)
        effective: dict[str, int] = {}
        if custody_ev is not None:
            for addr, bal in balances.items():
                effective[addr] = record_balance(ctx, mv, asset, addr, bal, custody_ev, at)
        query = _query(req, asset, price, as_of)
        holdings = ledger_holdings(ctx.store.positions(), req.account, req.participant, as_of=as_of,
                                   customer=account.customer, customers=ctx.store.customers())
        decided = ctx.engine.decide(query, evidence, verification=verification, holdings=holdings)
        decision = decided.to_json()
        excluded_by = _excluded_by(ctx, decision)
        free = {a: max(effective[a] - allocated(ctx.store, asset.symbol, a), 0) for a in effective}
        result = _result(req, account, decision, at, excluded_by)
        incidents = _refusal(req, asset, qty_raw, verification, decision, free, at, result)
        status = "refused" if "refusal" in result else "credited"
        if status == "credited":
            if write_account and known is None:
                ctx.store.add_account(account)
            elif write_account:
                ctx.store.set_customer(account.account, str(account.customer))
            held = ctx.store.positions(account=req.account, asset=asset.symbol)  # before this deposit
            target = Decimal(decision["holdings"]["counted_after_usd"]) - Decimal(decision["collateral_value_usd"])
            result["holding_adjusted"] = hold_to(mv, held, target, at, req.idempotency_key, decision["decision_id"])
            result["allocations"] = _allocate(mv, req, asset, decision, free, custody_ev, query, at, excluded_by)
        result["status"] = status
        result["eligible"] = decision["eligible"]
        if status != "credited":
            result["quantity_credited"] = "0"
            result["collateral_value_usd"] = "0"
        for inc in incidents:
            ctx.store.add_incident(inc)
        retryable = status == "refused" and result.get("refusal", {}).get("retryable")
        if not retryable:  # a node outage may be retried with the same key; a decision may not
            ctx.store.add_request(StoredRequest(req.idempotency_key, "credit", fp, status, result, at))
        ctx.log.append(_records(ctx, mv, req, asset, account, query, decided, result, at, holdings))
        ctx.hook("before_commit")
    return {**result, "replayed": False}


def _still_on_chain(ctx: LedgerContext, asset: Asset, ev: CustodyEvidence) -> dict[str, Any] | None:
    """None if the chain still shows what ``ev`` read (the verifier's ``recheck``: Ethereum, the pinned
    block's hash; Bitcoin, the tip, hence the UTXO set); else the failed verification (reason ``reorg``, or the
    node's failure) that refuses the credit. A verifier that cannot recheck refuses too (fail closed)."""
    recheck = getattr(ctx.verifier, "recheck", None)
    try:
        if recheck is None:
            raise EvidenceError("reorg", "the verifier cannot read the chain again before the commit")
        recheck(asset, ev)
    except EvidenceError as e:
        return {"status": "failed", "reason": e.reason, "message": e.message}
    return None


def _records(ctx: LedgerContext, mv: Movement, req: CreditRequest, asset: Asset, account: Account, query: Query,
             decided: Decision, result: Mapping[str, Any], at: str, holdings: Holdings) -> list[journal.Record]:
    """The credit's leaves: a ``reverification`` of the shortfall its custody reading found (if any), then
    the ``credit`` (the decision in format 3 and the ledger block: custody stored, the allocation's lines)."""
    out = []
    shortfalls = mv.of_kind("shortfall")
    if shortfalls:
        out.append(journal.record("reverification", journal.block(
            "reverification", at, None, shortfalls, asset=asset.symbol,
            trigger={"operation": "credit", "idempotency_key": req.idempotency_key})))
    credited = mv.of_kind("credit")
    fields: dict[str, Any] = {
        "idempotency_key": req.idempotency_key, "status": result["status"], "account": req.account,
        "participant": req.participant, "account_type": account.account_type, "asset": asset.symbol,
        "decimals": asset.decimals, "addresses": list(req.addresses),
        "quantity_requested_raw": str(to_raw(req.quantity, asset.decimals, "quantity")),
        "quantity_credited_raw": str(sum(e.quantity_raw for e in credited)),
        "collateral_value_usd": decimal_text(sum((e.collateral_value_usd for e in credited), Decimal(0))),
        "haircut": result["haircut"],  # the decision's total haircut, as the position keeps it
        "excluded_by": result["excluded_by"]}
    if account.customer is not None:  # the account's customer (the projection recomputes it from here)
        fields["customer"] = account.customer
    if "refusal" in result:
        fields["refusal"] = result["refusal"]
    lines = mv.of_kind("credit", "holding")  # the allocation, and what the whole holding gave up for it
    out.append(journal.credit_record(query, decided, ctx.bundle, journal.block("credit", at, mv, lines, **fields),
                                     holdings_lines_json(holdings)))
    return out


def _checked(ctx: LedgerContext, req: CreditRequest) -> tuple[Asset, int]:
    """The request's asset and quantity in base units; bad input before anything is read or written."""
    check_key(req.idempotency_key)
    asset = ctx.asset(req.asset)
    if req.customer is not None:
        identifier(req.customer, "customer")
    if req.account_type is not None and req.account_type not in ACCOUNT_TYPES:
        raise InputError(f"unknown account type {req.account_type!r} (use one of {', '.join(ACCOUNT_TYPES)})",
                         "account type")
    if not req.addresses:
        raise InputError("name at least one custody address", "addresses")
    if not (0 < req.quantity <= MAX_QUANTITY):
        raise InputError(f"must be greater than zero and at most {MAX_QUANTITY:,}", "quantity")
    check_as_of(req.as_of, ctx.clock(), ctx.as_of_window_s)  # the present only: membership, price at as_of
    return asset, to_raw(req.quantity, asset.decimals, "quantity")


def _refusal(req: CreditRequest, asset: Asset, qty_raw: int, verification: Mapping[str, Any],
             decision: Mapping[str, Any], free: Mapping[str, int], at: str, result: dict[str, Any]) -> list[Incident]:
    """Set ``result["refusal"]`` if the credit must be refused; the incidents that go with it."""
    if verification["status"] != "verified":
        result["refusal"] = {"code": "custody_unverified", "reason": verification["reason"],
                             "rule": "custody.onchain-verification", "retryable": True,
                             "message": verification["message"]}
        return [Incident(str(uuid.uuid4()), at, failure_kind(verification["reason"]), "warning",
                         f"credit {req.idempotency_key}: custody of {asset.symbol} not verified: "
                         f"{verification['message']}", req.account, asset.symbol,
                         ",".join(req.addresses), dict(verification))]
    if not decision["eligible"]:
        first = decision["failed_rules"][0] if decision["failed_rules"] else "ineligible"
        result["refusal"] = {"code": "not_eligible", "reason": first, "rule": first, "retryable": False,
                             "message": "not eligible: " + ", ".join(decision["failed_rules"])}
        return []
    if qty_raw > sum(free.values()):
        msg = (f"{plain(req.quantity)} {asset.symbol} asked for, but only "
               f"{units_text(sum(free.values()), asset.decimals)} is verified and not yet credited "
               f"at {', '.join(free)} (the same coins are never counted twice)")
        result["refusal"] = {"code": "already_credited", "reason": "custody.already-credited",
                             "rule": "custody.already-credited", "retryable": False, "message": msg}
        return [Incident(str(uuid.uuid4()), at, "double_count_refused", "warning", msg, req.account,
                         asset.symbol, ",".join(free),
                         {"free": {a: str(v) for a, v in free.items()}, "asked": str(qty_raw)})]
    return []


def _excluded_by(ctx: LedgerContext, d: Mapping[str, Any]) -> list[str]:
    """The limits that bound the decision (outcome ``applied``): what excluded the excess, if any."""
    if not d.get("eligible") or Decimal(d.get("excluded_by_limits_usd") or "0") <= 0:
        return []
    ids = {lim.id for lim in ctx.bundle.limits}
    return [r["rule"] for r in d.get("reasons", []) if r["rule"] in ids and r["outcome"] == "applied"]


def _result(req: CreditRequest, account: Account, d: Mapping[str, Any], at: str, excluded_by: list[str]
            ) -> dict[str, Any]:
    """The credit's result. ``quantity_credited`` is what goes on the books (the whole deposit when it is
    credited), ``quantity_counted`` what the limits count of it, ``excluded_by`` the limits that bound."""
    return {"operation": "credit", "idempotency_key": req.idempotency_key, "account": req.account,
            "participant": req.participant, "account_type": account.account_type, "customer": account.customer,
            "asset": req.asset,
            "quantity_requested": plain(req.quantity),
            "quantity_credited": plain(req.quantity),
            "quantity_counted": plain(Decimal(d.get("counted_quantity") or "0")),
            "collateral_value_usd": d.get("collateral_value_usd") or "0",
            "market_value_usd": d.get("market_value_usd"), "value_after_haircut_usd": d.get("value_after_haircut_usd"),
            "excluded_by_limits_usd": d.get("excluded_by_limits_usd"), "excluded_by": excluded_by,
            "haircut": (d.get("haircut") or {}).get("total"), "price_usd": d.get("price_usd"),
            "decision_id": d["decision_id"], "failed_rules": d.get("failed_rules", []),
            "bundle": d["policy"]["bundle"], "recorded_at": at,
            "evidence": [{k: e.get(k) for k in ("kind", "chain", "network", "block_number", "block_hash",
                                                "raw_balance", "price_usd", "source", "updated_at") if k in e}
                         for e in d.get("evidence", [])]}


def _query(req: CreditRequest, asset: Asset, price: PriceEvidence, as_of: datetime) -> Query:
    """The engine's query for the credit: the request and the price read now (the holdings are the ledger's,
    given to the engine beside it: no portfolio)."""
    custody: dict[str, Any] = {"addresses": list(req.addresses)}
    if req.custodian is not None:
        custody["custodian"] = req.custodian
    if req.segregated is not None:
        custody["segregated"] = req.segregated
    evidence = {k: v for k, v in dict(req.evidence).items() if k != "price_updated_at"}
    evidence["price_updated_at"] = utc_text(price.updated_at, "microseconds")
    doc = {"id": req.idempotency_key, "account": req.account, "participant": req.participant, "asset": asset.symbol,
           "quantity": plain(req.quantity), "price_usd": plain(price.price_usd),
           "as_of": utc_text(as_of, "microseconds"), "custody": custody, "evidence": evidence}
    return parse_query(doc, "credit request")


def _allocate(mv: Movement, req: CreditRequest, asset: Asset, d: Mapping[str, Any], free: Mapping[str, int],
              ev: CustodyEvidence | None, query: Query, at: str, excluded_by: list[str]) -> list[dict[str, Any]]:
    """Put the whole quantity on the depositor's books, address by address in the order given, within what
    is free: market value and value after haircut in proportion, the counted value likewise (the excess the
    limits excluded is on the books at zero value, its line naming the limits)."""
    qty_total = to_raw(req.quantity, asset.decimals, "quantity")
    values = {k: Decimal(d[k] or "0") for k in ("market_value_usd", "value_after_haircut_usd", "collateral_value_usd")}
    facts = {"query": query.raw, "custody_evidence": ev.to_json() if ev else None}
    reason = f"excluded by {', '.join(excluded_by)}" if excluded_by else None
    out, left = [], qty_total
    shares: list[tuple[str, int]] = []
    for addr in [a for a in free if free[a] > 0]:
        take = min(left, free[addr])
        if take > 0:
            shares.append((addr, take))
            left -= take
    assigned = {k: Decimal(0) for k in values}
    for i, (addr, take) in enumerate(shares):
        last = i == len(shares) - 1
        part = {k: v - assigned[k] if last else cents(v * take / qty_total) for k, v in values.items()}
        for k in values:
            assigned[k] += part[k]
        old = mv.store.positions(account=req.account, asset=asset.symbol, address=addr, include_empty=True)
        prev = old[0] if old else None
        pos = Position(req.account, asset.symbol, addr, req.participant,
                       (prev.quantity_raw if prev else 0) + take, asset.decimals,
                       (prev.market_value_usd if prev else Decimal(0)) + part["market_value_usd"],
                       (prev.after_haircut_usd if prev else Decimal(0)) + part["value_after_haircut_usd"],
                       (prev.collateral_value_usd if prev else Decimal(0)) + part["collateral_value_usd"],
                       Decimal(d["price_usd"]), (d.get("haircut") or {}).get("total"), d["decision_id"],
                       d["policy"]["bundle"], facts, prev.created_at if prev and prev.quantity_raw else at, at)
        mv.put_position(pos)
        mv.add_entry(JournalEntry(str(uuid.uuid4()), at, "credit", req.account, req.participant, asset.symbol,
                                  addr, take, asset.decimals, part["market_value_usd"],
                                  part["value_after_haircut_usd"], part["collateral_value_usd"],
                                  Decimal(d["price_usd"]), d["decision_id"], req.idempotency_key, reason,
                                  ev.to_json() if ev else None))
        out.append({"address": addr, "quantity": units_text(take, asset.decimals),
                    "collateral_value_usd": decimal_text(part["collateral_value_usd"])})
    return out
