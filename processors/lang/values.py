"""Run-time value rules of the language (null, kinds, comparisons) and calendar helpers.

- ``null`` on either side of a comparison gives false (also for ``!=``);
- booleans are not numbers; numbers compare numerically (int and float alike);
- values of different kinds are never equal (``==`` false, ``!=`` true) and have no order;
- only ``true`` is true in a boolean position.

>>> compare_values(">=", 3, 2.5), compare_values("==", 1, True), compare_values("!=", "a", 1)
(True, False, True)
>>> days_until_anniversary_ms("2000-02-29", 1_803_686_400_000)  # 2027-02-27
1
"""

from __future__ import annotations

import datetime as dt
import re
from functools import lru_cache
from typing import Any

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
_EPOCH = dt.date(1970, 1, 1)
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}\Z")


_NUMBER_TYPES = frozenset({int, float})


def is_number(x: Any) -> bool:
    """int or float, not bool (event values come from JSON: no other number types)."""
    return type(x) in _NUMBER_TYPES


def _kind(x: Any) -> int:
    t = type(x)
    if t is bool:
        return 1
    if t is int or t is float:
        return 2
    if t is str:
        return 3
    return 0


def arith_numbers(op: str, a: Any, b: Any) -> Any:
    """``a op b`` for two numbers (``+ - * /``); division by zero is null.

    >>> arith_numbers("/", 3, 0) is None, arith_numbers("*", 2, 1.5)
    (True, 3.0)
    """
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    return None if b == 0 else a / b


def values_equal(a: Any, b: Any) -> bool:
    ka = _kind(a)
    return ka != 0 and ka == _kind(b) and bool(a == b)


def compare_values(op: str, a: Any, b: Any) -> bool:
    """``a op b`` under the language's rules."""
    if a is None or b is None:
        return False
    if op == "==":
        return values_equal(a, b)
    if op == "!=":
        return not values_equal(a, b)
    ka = _kind(a)
    if ka != _kind(b) or ka < 2:
        return False
    if op == "<":
        return a < b  # type: ignore[no-any-return]
    if op == "<=":
        return a <= b  # type: ignore[no-any-return]
    if op == ">":
        return a > b  # type: ignore[no-any-return]
    return a >= b  # type: ignore[no-any-return]


@lru_cache(maxsize=4096)
def _parse_date(s: str) -> dt.date | None:
    if not _DATE_RE.match(s):
        return None
    try:
        return dt.date.fromisoformat(s)
    except ValueError:
        return None


def to_date(x: Any) -> dt.date | None:
    """A ``YYYY-MM-DD`` string or an epoch-ms instant as a UTC date (None if neither)."""
    if type(x) is str:
        return _parse_date(x)
    if is_number(x):
        try:
            return _EPOCH + dt.timedelta(milliseconds=int(x))
        except (OverflowError, ValueError):
            return None
    return None


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def anniversary(d: dt.date, year: int) -> dt.date:
    """d's anniversary in ``year``; Feb 29 falls on Feb 28 in non-leap years."""
    if d.month == 2 and d.day == 29 and not _is_leap(year):
        return dt.date(year, 2, 28)
    return dt.date(year, d.month, d.day)


def utc_date(ms: int) -> dt.date:
    return _EPOCH.fromordinal(_EPOCH.toordinal() + ms // DAY_MS)


def date_instant(d: dt.date) -> int:
    return (d.toordinal() - _EPOCH.toordinal()) * DAY_MS


def days_until_anniversary_ms(x: Any, now: int) -> int | None:
    d = to_date(x)
    if d is None:
        return None
    today = utc_date(now)
    try:
        ann = anniversary(d, today.year)
        if ann < today:
            ann = anniversary(d, today.year + 1)
    except ValueError:
        return None
    return (ann - today).days


def age_years_ms(x: Any, now: int) -> int | None:
    d = to_date(x)
    if d is None:
        return None
    today = utc_date(now)
    years = today.year - d.year
    try:
        if today < anniversary(d, today.year):
            years -= 1
    except ValueError:
        return None
    return years


def date_ms(x: Any) -> int | None:
    d = to_date(x)
    return None if d is None else date_instant(d)


def next_midnight(now: int) -> int:
    """The first UTC midnight strictly after ``now``."""
    return (now // DAY_MS + 1) * DAY_MS
