"""Outcomes of cosign verification: per-candidate checks, per-authority results, reason codes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gatekeeper.domain.ports.attestations import VerifiedStatement
from gatekeeper.errors import GatekeeperError

__all__ = [
    "COSIGN_SIGN_PREDICATE",
    "LEAST_INFORMATIVE",
    "PREDICATE_KINDS",
    "REASON_MESSAGES",
    "AuthorityResult",
    "Check",
    "attestation_rejection",
    "builder_id",
    "fail",
    "reason_of",
]

COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"

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
LEAST_INFORMATIVE = ("no-key", "other-key")

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


def fail(reason: str, detail: str, source: str, **extra: Any) -> Check:
    return Check(False, reason, detail, source, **extra)


def reason_of(exc: GatekeeperError, default: str) -> str:
    reason = exc.context.get("reason")
    return reason if isinstance(reason, str) else default


def attestation_rejection(predicate_type: str | None, check: Check) -> dict[str, Any]:
    return {
        "predicate_type": predicate_type,
        "reason": REASON_MESSAGES.get(check.reason, check.reason),
        "reason_code": check.reason,
        "detail": check.detail,
        "source": check.source,
    }


def builder_id(kind: str | None, predicate: object) -> str | None:
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
