"""Parser, type checker and definitions loader: accepted forms and error positions/messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from processors.lang import ast as A
from processors.lang.errors import DefinitionError
from processors.lang.load import load_definitions, parse_condition
from processors.lang.parser import parse, parse_duration, tokenize

DAY = 86_400_000


def test_precedence_and_binds_tighter_than_or() -> None:
    e = parse("true or false and not true")
    assert isinstance(e, A.Or)
    assert isinstance(e.items[1], A.And)
    assert isinstance(e.items[1].items[1], A.Not)


def test_arithmetic_precedence() -> None:
    e = parse("1 + 2 * 3 > 0")
    assert isinstance(e, A.Compare) and isinstance(e.left, A.Arith)
    assert e.left.op == "+" and isinstance(e.left.right, A.Arith) and e.left.right.op == "*"


@pytest.mark.parametrize(
    ("text", "ms"), [("10ms", 10), ("10s", 10_000), ("15m", 900_000), ("1h", 3_600_000),
                     ("30d", 30 * DAY), ("2w", 14 * DAY)],
)
def test_durations(text: str, ms: int) -> None:
    assert parse_duration(text) == ms


def test_tokens_strings_and_escapes() -> None:
    toks = tokenize(r'"a\"b" ' + "'c'")
    assert [t.value for t in toks[:2]] == ['a"b', "c"]


def test_every_construct_parses() -> None:
    e = parse_condition(
        "s",
        'count(page_view|checkout where category in ["a", "b"] and price >= 10, 7d) >= 3'
        " and sum(purchase.amount where currency == \"EUR\", 365d) > 100"
        " and avg(purchase.amount, 30d) between 10 and 50"
        " and last(email_open|email_click) within 30d and first(purchase) is not null"
        " and since(purchase) >= 90d and hour_share(purchase, 18, 23) > 0.5"
        " and days_until_anniversary(trait.birthday) <= 7 and age_years(trait.birthday) >= 18"
        ' and date(trait.signup_date) within 30d and now >= date("2026-11-20")'
        " and cart_add then no purchase within 1h and cart.value > 100"
        " and purchases.aov > 50 and -trait.x < 3 and not trait.y is null",
    )
    assert isinstance(e, A.And) and len(e.items) == 16
    then_no = e.items[11]
    assert isinstance(then_no, A.ThenNo) and then_no.within_ms == 3_600_000
    agg = e.items[0]
    assert isinstance(agg, A.Compare) and isinstance(agg.left, A.Aggregate)
    assert agg.left.events.types == ("page_view", "checkout")
    assert isinstance(agg.left.events.filter, A.And)


def test_then_no_with_filters_on_both_sides() -> None:
    e = parse("cart_add where price > 10 then no purchase where amount > 1 within 1h")
    assert isinstance(e, A.ThenNo)
    assert e.first.filter is not None and e.then.filter is not None


@pytest.mark.parametrize(
    ("text", "col", "message"),
    [
        ("count(cart_ad, 1h) > 0", 7, "unknown event type 'cart_ad' (did you mean 'cart_add'?)"),
        ('count(purchase, 30d) > "x"', 22, "cannot compare number with string"),
        ("since(purchase) > 3", 17, "cannot compare duration with number"),
        ("trait.vip", 1, "expected a condition"),
        ("count(purchase, 30d) >", 23, "expected a value, found end of condition"),
        ("x == 1", 1, "unknown name 'x'"),
        ("cart.itemz > 0", 6, "unknown field 'cart.itemz' (did you mean 'items'?)"),
        ("count(page_view where now > 1, 1d) > 0", 23, "a 'where' filter may only use"),
        ("trait.a = 1", 9, "use '==' to compare"),
        ("count(purchase, 1.5h) > 0", 17, "durations are whole numbers"),
        ("trait.a == null", 9, "use 'is null'"),
        ("count(purchase, 3x) > 0", 18, "unknown duration unit 'x'"),
        ("cnt(purchase, 1d) > 0", 1, "unknown function 'cnt' (did you mean 'count'?)"),
        ("count(alias, 1d) > 0", 7, "'alias' events cannot be selected"),
        ("page_view", 10, "an event set is not a value here"),
        ("since(purchase) in [1]", 17, "'in' of a value depending on now"),
        ("since(purchase) within 1d", 1, "'within' needs an instant"),
        ("hour_share(purchase, 18, 24) > 0", 26, "expected an hour 0-23"),
        ('last(purchase) > "2026-01-01"', 16, 'use date("YYYY-MM-DD")'),
        ("count(purchase, 1d) > 0 count(purchase, 1d) > 0", 25, "missing 'and'/'or'"),
        ('"abc', 1, "unterminated string"),
        ("trait.x between 1", 18, "expected 'and' of 'between ... and ...'"),
        ("true and 3", 10, "expected a condition (true/false), found a number"),
        ("since(purchase) * since(page_view) > 1d", 17, "cannot multiply two values"),
    ],
)
def test_condition_errors(text: str, col: int, message: str) -> None:
    with pytest.raises(DefinitionError) as info:
        parse_condition("seg", text)
    err = info.value
    assert err.segment == "seg"
    assert err.pos is not None and err.pos + 1 == col, str(err)
    assert message in err.message
    lines = str(err).splitlines()
    assert lines[0] == f"segment 'seg': condition col {col}: {err.message}"
    assert lines[1] == f"    {text}"
    assert lines[2] == "    " + " " * (col - 1) + "^"


def test_rendering_matches_the_documented_example() -> None:
    with pytest.raises(DefinitionError) as info:
        parse_condition("abandoned_cart", "cart.items > 0 and count(cart_ad, 1h) > 0")
    assert str(info.value).splitlines()[0] == (
        "segment 'abandoned_cart': condition col 26: unknown event type 'cart_ad' "
        "(did you mean 'cart_add'?)"
    )


GOOD = """
version: "7"
settings: {allowed_lateness: 2h}
segments:
  - name: buyers
    description: Bought in 30 days
    condition: count(purchase, 30d) > 0
    tags: [purchase]
  - name: dormant
    description: Disabled
    condition: "true"
    enabled: false
"""


def test_load_good_file() -> None:
    cat = load_definitions(GOOD)
    assert cat.version == "7" and cat.allowed_lateness_ms == 7_200_000
    assert [s.name for s in cat.segments] == ["buyers", "dormant"]
    assert cat.segments[0].tags == ("purchase",) and not cat.segments[1].enabled


def test_load_from_path(tmp_path: Path) -> None:
    p = tmp_path / "defs.yaml"
    p.write_text(GOOD)
    assert load_definitions(p).version == "7"
    assert load_definitions(str(p)).version == "7"


def _seg(body: str) -> str:
    return 'version: "1"\nsegments:\n  - ' + body.replace("\n", "\n    ")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (_seg("name: Bad\ndescription: d\ncondition: 'true'"), "must match [a-z][a-z0-9_]*"),
        (_seg("name: a\ncondition: 'true'"), "definitions:3: segment 'a': description: required"),
        (_seg("name: a\ndescription: d\ncondition: 'true'\ncolour: red"), "unknown key 'colour'"),
        (_seg("name: a\ndescription: d\ncondition: 'true'\nenabled: yes please"),
         "segment 'a': enabled: must be true or false"),
        (_seg("name: a\ndescription: d\ncondition: 'true'\n- name: a\n"
              "description: d\ncondition: 'true'").replace("\n    - ", "\n  - "),
         "definitions:6: segment 'a': name: duplicate segment name (first on line 3)"),
        ('version: "1"\nsettings: {allowed_lateness: soon}\nsegments: []', "allowed_lateness"),
        ('version: "1"\nsegments: []', "segments must be a non-empty list"),
        ("segments: [{name: a, description: d, condition: 'true'}]", "version is required"),
        ('version: "1"\nsegmnts: []', "unknown key 'segmnts' in the file (did you mean"),
        ("version: [", "not valid YAML"),
    ],
)
def test_load_errors(doc: str, message: str) -> None:
    with pytest.raises(DefinitionError) as info:
        load_definitions(doc)
    assert message in str(info.value)
