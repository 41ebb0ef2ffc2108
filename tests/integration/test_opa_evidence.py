"""Large SBOM evidence reaches the real OPA once, by hash, through its Data API (issue 17.2)."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gatekeeper.domain import (
    EvaluationRequest,
    EvidenceContext,
    Source,
    build_policy_input,
    parse_image_reference,
)
from gatekeeper.domain.evidence_documents import EvidenceExternaliser, ExternalisedInput
from gatekeeper.errors import PolicyEngineError
from gatekeeper.policy import EmbeddedOpa
from gatekeeper.policy.evidence_data import EVIDENCE_DATA_PATH
from gatekeeper.sbom import BindingMethod, SbomCandidate, SbomEvidenceCollector

DIGEST = "sha256:" + "cd" * 32
IMAGE = f"registry.example.com/payments/api@{DIGEST}"
BANNED = "pkg:npm/event-stream@3.3.6"
EXPECTED = (f"banned component {BANNED}: malicious release (listed by attestation by release)")


class _Fixed:
    name = "fixed"

    def __init__(self, candidate: SbomCandidate) -> None:
        self.candidate = candidate

    def find(self, reference: Any, digest: Any, context: Any) -> Any:
        return (self.candidate,)


def _sbom(components: int, banned: bool) -> bytes:
    listed = [{"type": "library", "name": f"pkg-{i}", "version": "1.0.0",
               "purl": f"pkg:npm/pkg-{i}@1.0.0",
               "licenses": [{"license": {"id": "MIT"}}]} for i in range(components)]
    if banned:
        listed.append({"type": "library", "name": "event-stream", "version": "3.3.6",
                       "purl": BANNED})
    return json.dumps({"bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1,
                       "components": listed}).encode()


def _input(components: int = 1000, banned: bool = True) -> ExternalisedInput:
    reference = parse_image_reference(IMAGE)
    collector = SbomEvidenceCollector(sources=[_Fixed(SbomCandidate(
        _sbom(components, banned), BindingMethod.ATTESTATION, (DIGEST,), "attestation (t)",
        source="attestation", authority="release"))])
    request = EvaluationRequest(images=(reference,), source=Source.PIPELINE,
                                environment="production", namespace="payments")
    evidence = {"sbom": dict(collector.collect(
        reference, reference.digest, EvidenceContext("production", "payments")))}
    document = build_policy_input(request, [(reference, reference.digest, evidence)],
                                  datetime(2026, 11, 30, tzinfo=UTC))
    return EvidenceExternaliser().externalise(document)


def _ban(policy_dir: Path) -> None:
    data_file = policy_dir / "data.json"
    data = json.loads(data_file.read_text())
    data["gatekeeper"]["config"]["sbom"]["banned_components"] = [
        {"purl": "pkg:npm/event-stream@3.3.*", "reason": "malicious release"}]
    data_file.write_text(json.dumps(data))


@pytest.fixture
def opa(opa_binary: str, policy_dir: Path) -> Iterator[EmbeddedOpa]:
    _ban(policy_dir)
    engine = EmbeddedOpa(opa_binary=opa_binary, policy_dir=policy_dir)
    engine.start()
    yield engine
    engine.stop()


def _messages(opa: EmbeddedOpa, externalised: ExternalisedInput) -> list[str]:
    result = opa.engine.evaluate(externalised.policy_input, externalised.documents)
    return [v.message for v in result.violations if v.policy == "sbom"]


def _loaded(opa: EmbeddedOpa, digest: str) -> Any:
    client = opa.engine._client  # the engine's own connection to the child
    return client.get(f"{EVIDENCE_DATA_PATH}/{digest}").json().get("result")


def test_a_large_sbom_travels_by_hash_and_its_banned_component_denies(opa: EmbeddedOpa) -> None:
    externalised = _input()
    [digest] = externalised.documents
    document = externalised.policy_input["images"][0]["evidence"]["sbom"]["documents"][0]
    assert "components" not in document
    assert document["components_sha256"] == digest
    assert document["component_count"] == 1001
    assert len(json.dumps(externalised.policy_input)) < 4096

    assert _messages(opa, externalised) == [EXPECTED]
    loaded = _loaded(opa, digest)
    assert loaded["component_count"] == 1001
    assert loaded["packages"]["pkg:npm/event-stream"] == [BANNED]


def test_a_clean_large_sbom_allows(opa: EmbeddedOpa) -> None:
    assert _messages(opa, _input(banned=False)) == []


def test_evidence_deleted_behind_the_gatekeepers_back_is_loaded_again(opa: EmbeddedOpa) -> None:
    externalised = _input()
    [digest] = externalised.documents
    assert _messages(opa, externalised) == [EXPECTED]
    opa.engine._client.delete(f"{EVIDENCE_DATA_PATH}/{digest}")
    assert _loaded(opa, digest) is None

    assert _messages(opa, externalised) == [EXPECTED]
    assert _loaded(opa, digest) is not None


def test_a_restarted_opa_gets_the_evidence_again(opa: EmbeddedOpa) -> None:
    externalised = _input()
    assert _messages(opa, externalised) == [EXPECTED]
    first = opa.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            if opa.pid != first:
                opa.engine.check_health()
                break
        except PolicyEngineError:
            pass
        time.sleep(0.1)
    assert opa.pid != first

    assert _messages(opa, externalised) == [EXPECTED]


def test_a_policy_set_without_missing_evidence_gets_the_components_inline(
    opa_binary: str, policy_dir: Path
) -> None:
    main = policy_dir / "main.rego"
    main.write_text(main.read_text().replace(
        '\t"missing_evidence": missing_evidence,\n', ""))
    _ban(policy_dir)
    opa = EmbeddedOpa(opa_binary=opa_binary, policy_dir=policy_dir)
    opa.start()
    try:
        assert _messages(opa, _input()) == [EXPECTED]
    finally:
        opa.stop()


def test_evidence_that_never_becomes_readable_fails_closed(
    opa_binary: str, policy_dir: Path
) -> None:
    main = policy_dir / "main.rego"
    # a policy that never sees the loaded document (as if OPA dropped every write)
    main.write_text(main.read_text().replace(
        "\tnot data.gatekeeper.evidence[digest]\n", "\tnot data.gatekeeper.nowhere[digest]\n"))
    _ban(policy_dir)
    opa = EmbeddedOpa(opa_binary=opa_binary, policy_dir=policy_dir)
    opa.start()
    externalised = _input()
    [digest] = externalised.documents
    try:
        with pytest.raises(PolicyEngineError) as caught:
            opa.engine.evaluate(externalised.policy_input, externalised.documents)
    finally:
        opa.stop()
    assert caught.value.message == (
        f"embedded OPA still lacks evidence document(s) {digest} after loading them: "
        "the decision cannot see those components"
    )
