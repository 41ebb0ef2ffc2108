"""The Helm chart: the real ``helm`` lints and renders it, every manifest is validated offline
against the Kubernetes OpenAPI schemas (``kubernetes-validate``), and what matters to the
admission path is asserted field by field.

Needs ``GATEKEEPER_HELM`` (the path of a real helm binary; ``scripts/install-tools`` builds it);
skipped only when that variable is unset.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "gatekeeper"
#: The least a release needs: auth keys and the sidecar's bundle token (Secrets referenced only).
CI_VALUES = CHART / "ci" / "test-values.yaml"
AUTH_REQUIRED = (
    "auth is required: set auth.existingSecret (a Secret in the release namespace) and at least "
    "one of auth.hs256SecretKey, auth.jwksKey or auth.publicKeyKeys; the gatekeeper refuses to "
    "start without a token verification key, and this chart cannot turn authentication off"
)
KUBE_VERSION = "1.31.0"
NAMESPACE = "gatekeeper-system"
#: Custom resources (cert-manager, prometheus-operator) have no schema in kubernetes-validate.
CUSTOM_KINDS = {"Certificate", "Issuer", "ServiceMonitor", "PrometheusRule"}

HELM = os.environ.get("GATEKEEPER_HELM")
pytestmark = pytest.mark.skipif(not HELM, reason="GATEKEEPER_HELM (path of helm) is not set")


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert HELM is not None
    return subprocess.run([HELM, *args], capture_output=True, text=True, check=check,
                          timeout=120)


def template_args(*sets: str, release: str = "gk", ci_values: bool = True) -> list[str]:
    args = ["template", release, str(CHART), "--namespace", NAMESPACE,
            "--kube-version", KUBE_VERSION]
    if ci_values:
        args += ["--values", str(CI_VALUES)]
    for item in sets:
        args += ["--set", item]
    return args


def render(*sets: str, release: str = "gk", ci_values: bool = True) -> list[dict[str, Any]]:
    args = template_args(*sets, release=release, ci_values=ci_values)
    return [doc for doc in yaml.safe_load_all(helm(*args).stdout) if doc]


def refused(*sets: str, ci_values: bool = True) -> str:
    """The error of a render that must fail."""
    result = helm(*template_args(*sets, ci_values=ci_values), check=False)
    assert result.returncode != 0, "the render should have failed"
    return result.stderr


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (doc,) = by_kind(docs, kind)
    return doc


def webhook_configurations(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The webhook configurations the register hook creates (in its ConfigMap by default)."""
    found = [d for d in docs if d["kind"].endswith("WebhookConfiguration")]
    for doc in by_kind(docs, "ConfigMap"):
        if doc["metadata"]["name"].endswith("-webhooks"):
            found += [d for d in yaml.safe_load_all(doc["data"]["webhooks.yaml"]) if d]
    return found


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
        "auth.jwksKey=jwks.json", "auth.publicKeyKeys={rsa.pem,ec.pem}",
        "auth.issuer=https://issuer.example", "auth.audience=gatekeeper",
        "audit.signingKey.existingSecret=audit-key", "audit.retentionDays=400",
        "admission.extraRules[0].apiGroups={argoproj.io}",
        "admission.extraRules[0].resources={rollouts}",
        "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::1:role/gk",
        "admission.failOpenNamespaces={sandbox}",
        # issue 15: alerts, dashboard, the sidecar's own decision log
        "metrics.prometheusRule.enabled=true", "metrics.grafanaDashboard.enabled=true",
        "opa.decisionLogs.console=true",
    ),
    "minimal": ("admission.labelledModes=false", "admission.mutating.enabled=false",
                "autoscaling.enabled=false", "podDisruptionBudget.enabled=false",
                "networkPolicy.enabled=false", "database.existingSecret=pg"),
    "jwks-only-archive-policies": ("auth.hs256SecretKey=", "auth.jwksKey=jwks.json",
                                   "policies.existingConfigMap=gk-policies",
                                   "policies.archiveKey=policies.tar.gz"),
}


def test_helm_lint_passes() -> None:
    result = helm("lint", str(CHART), "--strict", "--kube-version", KUBE_VERSION,
                  "--values", str(CI_VALUES), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Fail:" not in result.stdout + result.stderr


def test_without_auth_lint_names_it_and_the_render_fails() -> None:
    # helm lint reports `fail` as information (charts may require values), helm template and
    # helm install refuse.
    lint = helm("lint", str(CHART), "--strict", "--kube-version", KUBE_VERSION, check=False)
    assert AUTH_REQUIRED in lint.stdout + lint.stderr
    assert AUTH_REQUIRED in refused(ci_values=False)


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_rendered_manifest_validates_against_kubernetes_schemas(name: str) -> None:
    try:
        import kubernetes_validate  # type: ignore[import-untyped]  # ships no type hints
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
    # No Secret and no webhook configuration: the hook Jobs create them in the cluster.
    assert kinds == sorted([
        "ClusterRole", "ClusterRole", "ClusterRoleBinding", "ClusterRoleBinding", "ConfigMap",
        "ConfigMap", "CronJob", "Deployment", "HorizontalPodAutoscaler", "Job", "Job", "Job",
        "NetworkPolicy", "PodDisruptionBudget", "Pod", "Role", "Role", "RoleBinding",
        "RoleBinding", "Service", "ServiceAccount", "ServiceAccount", "ServiceAccount",
    ])


def test_webhook_configurations_are_safe_by_default() -> None:
    docs = webhook_configurations(render())
    validating = one(docs, "ValidatingWebhookConfiguration")["webhooks"]
    mutating = one(docs, "MutatingWebhookConfiguration")["webhooks"]
    assert [w["name"] for w in validating] == [
        "validate.gatekeeper.forge.dev", "validate-warn.gatekeeper.forge.dev",
        "validate-audit.gatekeeper.forge.dev"]
    assert [w["clientConfig"]["service"]["path"] for w in mutating] == [
        "/admission/mutate", "/admission/mutate/warn", "/admission/mutate/audit"]
    for webhook in validating + mutating:
        assert webhook["failurePolicy"] == "Fail"
        assert webhook["sideEffects"] == "NoneOnDryRun"
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


def test_generated_mode_renders_no_certificate_material_and_is_stable() -> None:
    first = helm(*template_args()).stdout
    assert helm(*template_args()).stdout == first, "two renders differ (Argo CD renders twice)"
    assert "BEGIN CERTIFICATE" not in first and "PRIVATE KEY" not in first
    docs = render()
    assert by_kind(docs, "Secret") == []
    for config in webhook_configurations(docs):
        assert all("caBundle" not in w["clientConfig"] for w in config["webhooks"])


def test_cert_manager_mode_injects_the_ca() -> None:
    rendered = render("tls.mode=certManager")
    docs = rendered + webhook_configurations(rendered)
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
        "secretKeyRef": {"name": "gatekeeper-database", "key": "database-url"}}
    assert env["GATEKEEPER_OPA_URL"] == "http://127.0.0.1:8181"
    assert env["GATEKEEPER_AUTH_HS256_SECRET"] == {
        "secretKeyRef": {"name": "gatekeeper-auth", "key": "hs256-secret"}}
    assert "GATEKEEPER_INSECURE_DISABLE_AUTH" not in env
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
    assert opa["args"][:3] == ["run", "--server", "--addr=127.0.0.1:8181"]
    assert "--config-file=/etc/opa/config.yaml" in opa["args"]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_policies_configmap_is_the_gitops_watch_path_of_the_gatekeeper_only() -> None:
    docs = render("policies.files.main\\.rego=package gatekeeper.main",
                  "policies.files.main_test\\.rego=package gatekeeper.main_test")
    configmap = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == "gk-gatekeeper-policies"]
    assert configmap[0]["data"] == {"main.rego": "package gatekeeper.main",
                                    "main_test.rego": "package gatekeeper.main_test"}
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    gatekeeper, opa = pod["containers"]
    assert {"name": "policies", "mountPath": "/etc/gatekeeper/policies", "readOnly": True} in (
        gatekeeper["volumeMounts"])
    env = {item["name"]: item.get("value") for item in gatekeeper["env"]}
    assert env["GATEKEEPER_POLICY_WATCH_PATH"] == "/etc/gatekeeper/policies"
    assert env["GATEKEEPER_POLICY_DIR"] == "/app/policies"
    assert env["GATEKEEPER_POLICY_TESTS_DIR"] == "/app/rego-tests"
    # The sidecar loads the active revision from the gatekeeper, never the ConfigMap itself.
    assert all(m["name"] != "policies" for m in opa["volumeMounts"])
    assert "initContainers" not in pod
    # A ConfigMap change goes through the checks live: no restart-on-change checksum for it.
    annotations = one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert set(annotations) == {"checksum/opa-config"}


def test_policies_archive_in_an_existing_configmap_is_watched() -> None:
    docs = render("policies.existingConfigMap=gk-policies", "policies.archiveKey=policies.tar.gz")
    assert not [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("policies")]
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    env = {item["name"]: item.get("value") for item in pod["containers"][0]["env"]}
    assert env["GATEKEEPER_POLICY_WATCH_PATH"] == "/etc/gatekeeper/policies/policies.tar.gz"
    assert {"name": "policies", "configMap": {"name": "gk-policies"}} in pod["volumes"]


def test_without_a_configmap_the_image_policies_are_bootstrapped_and_nothing_is_watched() -> None:
    pod = one(render(), "Deployment")["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    gatekeeper = pod["containers"][0]
    env = {item["name"]: item.get("value") for item in gatekeeper["env"]}
    assert "GATEKEEPER_POLICY_WATCH_PATH" not in env
    assert env["GATEKEEPER_POLICY_DIR"] == "/app/policies"
    assert all(volume["name"] != "policies" for volume in pod["volumes"])


def test_rbac_is_least_privilege() -> None:
    # By default the only Roles are the certificate renewal's and the hook Jobs'
    # (tests/integration/test_chart_hooks.py).
    assert sorted(r["metadata"]["name"] for r in by_kind(render(), "Role")) == [
        "gk-gatekeeper-certs", "gk-gatekeeper-hooks"]
    docs = render("rbac.readableSecrets={ecr-pull}")
    (role,) = [r for r in by_kind(docs, "Role") if r["metadata"]["name"] == "gk-gatekeeper"]
    assert role["rules"] == [{
        "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["ecr-pull"],
        "verbs": ["get"]}]
    (binding,) = [r for r in by_kind(docs, "RoleBinding")
                  if r["metadata"]["name"] == "gk-gatekeeper"]
    assert binding["subjects"][0]["name"] == "gk-gatekeeper"
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is True


def test_irsa_annotation_and_database_secret() -> None:
    docs = render("serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::1:role/gk",
                  "database.existingSecret=", "database.url=postgresql://gk:pw@db:5432/gatekeeper")
    (account,) = [a for a in by_kind(docs, "ServiceAccount")
                  if a["metadata"]["name"] == "gk-gatekeeper"]
    assert account["metadata"]["annotations"] == {
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
        (("auth.existingSecret=",), AUTH_REQUIRED),
        (("auth.hs256SecretKey=",), AUTH_REQUIRED),
        (("auth.insecureDisableAuth=true",), "additional properties 'insecureDisableAuth'"),
        (("opa.bundleTokenSecret.name=",), "opa.bundleTokenSecret.name is required"),
        (("opa.bundlePolling.minDelaySeconds=10",), "must not exceed opa.bundlePolling"),
        (("policies.archiveKey=p.tar.gz",), "set policies.existingConfigMap too"),
        (("audit.retentionDays=0",), "minimum: got 0, want 1"),
        (("admission.url=http://gatekeeper.example.com",), "at '/admission/url'"),
        (("admission.gateFailure.warn=maybe",), "value must be one of 'open', 'closed'"),
    ],
)
def test_bad_values_are_refused_with_a_clear_message(sets: tuple[str, ...], message: str) -> None:
    stderr = refused(*sets)
    assert message in stderr, stderr


def containers(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    gatekeeper, opa = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return gatekeeper, opa


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


def volume(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [
        v for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
        if v["name"] == name]
    (match,) = found
    return match


def test_jwks_and_public_keys_are_mounted_read_only_and_named_in_env() -> None:
    docs = render("auth.hs256SecretKey=", "auth.jwksKey=jwks.json",
                  "auth.publicKeyKeys={rsa.pem,ec.pem}", "auth.issuer=https://issuer.example",
                  "auth.audience=gatekeeper")
    gatekeeper, opa = containers(docs)
    env = env_of(gatekeeper)
    assert "GATEKEEPER_AUTH_HS256_SECRET" not in env
    assert env["GATEKEEPER_AUTH_JWKS_FILE"] == "/etc/gatekeeper/auth/jwks.json"
    # the settings read a list setting from the environment as JSON
    assert env["GATEKEEPER_AUTH_PUBLIC_KEY_FILES"] == (
        '["/etc/gatekeeper/auth/rsa.pem","/etc/gatekeeper/auth/ec.pem"]')
    assert env["GATEKEEPER_AUTH_ISSUER"] == "https://issuer.example"
    assert env["GATEKEEPER_AUTH_AUDIENCE"] == "gatekeeper"
    assert {"name": "auth-keys", "mountPath": "/etc/gatekeeper/auth", "readOnly": True} in (
        gatekeeper["volumeMounts"])
    assert all(m["name"] != "auth-keys" for m in opa["volumeMounts"])
    assert volume(docs, "auth-keys")["secret"] == {
        "secretName": "gatekeeper-auth", "defaultMode": 0o440,
        "items": [{"key": "jwks.json", "path": "jwks.json"}, {"key": "rsa.pem", "path": "rsa.pem"},
                  {"key": "ec.pem", "path": "ec.pem"}]}


def test_hs256_only_mounts_no_key_files() -> None:
    docs = render()
    gatekeeper, _opa = containers(docs)
    env = env_of(gatekeeper)
    assert not {"GATEKEEPER_AUTH_JWKS_FILE", "GATEKEEPER_AUTH_PUBLIC_KEY_FILES",
                "GATEKEEPER_AUTH_ISSUER", "GATEKEEPER_AUTH_AUDIENCE"} & set(env)
    assert all(m["name"] != "auth-keys" for m in gatekeeper["volumeMounts"])


def test_audit_signing_key_settings_and_writable_volumes() -> None:
    docs = render("audit.signingKey.existingSecret=audit-key", "audit.checkpointEvery=500",
                  "audit.checkpointIntervalSeconds=30", "audit.retentionDays=400")
    gatekeeper, opa = containers(docs)
    env = env_of(gatekeeper)
    assert env["GATEKEEPER_AUDIT_SIGNING_KEY_FILE"] == "/etc/gatekeeper/audit/signing-key.pem"
    assert env["GATEKEEPER_AUDIT_CHECKPOINT_EVERY"] == "500"
    assert env["GATEKEEPER_AUDIT_CHECKPOINT_INTERVAL_SECONDS"] == "30"
    assert env["GATEKEEPER_AUDIT_RETENTION_DAYS"] == "400"
    assert env["GATEKEEPER_AUDIT_SPOOL_DIR"] == "/var/lib/gatekeeper/audit-spool"
    assert env["GATEKEEPER_POLICY_STATE_DIR"] == "/var/lib/gatekeeper/policy-state"
    assert volume(docs, "audit-signing-key")["secret"] == {
        "secretName": "audit-key", "defaultMode": 0o440,
        "items": [{"key": "signing-key.pem", "path": "signing-key.pem"}]}
    mounts = {m["name"]: m for m in gatekeeper["volumeMounts"]}
    assert mounts["audit-signing-key"] == {
        "name": "audit-signing-key", "mountPath": "/etc/gatekeeper/audit", "readOnly": True}
    # the root filesystem is read-only: everything the gatekeeper writes is a volume
    for name, path in (("audit-spool", "/var/lib/gatekeeper/audit-spool"),
                       ("policy-state", "/var/lib/gatekeeper/policy-state"), ("tmp", "/tmp")):
        assert mounts[name] == {"name": name, "mountPath": path}
        assert "emptyDir" in volume(docs, name)
    assert volume(docs, "audit-spool")["emptyDir"] == {"sizeLimit": "512Mi"}
    assert all(m["name"] not in {"audit-signing-key", "audit-spool"} for m in opa["volumeMounts"])


def test_without_signing_key_or_retention_nothing_is_set() -> None:
    env = env_of(containers(render())[0])
    assert "GATEKEEPER_AUDIT_SIGNING_KEY_FILE" not in env
    assert "GATEKEEPER_AUDIT_RETENTION_DAYS" not in env


def test_opa_sidecar_loads_the_bundle_from_its_own_gatekeeper_over_verified_tls() -> None:
    docs = render("opa.bundlePolling.minDelaySeconds=2", "opa.bundlePolling.maxDelaySeconds=10")
    (config_map,) = [d for d in by_kind(docs, "ConfigMap")
                     if d["metadata"]["name"] == "gk-gatekeeper-opa-config"]
    config = yaml.safe_load(config_map["data"]["config.yaml"])
    host = f"gk-gatekeeper.{NAMESPACE}.svc"
    assert config == {
        "services": {"gatekeeper": {
            "url": f"https://{host}:8443",
            "tls": {"ca_cert": "/var/run/gatekeeper/ca/ca.crt"},
            "credentials": {"bearer": {
                "token_path": "/var/run/gatekeeper/bundle-token/token"}},
        }},
        "bundles": {"gatekeeper": {
            "service": "gatekeeper", "resource": "/v1/policies/bundle", "persist": False,
            "polling": {"min_delay_seconds": 2, "max_delay_seconds": 10},
        }},
    }
    assert "allow_insecure_tls" not in config_map["data"]["config.yaml"]
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    # the certificate's name resolves to the pod itself: loopback, not the Service
    assert pod["hostAliases"] == [{"ip": "127.0.0.1", "hostnames": [host]}]
    gatekeeper, opa = pod["containers"]
    assert env_of(gatekeeper)["GATEKEEPER_OPA_URL"] == "http://127.0.0.1:8181"
    assert opa["args"] == ["run", "--server", "--addr=127.0.0.1:8181",
                           "--diagnostic-addr=0.0.0.0:8282", "--config-file=/etc/opa/config.yaml",
                           "--skip-version-check", "--log-level=info"]
    assert opa["readinessProbe"]["httpGet"]["path"] == "/health?bundles"
    mounts = {m["name"]: m["mountPath"] for m in opa["volumeMounts"]}
    assert mounts == {"opa-config": "/etc/opa", "serving-ca": "/var/run/gatekeeper/ca",
                      "bundle-token": "/var/run/gatekeeper/bundle-token"}
    assert all(m.get("readOnly") for m in opa["volumeMounts"])
    assert volume(docs, "bundle-token")["secret"] == {
        "secretName": "gatekeeper-opa-bundle-token", "defaultMode": 0o440,
        "items": [{"key": "token", "path": "token"}]}
    # only the CA reaches the sidecar, never the serving key
    assert volume(docs, "serving-ca")["secret"] == {
        "secretName": "gk-gatekeeper-tls", "defaultMode": 0o440,
        "items": [{"key": "ca.crt", "path": "ca.crt"}]}
    annotations = one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert len(annotations["checksum/opa-config"]) == 64


def test_generated_certificate_carries_the_name_the_sidecar_uses() -> None:
    from datetime import UTC, datetime

    from cryptography import x509

    from gatekeeper.kube.certs import issue

    docs = render()
    (job,) = [d for d in by_kind(docs, "Job") if d["metadata"]["name"] == "gk-gatekeeper-certs"]
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    dns_names = tuple(args[i + 1] for i, arg in enumerate(args) if arg == "--dns-name")
    leaf = x509.load_pem_x509_certificate(
        issue(dns_names, datetime.now(UTC), ca_days=30, certificate_days=10)["tls.crt"])
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    hostnames = one(docs, "Deployment")["spec"]["template"]["spec"]["hostAliases"][0]["hostnames"]
    assert set(hostnames) <= set(names.get_values_for_type(x509.DNSName))


def test_existing_tls_secret_gives_the_sidecar_its_ca_through_a_configmap() -> None:
    docs = render("tls.mode=secret", "tls.secretName=my-tls",
                  "tls.caBundle=-----BEGIN CERTIFICATE-----")
    assert volume(docs, "serving-ca") == {"name": "serving-ca",
                                          "configMap": {"name": "gk-gatekeeper-serving-ca"}}
    (ca,) = [d for d in by_kind(docs, "ConfigMap")
             if d["metadata"]["name"] == "gk-gatekeeper-serving-ca"]
    assert ca["data"] == {"ca.crt": "-----BEGIN CERTIFICATE-----"}


def test_an_opa_config_change_rolls_the_pods() -> None:
    before = one(render(), "Deployment")["spec"]["template"]["metadata"]["annotations"]
    after = one(render("opa.bundlePolling.maxDelaySeconds=30"), "Deployment")[
        "spec"]["template"]["metadata"]["annotations"]
    assert before["checksum/opa-config"] != after["checksum/opa-config"]


def test_network_policy_admits_the_webhook_port_and_keeps_sidecar_traffic_on_loopback() -> None:
    docs = render()
    policy = one(docs, "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    open_ports = {p["port"] for rule in policy["ingress"] if "from" not in rule
                  for p in rule["ports"]}
    assert open_ports == {"https", "opa-diagnostic"}
    (metrics,) = [rule for rule in policy["ingress"] if "from" in rule]
    assert metrics["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    egress_ports = {p["port"] for rule in policy["egress"] for p in rule["ports"]}
    # no egress rule for the bundle: the sidecar reaches 127.0.0.1, which no policy filters
    assert egress_ports == {53, 5432, 443}
    # every named port the policy uses exists on a container
    gatekeeper, opa = containers(docs)
    names = {p["name"] for c in (gatekeeper, opa) for p in c["ports"]}
    assert {"https", "opa-diagnostic", "metrics"} <= names
    # OPA's API listens on loopback only
    assert all(p["containerPort"] != 8181 for p in opa["ports"])


def _pinned_opa_version() -> str:
    """The OPA version scripts/install-tools builds (the embedded binary and every test's OPA)."""
    for line in (REPO / "scripts" / "install-tools").read_text().splitlines():
        words = line.split()
        if words[:2] == ["go_tool", "opa"]:
            return words[-1].removeprefix("v")
    raise AssertionError("scripts/install-tools pins no opa")


def test_sidecar_runs_the_same_pinned_opa_as_the_embedded_binary_and_the_tests() -> None:
    _gatekeeper, opa = containers(render())
    assert opa["image"] == f"ghcr.io/forge/opa:{_pinned_opa_version()}"
    digest = "sha256:" + "a" * 64
    _gatekeeper, opa = containers(render(f"opa.image.digest={digest}"))
    assert opa["image"] == f"ghcr.io/forge/opa:{_pinned_opa_version()}@{digest}"


def test_gatekeeper_pods_get_a_critical_priority_class_by_default() -> None:
    pod = one(render(), "Deployment")["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    pod = one(render("priorityClassName="), "Deployment")["spec"]["template"]["spec"]
    assert "priorityClassName" not in pod


def test_client_ca_is_mounted_for_the_admission_endpoints() -> None:
    docs = render("tls.clientCA=-----BEGIN CERTIFICATE-----")
    gatekeeper, _ = containers(docs)
    assert env_of(gatekeeper)["GATEKEEPER_TLS_CLIENT_CA_FILE"] == "/etc/gatekeeper/client-ca/ca.crt"
    assert volume(docs, "client-ca") == {"name": "client-ca",
                                         "configMap": {"name": "gk-gatekeeper-client-ca"}}
    [config] = [d for d in by_kind(docs, "ConfigMap")
                if d["metadata"]["name"] == "gk-gatekeeper-client-ca"]
    assert config["data"] == {"ca.crt": "-----BEGIN CERTIFICATE-----"}


def test_webhooks_call_a_url_with_a_ca_bundle_and_declare_no_side_effects_on_dry_run() -> None:
    docs = render("admission.url=https://gk.example.com:8443/", "tls.mode=secret",
                  "tls.secretName=gk-tls", "tls.caBundle=PEM",
                  "hooks.webhookRegistration=manifest")
    validating = one(docs, "ValidatingWebhookConfiguration")
    assert [w["clientConfig"] for w in validating["webhooks"]] == [
        {"url": f"https://gk.example.com:8443/admission/validate{mode}", "caBundle": "UEVN"}
        for mode in ("", "/warn", "/audit")]
    assert {w["sideEffects"] for w in validating["webhooks"]} == {"NoneOnDryRun"}
    gatekeeper, _ = containers(docs)
    assert env_of(gatekeeper)["GATEKEEPER_ADMISSION_GATE_FAILURE"] == (
        '{"audit":"open","enforce":"closed","warn":"open"}')
    assert env_of(gatekeeper)["GATEKEEPER_ADMISSION_RECORD_DRY_RUN"] == "true"


def test_terminating_pods_keep_answering_and_opa_outlives_the_gatekeeper() -> None:
    # A rolling upgrade on a real node denied 1 of 88 reviews as "policy engine unavailable":
    # the sidecar exited while the API server still routed reviews to the terminating Pod.
    deployment = one(render(), "Deployment")
    gatekeeper, opa = containers(render())
    assert gatekeeper["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    assert opa["lifecycle"] == {"preStop": {"sleep": {"seconds": 8}}}
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 35
    gatekeeper, opa = containers(render("shutdownDelaySeconds=0"))
    assert "lifecycle" not in gatekeeper and "lifecycle" not in opa


def test_workers_per_pod() -> None:
    gatekeeper, _ = containers(render())
    assert env_of(gatekeeper)["GATEKEEPER_WORKERS"] == "1"
    assert gatekeeper["command"] == ["gatekeeper", "serve", "--host", "0.0.0.0", "--port", "8443"]
    gatekeeper, _ = containers(render("workers=3"))
    assert env_of(gatekeeper)["GATEKEEPER_WORKERS"] == "3"
    assert "- at '/workers': minimum: got 0, want 1" in refused("workers=0")


def test_opa_sidecar_runs_with_the_chosen_gogc() -> None:
    _, opa = containers(render())
    assert env_of(opa) == {"GOGC": "400"}
    _, opa = containers(render("opa.gogc=800"))
    assert env_of(opa)["GOGC"] == "800"
    assert "- at '/opa/gogc': minimum: got 5, want 25" in refused("opa.gogc=5")
