"""Issue 3's "done when" through the real entry points: a cosign-signed image in the loopback
registry is allowed and an unsigned one denied, naming the image and the reason, by
``gatekeeper evaluate`` (CLI), ``POST /v1/evaluations`` (API) and ``gatekeeper verify``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from gatekeeper.app import create_app
from gatekeeper.domain import Digest
from tests.helpers.cli import outside_environment, run_gatekeeper, run_gatekeeper_listing_modules
from tests.helpers.types import MakeSettings
from tests.integration.cosign_fixtures import (
    cosign_binary,
    cosign_sign,
    generate_key_pair,
    push_image,
    registry_host,
)


@pytest.fixture
def signed_world(
    tmp_path: Path, opa_binary: str, policy_dir: Path
) -> tuple[str, Digest, dict[str, str], dict[str, Any]]:
    host = registry_host()
    cosign = cosign_binary("v2")
    keys = generate_key_pair(cosign, tmp_path / "keys")
    signed_digest = push_image(host, "cli/signed:1.0", "signed content", tmp_path)
    cosign_sign(cosign, keys, f"{host}/cli/signed@{signed_digest}", tmp_path)
    push_image(host, "cli/unsigned:1.0", "unsigned content", tmp_path)
    config = {
        "registry": {"hosts": [{"host": host, "plain_http": True}]},
        "signatures": {
            "authorities": [{"name": "release", "keys": [keys.public_pem], "tlog": False}],
            "images": [{"glob": f"{host}/**", "authorities": ["release"]}],
            # A current configuration: without it the gatekeeper warns on stderr that the
            # authority does not compare the signed docker-reference.
            "version": 2,
        },
        "trusted_root": "none",
        "ecr_auth": False,
    }
    config_file = tmp_path / "gatekeeper.yaml"
    config_file.write_text(yaml.safe_dump(config))
    env = outside_environment()
    env.update(
        GATEKEEPER_CONFIG=str(config_file),
        GATEKEEPER_DATABASE_URL=f"sqlite:///{tmp_path / 'cli.db'}",
        GATEKEEPER_OPA_BINARY=opa_binary,
        GATEKEEPER_POLICY_DIR=str(policy_dir),
        GATEKEEPER_AUDIT_SPOOL_DIR=str(tmp_path / "spool"),
        GATEKEEPER_INSECURE_DISABLE_AUTH="true",
    )
    return host, signed_digest, env, config


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_gatekeeper(env, *args, timeout=120)


def test_cli_evaluate_allows_signed_and_denies_unsigned(signed_world: tuple[str, Digest, dict[str, str], dict[str, Any]]) -> None:
    host, digest, env, _ = signed_world
    allowed = run(env, "evaluate", f"{host}/cli/signed:1.0", "--environment", "staging", "--output", "json")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    decision = json.loads(allowed.stdout)
    assert decision["verdict"] == "allow"
    assert decision["images"][0]["digest"] == str(digest)
    assert decision["images"][0]["evidence"]["signatures"]["status"] == "verified"

    denied = run(env, "evaluate", f"{host}/cli/unsigned:1.0", "--environment", "staging", "--output", "json")
    assert denied.returncode == 1
    [violation] = json.loads(denied.stdout)["violations"]
    assert violation["policy"] == "signatures"
    assert violation["image"] == f"{host}/cli/unsigned:1.0"
    assert violation["message"].startswith(f"image {host}/cli/unsigned:1.0@sha256:")
    assert "no signature found; 0 of 1 required authorities verified" in violation["message"]


def test_api_allows_signed_and_denies_unsigned(
    signed_world: tuple[str, Digest, dict[str, str], dict[str, Any]], make_settings: MakeSettings
) -> None:
    host, digest, _, config = signed_world
    settings = make_settings(resolve_digests=True, trusted_root="none", ecr_auth=False,
                             registry=config["registry"], signatures=config["signatures"])
    with TestClient(create_app(settings)) as client:
        signed = client.post("/v1/evaluations", json={"images": [f"{host}/cli/signed:1.0"], "environment": "staging"}).json()
        unsigned = client.post("/v1/evaluations", json={"images": [f"{host}/cli/unsigned:1.0"], "environment": "staging"}).json()
    assert (signed["verdict"], signed["images"][0]["digest"]) == ("allow", str(digest))
    assert unsigned["verdict"] == "deny"
    assert [v["policy"] for v in unsigned["violations"]] == ["signatures"]
    assert "no signature found" in unsigned["violations"][0]["message"]


def test_verify_command_prints_the_evidence(signed_world: tuple[str, Digest, dict[str, str], dict[str, Any]]) -> None:
    host, digest, env, _ = signed_world
    ok = run(env, "verify", f"{host}/cli/signed:1.0", "--authority", "release")
    assert ok.returncode == 0, ok.stderr
    evidence = json.loads(ok.stdout)
    assert evidence["authorities"]["release"]["verified"] is True
    assert evidence["digest"] == str(digest)
    unsigned = run(env, "verify", f"{host}/cli/unsigned:1.0")
    assert unsigned.returncode == 1
    assert "no signature found" in unsigned.stderr
    unknown = run(env, "verify", f"{host}/cli/signed:1.0", "--authority", "other")
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == f"error: authority other does not apply to {host}/cli/signed:1.0 (applies: release)"


#: What ``gatekeeper verify`` must not load: the server's stack (web framework, stores, policy
#: engine, traces, metrics registry). The command's start-up time is mostly imports (issue 18).
SERVER_STACK = (
    "fastapi", "starlette", "uvicorn", "sqlalchemy", "psycopg", "opentelemetry",
    "prometheus_client", "gatekeeper.wiring", "gatekeeper.audit", "gatekeeper.policy",
    "gatekeeper.sbom", "gatekeeper.scans", "gatekeeper.service", "gatekeeper.metrics",
    "gatekeeper.tracing", "gatekeeper.evaluation",
)
#: ... nor what only keyless, bundle and transparency-log verification needs (sigstore-python
#: and what it brings: TUF, requests, the Rekor types, ~0.25 s; X.509), nor Notation (cbor2),
#: nor httpx's own command line (click, rich, pygments), nor boto3 (ECR tokens only), nor
#: pydantic-settings. A key-based cosign check needs none of them.
KEYLESS_STACK = (
    "sigstore", "sigstore_models", "rekor_types", "tuf", "securesystemslib", "rfc3161_client",
    "requests", "urllib3", "httpx._main", "rich", "pygments", "click", "boto3", "botocore",
    "cryptography.x509", "cbor2", "pydantic_settings", "gatekeeper.verify.bundle",
    "gatekeeper.verify.keyless", "gatekeeper.verify.tlog", "gatekeeper.verify.identity",
    "gatekeeper.verify.notation", "gatekeeper.verify.notation_policy",
    "gatekeeper.verify.notation_envelope", "gatekeeper.verify.notation_x509",
)


def test_verify_command_loads_no_server_stack(
    signed_world: tuple[str, Digest, dict[str, str], dict[str, Any]], tmp_path: Path
) -> None:
    host, _, env, _ = signed_world
    completed, loaded = run_gatekeeper_listing_modules(
        env, tmp_path / "modules.txt", "verify", f"{host}/cli/signed:1.0")
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["verified"] is True
    assert "gatekeeper.verify.collector" in loaded  # the listing is the command's own
    heavy = sorted(
        name for name in loaded
        if any(name == stack or name.startswith(stack + ".") for stack in SERVER_STACK)
    )
    assert heavy == []
    keyless = sorted(
        name for name in loaded
        if any(name == stack or name.startswith(stack + ".") for stack in KEYLESS_STACK)
    )
    assert keyless == []
