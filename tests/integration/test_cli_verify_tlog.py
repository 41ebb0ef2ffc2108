"""``gatekeeper verify`` with ``tlog: true`` over the real registry and a real cosign signature
(issue 18): the Rekor bundle annotation is checked against the trusted root's log key without
sigstore-python.

cosign cannot reach a Rekor here, so it signs offline (``--tlog-upload=false``) and
:class:`tests.integration.rekor_fixtures.PrivateLog` plays the log: the hashedrekord entry a
Rekor would record, its SET by a log key listed in a copy of the public-good trusted root, the
``dev.sigstore.cosign/bundle`` annotation on the ``.sig`` manifest as cosign writes it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from gatekeeper.domain import Digest
from tests.helpers.cli import outside_environment, run_gatekeeper_listing_modules
from tests.integration.cosign_fixtures import (
    KeyPair,
    cosign_binary,
    cosign_sign,
    generate_key_pair,
    push_image,
    registry_host,
)
from tests.integration.rekor_fixtures import PrivateLog
from tests.integration.test_cli_signatures import KEYLESS_STACK


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.host = registry_host()
        self.tmp_path = tmp_path
        self.cosign = cosign_binary("v2")
        self.keys: KeyPair = generate_key_pair(self.cosign, tmp_path / "keys")
        self.log = PrivateLog()
        self.log_id = self.log.log_id

    def signed_image(
        self, name: str, *, integrated_time: int = 1_700_000_000,
        edit: Callable[[dict[str, Any]], None] | None = None,
    ) -> tuple[str, Digest]:  # fmt: skip
        """A cosign-signed image whose ``.sig`` layer carries a Rekor bundle annotation."""
        digest = push_image(self.host, f"tlog/{name}:1.0", name, self.tmp_path)
        cosign_sign(self.cosign, self.keys, f"{self.host}/tlog/{name}@{digest}", self.tmp_path)
        self.log.log_signature(self.host, f"tlog/{name}", digest, self.keys.public_pem,
                               integrated_time=integrated_time, edit=edit)  # fmt: skip
        return f"{self.host}/tlog/{name}:1.0", digest

    def environment(self, valid_for: dict[str, str]) -> dict[str, str]:
        root_file = self.log.trusted_root(self.tmp_path / "trusted_root.json", valid_for)
        config = {
            "registry": {"hosts": [{"host": self.host, "plain_http": True}]},
            "signatures": {
                "authorities": [{"name": "release", "keys": [self.keys.public_pem], "tlog": True}],
                "images": [{"glob": f"{self.host}/**", "authorities": ["release"]}],
                "version": 2,
            },
            "trusted_root": str(root_file),
            "ecr_auth": False,
        }
        config_file = self.tmp_path / "gatekeeper.yaml"
        config_file.write_text(yaml.safe_dump(config))
        env = outside_environment()
        env.update(GATEKEEPER_CONFIG=str(config_file))
        return env

    def verify(self, env: dict[str, str], image: str) -> tuple[int, dict[str, Any], str, list[str]]:
        """``gatekeeper verify IMAGE``: exit code, evidence, stderr, the modules it loaded."""
        completed, loaded = run_gatekeeper_listing_modules(
            env, self.tmp_path / "modules.txt", "verify", image)
        evidence = json.loads(completed.stdout) if completed.stdout.strip() else {}
        return completed.returncode, evidence, completed.stderr, loaded


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def _signature(evidence: dict[str, Any]) -> dict[str, Any]:
    [signature] = evidence["authorities"]["release"]["signatures"]
    assert isinstance(signature, dict)
    return signature


def test_a_logged_signature_is_verified_without_sigstore_python(world: World) -> None:
    image, digest = world.signed_image("logged")
    env = world.environment({"start": "2020-01-01T00:00:00Z"})

    code, evidence, stderr, loaded = world.verify(env, image)

    assert code == 0, stderr
    assert (evidence["verified"], evidence["digest"]) == (True, str(digest))
    assert _signature(evidence)["tlog"] == "verified"
    assert "gatekeeper.verify.tlog" in loaded  # the log entry really was checked
    keyless = sorted(
        name for name in loaded if name != "gatekeeper.verify.tlog"
        and any(name == stack or name.startswith(stack + ".") for stack in KEYLESS_STACK)
    )  # fmt: skip
    assert keyless == []


def _tamper_set(bundle: dict[str, Any]) -> None:
    raw = bytearray(base64.b64decode(bundle["SignedEntryTimestamp"]))
    raw[-1] ^= 1
    bundle["SignedEntryTimestamp"] = base64.b64encode(bytes(raw)).decode()


def test_a_tampered_set_is_denied_naming_it(world: World) -> None:
    image, _ = world.signed_image("tampered", edit=_tamper_set)

    code, evidence, _, _ = world.verify(world.environment({"start": "2020-01-01T00:00:00Z"}), image)

    assert code == 1
    assert evidence["verified"] is False
    assert evidence["authorities"]["release"]["detail"] == (
        "tlog entry's signed timestamp does not verify"
    )


def test_an_entry_outside_the_log_keys_validity_is_denied(world: World) -> None:
    image, _ = world.signed_image("expired-log")
    env = world.environment({"start": "2020-01-01T00:00:00Z", "end": "2022-12-31T23:59:59Z"})

    code, evidence, _, _ = world.verify(env, image)

    assert code == 1
    assert evidence["authorities"]["release"]["detail"] == (
        "tlog entry integrated at 2023-11-14T22:13:20Z is outside the validity of log key "
        f"{world.log_id} (https://rekor.internal.example): 2020-01-01T00:00:00Z to "
        "2022-12-31T23:59:59Z"
    )
