"""Manifest parsing limits and registry settings validation."""

from __future__ import annotations

import hashlib
import json
from typing import Any, cast

import pytest

from gatekeeper.domain.reference import Digest
from gatekeeper.errors import ConfigurationError, InvalidInputError
from gatekeeper.registry import RegistryClientSettings
from gatekeeper.registry.model import OCI_INDEX, OCI_MANIFEST, Manifest, parse_manifest

EMPTY = {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2,
         "digest": "sha256:" + hashlib.sha256(b"{}").hexdigest()}  # fmt: skip


def _parse(document: object, media_type: str | None = OCI_MANIFEST) -> Manifest:
    content = json.dumps(document).encode()
    return parse_manifest(
        content, media_type=media_type, digest=Digest("sha256", hashlib.sha256(content).hexdigest())
    )


def test_manifest_with_subject_and_annotations() -> None:
    manifest = _parse(
        {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": EMPTY, "layers": [EMPTY],
         "subject": EMPTY, "annotations": {"a": "b"}, "artifactType": "x/y"}
    )  # fmt: skip

    assert not manifest.is_index
    assert manifest.layers[0].size == 2
    assert manifest.subject is not None and manifest.annotations == {"a": "b"}
    assert manifest.artifact_type == "x/y"


def test_index_is_recognised_without_media_type() -> None:
    assert (
        _parse({"schemaVersion": 2, "manifests": [EMPTY]}, media_type=None).media_type == OCI_INDEX
    )


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"schemaVersion": 1}, "unsupported schemaVersion"),
        (
            {"schemaVersion": 2, "mediaType": OCI_INDEX, "layers": []},
            "an index must not have layers",
        ),
        (
            {"schemaVersion": 2, "layers": [{"mediaType": "x", "digest": "sha256:12", "size": 1}]},
            "invalid digest",
        ),
        ({"schemaVersion": 2, "layers": [EMPTY | {"size": -1}]}, "layers[0].size must be"),
        ({"schemaVersion": 2, "annotations": {"a": 1}}, "annotations must map strings to strings"),
        ({"schemaVersion": 2, "layers": [EMPTY] * 1001}, "at most 1000 descriptors"),
    ],
)
def test_malformed_manifests(document: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        _parse(document, media_type=None)


def test_content_type_contradicting_the_document_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="contradicts"):
        _parse({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}, media_type=OCI_INDEX)


def test_settings_validate_each_field() -> None:
    settings = RegistryClientSettings.from_mapping(
        {"hosts": [{"host": "127.0.0.1:5000", "plain_http": True},
                   {"host": "Harbor.internal", "ca_bundle": "/etc/ca.pem"}],
         "read_timeout": 1.5}
    )  # fmt: skip

    assert settings.for_host("127.0.0.1:5000").plain_http is True
    assert settings.for_host("harbor.internal").ca_bundle == "/etc/ca.pem"
    assert settings.for_host("ghcr.io").plain_http is False  # unnamed hosts: TLS, verified
    assert settings.read_timeout == 1.5

    for document, message in [
        ({"hosts": [{"host": "a.io", "plain_http": True, "insecure_skip_tls_verify": True}]},
         "registry.hosts[0]: plain_http excludes TLS settings"),
        ({"hosts": [{"host": "a.io", "username": "u"}]},
         "registry.hosts[0]: username and password go together"),
        ({"hosts": [{"host": "a.io"}, {"host": "A.io"}]}, "registry.hosts names a host twice"),
        ({"max_retries": -1}, "registry.max_retries must be an integer >= 0"),
        ({"timeout": 1}, "registry: unknown keys ['timeout']"),
    ]:  # fmt: skip
        with pytest.raises(ConfigurationError) as caught:
            RegistryClientSettings.from_mapping(cast("dict[str, Any]", document))
        assert caught.value.message == message
