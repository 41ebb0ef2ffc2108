"""Admission end to end with real signatures: cosign-signed and unsigned images in the loopback
registry, the signatures collector, the digest resolver and the real OPA behind the HTTPS
webhooks. Needs ``scripts/test-servers`` (registry, cosign); skips only when it is not running.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest

from gatekeeper.policy import EmbeddedOpa
from gatekeeper.service import EvaluationService
from gatekeeper.verify import SignatureEvidenceCollector, SignaturePolicySettings, TrustRoot
from gatekeeper.webhook import AdmissionHandler, AdmissionSettings
from gatekeeper.webhook.tls import ReloadingServerContext
from tests.integration.cosign_fixtures import (
    cosign_binary,
    cosign_sign,
    generate_key_pair,
    push_image,
    registry_client,
    registry_host,
    unique_repository,
)
from tests.integration.test_admission_https import client_for, serve_https
from tests.integration.test_cosign_decisions import PROPOSED_SIGNATURES_POLICY
from tests.unit.webhook.certificates import CertificateAuthority
from tests.unit.webhook.fakes import MemoryAuditLog

pytestmark = pytest.mark.integration


class Cluster(Protocol):
    """The admission webhook served over TLS, and images pushed for it to admit."""

    audit_log: MemoryAuditLog

    def image(self, content: str, *, signed: bool) -> tuple[str, str]: ...

    def admit(self, path: str, images: list[str], uid: str) -> dict[str, Any]: ...


def deployment_review(uid: str, images: list[str]) -> dict[str, Any]:
    # A workload the shipped production rules accept (requests, limits, read-only root,
    # non-root): these reviews test the images, not policies/workload.rego.
    containers = [{"name": f"c{i}", "image": image, "imagePullPolicy": "IfNotPresent",
                   "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                                 "limits": {"cpu": "500m", "memory": "256Mi"}},
                   "securityContext": {"readOnlyRootFilesystem": True, "runAsNonRoot": True}}
                  for i, image in enumerate(images)]
    obj = {"kind": "Deployment", "apiVersion": "apps/v1",
           "metadata": {"name": "shop", "namespace": "shop",
                        "annotations": {"gatekeeper.forge.dev/ticket-id": "TCK-7"}},
           "spec": {"selector": {"matchLabels": {"app": "shop"}},
                    "template": {"metadata": {"labels": {"app": "shop"}},
                                 "spec": {"containers": containers}}}}
    gvk = {"group": "apps", "version": "v1", "kind": "Deployment"}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": uid, "kind": gvk,
                        "resource": {"group": "apps", "version": "v1",
                                     "resource": "deployments"},
                        "name": "shop", "namespace": "shop", "operation": "CREATE",
                        "userInfo": {"username": "alice"}, "object": obj, "dryRun": False}}


@pytest.fixture
def cluster(opa_binary: str, policy_dir: Path, tmp_path: Path) -> Iterator[Cluster]:
    host = registry_host()
    cosign = cosign_binary("v2")
    keys = generate_key_pair(cosign, tmp_path / "keys")
    if not (policy_dir / "signatures.rego").exists():
        (policy_dir / "signatures.rego").write_text(PROPOSED_SIGNATURES_POLICY)
    opa = EmbeddedOpa(opa_binary=opa_binary, policy_dir=policy_dir)
    opa.start()
    registry = registry_client(host)
    signatures = SignatureEvidenceCollector(
        SignaturePolicySettings.from_mapping({
            "authorities": [{"name": "release", "keys": [keys.public_pem], "tlog": False}],
            "images": [{"glob": f"{host}/**", "authorities": ["release"]}],
        }),
        registry, TrustRoot.none())
    audit = MemoryAuditLog()
    service = EvaluationService(policy_engine=opa.engine, audit_log=audit,
                                collectors=[signatures], digest_resolver=registry)
    ca = CertificateAuthority(tmp_path)
    leaf = ca.issue("gatekeeper", ip_addresses=("127.0.0.1",))
    handler = AdmissionHandler(service, AdmissionSettings(environment="staging"))

    class Served(Cluster):
        audit_log = audit

        def __init__(self, url: str, client: httpx.Client) -> None:
            self.url, self.client = url, client

        def image(self, content: str, *, signed: bool) -> tuple[str, str]:
            repository = unique_repository()
            digest = push_image(host, f"{repository}:1.0", content, tmp_path)
            if signed:
                cosign_sign(cosign, keys, f"{host}/{repository}@{digest}", tmp_path)
            return f"{host}/{repository}:1.0", str(digest)

        def admit(self, path: str, images: list[str], uid: str) -> dict[str, Any]:
            response = self.client.post(self.url + path, json=deployment_review(uid, images))
            assert response.status_code == 200, response.text
            answer: dict[str, Any] = response.json()["response"]
            return answer

    try:
        with serve_https(handler, ReloadingServerContext(leaf.cert_file, leaf.key_file)) as url, \
                client_for(ca) as client:
            yield Served(url, client)
    finally:
        registry.close()
        opa.stop()


def test_signed_images_are_admitted_and_pinned_to_the_verified_digest(cluster: Cluster) -> None:
    web, web_digest = cluster.image("web", signed=True)
    api, api_digest = cluster.image("api", signed=True)

    response = cluster.admit("/admission/mutate", [web, api], "uid-signed")

    assert response["allowed"] is True, response["status"]
    assert json.loads(base64.b64decode(response["patch"])) == [
        {"op": "replace", "path": "/spec/template/spec/containers/0/image",
         "value": f"{web}@{web_digest}"},
        {"op": "replace", "path": "/spec/template/spec/containers/1/image",
         "value": f"{api}@{api_digest}"},
    ]
    (decision,) = cluster.audit_log.records
    assert decision.ticket.ticket_id == "TCK-7"
    assert [i.evidence["signatures"]["status"] for i in decision.images] == ["verified"] * 2

    # Reinvocation / the validating webhook see the pinned images: admitted, nothing to patch.
    pinned = [f"{web}@{web_digest}", f"{api}@{api_digest}"]
    again = cluster.admit("/admission/mutate", pinned, "uid-pinned")
    assert again["allowed"] is True and "patch" not in again


def test_unsigned_image_is_denied_with_a_field_addressed_message(cluster: Cluster) -> None:
    web, _ = cluster.image("web", signed=True)
    api, api_digest = cluster.image("api-unsigned", signed=False)

    response = cluster.admit("/admission/validate", [web, api], "uid-unsigned")

    decision = cluster.audit_log.records[-1]
    assert response["allowed"] is False
    assert response["status"] == {
        "code": 403,
        "reason": "Forbidden",
        "message": (
            f"spec.template.spec.containers[1].image ({api}): image {api}@{api_digest}: no "
            "signature found; 0 of 1 required authorities verified [release: no signature "
            f"found (no cosign signature for this digest)] (decision {decision.decision_id})"),
    }
    assert response["auditAnnotations"] == {
        "decision-id": decision.decision_id, "verdict": "deny", "mode": "enforce"}


def test_warn_namespace_admits_the_unsigned_image_with_a_warning(cluster: Cluster) -> None:
    api, api_digest = cluster.image("api-unsigned-warn", signed=False)

    response = cluster.admit("/admission/validate/warn", [api], "uid-warn")

    assert response["allowed"] is True
    assert response["warnings"] == [
        f"not enforced (warn mode): spec.template.spec.containers[0].image ({api}): image "
        f"{api}@{api_digest}: no signature found; 0 of 1 required authorities verified "
        "[release: no signature found (no cosign signature for this digest)]"]
