"""Business days: the holiday calendars a policy may count in, from the maintained ``holidays`` package.

Why ``holidays`` and not ``exchange_calendars``: the ages the policy counts (a fund's NAV, a reserve
attestation) follow the US bond market and the Federal Reserve, not an exchange's trading sessions;
``holidays`` ships SIFMA's recommended US bond-market closes (``XSIF``) and the Federal Reserve's (``XFED``,
the US federal holidays as observed), is pure Python with no pandas, and answers by day, which is all a
policy needs. ``exchange_calendars`` has stock exchanges only (no SIFMA calendar) and brings pandas.

A business day is a weekday that is not a holiday of the calendar. The age of a date at a day is the
number of business days after it up to and including the day (Friday's NAV on the Tuesday after Memorial
Day is 1 business day old); a date after the day counts negative.
"""

from __future__ import annotations

from datetime import date, timedelta
from functools import lru_cache

import holidays

# name -> what it is (the policy language's words; the keys are the holidays package's market codes)
CALENDARS: dict[str, str] = {
    "XSIF": "SIFMA US bond market (recommended full closes)",
    "XFED": "Federal Reserve (US federal holidays as observed)",
    "XNYS": "New York Stock Exchange",
}
DEFAULT_CALENDAR = "XSIF"
_DAY = timedelta(days=1)
MAX_SPAN_DAYS = 36_600  # a hundred years: beyond, a date is a typo, and counting it would only cost time


@lru_cache(maxsize=8)
def _holidays(calendar: str) -> holidays.HolidayBase:
    if calendar not in CALENDARS:
        raise ValueError(f"unknown business-day calendar {calendar!r} (known: {', '.join(CALENDARS)})")
    return holidays.financial_holidays(calendar)


def is_business_day(calendar: str, day: date) -> bool:
    return day.weekday() < 5 and day not in _holidays(calendar)


@lru_cache(maxsize=4096)
def business_days_between(calendar: str, start: date, end: date) -> int:
    """Business days in (start, end]; negative (those in (end, start]) when start is after end. Spans over
    ``MAX_SPAN_DAYS`` count at five business days a week, holidays ignored (a conservative upper bound
    for an age: the only use of such a span is to fail an at_most check)."""
    if start > end:
        return -business_days_between(calendar, end, start)
    span = (end - start).days
    if span > MAX_SPAN_DAYS:
        return span * 5 // 7
    n, d = 0, start + _DAY
    while d <= end:
        if is_business_day(calendar, d):
            n += 1
        d += _DAY
    return n
