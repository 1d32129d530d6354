"""deploy/prometheus on a real Prometheus: promtool checks, rule unit tests, and a live scrape.

- ``deploy/compose/check.sh``: a Compose client's offline ``config`` check of the compose file.
- ``promtool check rules`` / ``check config`` on the shipped files, ``promtool test rules`` on
  deploy/prometheus/rules_test.yml, and every dashboard query compiled by promtool as a
  recording rule (PromQL syntax). promtool comes from Debian's prometheus package, installed by
  ``deploy/local/prometheus.sh install`` when missing (so CI on a bare machine gets it).
- A real Prometheus server (deploy/local/prometheus.sh, leased by this pytest, loopback only)
  scrapes a real worker's /metrics (tests/integration/pipeline.py) that has processed events,
  loads the shipped alert rules, and its HTTP API answers queries for the product's own metric
  and a Faust sensor metric with data. The Kubernetes liveness probe script runs against the
  same worker and says it is alive.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from .pipeline import (
    Pipeline,
    flapping_events,
    leased_server,
    metric,
    produce,
)
from .support import free_port

REPO = Path(__file__).resolve().parents[2]
PROM_DIR = REPO / "deploy" / "prometheus"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "segstream.json"
SCRIPT = REPO / "deploy" / "local" / "prometheus.sh"
LIVENESS = REPO / "deploy" / "k8s" / "probes" / "liveness.py"


def run(*args: str, cwd: Path = PROM_DIR) -> str:
    result = subprocess.run(list(args), cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=600, check=False)
    assert result.returncode == 0, f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}"
    return result.stdout


@pytest.fixture(scope="module")
def promtool() -> str:
    """Install Debian's prometheus package (server + promtool) if missing."""
    run(str(SCRIPT), "install", cwd=REPO)
    return "promtool"


def test_alert_rules_pass_promtool_check(promtool: str) -> None:
    out = run(promtool, "check", "rules", *map(str, sorted((PROM_DIR / "rules").glob("*.yml"))))
    assert "SUCCESS" in out


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus-kubernetes.yml"])
def test_scrape_configs_pass_promtool_check(promtool: str, config: str) -> None:
    out = run(promtool, "check", "config", config)
    assert "is valid prometheus config file syntax" in out


def test_alert_rules_unit_tests(promtool: str) -> None:
    assert "SUCCESS" in run(promtool, "test", "rules", "rules_test.yml")


def test_compose_file_passes_a_compose_client_config_check() -> None:
    """`docker compose config` (or Debian's docker-compose) parses and validates the file
    without an engine; tests/unit/test_deploy_compose.py adds the schema and structure checks."""
    out = run(str(REPO / "deploy" / "compose" / "check.sh"), cwd=REPO)
    assert "docker-compose.yml: valid" in out


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    doc = json.loads(DASHBOARD.read_text())
    rules = [{"record": f"dashboard:q{i}", "expr": t["expr"].replace("$__rate_interval", "1m")}
             for i, t in enumerate(t for p in doc["panels"] for t in p.get("targets", []))]
    assert len(rules) > 10
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert f"SUCCESS: {len(rules)} rules found" in run(promtool, "check", "rules", str(path))


# --- a real server scraping a real worker -----------------------------------------------------
def api(port: int, path: str, **params: str) -> Any:
    url = f"http://127.0.0.1:{port}/api/v1/{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    return body["data"]


def query(port: int, expr: str) -> list[dict[str, Any]]:
    data = api(port, "query", query=expr)
    assert data["resultType"] == "vector"
    return list(data["result"])


def wait_for(what: str, check: Any, timeout_s: float, on_timeout: Any = None) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = on_timeout() if on_timeout else ""
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}\n{extra}")
        time.sleep(0.5)


def test_real_prometheus_scrapes_the_worker(promtool: str, pipeline: Pipeline,
                                            tmp_path: Path) -> None:
    worker = pipeline.worker()
    worker.start()
    now = int(time.time() * 1000)
    events = flapping_events(random.Random(7), now, customers=20, per_customer=10)
    produce(pipeline.bootstrap, pipeline.names["raw"], events,
            partitions=pipeline.raw_partitions)
    wait_for("the worker to run events through the engine",
             lambda: (metric(worker, "segstream_segment_events_total") or 0) > 0, 120,
             worker.log_tail)

    web_port = worker.env["SEGSTREAM_WEB_PORT"]
    # the Kubernetes liveness probe (deploy/k8s/probes/liveness.py) on the live worker
    for _ in range(2):
        out = run(sys.executable, str(LIVENESS), "--port", web_port,
                  "--state", str(tmp_path / "liveness.json"))
        assert out.startswith("alive: "), out

    # once caught up, the worker must look idle to the probe (no pending work), or the probe
    # would restart every idle worker after --stall seconds
    def probe_says() -> str:
        return run(sys.executable, str(LIVENESS), "--port", web_port,
                   "--state", str(tmp_path / "liveness.json")).strip()

    wait_for("the probe to see an idle worker", lambda: probe_says() == "alive: idle", 90,
             lambda: urllib.request.urlopen(
                 f"http://127.0.0.1:{web_port}/metrics", timeout=5).read().decode()[-4000:])

    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(PROM_DIR / "rules" / "*.yml")],
        "scrape_configs": [{"job_name": "segstream-worker",
                            "static_configs": [{"targets": [f"127.0.0.1:{web_port}"]}]}],
    }))
    env = {"SEGSTREAM_PROMETHEUS_PORT": str(prom_port),
           "SEGSTREAM_PROMETHEUS_DATA": str(tmp_path / "prometheus"),
           "SEGSTREAM_PROMETHEUS_CONFIG": str(config), "SEGSTREAM_PROMETHEUS_FRESH": "1"}
    with leased_server("prometheus.sh", env, "a local Prometheus"):
        log = tmp_path / "prometheus" / "prometheus.log"
        show_log = lambda: log.read_text(errors="replace")[-3000:]  # noqa: E731

        up = wait_for("a successful scrape",
                      lambda: query(prom_port, 'up{job="segstream-worker"} == 1'), 60, show_log)
        assert up[0]["metric"]["instance"] == f"127.0.0.1:{web_port}"

        events_seen = wait_for(
            "segstream_segment_events_total > 0 in Prometheus",
            lambda: query(prom_port, "segstream_segment_events_total > 0"), 30, show_log)
        assert float(events_seen[0]["value"][1]) > 0
        faust = query(prom_port, "faust_messages_received_total")
        assert faust and float(faust[0]["value"][1]) > 0
        by_type = query(prom_port, "sum by (type) (segstream_ingest_events_valid_total)")
        assert {s["metric"]["type"] for s in by_type} >= {"page_view", "identify"}

        groups = api(prom_port, "rules")["groups"]
        loaded = {r["name"]: r for g in groups for r in g["rules"]}
        assert "SegstreamCommitsStalled" in loaded and "segstream:consumer_lag:sum" in loaded
        assert all(r["health"] != "err" for r in loaded.values()), \
            [r for r in loaded.values() if r["health"] == "err"]
        wait_for("a rule evaluation",
                 lambda: all(r.get("lastEvaluation", "").startswith("20")
                             for g in api(prom_port, "rules")["groups"] for r in g["rules"]),
                 30, show_log)
        # the worker is busy and committing: the stalled-commits alert must not even be pending
        active = {a["labels"]["alertname"] for a in api(prom_port, "alerts")["alerts"]}
        assert "SegstreamCommitsStalled" not in active and "SegstreamWorkerDown" not in active
