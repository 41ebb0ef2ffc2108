"""The Helm chart: the real ``helm`` lints and renders it, every manifest is validated offline
against the Kubernetes OpenAPI schemas (``kubernetes-validate``), and what matters to the
admission path is asserted field by field.

Needs ``GATEKEEPER_HELM`` (the path of a real helm binary; ``scripts/install-tools`` builds it);
skipped only when that variable is unset.
"""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "gatekeeper"
KUBE_VERSION = "1.31.0"
NAMESPACE = "gatekeeper-system"
#: Custom resources (cert-manager, prometheus-operator) have no schema in kubernetes-validate.
CUSTOM_KINDS = {"Certificate", "Issuer", "ServiceMonitor"}

HELM = os.environ.get("GATEKEEPER_HELM")
pytestmark = pytest.mark.skipif(not HELM, reason="GATEKEEPER_HELM (path of helm) is not set")


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert HELM is not None
    return subprocess.run([HELM, *args], capture_output=True, text=True, check=check,
                          timeout=120)


def render(*sets: str, release: str = "gk") -> list[dict[str, Any]]:
    args = ["template", release, str(CHART), "--namespace", NAMESPACE,
            "--kube-version", KUBE_VERSION]
    for item in sets:
        args += ["--set", item]
    return [doc for doc in yaml.safe_load_all(helm(*args).stdout) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (doc,) = by_kind(docs, kind)
    return doc


VALUE_SETS = {
    "defaults": (),
    "cert-manager": ("tls.mode=certManager",),
    "cert-manager-cluster-issuer": ("tls.mode=certManager",
                                    "tls.certManager.issuerRef.name=cluster-ca",
                                    "tls.certManager.issuerRef.kind=ClusterIssuer"),
    "existing-secret": ("tls.mode=secret", "tls.secretName=my-tls",
                        "tls.caBundle=-----BEGIN CERTIFICATE-----"),
    "everything": (
        "metrics.serviceMonitor.enabled=true", "rbac.readableSecrets={ecr-pull}",
        "policies.files.main\\.rego=package gatekeeper.main",
        "database.url=postgresql://gk:pw@db:5432/gatekeeper",
        "tls.clientCA=-----BEGIN CERTIFICATE-----",
        "admission.extraRules[0].apiGroups={argoproj.io}",
        "admission.extraRules[0].resources={rollouts}",
        "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::1:role/gk",
        "admission.failOpenNamespaces={sandbox}",
    ),
    "minimal": ("admission.labelledModes=false", "admission.mutating.enabled=false",
                "autoscaling.enabled=false", "podDisruptionBudget.enabled=false",
                "networkPolicy.enabled=false", "database.existingSecret=pg"),
}


def test_helm_lint_passes() -> None:
    result = helm("lint", str(CHART), "--strict", "--kube-version", KUBE_VERSION, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_rendered_manifest_validates_against_kubernetes_schemas(name: str) -> None:
    try:
        import kubernetes_validate
    except ImportError:
        pytest.fail("kubernetes-validate is required (test extra) to validate the chart")
    docs = render(*VALUE_SETS[name])
    assert docs
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            assert doc["apiVersion"] in {"cert-manager.io/v1", "monitoring.coreos.com/v1"}
            continue
        kubernetes_validate.validate(doc, KUBE_VERSION.rsplit(".", 1)[0], strict=True)


def test_default_rendering_has_every_part() -> None:
    kinds = sorted(doc["kind"] for doc in render())
    assert kinds == sorted([
        "Deployment", "HorizontalPodAutoscaler", "MutatingWebhookConfiguration",
        "NetworkPolicy", "PodDisruptionBudget", "Secret", "Service", "ServiceAccount",
        "ValidatingWebhookConfiguration",
    ])


def test_webhook_configurations_are_safe_by_default() -> None:
    docs = render()
    validating = one(docs, "ValidatingWebhookConfiguration")["webhooks"]
    mutating = one(docs, "MutatingWebhookConfiguration")["webhooks"]
    assert [w["name"] for w in validating] == [
        "validate.gatekeeper.forge.dev", "validate-warn.gatekeeper.forge.dev",
        "validate-audit.gatekeeper.forge.dev"]
    assert [w["clientConfig"]["service"]["path"] for w in mutating] == [
        "/admission/mutate", "/admission/mutate/warn", "/admission/mutate/audit"]
    for webhook in validating + mutating:
        assert webhook["failurePolicy"] == "Fail"
        assert webhook["sideEffects"] == "None"
        assert webhook["admissionReviewVersions"] == ["v1"]
        assert webhook["matchPolicy"] == "Equivalent"
        assert webhook["timeoutSeconds"] == 10
        assert webhook["clientConfig"]["service"]["name"] == "gk-gatekeeper"
        assert webhook["clientConfig"]["service"]["namespace"] == NAMESPACE
        excluded = webhook["namespaceSelector"]["matchExpressions"][0]
        assert excluded == {"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                            "values": [NAMESPACE, "kube-system"]}
        resources = {r for rule in webhook["rules"] for r in rule["resources"]}
        assert resources == {"pods", "pods/ephemeralcontainers", "replicationcontrollers",
                             "podtemplates", "deployments", "replicasets", "statefulsets",
                             "daemonsets", "jobs", "cronjobs"}
        assert all(rule["operations"] == ["CREATE", "UPDATE"] for rule in webhook["rules"])
    assert all(w["reinvocationPolicy"] == "IfNeeded" for w in mutating)
    # Each namespace matches exactly one entry: unlabelled -> enforce path, else its mode.
    mode_selectors = [w["namespaceSelector"]["matchExpressions"][1] for w in validating]
    assert mode_selectors == [
        {"key": "gatekeeper.forge.dev/mode", "operator": "NotIn", "values": ["warn", "audit"]},
        {"key": "gatekeeper.forge.dev/mode", "operator": "In", "values": ["warn"]},
        {"key": "gatekeeper.forge.dev/mode", "operator": "In", "values": ["audit"]},
    ]


def test_generated_ca_signs_the_serving_certificate_and_fills_ca_bundle() -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    docs = render()
    secret = one(docs, "Secret")
    assert secret["type"] == "kubernetes.io/tls"
    ca_pem = base64.b64decode(secret["data"]["ca.crt"])
    for config in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        for webhook in one(docs, config)["webhooks"]:
            assert base64.b64decode(webhook["clientConfig"]["caBundle"]) == ca_pem
    ca = x509.load_pem_x509_certificate(ca_pem)
    leaf = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    public_key = ca.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    assert leaf.signature_hash_algorithm is not None
    public_key.verify(leaf.signature, leaf.tbs_certificate_bytes, padding.PKCS1v15(),
                      leaf.signature_hash_algorithm)
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"gk-gatekeeper.{NAMESPACE}.svc" in names.get_values_for_type(x509.DNSName)


def test_cert_manager_mode_injects_the_ca() -> None:
    docs = render("tls.mode=certManager")
    certificate = one(docs, "Certificate")
    assert certificate["spec"]["secretName"] == "gk-gatekeeper-tls"
    assert f"gk-gatekeeper.{NAMESPACE}.svc" in certificate["spec"]["dnsNames"]
    assert one(docs, "Issuer")["spec"] == {"selfSigned": {}}
    for config in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        doc = one(docs, config)
        assert doc["metadata"]["annotations"] == {
            "cert-manager.io/inject-ca-from": f"{NAMESPACE}/gk-gatekeeper"}
        assert all("caBundle" not in w["clientConfig"] for w in doc["webhooks"])
    assert by_kind(docs, "Secret") == []


def test_deployment_runs_gatekeeper_and_opa_sidecar_locked_down() -> None:
    deployment = one(render(), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    gatekeeper, opa = pod["containers"]
    assert gatekeeper["command"] == ["gatekeeper", "serve", "--host", "0.0.0.0", "--port", "8443"]
    env = {item["name"]: item.get("value", item.get("valueFrom")) for item in gatekeeper["env"]}
    assert env["GATEKEEPER_DATABASE_URL"] == {
        "secretKeyRef": {"name": "gk-gatekeeper-database", "key": "database-url"}}
    assert env["GATEKEEPER_OPA_URL"] == "http://127.0.0.1:8181"
    assert env["GATEKEEPER_METRICS_PORT"] == "9090"
    assert env["GATEKEEPER_TLS_CERT_FILE"] == "/tls/tls.crt"
    assert env["GATEKEEPER_TLS_KEY_FILE"] == "/tls/tls.key"
    assert "GATEKEEPER_POLICY_DIR" in env
    assert env["GATEKEEPER_ADMISSION_BUDGET_SECONDS"] == "8"
    assert env["GATEKEEPER_ADMISSION_WEBHOOK_TIMEOUT_SECONDS"] == "10"
    for container in (gatekeeper, opa):
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert container["resources"]["requests"]
        assert container["livenessProbe"] and container["readinessProbe"]
    assert gatekeeper["readinessProbe"]["httpGet"] == {
        "path": "/readyz", "port": "https", "scheme": "HTTPS"}
    assert "--addr=127.0.0.1:8181" in opa["args"]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_policies_configmap_is_mounted_into_both_containers() -> None:
    docs = render("policies.files.main\\.rego=package gatekeeper.main")
    configmap = one(docs, "ConfigMap")
    assert configmap["data"] == {"main.rego": "package gatekeeper.main"}
    gatekeeper, opa = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    for container in (gatekeeper, opa):
        assert {"name": "policies", "mountPath": "/policies", "readOnly": True} in container[
            "volumeMounts"]
    assert opa["args"][-3:] == ["--ignore=.*", "--watch", "/policies"]
    assert "initContainers" not in one(docs, "Deployment")["spec"]["template"]["spec"]


def test_without_a_configmap_the_image_policies_are_shared_with_opa() -> None:
    pod = one(render(), "Deployment")["spec"]["template"]["spec"]
    (copy,) = pod["initContainers"]
    assert copy["command"][-1] == "/app/policies"
    assert copy["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "policies", "emptyDir": {"sizeLimit": "16Mi"}} in pod["volumes"]
    gatekeeper, opa = pod["containers"]
    for container in (gatekeeper, opa):
        assert {"name": "policies", "mountPath": "/policies", "readOnly": True} in container[
            "volumeMounts"]


def test_rbac_is_least_privilege() -> None:
    assert by_kind(render(), "Role") == []
    docs = render("rbac.readableSecrets={ecr-pull}")
    assert one(docs, "Role")["rules"] == [{
        "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["ecr-pull"],
        "verbs": ["get"]}]
    assert one(docs, "RoleBinding")["subjects"][0]["name"] == "gk-gatekeeper"
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is True


def test_irsa_annotation_and_database_secret() -> None:
    docs = render("serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::1:role/gk",
                  "database.url=postgresql://gk:pw@db:5432/gatekeeper")
    assert one(docs, "ServiceAccount")["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/gk"}
    database = [d for d in by_kind(docs, "Secret") if d["metadata"]["name"].endswith("database")]
    assert database[0]["stringData"] == {"database-url": "postgresql://gk:pw@db:5432/gatekeeper"}


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("admission.defaultMode=off",), "value must be one of 'enforce', 'warn', 'audit'"),
        (("securityContext.readOnlyRootFilesystem=false",), "value must be true"),
        (("admission.budgetSeconds=10",), "must be below admission.timeoutSeconds"),
        (("admission.timeoutSeconds=31",), "maximum: got 31, want 30"),
        (("tls.mode=secret",), "tls.mode=secret needs tls.secretName"),
        (("tls.mode=vault",), "value must be one of 'generated', 'certManager', 'secret'"),
    ],
)
def test_bad_values_are_refused_with_a_clear_message(sets: tuple[str, ...], message: str) -> None:
    args = ["template", "gk", str(CHART), "--kube-version", KUBE_VERSION]
    for item in sets:
        args += ["--set", item]
    result = helm(*args, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_client_certificate_verification_mounts_the_ca_and_probes_the_port() -> None:
    docs = render("tls.clientCA=-----BEGIN CERTIFICATE-----")
    gatekeeper = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item.get("value") for item in gatekeeper["env"]}
    assert env["GATEKEEPER_TLS_CLIENT_CA_FILE"] == "/client-ca/ca.crt"
    # The kubelet has no client certificate: probes can only check the TLS port.
    assert gatekeeper["readinessProbe"]["tcpSocket"] == {"port": "https"}
    client_ca = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("client-ca")]
    assert client_ca[0]["data"] == {"ca.crt": "-----BEGIN CERTIFICATE-----"}
