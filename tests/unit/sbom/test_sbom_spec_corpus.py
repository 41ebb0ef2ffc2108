"""``validate`` agrees with every labelled document of the CycloneDX specification's test suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatekeeper.sbom import CycloneDxValidator, SbomDocumentError, parse_sbom_document

CORPUS = Path(__file__).resolve().parents[2] / "assets" / "cyclonedx"
DOCUMENTS = sorted(CORPUS.glob("1.*/*.json"))


@pytest.fixture(scope="module")
def validator() -> CycloneDxValidator:
    return CycloneDxValidator()


def test_corpus_covers_every_version() -> None:
    versions = {path.parent.name for path in DOCUMENTS}
    assert versions == {"1.2", "1.3", "1.4", "1.5", "1.6", "1.7"}
    assert len(DOCUMENTS) >= 350


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_validate_agrees_with_the_label(path: Path, validator: CycloneDxValidator) -> None:
    data = path.read_bytes()
    # skip_invalid-* are invalid documents upstream does not check with the schema; we reject
    # them too (both lack a required component property the strict schema demands).
    expected_valid = path.name.startswith("valid-")
    if expected_valid:
        parsed = parse_sbom_document(data, validator=validator)
        assert parsed.format == "cyclonedx"
        assert parsed.spec_version == path.parent.name
    else:
        with pytest.raises(SbomDocumentError) as caught:
            parse_sbom_document(data, validator=validator)
        assert caught.value.path.startswith("$")
