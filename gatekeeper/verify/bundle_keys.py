"""Sigstore bundles signed with a managed key: the procedure sigstore-python 4.x lacks."""

# Built from the same sigstore pieces (log-entry proof and checkpoint, SET, signed timestamps)
# and ``cryptography``; the steps are numbered in :func:`verify_with_keys`.

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.x509 import load_der_x509_certificate
from sigstore import dsse
from sigstore.errors import Error as SigstoreError
from sigstore.models import TransparencyLogEntry, VerificationMaterial
from sigstore_models.bundle.v1 import Bundle as BundleDocument
from sigstore_models.rekor.v1 import TransparencyLogEntry as LogEntryDocument

from gatekeeper.errors import ConfigurationError, VerificationError
from gatekeeper.verify.bundle_types import ArtifactInput, BundleOutcome, check_dsse_subject
from gatekeeper.verify.in_toto import reject
from gatekeeper.verify.keyless import KeylessVerifier
from gatekeeper.verify.keys import VerificationKey, load_public_key
from gatekeeper.verify.text import first_line as _first_line
from gatekeeper.verify.trust import TrustRoot

__all__ = ["BUNDLE_V01", "verify_with_keys"]

BUNDLE_V01 = "application/vnd.dev.sigstore.bundle+json;version=0.1"


class _KeyBundleView:
    """The three attributes sigstore's time establishment reads from a ``Bundle``."""

    def __init__(self, document: BundleDocument, entry: TransparencyLogEntry, signature: bytes):
        self.verification_material = VerificationMaterial(document.verification_material)
        self.log_entry = entry
        self.signature = signature


def verify_with_keys(
    document: BundleDocument,
    keys: tuple[VerificationKey, ...],
    trust: TrustRoot,
    require_tlog: bool,
    artifact: ArtifactInput | None,
) -> BundleOutcome:
    # (1) The signature: a message signature over the artifact, or one DSSE signature.
    if document.dsse_envelope is not None:
        envelope = document.dsse_envelope
        if len(envelope.signatures) != 1 or not envelope.signatures[0].sig:
            raise reject("malformed", "DSSE envelope must carry exactly one signature")
        signature = envelope.signatures[0].sig
        signed = dsse._pae(envelope.payload_type, envelope.payload)
        key = next((k for k in keys if k.verify(signature, signed)), None)
        content: Literal["message", "dsse"] = "dsse"
    elif document.message_signature is not None:
        if artifact is None:
            raise reject("malformed", "message-signature bundle without an artifact")
        signature = document.message_signature.signature
        declared = document.message_signature.message_digest
        if declared is not None and declared.digest != artifact.sha256:
            raise reject("digest-mismatch", "bundle message digest does not match the artifact")
        key = next((k for k in keys if _verify_message(k, signature, artifact)), None)
        content = "message"
    else:
        raise reject("malformed", "bundle has neither a message signature nor a DSSE envelope")
    if key is None:
        raise reject("other-key", "signature does not verify with a trusted key")

    # (2) Binding: a DSSE statement must name the artifact.
    payload_type = envelope.payload_type if content == "dsse" else None
    payload = envelope.payload if content == "dsse" else None
    if payload is not None and artifact is not None:
        check_dsse_subject(payload_type, payload, artifact)

    # (3) The transparency log: proof, checkpoint, promise, and the entry names these materials.
    entries = document.verification_material.tlog_entries or []
    if not require_tlog and not entries:
        return BundleOutcome(content, payload_type, payload, None, key.key_id, "not-required")
    if not entries:
        raise reject("tlog-missing", "bundle has no transparency log entry")
    if len(entries) != 1:
        raise reject("malformed", "bundle must carry exactly one transparency log entry")
    if trust.root is None:
        raise reject("no-trust-root", "tlog verification needs a trusted root")
    _verify_log_entry(document, entries[0], signature, trust)
    _check_entry_body(entries[0], key, signature, document, artifact)
    return BundleOutcome(content, payload_type, payload, None, key.key_id, "verified")


def _verify_message(key: VerificationKey, signature: bytes, artifact: ArtifactInput) -> bool:
    if artifact.content is not None:
        return key.verify(signature, artifact.content)
    return key.verify_prehashed(signature, artifact.sha256, "sha256")


def _verify_log_entry(
    document: BundleDocument, entry_doc: LogEntryDocument, signature: bytes, trust: TrustRoot
) -> None:
    assert trust.root is not None
    from sigstore._internal.trust import KeyringPurpose

    if entry_doc.kind_version.version not in ("0.0.1", "0.0.2"):
        raise reject("tlog-invalid", f"unsupported log entry version {entry_doc.kind_version}")
    if entry_doc.inclusion_proof is None:
        if document.media_type != BUNDLE_V01 or entry_doc.inclusion_promise is None:
            raise reject("tlog-invalid", "log entry has no inclusion proof")
    elif entry_doc.inclusion_proof.checkpoint is None:
        raise reject("tlog-invalid", "inclusion proof has no checkpoint")
    if (
        document.media_type != BUNDLE_V01
        and entry_doc.inclusion_promise is None
        and not (
            document.verification_material.timestamp_verification_data
            and document.verification_material.timestamp_verification_data.rfc3161_timestamps
        )
    ):
        raise reject("tlog-invalid", "log entry has neither a promise nor a signed timestamp")
    entry = TransparencyLogEntry(entry_doc)
    keyring = trust.root.rekor_keyring(KeyringPurpose.VERIFY)
    try:
        if entry_doc.inclusion_proof is not None:
            entry._verify(keyring)
        else:
            entry._verify_set(keyring)
        verifier = KeylessVerifier(trusted_root=trust.root, root_name=trust.name)
        times = verifier._establish_time(
            _KeyBundleView(document, entry, signature)  # type: ignore[arg-type]
        )
    except SigstoreError as exc:
        raise reject("tlog-invalid", f"invalid log entry: {_first_line(exc)}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise reject("tlog-invalid", f"malformed log entry: {_first_line(exc)}") from exc
    if not times:
        raise reject("tlog-invalid", "no verified time for the signature")


def _check_entry_body(
    entry_doc: LogEntryDocument,
    key: VerificationKey,
    signature: bytes,
    document: BundleDocument,
    artifact: ArtifactInput | None,
) -> None:
    """(8) The log entry must describe these materials (defeats CVE-2022-36056 variants)."""
    try:
        body = json.loads(entry_doc.canonicalized_body)
        kind, version = entry_doc.kind_version.kind, entry_doc.kind_version.version
        if body.get("kind") != kind or body.get("apiVersion") != version:
            raise reject("tlog-mismatch", "log entry kind differs from the bundle's")
        spec = body["spec"]
        if kind == "hashedrekord" and version == "0.0.1":
            if document.message_signature is None or artifact is None:
                raise reject("tlog-mismatch", "hashedrekord entry for a non-message bundle")
            matches = (
                _b64(spec["signature"]["content"]) == signature
                and _pem_key_id(_b64(spec["signature"]["publicKey"]["content"])) == key.key_id
                and spec["data"]["hash"]["algorithm"] == "sha256"
                and spec["data"]["hash"]["value"] == artifact.sha256.hex()
            )
        elif kind == "hashedrekord" and version == "0.0.2":
            if document.message_signature is None or artifact is None:
                raise reject("tlog-mismatch", "hashedrekord entry for a non-message bundle")
            record = spec["hashedRekordV002"]
            matches = (
                _b64(record["signature"]["content"]) == signature
                and _der_key_id(_b64(record["signature"]["verifier"]["publicKey"]["rawBytes"]))
                == key.key_id
                and _b64(record["data"]["digest"]) == artifact.sha256
            )
        elif kind == "dsse" and version == "0.0.1":
            envelope = document.dsse_envelope
            if envelope is None:
                raise reject("tlog-mismatch", "dsse entry for a non-DSSE bundle")
            content = spec
            signatures = content["signatures"]
            matches = (
                content["payloadHash"]["algorithm"] == "sha256"
                and content["payloadHash"]["value"] == hashlib.sha256(envelope.payload).hexdigest()
                and len(signatures) == 1
                and _b64(signatures[0]["signature"]) == signature
                and _pem_key_id(_b64(signatures[0]["verifier"])) == key.key_id
            )
        else:
            raise reject("tlog-mismatch", f"unsupported log entry kind {kind}/{version}")
    except VerificationError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise reject("tlog-mismatch", "log entry body is malformed") from exc
    if not matches:
        raise reject("tlog-mismatch", "log entry is inconsistent with the bundle's materials")


def _b64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def _der_key_id(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def _pem_key_id(pem: bytes) -> str:
    """Key id of a PEM public key *or* certificate (its SubjectPublicKeyInfo)."""
    if b"CERTIFICATE" in pem:
        certificate = load_der_x509_certificate(
            base64.b64decode(b"".join(pem.strip().splitlines()[1:-1]))
        )
        der = certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return _der_key_id(der)
    try:
        return load_public_key(pem).key_id
    except ConfigurationError as exc:
        raise ValueError("unsupported key in log entry") from exc
