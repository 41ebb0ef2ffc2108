"""sigstore-python's ``Verifier`` with the differences real bundles and the conformance suite need.

1. A timestamp authority's validity window ends *inclusively* (sigstore-python 4.5 compares
   ``gen_time < end``; the trusted-root specification and the conformance case
   ``trust-root-tsa-validity-end-inclusive`` make the end inclusive, as it is for Rekor keys).
2. Rekor ``intoto/0.0.2`` entries (npm provenance from sigstore-js, cosign's older
   attestations) are accepted: their integrated time establishes the signing time, and their
   body must name the envelope's payload hash, signature and certificate. Public-good Rekor
   stores these bodies *without* the payload (only its SHA-256); when a body does carry the
   payload it must be the envelope's (conformance case ``intoto-with-custom-trust-root``).
3. Bundles with no transparency log entry and an RFC 3161 timestamp (GitHub attestations made
   with GitHub's own Fulcio and timestamp authority) are verified by :meth:`verify_timestamped`:
   the signed timestamp from a trusted TSA is the verified time; chain, identity, signature as
   upstream. The CT (SCT) check applies when the trusted root lists CT logs (public-good does;
   GitHub's root has none and its certificates carry no SCT).
4. A root without a transparency log or without certificate authorities is usable, and a
   signature that fails for lack of trust raises :class:`UntrustedMaterial` saying which
   authority the configured trusted root lacks.

Everything else is the upstream procedure. sigstore is pinned ``<5`` in pyproject because
these overrides use its private methods.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.x509 import load_pem_x509_certificate
from cryptography.x509.oid import ExtendedKeyUsageOID
from rfc3161_client import TimeStampResponse, VerifierBuilder
from rfc3161_client import VerificationError as Rfc3161VerificationError
from sigstore import dsse
from sigstore._internal.sct import verify_sct
from sigstore._internal.timestamp import TimestampSource, TimestampVerificationResult
from sigstore._internal.trust import KeyringPurpose
from sigstore.errors import Error as SigstoreError
from sigstore.errors import MetadataError
from sigstore.errors import VerificationError as SigstoreVerificationError
from sigstore.models import Bundle, TimestampVerificationData, TrustedRoot
from sigstore.verify.policy import VerificationPolicy
from sigstore.verify.verifier import Verifier
from sigstore_models.bundle.v1 import Bundle as BundleDocument

__all__ = ["KeylessVerifier", "UntrustedMaterial"]

_MAX_TIMESTAMPS = 32


class UntrustedMaterial(SigstoreVerificationError):
    """The bundle may be sound, but the configured trusted root does not vouch for it."""


def _b64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


class KeylessVerifier(Verifier):
    """sigstore's ``Verifier`` with the differences listed in the module docstring."""

    def __init__(
        self,
        *,
        trusted_root: TrustedRoot,
        root_name: str = "trusted root",
        ct_exempt_cas: frozenset[str] = frozenset(),
    ) -> None:
        # Upstream refuses roots without a transparency log (it builds an online Rekor client
        # we never use) and without CAs; here they fail later, per bundle, saying what lacks.
        try:
            self._fulcio_certificate_chain = trusted_root.get_fulcio_certs()
        except MetadataError:
            self._fulcio_certificate_chain = []
        self._trusted_root = trusted_root
        self.root_name = root_name
        self._ct_exempt_cas = ct_exempt_cas

    def _verify_chain_at_time(
        self, certificate: x509.Certificate, timestamp_result: TimestampVerificationResult
    ) -> list[x509.Certificate]:
        issuer = certificate.issuer.rfc4514_string()
        at = timestamp_result.time.strftime("%Y-%m-%dT%H:%M:%SZ")
        if not self._fulcio_certificate_chain:
            raise UntrustedMaterial(
                f"no certificate authority in the configured trusted root ({self.root_name}): "
                f"cannot trust the signing certificate issued by {issuer}"
            )
        try:
            return super()._verify_chain_at_time(certificate, timestamp_result)
        except SigstoreError as exc:
            raise UntrustedMaterial(
                f"no certificate authority in the configured trusted root ({self.root_name}) "
                f"issued the signing certificate (issuer {issuer}) valid at {at}"
            ) from exc

    def _verify_signed_timestamp(
        self, timestamp_response: TimeStampResponse, message: bytes
    ) -> TimestampVerificationResult | None:
        for authority in self._trusted_root.get_timestamp_authorities():
            certificates = authority.certificates(allow_expired=True)
            if len(certificates) < 2:
                continue
            builder = (
                VerifierBuilder()
                .tsa_certificate(certificates[0])
                .add_root_certificate(certificates[-1])
            )
            for certificate in certificates[1:-1]:
                builder = builder.add_intermediate_certificate(certificate)
            try:
                builder.build().verify_message(timestamp_response, message)
            except Rfc3161VerificationError:
                continue
            generated = timestamp_response.tst_info.gen_time
            end = authority.validity_period_end
            if authority.validity_period_start <= generated and (end is None or generated <= end):
                return TimestampVerificationResult(
                    source=TimestampSource.TIMESTAMP_AUTHORITY, time=generated
                )
        return None

    def _establish_time(self, bundle: Bundle) -> list[TimestampVerificationResult]:
        # Upstream refuses the integrated time of ``intoto/0.0.2`` entries (cosign's older
        # attestation entries); they carry the same signed promise, so accept them too.
        kind_version = bundle.log_entry._inner.kind_version
        if (kind_version.kind, kind_version.version) != ("intoto", "0.0.2"):
            return super()._establish_time(bundle)
        results = (
            [result for result in self._verify_timestamp_authority(bundle)]
            if bundle.verification_material.timestamp_verification_data
            else []
        )
        entry = bundle.log_entry._inner
        if entry.integrated_time and entry.inclusion_promise:
            results.append(
                TimestampVerificationResult(
                    source=TimestampSource.TRANSPARENCY_SERVICE,
                    time=datetime.fromtimestamp(entry.integrated_time, tz=UTC),
                )
            )
        return results

    def verify_dsse(self, bundle: Bundle, policy: VerificationPolicy) -> tuple[str, bytes]:
        kind_version = bundle.log_entry._inner.kind_version
        if (kind_version.kind, kind_version.version) != ("intoto", "0.0.2"):
            return super().verify_dsse(bundle, policy)
        # (1)-(6) as upstream; (7) the envelope signature; (8) the intoto entry names it.
        self._verify_common_signing_cert(bundle, policy)
        envelope = bundle._dsse_envelope
        if envelope is None:
            raise SigstoreVerificationError("intoto entry for a bundle without DSSE envelope")
        signing_key = bundle.signing_certificate.public_key()
        dsse._verify(signing_key, envelope)  # type: ignore[arg-type]
        _check_intoto_v002_body(
            bundle, envelope._inner.payload_type, envelope._inner.payload, envelope.signature
        )
        return envelope._inner.payload_type, envelope._inner.payload

    def _ct_exempt(self, chain: list[x509.Certificate]) -> bool:
        """The chain ends at a CA from a trusted-root document without CT logs."""
        return bool(chain) and _fingerprint(chain[-1]) in self._ct_exempt_cas

    def verify_timestamped(
        self,
        document: BundleDocument,
        policy: VerificationPolicy,
        message_sha256: bytes | None,
        message: bytes | None = None,
    ) -> tuple[str | None, bytes | None]:
        """Verify a bundle without a transparency log entry, timed by RFC 3161 timestamps.

        ``message_sha256`` (and, when known, ``message``) is the artifact a message signature
        signs; unused for DSSE. Returns the DSSE payload type and payload, or
        ``(None, None)`` for a message signature.
        """
        material = document.verification_material
        certificate = _signing_certificate(document)
        envelope = document.dsse_envelope
        if envelope is not None:
            if len(envelope.signatures) != 1:
                raise SigstoreVerificationError("DSSE envelope must carry exactly one signature")
            signature = envelope.signatures[0].sig
        elif document.message_signature is not None:
            signature = document.message_signature.signature
        else:
            raise SigstoreVerificationError("bundle has neither a message signature nor DSSE")
        # (0) The time: a signed timestamp over the signature from a trusted TSA.
        data = material.timestamp_verification_data
        if data is None or not data.rfc3161_timestamps:
            raise SigstoreVerificationError(
                "bundle has neither a transparency log entry nor a signed timestamp"
            )
        if not self._trusted_root.get_timestamp_authorities():
            raise UntrustedMaterial(
                f"no trusted timestamp authority in the configured trusted root "
                f"({self.root_name}) for a bundle without a transparency log entry"
            )
        responses = TimestampVerificationData(data).rfc3161_timestamps
        if len(responses) > _MAX_TIMESTAMPS:
            raise SigstoreVerificationError(f"more than {_MAX_TIMESTAMPS} signed timestamps")
        # A timestamp over other bytes is a wrong bundle, not missing trust: say which.
        if not any(_imprint_covers(response, signature) for response in responses):
            raise SigstoreVerificationError(
                "the signed timestamp is not over the bundle's signature"
            )
        times = [
            result
            for response in responses
            if (result := self._verify_signed_timestamp(response, signature)) is not None
        ]
        if not times:
            raise UntrustedMaterial(
                f"no trusted timestamp authority in the configured trusted root "
                f"({self.root_name}) signed the bundle's timestamp"
            )
        # (1) The chain to a trusted CA at each verified time; (2) SCT where CT is configured.
        chain: list[x509.Certificate] = []
        for verified in times:
            chain = self._verify_chain_at_time(certificate, verified)
        if self._trusted_root._inner.ctlogs and not self._ct_exempt(chain):
            verify_sct(certificate, chain, self._trusted_root.ct_keyring(KeyringPurpose.VERIFY))
        # (3) Code signing, then the identity policy.
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
        extended = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if not usage.digital_signature or ExtendedKeyUsageOID.CODE_SIGNING not in extended:
            raise SigstoreVerificationError("signing certificate is not for code signing")
        policy.verify(certificate)
        # (4) Every verified time lies within the certificate's validity.
        for verified in times:
            if not (
                certificate.not_valid_before_utc <= verified.time <= certificate.not_valid_after_utc
            ):
                raise SigstoreVerificationError(
                    "signing certificate was not valid at the signed timestamp"
                )
        # (5) The signature itself.
        public_key = certificate.public_key()
        if envelope is not None:
            dsse._verify(public_key, dsse.Envelope(envelope))  # type: ignore[arg-type]
            return envelope.payload_type, envelope.payload
        if message_sha256 is None:
            raise SigstoreVerificationError("message-signature bundle without an artifact")
        declared = document.message_signature.message_digest  # type: ignore[union-attr]
        if declared is not None and declared.digest != message_sha256:
            raise SigstoreVerificationError("bundle message digest does not match the artifact")
        if not _verify_message(public_key, signature, message_sha256, message):
            raise SigstoreVerificationError("signature does not verify with its certificate")
        return None, None


_IMPRINT_HASHES = {
    "2.16.840.1.101.3.4.2.1": hashlib.sha256,
    "2.16.840.1.101.3.4.2.2": hashlib.sha384,
    "2.16.840.1.101.3.4.2.3": hashlib.sha512,
}


def _fingerprint(certificate: x509.Certificate) -> str:
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def _imprint_covers(response: TimeStampResponse, signature: bytes) -> bool:
    imprint = response.tst_info.message_imprint
    digest = _IMPRINT_HASHES.get(imprint.hash_algorithm.dotted_string)
    return digest is not None and digest(signature).digest() == imprint.message


def _signing_certificate(document: BundleDocument) -> x509.Certificate:
    material = document.verification_material
    if material.certificate is not None:
        raw = material.certificate.raw_bytes
    elif (
        material.x509_certificate_chain is not None and material.x509_certificate_chain.certificates
    ):
        raw = material.x509_certificate_chain.certificates[0].raw_bytes
    else:
        raise SigstoreVerificationError("bundle carries no signing certificate")
    try:
        return x509.load_der_x509_certificate(raw)
    except ValueError as exc:
        raise SigstoreVerificationError("signing certificate is not DER X.509") from exc


def _verify_message(
    public_key: object, signature: bytes, message_sha256: bytes, message: bytes | None
) -> bool:
    """ECDSA over the artifact (Fulcio keys): P-256 by its SHA-256, larger curves by content."""
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        return False
    try:
        if public_key.curve.key_size <= 256:
            public_key.verify(signature, message_sha256, ec.ECDSA(Prehashed(hashes.SHA256())))
        elif message is not None:
            public_key.verify(signature, message, ec.ECDSA(hashes.SHA384()))
        else:
            return False
    except InvalidSignature:
        return False
    return True


def _check_intoto_v002_body(bundle: Bundle, payload_type: str, payload: bytes, sig: bytes) -> None:
    """Rekor ``intoto/0.0.2`` bodies hold the envelope's signatures base64-encoded twice, the
    payload's SHA-256, the signer's certificate as base64 PEM and, only in bodies submitted
    that way, the payload itself (base64 twice)."""
    try:
        body = json.loads(bundle.log_entry._inner.canonicalized_body)
        content = body["spec"]["content"]
        recorded = content["envelope"]
        signatures = recorded["signatures"]
        signing_der = bundle.signing_certificate.public_bytes(serialization.Encoding.DER)
        recorded_der = load_pem_x509_certificate(_b64(signatures[0]["publicKey"])).public_bytes(
            serialization.Encoding.DER
        )
        # Public-good Rekor keeps only the payload's hash; a recorded payload must match too.
        recorded_payload = recorded.get("payload")
        consistent = (
            content["payloadHash"]["algorithm"] == "sha256"
            and content["payloadHash"]["value"] == hashlib.sha256(payload).hexdigest()
            and recorded["payloadType"] == payload_type
            and (recorded_payload is None or _b64(_b64(recorded_payload).decode()) == payload)
            and len(signatures) == 1
            and _b64(_b64(signatures[0]["sig"]).decode()) == sig
            and recorded_der == signing_der
        )
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise SigstoreVerificationError("intoto log entry body is malformed") from exc
    if not consistent:
        raise SigstoreVerificationError(
            "transparency log entry is inconsistent with other materials"
        )
