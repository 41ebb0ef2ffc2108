"""Issue 17.1/17.2 end to end: the whole gatekeeper (``create_app``, embedded OPA with the
shipped policies, SQLite trail) and an image whose 600-component CycloneDX SBOM is attested (the attestation payload limit is 256 KiB)
by the real cosign CLI. The component list travels to OPA and into the trail by its sha256."""

from __future__ import annotations

import sqlalchemy as sa

from gatekeeper.audit import create_database_engine, verify_database
from gatekeeper.audit.schema import decision_evidence, decisions, evidence_documents
from tests.integration import test_sbom_cannot_be_hidden as hidden
from tests.integration.cosign_fixtures import cosign_sign
from tests.integration.test_sbom_cannot_be_hidden import BANNED, BANNED_BY_ATTESTATION, Gate
from tests.unit.sbom.factory import cyclonedx, cyclonedx_component

cosign, gate = hidden.cosign, hidden.gate  # the whole gatekeeper with cosign (fixtures)


def test_a_large_attested_sbom_is_decided_by_reference_and_stored_once(gate: Gate) -> None:
    image = gate.image("large-sbom")
    cosign_sign(gate.cosign, gate.keys, image, gate.workdir)
    components = [cyclonedx_component(i) for i in range(600)]
    components.append(cyclonedx_component(600, purl=BANNED, name="event-stream"))
    gate.attest(image, cyclonedx(components))

    first = gate.evaluate(image)
    second = gate.evaluate(image)

    for decision in (first, second):
        assert decision["verdict"] == "deny"
        assert [(v["policy"], v["message"]) for v in decision["violations"]] == [
            ("sbom", BANNED_BY_ATTESTATION)]
    [document] = first["images"][0]["evidence"]["sbom"]["documents"]
    assert "components" not in document
    assert document["component_count"] == 601
    digest = document["components_sha256"]
    [attestation] = first["images"][0]["evidence"]["signatures"]["attestations"]
    assert "predicate" not in attestation  # the verified statement: the SBOM again, by hash
    assert attestation["kind"] == "cyclonedx"
    predicate = attestation["predicate_sha256"]

    settings = gate.client.app.state.container.settings  # type: ignore[attr-defined]
    engine = create_database_engine(settings.database_url)
    try:
        with engine.connect() as connection:
            stored = connection.execute(sa.select(evidence_documents.c.sha256)).scalars().all()
            links = connection.execute(sa.select(decision_evidence.c.sha256)).scalars().all()
            sizes = connection.execute(sa.select(
                sa.func.length(decisions.c.document) + sa.func.length(decisions.c.policy_input)
            )).scalars().all()
        assert sorted(stored) == sorted([digest, predicate])
        assert sorted(links) == sorted([digest, predicate] * 2)
        assert all(size < 8192 for size in sizes), sizes
        assert verify_database(engine, None).records == 2
    finally:
        engine.dispose()

