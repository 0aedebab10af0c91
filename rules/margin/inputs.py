"""Requirements files: what the DCOs require of each account, and collateral held off the ledger.

CSV (a header line, then one row per record; which records a file holds is told by its header):

- requirements: ``account,dco,business_day,requirement_usd[,net_of_offsets]``. ``business_day`` is
  YYYY-MM-DD and must be a business day of that DCO's calendar (the margin policy's ``calendars``);
  ``requirement_usd`` a plain decimal (``2500000.00``); ``net_of_offsets`` ``true`` when the DCO's figure
  is already net of its own offsets (spread credits, its own cross-margin), else ``false`` (the default);
- off-ledger collateral: ``account,holding,class,as_of,amount_usd,face_value_usd,price_pct,maturity,cusip``;
  ``class`` is ``cash`` (``amount_usd``) or ``us-treasury`` (``face_value_usd``, ``price_pct``: the clean
  price in percent of face, ``maturity`` YYYY-MM-DD, ``cusip``); a field a class does not use stays empty.

JSON: ``{"requirements": [{...}], "collateral": [{...}]}`` (either or both), objects with the same fields,
money as decimal *strings*, ``net_of_offsets`` true/false. Every record is checked before anything is
stored; a bad one is an ``InputError`` naming the file, its line (CSV) or index (JSON) and the field.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

from rules.errors import InputError
from rules.margin.policy import MarginPolicy
from rules.margin.records import OffLedger, Requirement
from rules.values import decimal_value, identifier

REQUIREMENT_FIELDS = ("account", "dco", "business_day", "requirement_usd", "net_of_offsets",
                      "cross_margin_reduction_usd")
PROFILE_FIELDS = ("account", "agreement_on_file", "agreement_id", "designated", "futures", "cash_treasuries")
FUTURE_FIELDS = ("contract", "dco", "quantity")
CASH_FIELDS = ("cusip", "cleared_by", "face_value_usd")
COLLATERAL_FIELDS = ("account", "holding", "class", "as_of", "amount_usd", "face_value_usd", "price_pct", "maturity",
                     "cusip")
CLASSES = ("cash", "us-treasury")
MAX_BYTES = 64 * 1024 * 1024
MAX_USD_DIGITS = 15


class Parsed:
    """What a file holds, checked: its requirements and off-ledger collateral, its name and sha256."""

    def __init__(self, source: str, sha256: str, requirements: list[Requirement], collateral: list[OffLedger],
                 profiles: list[dict[str, Any]] | None = None):
        self.profiles = profiles or []
        self.source = source
        self.sha256 = sha256
        self.requirements = requirements
        self.collateral = collateral


def _day(text: Any, where: str) -> date:
    if not isinstance(text, str) or len(text) != 10:
        raise InputError("must be a date, YYYY-MM-DD", where)
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InputError(f"{text!r} is not a real date (YYYY-MM-DD)", where) from None


def _usd(text: Any, where: str) -> Decimal:
    return decimal_value(text, where, int_digits=MAX_USD_DIGITS, fraction_digits=2)


def _flag(value: Any, where: str) -> bool:
    if value in (None, "", False, "false"):
        return False
    if value in (True, "true"):
        return True
    raise InputError("must be true or false", where)


def requirement(rec: dict[str, Any], where: str, policy: MarginPolicy) -> Requirement:
    unknown = sorted(set(rec) - set(REQUIREMENT_FIELDS))
    if unknown:
        raise InputError(f"unknown field(s) {', '.join(unknown)} (a requirement has {', '.join(REQUIREMENT_FIELDS)})",
                         where)
    for f in REQUIREMENT_FIELDS[:4]:
        if rec.get(f) in (None, ""):
            raise InputError("is missing", f"{where}: {f}")
    account = identifier(rec["account"], f"{where}: account")
    dco = identifier(rec["dco"], f"{where}: dco")
    cal = policy.calendar(dco, f"{where}: dco")
    day = _day(rec["business_day"], f"{where}: business_day")
    if not cal.is_business_day(day):
        raise InputError(f"{day} is not a business day of {dco} (a weekend or one of its holidays)",
                         f"{where}: business_day")
    cut = rec.get("cross_margin_reduction_usd")
    return Requirement(account, dco, day, _usd(rec["requirement_usd"], f"{where}: requirement_usd"),
                       _flag(rec.get("net_of_offsets"), f"{where}: net_of_offsets"),
                       Decimal(0) if cut in (None, "") else _usd(cut, f"{where}: cross_margin_reduction_usd"))


def _fields(rec: Any, fields: tuple[str, ...], where: str, what: str) -> dict[str, Any]:
    if not isinstance(rec, dict):
        raise InputError(f"must be an object ({what})", where)
    unknown = sorted(set(rec) - set(fields))
    if unknown:
        raise InputError(f"unknown field(s) {', '.join(unknown)} ({what} has {', '.join(fields)})", where)
    return rec


def profile(rec: Any, where: str) -> dict[str, Any]:
    """A cross-margin profile, checked and normalised (facts the programme's rules read: rules.engine.cross_margin)."""
    rec = _fields(rec, PROFILE_FIELDS, where, "a cross-margin profile")
    out: dict[str, Any] = {"account": identifier(rec.get("account"), f"{where}: account")}
    for f in ("agreement_on_file", "designated"):
        if not isinstance(rec.get(f), bool):
            raise InputError("must be true or false", f"{where}: {f}")
        out[f] = rec[f]
    if rec.get("agreement_id") is not None:
        out["agreement_id"] = identifier(rec["agreement_id"], f"{where}: agreement_id")
    futures = []
    for i, f in enumerate(rec.get("futures") or []):
        w = f"{where}: futures[{i}]"
        f = _fields(f, FUTURE_FIELDS, w, "a futures position")
        q = f.get("quantity")
        neg = isinstance(q, str) and q.startswith("-")
        size = decimal_value(q[1:] if neg else q, f"{w}: quantity", int_digits=12, fraction_digits=0)
        futures.append({"contract": identifier(f.get("contract"), f"{w}: contract"),
                        "dco": identifier(f.get("dco"), f"{w}: dco"), "quantity": ("-" if neg else "") + str(size)})
    cash = []
    for i, t in enumerate(rec.get("cash_treasuries") or []):
        w = f"{where}: cash_treasuries[{i}]"
        t = _fields(t, CASH_FIELDS, w, "a cash Treasury position")
        cash.append({"cusip": identifier(t.get("cusip"), f"{w}: cusip"),
                     "cleared_by": identifier(t.get("cleared_by"), f"{w}: cleared_by"),
                     "face_value_usd": str(_usd(t.get("face_value_usd"), f"{w}: face_value_usd"))})
    out["futures"], out["cash_treasuries"] = futures, cash
    return out


def collateral(rec: dict[str, Any], where: str) -> OffLedger:
    unknown = sorted(set(rec) - set(COLLATERAL_FIELDS))
    if unknown:
        raise InputError(f"unknown field(s) {', '.join(unknown)} (collateral has {', '.join(COLLATERAL_FIELDS)})",
                         where)
    for f in ("account", "holding", "class", "as_of"):
        if rec.get(f) in (None, ""):
            raise InputError("is missing", f"{where}: {f}")
    cls = rec["class"]
    if cls not in CLASSES:
        raise InputError(f"{cls!r} is not a class of off-ledger collateral ({', '.join(CLASSES)})", f"{where}: class")
    needs = ("amount_usd",) if cls == "cash" else ("face_value_usd", "price_pct", "maturity", "cusip")
    unused = [f for f in ("amount_usd", "face_value_usd", "price_pct", "maturity", "cusip")
              if f not in needs and rec.get(f) not in (None, "")]
    if unused:
        raise InputError(f"{', '.join(unused)} is not used by class {cls} (leave it empty)", where)
    for f in needs:
        if rec.get(f) in (None, ""):
            raise InputError(f"is missing (class {cls} needs {', '.join(needs)})", f"{where}: {f}")
    out = dict(account=identifier(rec["account"], f"{where}: account"),
               holding=identifier(rec["holding"], f"{where}: holding"), cls=cls,
               as_of=_day(rec["as_of"], f"{where}: as_of"))
    if cls == "cash":
        return OffLedger(**out, amount_usd=_usd(rec["amount_usd"], f"{where}: amount_usd"))
    cusip = rec["cusip"]
    if not (isinstance(cusip, str) and len(cusip) == 9 and cusip.isalnum() and cusip.isascii()):
        raise InputError("a CUSIP is 9 ASCII letters and digits", f"{where}: cusip")
    price = decimal_value(rec["price_pct"], f"{where}: price_pct", int_digits=4, fraction_digits=8)
    return OffLedger(**out, face_value_usd=_usd(rec["face_value_usd"], f"{where}: face_value_usd"), price_pct=price,
                     maturity=_day(rec["maturity"], f"{where}: maturity"), cusip=cusip.upper())


def _csv_records(text: str, name: str) -> tuple[str, Iterator[tuple[str, dict[str, Any]]]]:
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise InputError("the file is empty", name) from None
    kind = "requirements" if "requirement_usd" in header else "collateral" if "class" in header else None
    if kind is None:
        raise InputError("the header names neither requirements (account,dco,business_day,requirement_usd) nor "
                         "collateral (account,holding,class,...)", f"{name}:1")
    if len(set(header)) != len(header):
        raise InputError("a column is named twice", f"{name}:1")

    def rows() -> Iterator[tuple[str, dict[str, Any]]]:
        for row in reader:
            where = f"{name}:{reader.line_num}"
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise InputError(f"{len(row)} values for {len(header)} columns", where)
            yield where, {h: c.strip() for h, c in zip(header, row)}
    return kind, rows()


def parse_text(text: str, name: str, policy: MarginPolicy) -> Parsed:
    """The records of a requirements file's ``text`` (CSV or JSON: JSON starts with ``{``), every one checked."""
    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    reqs: list[Requirement] = []
    cols: list[OffLedger] = []
    profiles: list[dict[str, Any]] = []
    if text.lstrip().startswith("{"):
        try:
            doc = json.loads(text, parse_float=Decimal)  # a number is refused by its field: money is text
        except json.JSONDecodeError as e:
            raise InputError(f"not valid JSON: {e.msg}", f"{name}:{e.lineno}:{e.colno}") from None
        unknown = (sorted(set(doc) - {"requirements", "collateral", "cross_margin"}) if isinstance(doc, dict)
                   else ["a non-object"])
        if unknown or not doc:
            raise InputError("a requirements file holds \"requirements\", \"collateral\" and/or \"cross_margin\" "
                             "(lists of objects)"
                             + (f", not {', '.join(unknown)}" if unknown else ""), name)
        for part in ("requirements", "collateral", "cross_margin"):
            items = doc.get(part, [])
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                raise InputError("must be a list of objects", f"{name}: {part}")
            for i, rec in enumerate(items):
                where = f"{name}: {part}[{i}]"
                if part == "requirements":
                    reqs.append(requirement(rec, where, policy))
                elif part == "collateral":
                    cols.append(collateral(rec, where))
                else:
                    profiles.append(profile(rec, where))
    else:
        kind, rows = _csv_records(text, name)
        for where, rec in rows:
            if kind == "requirements":
                reqs.append(requirement(rec, where, policy))
            else:
                cols.append(collateral(rec, where))
    seen: dict[tuple, str] = {}
    for r in reqs:
        key = (r.account, r.dco, r.business_day)
        if key in seen:
            raise InputError(f"requirement of {r.account} at {r.dco} on {r.business_day} given twice", name)
        seen[key] = name
    held = {(c.account, c.holding) for c in cols}
    if len(held) != len(cols):
        raise InputError("a holding of an account is given twice", name)
    if len({p["account"] for p in profiles}) != len(profiles):
        raise InputError("a cross-margin profile of an account is given twice", name)
    if not reqs and not cols and not profiles:
        raise InputError("the file holds no requirement, collateral or cross-margin profile", name)
    return Parsed(name, sha, reqs, cols, profiles)


def parse_file(path: Path, policy: MarginPolicy) -> Parsed:
    try:
        if path.stat().st_size > MAX_BYTES:
            raise InputError(f"larger than {MAX_BYTES // (1024 * 1024)} MB", str(path))
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror or e}", str(path)) from None
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text", str(path)) from None
    return parse_text(text, str(path), policy)
