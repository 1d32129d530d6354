"""Definition errors: limits (nesting, ASCII digits, dates, version, duplicate keys), every
error of a file at once with its file name, line and key, and the CLI's output for them."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from processors.engine import Engine
from processors.lang.compile import compile_catalogue
from processors.lang.errors import CombinedDefinitionError, DefinitionError
from processors.lang.load import load_definitions, parse_condition
from processors.lang.parser import MAX_DEPTH, depth, parse
from processors.lang.typesfile import load_types
from stream.cli import main

T0 = 1_798_761_600_000  # 2027-01-01T00:00:00Z
D = 86_400_000


def doc(*conditions: str) -> str:
    body = "".join(f"  - name: s{i}\n    description: d\n    condition: '{c}'\n"
                   for i, c in enumerate(conditions))
    return f'version: "1"\nsegments:\n{body}'


def error_of(text: str) -> DefinitionError:
    with pytest.raises(DefinitionError) as info:
        parse_condition("s", text)
    return info.value


# --- nesting ------------------------------------------------------------------------------------
TOO_DEEP = {
    "parentheses": "(" * 110 + "true" + ")" * 110,
    "sum": "count(purchase, 1d)" + " + 1" * 500 + " > 0",
    "unary minus": "-" * 500 + "count(purchase, 1d) > 0",
    "not": "not " * 500 + "true",
    "date arguments": "date(" * 200 + '"2026-01-01"' + ")" * 200 + " < now",
    "filter": "count(page_view where price" + " + 1" * 300 + " > 0, 1d) > 0",
}


@pytest.mark.parametrize("text", TOO_DEEP.values(), ids=TOO_DEEP.keys())
def test_too_deep_is_a_definition_error(text: str) -> None:
    err = error_of(text)
    assert err.message == f"expression nested too deeply (max {MAX_DEPTH} levels)"
    assert err.pos is not None and 0 <= err.pos < len(text)


def _limit_cases() -> dict[str, str]:
    """Conditions whose syntax tree is exactly MAX_DEPTH levels deep."""
    n = MAX_DEPTH
    nest_andor = "".join("(count(purchase, 1d) > 0 or " if i % 2 else
                         "(count(page_view, 1d) > 0 and " for i in range(n - 2))
    return {
        # Compare > n-2 Arith > Aggregate
        "sum": "count(purchase, 1d)" + " + 1" * (n - 2) + " > 0",
        # Compare > Neg x (n-2) > Aggregate (an even count of minuses)
        "unary minus": "-" * (n - 2) + "count(purchase, 1d) > 0",
        # Not x (n-2) > Compare > Aggregate
        "not": "not " * (n - 2) + "count(purchase, 1d) > 0",
        # And/Or x (n-2) > IsNull > Literal
        "and/or": nest_andor + "null is null" + ")" * (n - 2),
        # Compare > Arith x (n-2) > Since, linear in now (next-change instants)
        "since": "since(purchase)" + " + 1d" * (n - 2) + " > 500d",
        # Compare > DateFunc x (n-2) > Literal
        "date": "date(" * (n - 2) + '"2026-01-01"' + ")" * (n - 2) + " < now",
        # Compare > Aggregate > filter: Compare > Arith x (n-4) > PropRef
        "filter": "count(purchase where amount" + " + 1" * (n - 4) + " > 0, 1d) > 0",
    }


@contextmanager
def stack_budget(frames: int) -> Iterator[None]:
    """Fail with RecursionError if the body needs more than ``frames`` more frames."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack(0)) + frames)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


@pytest.mark.parametrize("text", _limit_cases().values(), ids=_limit_cases().keys())
def test_conditions_at_the_limit_compile_and_evaluate(text: str) -> None:
    with stack_budget(600):  # parsing 50 levels of parentheses needs ~450
        cat = load_definitions(doc(text))
    assert depth(cat.segments[0].condition) == MAX_DEPTH
    with stack_budget(350):  # compile + evaluate need ~210 frames at this depth
        engine = Engine(compile_catalogue(cat))
        buy = {"event_id": "e1", "type": "purchase", "customer_id": "c", "anonymous_id": None,
               "timestamp": T0, "source": "t", "schema_version": 1,
               "properties": {"order_id": "o", "amount": 5.0, "currency": "EUR"}}
        step = engine.apply(engine.new_state("c", T0), buy, T0)
        engine.advance(step.state, T0 + 600 * D)


def test_one_level_more_is_refused() -> None:
    assert depth(parse("count(purchase, 1d)" + " + 1" * (MAX_DEPTH - 2) + " > 0")) == MAX_DEPTH
    err = error_of("count(purchase, 1d)" + " + 1" * (MAX_DEPTH - 1) + " > 0")
    assert "nested too deeply" in err.message
    assert "nested too deeply" in error_of("(" * (MAX_DEPTH + 1) + "true" + ")" * (MAX_DEPTH + 1)
                                           ).message
    parse("(" * MAX_DEPTH + "true" + ")" * MAX_DEPTH)


# --- digits and dates ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "col", "char"),
    [("count(purchase, 30d) >= ²", 25, "²"), ("since(purchase) > ٣h", 19, "٣"),
     ("count(purchase, ３d) > 0", 17, "３"), ("hour_share(purchase, ١, 2) > 0", 22, "١")],
)
def test_only_ascii_digits(text: str, col: int, char: str) -> None:
    err = error_of(text)
    assert err.pos is not None and err.pos + 1 == col
    assert err.message == f"unexpected character {char!r}"


def test_lateness_with_non_ascii_digits_is_refused() -> None:
    with pytest.raises(DefinitionError, match="allowed_lateness must be a duration"):
        load_definitions('version: "1"\nsettings: {allowed_lateness: ٣h}\n'
                         "segments: [{name: a, description: d, condition: 'true'}]")


@pytest.mark.parametrize("call", ['date("2024-02-30")', 'date("2024-2-3")',
                                  'days_until_anniversary("2023-02-29")', 'age_years("x")',
                                  'date("٢٠٢٤-٠١-٠١")'])
def test_impossible_dates_are_refused(call: str) -> None:
    text = f"now > {call}" if call.startswith("date") else f"{call} > 1"
    err = error_of(text)
    assert "is not a date (YYYY-MM-DD" in err.message
    assert err.pos == text.index('("') + 1


def test_real_dates_load() -> None:
    parse_condition("s", 'now > date("2024-02-29") and age_years("2000-02-29") > 1')


# --- file-level rules ---------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "example"), [("1", "1"), ("1.5", "1.5"),
                                                ("2026-11-23", "2026-11-23.1"),
                                                ("true", "2026-11-23.1")])
def test_version_must_be_a_string(value: str, example: str) -> None:
    with pytest.raises(DefinitionError) as info:
        load_definitions(doc("true").replace('version: "1"', f"version: {value}"))
    assert str(info.value) == (
        f'definitions:1: version must be a string: quote it (version: "{example}")')


def test_duplicate_keys_are_refused_with_their_lines() -> None:
    text = ('version: "1"\nsegments:\n  - name: a\n    description: d\n'
            "    condition: 'true'\n    condition: 'false'\nversion: \"2\"\n")
    with pytest.raises(CombinedDefinitionError) as info:
        load_definitions(text, name="defs.yaml")
    assert str(info.value).splitlines() == [
        "defs.yaml:6: duplicate key 'condition' (first on line 5)",
        "defs.yaml:7: duplicate key 'version' (first on line 1)",
    ]


def test_merge_keys_are_not_duplicates() -> None:
    text = ('version: "1"\nbase: &b {description: d, condition: "true"}\n'
            "segments:\n  - {<<: *b, name: a, condition: 'false'}\n")
    with pytest.raises(DefinitionError) as info:  # only the unknown key `base`
        load_definitions(text)
    assert str(info.value).startswith("definitions:2: unknown key 'base' in the file")


# --- labels, lines, all errors at once ---------------------------------------------------------
BAD = """version: "1"
segments:
  - name: a
    description: ""
    condition: count(purchase, 1d) > 0
    enabled: maybe
  - name: b
    description: d
    condition: count(purchas, 1d) > 0
    tags: red
  - name: c
    description: d
    condition: |
      count(purchase, 1d) > 0
      and since(purchase) > 3
  - name: Bad
    condition: "true"
  - name: a
    description: d
    condition: "true"
"""


def test_every_error_is_reported_with_its_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    with pytest.raises(CombinedDefinitionError) as info:
        load_definitions(path)
    err = info.value
    assert [(e.line, e.segment, e.where if e.segment else None) for e in err.errors] == [
        (4, "a", "description"), (6, "a", "enabled"), (9, "b", "condition"), (10, "b", "tags"),
        (15, "c", "condition"), (16, None, None), (16, None, None), (18, "a", "name"),
    ]
    p = str(path)
    assert str(err).splitlines() == [
        f"{p}:4: segment 'a': description: required (a non-empty string)",
        f"{p}:6: segment 'a': enabled: must be true or false, not 'maybe'",
        f"{p}:9: segment 'b': condition col 7: unknown event type 'purchas' "
        "(did you mean 'purchase'?)",
        "    count(purchas, 1d) > 0",
        "          ^",
        f"{p}:10: segment 'b': tags: must be a list of strings",
        f"{p}:15: segment 'c': condition line 2 col 21: cannot compare duration with number "
        "(write a duration such as 30d)",
        "    and since(purchase) > 3",
        "                        ^",
        f"{p}:16: segments[3]: name 'Bad' must match [a-z][a-z0-9_]*",
        f"{p}:16: segments[3]: description: required (a non-empty string)",
        f"{p}:18: segment 'a': name: duplicate segment name (first on line 3)",
    ]
    assert "condition:" not in str(err).replace("condition col", "").replace("condition line", "")


def test_yaml_errors_cite_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text('version: "1"\nsegments:\n  - name: a\n   description: x\n')
    with pytest.raises(DefinitionError) as info:
        load_definitions(path)
    assert str(info.value).startswith(f"{path}:4: not valid YAML: ")
    assert "<unicode string>" not in str(info.value)
    with pytest.raises(DefinitionError, match=r"^defs\.yaml:1: not valid YAML: "):
        load_definitions("version: [", name="defs.yaml")
    with pytest.raises(DefinitionError, match=r"^defs\.yaml:2: not valid YAML: character #x0001"):
        load_definitions('version: "1"\nsegments: \x01', name="defs.yaml")
    with pytest.raises(DefinitionError, match=r"^definitions: not valid YAML: nested too deeply"):
        load_definitions('version: "1"\nsegments: ' + "[" * 5000 + "]" * 5000)


# --- the command line ---------------------------------------------------------------------------
def test_validate_prints_every_error_and_no_traceback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD.replace('"1"', "1", 1) + "    tags: [x]\n    tags: [y]\n"
                    f"  - name: deep\n    description: d\n    condition: {TOO_DEEP['sum']}\n")
    assert main(["segments", "validate", str(path)]) == 3
    out = capsys.readouterr()
    heads = [ln for ln in out.err.splitlines() if ln.startswith(f"{path}:")]
    assert len(heads) == 11, out.err
    assert heads[0] == f'{path}:1: version must be a string: quote it (version: "1")'
    assert f"{path}:22: duplicate key 'tags' (first on line 21)" in heads
    assert heads[-1].startswith(f"{path}:25: segment 'deep': condition col ")
    assert heads[-1].endswith(f"expression nested too deeply (max {MAX_DEPTH} levels)")
    assert "Traceback" not in out.err and out.out == ""


def test_validate_a_file_that_is_not_utf8(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b'version: "\xe9"\n')
    assert main(["segments", "validate", str(path)]) == 3
    assert capsys.readouterr().err == f"{path}: not UTF-8 text (byte 10)\n"
    with pytest.raises(DefinitionError, match=r"latin1\.yaml: not UTF-8 text"):
        load_definitions(path)


def test_shipped_definitions_still_load() -> None:
    root = Path(__file__).resolve().parents[2]
    for path in [root / "processors" / "catalogue.yaml", root / "deploy" / "k8s" / "segments.yaml",
                 *sorted((root / "tests" / "fixtures").glob("*segments*.yaml"))]:
        # files on custom event types (…custom_segments.yaml) load with the example types
        types = load_types(root / "processors" / "event_types.yaml") \
            if "custom" in path.name else None
        assert load_definitions(path, types=types).segments, path
