"""The ``sbom`` evidence section, uploads through the SQL store, and ``gatekeeper sbom``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from gatekeeper.cli.sbom import sbom_app
from gatekeeper.domain.ports import EvidenceCollector, EvidenceContext
from gatekeeper.domain.reference import parse_digest, parse_image_reference
from gatekeeper.errors import NotFoundError
from gatekeeper.sbom import (
    BindingMethod,
    CycloneDxValidator,
    SbomCandidate,
    SbomDocumentError,
    SbomDocumentInspector,
    SbomEvidenceCollector,
    SbomSourceKind,
    SqlSbomStore,
    StoredSbomSource,
)
from gatekeeper.usecases import SbomUploads
from tests.fakes import FixedSbomSource
from tests.unit.sbom.factory import (
    IMAGE_DIGEST,
    OTHER_DIGEST,
    container_subject,
    cyclonedx,
    cyclonedx_component,
    encode,
)

DIGEST = parse_digest(IMAGE_DIGEST)
IMAGE = parse_image_reference(f"registry.example.com/app@{IMAGE_DIGEST}")
CONTEXT = EvidenceContext(environment="production", namespace="shop")
CORPUS = Path(__file__).resolve().parents[2] / "assets" / "cyclonedx"


@pytest.fixture()
def store(tmp_path: Path) -> SqlSbomStore:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'sboms.db'}")
    store = SqlSbomStore(engine, clock=lambda: datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    store.create_tables()
    return store


@pytest.fixture(scope="module")
def validator() -> CycloneDxValidator:
    return CycloneDxValidator()


def test_collector_implements_the_port(validator: CycloneDxValidator) -> None:
    collector = SbomEvidenceCollector(sources=(), validator=validator)
    assert isinstance(collector, EvidenceCollector)
    assert collector.name == "sbom"


def test_no_sbom_is_missing(validator: CycloneDxValidator) -> None:
    evidence = SbomEvidenceCollector(sources=(FixedSbomSource(),), validator=validator).collect(
        IMAGE, DIGEST, CONTEXT
    )
    assert evidence == {
        "present": False, "state": "missing", "reason": "no SBOM found for the image",
        "document_count": 0, "documents_truncated": False, "documents": [],
    }
    json.dumps(evidence)  # JSON-ready


def test_attested_sbom_is_bound_and_listed(validator: CycloneDxValidator) -> None:
    candidate = SbomCandidate(
        encode(cyclonedx(3)), BindingMethod.ATTESTATION, (IMAGE_DIGEST,), "attestation"
    )
    evidence = SbomEvidenceCollector(
        sources=(FixedSbomSource(candidate),), validator=validator
    ).collect(IMAGE, DIGEST, CONTEXT)
    assert (evidence["state"], evidence["reason"]) == (
        "bound", "1 SBOM bound to the image digest: attestation"
    )
    [evidence] = evidence["documents"]
    assert {k: evidence[k] for k in ("present", "valid", "bound", "state", "spec_version")} == {
        "present": True, "valid": True, "bound": True, "state": "bound", "spec_version": "1.6",
    }
    assert (evidence["source"], evidence["authority"], evidence["supplied_by"]) == (
        "attestation", None, None
    )
    assert evidence["binding"] == {"method": "attestation", "named_digests": [IMAGE_DIGEST]}
    assert [c["name"] for c in evidence["components"]] == ["pkg-0", "pkg-1", "pkg-2"]
    assert evidence["component_count"] == 3
    json.dumps(evidence)


def test_sbom_for_another_artifact_is_reported_without_its_components(
    validator: CycloneDxValidator,
) -> None:
    candidate = SbomCandidate(
        encode(cyclonedx(3)), BindingMethod.ATTESTATION, (OTHER_DIGEST,), "attestation"
    )
    evidence = SbomEvidenceCollector(
        sources=(FixedSbomSource(candidate),), validator=validator
    ).collect(IMAGE, DIGEST, CONTEXT)
    assert evidence["state"] == "another_artifact"
    assert evidence["reason"].startswith("SBOM for another artifact")
    [document] = evidence["documents"]
    assert document["bound"] is False
    assert document["components"] == []


def test_bound_summary_wins_over_negatives_and_every_document_is_listed(
    validator: CycloneDxValidator,
) -> None:
    wrong = SbomCandidate(b"{", BindingMethod.REFERRER, (IMAGE_DIGEST,), "referrer")
    other = SbomCandidate(encode(cyclonedx(1)), BindingMethod.REFERRER, (OTHER_DIGEST,), "r2")
    right = SbomCandidate(
        encode(cyclonedx(2, subject=container_subject())), None, (), "inline"
    )
    collector = SbomEvidenceCollector(
        sources=(FixedSbomSource(wrong, other), FixedSbomSource(right)), validator=validator
    )
    evidence = collector.collect(IMAGE, DIGEST, CONTEXT)
    assert evidence["state"] == "bound"
    assert [(d["state"], d["binding"]["method"]) for d in evidence["documents"]] == [
        ("invalid", "referrer"), ("another_artifact", "referrer"), ("bound", "metadata"),
    ]
    negative = SbomEvidenceCollector(sources=(FixedSbomSource(wrong, other),), validator=validator)
    assert negative.collect(IMAGE, DIGEST, CONTEXT)["state"] == "another_artifact"


def test_invalid_sbom_says_why(validator: CycloneDxValidator) -> None:
    components = [cyclonedx_component(0, type="weird")]
    candidate = SbomCandidate(
        encode(cyclonedx(components)), BindingMethod.UPLOAD, (IMAGE_DIGEST,), "upload"
    )
    evidence = SbomEvidenceCollector(
        sources=(FixedSbomSource(candidate),), validator=validator
    ).collect(IMAGE, DIGEST, CONTEXT)
    assert (evidence["present"], evidence["state"]) == (True, "invalid")
    assert evidence["documents"][0]["valid"] is False
    assert evidence["reason"].startswith(
        "SBOM is invalid: CycloneDX 1.6 schema violation at $.components[0].type: "
    )


def test_upload_is_stored_and_found_again(
    store: SqlSbomStore, validator: CycloneDxValidator
) -> None:
    collector = SbomEvidenceCollector(sources=(StoredSbomSource(store),), validator=validator)
    uploader = SbomUploads(
        store=store, inspector=SbomDocumentInspector(collector=collector, validator=validator)
    )
    content = encode(cyclonedx(5))
    result = uploader.upload(content, DIGEST, ticket_id="CHG-1", uploaded_by="ci")
    response = result.as_response()
    assert response["state"] == "bound"
    assert response["component_count"] == 5
    assert response["uploaded_at"] == "2026-03-01T12:00:00Z"
    again = uploader.upload(content, DIGEST, ticket_id="CHG-2")
    assert again.stored.id == result.stored.id  # idempotent per (digest, sha256)

    evidence = collector.collect(IMAGE, DIGEST, CONTEXT)
    assert evidence["state"] == "bound"
    [document] = evidence["documents"]
    assert document["sha256"] == result.stored.sha256
    assert document["origin"] == f"upload {result.stored.id} by ci (ticket CHG-1)"
    assert (document["source"], document["supplied_by"]) == ("upload", "ci")
    assert store.get(result.stored.id).content == content
    assert collector.collect(IMAGE, parse_digest(OTHER_DIGEST), CONTEXT)["state"] == "missing"
    with pytest.raises(NotFoundError):
        store.get("nope")
    store.check_health()


def test_invalid_upload_is_refused_and_not_stored(
    store: SqlSbomStore, validator: CycloneDxValidator
) -> None:
    collector = SbomEvidenceCollector(sources=(StoredSbomSource(store),), validator=validator)
    uploader = SbomUploads(
        store=store, inspector=SbomDocumentInspector(collector=collector, validator=validator)
    )
    with pytest.raises(SbomDocumentError):
        uploader.upload(b'{"bomFormat": "CycloneDX", "specVersion": "1.6", "components": 1}', DIGEST)
    assert store.find_for_digest(DIGEST) == []


# --- gatekeeper sbom validate ---------------------------------------------------------------


runner = CliRunner()


def test_cli_valid(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(encode(cyclonedx(2)))
    result = runner.invoke(sbom_app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"valid: {path}: cyclonedx 1.6, sha256 ")


def test_cli_invalid_names_the_reason() -> None:
    path = CORPUS / "1.6" / "invalid-component-type-1.6.json"
    result = runner.invoke(sbom_app, ["validate", str(path)])
    assert result.exit_code == 1
    assert "invalid: " in result.output
    assert "schema violation at $.components[0].type" in result.output


def test_cli_unreadable(tmp_path: Path) -> None:
    result = runner.invoke(sbom_app, ["validate", str(tmp_path / "absent.json")])
    assert result.exit_code == 2
    assert "cannot read" in result.output


@pytest.mark.parametrize(
    "path", sorted(CORPUS.glob("1.*/*.json")), ids=lambda p: f"{p.parent.name}/{p.name}"
)
def test_cli_agrees_with_every_spec_document(path: Path) -> None:
    expected = 0 if path.name.startswith("valid-") else 1
    assert runner.invoke(sbom_app, ["validate", str(path)]).exit_code == expected


def test_cli_reads_stdin() -> None:
    result = runner.invoke(sbom_app, ["validate", "-"], input=encode(cyclonedx(1)))
    assert result.exit_code == 0, result.output


def test_cli_oversized_and_deep_documents_are_invalid(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_bytes(b"[" * 5000 + b"]" * 5000)
    result = runner.invoke(sbom_app, ["validate", str(path)])
    assert result.exit_code == 1
    assert "JSON nesting is deeper than 64 levels" in result.output
    result = runner.invoke(sbom_app, ["validate", str(path), "--max-bytes", "100"])
    assert result.exit_code == 1
    assert "larger than the limit of 100 bytes" in result.output


def test_cli_evidence_prints_the_policy_view(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(encode(cyclonedx(2)))
    result = runner.invoke(sbom_app, ["evidence", str(path), "--digest", IMAGE_DIGEST])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["state"] == "bound"


# --- issue 10.1: every SBOM reaches the policy, none hides another ------------------------------


def test_attested_and_uploaded_sboms_are_both_listed_with_their_source(
    store: SqlSbomStore, validator: CycloneDxValidator
) -> None:
    banned = cyclonedx([cyclonedx_component(0, purl="pkg:npm/event-stream@3.3.6")])
    attested = SbomCandidate(
        encode(banned), BindingMethod.ATTESTATION, (IMAGE_DIGEST,), "attestation verified",
        source="attestation", authority="release",
    )
    collector = SbomEvidenceCollector(
        sources=(FixedSbomSource(attested), StoredSbomSource(store)), validator=validator
    )
    uploader = SbomUploads(
        store=store, inspector=SbomDocumentInspector(collector=collector, validator=validator)
    )
    uploader.upload(encode(cyclonedx(2)), DIGEST, uploaded_by="ci-bot")
    uploader.upload(encode(cyclonedx(3)), DIGEST, uploaded_by="ci-bot",
                    source=SbomSourceKind.INLINE)  # fmt: skip

    evidence = collector.collect(IMAGE, DIGEST, CONTEXT)

    assert evidence["reason"] == (
        "3 SBOMs bound to the image digest: attestation by release, inline by ci-bot, "
        "upload by ci-bot"
    )
    assert [(d["source"], d["authority"], d["supplied_by"], d["component_count"])
            for d in sorted(evidence["documents"], key=lambda d: d["source"])] == [
        ("attestation", "release", None, 1), ("inline", None, "ci-bot", 3),
        ("upload", None, "ci-bot", 2),
    ]  # fmt: skip
    assert "pkg:npm/event-stream@3.3.6" in {
        c["purl"] for c in evidence["documents"][0]["components"]
    }


def test_more_uploads_than_read_are_flagged_not_silently_dropped(
    store: SqlSbomStore, validator: CycloneDxValidator
) -> None:
    collector = SbomEvidenceCollector(
        sources=(StoredSbomSource(store, limit=2),), validator=validator
    )
    uploader = SbomUploads(
        store=store, inspector=SbomDocumentInspector(collector=collector, validator=validator)
    )
    for count in (1, 2):
        uploader.upload(encode(cyclonedx(count)), DIGEST)
    assert collector.collect(IMAGE, DIGEST, CONTEXT)["documents_truncated"] is False
    uploader.upload(encode(cyclonedx(3)), DIGEST)
    evidence = collector.collect(IMAGE, DIGEST, CONTEXT)
    assert evidence["documents_truncated"] is True
    assert evidence["document_count"] == 2


def test_a_table_without_the_source_column_is_migrated(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with engine.begin() as connection:
        connection.execute(sa.text(
            "CREATE TABLE gatekeeper_sboms (id VARCHAR(36) PRIMARY KEY, image_digest VARCHAR(160) "
            "NOT NULL, sha256 VARCHAR(64) NOT NULL, format VARCHAR(16) NOT NULL, spec_version "
            "VARCHAR(16) NOT NULL, component_count INTEGER NOT NULL, size INTEGER NOT NULL, "
            "uploaded_at DATETIME NOT NULL, ticket_id VARCHAR(256), uploaded_by VARCHAR(256), "
            "content_zlib BLOB NOT NULL)"
        ))  # fmt: skip
        connection.execute(sa.text(
            "INSERT INTO gatekeeper_sboms VALUES ('old', :digest, 'ab', 'cyclonedx', '1.6', 0, 2, "
            "'2026-01-01 00:00:00', NULL, 'ci', :content)"
        ), {"digest": IMAGE_DIGEST, "content": __import__("zlib").compress(b"{}")})  # fmt: skip
    store = SqlSbomStore(engine)
    store.create_tables()
    [old] = store.find_for_digest(DIGEST)
    assert (old.id, old.source, old.uploaded_by) == ("old", "upload", "ci")
