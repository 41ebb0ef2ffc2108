"""Large evidence by reference: what travels, what the hash is over, and the exact inverse."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import pytest
import rfc8785

from gatekeeper.domain.evidence_documents import (
    EvidenceExternaliser,
    build_data_document,
    build_evidence_index,
    expand_evidence,
    mentions_references,
    referenced_hashes,
)
from gatekeeper.errors import InvalidInputError


def component(purl: str | None, name: str = "x", version: str | None = "1",
              licences: tuple[str, ...] = ("MIT",)) -> dict[str, Any]:
    return {"purl": purl, "name": name, "version": version, "type": "library",
            "licenses": list(licences), "license_ids": list(licences), "hashes": {}}


def policy_input(components: list[dict[str, Any]], predicate: Any = None) -> dict[str, Any]:
    evidence: dict[str, Any] = {"sbom": {"state": "bound", "documents": [
        {"source": "attestation", "component_count": len(components), "components": components},
        {"source": "upload", "component_count": 0, "components": []},
    ]}}
    if predicate is not None:
        evidence["signatures"] = {"attestations": [
            {"kind": "cyclonedx", "predicate_type": "https://cyclonedx.org/bom",
             "predicate": predicate, "predicate_truncated": False}]}
    return {"schema_version": "4", "environment": "production",
            "images": [{"reference": "r", "evidence": evidence}, {"reference": "s", "evidence": {}}]}


def many(count: int) -> list[dict[str, Any]]:
    return [component(f"pkg:npm/p{i}@1.0.{i}") for i in range(count)]


def test_a_large_component_list_travels_by_the_sha256_of_its_rfc8785_form() -> None:
    listed = many(100)
    original = policy_input(listed)
    before = copy.deepcopy(original)

    sent = EvidenceExternaliser(inline_max_bytes=2048).externalise(original)

    digest = hashlib.sha256(rfc8785.dumps(listed)).hexdigest()
    assert sent.documents == {digest: listed}
    first, second = sent.policy_input["images"][0]["evidence"]["sbom"]["documents"]
    assert first == {"source": "attestation", "component_count": 100, "components_sha256": digest}
    assert second == {"source": "upload", "component_count": 0, "components": []}  # small
    assert original == before  # the caller's document is not changed
    assert referenced_hashes(sent.policy_input) == [digest]
    assert mentions_references(str(sent.policy_input).replace("'", '"'))


def test_expand_is_the_exact_inverse() -> None:
    original = policy_input(many(50), predicate={"components": many(40), "bomFormat": "CycloneDX"})
    sent = EvidenceExternaliser(inline_max_bytes=0).externalise(original)
    assert len(sent.documents) == 3  # both component lists and the predicate
    assert expand_evidence(sent.policy_input, sent.documents) == original


def test_small_evidence_stays_inline_and_nothing_is_referenced() -> None:
    original = policy_input(many(2), predicate={"builder": {"id": "b"}})
    sent = EvidenceExternaliser().externalise(original)
    assert sent.documents == {}
    assert sent.policy_input == original
    assert referenced_hashes(sent.policy_input) == []


def test_a_missing_document_is_named_when_expanding() -> None:
    sent = EvidenceExternaliser(inline_max_bytes=0).externalise(policy_input(many(3)))
    with pytest.raises(InvalidInputError) as caught:
        expand_evidence(sent.policy_input, {})
    digest = sent.policy_input["images"][0]["evidence"]["sbom"]["documents"][0]["components_sha256"]
    assert caught.value.message == (
        f"images[0].evidence.sbom.documents[0] references evidence document {digest}, "
        "which is not available")


def test_a_warm_list_gives_the_same_reference_and_a_changed_one_another() -> None:
    externaliser = EvidenceExternaliser(inline_max_bytes=0)
    listed = many(10)
    first = externaliser.externalise(policy_input(listed)).documents
    assert externaliser.externalise(policy_input(listed)).documents == first
    other = many(11)
    assert externaliser.externalise(policy_input(other)).documents.keys() != first.keys()


def test_a_negative_limit_is_refused() -> None:
    with pytest.raises(InvalidInputError) as caught:
        EvidenceExternaliser(inline_max_bytes=-1)
    assert caught.value.message == "evidence inline limit must be 0 or more bytes"


def test_the_index_lets_the_policy_look_banned_entries_up() -> None:
    index = build_evidence_index([
        component("pkg:npm/event-stream@3.3.6", licences=("MIT",)),
        component("pkg:npm/event-stream@4.0.1", licences=("MIT",)),
        component("pkg:npm/@scope/x@1.0", licences=("AGPL-3.0-only",)),
        component(None, name="tool", version="3", licences=("AGPL-3.0-only",)),
        component(None, name="bare", version=None, licences=()),
        component("pkg:npm/event-stream@3.3.6", licences=("MIT",)),  # listed twice
    ])
    assert index == {
        "purls": {"pkg:npm/event-stream@3.3.6": True, "pkg:npm/event-stream@4.0.1": True,
                  "pkg:npm/@scope/x@1.0": True},
        # the key is the purl up to its FIRST "@" (policies/sbom.rego's package_part)
        "packages": {"pkg:npm/event-stream": ["pkg:npm/event-stream@3.3.6",
                                              "pkg:npm/event-stream@4.0.1"],
                     "pkg:npm/": ["pkg:npm/@scope/x@1.0"]},
        "types": {"pkg:npm/": ["pkg:npm/@scope/x@1.0", "pkg:npm/event-stream@3.3.6",
                               "pkg:npm/event-stream@4.0.1"]},
        "licenses": {"MIT": {"pkg:npm/event-stream@3.3.6": True,
                             "pkg:npm/event-stream@4.0.1": True},
                     "AGPL-3.0-only": {"pkg:npm/@scope/x@1.0": True, "tool 3": True}},
        "component_count": 6,
    }


def test_a_predicate_is_loaded_as_itself_and_bad_documents_are_refused() -> None:
    assert build_data_document({"builder": {"id": "b"}}) == {"builder": {"id": "b"}}
    with pytest.raises(InvalidInputError) as caught:
        build_evidence_index({"not": "a list"})
    assert caught.value.message == "an SBOM evidence document must be a list of components"
    with pytest.raises(InvalidInputError) as caught:
        build_evidence_index(["text"])
    assert caught.value.message == "an SBOM evidence document lists a non-object component"
