"""The Helm chart: deploy/check.sh passes (helm lint, kubernetes-validate, checkov with zero failures), fails on an
insecure override, and the rendered manifests hold what a hospital deployment relies on.

No cluster: the manifests are what is checked. The first run builds helm from the Go module proxy and installs
checkov and kubernetes-validate into their own virtualenvs under ~/.cache/fhir-scribe/tools (minutes); later runs
take seconds.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHECK = REPO / "deploy" / "check.sh"
CHART = REPO / "deploy" / "helm" / "fhir-scribe"
CI = CHART / "ci"
TOOLS_TIMEOUT_S = 1800  # a cold machine builds helm (minutes on 2 cores) and installs checkov
DEFAULT_DRAIN_S = 25  # service/config.py ServerSettings.drain_s


def _run_check(out: Path, *helm_args: str, scenarios: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEPLOY_CHECK_OUT": str(out)}
    if scenarios:
        env["DEPLOY_CHECK_SCENARIOS"] = scenarios
    return subprocess.run(["bash", str(CHECK), *helm_args], env=env, capture_output=True, text=True,
                          timeout=TOOLS_TIMEOUT_S)


@pytest.fixture(scope="module")
def check(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("deploy-check")
    return _run_check(out), out


@pytest.fixture(scope="module")
def rendered(check: tuple[subprocess.CompletedProcess[str], Path]) -> dict[str, dict[str, dict]]:
    """scenario -> kind -> the object, from the files deploy/check.sh rendered (one object per template)."""
    result, out = check
    assert result.returncode == 0, result.stderr[-4000:]
    scenarios: dict[str, dict[str, dict]] = {}
    for scenario in ("default", "all-on", "chart-secrets"):
        objects = [yaml.safe_load(p.read_text()) for p in sorted((out / scenario).glob("*/templates/*.yaml"))]
        scenarios[scenario] = {o["kind"]: o for o in objects}
        assert len(scenarios[scenario]) == len(objects), "one object per kind expected"
    return scenarios


@pytest.fixture(scope="module")
def helm(check: tuple[subprocess.CompletedProcess[str], Path]) -> str:
    return subprocess.run(["bash", str(CHECK), "--helm-path"], capture_output=True, text=True, check=True,
                          timeout=TOOLS_TIMEOUT_S).stdout.strip()


def template(helm: str, *args: str) -> dict[str, dict]:
    result = subprocess.run([helm, "template", "fhir-scribe", str(CHART), "--namespace", "fhir-scribe",
                             "--kube-version", "1.30.0", *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return {o["kind"]: o for o in yaml.safe_load_all(result.stdout) if o}


def pod(objects: dict[str, dict]) -> dict:
    return objects["Deployment"]["spec"]["template"]["spec"]


def container(objects: dict[str, dict]) -> dict:
    [only] = pod(objects)["containers"]
    return only


def env(objects: dict[str, dict]) -> dict[str, dict]:
    return {e["name"]: e for e in container(objects)["env"]}


def test_check_passes_with_zero_failed_checks(check: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    result, _ = check
    assert result.returncode == 0, result.stderr[-4000:]
    log = result.stderr
    assert re.search(r"^Passed checks: [1-9]\d*, Failed checks: 0,", log, re.M), log[-2000:]
    assert "deploy-check passed: scenarios default all-on chart-secrets" in log
    # The custom resources are the only kinds not schema-validated, and the log says so.
    skipped = re.findall(r"skipped \(custom resource, no built-in schema\): (\w+)", log)
    assert sorted(set(skipped)) == ["ScaledObject", "ServiceMonitor"]
    assert len(re.findall(r"^  valid: ", log, re.M)) >= 17


def test_insecure_override_fails_the_check_naming_the_checks(tmp_path: Path, rendered: dict) -> None:
    result = _run_check(tmp_path, "--set", "securityContext.readOnlyRootFilesystem=false",
                        "--set", "securityContext.privileged=true", scenarios="default")
    assert result.returncode != 0
    assert "deploy-check FAILED: checkov" in result.stderr
    assert "CKV_K8S_22" in result.stderr  # read-only root file system
    assert "CKV_K8S_16" in result.stderr  # privileged container


def test_a_manifest_outside_the_kubernetes_schema_fails_the_check(tmp_path: Path, rendered: dict) -> None:
    # A misspelt field is silently ignored by a lenient API server; the strict schema validation refuses it.
    result = _run_check(tmp_path, "--set", "podSecurityContext.runAsNonRooot=true", scenarios="default")
    assert result.returncode != 0
    assert "did not validate" in result.stderr and "runAsNonRooot" in result.stderr


@pytest.mark.parametrize("scenario", ["default", "all-on", "chart-secrets"])
def test_pod_runs_locked_down(rendered: dict, scenario: str) -> None:
    objects = rendered[scenario]
    spec = pod(objects)
    assert spec["automountServiceAccountToken"] is False
    assert objects["ServiceAccount"]["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001 and spec["securityContext"]["runAsGroup"] == 10001
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(objects)["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    # The image needs no writable path: nothing but the read-only secrets volume is mounted.
    assert all(not v.get("emptyDir") for v in spec.get("volumes", []))
    assert all(m["readOnly"] for m in container(objects).get("volumeMounts", []))
    resources = container(objects)["resources"]
    assert set(resources) == {"requests", "limits"}
    assert all(set(resources[k]) == {"cpu", "memory"} for k in resources)
    for obj in objects.values():
        assert obj["metadata"]["namespace"] == "fhir-scribe"
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == "fhir-scribe"


def test_probes_ports_and_metrics(rendered: dict) -> None:
    c = container(rendered["default"])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 8080, "metrics": 9090}
    for probe, path in (("startupProbe", "/readyz"), ("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert c[probe]["httpGet"] == {"path": path, "port": "http", "scheme": "HTTP"}
    # Generous start: the model loads and warms up before /readyz answers 200.
    assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 120
    variables = env(rendered["default"])
    assert variables["SCRIBE_SERVER__HOST"]["value"] == "0.0.0.0"
    assert variables["SCRIBE_SERVER__PORT"]["value"] == "8080"
    assert variables["SCRIBE_SERVER__METRICS_PORT"]["value"] == str(ports["metrics"])
    service = rendered["default"]["Service"]["spec"]
    assert service["type"] == "ClusterIP"
    assert {p["name"]: p["targetPort"] for p in service["ports"]} == {"http": "http", "metrics": "metrics"}
    # TLS on: the probes speak HTTPS to the pod, the key pair is the mounted files.
    tls = container(rendered["all-on"])
    assert {tls[p]["httpGet"]["scheme"] for p in ("startupProbe", "readinessProbe", "livenessProbe")} == {"HTTPS"}
    monitor = rendered["all-on"]["ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    assert "ServiceMonitor" not in rendered["default"]


def test_grace_period_outlasts_the_drain(rendered: dict, helm: str) -> None:
    assert pod(rendered["default"])["terminationGracePeriodSeconds"] > DEFAULT_DRAIN_S
    assert env(rendered["default"])["SCRIBE_SERVER__DRAIN_S"]["value"] == str(DEFAULT_DRAIN_S)
    longer = template(helm, "--set", "config.drainSeconds=120")
    assert env(longer)["SCRIBE_SERVER__DRAIN_S"]["value"] == "120"
    assert pod(longer)["terminationGracePeriodSeconds"] > 120


def test_network_policy_egress_only_to_the_configured_servers_and_dns(rendered: dict) -> None:
    values = yaml.safe_load((CI / "all-on-values.yaml").read_text())["networkPolicy"]["egress"]
    policy = rendered["all-on"]["NetworkPolicy"]["spec"]
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    assert policy["podSelector"]["matchLabels"] == rendered["all-on"]["Deployment"]["spec"]["selector"]["matchLabels"]
    cidr_rules, dns_rules = [], []
    for rule in policy["egress"]:
        assert rule.get("to") and rule.get("ports"), f"a rule without peers or ports allows too much: {rule}"
        (cidr_rules if "ipBlock" in rule["to"][0] else dns_rules).append(rule)
    allowed = {(peer["ipBlock"]["cidr"], port["port"]) for rule in cidr_rules for peer in rule["to"]
               for port in rule["ports"]}
    expected = {(cidr, port) for dest in ("fhirServer", "authorizationServer")
                for cidr in values[dest]["cidrs"] for port in values[dest]["ports"]}
    assert allowed == expected
    assert all("except" not in peer["ipBlock"] for rule in cidr_rules for peer in rule["to"])
    [dns] = dns_rules
    assert dns["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                          "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]
    assert sorted((p["port"], p["protocol"]) for p in dns["ports"]) == [(53, "TCP"), (53, "UDP")]
    # In: the API port from the configured peers; the metrics port only from the monitoring selector.
    http_rule, metrics_rule = policy["ingress"]
    assert http_rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert http_rule["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "ingress-nginx"}
    assert metrics_rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert set(metrics_rule["from"][0]) == {"namespaceSelector", "podSelector"}
    # Default: the API port open to any peer; egress still only the (example) FHIR and authorization servers and DNS.
    default = rendered["default"]["NetworkPolicy"]["spec"]
    assert "from" not in default["ingress"][0]
    assert len(default["egress"]) == 3


def test_keda_scales_on_waiting_jobs_and_replaces_the_hpa(rendered: dict) -> None:
    assert "ScaledObject" not in rendered["default"]
    hpa = rendered["default"]["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["minReplicas"] == 2
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert "replicas" not in rendered["default"]["Deployment"]["spec"]  # the autoscaler owns the count

    keda = rendered["all-on"]
    assert "HorizontalPodAutoscaler" not in keda  # KEDA makes its own
    scaled = keda["ScaledObject"]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["name"] == keda["Deployment"]["metadata"]["name"]
    assert scaled["spec"]["minReplicaCount"] >= 2
    [trigger] = scaled["spec"]["triggers"]  # the queue alone, never CPU
    assert trigger["type"] == "prometheus"
    query = trigger["metadata"]["query"]
    assert query.startswith("sum(fhir_scribe_transcription_jobs_waiting{")
    assert float(trigger["metadata"]["threshold"]) > 0
    assert "replicas" not in keda["Deployment"]["spec"]

    fixed = rendered["chart-secrets"]
    assert "HorizontalPodAutoscaler" not in fixed and "ScaledObject" not in fixed
    assert fixed["Deployment"]["spec"]["replicas"] == 3


def test_disruption_budget_only_with_spare_replicas(rendered: dict, helm: str) -> None:
    pdb = rendered["default"]["PodDisruptionBudget"]["spec"]
    assert pdb["maxUnavailable"] == 1
    assert pdb["selector"]["matchLabels"] == rendered["default"]["Deployment"]["spec"]["selector"]["matchLabels"]
    single = template(helm, "--set", "autoscaling.enabled=false", "--set", "replicaCount=1")
    assert "PodDisruptionBudget" not in single


def test_secrets_are_referenced_never_inlined(rendered: dict) -> None:
    values = yaml.safe_load((CI / "chart-secrets-values.yaml").read_text())
    objects = rendered["chart-secrets"]
    deployment_text = json.dumps(objects["Deployment"])
    plain = [*values["smartApp"]["sessionKeys"], values["subscriptions"]["secret"],
             values["backendServices"]["privateKey"]]
    for secret_value in plain:
        assert secret_value not in deployment_text
    secret = objects["Secret"]
    name = secret["metadata"]["name"]
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert json.loads(data["session-keys"]) == values["smartApp"]["sessionKeys"]  # the JSON list the service reads
    assert data["subscription-secret"] == values["subscriptions"]["secret"]
    assert data["backend-key.pem"] == values["backendServices"]["privateKey"]

    variables = env(objects)
    assert all("value" in e or "valueFrom" in e for e in variables.values())
    assert variables["SCRIBE_SMART_APP__SESSION_KEYS"]["valueFrom"]["secretKeyRef"] == {"name": name,
                                                                                        "key": "session-keys"}
    assert variables["SCRIBE_SUBSCRIPTIONS__SECRET"]["valueFrom"]["secretKeyRef"] == {
        "name": name, "key": "subscription-secret"}
    # The private key is a file in a read-only mount, from the Secret.
    key_path = Path(variables["SCRIBE_AUTH__BACKEND_SERVICES__PRIVATE_KEY_PATH"]["value"])
    [mount] = container(objects)["volumeMounts"]
    assert mount["readOnly"] is True and key_path.parent == Path(mount["mountPath"])
    [volume] = pod(objects)["volumes"]
    [source] = volume["projected"]["sources"]
    assert source["secret"] == {"name": name, "items": [{"key": "backend-key.pem", "path": key_path.name}]}
    assert volume["projected"]["defaultMode"] == 0o440

    # existingSecret: the operator's Secrets are referenced and the chart makes none.
    existing = rendered["all-on"]
    assert "Secret" not in existing
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container(existing)["env"] if "valueFrom" in e}
    assert refs == {"SCRIBE_SMART_APP__SESSION_KEYS": "scribe-smart-app",
                    "SCRIBE_SUBSCRIPTIONS__SECRET": "scribe-subscriptions"}
    sources = {s["secret"]["name"]: [i["path"] for i in s["secret"]["items"]]
               for s in pod(existing)["volumes"][0]["projected"]["sources"]}
    assert sources == {"scribe-backend-key": ["backend-key.pem"], "scribe-tls": ["tls.crt", "tls.key"]}
    tls_env = env(existing)
    assert tls_env["SCRIBE_SERVER__TLS_CERTFILE"]["value"].endswith("/tls.crt")
    assert tls_env["SCRIBE_SERVER__TLS_KEYFILE"]["value"].endswith("/tls.key")


def test_a_secret_change_rolls_the_pods(helm: str) -> None:
    def checksum(secret: str) -> str:
        objects = template(helm, "-f", str(CI / "chart-secrets-values.yaml"), "--set", f"subscriptions.secret={secret}")
        return objects["Deployment"]["spec"]["template"]["metadata"]["annotations"]["checksum/secret"]

    assert checksum("one-secret") != checksum("another-secret")


def test_misconfiguration_fails_at_render(helm: str) -> None:
    result = subprocess.run([helm, "template", "x", str(CHART), "--kube-version", "1.30.0",
                             "--set", "smartApp.existingSecret=keys"], capture_output=True, text=True)
    assert result.returncode != 0 and "smartApp.publicUrl is required" in result.stderr
    result = subprocess.run([helm, "template", "x", str(CHART), "--kube-version", "1.30.0",
                             "--set", "backendServices.clientId=scribe"], capture_output=True, text=True)
    assert result.returncode != 0 and "backendServices.privateKey" in result.stderr


@pytest.mark.parametrize("scenario", ["default", "all-on", "chart-secrets"])
def test_the_service_accepts_the_rendered_environment(rendered: dict, scenario: str) -> None:
    """The env the chart renders (secret references filled in as the kubelet would) loads into the service's own
    settings: names, JSON shapes and types match service/config.py."""
    secret_values = {"SCRIBE_SMART_APP__SESSION_KEYS": json.dumps([base64.urlsafe_b64encode(bytes(32)).decode()
                                                                   .rstrip("=")]),
                     "SCRIBE_SUBSCRIPTIONS__SECRET": "a-subscription-secret"}
    variables = {}
    for e in container(rendered[scenario])["env"]:
        variables[e["name"]] = e["value"] if "value" in e else secret_values[e["name"]]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SCRIBE_")}
    probe = ("from service.config import load_settings; import json; s = load_settings(); b = s.auth.backend_services; "
             "print(json.dumps({'host': s.server.host, 'metrics_port': s.server.metrics_port, 'drain_s': "
             "s.server.drain_s, 'issuers': [i.issuer for i in s.auth.issuers], 'keys': len(s.smart_app.session_keys), "
             "'backend': b and str(b.private_key_path), 'tls': s.server.tls_keyfile and str(s.server.tls_keyfile), "
             "'subscriptions': s.subscriptions.secret is not None}))")
    result = subprocess.run([sys.executable, "-c", probe], env={**clean, **variables}, cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["host"] == "0.0.0.0" and loaded["metrics_port"] == 9090 and loaded["drain_s"] == 25
    if scenario == "all-on":
        assert loaded["issuers"] == ["https://ehr.example.org/oauth2"]
        assert loaded["tls"] == "/var/run/secrets/fhir-scribe/tls.key"
    if scenario != "default":
        assert loaded["keys"] == 1 and loaded["subscriptions"] is True
        assert loaded["backend"] == "/var/run/secrets/fhir-scribe/backend-key.pem"


# Kubernetes objects handed through as they are (security contexts, resources, probe timings, selectors):
# documented as one value each.
PASSED_THROUGH = {"podSecurityContext", "securityContext", "resources", "probes.startup", "probes.readiness",
                  "probes.liveness", "networkPolicy.ingress.metricsFrom", "networkPolicy.egress.dns"}


def _leaves(node: object, path: str = "") -> list[str]:
    if isinstance(node, dict) and node and path not in PASSED_THROUGH:
        return [leaf for key, value in node.items() for leaf in _leaves(value, f"{path}.{key}".lstrip("."))]
    return [path]


def test_readme_documents_every_value() -> None:
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = [leaf for leaf in _leaves(values) if f"`{leaf}`" not in readme]
    assert not missing, f"values not described in {CHART / 'README.md'}: {missing}"
