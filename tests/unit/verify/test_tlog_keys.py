"""cosign's Rekor bundle annotation checked with json + cryptography (issue 18): the log key
named by ``logID`` in the trusted root, its validity at ``integratedTime``, the SET over the
canonical payload, and the body against the signature.

Every real signed entry timestamp in ``tests/assets`` (41 Rekor v1 entries of the
sigstore-conformance suite and a real npm provenance bundle, re-laid as cosign annotations) is
checked by the new code and by the sigstore-python keyring the old code used (``_old_verdict``
below, the previous ``verify_rekor_bundle`` kept as the oracle): the verdicts must agree, for the
entries as recorded and tampered.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from gatekeeper.domain.reference import Digest
from gatekeeper.errors import ConfigurationError, VerificationError
from gatekeeper.verify.tlog import canonical_payload, check_entry_body, verify_rekor_bundle
from gatekeeper.verify.trust import TrustRoot
from tests.unit.verify.conftest import PrivateRekor, pem_of, sign, simple_signing_payload

ASSETS = Path(__file__).resolve().parents[2] / "assets"
CONFORMANCE = ASSETS / "sigstore-conformance" / "bundle-verify"
DIGEST = Digest("sha256", "d" * 64)
LOG_URL = "https://rekor.internal.example"


def _der(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _tlog(der: bytes, details: str, valid_for: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "baseUrl": LOG_URL,
        "hashAlgorithm": "SHA2_256",
        "publicKey": {
            "rawBytes": base64.b64encode(der).decode(),
            "keyDetails": details,
            "validFor": valid_for or {"start": "2020-01-01T00:00:00Z"},
        },
        "logId": {"keyId": base64.b64encode(hashlib.sha256(der).digest()).decode()},
    }


def _root(*tlogs: dict[str, Any], eager: bool = False) -> TrustRoot:
    document = {
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": list(tlogs),
    }
    return TrustRoot.from_json(json.dumps(document).encode(), name="private", eager=eager)


def _signed(rekor: PrivateRekor, signing_key: ec.EllipticCurvePrivateKey) -> tuple[bytes, bytes]:
    payload = simple_signing_payload(DIGEST)
    return payload, sign(signing_key, payload)


def _message(exc: pytest.ExceptionInfo[VerificationError]) -> tuple[object, str]:
    return exc.value.context.get("reason"), exc.value.message


# --- the cases the issue names, each with the message a user sees ---------------------------


def test_a_valid_entry_is_accepted_and_its_body_must_match(
    private_rekor: PrivateRekor, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    payload, signature = _signed(private_rekor, signing_key)
    bundle = private_rekor.hashedrekord_bundle(signature, payload, pem_of(signing_key))
    trust = _root(_tlog(_der(private_rekor.key), "PKIX_ECDSA_P256_SHA_256"))

    entry = verify_rekor_bundle(bundle, trust)

    assert (entry.integrated_time, entry.log_index, entry.log_id) == (
        1_700_000_000, 42, private_rekor.log_id,
    )  # fmt: skip
    key_id = hashlib.sha256(_der(signing_key)).hexdigest()
    check_entry_body(entry, signature=signature, payload=payload, key_id=key_id)


def test_a_tampered_set_does_not_verify(
    private_rekor: PrivateRekor, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    payload, signature = _signed(private_rekor, signing_key)
    document = json.loads(private_rekor.hashedrekord_bundle(signature, payload, pem_of(signing_key)))
    raw = bytearray(base64.b64decode(document["SignedEntryTimestamp"]))
    raw[-1] ^= 1
    document["SignedEntryTimestamp"] = base64.b64encode(bytes(raw)).decode()

    with pytest.raises(VerificationError) as caught:
        verify_rekor_bundle(json.dumps(document).encode(), private_rekor.trust)

    assert _message(caught) == ("tlog-invalid", "tlog entry's signed timestamp does not verify")


def test_a_tampered_payload_field_does_not_verify(
    private_rekor: PrivateRekor, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    payload, signature = _signed(private_rekor, signing_key)
    document = json.loads(private_rekor.hashedrekord_bundle(signature, payload, pem_of(signing_key)))
    document["Payload"]["logIndex"] = 43

    with pytest.raises(VerificationError) as caught:
        verify_rekor_bundle(json.dumps(document).encode(), private_rekor.trust)

    assert _message(caught) == ("tlog-invalid", "tlog entry's signed timestamp does not verify")


def test_a_set_by_a_key_the_trusted_root_does_not_list(
    private_rekor: PrivateRekor,
    signing_key: ec.EllipticCurvePrivateKey,
    other_key: ec.EllipticCurvePrivateKey,
) -> None:
    payload, signature = _signed(private_rekor, signing_key)
    stranger = PrivateRekor(other_key, private_rekor.trust)  # its own log id, its own key
    bundle = stranger.hashedrekord_bundle(signature, payload, pem_of(signing_key))

    with pytest.raises(VerificationError) as caught:
        verify_rekor_bundle(bundle, private_rekor.trust)

    assert _message(caught) == (
        "tlog-invalid",
        "tlog entry's signed timestamp does not verify: trusted root private has no log key "
        f"{stranger.log_id}",
    )


def test_a_trusted_root_without_logs(
    private_rekor: PrivateRekor, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    payload, signature = _signed(private_rekor, signing_key)
    bundle = private_rekor.hashedrekord_bundle(signature, payload, pem_of(signing_key))

    with pytest.raises(VerificationError) as caught:
        verify_rekor_bundle(bundle, _root())

    assert _message(caught) == (
        "tlog-invalid",
        "tlog entry's signed timestamp does not verify: trusted root private lists no "
        "transparency log keys",
    )


@pytest.mark.parametrize(
    ("valid_for", "integrated_time"),
    [
        ({"start": "2024-01-01T00:00:00Z", "end": "2024-12-31T00:00:00Z"}, 1_700_000_000),
        ({"start": "2020-01-01T00:00:00Z", "end": "2023-01-01T00:00:00.000Z"}, 1_700_000_000),
    ],
    ids=["before-start", "after-end"],
)
def test_an_entry_outside_the_keys_validity(
    private_rekor: PrivateRekor,
    signing_key: ec.EllipticCurvePrivateKey,
    valid_for: dict[str, str],
    integrated_time: int,
) -> None:
    payload, signature = _signed(private_rekor, signing_key)
    bundle = private_rekor.hashedrekord_bundle(
        signature, payload, pem_of(signing_key), integrated_time=integrated_time
    )
    trust = _root(_tlog(_der(private_rekor.key), "PKIX_ECDSA_P256_SHA_256", valid_for))

    with pytest.raises(VerificationError) as caught:
        verify_rekor_bundle(bundle, trust)

    start = valid_for["start"]
    end = valid_for["end"].replace(".000Z", "Z")
    assert _message(caught) == (
        "tlog-invalid",
        "tlog entry integrated at 2023-11-14T22:13:20Z is outside the validity of log key "
        f"{private_rekor.log_id} ({LOG_URL}): {start} to {end}",
    )


def test_the_validity_period_is_inclusive_at_both_ends(
    private_rekor: PrivateRekor, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    payload, signature = _signed(private_rekor, signing_key)
    at = "2023-11-14T22:13:20Z"  # 1_700_000_000
    trust = _root(
        _tlog(_der(private_rekor.key), "PKIX_ECDSA_P256_SHA_256", {"start": at, "end": at})
    )
    bundle = private_rekor.hashedrekord_bundle(signature, payload, pem_of(signing_key))

    assert verify_rekor_bundle(bundle, trust).integrated_time == 1_700_000_000


def test_a_body_that_names_another_signature(
    private_rekor: PrivateRekor, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    payload, signature = _signed(private_rekor, signing_key)
    other_payload = simple_signing_payload(Digest("sha256", "e" * 64))
    other_signature = sign(signing_key, other_payload)
    bundle = private_rekor.hashedrekord_bundle(other_signature, other_payload, pem_of(signing_key))
    entry = verify_rekor_bundle(bundle, private_rekor.trust)  # a valid entry of something else

    with pytest.raises(VerificationError) as caught:
        check_entry_body(
            entry, signature=signature, payload=payload,
            key_id=hashlib.sha256(_der(signing_key)).hexdigest(),
        )  # fmt: skip

    assert _message(caught) == (
        "tlog-mismatch", "tlog entry describes another signature or signer",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("details", "problem"),
    [
        ("PKIX_RSA_PSS_2048_SHA256", "has unsupported key details PKIX_RSA_PSS_2048_SHA256"),
        ("LMS_SHA256", "has unsupported key details LMS_SHA256"),
        ("PKIX_ED25519", "is not a valid PKIX_ED25519 key"),  # a P-256 key labelled ed25519
        ("PKIX_ECDSA_P384_SHA_384", "is not a valid PKIX_ECDSA_P384_SHA_384 key"),
    ],
)
def test_a_log_key_that_cannot_be_used_fails_closed_naming_it(
    private_rekor: PrivateRekor, signing_key: ec.EllipticCurvePrivateKey, details: str,
    problem: str,
) -> None:  # fmt: skip
    payload, signature = _signed(private_rekor, signing_key)
    bundle = private_rekor.hashedrekord_bundle(signature, payload, pem_of(signing_key))
    trust = _root(_tlog(_der(private_rekor.key), details))  # loads: other logs stay usable

    with pytest.raises(VerificationError) as caught:
        verify_rekor_bundle(bundle, trust)

    assert _message(caught) == (
        "tlog-invalid",
        f"tlog entry's signed timestamp does not verify: log key {private_rekor.log_id} "
        f"({LOG_URL}) in trusted root private {problem}",
    )


def test_an_ed25519_log_key() -> None:
    log_key = ed25519.Ed25519PrivateKey.generate()
    body = {"kind": "hashedrekord", "apiVersion": "0.0.1", "spec": {}}
    entry: dict[str, str | int] = {
        "body": base64.b64encode(json.dumps(body).encode()).decode(),
        "integratedTime": 1_700_000_000,
        "logID": hashlib.sha256(_der(log_key)).hexdigest(),
        "logIndex": 1,
    }
    set_ = log_key.sign(rfc8785.dumps(entry))
    bundle = json.dumps({"SignedEntryTimestamp": base64.b64encode(set_).decode(),
                         "Payload": entry}).encode()  # fmt: skip
    trust = _root(_tlog(_der(log_key), "PKIX_ED25519"))

    assert verify_rekor_bundle(bundle, trust).log_index == 1
    forged = json.loads(bundle)
    forged["Payload"]["integratedTime"] += 1
    with pytest.raises(VerificationError, match="^tlog entry's signed timestamp does not verify$"):
        verify_rekor_bundle(json.dumps(forged).encode(), trust)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d.update(Payload="x"), "tlog bundle is malformed"),
        (lambda d: d["Payload"].update(logID="zz"), "tlog bundle is malformed"),
        (lambda d: d["Payload"].update(logID="ab cd"), "tlog bundle is malformed"),
        (lambda d: d["Payload"].update(integratedTime=True), "tlog bundle is malformed"),
        (lambda d: d["Payload"].update(integratedTime=2**53), "tlog bundle is malformed"),
        (lambda d: d["Payload"].update(logIndex=-1), "tlog bundle is malformed"),
        (lambda d: d["Payload"].update(body="not base64!"), "tlog bundle is malformed"),
        (lambda d: d.update(SignedEntryTimestamp="%%"), "tlog bundle is malformed"),
        (lambda d: d["Payload"].pop("logIndex"), "tlog bundle is malformed"),
    ],
    ids=["payload-string", "logid-not-hex", "logid-space", "time-bool", "time-beyond-2^53",
         "negative-index", "body-not-base64", "set-not-base64", "no-index"],
)  # fmt: skip
def test_malformed_bundles_fail_closed(
    private_rekor: PrivateRekor, signing_key: ec.EllipticCurvePrivateKey, mutate: Any,
    expected: str,
) -> None:  # fmt: skip
    payload, signature = _signed(private_rekor, signing_key)
    document = json.loads(private_rekor.hashedrekord_bundle(signature, payload, pem_of(signing_key)))
    mutate(document)

    with pytest.raises(VerificationError) as caught:
        verify_rekor_bundle(json.dumps(document).encode(), private_rekor.trust)

    assert _message(caught) == ("tlog-invalid", expected)


def test_no_trusted_root(private_rekor: PrivateRekor) -> None:
    with pytest.raises(VerificationError) as caught:
        verify_rekor_bundle(b"{}", TrustRoot.none())
    assert _message(caught) == ("no-trust-root", "tlog verification needs a trusted root")


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda t: t["publicKey"].update(rawBytes="%%%"), "tlogs.0.publicKey.rawBytes: not base64"),
        (lambda t: t["publicKey"].pop("keyDetails"),
         "tlogs.0.publicKey.keyDetails: missing or not a string"),
        (lambda t: t["publicKey"].update(validFor={}), "tlogs.0.publicKey.validFor.start: missing"),
        (lambda t: t["publicKey"].update(validFor={"start": "yesterday"}),
         "tlogs.0.publicKey.validFor.start: 'yesterday' is not an RFC 3339 time"),
        (lambda t: t["publicKey"].update(validFor={"start": "2024-01-01T00:00:00"}),
         "tlogs.0.publicKey.validFor.start: '2024-01-01T00:00:00' has no time zone"),
        (lambda t: t["publicKey"].update(
            validFor={"start": "2024-01-01T00:00:00Z", "end": "2023-01-01T00:00:00Z"}),
         "tlogs.0.publicKey.validFor.end: before start"),
        (lambda t: t.pop("publicKey"), "tlogs.0.publicKey: not an object"),
        (lambda t: t.pop("baseUrl"), "tlogs.0.baseUrl: missing or not a string"),
    ],
    ids=["raw-not-base64", "no-details", "no-start", "bad-time", "naive-time", "end-before-start",
         "no-public-key", "no-base-url"],
)  # fmt: skip
def test_a_malformed_log_in_the_trusted_root_is_a_configuration_error(
    private_rekor: PrivateRekor, change: Any, problem: str
) -> None:
    tlog = _tlog(_der(private_rekor.key), "PKIX_ECDSA_P256_SHA_256")
    change(tlog)

    with pytest.raises(ConfigurationError) as caught:
        _root(tlog)

    assert caught.value.message == f"private is not a valid Sigstore trusted root: {problem}"


# --- the old implementation as the oracle, over every recorded SET ---------------------------


def _old_verdict(annotation: bytes, trust: TrustRoot, now: float) -> str:
    """The previous ``verify_rekor_bundle`` (sigstore-python's Rekor keyring): ``ok`` or the
    reason it failed."""
    from sigstore._internal.trust import KeyringPurpose
    from sigstore._utils import KeyID
    from sigstore.errors import Error as SigstoreError

    assert trust.root is not None
    try:
        document = json.loads(annotation)
        payload = document["Payload"]
        signed_entry_timestamp = base64.b64decode(document["SignedEntryTimestamp"], validate=True)
        if not (
            isinstance(payload["body"], str)
            and isinstance(payload["integratedTime"], int)
            and isinstance(payload["logIndex"], int)
            and isinstance(payload["logID"], str)
        ):
            raise TypeError("wrong field types")
        if payload["logIndex"] < 0 or payload["integratedTime"] <= 0:
            raise ValueError("negative index or time")
        key_id = bytes.fromhex(payload["logID"])
        if not isinstance(json.loads(base64.b64decode(payload["body"], validate=True)), dict):
            raise TypeError("body is not an object")
    except (ValueError, KeyError, TypeError):
        return "tlog bundle is malformed"
    canonical = rfc8785.dumps({k: payload[k] for k in ("body", "integratedTime", "logID",
                                                       "logIndex")})  # fmt: skip
    try:
        trust.root.rekor_keyring(KeyringPurpose.VERIFY).verify(
            key_id=KeyID(key_id), signature=signed_entry_timestamp, data=canonical
        )
    except SigstoreError:
        return "set"
    if payload["integratedTime"] > now + 300:
        return "future"
    return "ok"


def _new_verdict(annotation: bytes, trust: TrustRoot, now: float) -> str:
    try:
        verify_rekor_bundle(annotation, trust, now=now)
    except VerificationError as exc:
        if exc.message.startswith("tlog entry's signed timestamp does not verify"):
            return "set"
        if exc.message == "tlog entry is integrated in the future":
            return "future"
        return exc.message
    return "ok"


def _recorded_entries() -> list[tuple[str, bytes, Path | None]]:
    """(name, cosign annotation, the case's own trusted root) for every v1 entry with a SET."""
    found = []
    for path in sorted(ASSETS.glob("sigstore-*/**/*.json")):
        try:
            bundle = json.loads(path.read_bytes())
        except ValueError:
            continue
        if not isinstance(bundle, dict):
            continue
        material = bundle.get("verificationMaterial") or {}
        for entry in material.get("tlogEntries") or []:
            promise = entry.get("inclusionPromise")
            if not promise:
                continue
            annotation = json.dumps({
                "SignedEntryTimestamp": promise["signedEntryTimestamp"],
                "Payload": {
                    "body": entry["canonicalizedBody"],
                    "integratedTime": int(entry["integratedTime"]),
                    "logIndex": int(entry["logIndex"]),
                    "logID": base64.b64decode(entry["logId"]["keyId"]).hex(),
                },
            }).encode()  # fmt: skip
            own = path.parent / "trusted_root.json"
            found.append((str(path.relative_to(ASSETS)), annotation, own if own.exists() else None))
    return found


RECORDED = _recorded_entries()


def _tampered(annotation: bytes) -> bytes:
    document = json.loads(annotation)
    raw = bytearray(base64.b64decode(document["SignedEntryTimestamp"]))
    raw[len(raw) // 2] ^= 0x40
    document["SignedEntryTimestamp"] = base64.b64encode(bytes(raw)).decode()
    return json.dumps(document).encode()


def test_every_recorded_entry_is_found() -> None:
    assert len(RECORDED) >= 41


@pytest.fixture(scope="module")
def shipped_roots() -> dict[str, TrustRoot]:
    return {"public-good": TrustRoot.public_good(), "staging": TrustRoot.staging()}


@pytest.mark.parametrize(("name", "annotation", "own_root"), RECORDED, ids=[r[0] for r in RECORDED])
def test_recorded_entries_get_the_old_verdict(
    name: str, annotation: bytes, own_root: Path | None, shipped_roots: dict[str, TrustRoot]
) -> None:
    roots = dict(shipped_roots)
    if own_root is not None:
        roots["own"] = TrustRoot.from_json(own_root.read_bytes(), name="own")
    now = time.time()
    payload = json.loads(annotation)["Payload"]
    assert canonical_payload(
        payload["body"], payload["integratedTime"], payload["logID"], payload["logIndex"]
    ) == rfc8785.dumps(payload)
    verdicts = {}
    for root_name, trust in roots.items():
        for variant, data in (("recorded", annotation), ("tampered", _tampered(annotation))):
            old, new = _old_verdict(data, trust, now), _new_verdict(data, trust, now)
            verdicts[root_name, variant] = (old, new)
    assert {key: old for key, (old, _) in verdicts.items()} == {
        key: new for key, (_, new) in verdicts.items()
    }
    assert all(new != "ok" for (_, variant), (_, new) in verdicts.items() if variant == "tampered")


def test_recorded_entries_verify_somewhere(shipped_roots: dict[str, TrustRoot]) -> None:
    """The oracle comparison is not vacuous: most recorded SETs verify with a shipped root."""
    now = time.time()
    verified = [
        name for name, annotation, own_root in RECORDED
        if any(_new_verdict(annotation, trust, now) == "ok" for trust in (
            *shipped_roots.values(),
            *([TrustRoot.from_json(own_root.read_bytes())] if own_root else []),
        ))
    ]  # fmt: skip
    assert len(verified) >= 35, verified


def test_a_key_listed_twice_counts_in_either_period(
    private_rekor: PrivateRekor, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    """A merged root (public-good plus another document) may list one log key twice."""
    payload, signature = _signed(private_rekor, signing_key)
    bundle = private_rekor.hashedrekord_bundle(signature, payload, pem_of(signing_key))
    der = _der(private_rekor.key)
    early = {"start": "2020-01-01T00:00:00Z", "end": "2021-01-01T00:00:00Z"}
    late = {"start": "2023-01-01T00:00:00Z"}

    assert verify_rekor_bundle(bundle, _root(
        _tlog(der, "PKIX_ECDSA_P256_SHA_256", early), _tlog(der, "PKIX_ECDSA_P256_SHA_256", late)
    )).log_index == 42  # fmt: skip
    with pytest.raises(VerificationError, match="is outside the validity of log key"):
        verify_rekor_bundle(bundle, _root(_tlog(der, "PKIX_ECDSA_P256_SHA_256", early)))
