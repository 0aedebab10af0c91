"""An account's customer: who the limits ``across: customer`` count together.

A credit may name the customer of its account (``CreditRequest.customer``, an identifier). The first
credited credit that names one fixes it for the account: it is stored with the account
(``ledger_accounts.customer``) and in the credit's leaf (its ledger block's ``customer``), so that the
projection (``dacp ledger check``) recomputes it from the log. A later credit may name the same customer or
none; one naming another is refused (``CustomerMismatchError``), before anything is verified or written.

An account whose customer is not named is its own customer: a limit across a customer counts its own
positions only (``rules.ledger.positions.ledger_holdings``), the tightest reach there is, rather than nothing.
"""

from __future__ import annotations

from rules.errors import CustomerMismatchError, InputError
from rules.ledger.records import Account
from rules.ledger.requests import DEFAULT_ACCOUNT_TYPE, CreditRequest


def check(known: Account | None, req: CreditRequest) -> None:
    """Refuse a credit that contradicts the account's participant or customer (nothing written yet)."""
    if known is None:
        return
    if known.participant != req.participant:
        raise InputError(f"account {req.account} belongs to {known.participant}, not {req.participant}", "account")
    if req.customer is not None and known.customer is not None and req.customer != known.customer:
        raise CustomerMismatchError(req.account, known.customer, req.customer)


def account_for(known: Account | None, req: CreditRequest, at: str) -> tuple[Account, bool]:
    """The account as it is after the credit (opened by it, or its customer named by it when it had none),
    and whether its row must be written (a new account, or its customer named now)."""
    check(known, req)
    if known is None:
        return Account(req.account, req.participant, req.account_type or DEFAULT_ACCOUNT_TYPE, at, req.customer), True
    if req.account_type is not None and req.account_type != known.account_type:
        raise InputError(f"account {req.account} is a {known.account_type} account, not {req.account_type}",
                         "account type")
    if known.customer is None and req.customer is not None:
        return Account(known.account, known.participant, known.account_type, known.created_at, req.customer), True
    return known, False
