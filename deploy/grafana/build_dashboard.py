"""Write deploy/grafana/dashboards/segstream.json, the segstream Grafana dashboard.

The dashboard is generated from the panel list below (one line of PromQL per series) rather
than edited as 1,500 lines of JSON: reviews see the queries, and tests/unit/test_deploy_grafana.py
checks that the committed JSON is this script's output and that every metric a query names is
one the worker or the collector exports.

    python deploy/grafana/build_dashboard.py        # rewrite the JSON
    python deploy/grafana/build_dashboard.py --check  # exit 1 if the JSON is stale
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards" / "segstream.json"
UID = "segstream-overview"
DS = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Panel:
    """One panel: a title, its queries as (legend, PromQL), a unit and a kind."""

    title: str
    queries: tuple[tuple[str, str], ...]
    unit: str = "short"
    kind: str = "timeseries"  # or "stat"
    description: str = ""
    width: int = 12
    height: int = 8
    stack: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


#: the series the dashboard reads (ours, Faust's, the processes', Prometheus' ``up``)
_SERIES = re.compile(r"\b((?:segstream|faust|process|python)_[A-Za-z0-9_]+|up)\b(\{[^}]*\})?")
INSTANCE = 'instance=~"$instance"'


def with_instance(expr: str) -> str:
    """``expr`` with every series selector restricted to the ``$instance`` variable.

    >>> with_instance('sum(rate(a_total[5m])) + sum(up{job="w"}) or vector(0)')
    'sum(rate(a_total[5m])) + sum(up{job="w", instance=~"$instance"}) or vector(0)'
    >>> with_instance('histogram_quantile(0.5, sum by (le) (rate(process_x_bucket[1m])))')
    'histogram_quantile(0.5, sum by (le) (rate(process_x_bucket{instance=~"$instance"}[1m])))'
    """
    def add(m: re.Match[str]) -> str:
        labels = m.group(2)
        inner = f"{labels[1:-1]}, {INSTANCE}" if labels and labels[1:-1].strip() else INSTANCE
        return f"{m.group(1)}{{{inner}}}"

    return _SERIES.sub(add, expr)


def q(legend: str, expr: str) -> tuple[str, str]:
    return legend, with_instance(" ".join(expr.split()))


ROWS: tuple[tuple[str, tuple[Panel, ...]], ...] = (
    ("Overview", (
        Panel("Workers up", (q("workers", 'sum(up{job="segstream-worker"}) or vector(0)'),),
              kind="stat", width=4, height=4,
              description="Worker targets Prometheus scraped successfully; 0 (not \"No data\") "
                          "when none answers or none is discovered."),
        Panel("Events ingested / s", (q("events/s", f"""
              sum(rate(segstream_ingest_events_valid_total[{RATE}]))"""),),
              unit="ops", kind="stat", width=5, height=4),
        Panel("Segment changes / s", (q("changes/s", f"""
              sum(rate(segstream_changes_total[{RATE}]))"""),),
              unit="ops", kind="stat", width=5, height=4),
        Panel("Event-to-change p99", (q("p99", f"""
              histogram_quantile(0.99, sum by (le)
                (rate(segstream_event_to_change_seconds_bucket[{RATE}])))"""),),
              unit="s", kind="stat", width=5, height=4),
        Panel("Lag (records)", (q("{{stage}}", """
              sum by (stage) (segstream_partition_lag)"""),),
              kind="stat", width=5, height=4,
              description="Raw records not yet committed (ingest) and bundle records not yet "
                          "applied in Redis (segmentation)."),
    )),
    ("Throughput", (
        Panel("Valid events by type / s", (q("{{type}}", f"""
              sum by (type) (rate(segstream_ingest_events_valid_total[{RATE}]))"""),),
              unit="ops", stack=True,
              description="Events that passed validation and went into bundles."),
        Panel("Records and events / s", (
            q("raw records", f"sum(rate(segstream_ingest_records_total[{RATE}]))"),
            q("engine events", f"sum(rate(segstream_segment_events_total[{RATE}]))"),
            q("bundles", f"sum(rate(segstream_ingest_bundles_total[{RATE}]))"),
            q("collector {{outcome}}", f"""
              sum by (outcome) (rate(segstream_collector_events_total[{RATE}]))"""),
        ), unit="ops"),
        Panel("Lag by stage and partition (records)", (q("{{stage}} {{partition}}", """
              max by (stage, partition) (segstream_partition_lag)"""),),
              description="segstream_partition_lag, set every second by the worker a "
                          "partition is assigned to: high-water mark of its last fetch minus "
                          "the committed raw offset (ingest) or the offset applied in Redis "
                          "(segmentation). Growing: the workers do not keep up; falling: "
                          "they catch up."),
        Panel("Collector requests by status / s", (q("{{status}}", f"""
              sum by (status) (rate(segstream_collector_requests_total[{RATE}]))"""),),
              unit="reqps", stack=True),
        Panel("Collector produce latency (until Kafka acknowledged)", (
            q("p50", f"""histogram_quantile(0.50, sum by (le)
                         (rate(segstream_collector_produce_seconds_bucket[{RATE}])))"""),
            q("p99", f"""histogram_quantile(0.99, sum by (le)
                         (rate(segstream_collector_produce_seconds_bucket[{RATE}])))"""),
        ), unit="s", width=24,
              description="The collector answers a POST only after Kafka acknowledged its "
                          "records (acks=all): this is most of its response time."),
    )),
    ("Segments", (
        Panel("Segment sizes", (q("{{segment}}", "sum by (segment) (segstream_segment_size)"),),
              description="Members per segment, summed over the workers' owned partitions "
                          "(refreshed every few seconds)."),
        Panel("ENTER / EXIT per segment / s", (q("{{segment}} {{action}}", f"""
              sum by (segment, action) (rate(segstream_changes_total[{RATE}]))"""),),
              unit="ops"),
        Panel("Event-to-change latency", (
            q("p50", f"""histogram_quantile(0.50, sum by (le)
                         (rate(segstream_event_to_change_seconds_bucket[{RATE}])))"""),
            q("p99", f"""histogram_quantile(0.99, sum by (le)
                         (rate(segstream_event_to_change_seconds_bucket[{RATE}])))"""),
            q("timer p99", f"""histogram_quantile(0.99, sum by (le)
                               (rate(segstream_timer_lateness_seconds_bucket[{RATE}])))"""),
        ), unit="s", description="Wall clock at publication minus event time (event-caused "
                                 "changes) or minus the due instant (timer changes)."),
        Panel("Timer backlog", (q("{{instance}}", "sum by (instance) (segstream_timer_backlog)"),),
              description="Customers due now or earlier, not yet advanced."),
    )),
    ("Errors", (
        Panel("Dead letters / s", (
            q("invalid {{code}}", f"""
              sum by (code) (rate(segstream_ingest_events_invalid_total[{RATE}]))"""),
            q("too late", f"sum(rate(segstream_late_events_total[{RATE}]))"),
            q("bad bundle records", f"sum(rate(segstream_bad_bundle_records_total[{RATE}]))"),
            q("dead-letter records", f"sum(rate(segstream_ingest_dead_letters_total[{RATE}]))"),
        ), unit="ops", stack=True),
        Panel("Redis and Kafka errors / s", (
            q("redis errors {{instance}}", f"""
              sum by (instance) (rate(segstream_redis_errors_total[{RATE}]))"""),
            q("produce errors", f"sum(rate(faust_total_error_messages_sent_total[{RATE}]))"),
            q("fenced commits", f"sum(rate(segstream_fenced_commits_total[{RATE}]))"),
            q("definitions refused", f"""
              sum(rate(segstream_definitions_errors_total[{RATE}]))"""),
        ), unit="ops"),
    )),
    ("Webhook delivery", (
        Panel("Changes delivered / s by destination", (q("{{destination}}", f"""
              sum by (destination)
                (rate(segstream_deliver_changes_delivered_total[{RATE}]))"""),),
              unit="ops", stack=True,
              description="segstream deliver: changes a destination answered 2xx for "
                          "(docs/destinations.md)."),
        Panel("Dead-lettered and retried / s", (
            q("dead-lettered {{destination}}", f"""
              sum by (destination)
                (rate(segstream_deliver_changes_dead_lettered_total[{RATE}]))"""),
            q("retried {{destination}} {{cause}}", f"""
              sum by (destination, cause) (rate(segstream_deliver_retries_total[{RATE}]))"""),
        ), unit="ops",
              description="Dead-lettered: changes written to the delivery dead-letter topic "
                          "(a 4xx, or max_tries failed). Retried: failed requests, by cause."),
        Panel("Delivery latency (publication to 2xx)", (
            q("p50 {{destination}}", f"""histogram_quantile(0.50, sum by (le, destination)
                (rate(segstream_deliver_latency_seconds_bucket[{RATE}])))"""),
            q("p99 {{destination}}", f"""histogram_quantile(0.99, sum by (le, destination)
                (rate(segstream_deliver_latency_seconds_bucket[{RATE}])))"""),
        ), unit="s"),
        Panel("Delivery backlog", (
            q("pending {{destination}}",
              "sum by (destination) (segstream_deliver_pending_changes)"),
            q("consumer lag", "sum(segstream_deliver_consumer_lag)"),
        ), description="Pending: changes consumed and not yet delivered or dead-lettered, per "
                       "destination. Consumer lag: changes-topic records beyond the delivery "
                       "group's committed offset."),
    )),
    ("Processes", (
        Panel("CPU (cores)", (q("{{job}} {{instance}}", f"""
              sum by (job, instance) (rate(process_cpu_seconds_total[{RATE}]))"""),),
              width=8, description="CPU seconds per second of each worker, collector and "
                                   "deliver process (1 = one core busy)."),
        Panel("Resident memory", (q("{{job}} {{instance}}", """
              sum by (job, instance) (process_resident_memory_bytes)"""),),
              unit="bytes", width=8),
        Panel("Python GC collections / s", (q("{{job}} {{instance}} gen {{generation}}", f"""
              sum by (job, instance, generation)
                (rate(python_gc_collections_total[{RATE}]))"""),),
              unit="ops", width=8,
              description="Garbage collections per generation; the worker freezes its "
                          "start-up heap and collects the young generation less often."),
    )),
    ("Redis and engine", (
        Panel("Redis commit latency", (
            q("p50", f"""histogram_quantile(0.50, sum by (le)
                         (rate(segstream_redis_commit_seconds_bucket[{RATE}])))"""),
            q("p99", f"""histogram_quantile(0.99, sum by (le)
                         (rate(segstream_redis_commit_seconds_bucket[{RATE}])))"""),
            q("commits/s", f"sum(rate(segstream_redis_commit_seconds_count[{RATE}]))"),
        ), unit="s", extra={"overrides": [{
            "matcher": {"id": "byName", "options": "commits/s"},
            "properties": [{"id": "unit", "value": "ops"},
                           {"id": "custom.axisPlacement", "value": "right"}]}]}),
        Panel("Engine time per batch", (
            q("p50", f"""histogram_quantile(0.50, sum by (le)
                         (rate(segstream_engine_batch_seconds_bucket[{RATE}])))"""),
            q("p99", f"""histogram_quantile(0.99, sum by (le)
                         (rate(segstream_engine_batch_seconds_bucket[{RATE}])))"""),
        ), unit="s"),
        Panel("State cache hit ratio", (q("hit ratio", f"""
              sum(rate(segstream_state_cache_hits_total[{RATE}]))
              / (sum(rate(segstream_state_cache_hits_total[{RATE}]))
                 + sum(rate(segstream_state_cache_misses_total[{RATE}])))"""),),
              unit="percentunit"),
        Panel("Kafka produce latency p99 (ms)", (q("p99", f"""
              histogram_quantile(0.99, sum by (le)
                (rate(faust_producer_send_latency_bucket[{RATE}])))"""),),
              unit="ms"),
    )),
)


def panel_json(p: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    targets = [{"datasource": DS, "expr": expr, "legendFormat": legend, "refId": chr(65 + i),
                "range": True} for i, (legend, expr) in enumerate(p.queries)]
    out: dict[str, Any] = {
        "id": pid, "type": p.kind, "title": p.title, "datasource": DS, "targets": targets,
        "gridPos": {"h": p.height, "w": p.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
    }
    if p.description:
        out["description"] = p.description
    if p.kind == "timeseries":
        out["fieldConfig"]["defaults"]["custom"] = {
            "drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
            "stacking": {"mode": "normal" if p.stack else "none", "group": "A"}}
        out["options"] = {"legend": {"displayMode": "list", "placement": "bottom",
                                     "showLegend": True},
                          "tooltip": {"mode": "multi", "sort": "desc"}}
    else:
        out["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "",
                                            "values": False},
                          "colorMode": "value", "graphMode": "area", "textMode": "auto"}
    out["fieldConfig"].update(p.extra)
    return out


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    pid, y = 1, 0
    for title, row in ROWS:
        panels.append({"id": pid, "type": "row", "title": title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        pid, y, x, row_h = pid + 1, y + 1, 0, 0
        for p in row:
            if x + p.width > 24:
                x, y, row_h = 0, y + row_h, 0
            panels.append(panel_json(p, pid, x, y))
            pid, x, row_h = pid + 1, x + p.width, max(row_h, p.height)
        y += row_h
    return {
        "uid": UID, "title": "segstream", "tags": ["segstream"], "editable": True,
        "schemaVersion": 39, "version": 1, "refresh": "30s", "timezone": "utc",
        "time": {"from": "now-1h", "to": "now"},
        "description": "segstream workers, collector and webhook delivery: throughput, lag, "
                       "latency, segments, errors. Generated by deploy/grafana/build_dashboard.py.",
        "templating": {"list": [{
            "name": "datasource", "label": "Prometheus", "type": "datasource",
            "query": "prometheus", "current": {"text": "Prometheus", "value": "prometheus"},
            "hide": 0, "refresh": 1, "regex": "", "options": []}, {
            "name": "instance", "label": "Instance", "type": "query", "datasource": DS,
            "query": {"query": 'label_values(up{job=~"segstream-.*"}, instance)',
                      "refId": "instance"},
            "definition": 'label_values(up{job=~"segstream-.*"}, instance)',
            "multi": True, "includeAll": True, "allValue": ".*",
            "current": {"text": "All", "value": "$__all"},
            "hide": 0, "refresh": 2, "regex": "", "sort": 1, "options": []}]},
        "annotations": {"list": []},
        "links": [],
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if OUT.read_text() != text:
            sys.stderr.write(f"{OUT} is stale: run python {Path(__file__).name}\n")
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
