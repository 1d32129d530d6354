"""`segstream replay` end to end through stream.cli.main on the files in tests/fixtures."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from processors.lang.load import load_definitions
from schemas.changes import decode_change, encode_change
from schemas.validation import parse_record
from stream.cli import main
from stream.cli.cmd_replay import iso

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import oracle as O
from test_property_support import expected_late

FIX = Path(__file__).resolve().parents[1] / "fixtures"
SEGMENTS = str(FIX / "replay_segments.yaml")
EVENTS = str(FIX / "replay_events.jsonl")
CSV_MAP = ("id=event_id,user=customer_id,anon=anonymous_id,ts=timestamp,"
           "product=properties.product_id,order=properties.order_id,"
           "country=properties.traits.country,campaign=properties.campaign_id")


def replay_cli(*args: str) -> int:
    return main(["replay", "--quiet", *args])


def changes(path: Path, definition_version: str = "fixture-1"
            ) -> list[tuple[str, str, str, str, int, str]]:
    """The change lines (``at`` shown as ISO for readability); each line must be exactly what
    the live worker writes to the changes topic: the same fields in the same order, ``at`` in
    epoch ms, the file's definitions version."""
    rows = []
    for line in path.read_bytes().splitlines():
        change = decode_change(line)  # the live topic's decoder: refuses anything else
        assert line == encode_change(change), "not byte for byte the live format"
        assert list(orjson.loads(line)) == ["customer_id", "segment", "action", "at", "version",
                                            "cause", "definition_version"]
        assert change.definition_version == definition_version
        rows.append((change.customer_id, change.segment, change.action, iso(change.at),
                     change.version, change.cause))
    return rows


def sizes(out: str) -> dict[str, int]:
    """The size table of the summary."""
    table: dict[str, int] = {}
    for line in out.splitlines()[2:]:
        if not line.strip():
            break
        name, n = line.split()
        table[name] = int(n)
    return table


FIXTURE_CHANGES = [
    ("c1", "french", "enter", "2026-11-01T09:00:00.000Z", 1, "e01"),
    ("c1", "buyers_7d", "enter", "2026-11-01T10:30:00.000Z", 1, "e03"),
    ("c2", "engaged_30d", "enter", "2026-11-02T12:05:00.000Z", 1, "e05"),
    ("c2", "abandoned_cart", "enter", "2026-11-02T13:00:00.000Z", 1, "timer"),
    ("c3", "buyers_7d", "enter", "2026-11-03T08:30:00.000Z", 1, "e09"),
    ("c4", "french", "enter", "2026-11-05T00:00:00.000Z", 1, "e11"),
]


def test_default_orders_by_event_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """The fixture's two old events (a re-sent e03 and e10, hours behind the watermark in file
    order) are not late once the input is ordered by event time: e03 is a duplicate, e10 a
    page view that changes nothing, so the changes are those of file order."""
    out = tmp_path / "changes.jsonl"
    assert replay_cli("--segments", SEGMENTS, "--events", EVENTS, "--out", str(out)) == 0
    assert changes(out) == FIXTURE_CHANGES
    report = capsys.readouterr().out
    assert sizes(report) == {"buyers_7d": 2, "abandoned_cart": 1, "engaged_30d": 1, "french": 2}
    assert "14 read, 12 valid, 2 invalid (unparsable 1, missing_id 1), 0 late" in report
    assert ("order: by event time (sorted in memory); 2 events were out of file order, 2 of "
            "them beyond the allowed lateness") in report


def test_jsonl_changes_sizes_and_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """--arrival-order: file order is arrival order, the two old events are late."""
    out = tmp_path / "changes.jsonl"
    assert replay_cli("--segments", SEGMENTS, "--events", EVENTS, "--out", str(out),
                      "--arrival-order") == 0
    assert changes(out) == [
        ("c1", "french", "enter", "2026-11-01T09:00:00.000Z", 1, "e01"),
        ("c1", "buyers_7d", "enter", "2026-11-01T10:30:00.000Z", 1, "e03"),
        ("c2", "engaged_30d", "enter", "2026-11-02T12:05:00.000Z", 1, "e05"),
        ("c2", "abandoned_cart", "enter", "2026-11-02T13:00:00.000Z", 1, "timer"),
        ("c3", "buyers_7d", "enter", "2026-11-03T08:30:00.000Z", 1, "e09"),
        ("c4", "french", "enter", "2026-11-05T00:00:00.000Z", 1, "e11"),
    ]
    report = capsys.readouterr().out
    assert sizes(report) == {"buyers_7d": 2, "abandoned_cart": 1, "engaged_30d": 1, "french": 2}
    assert "14 read, 12 valid, 2 invalid (unparsable 1, missing_id 1), 2 late" in report
    assert "merges: 1" in report
    assert "order: file order (--arrival-order), 2 events refused as late" in report


def test_until_iso_and_epoch(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "changes.jsonl"
    assert replay_cli("--segments", SEGMENTS, "--events", EVENTS, "--out", str(out),
                      "--until", "2026-12-03T00:00:00Z") == 0
    got = changes(out)
    assert ("c1", "buyers_7d", "exit", "2026-11-08T10:30:00.000Z", 2, "timer") in got
    assert ("c3", "buyers_7d", "exit", "2026-11-10T08:30:00.000Z", 2, "timer") in got
    assert ("c2", "engaged_30d", "exit", "2026-12-02T12:05:00.000Z", 2, "timer") in got
    assert sizes(capsys.readouterr().out) == {
        "buyers_7d": 0, "abandoned_cart": 1, "engaged_30d": 0, "french": 2}
    # epoch ms, before the last events: they are skipped and counted
    assert replay_cli("--segments", SEGMENTS, "--events", EVENTS,
                      "--until", "1793620800000") == 0  # 2026-11-02T12:00:00Z
    report = capsys.readouterr().out
    assert sizes(report) == {"buyers_7d": 1, "abandoned_cart": 0, "engaged_30d": 0,
                             "french": 1}
    assert "6 after --until" in report
    assert "as of 2026-11-02T12:00:00.000Z" in report


def test_csv_with_column_map(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    invalid = tmp_path / "invalid.jsonl"
    assert replay_cli("--segments", SEGMENTS, "--events", str(FIX / "replay_events.csv"),
                      "--csv-map", CSV_MAP, "--invalid-out", str(invalid)) == 0
    report = capsys.readouterr().out
    assert sizes(report) == {"buyers_7d": 1, "abandoned_cart": 1, "engaged_30d": 1, "french": 2}
    bad = [orjson.loads(line) for line in invalid.read_bytes().splitlines()]
    assert [(b["line"], b["code"]) for b in bad] == [(8, "bad_properties")]
    assert "'fifty'" in bad[0]["message"]


def test_stdout_output_and_strict(capsys: pytest.CaptureFixture[str]):
    assert replay_cli("--segments", SEGMENTS, "--events", EVENTS, "--out", "-",
                      "--strict") == 1
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 6  # only changes on stdout
    assert "segment" in captured.err  # the summary went to stderr


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--events", EVENTS, "--until", "next tuesday"], 2, "not an ISO-8601 time"),
    (["--events", EVENTS, "--csv-map", "a=b"], 2, "must be one of"),
    (["--events", EVENTS, "--csv-map", "a=properties.x:decimal"], 2, "unknown type"),
    (["--events", "/nonexistent/events.jsonl"], 4, "/nonexistent/events.jsonl"),
    (["--events", EVENTS, "--until", "253402300800000"], 2, "--until: '253402300800000' is out"
                                                            " of range"),
    (["--events", EVENTS, "--until", "-62135596800001"], 2, "out of range"),
    (["--events", EVENTS, "--until", "0001-01-01T00:00:00+01:00"], 2, "out of range"),
    (["--events", EVENTS, "--clock", "soon"], 2, "--clock: not an ISO"),
    (["--events", EVENTS, "--clock", "9999-12-31T23:59:59Z"], 2, "--clock:"),
    (["--events", EVENTS, "--sort-buffer-mb", "0"], 2, "--sort-buffer-mb"),
    (["--events", EVENTS, "--sort-buffer-mb", "nan"], 2, "--sort-buffer-mb"),
    (["--events", str(FIX / "events.jsonl"), "--sort-buffer-mb", "0.01", "--tmp-dir",
      "/nonexistent/sort"], 4, "/nonexistent/sort"),
])
def test_usage_and_file_errors(args: list[str], code: int, message: str,
                               capsys: pytest.CaptureFixture[str]):
    assert replay_cli("--segments", SEGMENTS, *args) == code
    assert message in capsys.readouterr().err


def test_instant_out_of_range_fails_before_any_output(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]):
    """An --until past year 9999 used to raise OverflowError (a traceback) after the changes
    had been written; now it is refused up front."""
    out = tmp_path / "changes.jsonl"
    assert replay_cli("--segments", SEGMENTS, "--events", EVENTS, "--out", str(out),
                      "--until", "253402300800000") == 2
    assert not out.exists()
    assert "Traceback" not in capsys.readouterr().err
    # the largest accepted instant works end to end
    assert replay_cli("--segments", SEGMENTS, "--events", EVENTS, "--out", str(out),
                      "--until", "253402300799999") == 0
    assert "as of 9999-12-31T23:59:59.999Z" in capsys.readouterr().out


def test_bad_definitions_show_the_definition_error(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]):
    defs = tmp_path / "bad.yaml"
    defs.write_text('version: "1"\nsegments:\n  - name: oops\n    description: typo\n'
                    '    condition: count(cart_ad, 1h) > 0\n')
    assert replay_cli("--segments", str(defs), "--events", EVENTS) == 3
    err = capsys.readouterr().err
    assert "invalid definitions" in err
    assert "segment 'oops'" in err
    assert "cart_add" in err  # the did-you-mean hint
    assert replay_cli("--segments", str(tmp_path / "missing.yaml"), "--events", EVENTS) == 4
    assert "missing.yaml" in capsys.readouterr().err


def test_generated_sample_against_the_oracle(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]):
    """The generated sample (tests/fixtures/events.jsonl) through the default catalogue: the
    final sizes equal the oracle's, computed from the same valid events."""
    catalogue_path = Path(__file__).resolve().parents[2] / "processors" / "catalogue.yaml"
    assert replay_cli("--segments", str(catalogue_path), "--events",
                      str(FIX / "events.jsonl")) == 0
    got = sizes(capsys.readouterr().out)
    valid: list[dict[str, Any]] = []
    for line in (FIX / "events.jsonl").read_bytes().splitlines():
        valid += parse_record(line, now_ms=2**53)[0]
    cat = load_definitions(catalogue_path)
    late = set(expected_late(valid, cat.allowed_lateness_ms))
    end = max(e["timestamp"] for e in valid)
    members = O.expected_members(cat, valid, end, skip=late)
    want = {s.name: sum(s.name in segs for segs in members.values()) for s in cat.segments}
    assert got == want
    assert sum(want.values()) > 0


@pytest.mark.parametrize("cell", ["inf", "-inf", "nan", "1_000", "1e999", "٣", " 0x10"])
def test_csv_numbers_follow_json_rules(cell: str) -> None:
    """A CSV amount or quantity that JSON would refuse is a conversion error (an invalid
    row with its reason), not a number."""
    from stream.cli.cmd_replay import csv_events  # noqa: PLC0415

    rows = [{"event_id": "e1", "type": "purchase", "amount": cell}]
    ((line, out),) = list(csv_events(rows, {"amount": ("properties.amount", "float")}))
    assert line == 2 and isinstance(out, str) and "cannot convert" in out
    rows = [{"event_id": "e1", "type": "cart_add", "quantity": cell}]
    ((_, out),) = list(csv_events(rows, {"quantity": ("properties.quantity", "int")}))
    assert isinstance(out, str)


def test_csv_timestamp_with_non_ascii_digits_is_not_a_number() -> None:
    from stream.cli.cmd_replay import csv_events  # noqa: PLC0415

    ((_, out),) = list(csv_events([{"timestamp": "١٧٩٥"}], {}))
    assert out["timestamp"] == "١٧٩٥"  # left as text: validation then refuses it


def test_replay_with_custom_types(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    types = Path(__file__).resolve().parents[2] / "processors" / "event_types.yaml"
    defs = tmp_path / "d.yaml"
    defs.write_text('version: "1"\nsegments:\n  - {name: unhappy, description: d, condition: '
                    '"count(review_posted where rating <= 2, 30d) >= 1"}\n', encoding="utf-8")
    events = tmp_path / "e.jsonl"
    t0 = 1_795_000_000_000
    events.write_text("\n".join(orjson.dumps(e).decode() for e in [
        {"event_id": "r1", "type": "review_posted", "customer_id": "c1", "timestamp": t0,
         "properties": {"rating": 1}},
        {"event_id": "r2", "type": "review_posted", "customer_id": "c2", "timestamp": t0,
         "properties": {"rating": 7}}]) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert replay_cli("--segments", str(defs), "--events", str(events), "--out", str(out),
                      "--until", str(t0 + 1)) == 3  # the segment needs the types file
    assert "unknown event type 'review_posted'" in capsys.readouterr().err
    assert replay_cli("--segments", str(defs), "--types", str(types), "--events", str(events),
                      "--out", str(out), "--until", str(t0 + 1)) == 0
    assert [(c[0], c[1]) for c in changes(out, "1")] == [("c1", "unhappy")]
    assert "bad_property" in capsys.readouterr().out


def test_profiles_kept_encoded_give_the_same_output(tmp_path: Path) -> None:
    from stream.tools.generate import GeneratorConfig, generate  # noqa: PLC0415

    events = tmp_path / "e.jsonl"
    cfg = GeneratorConfig(customers=300, events=4_000, seed=5, duplicate_share=0.02,
                          out_of_order_share=0.02)
    events.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in generate(cfg)))
    catalogue = str(Path(__file__).resolve().parents[2] / "processors" / "catalogue.yaml")
    outs = []
    for hot in ("0", "7"):
        out = tmp_path / f"out{hot}.jsonl"
        assert replay_cli("--segments", catalogue, "--events", str(events), "--out", str(out),
                          "--hot-profiles", hot, "--quiet") == 0
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] and outs[0].count(b"\n") > 500
    with pytest.raises(SystemExit) as bad:
        replay_cli("--segments", catalogue, "--events", str(events), "--hot-profiles", "-1")
    assert bad.value.code == 2
