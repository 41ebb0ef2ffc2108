"""``webhooks/`` (kustomize base for clusters without Helm) stays equal to the chart's rendering.

Rendered with ``kubectl kustomize`` when ``GATEKEEPER_KUBECTL`` names a kubectl; otherwise the
base's resources are read directly (the base has no transformers, so both agree).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "webhooks"
HELM = os.environ.get("GATEKEEPER_HELM")
KUBECTL = os.environ.get("GATEKEEPER_KUBECTL")
COMPARED = {"ValidatingWebhookConfiguration", "MutatingWebhookConfiguration", "Certificate",
            "Issuer"}


def _key(doc: dict[str, Any]) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


def _comparable(doc: dict[str, Any]) -> dict[str, Any]:
    doc = dict(doc)
    doc["metadata"] = {k: v for k, v in doc["metadata"].items() if k != "labels"}
    return doc


def kustomize_base() -> dict[tuple[str, str], dict[str, Any]]:
    if KUBECTL:
        text = subprocess.run([KUBECTL, "kustomize", str(BASE)], capture_output=True,
                              text=True, check=True, timeout=60).stdout
        docs = list(yaml.safe_load_all(text))
    else:
        kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
        assert set(kustomization) == {"apiVersion", "kind", "resources"}, (
            "the base must stay transformer-free so that it can be compared without kubectl")
        docs = [doc for name in kustomization["resources"]
                for doc in yaml.safe_load_all((BASE / name).read_text())]
    return {_key(doc): _comparable(doc) for doc in docs if doc}


@pytest.mark.skipif(not HELM, reason="GATEKEEPER_HELM (path of helm) is not set")
def test_kustomize_base_equals_chart_rendering_with_cert_manager() -> None:
    assert HELM is not None
    text = subprocess.run(
        [HELM, "template", "gatekeeper", str(REPO / "charts" / "gatekeeper"),
         "--namespace", "gatekeeper-system", "--kube-version", "1.31.0",
         "--values", str(REPO / "charts" / "gatekeeper" / "ci" / "test-values.yaml"),
         "--set", "tls.mode=certManager", "--set", "hooks.webhookRegistration=manifest",
         "--set", "fullnameOverride=gatekeeper"],
        capture_output=True, text=True, check=True, timeout=120).stdout
    chart = {_key(doc): _comparable(doc) for doc in yaml.safe_load_all(text)
             if doc and doc["kind"] in COMPARED}
    base = kustomize_base()
    assert sorted(base) == sorted(chart)
    for key, doc in chart.items():
        assert base[key] == doc, f"webhooks/ differs from the chart for {key}"


def test_base_registers_both_webhooks_for_the_gatekeeper_service() -> None:
    base = kustomize_base()
    validating = base["ValidatingWebhookConfiguration", "gatekeeper"]
    mutating = base["MutatingWebhookConfiguration", "gatekeeper"]
    for config in (validating, mutating):
        assert config["metadata"]["annotations"] == {
            "cert-manager.io/inject-ca-from": "gatekeeper-system/gatekeeper"}
        for webhook in config["webhooks"]:
            assert webhook["failurePolicy"] == "Fail"
            assert webhook["clientConfig"]["service"]["name"] == "gatekeeper"
    assert validating["webhooks"][0]["clientConfig"]["service"]["path"] == "/admission/validate"
    assert mutating["webhooks"][0]["clientConfig"]["service"]["path"] == "/admission/mutate"


OVERLAY = BASE / "out-of-cluster"
EXTERNAL_URL = "https://gatekeeper.example.com:8443"


def kustomize_overlay() -> dict[tuple[str, str], dict[str, Any]]:
    """``webhooks/out-of-cluster`` rendered by kubectl, or its plain resources read directly."""
    if KUBECTL:
        text = subprocess.run([KUBECTL, "kustomize", str(OVERLAY)], capture_output=True,
                              text=True, check=True, timeout=60).stdout
        docs = list(yaml.safe_load_all(text))
    else:
        kustomization = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
        assert set(kustomization) == {"apiVersion", "kind", "resources"}
        docs = [doc for name in kustomization["resources"]
                for doc in yaml.safe_load_all((OVERLAY / name).read_text())]
    return {_key(doc): _comparable(doc) for doc in docs if doc}


def test_out_of_cluster_overlay_is_the_base_with_a_url_instead_of_the_service() -> None:
    base = kustomize_base()
    for key, config in kustomize_overlay().items():
        expected = dict(base[key])
        expected["metadata"] = {k: v for k, v in expected["metadata"].items()
                                if k != "annotations"}
        expected["webhooks"] = [
            {**webhook, "clientConfig": config["webhooks"][index]["clientConfig"]}
            for index, webhook in enumerate(expected["webhooks"])]
        assert config == expected, f"webhooks/out-of-cluster differs from webhooks/ for {key}"


def test_out_of_cluster_overlay_calls_a_url_with_a_ca_bundle_without_cert_manager() -> None:
    docs = kustomize_overlay()
    assert sorted(docs) == [("MutatingWebhookConfiguration", "gatekeeper"),
                            ("ValidatingWebhookConfiguration", "gatekeeper")]
    for (_kind, _name), config in docs.items():
        assert "annotations" not in config["metadata"]
        webhook_kind = "validate" if _kind.startswith("Validating") else "mutate"
        assert [w["clientConfig"] for w in config["webhooks"]] == [
            {"url": f"{EXTERNAL_URL}/admission/{webhook_kind}{mode}", "caBundle": "Q0hBTkdFLU1F"}
            for mode in ("", "/warn", "/audit")]
        assert {w["sideEffects"] for w in config["webhooks"]} == {"NoneOnDryRun"}


@pytest.mark.skipif(not HELM, reason="GATEKEEPER_HELM (path of helm) is not set")
def test_out_of_cluster_overlay_equals_chart_rendering_with_a_url() -> None:
    assert HELM is not None
    text = subprocess.run(
        [HELM, "template", "gatekeeper", str(REPO / "charts" / "gatekeeper"),
         "--namespace", "gatekeeper-system", "--kube-version", "1.31.0",
         "--values", str(REPO / "charts" / "gatekeeper" / "ci" / "test-values.yaml"),
         "--set", f"admission.url={EXTERNAL_URL}", "--set", "tls.mode=secret",
         "--set", "tls.secretName=gatekeeper-tls", "--set", "tls.caBundle=CHANGE-ME",
         "--set", "fullnameOverride=gatekeeper", "--set", "hooks.webhookRegistration=manifest"],
        capture_output=True, text=True, check=True, timeout=120).stdout
    chart = {_key(doc): _comparable(doc) for doc in yaml.safe_load_all(text)
             if doc and doc["kind"] in COMPARED}
    assert kustomize_overlay() == chart


def test_webhooks_declare_no_side_effects_on_dry_run() -> None:
    for config in kustomize_base().values():
        for webhook in config.get("webhooks", []):
            assert webhook["sideEffects"] == "NoneOnDryRun"
