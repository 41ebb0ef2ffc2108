"""Who signed a cosign candidate: an authority's key or Fulcio certificate, and its log entry."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gatekeeper.errors import ConfigurationError, VerificationError
from gatekeeper.verify.authority import Authority
from gatekeeper.verify.cosign_results import Check, fail, reason_of
from gatekeeper.verify.keys import VerificationKey, load_public_key
from gatekeeper.verify.text import shorten
from gatekeeper.verify.trust import (
    TrustRoot,
    certificate_identity,
    identity_mismatch_message,
)

# sigstore-python (and the modules built on it: keyless) is imported where a keyless
# certificate needs it: a key-based check never does, with or without ``tlog`` (the Rekor
# bundle is checked by :mod:`gatekeeper.verify.tlog` with ``cryptography`` alone), and
# ``gatekeeper verify`` starts ~0.3 s sooner without it.
if TYPE_CHECKING:
    from cryptography import x509

    from gatekeeper.verify.keyless import KeylessVerifier

__all__ = ["SignerChecks"]


class SignerChecks:
    """Steps (1) and (3) of :mod:`gatekeeper.verify.cosign` for one signature: who signed, and
    the transparency-log entry. Holds the parsed trust root."""

    def __init__(self, trust: TrustRoot) -> None:
        self._trust = trust
        self._keyless: KeylessVerifier | None = None
        if trust.sigstore_loaded:  # the server's root: built now, not in a first evaluation
            self._keyless_verifier()

    def _keyless_verifier(self) -> KeylessVerifier | None:
        if self._keyless is None and self._trust.root is not None:
            from gatekeeper.verify.keyless import KeylessVerifier

            self._keyless = KeylessVerifier(
                trusted_root=self._trust.root, root_name=self._trust.name
            )
        return self._keyless

    def signer(
        self,
        authority: Authority,
        signature: bytes,
        message: bytes,
        certificate_pem: bytes | None,
        rekor_bundle: bytes | None,
        source: str,
    ) -> tuple[Check | None, dict[str, Any], str]:
        """Step (1) and (3): who signed, and the log entry. Returns (failure, signer, tlog)."""
        key = next((k for k in authority.keys if k.verify(signature, message)), None)
        if key is not None:
            signer: dict[str, Any] = {"key_id": key.key_id, "algorithm": key.algorithm}
            if not authority.tlog:
                return None, signer, "not-required"
            failure = self._tlog(rekor_bundle, signature, message, source, key=key)
            return failure, signer, "verified" if failure is None else "failed"
        if certificate_pem is not None and authority.identities:
            return self._keyless_signer(
                authority, signature, message, certificate_pem, rekor_bundle, source
            )
        if certificate_pem is not None:
            return (
                fail("other-key", "signed by a certificate, authority trusts keys", source),
                {},
                "",
            )
        return (
            fail("other-key", "signature does not verify with the authority's keys", source),
            {},
            "",
        )

    def _tlog(
        self,
        rekor_bundle: bytes | None,
        signature: bytes,
        message: bytes,
        source: str,
        *,
        key: VerificationKey | None = None,
        certificate: x509.Certificate | None = None,
    ) -> Check | None:
        if rekor_bundle is None:
            return fail("tlog-missing", "no transparency log entry with the signature", source)
        from gatekeeper.verify.tlog import check_entry_body, verify_rekor_bundle

        try:
            entry = verify_rekor_bundle(rekor_bundle, self._trust)
            check_entry_body(
                entry, signature=signature, payload=_logged_payload(message),
                key_id=key.key_id if key else None, certificate=certificate,
            )  # fmt: skip
        except VerificationError as exc:
            return fail(reason_of(exc, "tlog-invalid"), exc.message, source)
        return None

    def _keyless_signer(
        self,
        authority: Authority,
        signature: bytes,
        message: bytes,
        certificate_pem: bytes,
        rekor_bundle: bytes | None,
        source: str,
    ) -> tuple[Check | None, dict[str, Any], str]:
        keyless = self._keyless_verifier()
        if keyless is None or self._trust.root is None:
            return fail("no-trust-root", "keyless needs a trusted root", source), {}, ""
        from cryptography import x509
        from cryptography.x509.oid import ExtendedKeyUsageOID
        from sigstore._internal.sct import verify_sct
        from sigstore._internal.timestamp import TimestampSource, TimestampVerificationResult
        from sigstore._internal.trust import KeyringPurpose
        from sigstore.errors import Error as SigstoreError

        from gatekeeper.verify.identity import IdentityPolicy
        from gatekeeper.verify.tlog import check_entry_body, verify_rekor_bundle

        try:
            certificate = x509.load_pem_x509_certificate(certificate_pem)
        except ValueError:
            return (
                fail("malformed", "certificate annotation is not a PEM certificate", source),
                {},
                "",
            )
        identity = certificate_identity(certificate)
        signer = identity.as_evidence()
        if rekor_bundle is None:
            return (
                fail("tlog-missing", "keyless signature without tlog entry", source),
                signer,
                "missing",
            )
        try:
            entry = verify_rekor_bundle(rekor_bundle, self._trust)
        except VerificationError as exc:
            return fail(reason_of(exc, "tlog-invalid"), exc.message, source), signer, "failed"
        signed_at = datetime.fromtimestamp(entry.integrated_time, tz=UTC)
        try:
            # (a) chain to the Fulcio roots at the signing time, (b) SCT, (c) code signing.
            chain = keyless._verify_chain_at_time(
                certificate,
                TimestampVerificationResult(
                    source=TimestampSource.TRANSPARENCY_SERVICE, time=signed_at
                ),
            )
            verify_sct(certificate, chain, self._trust.root.ct_keyring(KeyringPurpose.VERIFY))
            usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            if ExtendedKeyUsageOID.CODE_SIGNING not in usage:
                raise VerificationError("certificate is not for code signing")
        except (SigstoreError, VerificationError, x509.ExtensionNotFound) as exc:
            return fail("untrusted-certificate", shorten(str(exc)), source), signer, "verified"
        try:
            IdentityPolicy(authority.identities).verify(certificate)
        except SigstoreError:
            detail = identity_mismatch_message(authority.identities, identity)
            return fail("identity-mismatch", detail, source), signer, "verified"
        if not (certificate.not_valid_before_utc <= signed_at <= certificate.not_valid_after_utc):
            return fail("untrusted-certificate", "signed outside the certificate's validity",
                         source), signer, "verified"  # fmt: skip
        if not _verify_with_certificate(certificate, signature, message):
            return (
                fail("invalid", "signature does not verify with its certificate", source),
                signer,
                "",
            )
        try:
            check_entry_body(
                entry, signature=signature, payload=_logged_payload(message),
                certificate=certificate,
            )  # fmt: skip
        except VerificationError as exc:
            return fail(reason_of(exc, "tlog-mismatch"), exc.message, source), signer, "failed"
        return None, signer, "verified"


def _logged_payload(message: bytes) -> bytes:
    """What Rekor hashed: the simple-signing payload itself, or a DSSE envelope's payload."""
    if message.startswith(b"DSSEv1 "):
        # PAE = "DSSEv1" SP len(type) SP type SP len(body) SP body
        _, type_length, rest = message.split(b" ", 2)
        rest = rest[int(type_length) + 1 :]
        body_length, body = rest.split(b" ", 1)
        if int(body_length) == len(body):
            return body
    return message


def _verify_with_certificate(
    certificate: x509.Certificate, signature: bytes, message: bytes
) -> bool:
    from cryptography.hazmat.primitives import serialization

    pem = certificate.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        return load_public_key(pem).verify(signature, message)
    except ConfigurationError:
        return False
