"""A real cosign signature copied into another repository of the loopback registry is refused
where the authority compares the signed ``docker-reference`` (version 2 default), through the
real ``EvaluationService`` and the shipped policies on the real OPA. A line-wrapped signature
annotation (valid for Go's base64 decoder, hence for cosign) verifies.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gatekeeper.domain import EvaluationRequest, Verdict
from gatekeeper.domain.decision import Decision, Source
from gatekeeper.domain.reference import Digest, parse_image_reference
from gatekeeper.policy import EmbeddedOpa
from gatekeeper.service import EvaluationService
from gatekeeper.verify import SignatureEvidenceCollector, SignaturePolicySettings, TrustRoot
from tests.fakes import FakeAuditLog
from tests.integration.cosign_fixtures import (
    KeyPair,
    cosign_binary,
    cosign_sign,
    generate_key_pair,
    push_image,
    registry_client,
    registry_host,
    skopeo_binary,
    unique_repository,
)

pytestmark = pytest.mark.integration

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@dataclass
class Signed:
    """An image signed by cosign v2 in ``original`` and copied, signature too, to ``copy``."""

    host: str
    original: str
    copy: str
    digest: Digest


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    return generate_key_pair(cosign_binary("v2"), tmp_path_factory.mktemp("keys"))


def _skopeo_copy(source: str, target: str) -> None:
    subprocess.run(
        [skopeo_binary(), "copy", "--quiet", "--preserve-digests", "--src-tls-verify=false",
         "--dest-tls-verify=false", f"docker://{source}", f"docker://{target}"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip


@pytest.fixture
def signed(keys: KeyPair, tmp_path: Path) -> Signed:
    host = registry_host()
    original, copy = unique_repository("team"), unique_repository("mirror")
    digest = push_image(host, f"{original}:1.0", "signed where it was built", tmp_path)
    cosign_sign(cosign_binary("v2"), keys, f"{host}/{original}@{digest}", tmp_path)
    # What anyone with push rights to another repository can do: copy image and signature.
    _skopeo_copy(f"{host}/{original}@{digest}", f"{host}/{copy}:1.0")
    sig_tag = f"{digest.cosign_tag_prefix}.sig"
    _skopeo_copy(f"{host}/{original}:{sig_tag}", f"{host}/{copy}:{sig_tag}")
    return Signed(host, f"{host}/{original}", f"{host}/{copy}", digest)


def _settings(keys: KeyPair, host: str, **extra: Any) -> SignaturePolicySettings:
    authority: dict[str, Any] = {"name": "release", "keys": [keys.public_pem], "tlog": False}
    authority.update(extra.pop("authority", {}))
    return SignaturePolicySettings.from_mapping(
        {"authorities": [authority], "images": [{"glob": f"{host}/**", "authorities": ["release"]}]}
        | extra
    )


@pytest.fixture
def decide(opa_binary: str, policy_dir: Path) -> Iterator[Any]:
    opa = EmbeddedOpa(opa_binary=opa_binary, policy_dir=policy_dir)
    opa.start()
    client = registry_client(registry_host())

    def run(settings: SignaturePolicySettings, image: str) -> Decision:
        collector = SignatureEvidenceCollector(settings, client, TrustRoot.none())
        service = EvaluationService(
            policy_engine=opa.engine, audit_log=FakeAuditLog(), collectors=[collector],
            digest_resolver=client,
        )  # fmt: skip
        request = EvaluationRequest(
            images=(parse_image_reference(image),), source=Source.PIPELINE, environment="staging"
        )
        return service.evaluate(request, deadline=time.monotonic() + 8)

    try:
        yield run
    finally:
        client.close()
        opa.stop()


def test_signature_copied_to_another_repository_is_denied(
    decide: Any, signed: Signed, keys: KeyPair
) -> None:
    settings = _settings(keys, signed.host, version=2)

    original = decide(settings, f"{signed.original}:1.0")
    copied = decide(settings, f"{signed.copy}:1.0")

    assert original.verdict is Verdict.ALLOW, original.violations
    assert copied.images[0].digest == signed.digest  # the very same signed digest
    assert copied.verdict is Verdict.DENY
    evidence = copied.images[0].evidence["signatures"]
    assert evidence["authorities"]["release"]["reason"] == "signed for another repository"
    assert evidence["authorities"]["release"]["reason_code"] == "reference-mismatch"
    detail = f"signature is for repository {signed.original}, not {signed.copy}"
    assert evidence["authorities"]["release"]["detail"] == detail
    assert [(v.policy, v.message) for v in copied.violations] == [
        ("signatures",
         f"image {signed.copy}:1.0@{signed.digest}: signed for another repository; 0 of 1 "
         f"required authorities verified [release: signed for another repository ({detail})]"),
    ]  # fmt: skip


def test_configurations_without_a_version_keep_accepting_the_copy(
    decide: Any, signed: Signed, keys: KeyPair
) -> None:
    legacy = decide(_settings(keys, signed.host), f"{signed.copy}:1.0")
    opted_out = decide(
        _settings(keys, signed.host, version=2, authority={"match_docker_reference": False}),
        f"{signed.copy}:1.0",
    )
    opted_in = decide(
        _settings(keys, signed.host, authority={"match_docker_reference": True}),
        f"{signed.copy}:1.0",
    )

    assert legacy.verdict is Verdict.ALLOW, legacy.violations
    assert opted_out.verdict is Verdict.ALLOW, opted_out.violations
    assert opted_in.verdict is Verdict.DENY


def _manifest(host: str, repository: str, tag: str) -> dict[str, Any]:
    name = repository.split("/", 1)[1]
    request = urllib.request.Request(
        f"http://{host}/v2/{name}/manifests/{tag}", headers={"Accept": OCI_MANIFEST}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback
        return dict(json.loads(answer.read()))


def _put_manifest(host: str, repository: str, tag: str, manifest: dict[str, Any]) -> None:
    name = repository.split("/", 1)[1]
    request = urllib.request.Request(
        f"http://{host}/v2/{name}/manifests/{tag}", data=json.dumps(manifest).encode(),
        method="PUT", headers={"Content-Type": OCI_MANIFEST},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback
        assert answer.status == 201


def test_line_wrapped_signature_annotation_verifies(
    decide: Any, signed: Signed, keys: KeyPair
) -> None:
    sig_tag = f"{signed.digest.cosign_tag_prefix}.sig"
    manifest = _manifest(signed.host, signed.original, sig_tag)
    layer = manifest["layers"][0]
    encoded = layer["annotations"]["dev.cosignproject.cosign/signature"]
    raw = base64.b64decode(encoded)
    wrapped = "\n".join(encoded[i : i + 16] for i in range(0, len(encoded), 16)) + "\r\n"
    layer["annotations"]["dev.cosignproject.cosign/signature"] = wrapped
    _put_manifest(signed.host, signed.original, sig_tag, manifest)
    assert base64.b64decode(wrapped) == raw  # the same signature, only wrapped

    decision = decide(_settings(keys, signed.host, version=2), f"{signed.original}:1.0")

    assert decision.verdict is Verdict.ALLOW, decision.violations
    assert decision.images[0].evidence["signatures"]["status"] == "verified"
