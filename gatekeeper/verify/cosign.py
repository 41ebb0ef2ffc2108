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
Steps (1) and (3) live in :mod:`~gatekeeper.verify.cosign_signer`, the result types and
reason codes in :mod:`~gatekeeper.verify.cosign_results` (importable from here too).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from gatekeeper.domain.ports.attestations import VerifiedStatement
from gatekeeper.domain.reference import Digest
from gatekeeper.errors import VerificationError
from gatekeeper.verify.authority import Authority
from gatekeeper.verify.cosign_results import (
    COSIGN_SIGN_PREDICATE,
    LEAST_INFORMATIVE,
    PREDICATE_KINDS,
    REASON_MESSAGES,
    AuthorityResult,
    Check,
    attestation_rejection,
    builder_id,
    fail,
    reason_of,
)
from gatekeeper.verify.cosign_signer import SignerChecks
from gatekeeper.verify.discovery import (
    BundleArtifact,
    CosignAttestation,
    CosignSignature,
    Material,
)
from gatekeeper.verify.in_toto import (
    IN_TOTO_PAYLOAD_TYPE,
    dsse_pae,
    parse_in_toto_statement,
    statement_names_digest,
)
from gatekeeper.verify.simple_signing import docker_reference_problem
from gatekeeper.verify.trust import TrustRoot

__all__ = [
    "COSIGN_SIGN_PREDICATE",
    "REASON_MESSAGES",
    "AuthorityResult",
    "Check",
    "CosignVerifier",
    "VerifiedStatement",
]

SIMPLE_SIGNING_TYPE = "cosign container image signature"


class CosignVerifier:
    """Checks :class:`Material` against authorities; holds the parsed trust root."""

    def __init__(self, trust: TrustRoot, *, max_predicate_bytes: int = 512 * 1024) -> None:
        self._trust = trust
        self._signers = SignerChecks(trust)
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
        informative = [c for c in checks if c.reason not in LEAST_INFORMATIVE] or checks
        first = informative[0]
        return AuthorityResult(
            authority.name, False, first.reason, first.detail, tuple(checks),
            tuple(attestations), tuple(rejected), tuple(statements),
        )  # fmt: skip

    # -- candidates ----------------------------------------------------------------------------

    def _simple_signing(
        self, candidate: CosignSignature, authority: Authority, digest: Digest, repository: str
    ) -> Check:
        failure, signer, tlog = self._signers.signer(
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
        # sigstore-python (~0.25 s of imports) only when an image carries a Sigstore bundle
        from gatekeeper.verify.bundle import verify_bundle

        try:
            outcome = verify_bundle(
                candidate.bundle, trust=self._trust, identities=authority.identities,
                keys=authority.keys, require_tlog=authority.tlog,
            )  # fmt: skip
        except VerificationError as exc:
            reason = reason_of(exc, "invalid")
            check = fail(reason, exc.message, candidate.source)
            if candidate.predicate_type not in (None, COSIGN_SIGN_PREDICATE):
                return check, attestation_rejection(candidate.predicate_type, check), None
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
            check = fail("malformed", "DSSE envelope is malformed", candidate.source)
            return check, attestation_rejection(None, check), None
        message = dsse_pae(payload_type, payload)
        failure: Check | None = None
        for signature in signatures[:8]:
            failure, signer, tlog = self._signers.signer(
                authority, signature, message, candidate.certificate, candidate.rekor_bundle,
                candidate.source,
            )  # fmt: skip
            if failure is None:
                break
        if failure is not None:
            return failure, attestation_rejection(None, failure), None
        if payload_type != IN_TOTO_PAYLOAD_TYPE:
            check = Check(False, "malformed", f"payload type {payload_type[:80]!r}",
                          candidate.source, signer, tlog)  # fmt: skip
            return check, attestation_rejection(None, check), None
        check, attestation, statement = self._statement(
            payload, digest, candidate.source, signer, tlog
        )
        if attestation is None:  # a cosign "sign" statement in an .att: not an attestation
            return check, attestation_rejection(COSIGN_SIGN_PREDICATE, check), None
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
            return check, attestation_rejection(None, check), None
        predicate_type = str(statement["predicateType"])
        is_signature = predicate_type == COSIGN_SIGN_PREDICATE
        if not statement_names_digest(statement, digest.algorithm, digest.hex):
            check = Check(False, "digest-mismatch", "in-toto subject does not name the digest",
                          source, signer, tlog)  # fmt: skip
            rejection = None if is_signature else attestation_rejection(predicate_type, check)
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
        builder = builder_id(kind, predicate)
        if builder is not None:
            record["builder_id"] = builder
        return record
