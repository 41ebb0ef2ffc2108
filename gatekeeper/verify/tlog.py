"""cosign's Rekor bundle annotation (``dev.sigstore.cosign/bundle``): the SET and the body.

The annotation is ``{"SignedEntryTimestamp": b64, "Payload": {"body": b64, "integratedTime":
int, "logIndex": int, "logID": hex}}``. The SET is Rekor's signature over the RFC 8785
canonical JSON of ``Payload``; it is checked with the trusted root's Rekor key named by
``logID`` (the hex SHA-256 of the key's DER), and the key must have been valid at
``integratedTime``; then the body must describe *this* signature, *this* payload and *this* key
or certificate, or a valid entry of something else would do.

Only ``json`` and ``cryptography`` are used (the log keys come from
:mod:`gatekeeper.verify.log_keys`): ``gatekeeper verify`` with a key and ``tlog: true`` imports
no sigstore-python, and no X.509 unless the entry names a certificate.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gatekeeper.errors import ConfigurationError, VerificationError
from gatekeeper.verify.keys import load_public_key
from gatekeeper.verify.trust import TrustRoot

if TYPE_CHECKING:
    from cryptography import x509

__all__ = ["RekorEntry", "canonical_payload", "check_entry_body", "verify_rekor_bundle"]

_MAX_BUNDLE_BYTES = 256 * 1024
_CLOCK_SKEW_SECONDS = 300
#: RFC 8785 writes numbers as IEEE doubles: integers beyond 2**53 have no exact form.
_MAX_EXACT_INTEGER = 2**53 - 1
_HEX = frozenset("0123456789abcdefABCDEF")
_SET_FAILS = "tlog entry's signed timestamp does not verify"


def _reject(reason: str, message: str) -> VerificationError:
    return VerificationError(message, context={"reason": reason})


@dataclass(frozen=True, slots=True)
class RekorEntry:
    integrated_time: int
    log_index: int
    log_id: str
    body: Mapping[str, Any]


def canonical_payload(body: str, integrated_time: int, log_id: str, log_index: int) -> bytes:
    """RFC 8785 JSON of the SET's payload, as Rekor signs it and cosign's ``VerifySET``
    rebuilds it: the four members in code-point order, no whitespace. The values are a base64
    string, a hex string and two integers within +-(2**53-1) (the caller checks), for which
    RFC 8785 and ``json.dumps(sort_keys=True)`` write the same bytes."""
    document = {"body": body, "integratedTime": integrated_time, "logID": log_id,
                "logIndex": log_index}  # fmt: skip
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def verify_rekor_bundle(
    annotation: bytes, trust: TrustRoot, *, now: float | None = None
) -> RekorEntry:
    """Check the SET of a cosign Rekor bundle; return the entry it vouches for."""
    if not trust.configured:
        raise _reject("no-trust-root", "tlog verification needs a trusted root")
    if len(annotation) > _MAX_BUNDLE_BYTES:
        raise _reject("tlog-invalid", "tlog bundle is larger than the limit")
    try:
        document = json.loads(annotation)
        payload = document["Payload"]
        signed_entry_timestamp = base64.b64decode(document["SignedEntryTimestamp"], validate=True)
        body_b64 = payload["body"]
        integrated_time = payload["integratedTime"]
        log_index = payload["logIndex"]
        log_id = payload["logID"]
        if not (
            isinstance(body_b64, str)
            and type(integrated_time) is int
            and type(log_index) is int
            and isinstance(log_id, str)
        ):
            raise TypeError("wrong field types")
        if not (0 <= log_index <= _MAX_EXACT_INTEGER and 0 < integrated_time <= _MAX_EXACT_INTEGER):
            raise ValueError("index or time out of range")
        if not log_id or not set(log_id) <= _HEX or len(log_id) % 2:
            raise ValueError("logID is not hex")
        body = json.loads(base64.b64decode(body_b64, validate=True))
        if not isinstance(body, dict):
            raise TypeError("body is not an object")
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise _reject("tlog-invalid", "tlog bundle is malformed") from exc
    # A merged root (``gh attestation trusted-root``) may list one key twice: any listing counts.
    named = [k for k in trust.log_keys if k.key_id == log_id.lower()]
    if not named:
        missing = (
            f"trusted root {trust.name} has no log key {log_id.lower()}"
            if trust.log_keys
            else f"trusted root {trust.name} lists no transparency log keys"
        )
        raise _reject("tlog-invalid", f"{_SET_FAILS}: {missing}")
    usable = [k for k in named if k.problem is None]
    if not usable:
        key = named[0]
        raise _reject("tlog-invalid", f"{_SET_FAILS}: {key.describe()} in trusted root "
                      f"{trust.name} {key.problem}")  # fmt: skip
    canonical = canonical_payload(body_b64, integrated_time, log_id, log_index)
    if not usable[0].verify(signed_entry_timestamp, canonical):
        raise _reject("tlog-invalid", _SET_FAILS)
    if not any(k.valid_at(integrated_time) for k in usable):
        key = usable[0]
        integrated = datetime.fromtimestamp(integrated_time, tz=UTC).isoformat()[:-6] + "Z"
        raise _reject("tlog-invalid", f"tlog entry integrated at {integrated} is outside the "
                      f"validity of {key.describe()}: {key.validity()}")  # fmt: skip
    current = time.time() if now is None else now
    if integrated_time > current + _CLOCK_SKEW_SECONDS:
        raise _reject("tlog-invalid", "tlog entry is integrated in the future")
    return RekorEntry(integrated_time, log_index, log_id, body)


def check_entry_body(
    entry: RekorEntry,
    *,
    signature: bytes,
    payload: bytes,
    key_id: str | None = None,
    certificate: x509.Certificate | None = None,
) -> None:
    """The entry must name this signature (hashedrekord) or payload (intoto/dsse) and signer."""
    body = entry.body
    try:
        kind, spec = body["kind"], body["spec"]
        payload_sha256 = hashlib.sha256(payload).hexdigest()
        if kind == "hashedrekord":
            recorded_signature = base64.b64decode(spec["signature"]["content"])
            signer = base64.b64decode(spec["signature"]["publicKey"]["content"])
            consistent = (
                recorded_signature == signature
                and spec["data"]["hash"]["algorithm"] == "sha256"
                and spec["data"]["hash"]["value"] == payload_sha256
            )
        elif kind == "intoto":
            content = spec["content"]
            consistent = content["payloadHash"]["value"] == payload_sha256
            signatures = content["envelope"]["signatures"]
            signer = base64.b64decode(signatures[0]["publicKey"]) if signatures else b""
        elif kind == "dsse":
            consistent = spec["payloadHash"]["value"] == payload_sha256
            signatures = spec["signatures"]
            signer = base64.b64decode(signatures[0]["verifier"]) if signatures else b""
        else:
            raise _reject("tlog-mismatch", f"unsupported tlog entry kind {kind!r}")
        consistent = consistent and _signer_matches(signer, key_id, certificate)
    except VerificationError:
        raise
    except (ValueError, KeyError, TypeError, IndexError, binascii.Error, ConfigurationError) as exc:
        raise _reject("tlog-mismatch", "tlog entry body is malformed") from exc
    if not consistent:
        raise _reject("tlog-mismatch", "tlog entry describes another signature or signer")


def _signer_matches(pem: bytes, key_id: str | None, certificate: x509.Certificate | None) -> bool:
    if b"CERTIFICATE" in pem:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        recorded = x509.load_pem_x509_certificate(pem)
        if certificate is not None:
            return recorded.public_bytes(serialization.Encoding.DER) == certificate.public_bytes(
                serialization.Encoding.DER
            )
        spki = recorded.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return key_id == hashlib.sha256(spki).hexdigest()
    if certificate is not None:
        return False
    return key_id is not None and load_public_key(pem).key_id == key_id
