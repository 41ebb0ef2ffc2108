"""Verifying cosign material against one authority, bound to one image digest.

For every candidate the steps are, in order:

1. the signature verifies with a key of the authority, or with a Fulcio certificate that
   chains to the trusted root at the Rekor integration time, carries a valid SCT and names
   one of the authority's identities;
2. the signed payload binds the image: simple-signing ``critical.image.docker-manifest-digest``
   or an in-toto subject equals the digest the workload names;
3. the transparency-log entry (SET + body naming this signature and signer) verifies against
   the trusted root's Rekor keys, unless the authority says ``tlog: false`` explicitly.

Every failure is a reason code plus a message; nothing here raises for a negative fact.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from sigstore import dsse
from sigstore._internal.sct import verify_sct
from sigstore._internal.timestamp import TimestampSource, TimestampVerificationResult
from sigstore._internal.trust import KeyringPurpose
from sigstore.errors import Error as SigstoreError

from gatekeeper.domain.ports.attestations import VerifiedStatement
from gatekeeper.domain.reference import Digest
from gatekeeper.errors import ConfigurationError, GatekeeperError, VerificationError
from gatekeeper.verify.authority import Authority
from gatekeeper.verify.bundle import (
    IN_TOTO_PAYLOAD_TYPE,
    parse_in_toto_statement,
    statement_names_digest,
    verify_bundle,
)
from gatekeeper.verify.discovery import (
    BundleArtifact,
    CosignAttestation,
    CosignSignature,
    Material,
)
from gatekeeper.verify.keyless import KeylessVerifier
from gatekeeper.verify.keys import VerificationKey, load_public_key
from gatekeeper.verify.simple_signing import docker_reference_problem
from gatekeeper.verify.text import shorten
from gatekeeper.verify.tlog import check_entry_body, verify_rekor_bundle
from gatekeeper.verify.trust import (
    IdentityPolicy,
    TrustRoot,
    certificate_identity,
    identity_mismatch_message,
)

__all__ = [
    "COSIGN_SIGN_PREDICATE",
    "REASON_MESSAGES",
    "AuthorityResult",
    "CosignVerifier",
    "VerifiedStatement",
]

COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
SIMPLE_SIGNING_TYPE = "cosign container image signature"

#: Stable reason codes -> the words policy messages and users see.
REASON_MESSAGES: Mapping[str, str] = {
    "verified": "verified",
    "no-signature": "no signature found",
    "other-key": "signature by another key",
    "no-key": "signature by another key",
    "identity-mismatch": "identity mismatch",
    "untrusted-certificate": "certificate not trusted",
    "digest-mismatch": "digest mismatch",
    "tlog-missing": "tlog entry missing",
    "tlog-invalid": "tlog entry invalid",
    "tlog-mismatch": "tlog entry does not match the signature",
    "malformed": "malformed signature payload",
    "invalid": "signature invalid",
    "no-trust-root": "no trusted root for tlog verification",
    "untrusted": "not trusted by the configured trusted root",
    "reference-mismatch": "signed for another repository",
    # Notation (gatekeeper/verify/notation.py)
    "scope-mismatch": "no Notation trust policy covers this repository",
    "skipped": "verification skipped by the Notation trust policy",
    "unsupported": "unsupported signature feature",
    "outside-validity": "certificate chain not valid at signing time",
    "expired": "signature expired",
    "revoked": "certificate revoked",
    "revocation-unavailable": "revocation status unavailable",
}
# A reason from a candidate that got past the signer check says more than "another key".
_LEAST_INFORMATIVE = ("no-key", "other-key")

PREDICATE_KINDS: Mapping[str, str] = {
    "https://slsa.dev/provenance/v0.2": "slsa-provenance-v0.2",
    "https://slsa.dev/provenance/v1": "slsa-provenance-v1",
    "https://cyclonedx.org/bom": "cyclonedx",
    "https://cosign.sigstore.dev/attestation/vuln/v1": "cosign-vuln",
    "https://openvex.dev/ns": "openvex",
    "https://spdx.dev/Document": "spdx",
}


@dataclass(frozen=True, slots=True)
class Check:
    """One candidate checked against one authority."""

    ok: bool
    reason: str
    detail: str
    source: str
    signer: Mapping[str, Any] = field(default_factory=dict)
    tlog: str = "not-checked"
    #: Fields of other signature kinds (Notation: format, scheme, validations).
    extra: Mapping[str, Any] = field(default_factory=dict)

    def as_evidence(self) -> dict[str, Any]:
        return dict(self.extra) | {
            "verified": self.ok,
            "reason": REASON_MESSAGES.get(self.reason, self.reason),
            "reason_code": self.reason,
            "detail": self.detail,
            "source": self.source,
            "signer": dict(self.signer),
            "tlog": self.tlog,
        }


@dataclass(frozen=True, slots=True)
class AuthorityResult:
    name: str
    verified: bool
    reason: str
    detail: str
    signatures: tuple[Check, ...]
    attestations: tuple[dict[str, Any], ...]
    rejected_attestations: tuple[dict[str, Any], ...]
    #: The verified statements behind ``attestations`` (not part of the evidence).
    statements: tuple[VerifiedStatement, ...] = ()
    #: When a verified result stops being true on its own (signature expiry, certificate end).
    valid_until: datetime | None = None
    #: Fields of other signature kinds (Notation: kind, trust policy, logged failures).
    extra: Mapping[str, Any] = field(default_factory=dict)

    def as_evidence(self) -> dict[str, Any]:
        identities = [dict(check.signer) for check in self.signatures if check.ok and check.signer]
        return dict(self.extra) | {
            "verified": self.verified,
            "reason": REASON_MESSAGES.get(self.reason, self.reason),
            "reason_code": self.reason,
            "detail": self.detail,
            "verified_signers": identities,
            "signatures": [check.as_evidence() for check in self.signatures],
            "attestations": list(self.attestations),
            "rejected_attestations": list(self.rejected_attestations),
        }


def _fail(reason: str, detail: str, source: str, **extra: Any) -> Check:
    return Check(False, reason, detail, source, **extra)


def _reason_of(exc: GatekeeperError, default: str) -> str:
    reason = exc.context.get("reason")
    return reason if isinstance(reason, str) else default


class CosignVerifier:
    """Checks :class:`Material` against authorities; holds the parsed trust root."""

    def __init__(self, trust: TrustRoot, *, max_predicate_bytes: int = 512 * 1024) -> None:
        self._trust = trust
        self._keyless = (
            KeylessVerifier(trusted_root=trust.root, root_name=trust.name) if trust.root else None
        )
        self._max_predicate_bytes = max_predicate_bytes

    def verify(
        self, material: Material, authority: Authority, digest: Digest, *, repository: str
    ) -> AuthorityResult:
        """Check ``material`` found for ``digest`` in ``repository`` (``registry/repository``)."""
        checks: list[Check] = []
        attestations: list[dict[str, Any]] = []
        rejected: list[dict[str, Any]] = []
        statements: list[VerifiedStatement] = []

        def keep(check: Check, statement: Mapping[str, Any] | None) -> None:
            if check.ok and statement is not None:
                statements.append(
                    VerifiedStatement(
                        authority.name, str(statement["predicateType"]), statement,
                        check.source, dict(check.signer),
                    )
                )  # fmt: skip

        for signature in material.signatures:
            checks.append(self._simple_signing(signature, authority, digest, repository))
        for bundle in material.bundles:
            check, attestation, statement = self._bundle(bundle, authority, digest)
            if attestation is not None:
                (attestations if check.ok else rejected).append(attestation)
                keep(check, statement)
            else:
                checks.append(check)
        for envelope in material.attestations:
            check, attestation, statement = self._legacy_attestation(envelope, authority, digest)
            (attestations if check.ok else rejected).append(attestation)
            keep(check, statement)
        verified = [c for c in checks if c.ok]
        if verified:
            return AuthorityResult(
                authority.name, True, "verified", f"{len(verified)} valid signature(s)",
                tuple(checks), tuple(attestations), tuple(rejected), tuple(statements),
            )  # fmt: skip
        if not checks:
            detail = "; ".join(material.problems) or "no cosign signature for this digest"
            return AuthorityResult(
                authority.name, False, "no-signature", detail, (), tuple(attestations),
                tuple(rejected), tuple(statements),
            )  # fmt: skip
        informative = [c for c in checks if c.reason not in _LEAST_INFORMATIVE] or checks
        first = informative[0]
        return AuthorityResult(
            authority.name, False, first.reason, first.detail, tuple(checks),
            tuple(attestations), tuple(rejected), tuple(statements),
        )  # fmt: skip

    # -- signer checks -------------------------------------------------------------------------

    def _signer(
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
                _fail("other-key", "signed by a certificate, authority trusts keys", source),
                {},
                "",
            )
        return (
            _fail("other-key", "signature does not verify with the authority's keys", source),
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
            return _fail("tlog-missing", "no transparency log entry with the signature", source)
        try:
            entry = verify_rekor_bundle(rekor_bundle, self._trust)
            check_entry_body(
                entry, signature=signature, payload=_logged_payload(message),
                key_id=key.key_id if key else None, certificate=certificate,
            )  # fmt: skip
        except VerificationError as exc:
            return _fail(_reason_of(exc, "tlog-invalid"), exc.message, source)
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
        if self._keyless is None or self._trust.root is None:
            return _fail("no-trust-root", "keyless needs a trusted root", source), {}, ""
        try:
            certificate = x509.load_pem_x509_certificate(certificate_pem)
        except ValueError:
            return (
                _fail("malformed", "certificate annotation is not a PEM certificate", source),
                {},
                "",
            )
        identity = certificate_identity(certificate)
        signer = identity.as_evidence()
        if rekor_bundle is None:
            return (
                _fail("tlog-missing", "keyless signature without tlog entry", source),
                signer,
                "missing",
            )
        try:
            entry = verify_rekor_bundle(rekor_bundle, self._trust)
        except VerificationError as exc:
            return _fail(_reason_of(exc, "tlog-invalid"), exc.message, source), signer, "failed"
        signed_at = datetime.fromtimestamp(entry.integrated_time, tz=UTC)
        try:
            # (a) chain to the Fulcio roots at the signing time, (b) SCT, (c) code signing.
            chain = self._keyless._verify_chain_at_time(
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
            return _fail("untrusted-certificate", shorten(str(exc)), source), signer, "verified"
        try:
            IdentityPolicy(authority.identities).verify(certificate)
        except SigstoreError:
            detail = identity_mismatch_message(authority.identities, identity)
            return _fail("identity-mismatch", detail, source), signer, "verified"
        if not (certificate.not_valid_before_utc <= signed_at <= certificate.not_valid_after_utc):
            return _fail("untrusted-certificate", "signed outside the certificate's validity",
                         source), signer, "verified"  # fmt: skip
        if not _verify_with_certificate(certificate, signature, message):
            return (
                _fail("invalid", "signature does not verify with its certificate", source),
                signer,
                "",
            )
        try:
            check_entry_body(
                entry, signature=signature, payload=_logged_payload(message),
                certificate=certificate,
            )  # fmt: skip
        except VerificationError as exc:
            return _fail(_reason_of(exc, "tlog-mismatch"), exc.message, source), signer, "failed"
        return None, signer, "verified"

    # -- candidates ----------------------------------------------------------------------------

    def _simple_signing(
        self, candidate: CosignSignature, authority: Authority, digest: Digest, repository: str
    ) -> Check:
        failure, signer, tlog = self._signer(
            authority, candidate.signature, candidate.payload, candidate.certificate,
            candidate.rekor_bundle, candidate.source,
        )  # fmt: skip
        if failure is not None:
            return Check(False, failure.reason, failure.detail, failure.source, signer, tlog)
        # (2) the payload must name this digest.
        try:
            payload = json.loads(candidate.payload)
            critical = payload["critical"]
            signed_digest = critical["image"]["docker-manifest-digest"]
            signed_type = critical["type"]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            return Check(False, "malformed", "simple-signing payload is malformed",
                         candidate.source, signer, tlog)  # fmt: skip
        if signed_type != SIMPLE_SIGNING_TYPE:
            return Check(False, "malformed", f"payload type {str(signed_type)[:80]!r}",
                         candidate.source, signer, tlog)  # fmt: skip
        if signed_digest != str(digest):
            return Check(False, "digest-mismatch",
                         f"signature is for {str(signed_digest)[:80]}, not {digest}",
                         candidate.source, signer, tlog)  # fmt: skip
        # (2b) ... and, where the authority asks, this repository.
        if authority.match_docker_reference:
            problem = docker_reference_problem(critical, repository)
            if problem is not None:
                return Check(False, "reference-mismatch", problem, candidate.source, signer, tlog)
            return Check(True, "verified", "simple-signing payload names the digest and repository",
                         candidate.source, signer, tlog)  # fmt: skip
        return Check(True, "verified", "simple-signing payload names the digest",
                     candidate.source, signer, tlog)  # fmt: skip

    def _bundle(
        self, candidate: BundleArtifact, authority: Authority, digest: Digest
    ) -> tuple[Check, dict[str, Any] | None, Mapping[str, Any] | None]:
        try:
            outcome = verify_bundle(
                candidate.bundle, trust=self._trust, identities=authority.identities,
                keys=authority.keys, require_tlog=authority.tlog,
            )  # fmt: skip
        except VerificationError as exc:
            reason = _reason_of(exc, "invalid")
            check = _fail(reason, exc.message, candidate.source)
            if candidate.predicate_type not in (None, COSIGN_SIGN_PREDICATE):
                return check, _attestation_rejection(candidate.predicate_type, check), None
            return check, None, None
        signer: dict[str, Any] = (
            {"key_id": outcome.key_id} if outcome.key_id else
            (outcome.identity.as_evidence() if outcome.identity else {})
        )  # fmt: skip
        if outcome.payload is None or outcome.payload_type != IN_TOTO_PAYLOAD_TYPE:
            return Check(False, "malformed", "image bundles must carry an in-toto statement",
                         candidate.source, signer, outcome.tlog), None, None  # fmt: skip
        return self._statement(outcome.payload, digest, candidate.source, signer, outcome.tlog)

    def _legacy_attestation(
        self, candidate: CosignAttestation, authority: Authority, digest: Digest
    ) -> tuple[Check, dict[str, Any], Mapping[str, Any] | None]:
        try:
            envelope = json.loads(candidate.envelope)
            payload_type = envelope["payloadType"]
            payload = base64.b64decode(envelope["payload"], validate=True)
            signatures = [base64.b64decode(s["sig"], validate=True) for s in envelope["signatures"]]
            if not isinstance(payload_type, str) or not signatures:
                raise TypeError("no signatures")
        except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
            check = _fail("malformed", "DSSE envelope is malformed", candidate.source)
            return check, _attestation_rejection(None, check), None
        message = dsse._pae(payload_type, payload)
        failure: Check | None = None
        for signature in signatures[:8]:
            failure, signer, tlog = self._signer(
                authority, signature, message, candidate.certificate, candidate.rekor_bundle,
                candidate.source,
            )  # fmt: skip
            if failure is None:
                break
        if failure is not None:
            return failure, _attestation_rejection(None, failure), None
        if payload_type != IN_TOTO_PAYLOAD_TYPE:
            check = Check(False, "malformed", f"payload type {payload_type[:80]!r}",
                          candidate.source, signer, tlog)  # fmt: skip
            return check, _attestation_rejection(None, check), None
        check, attestation, statement = self._statement(
            payload, digest, candidate.source, signer, tlog
        )
        if attestation is None:  # a cosign "sign" statement in an .att: not an attestation
            return check, _attestation_rejection(COSIGN_SIGN_PREDICATE, check), None
        return check, attestation, statement

    def _statement(
        self, payload: bytes, digest: Digest, source: str, signer: dict[str, Any], tlog: str
    ) -> tuple[Check, dict[str, Any] | None, Mapping[str, Any] | None]:
        """(2) for DSSE: the statement's subject names the image; split signature/attestation.

        Returns the check, the attestation record (None for a signature) and the statement
        when it verified as an attestation."""
        try:
            statement = parse_in_toto_statement(payload)
        except VerificationError as exc:
            check = Check(False, "malformed", exc.message, source, signer, tlog)
            return check, _attestation_rejection(None, check), None
        predicate_type = str(statement["predicateType"])
        is_signature = predicate_type == COSIGN_SIGN_PREDICATE
        if not statement_names_digest(statement, digest.algorithm, digest.hex):
            check = Check(False, "digest-mismatch", "in-toto subject does not name the digest",
                          source, signer, tlog)  # fmt: skip
            rejection = None if is_signature else _attestation_rejection(predicate_type, check)
            return check, rejection, None
        check = Check(True, "verified", "in-toto subject names the digest", source, signer, tlog)
        if is_signature:
            return check, None, None
        return check, self._attestation(statement, predicate_type, check), statement

    def _attestation(
        self, statement: Mapping[str, Any], predicate_type: str, check: Check
    ) -> dict[str, Any]:
        predicate = statement.get("predicate")
        encoded = json.dumps(predicate, separators=(",", ":"), sort_keys=True)
        oversized = len(encoded) > self._max_predicate_bytes
        kind = PREDICATE_KINDS.get(predicate_type)
        if kind is None and predicate_type.startswith("https://cyclonedx.org/bom"):
            kind = "cyclonedx"
        record: dict[str, Any] = {
            "predicate_type": predicate_type,
            "kind": kind or "other",
            "source": check.source,
            "signer": dict(check.signer),
            "tlog": check.tlog,
            "predicate": None if oversized else json.loads(encoded),
            "predicate_truncated": oversized,
        }
        builder = _builder_id(kind, predicate)
        if builder is not None:
            record["builder_id"] = builder
        return record


def _attestation_rejection(predicate_type: str | None, check: Check) -> dict[str, Any]:
    return {
        "predicate_type": predicate_type,
        "reason": REASON_MESSAGES.get(check.reason, check.reason),
        "reason_code": check.reason,
        "detail": check.detail,
        "source": check.source,
    }


def _builder_id(kind: str | None, predicate: object) -> str | None:
    if not isinstance(predicate, Mapping):
        return None
    try:
        if kind == "slsa-provenance-v0.2":
            value = predicate["builder"]["id"]
        elif kind == "slsa-provenance-v1":
            value = predicate["runDetails"]["builder"]["id"]
        else:
            return None
    except (KeyError, TypeError):
        return None
    return value if isinstance(value, str) else None


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
    pem = certificate.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        return load_public_key(pem).verify(signature, message)
    except ConfigurationError:
        return False
