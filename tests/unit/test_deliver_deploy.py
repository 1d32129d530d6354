"""`segstream deliver` in deploy/: the compose service and the Kubernetes Deployment use real
settings, mount the destinations file and the webhook secret they name, the shipped example
destinations files validate, Prometheus scrapes it, and the dashboard and the alerts use its
metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from stream.deliver.config import load_destinations
from stream.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


def validate_example(path: Path, tmp_path: Path, mounted_secret: str) -> None:
    """The file validates once its secret_file exists (here: a temporary stand-in)."""
    text = path.read_text()
    assert f"secret_file: {mounted_secret}" in text
    stand_in = tmp_path / "secret"
    stand_in.write_text("x" * 32)
    (dest,) = load_destinations(text.replace(mounted_secret, str(stand_in)), name=str(path))
    assert dest.secret == "x" * 32


def test_compose_deliver_service(tmp_path: Path) -> None:
    doc = yaml.safe_load((DEPLOY / "compose" / "docker-compose.yml").read_text())
    svc = doc["services"]["deliver"]
    assert svc["command"][0] == "deliver" and svc["profiles"] == ["deliver"]
    env = {k: str(v) for k, v in svc["environment"].items() if k.startswith("SEGSTREAM_")}
    settings = Settings.from_env(env)
    assert settings.process.web_host == "0.0.0.0" and settings.deliver.port == 6067
    mounts = {v.split(":")[1]: v.split(":")[0] for v in svc["volumes"]}
    dest_file = svc["command"][svc["command"].index("--destinations") + 1]
    source = DEPLOY / "compose" / mounts[dest_file]
    validate_example(source, tmp_path, "/run/secrets/webhook_secret")
    assert svc["secrets"] == ["webhook_secret"] and "webhook_secret" in doc["secrets"]
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = [j for j in prom["scrape_configs"] if j["job_name"] == "segstream-deliver"]
    assert job["dns_sd_configs"][0] == {"names": ["deliver"], "type": "A", "port": 6067,
                                        "refresh_interval": "30s"}


def k8s_deliver() -> dict[str, Any]:
    for doc in yaml.safe_load_all((DEPLOY / "k8s" / "deliver.yaml").read_text()):
        if doc["kind"] == "Deployment":
            return dict(doc)
    raise AssertionError("no Deployment in deliver.yaml")


def test_k8s_deliver_deployment(tmp_path: Path) -> None:
    d = k8s_deliver()
    (c,) = d["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in c["env"]}
    settings = Settings.from_env(env)
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    path = Path(settings.deliver.destinations_file)
    assert str(path.parent) == mounts["destinations"]
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    (gen,) = [g for g in kustomization["configMapGenerator"]
              if g["name"] == "segstream-destinations"]
    assert gen["files"] == [path.name] and "deliver.yaml" in kustomization["resources"]
    validate_example(DEPLOY / "k8s" / path.name, tmp_path,
                     f"{mounts['secrets']}/webhook_secret")
    secret = yaml.safe_load((DEPLOY / "k8s" / "secret.yaml").read_text())
    assert "webhook_secret" in secret["stringData"]
    assert {p["containerPort"] for p in c["ports"]} == {settings.deliver.port}


def test_dashboard_and_alerts_use_the_delivery_metrics() -> None:
    dashboard = (DEPLOY / "grafana" / "dashboards" / "segstream.json").read_text()
    titles = [p["title"] for p in json.loads(dashboard)["panels"]]
    assert "Webhook delivery" in titles
    for name in ("segstream_deliver_changes_delivered_total",
                 "segstream_deliver_changes_dead_lettered_total", "segstream_deliver_retries_total",
                 "segstream_deliver_latency_seconds_bucket", "segstream_deliver_pending_changes",
                 "segstream_deliver_consumer_lag"):
        assert name in dashboard, name
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules" / "segstream.yml").read_text())
    alerts = {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert "segstream_deliver_changes_dead_lettered_total" in \
        alerts["SegstreamDeliveryDeadLetters"]
    assert "segstream_deliver_consumer_lag" in alerts["SegstreamDeliveryLagGrowing"]
