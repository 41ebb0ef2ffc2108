"""The chart's hook Jobs, their RBAC, the ``helm test`` Pod and the Secret checks, rendered by the
real ``helm`` (what the commands do against an API server: test_kube_hooks.py)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.integration.test_chart import HELM, NAMESPACE, by_kind, one, refused, render

pytestmark = pytest.mark.skipif(not HELM, reason="GATEKEEPER_HELM (path of helm) is not set")

WEBHOOK_KINDS = ["validatingwebhookconfigurations", "mutatingwebhookconfigurations"]
HOOK_DELETE = "before-hook-creation,hook-succeeded"


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in by_kind(docs, kind) if d["metadata"]["name"] == name]
    return doc


def jobs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in by_kind(docs, "Job")}


def container(job: dict[str, Any]) -> dict[str, Any]:
    (only,) = job["spec"]["template"]["spec"]["containers"]
    decoded: dict[str, Any] = only
    return decoded


def test_hook_jobs_run_the_gatekeeper_image_at_the_right_moments() -> None:
    docs = render()
    found = jobs(docs)
    assert {name: job["metadata"]["annotations"]["helm.sh/hook"]
            for name, job in found.items()} == {
        "gk-gatekeeper-certs": "pre-install,pre-upgrade",
        "gk-gatekeeper-register": "post-install,post-upgrade",
        "gk-gatekeeper-unregister": "pre-delete",
    }
    image = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    selector = one(docs, "Service")["spec"]["selector"]
    for job in found.values():
        assert job["metadata"]["annotations"]["helm.sh/hook-delete-policy"] == HOOK_DELETE
        pod = job["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == "gk-gatekeeper-hooks"
        assert pod["restartPolicy"] == "Never"
        assert pod["securityContext"]["runAsNonRoot"] is True
        main = container(job)
        assert main["image"] == image
        assert main["command"] == ["gatekeeper"]  # no shell, no kubectl image
        assert main["securityContext"]["readOnlyRootFilesystem"] is True
        labels = job["spec"]["template"]["metadata"]["labels"]
        # Never an endpoint of the gatekeeper's Service (nor counted by its PDB).
        assert not selector.items() <= labels.items()
    assert container(found["gk-gatekeeper-certs"])["args"] == [
        "certs", "ensure", "--secret", "gk-gatekeeper-tls", "--ca-secret", "gk-gatekeeper-ca",
        "--ca-days", "3650", "--certificate-days", "365", "--renew-before-days", "30",
        "--webhook-name", "gk-gatekeeper",
        "--dns-name", f"gk-gatekeeper.{NAMESPACE}.svc", "--dns-name", "gk-gatekeeper",
        "--dns-name", f"gk-gatekeeper.{NAMESPACE}",
        "--dns-name", f"gk-gatekeeper.{NAMESPACE}.svc.cluster.local"]
    register = found["gk-gatekeeper-register"]
    assert container(register)["args"] == [
        "webhooks", "register", "--manifest", "/etc/gatekeeper/webhooks/webhooks.yaml",
        "--service", "gk-gatekeeper", "--timeout", "240", "--ca-secret", "gk-gatekeeper-tls"]
    assert register["spec"]["template"]["spec"]["volumes"] == [
        {"name": "webhooks", "configMap": {"name": "gk-gatekeeper-webhooks"}}]
    assert container(found["gk-gatekeeper-unregister"])["args"] == [
        "webhooks", "unregister", "--name", "gk-gatekeeper",
        "--delete-secret", "gk-gatekeeper-tls", "--delete-secret", "gk-gatekeeper-ca"]


def test_the_webhooks_configmap_holds_what_register_creates() -> None:
    webhooks = named(render(), "ConfigMap", "gk-gatekeeper-webhooks")
    configurations = [d for d in yaml.safe_load_all(webhooks["data"]["webhooks.yaml"]) if d]
    assert [(d["kind"], d["metadata"]["name"]) for d in configurations] == [
        ("ValidatingWebhookConfiguration", "gk-gatekeeper"),
        ("MutatingWebhookConfiguration", "gk-gatekeeper")]


def test_hook_rbac_is_least_privilege_and_lives_only_during_the_hooks() -> None:
    docs = render()
    for kind in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
        annotations = named(docs, kind, "gk-gatekeeper-hooks")["metadata"]["annotations"]
        assert annotations == {
            "helm.sh/hook": "pre-install,pre-upgrade,post-install,post-upgrade,pre-delete",
            "helm.sh/hook-weight": "-10", "helm.sh/hook-delete-policy": HOOK_DELETE}
    assert named(docs, "ClusterRole", "gk-gatekeeper-hooks")["rules"] == [
        # Kubernetes cannot restrict `create` by name; every other verb is.
        {"apiGroups": ["admissionregistration.k8s.io"], "resources": WEBHOOK_KINDS,
         "verbs": ["create"]},
        {"apiGroups": ["admissionregistration.k8s.io"], "resources": WEBHOOK_KINDS,
         "resourceNames": ["gk-gatekeeper"], "verbs": ["get", "update", "delete"]}]
    assert named(docs, "Role", "gk-gatekeeper-hooks")["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["secrets"],
         "resourceNames": ["gk-gatekeeper-tls", "gk-gatekeeper-ca"],
         "verbs": ["get", "update", "delete"]},
        {"apiGroups": [""], "resources": ["services"], "resourceNames": ["gk-gatekeeper"],
         "verbs": ["get"]}]
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        assert named(docs, kind, "gk-gatekeeper-hooks")["subjects"] == [
            {"kind": "ServiceAccount", "name": "gk-gatekeeper-hooks", "namespace": NAMESPACE}]


def test_renewal_cronjob_runs_the_certs_hook_command_with_narrower_rights() -> None:
    docs = render()
    cronjob = one(docs, "CronJob")
    assert cronjob["spec"]["schedule"] == "17 3 * * *"
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "gk-gatekeeper-certs"
    (main,) = pod["containers"]
    assert main["args"] == container(jobs(docs)["gk-gatekeeper-certs"])["args"]
    assert named(docs, "ClusterRole", "gk-gatekeeper-certs")["rules"] == [
        {"apiGroups": ["admissionregistration.k8s.io"], "resources": WEBHOOK_KINDS,
         "resourceNames": ["gk-gatekeeper"], "verbs": ["get", "update"]}]
    assert named(docs, "Role", "gk-gatekeeper-certs")["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["secrets"],
         "resourceNames": ["gk-gatekeeper-tls", "gk-gatekeeper-ca"], "verbs": ["get", "update"]}]
    assert by_kind(render('tls.renewSchedule='), "CronJob") == []
    assert by_kind(render("tls.mode=certManager"), "CronJob") == []


def test_cert_manager_mode_has_no_certs_job_and_reads_only_the_tls_secret() -> None:
    docs = render("tls.mode=certManager")
    assert sorted(jobs(docs)) == ["gk-gatekeeper-register", "gk-gatekeeper-unregister"]
    assert named(docs, "Role", "gk-gatekeeper-hooks")["rules"][0] == {
        "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["gk-gatekeeper-tls"],
        "verbs": ["get"]}
    annotations = named(docs, "Role", "gk-gatekeeper-hooks")["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "post-install,post-upgrade,pre-delete"
    assert container(jobs(docs)["gk-gatekeeper-unregister"])["args"] == [
        "webhooks", "unregister", "--name", "gk-gatekeeper"]


def test_existing_secret_mode_registers_with_the_given_ca() -> None:
    docs = render("tls.mode=secret", "tls.secretName=my-tls",
                  "tls.caBundle=-----BEGIN CERTIFICATE-----")
    register = jobs(docs)["gk-gatekeeper-register"]
    assert container(register)["args"][-2:] == [
        "--ca-bundle-file", "/etc/gatekeeper/serving-ca/ca.crt"]
    assert {"name": "serving-ca", "configMap": {"name": "gk-gatekeeper-serving-ca"}} in (
        register["spec"]["template"]["spec"]["volumes"])
    rules = named(docs, "Role", "gk-gatekeeper-hooks")["rules"]
    assert all(rule["resources"] != ["secrets"] for rule in rules)


def test_manifest_registration_renders_plain_webhooks_and_no_hooks() -> None:
    docs = render("tls.mode=certManager", "hooks.webhookRegistration=manifest")
    assert by_kind(docs, "Job") == []
    assert [d for d in docs if d["metadata"]["name"] == "gk-gatekeeper-hooks"] == []
    assert [d for d in by_kind(docs, "ConfigMap")
            if d["metadata"]["name"] == "gk-gatekeeper-webhooks"] == []
    assert one(docs, "ValidatingWebhookConfiguration")["metadata"]["name"] == "gk-gatekeeper"


def test_helm_test_pod_asks_the_service_for_readyz_over_verified_tls() -> None:
    docs = render()
    pod = one(docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (probe,) = pod["spec"]["containers"]
    assert probe["command"] == ["gatekeeper"]
    assert probe["args"] == [
        "webhooks", "probe", "--url", "https://$(GK_GATEKEEPER_SERVICE_HOST):443/readyz",
        "--server-name", f"gk-gatekeeper.{NAMESPACE}.svc",
        "--ca-bundle-file", "/etc/gatekeeper/serving-ca/ca.crt", "--timeout", "60"]
    assert pod["spec"]["enableServiceLinks"] is True
    assert pod["spec"]["volumes"] == [{"name": "serving-ca", "secret": {
        "secretName": "gk-gatekeeper-tls", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("database.existingSecret=",),
         "database.existingSecret or database.url is required"),
        (("audit.signingKey.existingSecret=audit-key", "audit.signingKey.key="),
         "at '/audit/signingKey/key': minLength: got 0, want 1"),
        (("tls.renewBeforeDays=365",),
         "tls.renewBeforeDays (365) must be below tls.certificateDays (365)"),
        (("tls.validityDays=20",),
         "tls.renewBeforeDays (30) must be below tls.validityDays (20)"),
        (("hooks.webhookRegistration=manifest",),
         "hooks.webhookRegistration=manifest needs tls.mode=certManager or tls.mode=secret"),
        (("hooks.webhookRegistration=kubectl",), "value must be one of 'hook', 'manifest'"),
        (("tls.certificateDays=1",), "minimum: got 1, want 2"),
        (("tls.renewSchedule=daily",), "at '/tls/renewSchedule'"),
    ],
)
def test_missing_or_inconsistent_values_fail_the_render_naming_them(
        sets: tuple[str, ...], message: str) -> None:
    stderr = refused(*sets)
    assert message in stderr, stderr
