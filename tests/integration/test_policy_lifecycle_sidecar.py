"""An OPA sidecar loads the active revision as a bundle from the gatekeeper and takes the
exceptions through its Data API (the bundle's roots leave data.gatekeeper.exceptions free)."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn

from gatekeeper.policy.exceptions import DataApiExceptionPublisher, exceptions_document
from gatekeeper.policy.sidecar import SidecarBundleRevision
from tests.helpers.types import MakeSettings
from tests.integration.test_policy_lifecycle_api import (
    ADMIN,
    APPROVER,
    AUDITOR,
    DIGEST,
    LifecycleApp,
    as_json_body,
    lifecycle_app,
    shipped,
    without_ghcr_in_staging,
)

REPO_POLICIES = Path(__file__).resolve().parents[2] / "policies"
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(predicate: Callable[[], T | None], what: str, timeout: float = 20.0) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what} (last: {last!r})")


@pytest.fixture
def served_gate(
    tmp_path: Path, make_settings: MakeSettings, opa_binary: str
) -> Iterator[tuple[LifecycleApp, str]]:
    with lifecycle_app(tmp_path, make_settings, opa_binary) as gate:
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(gate.client.app, host="127.0.0.1", port=port, lifespan="off",
                           log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        wait_for(lambda: server.started, "the gatekeeper to listen")
        try:
            yield gate, f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            thread.join(timeout=5)


@pytest.fixture
def sidecar(
    served_gate: tuple[LifecycleApp, str], opa_binary: str, tmp_path: Path
) -> Iterator[httpx.Client]:
    _gate, url = served_gate
    port = free_port()
    config = {
        "services": {"gatekeeper": {
            "url": url,
            "credentials": {"bearer": {"token": AUDITOR["Authorization"].split(" ", 1)[1]}},
        }},
        "bundles": {"gatekeeper": {
            "service": "gatekeeper", "resource": "/v1/policies/bundle",
            "polling": {"min_delay_seconds": 1, "max_delay_seconds": 1},
        }},
    }
    config_file = tmp_path / "opa-config.json"
    config_file.write_text(json.dumps(config))
    log = (tmp_path / "sidecar.log").open("wb")
    process = subprocess.Popen(
        [opa_binary, "run", "--server", "--addr", f"127.0.0.1:{port}", "--skip-version-check",
         "--config-file", str(config_file)],
        stdout=log, stderr=log,
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5)
    try:
        yield client
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=10)
        log.close()


def bundle_revision(client: httpx.Client) -> str | None:
    try:
        body = client.get("/v1/data/system/bundles/gatekeeper/manifest/revision").json()
    except (httpx.HTTPError, ValueError):
        return None
    revision: str | None = body.get("result")
    return revision


def decide(client: httpx.Client, policy_input: dict[str, Any]) -> dict[str, Any]:
    decision: dict[str, Any] = client.post(
        "/v1/data/gatekeeper/main/decision", json={"input": policy_input}
    ).json()["result"]
    return decision


STAGING_GHCR = {
    "environment": "staging", "namespace": "payments", "evaluated_at": "2026-11-24T12:00:00Z",
    "images": [{"reference": "ghcr.io/acme/api:1.0", "registry": "ghcr.io",
                "repository": "acme/api", "tag": "1.0", "digest": None, "evidence": {}}],
}


def test_sidecar_follows_activation_and_takes_exceptions(
    served_gate: tuple[LifecycleApp, str], sidecar: httpx.Client
) -> None:
    gate, _url = served_gate
    original = shipped().revision_id
    assert wait_for(lambda: bundle_revision(sidecar) == original, "the first bundle")
    assert SidecarBundleRevision(sidecar, ttl=0).current() == original
    assert decide(sidecar, STAGING_GHCR)["deny"] == []

    candidate = without_ghcr_in_staging(shipped())
    assert gate.client.post(
        "/v1/policies/revisions", json=as_json_body(candidate), headers=ADMIN
    ).status_code == 201
    assert gate.client.post(
        f"/v1/policies/revisions/{candidate.revision_id}/activate", headers=ADMIN
    ).status_code == 200
    wait_for(lambda: bundle_revision(sidecar) == candidate.revision_id, "the activated bundle")
    violation = {"policy": "registries", "item": {
        "image": "ghcr.io/acme/api:1.0",
        "message": 'registry "ghcr.io" is not allowed in environment "staging"',
    }}
    assert decide(sidecar, STAGING_GHCR)["deny"] == [violation]
    assert SidecarBundleRevision(sidecar, ttl=0).current() == candidate.revision_id

    # exceptions reach the sidecar through its Data API, outside the bundle's roots
    created = gate.client.post(
        "/v1/exceptions",
        json={"images": ["ghcr.io/acme/*"], "policies": ["registries"], "environment": "staging",
              "reason": "migration", "any_digest": True, "ticket_id": "SEC-1",
              "expires_at": "2026-11-25T00:00:00Z"},
        headers=ADMIN,
    )
    assert created.status_code == 201
    assert gate.client.post(
        f"/v1/exceptions/{created.json()['id']}/approve", headers=APPROVER
    ).status_code == 200
    DataApiExceptionPublisher(sidecar, describe="sidecar").publish(
        exceptions_document(gate.lifecycle.store.list_exceptions())
    )
    decision = decide(sidecar, STAGING_GHCR)
    assert decision["deny"] == []
    assert decision["exceptions"] == [{
        "id": "EXC-1", "ticket_id": "SEC-1", "expires_at": "2026-11-25T00:00:00Z",
        "policy": "registries", "image": "ghcr.io/acme/api:1.0", "status": "applied",
        "any_digest": True,
    }]
    # and the next bundle download keeps them (the bundle does not own that path)
    assert gate.client.post("/v1/policies/rollback", headers=ADMIN).status_code == 200
    wait_for(lambda: bundle_revision(sidecar) == original, "the rolled-back bundle")
    assert len(sidecar.get("/v1/data/gatekeeper/exceptions").json()["result"]) == 1
    assert f"@{DIGEST}"  # the module constant stays imported for readers of this scenario


def test_cli_drives_a_running_gatekeeper(
    served_gate: tuple[LifecycleApp, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from gatekeeper.cli.policy import policy_app
    from tests.integration.test_policy_lifecycle_api import (
        FAILING_TEST_NAME,
        with_teams_policy,
        write_candidate,
    )

    gate, url = served_gate
    runner = CliRunner()
    monkeypatch.setenv("GATEKEEPER_TOKEN", ADMIN["Authorization"].split(" ", 1)[1])
    broken = with_teams_policy(shipped())
    refused = runner.invoke(
        policy_app, ["submit", str(write_candidate(tmp_path / "broken", broken)), "--server", url]
    )
    assert (refused.exit_code, refused.output) == (
        1, f"error: candidate {broken.revision_id} refused: 1 failing test: {FAILING_TEST_NAME}\n"
    )
    candidate = without_ghcr_in_staging(shipped())
    accepted = runner.invoke(
        policy_app, ["submit", str(write_candidate(tmp_path / "ok", candidate)), "--server", url]
    )
    assert (accepted.exit_code, accepted.output) == (0, f"accepted {candidate.revision_id}\n")
    activated = runner.invoke(
        policy_app, ["activate", candidate.revision_id, "--server", url, "--reason", "CHG-9"]
    )
    assert activated.exit_code == 0, activated.output
    assert activated.output.split("  ", 1)[1] == (
        f"activate {shipped().revision_id} -> {candidate.revision_id}  by alice\n"
    )
    assert gate.lifecycle.store.active_revision_id() == candidate.revision_id
    rolled = runner.invoke(policy_app, ["rollback", "--server", url])
    assert rolled.output.split("  ", 1)[1] == (
        f"rollback {candidate.revision_id} -> {shipped().revision_id}  by alice\n"
    )
    monkeypatch.setenv("GATEKEEPER_TOKEN", AUDITOR["Authorization"].split(" ", 1)[1])
    forbidden = runner.invoke(policy_app, ["rollback", "--server", url])
    assert forbidden.exit_code == 2
    assert forbidden.output.startswith("error: subject 'bob' lacks the role for this operation")

    # exceptions approve: the principal of $GATEKEEPER_TOKEN, through the running gatekeeper
    created = gate.client.post(
        "/v1/exceptions",
        json={"images": ["ghcr.io/acme/*"], "policies": ["registries"], "environment": "staging",
              "reason": "migration", "any_digest": True, "ticket_id": "SEC-2",
              "expires_at": "2026-11-25T00:00:00Z"},
        headers=ADMIN,
    ).json()
    monkeypatch.setenv("GATEKEEPER_TOKEN", ADMIN["Authorization"].split(" ", 1)[1])
    own = runner.invoke(policy_app, ["exceptions", "approve", created["id"], "--server", url])
    assert own.exit_code == 1
    assert own.output.startswith(
        f"error: exception {created['id']} was created by 'alice': a second person must approve it"
    )
    monkeypatch.setenv("GATEKEEPER_TOKEN", APPROVER["Authorization"].split(" ", 1)[1])
    approved = runner.invoke(policy_app, ["exceptions", "approve", created["id"], "--server", url])
    assert approved.exit_code == 0, approved.output
    assert approved.output.startswith(f"{created['id']}  active   registries  ghcr.io/acme/*  ")


def test_sidecar_takes_large_evidence_through_its_data_api_and_keeps_it_across_bundles(
    served_gate: tuple[LifecycleApp, str], sidecar: httpx.Client
) -> None:
    """Issue 17.2: a sidecar accepts data.gatekeeper.evidence (outside every bundle root) and
    a new bundle does not drop it."""
    from gatekeeper.policy.bundle import PolicyFiles
    from gatekeeper.policy.evidence_data import EVIDENCE_DATA_PATH
    from gatekeeper.policy.opa import OpaPolicyEngine
    from tests.integration.test_opa_evidence import EXPECTED, _input

    gate, _url = served_gate
    original = shipped().revision_id
    wait_for(lambda: bundle_revision(sidecar) == original, "the first bundle")
    base = shipped()
    policies = dict(base.policies)
    policies["sbom.rego"] = (REPO_POLICIES / "sbom.rego").read_bytes()
    data = json.loads(policies["data.json"])
    data["gatekeeper"]["config"]["sbom"] = {"banned_components": [
        {"purl": "pkg:npm/event-stream@3.3.*", "reason": "malicious release"}]}
    policies["data.json"] = json.dumps(data, indent=2).encode()
    candidate = PolicyFiles(policies, dict(base.tests))
    assert gate.client.post(
        "/v1/policies/revisions", json=as_json_body(candidate), headers=ADMIN
    ).status_code == 201
    assert gate.client.post(
        f"/v1/policies/revisions/{candidate.revision_id}/activate", headers=ADMIN
    ).status_code == 200
    wait_for(lambda: bundle_revision(sidecar) == candidate.revision_id, "the activated bundle")

    engine = OpaPolicyEngine(sidecar, describe="OPA sidecar")
    externalised = _input()
    [digest] = externalised.documents
    result = engine.evaluate(externalised.policy_input, externalised.documents)
    assert [v.message for v in result.violations if v.policy == "sbom"] == [EXPECTED]
    assert sidecar.get(f"{EVIDENCE_DATA_PATH}/{digest}").json()["result"]["component_count"] == 1001

    assert gate.client.post("/v1/policies/rollback", headers=ADMIN).status_code == 200
    wait_for(lambda: bundle_revision(sidecar) == original, "the rolled-back bundle")
    assert sidecar.get(f"{EVIDENCE_DATA_PATH}/{digest}").json()["result"]["component_count"] == 1001
