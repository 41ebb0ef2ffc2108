"""The chart's bundle signing: the sidecar configuration it renders makes the real OPA verify
the bundles the gatekeeper signs with the mounted key (and refuse them without the key)."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa

from gatekeeper.app import create_app
from tests.helpers.types import MakeSettings
from tests.integration.test_bundle_signing import _write_key
from tests.integration.test_chart import HELM, one, refused, render
from tests.integration.test_policy_lifecycle_sidecar import bundle_revision, free_port, wait_for

pytestmark = pytest.mark.skipif(not HELM, reason="GATEKEEPER_HELM (path of helm) is not set")


def _opa_config(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap"
                     and "config.yaml" in d.get("data", {})]
    decoded: dict[str, Any] = yaml.safe_load(config_map["data"]["config.yaml"])
    return decoded


def test_rendered_sidecar_config_verifies_the_signed_bundles(make_settings: MakeSettings, opa_binary: str, tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = _write_key(tmp_path / "bundle-signing-key.pem", key)
    docs = render("opa.bundleSigning.existingSecret=gk-bundle-key",
                  f"opa.bundleSigning.publicKey={public_pem}")
    deployment = one(docs, "Deployment")
    gatekeeper = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in gatekeeper["env"]}
    assert env["GATEKEEPER_BUNDLE_SIGNING_KEY_FILE"] == (
        "/etc/gatekeeper/bundle-signing/bundle-signing-key.pem")
    assert env["GATEKEEPER_BUNDLE_SIGNING_KEY_ID"] == "gatekeeper"
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["bundle-signing-key"]["secret"]["secretName"] == "gk-bundle-key"
    config = _opa_config(docs)
    assert config["bundles"]["gatekeeper"]["signing"] == {"keyid": "gatekeeper"}
    assert config["keys"]["gatekeeper"]["key"].strip() == public_pem.strip()

    # the gatekeeper as the chart configures it (key file, key id), served on loopback
    settings = make_settings(
        bundle_signing_key_file=tmp_path / "bundle-signing-key.pem",
        bundle_signing_key_id=env["GATEKEEPER_BUNDLE_SIGNING_KEY_ID"])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, "the gatekeeper to listen", timeout=60)
    # the rendered sidecar configuration; only the service address is local to this test
    config["services"]["gatekeeper"] = {"url": f"http://127.0.0.1:{port}"}
    config["bundles"]["gatekeeper"]["polling"] = {"min_delay_seconds": 1, "max_delay_seconds": 1}
    config_file = tmp_path / "opa-config.json"
    config_file.write_text(json.dumps(config))
    opa_port = free_port()
    log_path = tmp_path / "sidecar.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [opa_binary, "run", "--server", "--addr", f"127.0.0.1:{opa_port}",
             "--skip-version-check", "--config-file", str(config_file)], stdout=log, stderr=log)
    sidecar = httpx.Client(base_url=f"http://127.0.0.1:{opa_port}", timeout=5)
    try:
        revision = wait_for(lambda: bundle_revision(sidecar), "the verified bundle", timeout=60)
        assert revision.startswith("sha256:")
        assert "Bundle load failed" not in log_path.read_text()
    finally:
        sidecar.close()
        process.terminate()
        process.wait(timeout=10)
        server.should_exit = True
        thread.join(timeout=10)


def test_signing_without_the_public_key_is_refused() -> None:
    assert ("opa.bundleSigning.publicKey is required with opa.bundleSigning.existingSecret"
            in refused("opa.bundleSigning.existingSecret=gk-bundle-key"))
    assert "keys" not in _opa_config(render())
