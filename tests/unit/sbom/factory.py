"""Generated SBOM documents for tests: CycloneDX of any size, SPDX 2.3, hostile JSON."""

from __future__ import annotations

import hashlib
import json
from typing import Any

IMAGE_DIGEST = "sha256:" + "a" * 64
OTHER_DIGEST = "sha256:" + "b" * 64

_LICENSES = ["MIT", "Apache-2.0", "BSD-3-Clause", "GPL-2.0-only OR MIT", "ISC"]


def cyclonedx_component(index: int, **overrides: Any) -> dict[str, Any]:
    licence = _LICENSES[index % len(_LICENSES)]
    component: dict[str, Any] = {
        "type": "library",
        "bom-ref": f"pkg:npm/pkg-{index}@1.{index % 10}.0",
        "name": f"pkg-{index}",
        "version": f"1.{index % 10}.0",
        "purl": f"pkg:npm/pkg-{index}@1.{index % 10}.0",
        "hashes": [{"alg": "SHA-256", "content": hashlib.sha256(str(index).encode()).hexdigest()}],
        "licenses": [{"expression": licence}] if " " in licence else [{"license": {"id": licence}}],
    }
    component.update(overrides)
    return component


def cyclonedx(
    components: int | list[dict[str, Any]] = 3,
    *,
    version: str = "1.6",
    subject: dict[str, Any] | None = None,
) -> dict[str, Any]:
    listed = (
        [cyclonedx_component(i) for i in range(components)]
        if isinstance(components, int)
        else components
    )
    document: dict[str, Any] = {
        "bomFormat": "CycloneDX",
        "specVersion": version,
        "serialNumber": "urn:uuid:3e671687-395b-41f5-a30f-a58921a69b79",
        "version": 1,
        "metadata": {"timestamp": "2026-01-01T00:00:00Z"},
        "components": listed,
    }
    if subject is not None:
        document["metadata"]["component"] = subject
    return document


def container_subject(version: str = IMAGE_DIGEST, **overrides: Any) -> dict[str, Any]:
    """``metadata.component`` of an image SBOM, naming the digest as its version (syft style)."""
    subject: dict[str, Any] = {
        "type": "container", "name": "registry.example.com/app", "version": version,
    }
    subject.update(overrides)
    return subject


def encode(document: Any) -> bytes:
    return json.dumps(document).encode()


def spdx(packages: int = 3, *, described_digest: str | None = IMAGE_DIGEST) -> dict[str, Any]:
    listed: list[dict[str, Any]] = []
    for index in range(packages):
        listed.append(
            {
                "SPDXID": f"SPDXRef-Package-{index}",
                "name": f"pkg-{index}",
                "versionInfo": f"1.{index}.0",
                "downloadLocation": "NOASSERTION",
                "licenseConcluded": _LICENSES[index % len(_LICENSES)],
                "licenseDeclared": "NOASSERTION",
                "checksums": [
                    {"algorithm": "SHA256",
                     "checksumValue": hashlib.sha256(str(index).encode()).hexdigest()}
                ],
                "externalRefs": [
                    {"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                     "referenceLocator": f"pkg:pypi/pkg-{index}@1.{index}.0"}
                ],
            }
        )
    document: dict[str, Any] = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": "app",
        "documentNamespace": "https://example.com/spdx/app-1",
        "creationInfo": {"created": "2026-01-01T00:00:00Z", "creators": ["Tool: test"]},
        "packages": listed,
        "relationships": [],
    }
    if described_digest is not None:
        algorithm, _, hex_part = described_digest.partition(":")
        listed.append(
            {
                "SPDXID": "SPDXRef-Image",
                "name": "app",
                "versionInfo": described_digest,
                "downloadLocation": "NOASSERTION",
                "primaryPackagePurpose": "CONTAINER",
                "externalRefs": [
                    {"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                     "referenceLocator": f"pkg:oci/app@{algorithm}%3A{hex_part}"}
                ],
            }
        )
        document["relationships"].append(
            {"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
             "relatedSpdxElement": "SPDXRef-Image"}
        )
    return document
