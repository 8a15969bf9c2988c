"""Structural checks of deploy/kubernetes/, for machines without a cluster.

`kubectl apply --dry-run=server` needs a cluster; these checks catch the mistakes that matter
instead: probes on paths the admin listener does not serve, ports that do not match the
config, a grace period shorter than the drain, a writable or root container, selectors that
match nothing, secrets the config names but the Deployment does not provide, alerts on
metrics the gateway does not export. The ConfigMap's gateway.toml also goes through the real
`gateway check-config`.

Run: pytest tests/check_kubernetes.py   (needs PyYAML; see tests/requirements.txt)
"""
import os
import pathlib
import re
import subprocess
import tomllib

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
GATEWAY = ROOT / "target" / "debug" / "gateway"


def duration_s(text):
    total = 0
    for number, unit in re.findall(r"(\d+)(ms|s|m|h)", text):
        total += int(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


@pytest.fixture(scope="module")
def objects():
    found = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found[doc["kind"]] = doc
    return found


@pytest.fixture(scope="module")
def config(objects):
    return tomllib.loads(objects["ConfigMap"]["data"]["gateway.toml"])


@pytest.fixture(scope="module")
def container(objects):
    (gateway,) = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    return gateway


def port_of(address):
    return int(address.rsplit(":", 1)[1])


def named_port(container, name):
    return next(p["containerPort"] for p in container["ports"] if p["name"] == name)


def admin_paths():
    """The GET paths the admin listener serves, from its module doc's endpoint table."""
    doc = (ROOT / "gateway" / "src" / "admin.rs").read_text()
    return set(re.findall(r"^//! \| GET \| `([^`?\[]+)", doc, re.M))


def test_every_kind_the_issue_asks_for_is_there(objects):
    for kind in ["Deployment", "ConfigMap", "Secret", "Service", "PodDisruptionBudget",
                 "HorizontalPodAutoscaler", "NetworkPolicy", "PrometheusRule"]:
        assert kind in objects, kind


def test_probes_point_at_real_admin_paths_on_the_admin_port(container, config):
    paths = admin_paths()
    assert {"/healthz", "/readyz"} <= paths, paths
    readiness = container["readinessProbe"]["httpGet"]
    liveness = container["livenessProbe"]["httpGet"]
    assert readiness["path"] == "/readyz"
    assert liveness["path"] == "/healthz"
    admin = named_port(container, "admin")
    assert admin == port_of(config["server"]["admin_listen"])
    for probe in (readiness, liveness):
        assert probe["port"] in ("admin", admin)
    # The admin listener must be reachable on the pod IP for the kubelet.
    assert config["server"]["admin_listen"].startswith("0.0.0.0:")


def test_ports_match_the_config_and_the_service(objects, container, config):
    assert named_port(container, "http") == port_of(config["server"]["listen"])
    (service_port,) = objects["Service"]["spec"]["ports"]
    assert service_port["targetPort"] in ("http", named_port(container, "http"))
    public, admin = (
        [p["port"] for p in rule["ports"]] for rule in objects["NetworkPolicy"]["spec"]["ingress"]
    )
    assert public == [port_of(config["server"]["listen"])]
    assert admin == [port_of(config["server"]["admin_listen"])]


def test_the_grace_period_outlasts_the_whole_drain(objects, container, config):
    server = config["server"]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain = (int(pre_stop[1]) + duration_s(server["drain_delay"])
             + duration_s(server["grace_period"]) + duration_s(server["shutdown_timeout"]))
    grace = objects["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > drain, f"terminationGracePeriodSeconds {grace} <= drain {drain}"
    # Readiness must notice the drain well within drain_delay.
    probe = container["readinessProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] <= duration_s(server["drain_delay"])


def test_replicas_disruption_and_autoscaling_fit_together(objects):
    deployment = objects["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for kind in ("PodDisruptionBudget",):
        assert objects[kind]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert objects["Service"]["spec"]["selector"].items() <= labels.items()
    assert objects["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    pdb = objects["PodDisruptionBudget"]["spec"]
    assert pdb["minAvailable"] < deployment["spec"]["replicas"]
    hpa = objects["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["minReplicas"] >= 2


def test_the_container_runs_as_non_root_on_a_read_only_filesystem(objects, container):
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    # pingora writes its pid file and upgrade socket in /tmp: it must be a writable volume.
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/tmp" in mounts
    assert "/etc/gateway" in mounts


def test_every_secret_the_config_names_comes_from_the_secret(objects, container, config):
    named = set()

    def walk(node):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value)
            elif key.endswith("_env"):
                named.add(value)

    walk(config)
    secret_keys = set(objects["Secret"]["stringData"])
    from_secret = {ref["secretRef"]["name"] for ref in container.get("envFrom", [])}
    assert from_secret == {objects["Secret"]["metadata"]["name"]}
    assert named <= secret_keys, named - secret_keys
    # No secret value in the ConfigMap itself.
    text = objects["ConfigMap"]["data"]["gateway.toml"]
    for key in ("secret", "password", "token", "signing_secret"):
        assert not re.search(rf"^\s*{key}\s*=", text, re.M), key
    assert "postgres://" not in text and "redis://" not in text


def test_alerts_use_metrics_the_gateway_exports(objects):
    source = (ROOT / "gateway" / "src" / "metrics.rs").read_text()
    exported = set(re.findall(r'"(gateway_[a-z_]+)"', source))
    rules = objects["PrometheusRule"]["spec"]["groups"][0]["rules"]
    names = {r["alert"] for r in rules}
    assert {"GatewayRedisUnavailable", "GatewayHigh5xxRate", "GatewayLoginFailureBurst",
            "GatewayValidationCacheFlushing"} <= names
    for rule in rules:
        used = set(re.findall(r"\b(gateway_[a-z_]+)", rule["expr"]))
        assert used and used <= exported, (rule["alert"], used - exported)
    outcomes = set(re.findall(r'Outcome::\w+ => "([a-z_]+)"', source))
    for rule in rules:
        for outcome in re.findall(r'outcome="([a-z_]+)"', rule["expr"]):
            assert outcome in outcomes, outcome


def test_the_configmap_passes_check_config(objects, tmp_path):
    if not GATEWAY.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{GATEWAY} missing: run cargo build first")
        pytest.skip("build the gateway first (cargo build)")
    text = objects["ConfigMap"]["data"]["gateway.toml"]
    # The app's in-cluster name does not resolve here; everything else is checked as is.
    text = text.replace("whalefall.default.svc.cluster.local:5001", "127.0.0.1:5001")
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    env = dict(os.environ)
    env.update({
        "GATEWAY_SESSION_SECRET": "0123456789abcdef0123456789abcdef-k8s",
        "GATEWAY_IDENTITY_SECRET": "fedcba9876543210fedcba9876543210-k8s",
        "GATEWAY_ADMIN_TOKEN": "admin-token-for-the-k8s-check",
        "REDIS_PASSWORD": "redis-password",
        "DATABASE_URL": "postgres://whalefall:pw@postgres:5432/whalefall",
    })
    out = subprocess.run([str(GATEWAY), "check-config", "--config", str(path)],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_logs_are_json_lines_for_the_collector(config):
    # Mixed text and JSON on one stream breaks a collector's parser: everything is JSON.
    assert config["log"]["format"] == "json"
    assert config["log"]["access"] == "stdout"
    assert config["audit"]["sink"] == "stdout"
