"""sigstore-python's ``Verifier`` with the two differences the conformance suite needs.

1. A timestamp authority's validity window ends *inclusively* (sigstore-python 4.5 compares
   ``gen_time < end``; the trusted-root specification and the conformance case
   ``trust-root-tsa-validity-end-inclusive`` make the end inclusive, as it is for Rekor keys).
2. Rekor ``intoto/0.0.2`` entries (cosign's older attestation entries) are accepted: their
   integrated time establishes the signing time, and their body must name the envelope's
   payload, signature and certificate (conformance case ``intoto-with-custom-trust-root``).

Everything else is the upstream procedure. sigstore is pinned ``<5`` in pyproject because
these overrides use its private methods.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from datetime import UTC, datetime

from cryptography.hazmat.primitives import serialization
from cryptography.x509 import load_pem_x509_certificate
from rfc3161_client import TimeStampResponse, VerifierBuilder
from rfc3161_client import VerificationError as Rfc3161VerificationError
from sigstore import dsse
from sigstore._internal.timestamp import TimestampSource, TimestampVerificationResult
from sigstore.errors import VerificationError as SigstoreVerificationError
from sigstore.models import Bundle
from sigstore.verify.policy import VerificationPolicy
from sigstore.verify.verifier import Verifier

__all__ = ["KeylessVerifier"]


def _b64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


class KeylessVerifier(Verifier):
    """sigstore's ``Verifier`` with a TSA validity window whose end is inclusive.

    sigstore-python 4.5 compares ``gen_time < validity_end``; the trusted-root specification
    and sigstore-conformance (``trust-root-tsa-validity-end-inclusive``) make the end inclusive,
    as it already is for Rekor keys. Only that comparison differs from the upstream method.
    """

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


def _check_intoto_v002_body(bundle: Bundle, payload_type: str, payload: bytes, sig: bytes) -> None:
    """Rekor ``intoto/0.0.2`` bodies hold the envelope with payload and signatures base64-encoded
    twice, the payload's SHA-256, and the signer's certificate as base64 PEM."""
    try:
        body = json.loads(bundle.log_entry._inner.canonicalized_body)
        content = body["spec"]["content"]
        recorded = content["envelope"]
        signatures = recorded["signatures"]
        signing_der = bundle.signing_certificate.public_bytes(serialization.Encoding.DER)
        recorded_der = load_pem_x509_certificate(_b64(signatures[0]["publicKey"])).public_bytes(
            serialization.Encoding.DER
        )
        consistent = (
            content["payloadHash"]["algorithm"] == "sha256"
            and content["payloadHash"]["value"] == hashlib.sha256(payload).hexdigest()
            and recorded["payloadType"] == payload_type
            and _b64(_b64(recorded["payload"]).decode()) == payload
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
