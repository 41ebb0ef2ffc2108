"""Issue 14.4: VEX waives exactly the finding and the digest it names, from trusted sources only.

The whole gatekeeper (``create_app``: bearer auth, SQLite, embedded OPA with the shipped
``policies/``) reading ECR enhanced-scan findings injected into moto. VEX documents are uploaded
through ``POST /v1/vex`` by the roles that may (``vex-publisher``, ``policy-admin``); a
``pipeline`` token may not, and VEX inside an SBOM a pipeline uploads is never read as VEX.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gatekeeper.app import create_app
from gatekeeper.domain.reference import Digest, ImageReference
from tests.helpers.app import evaluated
from tests.helpers.tokens import bearer_headers
from tests.helpers.types import MakeSettings
from tests.integration.test_ecr_scans import (  # noqa: F401 - fixtures
    PushImage,
    aws_credentials,
    complete_scan,
    ecr,
    enhanced_finding,
    inject,
    push_image,
)

pytestmark = pytest.mark.integration

SECRET = "an HS256 secret of at least 32 bytes!"
XZ = "CVE-2024-3094"
GLIBC = "CVE-2023-4911"
XZ_TEXT = f"{XZ} in xz-utils 5.6.0 (CRITICAL, fixed in 5.6.1)"
XZ_DENIED = ("vulnerabilities", f"{XZ_TEXT} is not allowed in production")
GLIBC_DENIED = ("vulnerabilities",
                f"{GLIBC} in glibc 2.37 (HIGH, fixed in 2.38) is not allowed in production")
WAIVED = (f"{XZ_TEXT} waived by VEX (not_affected: vulnerable_code_not_in_execute_path) "
          "from upload by sec-team")  # fmt: skip


def bearer(*roles: str, sub: str) -> dict[str, str]:
    return bearer_headers(SECRET, *roles, subject=sub)


def publisher() -> dict[str, str]:
    return bearer("vex-publisher", sub="sec-team")
def pipeline() -> dict[str, str]:
    """A fresh token per request: a module-level token would expire in a long test run."""
    return bearer("pipeline", sub="ci-bot")


def _purl(reference: ImageReference, digest: Digest) -> str:
    return f"pkg:oci/{reference.repository.rsplit('/', 1)[-1]}@{str(digest).replace(':', '%3A')}"


def openvex(reference: ImageReference, digest: Digest, cve: str = XZ, **statement: Any) -> bytes:
    return json.dumps({
        "@context": "https://openvex.dev/ns/v0.2.0",
        "@id": f"https://example.com/vex/{digest.hex[:12]}",
        "author": "security@example.com", "timestamp": "2026-11-20T00:00:00Z", "version": 1,
        "statements": [{
            "vulnerability": {"name": cve},
            "products": [{"@id": _purl(reference, digest),
                          "subcomponents": [{"@id": "pkg:deb/debian/xz-utils@5.6.0"}]}],
            "status": "not_affected", "justification": "vulnerable_code_not_in_execute_path",
            **statement,
        }],
    }).encode()  # fmt: skip


XZ_FINDING = ("CVE-2024-3094", "xz-utils", "5.6.0", "5.6.1", "CRITICAL")
GLIBC_FINDING = ("CVE-2023-4911", "glibc", "2.37", "2.38", "HIGH")


@pytest.fixture
def gate(make_settings: MakeSettings, policy_dir: Path, moto_url: str) -> Iterator[TestClient]:  # noqa: ANN001, F811
    data_file = policy_dir / "data.json"
    data = json.loads(data_file.read_text())
    config = data["gatekeeper"]["config"]
    # Only vulnerability evidence is under test: no signature or SBOM requirement here.
    config["signatures"]["environments"]["production"].update(
        {"require_signature": False, "require_provenance": False}
    )
    config.setdefault("sbom", {}).setdefault("environments", {}).setdefault("production", {})[
        "require_sbom"
    ] = False
    data_file.write_text(json.dumps(data))
    settings = make_settings(
        auth_hs256_secret=SECRET, insecure_disable_auth=False, ecr_endpoint_url=moto_url,
        ecr_retry_mode="standard", ecr_max_attempts=2, ecr_auth=False,
        policy_watch_interval_seconds=0,
    )  # fmt: skip
    with TestClient(create_app(settings)) as client:
        yield client


def _image(  # noqa: F811
    moto_url: str, push_image: PushImage, *findings: tuple[str, str, str, str | None, str]  # noqa: F811
) -> tuple[ImageReference, Digest]:
    reference, digest = push_image()
    inject(moto_url, reference, digest, **complete_scan([enhanced_finding(*f[:4], severity=f[4]) for f in findings]))
    return reference, digest


def _decide(client: TestClient, reference: ImageReference) -> dict[str, Any]:
    return evaluated(
        client,
        {"images": [str(reference)], "environment": "production", "namespace": "shop"},
        headers=pipeline(),
    )


def _violations(decision: dict[str, Any]) -> set[tuple[str, str]]:
    return {(v["policy"], v["message"]) for v in decision["violations"]}


def _warnings(decision: dict[str, Any]) -> set[str]:
    return {w["message"] for w in decision["warnings"] if w["policy"] == "vulnerabilities"}


def _upload(client: TestClient, content: bytes, headers: dict[str, str]) -> Any:
    return client.post("/v1/vex", content=content,
                       headers={**headers, "Content-Type": "application/json"})  # fmt: skip


def test_vex_waives_exactly_that_cve_for_that_digest(
    gate: TestClient, moto_url: str, push_image: PushImage,  # noqa: F811
) -> None:
    named, named_digest = _image(moto_url, push_image, XZ_FINDING, GLIBC_FINDING)
    other, _ = _image(moto_url, push_image, XZ_FINDING)
    before = _decide(gate, named)
    assert _violations(before) == {XZ_DENIED, GLIBC_DENIED}

    response = _upload(gate, openvex(named, named_digest), publisher())

    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["format"], body["statement_count"], body["image_digests"]) == (
        "openvex", 1, [str(named_digest)]
    )
    assert body["uploaded_by"] == "sec-team"
    decision = _decide(gate, named)
    assert _violations(decision) == {GLIBC_DENIED}  # another CVE of the same digest: still denied
    assert _warnings(decision) == {WAIVED}
    [statement] = decision["images"][0]["evidence"]["vex"]["statements"]
    assert (statement["source"], statement["supplied_by"], statement["status"]) == (
        "upload", "sec-team", "not_affected"
    )
    # The same CVE in another digest: not waived.
    elsewhere = _decide(gate, other)
    assert _violations(elsewhere) == {XZ_DENIED}
    assert _warnings(elsewhere) == set()
    assert elsewhere["images"][0]["evidence"]["vex"]["statements"] == []


def test_cyclonedx_vex_from_a_policy_admin_waives_with_its_state(
    gate: TestClient, moto_url: str, push_image: PushImage,  # noqa: F811
) -> None:
    reference, digest = _image(moto_url, push_image, XZ_FINDING)
    document = {
        "bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1,
        "metadata": {"component": {"type": "container", "name": "app", "bom-ref": "app",
                                   "purl": _purl(reference, digest)}},
        "components": [{"type": "library", "name": "xz-utils", "version": "5.6.0",
                        "bom-ref": "xz", "purl": "pkg:deb/debian/xz-utils@5.6.0"}],
        "vulnerabilities": [{"id": XZ, "analysis": {"state": "resolved"},
                             "affects": [{"ref": "xz"}]}],
    }  # fmt: skip

    response = _upload(gate, json.dumps(document).encode(), bearer("policy-admin", sub="sec-lead"))

    assert response.status_code == 201, response.text
    decision = _decide(gate, reference)
    assert _violations(decision) == set()
    assert _warnings(decision) == {f"{XZ_TEXT} waived by VEX (fixed) from upload by sec-lead"}


def test_vex_from_a_role_that_may_not_publish_is_ignored(
    gate: TestClient, moto_url: str, push_image: PushImage,  # noqa: F811
) -> None:
    reference, digest = _image(moto_url, push_image, XZ_FINDING)

    for role in ("pipeline", "auditor"):
        refused = _upload(gate, openvex(reference, digest), bearer(role, sub=f"{role}-bot"))
        assert refused.status_code == 403, refused.text
        assert refused.json()["message"] == (
            f"subject '{role}-bot' lacks the role for this operation: requires vex-publisher "
            f"or policy-admin, token grants {role}"
        )
    # A pipeline may upload an SBOM carrying a CycloneDX VEX analysis: it is an SBOM, not VEX.
    sbom_with_vex = {
        "bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1,
        "metadata": {"component": {"type": "container", "name": "app", "bom-ref": "app",
                                   "purl": _purl(reference, digest)}},
        "components": [],
        "vulnerabilities": [{"id": XZ, "analysis": {"state": "not_affected",
                                                    "justification": "code_not_reachable"},
                             "affects": [{"ref": "app"}]}],
    }  # fmt: skip
    stored = gate.post(
        "/v1/sboms", params={"image_digest": str(digest)}, content=json.dumps(sbom_with_vex),
        headers={**pipeline(), "Content-Type": "application/vnd.cyclonedx+json"},
    )  # fmt: skip
    assert stored.status_code == 201, stored.text

    decision = _decide(gate, reference)

    assert _violations(decision) == {XZ_DENIED}
    assert _warnings(decision) == set()
    assert decision["images"][0]["evidence"]["vex"]["documents"] == []


def test_vex_naming_no_digest_or_malformed_is_refused_naming_the_path(gate: TestClient) -> None:
    no_digest = json.loads(openvex(*_fake_image()))
    no_digest["statements"][0]["products"] = [{"@id": "pkg:deb/debian/xz-utils@5.6.0"}]
    response = _upload(gate, json.dumps(no_digest).encode(), publisher())
    assert response.status_code == 422
    assert response.json()["field"] == "$.statements"
    assert "no statement names an image digest as its product" in response.json()["message"]

    unjustified = openvex(*_fake_image(), justification=None)
    response = _upload(gate, unjustified, publisher())
    assert response.status_code == 422
    assert response.json()["message"] == (
        "$.statements[0]: VEX document is invalid at $.statements[0]: not_affected needs a "
        "justification or an impact_statement"
    )


def _fake_image() -> tuple[ImageReference, Digest]:
    from gatekeeper.domain.reference import parse_image_reference

    reference = parse_image_reference("123456789012.dkr.ecr.eu-west-1.amazonaws.com/x@sha256:" + "ab" * 32)
    assert reference.digest is not None
    return reference, reference.digest
