"""Daily closes for a backtest: read from a CSV, checked line by line (every problem names the file and
line), kept as ``Decimal`` by UTC day."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path

from rules.errors import InputError

MAX_PRICE_FILE_BYTES = 50_000_000


@dataclass(frozen=True)
class PriceSeries:
    """Daily closes in US dollars, by UTC day, strictly increasing dates."""

    source: str
    dates: tuple[date, ...]
    closes: tuple[Decimal, ...]
    asset: str | None = None  # the file's ``asset`` column (one symbol on every row); None: the file names none

    def check_asset(self, asset: str) -> None:
        """Refuse a series of another asset, or one that names none (fail closed: a backtest of ETH against
        Bitcoin's prices would say COVERS about the wrong market)."""
        if self.asset is None:
            raise InputError(f"the price file names no asset; a backtest of {asset} needs a file whose 'asset' "
                             f"column says {asset} on every row", self.source)
        if self.asset != asset.upper():
            raise InputError(f"the price file is a series of {self.asset}, not {asset}: refusing to backtest "
                             f"{asset} against another asset's prices", self.source)

    def close_on(self) -> dict[date, Decimal]:
        return dict(zip(self.dates, self.closes))


def load_prices(path: str | Path) -> PriceSeries:
    """Read a CSV of daily closes: a header with ``date``, ``close_usd`` (or ``close``) and ``asset`` (the
    symbol, the same on every row: the file names its asset), one row per UTC day.

    Every problem is an ``InputError`` naming the file and line: a missing column, a bad date, a price that
    is not a positive decimal, a date repeated or out of order."""
    p = Path(path)
    where = str(path)
    if not p.is_file():
        raise InputError("no such price file", where)
    if p.stat().st_size > MAX_PRICE_FILE_BYTES:
        raise InputError(f"the price file is larger than {MAX_PRICE_FILE_BYTES} bytes", where)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError("the price file is not UTF-8 text", where) from None
    return parse_prices(text, where)


def parse_prices(text: str, where: str) -> PriceSeries:
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise InputError("the price file is empty", where) from None
    if "date" not in header:
        raise InputError(f"line 1: no 'date' column (columns: {', '.join(header) or 'none'})", where)
    col = next((c for c in ("close_usd", "close") if c in header), None)
    if col is None:
        raise InputError(f"line 1: no 'close_usd' column (columns: {', '.join(header)})", where)
    di, ci = header.index("date"), header.index(col)
    ai = header.index("asset") if "asset" in header else None
    asset: str | None = None
    dates: list[date] = []
    closes: list[Decimal] = []
    for n, row in enumerate(reader, 2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) <= max(di, ci, ai or 0):
            raise InputError(f"line {n}: expected {len(header)} columns, found {len(row)}", where)
        try:
            day = date.fromisoformat(row[di].strip())
        except ValueError:
            raise InputError(f"line {n}: {row[di]!r} is not a date (YYYY-MM-DD)", where) from None
        if ai is not None:
            sym = row[ai].strip().upper()
            if not sym:
                raise InputError(f"line {n}: the asset column is empty", where)
            if asset is not None and sym != asset:
                raise InputError(f"line {n}: asset {sym}, but the file's earlier rows are {asset}: one asset a file",
                                 where)
            asset = sym
        raw = row[ci].strip()
        try:
            price = Decimal(raw)
        except InvalidOperation:
            raise InputError(f"line {n}: {raw!r} is not a decimal number", where) from None
        if not price.is_finite() or price <= 0:
            raise InputError(f"line {n}: the close must be a positive number, not {raw!r}", where)
        if dates and day <= dates[-1]:
            what = "repeated" if day == dates[-1] else f"out of order (after {dates[-1]})"
            raise InputError(f"line {n}: the date {day} is {what}; dates must be strictly increasing", where)
        dates.append(day)
        closes.append(price)
    if len(dates) < 2:
        raise InputError("the price file needs at least two days of closes", where)
    return PriceSeries(where, tuple(dates), tuple(closes), asset)
