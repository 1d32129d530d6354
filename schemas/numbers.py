"""Numbers written as text (CSV cells), read by the rules of JSON numbers.

The JSON path (:func:`schemas.validation.parse_record`) refuses ``NaN``, ``Infinity``, numbers
that overflow to infinity, ``1_000``, ``+1``, ``.5`` and non-ASCII digits; text input must not
let through what JSON would refuse, so :func:`json_int` and :func:`json_float` accept exactly
a JSON number (surrounding blanks aside) and raise ``ValueError`` otherwise.

>>> json_int("42"), json_float("-2.5e3"), json_float("7")
(42, -2500.0, 7.0)
>>> json_float("inf")
Traceback (most recent call last):
...
ValueError: 'inf' is not a number (write digits as in JSON: 12, -3.5, 1e6)
"""

from __future__ import annotations

import math
import re
from typing import Final

_INT: Final = re.compile(r"-?(?:0|[1-9][0-9]*)\Z")
_NUMBER: Final = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?\Z")
_BLANKS: Final = " \t\r\n"  # JSON's whitespace


def json_int(text: str) -> int:
    """``text`` as an integer written as in JSON (``12``, ``-3``); ValueError otherwise.

    >>> json_int("1_000")
    Traceback (most recent call last):
    ...
    ValueError: '1_000' is not an integer (write digits as in JSON: 12, -3)
    """
    s = text.strip(_BLANKS)
    if not _INT.match(s):
        raise ValueError(f"{text!r} is not an integer (write digits as in JSON: 12, -3)")
    return int(s)


def json_float(text: str) -> float:
    """``text`` as a finite number written as in JSON (``12``, ``-3.5``, ``1e6``)."""
    s = text.strip(_BLANKS)
    if not _NUMBER.match(s):
        raise ValueError(f"{text!r} is not a number (write digits as in JSON: 12, -3.5, 1e6)")
    value = float(s)
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is too large (the number is infinity as a double)")
    return value
