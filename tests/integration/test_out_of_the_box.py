"""Out of the box: ``scripts/run`` (SQLite, no key configured), then the auditor's job works.

The real server is started by ``scripts/run`` itself; the auditor then runs ``gatekeeper audit
export`` and ``gatekeeper audit verify --file`` as documented, with no key of their own.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jsonschema_rs
import pytest

from gatekeeper.audit.embedded_key import EMBEDDED_KEY_SUFFIX

REPO = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "34" * 32
OPA_EVENT = jsonschema_rs.validator_for(json.loads(
    (REPO / "tests/assets/opa/decision-log-event.schema.json").read_text()))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def run_env(tmp_path: Path, opa_binary: str) -> dict[str, str]:
    """The environment of a user who only ran ``scripts/run`` (state in a private dir)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEKEEPER_")}
    if os.environ.get("GATEKEEPER_SKIP_VENV"):
        env["GATEKEEPER_SKIP_VENV"] = os.environ["GATEKEEPER_SKIP_VENV"]
    env.update(
        GATEKEEPER_DATABASE_URL=f"sqlite:///{tmp_path / 'var' / 'gatekeeper.db'}",
        GATEKEEPER_AUDIT_SPOOL_DIR=str(tmp_path / "var" / "audit-spool"),
        GATEKEEPER_OPA_BINARY=opa_binary,
        GATEKEEPER_METRICS_PORT="0",
        GATEKEEPER_RESOLVE_DIGESTS="false",
    )
    return env


def _start(env: dict[str, str], port: int) -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen(
        [str(REPO / "scripts/run"), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"scripts/run exited: {server.communicate()[0]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return server, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.kill()
    pytest.fail(f"scripts/run did not become ready: {server.communicate()[0]}")


def _stop(server: subprocess.Popen[str]) -> str:
    server.terminate()
    output: str = server.communicate(timeout=30)[0]
    return output


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gatekeeper", *args],
        capture_output=True, text=True, env=env, timeout=120,
    )


def test_scripts_run_then_audit_export_and_offline_verify(run_env: dict[str, str], tmp_path: Path) -> None:
    key_file = tmp_path / "var" / f"gatekeeper.db{EMBEDDED_KEY_SUFFIX}"
    server, url = _start(run_env, _free_port())
    try:
        ready = httpx.get(f"{url}/readyz").json()
        answer = httpx.post(f"{url}/v1/evaluations", json={
            "images": [f"registry.example.com/pay/api@{DIGEST}"], "environment": "development",
            "ticket": {"ticket_id": "CHG-1"},
        })
        assert answer.status_code == 200, answer.text
    finally:
        output = _stop(server)

    # (1) the key was generated beside the database, private, and announced
    assert key_file.is_file()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert ready["audit_signing_key"]["source"] == "generated"
    assert ready["audit_signing_key"]["file"] == str(key_file)
    key_id = ready["audit_signing_key"]["key_id"]
    assert f"generated the audit checkpoint signing key {key_file} (key id {key_id})" in output

    # (2) the auditor exports and verifies offline with no key of their own
    export = tmp_path / "trail.jsonl"
    exported = _cli(run_env, "audit", "export", "--file", str(export))
    assert exported.returncode == 0, exported.stderr
    lines = [json.loads(line) for line in export.read_text().splitlines()]
    assert [line["type"] for line in lines] == ["header", "record", "checkpoint"]
    assert lines[-1]["key_id"] == key_id
    verified = _cli(run_env, "audit", "verify", "--file", str(export))
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.startswith("export verified: 1 record"), verified.stdout

    # (3) the same trail as OPA decision-log events, for tools that read OPA's decision logs
    events_file = tmp_path / "trail.opa.jsonl"
    opa = _cli(run_env, "audit", "export", "--format", "opa", "--ticket-id", "CHG-1",
               "--file", str(events_file))
    assert opa.returncode == 0, opa.stderr
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert len(events) == 1
    event, record = events[0], lines[1]
    assert OPA_EVENT.is_valid(event), list(OPA_EVENT.iter_errors(event))
    assert event["decision_id"] == record["decision"]["decision_id"] == answer.json()["decision_id"]
    assert event["bundles"] == {"gatekeeper": {"revision": record["decision"]["policy_revision"]}}
    assert event["input"]["ticket"]["ticket_id"] == "CHG-1"
    assert event["chain"]["record_hash"] == record["record_hash"]
    assert event["result"]["verdict"] == record["decision"]["verdict"]

    # (4) a second start reuses the key (the export above still verifies)
    server, url = _start(run_env, _free_port())
    try:
        again = httpx.get(f"{url}/readyz").json()["audit_signing_key"]
    finally:
        _stop(server)
    assert again == {"source": "embedded", "file": str(key_file), "key_id": key_id}


def test_a_key_readable_by_others_is_refused(run_env: dict[str, str], tmp_path: Path) -> None:
    key_file = tmp_path / "var" / f"gatekeeper.db{EMBEDDED_KEY_SUFFIX}"
    key_file.parent.mkdir(parents=True)
    generated = _cli(run_env, "audit", "keygen", "--file", str(key_file))
    assert generated.returncode == 0, generated.stderr
    key_file.chmod(0o644)
    result = _cli(run_env, "audit", "export", "--file", str(tmp_path / "x.jsonl"))
    assert result.returncode == 2
    assert (f"audit signing key {key_file} is readable by other users (mode 0644); chmod 600 it"
            in result.stderr)
