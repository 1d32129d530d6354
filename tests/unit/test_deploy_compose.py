"""deploy/compose/docker-compose.yml checked without a Docker engine.

No `docker compose` plugin exists on these machines, so the file is validated against the
Compose Specification's JSON Schema (vendored from npm, deploy/compose/schema/NOTICE.md), then
structurally: every service has an image or a build whose Dockerfile exists, every SEGSTREAM_*
variable is a field of :class:`stream.settings.Settings` with a value it accepts, every bind
mount and secret file is in the repository (or made by init-secrets.sh), and the worker's
replicas fit the bundle partitions.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from stream.settings import Settings, SettingsError, setting_specs

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO / "deploy" / "compose"
COMPOSE = COMPOSE_DIR / "docker-compose.yml"
SCHEMA = COMPOSE_DIR / "schema" / "compose-spec.json"
#: Go duration strings as compose accepts them (healthcheck intervals, grace periods).
DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|ms|s|m|h))+$")
INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(:?-([^}]*))?\}")


def load() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict)
    return doc


def schema_errors(doc: dict[str, Any]) -> list[str]:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft201909Validator(schema)
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(doc)]


def interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` with every variable unset (the defaults apply)."""
    return INTERPOLATION.sub(lambda m: m.group(3) or "", value)


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: interpolate(str(v)) for k, v in env.items()}


def test_compose_file_matches_the_compose_spec_schema() -> None:
    assert schema_errors(load()) == []


def test_the_schema_check_catches_mistakes() -> None:
    """The validation is not vacuous: a typo'd key and a wrong type are both reported."""
    doc = load()
    typo = copy.deepcopy(doc)
    typo["services"]["worker"]["enviroment"] = {"X": "1"}
    bad_type = copy.deepcopy(doc)
    bad_type["services"]["redis"]["healthcheck"]["retries"] = "ten"
    assert any("enviroment" in e for e in schema_errors(typo))
    assert any("retries" in e for e in schema_errors(bad_type))


def test_topology_is_complete() -> None:
    services = load()["services"]
    assert {"kafka", "redis", "worker", "collector", "prometheus", "grafana"} <= set(services)
    kafka_env = env_of(services["kafka"])
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert kafka_env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    i = services["redis"]["command"].index("--appendonly")
    assert services["redis"]["command"][i + 1] == "yes"
    assert services["worker"]["command"] == ["worker"]
    assert services["collector"]["command"] == ["collector"]


def test_every_service_has_an_image_or_a_buildable_dockerfile() -> None:
    for name, service in load()["services"].items():
        assert "image" in service or "build" in service, name
        build = service.get("build")
        if build is None:
            assert ":" in service["image"], f"{name}: pin an image tag"
            assert not service["image"].endswith(":latest"), f"{name}: pin an image tag"
            continue
        context = (COMPOSE_DIR / build["context"]).resolve()
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), f"{name}: no Dockerfile at {dockerfile}"
        for line in dockerfile.read_text().splitlines():
            m = re.match(r"^COPY (?!--from)(.+) \S+$", line)
            for src in (m.group(1).split() if m else []):
                assert (context / src).exists(), f"{dockerfile}: COPY source {src} missing"


def test_segstream_variables_are_real_settings_with_accepted_values() -> None:
    services = load()["services"]
    fields = {s.env for s in setting_specs()}
    for name in ("worker", "collector"):
        env = {k: v for k, v in env_of(services[name]).items() if k.startswith("SEGSTREAM_")}
        assert set(env) <= fields, f"{name}: unknown settings {sorted(set(env) - fields)}"
        try:
            settings = Settings.from_env(env)
        except SettingsError as exc:
            pytest.fail(f"{name}: {exc}")
        assert settings.process.web_host == "0.0.0.0" or name == "collector"
    worker = Settings.from_env(
        {k: v for k, v in env_of(services["worker"]).items() if k.startswith("SEGSTREAM_")})
    assert worker.process.web_port == 6066 and worker.process.agents == ("ingest", "segmentation")
    assert services["worker"]["deploy"]["replicas"] <= worker.topics.bundle_partitions
    # one host port per replica the range allows, at least as many as the partitions
    port_range = services["worker"]["ports"][0].split(":")[1]
    low, high = (int(p) for p in port_range.split("-"))
    assert high - low + 1 >= worker.topics.bundle_partitions


def test_mounted_files_exist() -> None:
    doc = load()
    for name, service in doc["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (COMPOSE_DIR / source).exists(), f"{name}: {source} is missing"
            else:
                assert source in doc["volumes"], f"{name}: undeclared volume {source}"
        for secret in service.get("secrets", []):
            assert secret in doc["secrets"], f"{name}: undeclared secret {secret}"
    init = (COMPOSE_DIR / "init-secrets.sh").read_text()
    ignored = (COMPOSE_DIR / ".gitignore").read_text().split()
    for secret in doc["secrets"].values():
        path = Path(secret["file"]).name
        assert f"{path}" in init and path in ignored, f"{path}: not made by init-secrets.sh"


def test_durations_and_dependencies() -> None:
    services = load()["services"]
    for name, service in services.items():
        for key in ("interval", "timeout", "start_period"):
            value = service.get("healthcheck", {}).get(key)
            assert value is None or DURATION.match(value), f"{name}.healthcheck.{key}={value}"
        grace = service.get("stop_grace_period")
        assert grace is None or DURATION.match(grace), f"{name}.stop_grace_period={grace}"
        depends = service.get("depends_on", {})
        for dep, cond in (depends.items() if isinstance(depends, dict) else []):
            assert dep in services, f"{name} depends on unknown {dep}"
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s healthcheck"


def test_compose_mounts_the_checked_prometheus_and_grafana_files() -> None:
    services = load()["services"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["prometheus"]["volumes"]}
    assert mounts["/etc/prometheus/prometheus.yml"] == "../prometheus/prometheus.yml"
    assert mounts["/etc/prometheus/rules"] == "../prometheus/rules"
    grafana = {v.split(":")[1]: v.split(":")[0] for v in services["grafana"]["volumes"]}
    assert grafana["/etc/grafana/provisioning"] == "../grafana/provisioning"
    home = env_of(services["grafana"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    rel = Path(home).relative_to("/etc/grafana/dashboards")
    assert (COMPOSE_DIR / grafana["/etc/grafana/dashboards"] / rel).is_file()


def test_prometheus_and_grafana_find_the_compose_services() -> None:
    services = load()["services"]
    ports = {"worker": Settings.from_env(env_of(services["worker"])).process.web_port,
             "collector": Settings.from_env(env_of(services["collector"])).collector.port}
    config = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for name, port in ports.items():
        (sd,) = jobs[f"segstream-{name}"]["dns_sd_configs"]
        assert sd["names"] == [name] and sd["port"] == port
    source = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert source["datasources"][0]["url"] == "http://prometheus:9090"
    assert "prometheus" in services


def test_collector_healthcheck_asks_ready_on_its_port() -> None:
    """Compose's `service_healthy` for the collector means connected to Kafka (/ready), like the
    worker's; /health would be healthy with no broker."""
    services = load()["services"]
    for name, var, path in (("collector", "SEGSTREAM_COLLECTOR_PORT", "/ready"),
                            ("worker", "SEGSTREAM_WEB_PORT", "/ready")):
        port = env_of(services[name])[var]
        test = " ".join(services[name]["healthcheck"]["test"])
        assert f"http://127.0.0.1:{port}{path}'" in test, f"{name}: {test}"
