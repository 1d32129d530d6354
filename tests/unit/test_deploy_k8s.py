"""deploy/k8s checked offline: `kubectl kustomize` builds it, every object passes the strict
Kubernetes schemas (unknown fields refused) bundled in the kubernetes-validate package, then
structural checks.

No cluster here (kubeconform would need its schemas from the network). The structural checks
are ours: selectors and Service ports match the pods, every mounted ConfigMap or
Secret key exists, SEGSTREAM_* variables are real settings with accepted values and name the
mounted files, probes point at the right endpoints and the liveness script is mounted, worker
replicas fit the bundle partitions, and the Prometheus DNS names are the headless Services.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from processors.lang.compile import compile_catalogue
from processors.lang.load import load_definitions
from stream.settings import Settings, setting_specs

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
NAMESPACE = "segstream"
#: the oldest Kubernetes the manifests target (policy/v1 PDBs, seccompProfile) and the newest
#: the package knows
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())


@cache
def built() -> tuple[dict[str, Any], ...]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (Debian package) is needed for `kubectl kustomize`"
    out = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def of_kind(kind: str) -> Iterator[dict[str, Any]]:
    return (d for d in built() if d["kind"] == kind)


def one(kind: str, name_prefix: str) -> dict[str, Any]:
    found = [d for d in of_kind(kind) if d["metadata"]["name"].startswith(name_prefix)]
    assert len(found) == 1, f"{kind} {name_prefix}: {len(found)} found"
    return found[0]


def deployment(name: str) -> dict[str, Any]:
    return one("Deployment", name)


def container(name: str) -> dict[str, Any]:
    (c,) = deployment(name)["spec"]["template"]["spec"]["containers"]
    return c


def env_of(name: str) -> dict[str, str]:
    """The container's environment as the pod sees it (envFrom ConfigMaps, then env)."""
    c = container(name)
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        env.update(one("ConfigMap", source["configMapRef"]["name"])["data"])
    env.update({e["name"]: e["value"] for e in c.get("env", [])})
    return env


def mounted_files(name: str) -> dict[str, tuple[str, str, str]]:
    """Path in the container -> (kind, object name, key) for every ConfigMap/Secret file."""
    spec = deployment(name)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    files: dict[str, tuple[str, str, str]] = {}
    for mount in container(name)["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            obj = one("ConfigMap", volume["configMap"]["name"])
            keys = {k: k for k in obj["data"]}
        elif "secret" in volume:
            obj = one("Secret", volume["secret"]["secretName"])
            keys = {i["path"]: i["key"] for i in volume["secret"].get("items", [])} or {
                k: k for k in obj.get("stringData", obj.get("data", {}))}
        else:
            continue
        for path, key in keys.items():
            files[f"{mount['mountPath']}/{path}"] = (obj["kind"], obj["metadata"]["name"], key)
    return files


def test_kustomize_builds_every_piece() -> None:
    kinds = sorted(d["kind"] for d in built())
    assert kinds.count("Deployment") == 3 and kinds.count("Service") == 5
    assert {"Namespace", "ConfigMap", "Secret", "PodDisruptionBudget"} <= set(kinds)
    for doc in built():
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]["name"]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_passes_the_strict_kubernetes_schema(version: str) -> None:
    for doc in built():
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_schema_check_catches_a_misspelt_field() -> None:
    svc = dict(one("Service", "segstream-worker-pods"))
    svc["spec"] = {**svc["spec"], "publishNotReadyAdresses": True}
    with pytest.raises(kubernetes_validate.ValidationError, match="publishNotReadyAdresses"):
        kubernetes_validate.validate(svc, KUBERNETES_VERSIONS[0], strict=True)
    bad_probe = one("Deployment", "segstream-worker")
    pod = bad_probe["spec"]["template"]["spec"]
    broken = {**bad_probe, "spec": {**bad_probe["spec"], "template": {
        **bad_probe["spec"]["template"], "spec": {**pod, "containers": [
            {**pod["containers"][0], "livenessProbe": {"exec": {"command": "not-a-list"}}}]}}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


def test_selectors_and_service_ports_match_the_pods() -> None:
    deployments = list(of_kind("Deployment"))
    for d in deployments:
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert d["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for svc in of_kind("Service"):
        targets = [d for d in deployments
                   if svc["spec"]["selector"].items()
                   <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(targets) == 1, svc["metadata"]["name"]
        (c,) = targets[0]["spec"]["template"]["spec"]["containers"]
        names = {p["name"] for p in c["ports"]}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in names, svc["metadata"]["name"]


def test_settings_are_real_and_accepted() -> None:
    fields = {s.env for s in setting_specs()}
    for name in ("segstream-worker", "segstream-collector"):
        env = env_of(name)
        unknown = {k for k in env if k.startswith("SEGSTREAM_")} - fields
        assert not unknown, f"{name}: not settings: {sorted(unknown)}"
        Settings.from_env(env)  # raises SettingsError on a value it refuses


def test_worker_replicas_fit_the_bundle_partitions() -> None:
    settings = Settings.from_env(env_of("segstream-worker"))
    assert deployment("segstream-worker")["spec"]["replicas"] <= settings.topics.bundle_partitions
    assert settings.process.agents == ("ingest", "segmentation")
    assert settings.process.web_host == "0.0.0.0"


@pytest.mark.parametrize(("name", "variables"), [
    ("segstream-worker", ("SEGSTREAM_SEGMENTS_FILE", "SEGSTREAM_API_TOKENS_FILE")),
    ("segstream-collector", ("SEGSTREAM_COLLECTOR_WRITE_KEYS_FILE",)),
])
def test_file_settings_name_mounted_files(name: str, variables: tuple[str, ...]) -> None:
    files = mounted_files(name)
    env = env_of(name)
    for variable in variables:
        assert env[variable] in files, f"{name}: {variable}={env[variable]} is not mounted"


def test_mounted_segment_definitions_compile() -> None:
    kind, obj, key = mounted_files("segstream-worker")[env_of("segstream-worker")[
        "SEGSTREAM_SEGMENTS_FILE"]]
    text = one(kind, obj)["data"][key]
    assert text == (K8S / "segments.yaml").read_text()
    catalogue = compile_catalogue(load_definitions(text))
    assert catalogue.names


def test_worker_probes() -> None:
    c = container("segstream-worker")
    port = int(env_of("segstream-worker")["SEGSTREAM_WEB_PORT"])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports[c["readinessProbe"]["httpGet"]["port"]] == port
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert c["startupProbe"]["httpGet"]["path"] == "/health"
    command = c["livenessProbe"]["exec"]["command"]
    script = command[1]
    assert script in mounted_files("segstream-worker"), "the liveness script is not mounted"
    kind, obj, key = mounted_files("segstream-worker")[script]
    assert one(kind, obj)["data"][key] == (K8S / "probes" / "liveness.py").read_text()
    assert command[command.index("--port") + 1] == str(port)
    state = Path(command[command.index("--state") + 1])
    writable = {m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")}
    assert str(state.parent) in writable, "the probe's state file must be on a writable volume"
    stall = float(command[command.index("--stall") + 1])
    period = c["livenessProbe"]["periodSeconds"] * c["livenessProbe"]["failureThreshold"]
    assert stall > 60 and period < stall


def test_collector_probes() -> None:
    """Traffic only to a collector connected to Kafka (/ready); a broker outage does not restart
    it (/health answers whenever the process does)."""
    c = container("segstream-collector")
    port = int(env_of("segstream-collector")["SEGSTREAM_COLLECTOR_PORT"])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    paths = {kind: (c[kind]["httpGet"]["path"], ports[c[kind]["httpGet"]["port"]])
             for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert paths == {"startupProbe": ("/health", port), "readinessProbe": ("/ready", port),
                     "livenessProbe": ("/health", port)}


def test_pods_are_hardened_and_sized() -> None:
    for d in of_kind("Deployment"):
        spec = d["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        for c in spec["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["resources"]["requests"]["memory"] and c["resources"]["limits"]["memory"]
            assert c["image"] == "segstream:0.1.0"
            assert c["args"][0] in {"worker", "collector", "deliver"}


def test_prometheus_dns_names_are_the_headless_services() -> None:
    config = yaml.safe_load((REPO / "deploy/prometheus/prometheus-kubernetes.yml").read_text())
    for job in config["scrape_configs"]:
        (sd,) = job["dns_sd_configs"]
        (fqdn,) = sd["names"]
        service, namespace = fqdn.split(".")[:2]
        assert namespace == NAMESPACE
        svc = one("Service", service)
        assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"]
        assert sd["port"] in {p["port"] for p in svc["spec"]["ports"]}
        component = svc["metadata"]["labels"]["app.kubernetes.io/component"]
        assert job["job_name"] == f"segstream-{component}"


def test_podmonitor_names_jobs_like_the_rules() -> None:
    doc = yaml.safe_load((K8S / "podmonitor.yaml").read_text())
    assert doc["kind"] == "PodMonitor"
    (endpoint,) = doc["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    assert endpoint["relabelings"][0]["replacement"] == "segstream-$1"
