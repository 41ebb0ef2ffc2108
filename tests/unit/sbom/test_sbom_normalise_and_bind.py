"""Normalised shape, caps, SPDX mapping and the binding rules."""

from __future__ import annotations

from typing import Any

import pytest

from gatekeeper.domain.reference import parse_digest
from gatekeeper.sbom import (
    BindingMethod,
    CycloneDxValidator,
    NormalisationLimits,
    SbomState,
    bind_sbom,
    normalise_sbom,
    parse_sbom_document,
)
from gatekeeper.sbom.normalise import NormalisedSbom, license_ids_of
from tests.unit.sbom.factory import (
    IMAGE_DIGEST,
    OTHER_DIGEST,
    container_subject,
    cyclonedx,
    cyclonedx_component,
    encode,
    spdx,
)

DIGEST = parse_digest(IMAGE_DIGEST)


@pytest.fixture(scope="module")
def validator() -> CycloneDxValidator:
    return CycloneDxValidator()


def _normalise(
    document: dict[str, Any], validator: CycloneDxValidator, limits: NormalisationLimits | None = None
) -> NormalisedSbom:
    return normalise_sbom(parse_sbom_document(encode(document), validator=validator), limits)


def test_component_shape(validator: CycloneDxValidator) -> None:
    sbom = _normalise(cyclonedx(4), validator)
    assert sbom.component_count == 4
    assert sbom.truncated is False
    assert sbom.components[3].as_input() == {
        "purl": "pkg:npm/pkg-3@1.3.0",
        "name": "pkg-3",
        "version": "1.3.0",
        "type": "library",
        "licenses": ["GPL-2.0-only OR MIT"],
        "license_ids": ["GPL-2.0-only", "MIT"],
        "hashes": {"SHA-256": "4e07408562bedb8b60ce05c1decfe3ad16b72230967de01f640b7e4729b49fce"},
    }


def test_nested_components_are_flattened(validator: CycloneDxValidator) -> None:
    inner = cyclonedx_component(7)
    outer = cyclonedx_component(1, components=[inner])
    sbom = _normalise(cyclonedx([outer, cyclonedx_component(2)]), validator)
    assert [c.name for c in sbom.components] == ["pkg-1", "pkg-7", "pkg-2"]


def test_licence_names_and_expressions(validator: CycloneDxValidator) -> None:
    component = cyclonedx_component(
        0,
        licenses=[{"license": {"name": "Proprietary Corp Licence"}}],
    )
    sbom = _normalise(cyclonedx([component]), validator)
    assert sbom.components[0].licenses == ("Proprietary Corp Licence",)
    assert license_ids_of(("(GPL-2.0-or-later WITH Classpath-exception-2.0 OR LicenseRef-x)",)) == (
        "GPL-2.0-or-later", "LicenseRef-x",
    )


def test_caps_flag_truncation_but_keep_the_real_count(validator: CycloneDxValidator) -> None:
    limits = NormalisationLimits(max_components=100, max_string_length=8)
    sbom = _normalise(cyclonedx(150), validator, limits)
    assert sbom.component_count == 150
    assert len(sbom.components) == 100
    assert sbom.truncated is True
    assert sbom.components[0].purl == "pkg:npm/"


def test_ten_thousand_components_are_capped_by_default(validator: CycloneDxValidator) -> None:
    sbom = _normalise(cyclonedx(10_000), validator)
    assert sbom.component_count == 10_000
    assert len(sbom.components) == 5_000
    assert sbom.truncated is True


def test_spdx_is_normalised_to_the_same_shape(validator: CycloneDxValidator) -> None:
    parsed = parse_sbom_document(encode(spdx(3)), validator=validator)
    assert (parsed.format, parsed.spec_version) == ("spdx", "2.3")
    sbom = normalise_sbom(parsed)
    assert sbom.component_count == 3  # the described image package is the subject
    assert sbom.components[1].as_input() == {
        "purl": "pkg:pypi/pkg-1@1.1.0",
        "name": "pkg-1",
        "version": "1.1.0",
        "type": "library",
        "licenses": ["Apache-2.0"],
        "license_ids": ["Apache-2.0"],
        "hashes": {"SHA-256": "6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b"},
    }
    assert ("purl", IMAGE_DIGEST) in sbom.subject_digests
    assert bind_sbom(sbom, DIGEST, method=None).state is SbomState.BOUND


def test_invalid_spdx_names_the_path(validator: CycloneDxValidator) -> None:
    document = spdx(2)
    del document["packages"][1]["downloadLocation"]
    from gatekeeper.sbom import SbomDocumentError

    with pytest.raises(SbomDocumentError) as caught:
        parse_sbom_document(encode(document), validator=validator)
    assert caught.value.path == "$.packages[1]"
    assert "downloadLocation" in caught.value.message


# --- binding ------------------------------------------------------------------------------


def test_upload_naming_the_digest_binds(validator: CycloneDxValidator) -> None:
    sbom = _normalise(cyclonedx(1), validator)
    binding = bind_sbom(sbom, DIGEST, method=BindingMethod.UPLOAD, subjects=(IMAGE_DIGEST,))
    assert (binding.state, binding.method, binding.reason) == (
        SbomState.BOUND, BindingMethod.UPLOAD, "bound by upload",
    )


def test_attestation_for_another_digest_is_another_artifact(
    validator: CycloneDxValidator,
) -> None:
    sbom = _normalise(cyclonedx(1), validator)
    binding = bind_sbom(
        sbom, DIGEST, method=BindingMethod.ATTESTATION, subjects=(OTHER_DIGEST,)
    )
    assert binding.state is SbomState.ANOTHER_ARTIFACT
    assert binding.reason == (
        "SBOM for another artifact: its attestation names sha256:bbbbbbbbbbbb, "
        "not sha256:aaaaaaaaaaaa"
    )


@pytest.mark.parametrize(
    "subject",
    [
        container_subject(),
        container_subject(version="1.0", purl="pkg:oci/app@sha256%3A" + "a" * 64),
        container_subject(version="1.0", hashes=[{"alg": "SHA-256", "content": "a" * 64}]),
    ],
    ids=["version", "purl", "hash"],
)
def test_metadata_component_naming_the_digest_binds(
    subject: dict[str, Any], validator: CycloneDxValidator
) -> None:
    sbom = _normalise(cyclonedx(1, subject=subject), validator)
    binding = bind_sbom(sbom, DIGEST, method=None)
    assert (binding.state, binding.method) == (SbomState.BOUND, BindingMethod.METADATA)


def test_metadata_component_naming_another_digest(validator: CycloneDxValidator) -> None:
    sbom = _normalise(cyclonedx(1, subject=container_subject(OTHER_DIGEST)), validator)
    binding = bind_sbom(sbom, DIGEST, method=None)
    assert binding.state is SbomState.ANOTHER_ARTIFACT
    assert binding.reason == (
        "SBOM for another artifact: its metadata component names sha256:bbbbbbbbbbbb, "
        "not sha256:aaaaaaaaaaaa"
    )


def test_purl_for_another_digest_overrules_an_upload(validator: CycloneDxValidator) -> None:
    subject = container_subject("1.0", purl="pkg:oci/app@sha256:" + "b" * 64)
    sbom = _normalise(cyclonedx(1, subject=subject), validator)
    binding = bind_sbom(sbom, DIGEST, method=BindingMethod.UPLOAD, subjects=(IMAGE_DIGEST,))
    assert binding.state is SbomState.ANOTHER_ARTIFACT
    assert "metadata component purl names sha256:bbbbbbbbbbbb" in binding.reason


def test_version_naming_the_config_digest_does_not_overrule_an_upload(
    validator: CycloneDxValidator,
) -> None:
    # syft has put the image id (config digest) in version: not a conflict with the upload.
    sbom = _normalise(cyclonedx(1, subject=container_subject(OTHER_DIGEST)), validator)
    binding = bind_sbom(sbom, DIGEST, method=BindingMethod.UPLOAD, subjects=(IMAGE_DIGEST,))
    assert binding.state is SbomState.BOUND


def test_nothing_names_a_digest_is_unbound(validator: CycloneDxValidator) -> None:
    binding = bind_sbom(_normalise(cyclonedx(1), validator), DIGEST, method=None)
    assert binding.state is SbomState.UNBOUND
    assert binding.method is None


def test_unknown_image_digest_is_unbound(validator: CycloneDxValidator) -> None:
    sbom = _normalise(cyclonedx(1, subject=container_subject()), validator)
    assert bind_sbom(sbom, None, method=None).state is SbomState.UNBOUND
