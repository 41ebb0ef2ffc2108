"""What CycloneDX's own generators write validates: every ``$schema`` id the spec published.

The documents under ``tests/assets/cyclonedx-generated`` are unmodified generator outputs (see
the NOTICE there). Before the published ids were accepted, every 1.2 and 1.3 document of
cyclonedx-python-lib was refused (``"...bom-1.2b.schema.json" is not one of ...``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gatekeeper.sbom import CycloneDxValidator, SbomDocumentError, parse_sbom_document
from gatekeeper.sbom.validation import CYCLONEDX_SCHEMA_IDS
from tests.unit.sbom.factory import cyclonedx, encode

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "cyclonedx-generated"
GENERATED = sorted(ASSETS.glob("*/*.json"))
REPOSITORY = Path(__file__).resolve().parents[3]


def _version(path: Path) -> str:
    return path.stem.rsplit("-", 1)[1]


@pytest.fixture(scope="module")
def validator() -> CycloneDxValidator:
    return CycloneDxValidator()


def test_generated_documents_cover_every_version() -> None:
    assert {_version(p) for p in GENERATED} == {"1.2", "1.3", "1.4", "1.5", "1.6", "1.7"}
    schemas = {json.loads(p.read_bytes()).get("$schema") for p in GENERATED}
    assert "http://cyclonedx.org/schema/bom-1.2b.schema.json" in schemas
    assert "http://cyclonedx.org/schema/bom-1.3a.schema.json" in schemas


@pytest.mark.parametrize("path", GENERATED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_generated_document_is_valid(path: Path, validator: CycloneDxValidator) -> None:
    parsed = parse_sbom_document(path.read_bytes(), validator=validator)
    assert (parsed.format, parsed.spec_version) == ("cyclonedx", _version(path))


@pytest.mark.parametrize(
    ("version", "schema_id"),
    [(version, schema_id) for version, ids in CYCLONEDX_SCHEMA_IDS.items() for schema_id in ids],
)
def test_every_published_schema_id_is_accepted(
    version: str, schema_id: str, validator: CycloneDxValidator
) -> None:
    document = cyclonedx(2, version=version)
    document["$schema"] = schema_id
    assert parse_sbom_document(encode(document), validator=validator).spec_version == version


def test_published_ids_are_exactly_the_spec_history() -> None:
    assert CYCLONEDX_SCHEMA_IDS == {
        "1.2": (
            "http://cyclonedx.org/schema/bom-1.2.schema.json",
            "http://cyclonedx.org/schema/bom-1.2a.schema.json",
            "http://cyclonedx.org/schema/bom-1.2b.schema.json",
        ),
        "1.3": (
            "http://cyclonedx.org/schema/bom-1.3.schema.json",
            "http://cyclonedx.org/schema/bom-1.3a.schema.json",
        ),
        "1.4": ("http://cyclonedx.org/schema/bom-1.4.schema.json",),
        "1.5": ("http://cyclonedx.org/schema/bom-1.5.schema.json",),
    }


_ID = "http://cyclonedx.org/schema/bom-{}.schema.json"


@pytest.mark.parametrize(
    ("version", "schema_id", "accepted"),
    [
        # another version's id
        ("1.3", _ID.format("1.2b"), f'"{_ID.format("1.3")}" or "{_ID.format("1.3a")}"'),
        # never published
        ("1.2", _ID.format("1.2c"),
         f'"{_ID.format("1.2")}", "{_ID.format("1.2a")}" or "{_ID.format("1.2b")}"'),
        # not the id (https)
        ("1.4", "https://cyclonedx.org/schema/bom-1.4.schema.json", f'"{_ID.format("1.4")}"'),
        ("1.5", _ID.format("1.4"), f'"{_ID.format("1.5")}"'),
    ],
)
def test_other_schema_ids_stay_refused(
    version: str, schema_id: str, accepted: str, validator: CycloneDxValidator
) -> None:
    document = cyclonedx(1, version=version)
    document["$schema"] = schema_id
    with pytest.raises(SbomDocumentError) as caught:
        parse_sbom_document(encode(document), validator=validator)
    assert caught.value.path == '$["$schema"]'
    assert caught.value.message == (
        f'CycloneDX {version} schema violation at $["$schema"]: '
        f'"{schema_id}" is not one of {accepted}'
    )


def test_strictness_is_kept_for_the_widened_versions(validator: CycloneDxValidator) -> None:
    document = cyclonedx(1, version="1.3")
    document["$schema"] = "http://cyclonedx.org/schema/bom-1.3a.schema.json"
    document["components"][0]["surprise"] = True
    with pytest.raises(SbomDocumentError) as caught:
        parse_sbom_document(encode(document), validator=validator)
    assert caught.value.path == "$.components[0]"


@pytest.mark.parametrize("version", ["1.2", "1.3", "1.4", "1.5", "1.6", "1.7"])
def test_gatekeeper_sbom_validate_accepts_a_generated_document(version: str) -> None:
    path = ASSETS / "cyclonedx-python-lib" / f"get_bom_with_component_setuptools_complete-{version}.json"
    result = subprocess.run(
        [sys.executable, "-m", "gatekeeper", "sbom", "validate", str(path)],
        capture_output=True, text=True, timeout=120, cwd=REPOSITORY,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"valid: {path}: cyclonedx {version}, sha256 ")
