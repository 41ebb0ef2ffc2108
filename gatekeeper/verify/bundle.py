"""Sigstore bundles (``application/vnd.dev.sigstore.bundle*``): keyless and key-based.

The modules: this one (loading, dispatch, keyless), :mod:`~gatekeeper.verify.bundle_keys`
(managed keys), :mod:`~gatekeeper.verify.bundle_types` (artifact, outcome) and
:mod:`~gatekeeper.verify.in_toto` (statements); the names stay importable from here.

Keyless bundles go through sigstore-python's ``Verifier`` (certificate chain to the Fulcio
roots at the signing time, SCT, Rekor inclusion proof/promise, signing time within the
certificate's validity) with our :class:`~gatekeeper.verify.identity.IdentityPolicy`.

sigstore-python 4.x cannot verify bundles made with a *managed key* (``publicKey`` hint
instead of a certificate), so that procedure is ours, built from the same sigstore pieces
(log-entry proof and checkpoint, SET, signed timestamps) and ``cryptography``.

:func:`gatekeeper.verify.bundle_cli.verify_bundle_for_cli` implements the sigstore-conformance
``verify-bundle`` protocol on top of :func:`verify_bundle`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Literal

from sigstore.errors import Error as SigstoreError
from sigstore.errors import MetadataError
from sigstore.hashes import Hashed
from sigstore.models import Bundle
from sigstore_models.bundle.v1 import Bundle as BundleDocument
from sigstore_models.common.v1 import HashAlgorithm

from gatekeeper.errors import VerificationError
from gatekeeper.verify.authority import KeylessIdentity
from gatekeeper.verify.bundle_keys import BUNDLE_V01, verify_with_keys
from gatekeeper.verify.bundle_types import ArtifactInput, BundleOutcome, check_dsse_subject
from gatekeeper.verify.identity import IdentityMismatch, IdentityPolicy
from gatekeeper.verify.in_toto import (
    IN_TOTO_PAYLOAD_TYPE,
    parse_in_toto_statement,
    statement_names_digest,
    statement_names_sha256,
)
from gatekeeper.verify.in_toto import reject as _reject
from gatekeeper.verify.keyless import KeylessVerifier, UntrustedMaterial
from gatekeeper.verify.keys import VerificationKey
from gatekeeper.verify.text import first_line as _first_line
from gatekeeper.verify.trust import TrustRoot

__all__ = [
    "IN_TOTO_PAYLOAD_TYPE",
    "ArtifactInput",
    "BundleOutcome",
    "parse_in_toto_statement",
    "statement_names_digest",
    "statement_names_sha256",
    "verify_bundle",
]

_BUNDLE_MEDIA_TYPES = frozenset(
    {
        BUNDLE_V01,
        "application/vnd.dev.sigstore.bundle+json;version=0.2",
        "application/vnd.dev.sigstore.bundle+json;version=0.3",
        "application/vnd.dev.sigstore.bundle.v0.3+json",
    }
)
_MAX_BUNDLE_BYTES = 1024 * 1024


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
        return verify_with_keys(document, keys, trust, require_tlog, artifact)
    if not identities:
        raise _reject("other-key", "bundle carries a certificate, the authority trusts keys")
    if not material.tlog_entries:
        return _verify_timestamped(document, identities, trust, artifact)
    return _verify_keyless(data, identities, trust, artifact)


# -- keyless ---------------------------------------------------------------------------------

#: What establishes the signing time: the Rekor entry (``verified``), or a trusted timestamp
#: authority when the bundle carries no log entry (``not-required``).
_TimeSource = Literal["verified", "not-required"]


def _verify_keyless(
    data: bytes,
    identities: tuple[KeylessIdentity, ...],
    trust: TrustRoot,
    artifact: ArtifactInput | None,
) -> BundleOutcome:
    """A Rekor entry gives the time: sigstore-python's ``Verifier`` checks it all."""
    try:
        bundle = Bundle.from_json(data)
    except (SigstoreError, ValueError) as exc:
        raise _reject("malformed", f"malformed bundle: {_first_line(exc)}") from exc

    def verify(
        verifier: KeylessVerifier, policy: IdentityPolicy
    ) -> tuple[str | None, bytes | None]:
        if bundle._dsse_envelope is not None:
            return verifier.verify_dsse(bundle, policy)
        if artifact is None:
            raise _reject("malformed", "message-signature bundle without an artifact")
        verifier.verify_artifact(_hashed(artifact), bundle, policy)
        return None, None

    return _verify_certificate(verify, identities, trust, artifact, "verified")


def _verify_timestamped(
    document: BundleDocument,
    identities: tuple[KeylessIdentity, ...],
    trust: TrustRoot,
    artifact: ArtifactInput | None,
) -> BundleOutcome:
    """No transparency log entry: the time comes from a trusted timestamp authority."""

    def verify(
        verifier: KeylessVerifier, policy: IdentityPolicy
    ) -> tuple[str | None, bytes | None]:
        return verifier.verify_timestamped(
            document,
            policy,
            artifact.sha256 if artifact is not None else None,
            artifact.content if artifact is not None else None,
        )

    return _verify_certificate(verify, identities, trust, artifact, "not-required")


def _verify_certificate(
    verify: Callable[[KeylessVerifier, IdentityPolicy], tuple[str | None, bytes | None]],
    identities: tuple[KeylessIdentity, ...],
    trust: TrustRoot,
    artifact: ArtifactInput | None,
    time_source: _TimeSource,
) -> BundleOutcome:
    """The certificate chains to the Fulcio roots at the signing time and names one of the
    identities (``verify`` does it, from the log entry or a timestamp); then a DSSE statement
    must name the artifact, when one is given."""
    if trust.root is None:
        raise _reject("no-trust-root", "keyless verification needs a trusted root")
    policy = IdentityPolicy(identities)
    try:
        # (the CT-exempt CAs matter to timestamped bundles only: verify_timestamped)
        verifier = KeylessVerifier(
            trusted_root=trust.root, root_name=trust.name, ct_exempt_cas=trust.ct_exempt_cas
        )
        payload_type, payload = verify(verifier, policy)
    except SigstoreError as exc:
        raise _keyless_failure(exc, trust) from exc
    except (ValueError, KeyError, TypeError) as exc:  # malformed inner structures
        raise _reject("malformed", f"malformed bundle: {_first_line(exc)}") from exc
    if payload is not None and artifact is not None:
        check_dsse_subject(payload_type, payload, artifact)
    return BundleOutcome(
        "dsse" if payload is not None else "message",
        payload_type,
        payload,
        policy.last_identity,
        None,
        time_source,
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
