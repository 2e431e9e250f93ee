"""Static checks of deploy/: YAML and JSON parse, Kubernetes manifests, compose, Dockerfile,
systemd unit, and the configuration they pass to the node (no Docker engine or cluster)."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sfu.cli import _build_parser
from tests.deploy.helpers import (
    DEPLOY,
    K8S,
    ROOT,
    alert_exprs,
    dashboard_exprs,
    k8s_objects,
    load_dashboard,
    load_yaml_documents,
    yaml_files,
)

DRAIN_TIMEOUT_DEFAULT = 30.0
# Every SFU_* variable the node reads (sfu/cli.py, sfu/config.py).
NODE_ENV = frozenset({
    "SFU_HOST", "SFU_HTTP_PORT", "SFU_UDP_PORT", "SFU_PUBLIC_IP", "SFU_DATA_DIR",
    "SFU_API_KEY", "SFU_API_SECRET", "SFU_STORE", "SFU_DRAIN_TIMEOUT", "SFU_CASCADE_PORT",
})


def _read_env_file(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: {line!r} is not KEY=value"
            out[key.strip()] = value.strip()
    return out


# --- YAML / JSON ------------------------------------------------------------------------------


def test_deploy_tree_has_every_artefact() -> None:
    for rel in (
        "Dockerfile", "Dockerfile.dockerignore", "compose.yaml", ".env.example",
        "prometheus/prometheus.yml", "prometheus/alerts.yml", "prometheus/alerts_test.yml",
        "grafana/provisioning/datasources/prometheus.yml",
        "grafana/provisioning/dashboards/sfu.yml", "grafana/dashboards/sfu.json",
        "k8s/kustomization.yaml", "k8s/statefulset.yaml", "k8s/configmap.yaml",
        "k8s/secret.yaml", "k8s/service.yaml", "systemd/sfu.service",
    ):
        assert (DEPLOY / rel).is_file(), rel
    assert (ROOT / "docs" / "deploy.md").is_file()


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses(path: Path) -> None:
    docs = load_yaml_documents(path)
    assert docs, f"{path} is empty"
    assert all(isinstance(d, dict) for d in docs), f"{path}: every document must be a mapping"


def test_dashboard_json_is_a_grafana_dashboard() -> None:
    dash = load_dashboard()
    assert dash["uid"] and dash["title"]
    assert isinstance(dash["schemaVersion"], int)
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    assert len(panels) >= 10
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
        assert panel["datasource"]["uid"] == "${datasource}"
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
    assert dashboard_exprs(dash)
    # The provisioned datasource has the uid the dashboard's variable defaults to.
    [ds] = load_yaml_documents(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")
    assert ds["datasources"][0]["uid"] == "prometheus"
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"
    [provider] = load_yaml_documents(DEPLOY / "grafana/provisioning/dashboards/sfu.yml")
    assert provider["providers"][0]["options"]["path"] == "/etc/grafana/dashboards"


def test_alert_rules_have_severity_and_summary() -> None:
    [rules] = load_yaml_documents(DEPLOY / "prometheus/alerts.yml")
    names = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            names.add(rule["alert"])
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
            assert rule["annotations"]["summary"], rule["alert"]
    # The alerts the deployment promises (docs/deploy.md).
    assert {
        "SfuNodeDown", "SfuDropsHigh", "SfuSessionTimeoutSpike", "SfuHttp5xxErrors",
        "SfuHttp4xxSpike", "SfuCommerceOrderStoreErrors",
    } <= names
    assert len(alert_exprs()) == len(names)


# --- Kubernetes -------------------------------------------------------------------------------


def _objects() -> dict[tuple[str, str], dict[str, Any]]:
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for path, obj in k8s_objects():
        for field in ("apiVersion", "kind", "metadata"):
            assert field in obj, f"{path.name}: {field} missing"
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", obj["metadata"]["name"])
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "commerce-sfu", path.name
        key = (obj["kind"], obj["metadata"]["name"])
        assert key not in out, f"duplicate {key}"
        out[key] = obj
    return out


_API_VERSIONS = {
    "Namespace": "v1", "ConfigMap": "v1", "Secret": "v1", "Service": "v1",
    "StatefulSet": "apps/v1", "Deployment": "apps/v1",
}


def test_k8s_objects_have_valid_kinds_and_api_versions() -> None:
    objs = _objects()
    for (kind, name), obj in objs.items():
        assert kind in _API_VERSIONS, f"unexpected kind {kind}"
        assert obj["apiVersion"] == _API_VERSIONS[kind], (kind, name)
    [kustomization] = load_yaml_documents(K8S / "kustomization.yaml")
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk, "kustomization.yaml must list every manifest"


def _sfu_workload() -> dict[str, Any]:
    objs = _objects()
    found = [o for (kind, name), o in objs.items()
             if kind in ("StatefulSet", "Deployment") and name == "sfu"]
    assert len(found) == 1
    return found[0]


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    [container] = workload["spec"]["template"]["spec"]["containers"]
    return container


def test_k8s_workload_is_well_formed() -> None:
    workload = _sfu_workload()
    spec = workload["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    pod = spec["template"]["spec"]
    container = _container(workload)
    assert container["image"]
    assert container["args"][:1] == ["serve"] and "--production" in container["args"]
    ports = {p["name"]: p for p in container["ports"]}
    assert ports["http"]["protocol"] == "TCP" and ports["media"]["protocol"] == "UDP"
    if pod.get("hostNetwork"):
        # Two pods on one host would clash on the ports.
        anti = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert anti[0]["topologyKey"] == "kubernetes.io/hostname"
        assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    if workload["kind"] == "StatefulSet":
        assert spec["serviceName"] in {n for (k, n) in _objects() if k == "Service"}


def test_k8s_probes_point_at_healthz_and_liveness_survives_the_drain() -> None:
    container = _container(_sfu_workload())
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    ready = container["readinessProbe"]["httpGet"]
    assert ready["path"] == "/healthz"
    assert ready["port"] in ("http", ports["http"])
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    live = container["livenessProbe"]["httpGet"]
    # /healthz is 503 while draining; a liveness probe on it would kill a draining pod.
    assert live["path"] != "/healthz"
    assert live["port"] in ("http", ports["http"])


def _config_env() -> dict[str, str]:
    data: dict[str, str] = _objects()[("ConfigMap", "sfu-config")]["data"]
    return data


def test_k8s_config_and_secret_are_referenced() -> None:
    objs = _objects()
    container = _container(_sfu_workload())
    refs = container["envFrom"]
    config_refs = {r["configMapRef"]["name"] for r in refs if "configMapRef" in r}
    secret_refs = {r["secretRef"]["name"] for r in refs if "secretRef" in r}
    assert ("ConfigMap", "sfu-config") in objs and "sfu-config" in config_refs
    secret = objs[("Secret", "sfu-api")]
    assert "sfu-api" in secret_refs
    assert set(secret["stringData"]) == {"SFU_API_KEY", "SFU_API_SECRET"}
    # The placeholder must not be usable: the node needs a secret of 32+ characters.
    assert len(secret["stringData"]["SFU_API_SECRET"]) < 32
    config = _config_env()
    assert set(config) <= NODE_ENV
    assert not {"SFU_API_KEY", "SFU_API_SECRET"} & set(config), "secrets belong in the Secret"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert int(config["SFU_HTTP_PORT"]) == ports["http"]
    assert int(config["SFU_UDP_PORT"]) == ports["media"]
    env_names = {e["name"] for e in container.get("env", [])}
    assert env_names <= NODE_ENV


def test_k8s_grace_period_covers_the_drain() -> None:
    pod = _sfu_workload()["spec"]["template"]["spec"]
    drain = float(_config_env().get("SFU_DRAIN_TIMEOUT", DRAIN_TIMEOUT_DEFAULT))
    grace = pod["terminationGracePeriodSeconds"]
    assert drain + 5 <= grace <= drain + 60


def test_k8s_redis_is_durable() -> None:
    redis = _objects()[("StatefulSet", "sfu-redis")]
    args = " ".join(_container(redis)["args"])
    assert "--appendonly yes" in args and "--appendfsync always" in args
    assert _config_env()["SFU_STORE"].startswith("redis://sfu-redis:6379")


# --- compose ----------------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    [compose] = load_yaml_documents(DEPLOY / "compose.yaml")
    return compose


def test_compose_services() -> None:
    services = _compose()["services"]
    nodes = {name: s for name, s in services.items() if name.startswith("sfu-")}
    assert len(nodes) == 2
    assert {"redis", "prometheus", "grafana"} <= set(services)
    udp_ports = set()
    for name, node in nodes.items():
        assert node["build"]["dockerfile"] == "deploy/Dockerfile", name
        assert (DEPLOY / node["build"]["context"] / node["build"]["dockerfile"]).is_file()
        env = node["environment"]
        assert "SFU_API_SECRET" in env and ":?" in env["SFU_API_SECRET"], "secret is required"
        assert set(env) <= NODE_ENV
        udp = env["SFU_UDP_PORT"]
        # The media port is advertised as-is in ICE candidates: published 1:1.
        assert f"{udp}:{udp}/udp" in node["ports"], name
        udp_ports.add(udp)
        assert [f["path"] for f in node["env_file"]] == [".env.example", ".env"]
        grace = float(node["stop_grace_period"].rstrip("s"))
        assert grace > float(_read_env_file(DEPLOY / ".env.example")["SFU_DRAIN_TIMEOUT"])
        assert "--production" in node["command"]
    assert len(udp_ports) == 2
    redis_cmd = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_cmd and "--appendfsync always" in redis_cmd
    for _name, svc in services.items():
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"compose mounts missing {source}"
    # Prometheus scrapes both nodes on their in-network HTTP port.
    [prom] = load_yaml_documents(DEPLOY / "prometheus/prometheus.yml")
    targets = {t for job in prom["scrape_configs"] if job["job_name"] == "sfu"
               for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {f"{name}:{nodes[name]['environment']['SFU_HTTP_PORT']}" for name in nodes}


def test_env_example_names_only_real_settings() -> None:
    env = _read_env_file(DEPLOY / ".env.example")
    sfu_vars = {k for k in env if k.startswith("SFU_")}
    assert sfu_vars <= NODE_ENV
    assert env["SFU_API_SECRET"] == "", "no usable secret in an example file"


def test_docs_cover_every_flag_and_variable() -> None:
    doc = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    subparsers = next(
        a for a in _build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    )
    serve = subparsers.choices["serve"]
    for action in serve._actions:
        for flag in action.option_strings:
            if flag.startswith("--") and flag != "--help":
                assert re.search(rf"`{re.escape(flag)}[` ]", doc), (
                    f"docs/deploy.md does not document {flag}"
                )
    for name in NODE_ENV:
        assert f"`{name}`" in doc, f"docs/deploy.md does not document {name}"


# --- Dockerfile -------------------------------------------------------------------------------


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_is_multi_stage_non_root_with_healthcheck() -> None:
    instructions = _dockerfile()
    froms = [args for ins, args in instructions if ins == "FROM"]
    assert len(froms) >= 2, "multi-stage: a builder and a runtime stage"
    assert all(" AS " in f.upper() for f in froms), "every stage is named"
    assert any("--from=builder" in args for ins, args in instructions if ins == "COPY")
    # Everything after the last FROM is the runtime image.
    last_from = max(i for i, (ins, _) in enumerate(instructions) if ins == "FROM")
    runtime = instructions[last_from:]
    users = [args for ins, args in runtime if ins == "USER"]
    assert users, "the runtime stage must set USER"
    assert users[-1].split(":")[0] not in ("root", "0"), "must not run as root"
    health = [args for ins, args in runtime if ins == "HEALTHCHECK"]
    assert len(health) == 1 and "/healthz" in health[0]
    exposed = " ".join(args for ins, args in runtime if ins == "EXPOSE").split()
    assert "8080/tcp" in exposed and "10000/udp" in exposed
    cmd = " ".join(args for ins, args in runtime if ins in ("ENTRYPOINT", "CMD"))
    assert "sfu" in cmd and "serve" in cmd and "0.0.0.0" in cmd and "--production" in cmd
    assert any(ins == "STOPSIGNAL" and args == "SIGTERM" for ins, args in runtime)
    # Base images pin Python 3.11 like pyproject.toml.
    assert any("python:3.11" in args for ins, args in instructions if ins == "ARG")
    # No secrets baked into the image.
    assert not any("SFU_API_SECRET" in args for ins, args in instructions if ins in ("ENV", "ARG"))


def test_dockerfile_copies_only_what_the_wheel_needs() -> None:
    copied = {args.split()[0] for ins, args in _dockerfile()
              if ins == "COPY" and not args.startswith("--")}
    for source in copied:
        assert (ROOT / source).exists(), f"COPY of missing {source}"
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    assert ignore and "*" in ignore, "context is deny-by-default"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert copied <= allowed


# --- systemd ----------------------------------------------------------------------------------


def _unit() -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in (DEPLOY / "systemd" / "sfu.service").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_systemd_unit_is_hardened_and_drains() -> None:
    service = _unit()["Service"]

    def one(key: str) -> str:
        return service[key][-1]

    assert one("DynamicUser") == "yes" or one("User") not in ("", "root")
    assert one("ProtectSystem") == "strict"
    assert one("StateDirectory")
    assert one("EnvironmentFile")
    assert one("Restart") == "on-failure"
    assert one("KillSignal") == "SIGTERM"
    assert one("NoNewPrivileges") == "yes"
    assert "sfu serve" in one("ExecStart") and "--production" in one("ExecStart")
    stop = float(one("TimeoutStopSec").rstrip("s"))
    assert stop > DRAIN_TIMEOUT_DEFAULT
    data_dir = next(v.split("=", 1)[1] for v in service["Environment"]
                    if v.startswith("SFU_DATA_DIR="))
    assert data_dir == f"/var/lib/{one('StateDirectory')}"
    env_example = _read_env_file(DEPLOY / "systemd" / "sfu.env.example")
    assert set(env_example) <= NODE_ENV
    assert float(env_example.get("SFU_DRAIN_TIMEOUT", DRAIN_TIMEOUT_DEFAULT)) < stop


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze not installed (package systemd)")
    # ExecStart must exist for verify; the installed path is not on this machine.
    text = (DEPLOY / "systemd" / "sfu.service").read_text(encoding="utf-8")
    unit = tmp_path / "sfu.service"
    unit.write_text(re.sub(r"(?m)^ExecStart=\S+", f"ExecStart={shutil.which('true')}", text))
    result = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True,
                            timeout=60, check=False)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and output == "", output
