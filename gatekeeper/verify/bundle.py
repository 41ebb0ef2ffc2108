"""Sigstore bundles (``application/vnd.dev.sigstore.bundle*``): keyless and key-based.

Keyless bundles go through sigstore-python's ``Verifier`` (certificate chain to the Fulcio
roots at the signing time, SCT, Rekor inclusion proof/promise, signing time within the
certificate's validity) with our :class:`~gatekeeper.verify.trust.IdentityPolicy`.

sigstore-python 4.x cannot verify bundles made with a *managed key* (``publicKey`` hint
instead of a certificate), so that procedure is ours, built from the same sigstore pieces
(log-entry proof and checkpoint, SET, signed timestamps) and ``cryptography``.

:func:`gatekeeper.verify.bundle_cli.verify_bundle_for_cli` implements the sigstore-conformance
``verify-bundle`` protocol on top of :func:`verify_bundle`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.x509 import load_der_x509_certificate
from sigstore import dsse
from sigstore.errors import Error as SigstoreError
from sigstore.errors import MetadataError
from sigstore.hashes import Hashed
from sigstore.models import Bundle, TransparencyLogEntry, VerificationMaterial
from sigstore_models.bundle.v1 import Bundle as BundleDocument
from sigstore_models.common.v1 import HashAlgorithm
from sigstore_models.rekor.v1 import TransparencyLogEntry as LogEntryDocument

from gatekeeper.domain.reference import parse_digest
from gatekeeper.errors import ConfigurationError, InvalidInputError, VerificationError
from gatekeeper.verify.authority import KeylessIdentity
from gatekeeper.verify.keyless import KeylessVerifier, UntrustedMaterial
from gatekeeper.verify.keys import VerificationKey, load_public_key
from gatekeeper.verify.text import first_line as _first_line
from gatekeeper.verify.trust import CertificateIdentity, IdentityMismatch, IdentityPolicy, TrustRoot

__all__ = [
    "ArtifactInput",
    "BundleOutcome",
    "IN_TOTO_PAYLOAD_TYPE",
    "parse_in_toto_statement",
    "statement_names_digest",
    "statement_names_sha256",
    "verify_bundle",
]

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
_BUNDLE_MEDIA_TYPES = frozenset(
    {
        "application/vnd.dev.sigstore.bundle+json;version=0.1",
        "application/vnd.dev.sigstore.bundle+json;version=0.2",
        "application/vnd.dev.sigstore.bundle+json;version=0.3",
        "application/vnd.dev.sigstore.bundle.v0.3+json",
    }
)
_V01 = "application/vnd.dev.sigstore.bundle+json;version=0.1"
_MAX_BUNDLE_BYTES = 1024 * 1024
_MAX_STATEMENT_BYTES = 4 * 1024 * 1024


def _reject(reason: str, message: str) -> VerificationError:
    return VerificationError(message, context={"reason": reason})


@dataclass(frozen=True, slots=True)
class ArtifactInput:
    """What the bundle is said to sign: the bytes, or only their SHA-256.

    An in-toto subject may name the artifact by ``sha256`` or ``sha512`` (npm provenance names
    the package tarball by ``sha512`` only); ``sha512`` is known when the bytes are.
    """

    sha256: bytes
    content: bytes | None = None
    sha512: bytes | None = None

    @classmethod
    def from_bytes(cls, content: bytes) -> ArtifactInput:
        return cls(hashlib.sha256(content).digest(), content, hashlib.sha512(content).digest())

    @classmethod
    def from_digest_text(cls, text: str) -> ArtifactInput:
        digest = parse_digest(text, field="FILE_OR_DIGEST")
        if digest.algorithm != "sha256":
            raise InvalidInputError("only sha256 artifact digests are supported")
        return cls(bytes.fromhex(digest.hex))


@dataclass(frozen=True, slots=True)
class BundleOutcome:
    """A verified bundle: what it signs and who signed it."""

    content: Literal["message", "dsse"]
    payload_type: str | None
    payload: bytes | None
    identity: CertificateIdentity | None
    key_id: str | None
    tlog: Literal["verified", "not-required"]


def parse_in_toto_statement(payload: bytes) -> Mapping[str, Any]:
    """Parse an in-toto Statement (v0.1 or v1) with a size limit; raise on anything else."""
    if len(payload) > _MAX_STATEMENT_BYTES:
        raise _reject("malformed", "in-toto statement is larger than the limit")
    try:
        statement = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _reject("malformed", "in-toto statement is not JSON") from exc
    if not isinstance(statement, dict):
        raise _reject("malformed", "in-toto statement is not an object")
    if statement.get("_type") not in (
        "https://in-toto.io/Statement/v0.1",
        "https://in-toto.io/Statement/v1",
    ):
        raise _reject("malformed", "payload is not an in-toto Statement")
    subjects = statement.get("subject")
    if not isinstance(subjects, list) or not subjects:
        raise _reject("malformed", "in-toto statement has no subject")
    if not isinstance(statement.get("predicateType"), str):
        raise _reject("malformed", "in-toto statement has no predicateType")
    return statement


def statement_names_sha256(statement: Mapping[str, Any], sha256_hex: str) -> bool:
    return statement_names_digest(statement, "sha256", sha256_hex)


def _load(data: bytes) -> BundleDocument:
    if len(data) > _MAX_BUNDLE_BYTES:
        raise _reject("malformed", "bundle is larger than the limit")
    try:
        raw = json.loads(data)
        material = raw.get("verificationMaterial") if isinstance(raw, dict) else None
        if isinstance(material, dict) and "tlogEntries" not in material:
            # protobuf JSON omits empty repeated fields: cosign v3 writes no ``tlogEntries``
            # for a key-signed bundle without a transparency log.
            material["tlogEntries"] = []
            data = json.dumps(raw).encode()
        document = BundleDocument.from_json(data)
    except ValueError as exc:
        raise _reject("malformed", f"malformed bundle: {_first_line(exc)}") from exc
    if document.media_type not in _BUNDLE_MEDIA_TYPES:
        raise _reject("malformed", f"unsupported bundle media type {document.media_type!r}")
    return document


def verify_bundle(
    data: bytes,
    *,
    trust: TrustRoot,
    identities: tuple[KeylessIdentity, ...] = (),
    keys: tuple[VerificationKey, ...] = (),
    require_tlog: bool = True,
    artifact: ArtifactInput | None = None,
) -> BundleOutcome:
    """Verify a bundle against an authority's keys or identities.

    ``artifact`` binds a message signature (or a DSSE subject) to given content; without it
    the caller must bind the returned DSSE payload itself (images: the statement subject).
    Raises :class:`VerificationError` whose ``context["reason"]`` is a stable reason code.
    """
    document = _load(data)
    material = document.verification_material
    if material.public_key is not None:
        if not keys:
            raise _reject("no-key", "bundle is signed with a key, the authority trusts none")
        return _verify_with_keys(document, keys, trust, require_tlog, artifact)
    if not identities:
        raise _reject("other-key", "bundle carries a certificate, the authority trusts keys")
    if not material.tlog_entries:
        return _verify_timestamped(document, identities, trust, artifact)
    return _verify_keyless(data, identities, trust, artifact)


# -- keyless ---------------------------------------------------------------------------------


def _verify_keyless(
    data: bytes,
    identities: tuple[KeylessIdentity, ...],
    trust: TrustRoot,
    artifact: ArtifactInput | None,
) -> BundleOutcome:
    if trust.root is None:
        raise _reject("no-trust-root", "keyless verification needs a trusted root")
    try:
        bundle = Bundle.from_json(data)
    except (SigstoreError, ValueError) as exc:
        raise _reject("malformed", f"malformed bundle: {_first_line(exc)}") from exc
    policy = IdentityPolicy(identities)
    try:
        verifier = KeylessVerifier(trusted_root=trust.root, root_name=trust.name)
        if bundle._dsse_envelope is not None:
            payload_type, payload = verifier.verify_dsse(bundle, policy)
        else:
            if artifact is None:
                raise _reject("malformed", "message-signature bundle without an artifact")
            verifier.verify_artifact(_hashed(artifact), bundle, policy)
            payload_type, payload = None, None
    except SigstoreError as exc:
        raise _keyless_failure(exc, trust) from exc
    except (ValueError, KeyError, TypeError) as exc:  # malformed inner structures
        raise _reject("malformed", f"malformed bundle: {_first_line(exc)}") from exc
    if payload is not None and artifact is not None:
        _check_dsse_subject(payload_type, payload, artifact)
    return BundleOutcome(
        "dsse" if payload is not None else "message",
        payload_type,
        payload,
        policy.last_identity,
        None,
        "verified",
    )


def _verify_timestamped(
    document: BundleDocument,
    identities: tuple[KeylessIdentity, ...],
    trust: TrustRoot,
    artifact: ArtifactInput | None,
) -> BundleOutcome:
    """No transparency log entry: the time comes from a trusted timestamp authority."""
    if trust.root is None:
        raise _reject("no-trust-root", "keyless verification needs a trusted root")
    policy = IdentityPolicy(identities)
    try:
        verifier = KeylessVerifier(
            trusted_root=trust.root, root_name=trust.name, ct_exempt_cas=trust.ct_exempt_cas
        )
        payload_type, payload = verifier.verify_timestamped(
            document,
            policy,
            artifact.sha256 if artifact is not None else None,
            artifact.content if artifact is not None else None,
        )
    except SigstoreError as exc:
        raise _keyless_failure(exc, trust) from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise _reject("malformed", f"malformed bundle: {_first_line(exc)}") from exc
    if payload is not None and artifact is not None:
        _check_dsse_subject(payload_type, payload, artifact)
    return BundleOutcome(
        "dsse" if payload is not None else "message",
        payload_type,
        payload,
        policy.last_identity,
        None,
        "not-required",
    )


_MISSING_IN_ROOT = {
    # sigstore-python's MetadataError texts -> what the configured root lacks.
    "Did not find any Rekor keys in trusted root": "no transparency log",
    "CTFE keys not found in trusted root": "no CT log",
    "Fulcio certificates not found in trusted root": "no certificate authority",
}


def _keyless_failure(exc: SigstoreError, trust: TrustRoot) -> VerificationError:
    if isinstance(exc, IdentityMismatch):
        return _reject("identity-mismatch", _first_line(exc))
    if isinstance(exc, UntrustedMaterial):
        return _reject("untrusted", _first_line(exc))
    if isinstance(exc, MetadataError):
        missing = _MISSING_IN_ROOT.get(str(exc).strip(), "missing trust material")
        return _reject(
            "untrusted",
            f"{missing} in the configured trusted root ({trust.name}): {_first_line(exc)}",
        )
    return _reject("invalid", _first_line(exc))


def _hashed(artifact: ArtifactInput) -> bytes | Hashed:
    if artifact.content is not None:
        return artifact.content
    return Hashed(algorithm=HashAlgorithm.SHA2_256, digest=artifact.sha256)


def _check_dsse_subject(payload_type: str | None, payload: bytes, artifact: ArtifactInput) -> None:
    if payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise _reject("malformed", f"DSSE payload type {payload_type!r} is not in-toto")
    statement = parse_in_toto_statement(payload)
    if statement_names_sha256(statement, artifact.sha256.hex()):
        return
    if artifact.sha512 is not None and statement_names_digest(
        statement, "sha512", artifact.sha512.hex()
    ):
        return
    raise _reject(
        "digest-mismatch",
        f"in-toto subject does not name the artifact (sha256:{artifact.sha256.hex()}"
        + (f" or sha512:{artifact.sha512.hex()}" if artifact.sha512 is not None else "")
        + ")",
    )


def statement_names_digest(statement: Mapping[str, Any], algorithm: str, hex_digest: str) -> bool:
    """Some subject of the statement names ``algorithm:hex_digest`` (sha256 or sha512)."""
    for subject in statement.get("subject", []):
        digests = subject.get("digest") if isinstance(subject, Mapping) else None
        if isinstance(digests, Mapping) and digests.get(algorithm) == hex_digest:
            return True
    return False


# -- managed keys ----------------------------------------------------------------------------


class _KeyBundleView:
    """The three attributes sigstore's time establishment reads from a ``Bundle``."""

    def __init__(self, document: BundleDocument, entry: TransparencyLogEntry, signature: bytes):
        self.verification_material = VerificationMaterial(document.verification_material)
        self.log_entry = entry
        self.signature = signature


def _verify_with_keys(
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
            raise _reject("malformed", "DSSE envelope must carry exactly one signature")
        signature = envelope.signatures[0].sig
        signed = dsse._pae(envelope.payload_type, envelope.payload)
        key = next((k for k in keys if k.verify(signature, signed)), None)
        content: Literal["message", "dsse"] = "dsse"
    elif document.message_signature is not None:
        if artifact is None:
            raise _reject("malformed", "message-signature bundle without an artifact")
        signature = document.message_signature.signature
        declared = document.message_signature.message_digest
        if declared is not None and declared.digest != artifact.sha256:
            raise _reject("digest-mismatch", "bundle message digest does not match the artifact")
        key = next((k for k in keys if _verify_message(k, signature, artifact)), None)
        content = "message"
    else:
        raise _reject("malformed", "bundle has neither a message signature nor a DSSE envelope")
    if key is None:
        raise _reject("other-key", "signature does not verify with a trusted key")

    # (2) Binding: a DSSE statement must name the artifact.
    payload_type = envelope.payload_type if content == "dsse" else None
    payload = envelope.payload if content == "dsse" else None
    if payload is not None and artifact is not None:
        _check_dsse_subject(payload_type, payload, artifact)

    # (3) The transparency log: proof, checkpoint, promise, and the entry names these materials.
    entries = document.verification_material.tlog_entries or []
    if not require_tlog and not entries:
        return BundleOutcome(content, payload_type, payload, None, key.key_id, "not-required")
    if not entries:
        raise _reject("tlog-missing", "bundle has no transparency log entry")
    if len(entries) != 1:
        raise _reject("malformed", "bundle must carry exactly one transparency log entry")
    if trust.root is None:
        raise _reject("no-trust-root", "tlog verification needs a trusted root")
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
        raise _reject("tlog-invalid", f"unsupported log entry version {entry_doc.kind_version}")
    if entry_doc.inclusion_proof is None:
        if document.media_type != _V01 or entry_doc.inclusion_promise is None:
            raise _reject("tlog-invalid", "log entry has no inclusion proof")
    elif entry_doc.inclusion_proof.checkpoint is None:
        raise _reject("tlog-invalid", "inclusion proof has no checkpoint")
    if (
        document.media_type != _V01
        and entry_doc.inclusion_promise is None
        and not (
            document.verification_material.timestamp_verification_data
            and document.verification_material.timestamp_verification_data.rfc3161_timestamps
        )
    ):
        raise _reject("tlog-invalid", "log entry has neither a promise nor a signed timestamp")
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
        raise _reject("tlog-invalid", f"invalid log entry: {_first_line(exc)}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise _reject("tlog-invalid", f"malformed log entry: {_first_line(exc)}") from exc
    if not times:
        raise _reject("tlog-invalid", "no verified time for the signature")


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
            raise _reject("tlog-mismatch", "log entry kind differs from the bundle's")
        spec = body["spec"]
        if kind == "hashedrekord" and version == "0.0.1":
            if document.message_signature is None or artifact is None:
                raise _reject("tlog-mismatch", "hashedrekord entry for a non-message bundle")
            matches = (
                _b64(spec["signature"]["content"]) == signature
                and _pem_key_id(_b64(spec["signature"]["publicKey"]["content"])) == key.key_id
                and spec["data"]["hash"]["algorithm"] == "sha256"
                and spec["data"]["hash"]["value"] == artifact.sha256.hex()
            )
        elif kind == "hashedrekord" and version == "0.0.2":
            if document.message_signature is None or artifact is None:
                raise _reject("tlog-mismatch", "hashedrekord entry for a non-message bundle")
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
                raise _reject("tlog-mismatch", "dsse entry for a non-DSSE bundle")
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
            raise _reject("tlog-mismatch", f"unsupported log entry kind {kind}/{version}")
    except VerificationError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise _reject("tlog-mismatch", "log entry body is malformed") from exc
    if not matches:
        raise _reject("tlog-mismatch", "log entry is inconsistent with the bundle's materials")


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
