"""Property names in conditions checked against the event types' models (issue 16), with the
``props.NAME`` marker for undeclared properties, and every shipped definitions file still loads."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from processors.engine import Engine
from processors.lang.compile import compile_catalogue
from processors.lang.errors import DefinitionError
from processors.lang.load import load_definitions
from processors.lang.typesfile import load_types
from stream.cli import main

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_798_761_600_000  # 2027-01-01T00:00:00Z


def doc(condition: str) -> str:
    return (f'version: "1"\nsegments:\n  - name: s\n    description: d\n'
            f"    condition: '{condition}'\n")


@pytest.mark.parametrize(("condition", "message"), [
    ("sum(purchase.amont, 30d) > 0",
     "unknown property 'amont' of purchase (did you mean 'amount'?)"),
    ("count(page_view where prce > 3, 7d) > 0",
     "unknown property 'prce' of page_view (did you mean 'price'?)"),
    ("last(cart_add where not (categroy is null)) within 1d",
     "unknown property 'categroy' of cart_add (did you mean 'category'?)"),
    ("cart_add then no purchase where amout > 1 within 1h",
     "unknown property 'amout' of purchase (did you mean 'amount'?)"),
    ("count(email_open|email_click where urll == \"x\", 7d) > 0",
     "unknown property 'urll' of email_open|email_click (did you mean 'url'?)"),
    ("avg(checkout.zzz, 7d) > 0",
     "unknown property 'zzz' of checkout; declared: cart_value, step"),
    ("sum(purchase.currency, 30d) > 0", "sum() needs a number property: purchase.currency is a"
                                        " string"),
])
def test_unknown_property_is_a_load_error(condition: str, message: str) -> None:
    with pytest.raises(DefinitionError) as e:
        load_definitions(doc(condition), name="d.yaml")
    assert message in str(e.value)
    assert str(e.value).startswith("d.yaml:5: segment 's': condition col ")


def test_unknown_property_error_points_at_the_name() -> None:
    with pytest.raises(DefinitionError) as e:
        load_definitions(doc("sum(purchase.amont, 30d) > 0"))
    assert e.value.pos == len("sum(purchase.")


@pytest.mark.parametrize("condition", [
    "count(page_view where props.ab_variant == \"b\", 7d) > 0",
    "sum(checkout.props.tip, 30d) > 5",
    "avg(purchase.props.margin where amount > 1, 30d) > 5",
    "count(page_view where price > 3 and props.score >= 2, 1d) > 0",
    "count(email_open|email_click where url is null, 7d) > 0",  # url: declared by email_click
])
def test_declared_and_marked_properties_load(condition: str) -> None:
    load_definitions(doc(condition))


def _ev(i: int, typ: str, **props: Any) -> dict[str, Any]:
    return {"event_id": f"e{i}", "type": typ, "customer_id": "c", "anonymous_id": None,
            "timestamp": T0 + i, "source": "t", "schema_version": 1, "properties": props}


def test_marked_property_reads_the_event_property() -> None:
    eng = Engine(compile_catalogue(load_definitions(doc(
        "count(page_view where props.ab_variant == \"b\", 7d) >= 1 and "
        "sum(checkout.props.tip, 7d) >= 5"))))
    st = None
    entered = []
    for e in (_ev(1, "page_view", url="/", ab_variant="a"), _ev(2, "checkout", tip=3),
              _ev(3, "page_view", url="/", ab_variant="b"), _ev(4, "checkout", tip=2)):
        step = eng.apply(st, e, e["timestamp"])
        st = step.state
        entered += [(e["event_id"], c.action) for c in step.changes]
    assert entered == [("e4", "enter")]


def test_props_marker_needs_a_name() -> None:
    with pytest.raises(DefinitionError, match=r"expected a property name after 'props\.'"):
        load_definitions(doc("count(page_view where props. > 1, 1d) > 0"))


def _shipped_definitions() -> list[Path]:
    files = subprocess.run(["git", "ls-files", "*.yaml", "*.yml"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    return [ROOT / f for f in files
            if "\nsegments:" in "\n" + (ROOT / f).read_text(encoding="utf-8")]


def test_every_shipped_definitions_file_loads() -> None:
    files = _shipped_definitions()
    assert ROOT / "processors" / "catalogue.yaml" in files
    custom = ROOT / "processors" / "custom_segments.yaml"  # on processors/event_types.yaml
    assert custom in files
    for path in files:
        types = load_types(ROOT / "processors" / "event_types.yaml") \
            if "custom" in path.name else None  # on custom event types
        assert load_definitions(path, types=types).segments, path


def test_cli_validate_reports_the_unknown_property(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "defs.yaml"
    path.write_text(doc("count(page_view where prce > 3, 7d) > 0"), encoding="utf-8")
    assert main(["segments", "validate", str(path)]) == 3
    err = capsys.readouterr().err
    assert "unknown property 'prce' of page_view (did you mean 'price'?)" in err
    assert "Traceback" not in err
