"""Numbers in text input (CSV cells) follow JSON's number rules (schemas/numbers.py)."""

from __future__ import annotations

import pytest

from schemas.numbers import json_float, json_int
from schemas.validation import parse_record

REFUSED = ["inf", "-inf", "Infinity", "nan", "NaN", "1_000", "1e999", "+1", ".5", "5.", "0x10",
           "١٠", "²", "1 000", "", " ", "1,5", "007"]


@pytest.mark.parametrize("text", REFUSED)
def test_refused_like_json(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not a number|is too large"):
        json_float(text)
    body = b'{"event_id":"e","type":"page_view","customer_id":"c","timestamp":1,"properties":' \
           b'{"url":"/","price":' + text.encode() + b"}}"
    good, bad = parse_record(body, 1)
    assert not good and bad, "the JSON path refuses it too"


@pytest.mark.parametrize("text", ["1.5", "1e3", "1_000", "٣", "+3", "1.0", " 2 x", "inf"])
def test_integers_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not an integer"):
        json_int(text)


def test_accepted() -> None:
    assert [json_float(t) for t in ("0", "-0.5", "12", "1e6", "2.5E-3", " 7\t")] == [
        0.0, -0.5, 12.0, 1e6, 2.5e-3, 7.0]
    assert [json_int(t) for t in ("0", "-12", "42 ")] == [0, -12, 42]
