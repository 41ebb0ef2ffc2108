"""Verifying Notation (Notary Project) signatures of one image against one authority.

The authority's trust policy for the image's repository decides what each validation does
(enforce, log, skip). For every signature that refers to the digest, in order:

1. **integrity** (always enforced): the envelope parses, its critical headers are understood,
   its ``alg`` is the signing key's, the signature verifies, and the signed payload's
   ``targetArtifact`` equals the image manifest (digest, size and media type);
2. **authenticity**: the certificate chain meets the specification's requirements, links up to
   a self-signed root, reaches a certificate of the policy's ``ca`` (``notary.x509``) or
   ``signingAuthority`` (``notary.x509.signingAuthority``) stores, and names a trusted
   identity (``x509.subject``, or for AWS Signer the signing-profile ARN it signed);
3. **authentic timestamp**: the chain is valid at the authentic signing time (signing
   authority) or now (``notary.x509`` without a timestamp countersignature);
4. **expiry**: now is before the signed ``io.cncf.notary.expiry``;
5. **revocation**: the chain against the authority's configured CRLs.

An enforced failure stops that signature with its reason; a logged one is recorded in the
evidence (``logged``) and the next validation runs. The authority verifies when one signature
passes (Notation has no m-of-n; the image policy's threshold counts authorities).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import AuthorityInformationAccessOID

from gatekeeper.domain.reference import Digest
from gatekeeper.errors import UpstreamUnavailableError, VerificationError
from gatekeeper.verify.cosign import AuthorityResult, Check
from gatekeeper.verify.discovery import NotationSignature
from gatekeeper.verify.notation_envelope import (
    AWS_PROFILE_VERSION,
    AWS_SIGNER_PLUGIN,
    SCHEME_SIGNING_AUTHORITY,
    Envelope,
    parse_envelope,
    reject_duplicate_keys,
    verify_integrity,
)
from gatekeeper.verify.notation_policy import Action, NotationTrust, TrustPolicy
from gatekeeper.verify.notation_x509 import (
    CrlRevocationChecker,
    check_certificate_requirements,
    describe,
    first_invalid_at,
    verify_chain,
)

__all__ = ["NotationVerifier", "TargetArtifact"]

_KIND = {"kind": "notation"}
_FORMATS = {"application/jose+json": "jws", "application/cose": "cose"}


@dataclass(frozen=True, slots=True)
class TargetArtifact:
    """The image manifest as the registry served it (bytes hashed to ``digest``)."""

    media_type: str
    digest: Digest
    size: int


class _Failed(Exception):  # noqa: N818 - internal control flow, never escapes this module
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _failure(exc: VerificationError, default: str) -> _Failed:
    reason = exc.context.get("reason")
    return _Failed(reason if isinstance(reason, str) else default, exc.message)


class NotationVerifier:
    """Thread-safe; holds one CRL checker per authority (their caches live as long as it)."""

    def __init__(
        self,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._now = now
        self._monotonic = monotonic
        self._crl_checkers: dict[str, CrlRevocationChecker] = {}
        self._lock = threading.Lock()

    def _crls(self, authority: str, trust: NotationTrust) -> CrlRevocationChecker:
        with self._lock:
            checker = self._crl_checkers.get(authority)
            if checker is not None:
                return checker
            checker = CrlRevocationChecker(
                trust.revocation.crls, timeout_seconds=trust.revocation.timeout_seconds,
                now=self._now,
            )  # fmt: skip
            self._crl_checkers[authority] = checker
        return checker

    def verify(
        self,
        name: str,
        trust: NotationTrust,
        signatures: Sequence[NotationSignature],
        repository_uri: str,
        target: TargetArtifact | None,
        problems: Sequence[str] = (),
        *,
        deadline: float | None = None,
    ) -> AuthorityResult:
        """Raises ``UpstreamUnavailableError`` when a CRL must be fetched and ``deadline`` (a
        ``monotonic()`` value) has passed; every other outcome is a result."""
        policy = trust.policy_for(repository_uri)
        if policy is None:
            scopes = sorted({s for p in trust.policies for s in p.registry_scopes})
            return self._result(name, False, "scope-mismatch",
                                f"no trust policy has {repository_uri} in its registryScopes "
                                f"(scopes: {', '.join(scopes)})", ())  # fmt: skip
        extra = _KIND | {"trust_policy": policy.describe()}
        if policy.level == "skip":
            return self._result(
                name, True, "skipped",
                f"trust policy {policy.name} (level skip) does not verify {repository_uri}",
                (), extra | {"skipped": True},
            )  # fmt: skip
        if not signatures or target is None:
            detail = "; ".join(problems) or "no Notation signature for this digest"
            return self._result(name, False, "no-signature", detail, (), extra)
        checks = [
            self._one(signature, name, trust, policy, target, deadline) for signature in signatures
        ]
        verified = [check for check, _ in checks if check.ok]
        if verified:
            ends = [until for check, until in checks if check.ok and until is not None]
            # Notation passes on one signature: the cleanest one speaks for the authority.
            best = min(verified, key=lambda check: len(check.extra.get("logged", [])))
            logged = list(best.extra.get("logged", []))
            return self._result(
                name, True, "verified", f"{len(verified)} valid signature(s)",
                tuple(c for c, _ in checks), extra | {"logged": logged},
                valid_until=max(ends) if len(ends) == len(verified) else None,
            )  # fmt: skip
        # The signature that got furthest says most (an untrusted chain over a garbled blob).
        first = max((c for c, _ in checks), key=_progress)
        return self._result(name, False, first.reason, first.detail,
                            tuple(c for c, _ in checks), extra)  # fmt: skip

    @staticmethod
    def _result(
        name: str, ok: bool, reason: str, detail: str, checks: tuple[Check, ...],
        extra: dict[str, Any] | None = None, *, valid_until: datetime | None = None,
    ) -> AuthorityResult:  # fmt: skip
        return AuthorityResult(
            name, ok, reason, detail, checks, (), (), (), valid_until, extra or dict(_KIND),
        )  # fmt: skip

    def _one(
        self,
        signature: NotationSignature,
        name: str,
        trust: NotationTrust,
        policy: TrustPolicy,
        target: TargetArtifact,
        deadline: float | None,
    ) -> tuple[Check, datetime | None]:
        now = self._now()
        validations: dict[str, str] = {}
        logged: list[str] = []
        signer: dict[str, Any] = {}
        extra: dict[str, Any] = {
            "format": _FORMATS.get(signature.media_type, signature.media_type),
            "manifest": signature.manifest_digest,
        }

        def finish(ok: bool, reason: str, detail: str) -> Check:
            extra.update(validations=validations, logged=logged)
            return Check(ok, reason, detail, signature.source, signer, "not-applicable", extra)

        # (1) integrity: always enforced.
        try:
            envelope = parse_envelope(signature.envelope, signature.media_type)
            extra.update(format=envelope.format, signing_scheme=envelope.signing_scheme)
            verify_integrity(envelope)
            _check_plugin(envelope)
            _check_payload(envelope.payload, target)
        except VerificationError as exc:
            validations["integrity"] = "failed"
            failure = _failure(exc, "malformed")
            return finish(False, failure.reason, f"integrity: {failure.detail}"), None
        except _Failed as failure:
            validations["integrity"] = "failed"
            return finish(False, failure.reason, f"integrity: {failure.detail}"), None
        validations["integrity"] = "passed"
        chain = envelope.certificates
        signer.update(_signer(envelope))
        extra.update(
            signing_time=_iso(envelope.signing_time or envelope.authentic_signing_time),
            expiry=_iso(envelope.expiry),
        )
        signed_at = envelope.authentic_signing_time
        for check, step in (
            ("authenticity", partial(self._authenticity, envelope, trust, policy)),
            ("authenticTimestamp", partial(self._timestamp, envelope, policy, now)),
            ("expiry", partial(_expiry, envelope, now)),
            ("revocation", partial(self._revocation, name, trust, envelope, signed_at, deadline)),
        ):
            action = policy.action(check)
            if action is Action.SKIP:
                validations[check] = "skipped"
                continue
            try:
                validations[check] = step()
            except _Failed as failure:
                if action is Action.ENFORCE:
                    validations[check] = "failed"
                    return finish(False, failure.reason, f"{check}: {failure.detail}"), None
                validations[check] = "failed (logged)"
                logged.append(f"{check}: {failure.detail}")
        ends = [c.not_valid_after_utc for c in chain]
        if envelope.expiry is not None and policy.action("expiry") is Action.ENFORCE:
            ends.append(envelope.expiry)
        detail = "all validations passed" if not logged else f"{len(logged)} logged failure(s)"
        return finish(True, "verified", detail), min(ends)

    def _authenticity(self, envelope: Envelope, trust: NotationTrust, policy: TrustPolicy) -> str:
        chain = envelope.certificates
        try:
            check_certificate_requirements(chain)
            verify_chain(chain)
        except VerificationError as exc:
            raise _failure(exc, "untrusted-certificate") from exc
        store_type = (
            "signingAuthority" if envelope.signing_scheme == SCHEME_SIGNING_AUTHORITY else "ca"
        )
        stores = policy.stores_of(store_type)
        if not stores:
            raise _Failed("untrusted-certificate",
                          f"trust policy {policy.name} has no {store_type} trust store for a "
                          f"{envelope.signing_scheme} signature")  # fmt: skip
        anchors = {
            c.public_bytes(serialization.Encoding.DER) for s in stores for c in trust.stores[s]
        }
        if not any(c.public_bytes(serialization.Encoding.DER) in anchors for c in chain):
            raise _Failed("untrusted-certificate",
                          f"certificate chain of {describe(chain[0])} (root {describe(chain[-1])}) "
                          f"does not lead to a certificate in {', '.join(stores)}")  # fmt: skip
        aws = envelope.verification_plugin == AWS_SIGNER_PLUGIN
        identities = policy.trusted_identities
        if any(i.is_wildcard for i in identities):
            if aws:
                raise _Failed("identity-mismatch", "AWS Signer signatures need signing profile "
                              "ARNs as trusted identities, not '*'")  # fmt: skip
            return "passed"
        if aws:
            profile = envelope.extended.get(AWS_PROFILE_VERSION)
            if not isinstance(profile, str) or not profile:
                raise _Failed("malformed", f"AWS Signer signature lacks {AWS_PROFILE_VERSION}")
            if any(i.matches_profile(profile) for i in identities):
                return "passed"
            wanted = [i.text for i in identities if i.profile_arn]
            raise _Failed("identity-mismatch",
                          f"expected signing profile {' or '.join(wanted) or '(none configured)'}, "
                          f"signature names {profile}")  # fmt: skip
        if any(i.matches_subject(chain[0]) for i in identities):
            return "passed"
        wanted = [i.text for i in identities if i.subject]
        raise _Failed("identity-mismatch",
                      f"expected {' or '.join(wanted) or '(no x509.subject configured)'}, "
                      f"certificate subject is {describe(chain[0])}")  # fmt: skip

    def _timestamp(self, envelope: Envelope, policy: TrustPolicy, now: datetime) -> str:
        chain = envelope.certificates
        if envelope.signing_scheme == SCHEME_SIGNING_AUTHORITY:
            when = envelope.authentic_signing_time
            assert when is not None  # the envelope parser requires it for this scheme
            invalid = first_invalid_at(chain, when)
            if invalid is not None:
                raise _Failed("outside-validity",
                              f"certificate {describe(invalid)} was not valid at the authentic "
                              f"signing time {_iso(when)}")  # fmt: skip
            return "passed"
        expired_now = first_invalid_at(chain, now) is not None
        if policy.stores_of("tsa") and (policy.verify_timestamp == "always" or expired_now):
            raise _Failed("unsupported", "RFC 3161 timestamp countersignatures are not verified "
                          "by this gatekeeper (remove the tsa store or set verifyTimestamp: "
                          "afterCertExpiry)")  # fmt: skip
        invalid = first_invalid_at(chain, now)
        if invalid is not None:
            raise _Failed(
                "outside-validity",
                f"certificate {describe(invalid)} is valid from "
                f"{_iso(invalid.not_valid_before_utc)} to "
                f"{_iso(invalid.not_valid_after_utc)}, not now ({_iso(now)})",
            )
        return "passed"

    def _revocation(
        self,
        name: str,
        trust: NotationTrust,
        envelope: Envelope,
        signed_at: datetime | None,
        deadline: float | None,
    ) -> str:
        chain = envelope.certificates
        checker = self._crls(name, trust)
        if checker.configured:
            time_left = None if deadline is None else deadline - self._monotonic()
            if time_left is not None and time_left <= 0:
                raise UpstreamUnavailableError(
                    f"no time left in the budget to check the CRLs of authority {name}",
                    context={"authority": name},
                )
            result = checker.check(chain, signed_at, time_left=time_left)
            if result.status != "good":
                raise _Failed("revoked" if result.status == "revoked" else "revocation-unavailable",
                              result.detail)  # fmt: skip
            outcome = "passed"
        else:
            published = [describe(c) for c in chain if _names_revocation_service(c)]
            if published:
                raise _Failed(
                    "revocation-unavailable",
                    f"certificate {published[0]} names a CRL or OCSP service, which is "
                    "not contacted; configure revocation.crls or override revocation",
                )
            outcome = "passed (no revocation information)"
        if envelope.verification_plugin == AWS_SIGNER_PLUGIN:
            # The AWS Signer plugin also asks the Signer API whether the profile or the job
            # was revoked; that call is not made here, so its answer is unknown.
            raise _Failed("revocation-unavailable",
                          "AWS Signer profile and job revocation (GetRevocationStatus) is not "
                          "queried by this gatekeeper; set override revocation: log or skip "
                          "to accept that")  # fmt: skip
        return outcome


def _progress(check: Check) -> int:
    validations = check.extra.get("validations", {})
    return sum(1 for outcome in validations.values() if str(outcome).startswith("passed"))


def _check_plugin(envelope: Envelope) -> None:
    plugin = envelope.verification_plugin
    if plugin is None:
        return
    if plugin != AWS_SIGNER_PLUGIN:
        raise _Failed("unsupported", f"verification plugin {plugin} is not supported")
    if envelope.signing_scheme != SCHEME_SIGNING_AUTHORITY:
        raise _Failed("malformed", "AWS Signer signatures use notary.x509.signingAuthority")


def _check_payload(payload: bytes, target: TargetArtifact) -> None:
    try:
        document = json.loads(payload, object_pairs_hook=reject_duplicate_keys)
        descriptor = document["targetArtifact"]
        fields = (descriptor["mediaType"], descriptor["digest"], descriptor["size"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError) as exc:
        raise _Failed("malformed", "payload has no targetArtifact descriptor") from exc
    media_type, digest, size = fields
    if digest != str(target.digest):
        raise _Failed(
            "digest-mismatch", f"signature is for {str(digest)[:80]}, not {target.digest}"
        )
    if size != target.size or isinstance(size, bool):
        raise _Failed(
            "digest-mismatch", f"signed size {str(size)[:20]} is not the manifest's {target.size}"
        )
    if media_type != target.media_type:
        raise _Failed(
            "digest-mismatch",
            f"signed media type {str(media_type)[:80]} is not {target.media_type}",
        )


def _expiry(envelope: Envelope, now: datetime) -> str:
    if envelope.expiry is None:
        return "passed (no expiry)"
    if now >= envelope.expiry:
        raise _Failed("expired", f"signature expired at {_iso(envelope.expiry)}")
    return "passed"


def _names_revocation_service(certificate: x509.Certificate) -> bool:
    """A CRL distribution point, or an OCSP responder in the authority information access."""
    extensions = certificate.extensions
    try:
        extensions.get_extension_for_class(x509.CRLDistributionPoints)
        return True
    except x509.ExtensionNotFound:
        pass
    try:
        access = extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return False
    return any(d.access_method == AuthorityInformationAccessOID.OCSP for d in access)


def _signer(envelope: Envelope) -> dict[str, Any]:
    leaf = envelope.certificates[0]
    signer: dict[str, Any] = {
        "subject": describe(leaf),
        "issuer": leaf.issuer.rfc4514_string(),
        "certificate_sha256": hashlib.sha256(
            leaf.public_bytes(serialization.Encoding.DER)
        ).hexdigest(),
    }
    profile = envelope.extended.get(AWS_PROFILE_VERSION)
    if isinstance(profile, str):
        signer["signing_profile_version"] = profile
    return signer


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
