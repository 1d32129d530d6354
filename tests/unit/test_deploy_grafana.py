"""The dashboard and the alert rules name only metrics that segstream really exports.

The exported names come from the objects themselves, not from a list: the worker built by
:func:`stream.worker.bootstrap.build_worker` with both agents (segstream_* and Faust's faust_*
sensor metrics in its registry) and the collector's :class:`stream.collector.service.Metrics`.
Every PromQL expression of deploy/grafana/dashboards/segstream.json and
deploy/prometheus/rules/*.yml is reduced to the metric names it selects, each of which must be
exported (or be a recording rule of ours, or Prometheus' own ``up``). The PromQL syntax itself is
checked by promtool in tests/integration/test_deploy.py.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from stream.collector.service import Metrics as CollectorMetrics
from stream.deliver.metrics import DeliverMetrics
from stream.settings import Settings
from stream.worker.bootstrap import build_worker

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "segstream.json"
RULES_DIR = REPO / "deploy" / "prometheus" / "rules"
OPERATIONS = REPO / "docs" / "operations.md"

KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                      "and", "or", "unless", "offset", "inf", "nan"})
SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",),
            "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("", "_sum", "_count", "_created"), "info": ("_info",)}
PROMETHEUS_OWN = frozenset({"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds"})


def registry_names(registry: CollectorRegistry) -> set[str]:
    """Every series name ``registry`` can expose (families without children included)."""
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + s for s in SUFFIXES.get(family.type, ("",)))
    return names


def exported_names() -> set[str]:
    worker = build_worker(Settings.build(api_auth="none", agents=("ingest", "segmentation")))
    return (registry_names(worker.registry) | registry_names(CollectorMetrics().registry)
            | registry_names(DeliverMetrics.create().registry))


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (a lexical reduction, not a parser).

    >>> sorted(metric_names('sum by (le) (rate(a_bucket{x="y,z"}[5m])) / on (i) b offset 5m'))
    ['a_bucket', 'b']
    >>> sorted(metric_names('histogram_quantile(0.99, x) > 1e3 and {__name__="c"}'))
    ['c', 'x']
    """
    named = set(re.findall(r'__name__\s*=\s*"([^"]+)"', expr))
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (may hold braces, commas)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\boffset\s+-?\w+", " ", text)  # offset modifiers
    text = re.sub(r"\b\d+(\.\d+)?(e[+-]?\d+)?\b", " ", text)  # numbers
    idents = re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text)
    found = {m.group(0) for m in idents if not text[m.end():].lstrip().startswith("(")}
    return (found - KEYWORDS) | named


def dashboard_exprs(doc: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for panel in doc["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def rules() -> Iterator[dict[str, Any]]:
    for path in sorted(RULES_DIR.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            yield from group["rules"]


def recorded() -> set[str]:
    return {r["record"] for r in rules() if "record" in r}


def load_builder() -> Any:
    spec = importlib.util.spec_from_file_location("build_dashboard",
                                                  GRAFANA / "build_dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_committed_dashboard_is_the_generator_output() -> None:
    assert DASHBOARD.read_text() == load_builder().render(), \
        "run python deploy/grafana/build_dashboard.py"


def test_dashboard_names_only_exported_metrics() -> None:
    exported = exported_names() | PROMETHEUS_OWN
    doc = json.loads(DASHBOARD.read_text())
    seen: set[str] = set()
    for title, expr in dashboard_exprs(doc):
        names = metric_names(expr)
        assert names, f"{title}: no metric in {expr!r}"
        assert names <= exported, f"{title}: not exported: {sorted(names - exported)}"
        seen |= names
    # what the issue asks the dashboard to show
    for wanted in ("segstream_ingest_events_valid_total", "segstream_segment_size",
                   "segstream_changes_total", "segstream_event_to_change_seconds_bucket",
                   "segstream_partition_lag", "segstream_ingest_events_invalid_total",
                   "segstream_timer_backlog", "segstream_redis_commit_seconds_bucket",
                   "process_cpu_seconds_total", "process_resident_memory_bytes",
                   "segstream_collector_produce_seconds_bucket"):
        assert wanted in seen, wanted


def test_every_process_exports_cpu_memory_and_gc() -> None:
    """process_* and python_* are in the worker's, the collector's and deliver's registries
    (prometheus-client puts them in its global registry, which no segstream process serves)."""
    worker = build_worker(Settings.build(api_auth="none"))
    for registry in (worker.registry, CollectorMetrics().registry,
                     DeliverMetrics.create().registry):
        names = registry_names(registry)
        assert {"process_cpu_seconds_total", "process_resident_memory_bytes",
                "process_open_fds", "python_info", "python_gc_collections_total"} <= names


def test_instance_variable_filters_every_query_and_workers_up_is_never_empty() -> None:
    doc = json.loads(DASHBOARD.read_text())
    (instance,) = [v for v in doc["templating"]["list"] if v["name"] == "instance"]
    assert instance["includeAll"] and instance["allValue"] == ".*"
    assert instance["definition"].startswith("label_values(up{")
    for title, expr in dashboard_exprs(doc):
        selectors = re.findall(r"\b[a-z_]+(?:\{[^}]*\})?", expr)
        for name in metric_names(expr):
            assert all('instance=~"$instance"' in sel for sel in selectors
                       if sel.split("{")[0] == name), f"{title}: {name} not filtered: {expr}"
    (up,) = [e for t, e in dashboard_exprs(doc) if t == "Workers up"]
    assert up.endswith(" or vector(0)"), "no worker scraped must show 0, not No data"
    titles = {p["title"] for p in doc["panels"]}
    assert {"CPU (cores)", "Resident memory"} <= titles


def test_rules_name_only_exported_metrics() -> None:
    exported = exported_names() | PROMETHEUS_OWN | recorded()
    for rule in rules():
        name = rule.get("alert") or rule["record"]
        names = metric_names(rule["expr"])
        assert names, f"{name}: no metric in its expression"
        assert names <= exported, f"{name}: not exported: {sorted(names - exported)}"


def test_the_name_check_is_not_vacuous() -> None:
    exported = exported_names()
    assert "segstream_segment_events_total" in exported
    assert "faust_topic_partition_offset_commited" in exported  # sic: Faust's spelling
    assert "segstream_collector_requests_total" in exported
    assert "segstream_segment_events" not in exported  # a counter is exposed as *_total
    assert not metric_names("rate(segstream_no_such_metric_total[5m])") <= exported


def test_dashboard_layout_and_datasource() -> None:
    doc = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    for panel in doc["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"
    variable = doc["templating"]["list"][0]
    source = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    assert variable["current"]["value"] == source["datasources"][0]["uid"]
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/segstream.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/etc/grafana/dashboards"


def test_every_alert_has_a_runbook_section_in_operations_md() -> None:
    headings = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
                for h in re.findall(r"^#+ (.+)$", OPERATIONS.read_text(), re.MULTILINE)}
    alerts = [r for r in rules() if "alert" in r]
    assert len(alerts) >= 6
    bases = set()
    for rule in alerts:
        url = rule["annotations"]["runbook_url"]
        path, _, anchor = url.partition("#")
        base, _, page = path.rpartition("/")
        assert base.startswith("https://") and page == "operations.md", rule["alert"]
        bases.add(base)
        assert anchor in headings, f"{rule['alert']}: no section #{anchor} in {OPERATIONS}"
        assert rule["labels"]["severity"] in {"warning", "critical"}
    assert len(bases) == 1, f"runbook_url bases: {sorted(bases)} (one configurable base)"


def test_the_runbook_base_is_set_in_one_go(tmp_path: Path) -> None:
    """deploy/prometheus/runbooks.py moves every URL (rules and rule tests) to a new base and
    changes nothing else."""
    spec = importlib.util.spec_from_file_location("runbooks", RULES_DIR.parent / "runbooks.py")
    assert spec is not None and spec.loader is not None
    runbooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runbooks)
    assert runbooks.main(["--check"]) == 0
    for path in runbooks.FILES:
        text = path.read_text()
        moved = runbooks.rebase(text, "https://docs.example.net/seg/")
        assert runbooks.bases(moved) == {"https://docs.example.net/seg"}
        assert moved.count("runbook_url") == text.count("runbook_url") > 0
        changed = [(a, b) for a, b in zip(text.splitlines(), moved.splitlines(), strict=True)
                   if a != b]
        assert changed and all("runbook_url" in a for a, _ in changed)
        assert yaml.safe_load(moved)  # still YAML
