"""What the shipped ``policies/data.json`` promises (issue 10.1): which SBOM sources are proof."""

import json
from pathlib import Path

DATA = json.loads((Path(__file__).resolve().parents[2] / "policies" / "data.json").read_text())


def test_production_requires_an_attested_sbom_and_warns_on_anything_else() -> None:
    production = DATA["gatekeeper"]["config"]["sbom"]["environments"]["production"]
    assert production == {
        "proof_sources": ["attestation"],
        "warn_sources": ["referrer", "upload", "inline"],
    }


def test_every_source_is_proof_in_development_and_staging() -> None:
    environments = DATA["gatekeeper"]["config"]["sbom"]["environments"]
    for name in ("development", "staging"):
        assert set(environments[name]["proof_sources"]) == {"attestation", "referrer", "upload", "inline"}
        assert environments[name]["warn_sources"] == []
