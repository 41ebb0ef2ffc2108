"""OpenVEX and CycloneDX VEX parsing, the VEX store and the ``vex`` evidence section."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from gatekeeper.domain.ports import EvidenceCollector, EvidenceContext
from gatekeeper.domain.reference import parse_digest, parse_image_reference
from gatekeeper.usecases.vex_upload import VexUploads
from gatekeeper.vex import (
    SqlVexStore,
    StoredVexSource,
    VexDocumentError,
    VexEvidenceCollector,
    VexJsonInspector,
    VexLimits,
    parse_vex_document,
    parse_vex_json,
)

HEX = "ab" * 32
DIGEST = f"sha256:{HEX}"
OTHER = "sha256:" + "cd" * 32
CONTEXT = EvidenceContext(environment="production", namespace="shop")


def openvex(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"@context": "https://openvex.dev/ns/v0.2.0", "@id": "https://example.com/vex/1",
            "author": "sec", "timestamp": "2026-11-20T00:00:00Z", "version": 1,
            "statements": list(statements)}  # fmt: skip


def statement(**overrides: Any) -> dict[str, Any]:
    return {"vulnerability": {"name": "CVE-2024-3094"},
            "products": [{"@id": f"pkg:oci/app@sha256%3A{HEX}?repository_url=r.example/app"}],
            "status": "not_affected", "justification": "component_not_present"} | overrides  # fmt: skip


def test_openvex_0_2_product_by_purl_with_encoded_digest() -> None:
    [s] = parse_vex_document(openvex(statement())).statements
    assert (s.vulnerability, s.status, s.justification, s.products, s.packages) == (
        "CVE-2024-3094", "not_affected", "component_not_present", (DIGEST,), ()
    )
    assert s.timestamp == "2026-11-20T00:00:00Z"  # the document's, when the statement has none


@pytest.mark.parametrize(
    "product",
    [
        {"@id": f"pkg:oci/app@sha256:{HEX}"},
        {"@id": "https://example.com/app", "identifiers": {"purl": f"pkg:oci/app@sha256%3A{HEX}"}},
        {"@id": "app", "hashes": {"sha-256": HEX.upper()}},
        {"@id": DIGEST},
        f"pkg:oci/app@sha256%3A{HEX}",  # OpenVEX 0.0.x: products are strings
    ],
)
def test_every_way_of_naming_the_image_digest(product: object) -> None:
    [s] = parse_vex_document(openvex(statement(products=[product]))).statements
    assert s.products == (DIGEST,)


def test_products_that_name_no_digest_name_nothing() -> None:
    products = [{"@id": "pkg:oci/app@1.0"}, {"@id": "pkg:deb/debian/xz-utils@5.6.0"},
                {"@id": "x", "hashes": {"sha-256": "abc"}}]  # fmt: skip
    [s] = parse_vex_document(openvex(statement(products=products))).statements
    assert s.products == ()


def test_subcomponents_aliases_and_the_0_0_string_forms() -> None:
    product = {"@id": f"pkg:oci/app@sha256%3A{HEX}",
               "subcomponents": [{"@id": "pkg:deb/debian/xz-utils@5.6.0?arch=amd64"}]}  # fmt: skip
    new = statement(products=[product],
                    vulnerability={"name": "CVE-2024-3094", "aliases": ["GHSA-1"]})  # fmt: skip
    [s] = parse_vex_document(openvex(new)).statements
    assert (s.packages, s.aliases) == (("xz-utils",), ("GHSA-1",))
    old = statement(vulnerability="CVE-2024-3094", products=[f"pkg:oci/app@sha256%3A{HEX}"],
                    subcomponents=["pkg:apk/alpine/busybox@1.36"])  # fmt: skip
    [s] = parse_vex_document(openvex(old) | {"@context": "https://openvex.dev/ns"}).statements
    assert (s.vulnerability, s.packages) == ("CVE-2024-3094", ("busybox",))


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"statements": []}, "VEX document is invalid at $: neither OpenVEX"),
        (openvex(statement(status="maybe")),
         "VEX document is invalid at $.statements[0].status: status must be one of"),
        (openvex(statement(justification=None)),
         "VEX document is invalid at $.statements[0]: not_affected needs a justification"),
        (openvex(statement(vulnerability={})),
         "VEX document is invalid at $.statements[0].vulnerability: the vulnerability has no name"),
        (openvex(statement(products={"@id": "x"})),
         "VEX document is invalid at $.statements[0].products: expected a list"),
        ([1], "VEX document is invalid at $: expected a JSON object"),
    ],
)
def test_invalid_documents_name_the_path(document: object, message: str) -> None:
    with pytest.raises(VexDocumentError) as caught:
        parse_vex_document(document)
    assert caught.value.message.startswith(message)


def test_limits_are_checked_before_reading() -> None:
    with pytest.raises(VexDocumentError, match="over 100"):
        parse_vex_json(b" " * 101, VexLimits(max_bytes=100))
    with pytest.raises(VexDocumentError, match="deeper than 4 levels"):
        parse_vex_document({"a": {"b": {"c": {"d": {}}}}}, VexLimits(max_depth=4))
    with pytest.raises(VexDocumentError, match="more than 1 statements"):
        parse_vex_document(openvex(statement(), statement()), VexLimits(max_statements=1))
    with pytest.raises(VexDocumentError, match="malformed JSON"):
        parse_vex_json(b'{"@context": ')


def cyclonedx_vex(state: str, **analysis: Any) -> dict[str, Any]:
    return {
        "bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1,
        "metadata": {"component": {"type": "container", "name": "app", "bom-ref": "app",
                                   "purl": f"pkg:oci/app@sha256%3A{HEX}"}},
        "components": [{"type": "library", "name": "xz-utils", "bom-ref": "xz",
                        "purl": "pkg:deb/debian/xz-utils@5.6.0"},
                       {"type": "container", "name": "other", "bom-ref": "other",
                        "hashes": [{"alg": "SHA-256", "content": "cd" * 32}]}],
        "vulnerabilities": [
            {"id": "CVE-2024-3094", "references": [{"id": "GHSA-1"}],
             "analysis": {"state": state, **analysis}, "affects": [{"ref": "xz"}]},
            {"id": "CVE-2020-1", "analysis": {"state": "resolved"}, "affects": [{"ref": "other"}]},
            {"id": "CVE-2020-2"},  # no analysis: a finding, not VEX
        ],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("state", "status", "justification"),
    [
        ("not_affected", "not_affected", "code_not_reachable"),
        ("false_positive", "not_affected", "false_positive"),
        ("resolved", "fixed", None),
        ("resolved_with_pedigree", "fixed", None),
        ("exploitable", "affected", None),
        ("in_triage", "under_investigation", None),
    ],
)
def test_cyclonedx_analysis_states(state: str, status: str, justification: str | None) -> None:
    extra = {"justification": "code_not_reachable"} if state == "not_affected" else {}
    document = parse_vex_document(cyclonedx_vex(state, **extra))
    assert document.format == "cyclonedx"
    first, second = document.statements
    assert (first.status, first.justification, first.products, first.packages, first.aliases) == (
        status, justification, (DIGEST,), ("xz-utils",), ("GHSA-1",)
    )
    # affects naming another image (by its hash) is that image's statement, not this one's
    assert (second.vulnerability, second.products, second.packages) == ("CVE-2020-1", (OTHER,), ())


# --- store, upload and the evidence section ---------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> SqlVexStore:
    store = SqlVexStore(sa.create_engine(f"sqlite:///{tmp_path / 'vex.db'}"),
                        clock=lambda: datetime(2026, 11, 24, 12, tzinfo=UTC))  # fmt: skip
    store.create_tables()
    return store


def test_upload_is_stored_found_by_digest_and_listed_for_that_digest_only(
    store: SqlVexStore,
) -> None:
    uploader = VexUploads(store=store, inspector=VexJsonInspector())
    content = json.dumps(openvex(statement(), statement(
        vulnerability={"name": "CVE-2020-9"}, products=[{"@id": OTHER}]))).encode()
    result = uploader.upload(content, uploaded_by="sec-team", ticket_id="SEC-1")
    assert result.as_response() | {"id": "x"} == {
        "id": "x", "sha256": result.document.sha256, "format": "openvex", "statement_count": 2,
        "image_digests": [DIGEST, OTHER], "uploaded_at": "2026-11-24T12:00:00Z",
        "uploaded_by": "sec-team",
    }
    assert uploader.upload(content, uploaded_by="someone-else").stored.id == result.stored.id

    collector = VexEvidenceCollector([StoredVexSource(store)])
    assert isinstance(collector, EvidenceCollector)
    image = parse_image_reference(f"registry.example.com/app@{DIGEST}")
    section = collector.collect(image, parse_digest(DIGEST), CONTEXT)
    [listed] = section["statements"]
    assert (listed["vulnerability"], listed["source"], listed["supplied_by"], listed["origin"]) == (
        "CVE-2024-3094", "upload", "sec-team", f"vex upload {result.stored.id} (ticket SEC-1)"
    )
    other = collector.collect(image, parse_digest(OTHER), CONTEXT)["statements"]
    assert [s["vulnerability"] for s in other] == ["CVE-2020-9"]
    nothing = collector.collect(image, parse_digest("sha256:" + "ef" * 32), CONTEXT)
    assert (nothing["statements"], nothing["documents"]) == ([], [])
    assert collector.collect(image, None, CONTEXT)["statements"] == []


def test_upload_naming_no_digest_is_refused(store: SqlVexStore) -> None:
    content = json.dumps(openvex(statement(products=[{"@id": "pkg:npm/x@1"}]))).encode()
    with pytest.raises(VexDocumentError) as caught:
        VexUploads(store=store, inspector=VexJsonInspector()).upload(content, uploaded_by="sec")
    assert caught.value.field == "$.statements"
    assert store.find_for_digest(DIGEST) == []
