"""`segstream watch`'s view: counting changes and rendering the screen."""

from __future__ import annotations

from schemas.changes import SegmentChange
from stream.tools.watch import View, _metric_total


def change(cid: str, seg: str, action: str, version: int) -> SegmentChange:
    return SegmentChange(customer_id=cid, segment=seg, action=action, at=1_795_000_000_000,
                         version=version, cause="e1", definition_version="v1")


def test_view_counts_and_renders_segments_sizes_and_latest_changes() -> None:
    view = View(sizes={"engaged_30d": 2, "lapsed_90d": 0})
    view.add(change("c1", "engaged_30d", "enter", 1))
    view.add(change("c2", "engaged_30d", "enter", 1))
    view.add(change("c1", "engaged_30d", "exit", 2))
    view.add(change("c3", "retargeting", "enter", 1))
    assert view.enters["engaged_30d"] == 2 and view.exits["engaged_30d"] == 1
    text = view.render(["API: http://x"])
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines()
            if line.startswith(("engaged_30d", "lapsed_90d", "retargeting"))}
    assert rows["engaged_30d"][:3] == ["2", "2", "1"]
    assert rows["lapsed_90d"][:3] == ["0", "0", "0"]
    assert rows["retargeting"][:3] == ["0", "1", "0"]  # size unknown to the API yet
    assert "exit  engaged_30d" in text and text.rstrip().endswith("API: http://x")


def test_metric_totals_are_read_from_the_exposition_format() -> None:
    text = ("# HELP segstream_segment_events_total Events run through the engine.\n"
            "# TYPE segstream_segment_events_total counter\n"
            "segstream_segment_events_total 1234.0\n")
    assert _metric_total(text, "segstream_segment_events") == 1234.0
    assert _metric_total(text, "missing") is None
