"""When sigstore-python parses the trusted root (issue 18): at load for the server and for
keyless authorities; on first use for a one-shot key-based ``gatekeeper verify``, whose Rekor
check needs only the log keys. Either way a malformed file is rejected with the same message."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gatekeeper.domain.reference import Digest
from gatekeeper.errors import ConfigurationError
from gatekeeper.evidence_wiring import build_registry_client, build_signature_collector
from gatekeeper.verify.tlog import verify_rekor_bundle
from gatekeeper.verify.trust import TrustRoot
from tests.helpers.types import MakeSettings
from tests.integration.rekor_fixtures import shipped_trusted_root
from tests.unit.verify.conftest import PrivateRekor, pem_of, sign, simple_signing_payload

KEYLESS = {"issuer": "https://token.actions.githubusercontent.com",
           "subject": "https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1"}


def _root_with_log(rekor: PrivateRekor, *, break_ca: bool) -> bytes:
    document = shipped_trusted_root()
    document["tlogs"] = json.loads(rekor.trust.merged or "{}")["tlogs"]
    if break_ca:
        document["certificateAuthorities"][0]["validFor"] = {"start": "yesterday"}
    return json.dumps(document).encode()


def test_a_deferred_root_checks_log_entries_and_reports_a_bad_file_when_used(
    private_rekor: PrivateRekor, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    data = _root_with_log(private_rekor, break_ca=True)
    with pytest.raises(ConfigurationError) as at_load:
        TrustRoot.from_json(data, name="root.json")  # eager: the server's way

    deferred = TrustRoot.from_json(data, name="root.json", eager=False)
    payload = simple_signing_payload(Digest("sha256", "f" * 64))
    bundle = private_rekor.hashedrekord_bundle(sign(signing_key, payload), payload,
                                               pem_of(signing_key))  # fmt: skip
    assert verify_rekor_bundle(bundle, deferred).log_index == 42
    assert not deferred.sigstore_loaded
    with pytest.raises(ConfigurationError) as on_use:
        _ = deferred.root
    assert on_use.value.message == at_load.value.message
    assert on_use.value.message.startswith("root.json is not a valid Sigstore trusted root: ")


def test_a_valid_deferred_root_is_the_same_root(private_rekor: PrivateRekor) -> None:
    data = _root_with_log(private_rekor, break_ca=False)
    eager = TrustRoot.from_json(data, name="root.json")
    deferred = TrustRoot.from_json(data, name="root.json", eager=False)

    assert (deferred.version, deferred.log_keys) == (eager.version, eager.log_keys)
    assert deferred.root is not None and eager.root is not None
    assert deferred.sigstore_loaded
    assert len(deferred.root.get_fulcio_certs()) == len(eager.root.get_fulcio_certs())


@pytest.mark.parametrize(
    ("authority", "preload", "parsed"),
    [
        ({"keys": ["KEY"], "tlog": True}, False, False),  # gatekeeper verify with a key
        ({"keys": ["KEY"], "tlog": True}, True, True),  # the server
        ({"keyless": [KEYLESS]}, False, True),  # keyless: sigstore-python needed anyway
    ],
    ids=["cli-key", "server-key", "cli-keyless"],
)
def test_who_parses_the_root_at_start(
    make_settings: MakeSettings, private_rekor: PrivateRekor, signing_key: ec.EllipticCurvePrivateKey,
    tmp_path: Path, authority: dict[str, Any], preload: bool, parsed: bool,
) -> None:  # fmt: skip
    root_file = tmp_path / "trusted_root.json"
    root_file.write_bytes(_root_with_log(private_rekor, break_ca=False))
    if "keys" in authority:
        authority = authority | {"keys": [pem_of(signing_key)]}
    settings = make_settings(
        trusted_root=str(root_file), ecr_auth=False,
        signatures={"authorities": [{"name": "release", **authority}],
                    "images": [{"glob": "**", "authorities": ["release"]}], "version": 2},
    )  # fmt: skip
    collector = build_signature_collector(
        settings, build_registry_client(settings), preload=preload
    )
    assert collector is not None
    trust = collector._trust
    assert trust.sigstore_loaded is parsed
    assert trust.log_keys[0].key_id == hashlib.sha256(
        base64.b64decode(json.loads(root_file.read_text())["tlogs"][0]["publicKey"]["rawBytes"])
    ).hexdigest()
