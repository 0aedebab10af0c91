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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import holidays

# name -> what it is (the policy language's words; the keys are the holidays package's market codes)
CALENDARS: dict[str, str] = {
    "XSIF": "SIFMA US bond market (recommended full closes)",
    "XFED": "Federal Reserve (US federal holidays as observed)",
    "XNYS": "New York Stock Exchange",
}
DEFAULT_CALENDAR = "XSIF"
_DAY = timedelta(days=1)
MAX_SPAN_DAYS = 3_660  # ten years: beyond, holidays are not looked up (each year of them costs time to build)


@lru_cache(maxsize=8)
def _holidays(calendar: str) -> "holidays.HolidayBase":
    import holidays  # here: ~50 ms of import, paid only when a business-day fact is counted (start-up time)

    if calendar not in CALENDARS:
        raise ValueError(f"unknown business-day calendar {calendar!r} (known: {', '.join(CALENDARS)})")
    return holidays.financial_holidays(calendar)


def is_business_day(calendar: str, day: date) -> bool:
    return day.weekday() < 5 and day not in _holidays(calendar)


def weekdays_between(start: date, end: date) -> int:
    """Weekdays in (start, end], start <= end, in constant time."""
    span = (end - start).days
    weeks, rest = divmod(span, 7)
    first = start.weekday()
    return weeks * 5 + sum(1 for k in range(1, rest + 1) if (first + k) % 7 < 5)


@lru_cache(maxsize=4096)
def business_days_between(calendar: str, start: date, end: date) -> int:
    """Business days in (start, end]; negative (those in (end, start]) when start is after end. A span over
    ``MAX_SPAN_DAYS`` counts its weekdays, holidays left out: at least the true count, so an age stays
    conservative (the only use of such a span is to fail an at_most check), and a far-off date typed by
    mistake costs no holiday tables."""
    if start > end:
        return -business_days_between(calendar, end, start)
    if (end - start).days > MAX_SPAN_DAYS:
        return weekdays_between(start, end)
    n, d = 0, start + _DAY
    while d <= end:
        if is_business_day(calendar, d):
            n += 1
        d += _DAY
    return n
