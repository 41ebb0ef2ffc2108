"""The admission webhooks in the real application: ``gatekeeper serve`` as a child process on
HTTPS (certificate from files), embedded OPA with the shipped policies, SQLite audit store, and
the loopback registry for digests. The AdmissionReviews are the ones of ``tests/assets``.

Runs once the lead mounts the router in ``create_app`` and the settings know the TLS files
(issue 5's integration note); until then it skips, saying so.
"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.cli import outside_environment
from tests.helpers.serve import gatekeeper_serve
from tests.helpers.tokens import bearer_headers
from tests.integration.cosign_fixtures import push_image, registry_host, unique_repository
from tests.integration.test_admission_https import client_for
from tests.integration.test_admission_signatures import deployment_review
from tests.unit.webhook.certificates import CertificateAuthority

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
ASSETS = REPO / "tests" / "assets" / "admission"
DIGEST = "sha256:" + "cd" * 32


AUTH_SECRET = "admission-test-secret-of-at-least-32-bytes"


def auditor_token() -> dict[str, str]:
    return bearer_headers(AUTH_SECRET, "auditor", subject="auditor-bot")


@contextmanager
def serve_gatekeeper(
    tmp_path: Path, opa_binary: str, policy_dir: Path, ca: CertificateAuthority,
    **extra_env: str,
) -> Iterator[tuple[str, httpx.Client]]:
    """``gatekeeper serve`` as a child on HTTPS with ``extra_env`` on top of the defaults."""
    host = registry_host()
    leaf = ca.issue("gatekeeper", ip_addresses=("127.0.0.1",))
    env = outside_environment()
    env.update(
        GATEKEEPER_DATABASE_URL=f"sqlite:///{tmp_path / 'audit.db'}",
        GATEKEEPER_OPA_BINARY=opa_binary,
        GATEKEEPER_POLICY_DIR=str(policy_dir),
        GATEKEEPER_METRICS_PORT="0",
        GATEKEEPER_DEFAULT_ENVIRONMENT="development",
        GATEKEEPER_REGISTRY=json.dumps({"hosts": [{"host": host, "plain_http": True}]}),
        GATEKEEPER_TLS_CERT_FILE=str(leaf.cert_file),
        GATEKEEPER_TLS_KEY_FILE=str(leaf.key_file),
        GATEKEEPER_NAMESPACE="gatekeeper-system",
        GATEKEEPER_ADMISSION_EXCLUDED_NAMESPACES='["gatekeeper-system", "kube-system"]',
        GATEKEEPER_ADMISSION_BUDGET_SECONDS="8",
        # As in production: the REST API requires tokens; admission is protected by TLS.
        GATEKEEPER_AUTH_HS256_SECRET=AUTH_SECRET,
        GATEKEEPER_AUDIT_SPOOL_DIR=str(tmp_path / "audit-spool"),
        GATEKEEPER_POLICY_STATE_DIR=str(tmp_path / "policy-state"),
    )
    env.update(extra_env)  # may replace a default (the metrics port ...)
    with client_for(ca) as client, gatekeeper_serve(
        env, tmp_path / "serve.log", scheme="https", client=client
    ) as server:
        yield server.url, client


@pytest.fixture
def served(tmp_path: Path, opa_binary: str, policy_dir: Path) -> Iterator[tuple[str, httpx.Client]]:
    with serve_gatekeeper(tmp_path, opa_binary, policy_dir, CertificateAuthority(tmp_path)) as (
        url, client
    ):
        yield url, client


def post(client: httpx.Client, url: str, path: str, document: dict[str, Any]) -> httpx.Response:
    return client.post(url + path, content=json.dumps(document),
                       headers={"Content-Type": "application/json"})


def test_mutation_pins_the_registry_digest_in_the_real_app(served: tuple[str, httpx.Client], tmp_path: Path) -> None:
    url, client = served
    host = registry_host()
    repository = unique_repository()
    digest = push_image(host, f"{repository}:1.0", "app", tmp_path)
    image = f"{host}/{repository}:1.0"

    response = post(client, url, "/admission/mutate", deployment_review("uid-app-1", [image]))

    assert response.status_code == 200
    answer = response.json()["response"]
    assert answer["allowed"] is True, answer["status"]
    assert json.loads(base64.b64decode(answer["patch"])) == [{
        "op": "replace", "path": "/spec/template/spec/containers/0/image",
        "value": f"{image}@{digest}"}]
    decision_id = answer["auditAnnotations"]["decision-id"]
    recorded = client.get(f"{url}/v1/decisions/{decision_id}", headers=auditor_token()).json()
    assert recorded["source"] == "admission" and recorded["namespace"] == "shop"
    assert recorded["ticket"]["ticket_id"] == "TCK-7"
    assert recorded["images"][0]["digest"] == str(digest)


def test_policy_violation_is_denied_naming_the_field(served: tuple[str, httpx.Client]) -> None:
    url, client = served
    image = f"gcr.io/acme/app@{DIGEST}"

    answer = post(client, url, "/admission/validate",
                  deployment_review("uid-app-2", [image])).json()["response"]

    assert answer["allowed"] is False
    assert answer["status"]["message"] == (
        f"spec.template.spec.containers[0].image ({image}): registry \"gcr.io\" is not allowed "
        f"in environment \"development\" (decision {answer['auditAnnotations']['decision-id']})")


def test_edges_of_the_real_app(served: tuple[str, httpx.Client]) -> None:
    url, client = served
    beta = json.loads((ASSETS / "pod-create.json").read_text())
    beta["apiVersion"] = "admission.k8s.io/v1beta1"
    assert post(client, url, "/admission/validate", beta).status_code == 400
    system = json.loads((ASSETS / "pod-kube-system-create.json").read_text())
    answer = post(client, url, "/admission/validate", system).json()["response"]
    assert answer == {
        "uid": system["request"]["uid"], "allowed": True,
        "status": {"code": 200, "message": "not evaluated: namespace kube-system is excluded"}}


def decisions_of(client: httpx.Client, url: str) -> list[dict[str, Any]]:
    page = client.get(f"{url}/v1/decisions?namespace=shop&limit=500", headers=auditor_token())
    assert page.status_code == 200, page.text
    items: list[dict[str, Any]] = page.json()["items"]
    return items


def test_one_admission_through_both_webhooks_is_one_record(served: tuple[str, httpx.Client], tmp_path: Path) -> None:
    url, client = served
    host = registry_host()
    repository = unique_repository()
    digest = push_image(host, f"{repository}:1.0", "app", tmp_path)
    review = deployment_review("uid-both-1", [f"{host}/{repository}:1.0"])
    mutated = post(client, url, "/admission/mutate", review).json()["response"]
    [op] = json.loads(base64.b64decode(mutated["patch"]))
    review["request"]["object"]["spec"]["template"]["spec"]["containers"][0]["image"] = op["value"]
    validated = post(client, url, "/admission/validate", review).json()["response"]
    assert mutated["allowed"] and validated["allowed"]
    decision_id = mutated["auditAnnotations"]["decision-id"]
    assert validated["auditAnnotations"]["decision-id"] == decision_id
    assert validated["status"]["message"] == (
        f"admitted: 1 image(s) evaluated (decision {decision_id}, made by the mutating webhook)")
    assert [d["decision_id"] for d in decisions_of(client, url)] == [decision_id]
    assert op["value"] == f"{host}/{repository}:1.0@{digest}"


def test_a_forbidden_registry_is_never_contacted_and_its_reason_comes_first(served: tuple[str, httpx.Client]) -> None:
    """127.0.0.2 is loopback but not on development's allow-list (127.0.0.1:* is): the deny is
    decided before evidence, so nothing connects to the registry there."""
    url, client = served
    accepted: list[socket.socket] = []
    listener = socket.socket()
    listener.bind(("127.0.0.2", 0))
    listener.listen(8)
    listener.settimeout(0.1)
    forbidden = f"127.0.0.2:{listener.getsockname()[1]}"
    image = f"{forbidden}/acme/app:1.0"
    try:
        answer = post(client, url, "/admission/validate",
                      deployment_review("uid-forbidden-1", [image])).json()["response"]
        try:
            while True:
                connection, _ = listener.accept()
                accepted.append(connection)
        except TimeoutError:
            pass
    finally:
        for connection in accepted:
            connection.close()
        listener.close()
    assert accepted == []
    assert answer["allowed"] is False
    assert answer["status"]["message"] == (
        f"spec.template.spec.containers[0].image ({image}): registry \"{forbidden}\" is not "
        f"allowed in environment \"development\" (decision "
        f"{answer['auditAnnotations']['decision-id']})")


def test_client_ca_guards_the_admission_endpoints_only(
    tmp_path: Path, opa_binary: str, policy_dir: Path
) -> None:
    ca = CertificateAuthority(tmp_path)
    apiserver = ca.issue("kube-apiserver", client=True, stem="apiserver-client")
    with serve_gatekeeper(tmp_path, opa_binary, policy_dir, ca,
                          GATEKEEPER_TLS_CLIENT_CA_FILE=str(ca.cert_file)) as (url, anonymous):
        # The kubelet's probes present no certificate: they keep working.
        assert anonymous.get(url + "/healthz").status_code == 200
        assert anonymous.get(url + "/readyz").status_code == 200
        review = json.loads((ASSETS / "pod-kube-system-create.json").read_text())
        refused = post(anonymous, url, "/admission/validate", review)
        assert refused.status_code == 403
        assert refused.json()["error"]["field"] == "tls"
        with client_for(ca, cert=apiserver) as apiserver_client:
            answer = post(apiserver_client, url, "/admission/validate", review).json()
        assert answer["response"]["status"]["message"] == (
            "not evaluated: namespace kube-system is excluded")
