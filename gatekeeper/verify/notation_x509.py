"""X.509 for Notation: certificate requirements, the chain to a trust store, CRL revocation.

Rules from the Notary Project signature specification ("Certificate Requirements") and the trust
policy specification ("Certificate Revocation Evaluation"). Only basic constraints, key usage and
extended key usage are honoured, as the specification says. Revocation here reads the CRLs an
authority configures (files, or http(s) URLs fetched with a timeout and cached until their
``nextUpdate``); OCSP, CRL distribution points named inside certificates and delta CRLs are not
consulted (see README, "Notation and AWS Signer").
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from gatekeeper.errors import VerificationError

__all__ = [
    "CrlRevocationChecker",
    "RevocationResult",
    "check_certificate_requirements",
    "describe",
    "first_invalid_at",
    "verify_chain",
]

log = logging.getLogger(__name__)

_MAX_CRL_BYTES = 8 * 1024 * 1024
_RETRY = timedelta(seconds=30)
_FORBIDDEN_LEAF_EKU = {
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE: "anyExtendedKeyUsage",
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
}


def describe(certificate: x509.Certificate) -> str:
    return certificate.subject.rfc4514_string()


def _untrusted(message: str) -> VerificationError:
    return VerificationError(message, context={"reason": "untrusted-certificate"})


_T = TypeVar("_T", bound=x509.ExtensionType)


def _extension(certificate: x509.Certificate, kind: type[_T]) -> x509.Extension[_T] | None:
    try:
        return certificate.extensions.get_extension_for_class(kind)
    except x509.ExtensionNotFound:
        return None


def _check_leaf(certificate: x509.Certificate) -> None:
    name = describe(certificate)
    constraints = _extension(certificate, x509.BasicConstraints)
    if constraints is not None and constraints.value.ca:
        raise _untrusted(f"signing certificate {name} is a CA certificate")
    usage = _extension(certificate, x509.KeyUsage)
    if usage is None or not usage.critical:
        raise _untrusted(f"signing certificate {name} has no critical key usage extension")
    value = usage.value
    if not value.digital_signature:
        raise _untrusted(f"signing certificate {name} is not for digitalSignature")
    extra = [
        label for label, present in (
            ("keyEncipherment", value.key_encipherment),
            ("dataEncipherment", value.data_encipherment),
            ("keyAgreement", value.key_agreement), ("keyCertSign", value.key_cert_sign),
            ("cRLSign", value.crl_sign),
        ) if present
    ]  # fmt: skip
    if extra:
        raise _untrusted(f"signing certificate {name} key usage also allows {', '.join(extra)}")
    extended = _extension(certificate, x509.ExtendedKeyUsage)
    if extended is not None:
        bad = [label for oid, label in _FORBIDDEN_LEAF_EKU.items() if oid in extended.value]
        if bad:
            raise _untrusted(
                f"signing certificate {name} extended key usage allows {', '.join(bad)}"
            )
    key = certificate.public_key()
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048:
        raise _untrusted(f"signing certificate {name} has an RSA key under 2048 bits")
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.key_size < 256:
        raise _untrusted(f"signing certificate {name} has an EC key under 256 bits")


def _check_ca(certificate: x509.Certificate, below: int) -> None:
    name = describe(certificate)
    constraints = _extension(certificate, x509.BasicConstraints)
    if constraints is None or not constraints.critical or not constraints.value.ca:
        raise _untrusted(f"CA certificate {name} lacks critical basic constraints with cA=true")
    path_length = constraints.value.path_length
    if path_length is not None and below - 1 > path_length:
        raise _untrusted(f"CA certificate {name} allows {path_length} intermediates below it")
    usage = _extension(certificate, x509.KeyUsage)
    if usage is None or not usage.critical or not usage.value.key_cert_sign:
        raise _untrusted(f"CA certificate {name} lacks a critical key usage with keyCertSign")


def check_certificate_requirements(chain: Sequence[x509.Certificate]) -> None:
    """Leaf, intermediate and root requirements; a chain of one self-signed certificate meets
    the leaf requirements instead."""
    for certificate in chain:
        algorithm = certificate.signature_hash_algorithm
        if algorithm is not None and algorithm.name == "sha1":
            raise _untrusted(f"certificate {describe(certificate)} is signed with SHA-1")
    _check_leaf(chain[0])
    for index, certificate in enumerate(chain[1:], start=1):
        _check_ca(certificate, below=index)


def verify_chain(chain: Sequence[x509.Certificate]) -> None:
    """Each certificate is issued by the next; the last is a self-signed root."""
    for child, parent in zip(chain, chain[1:], strict=False):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise _untrusted(
                f"certificate {describe(child)} is not issued by the next one in the chain "
                f"({describe(parent)})"
            ) from exc
    root = chain[-1]
    try:
        root.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise _untrusted(
            f"certificate chain does not end with a self-signed root ({describe(root)})"
        ) from exc


def first_invalid_at(chain: Sequence[x509.Certificate], when: datetime) -> x509.Certificate | None:
    for certificate in chain:
        if not certificate.not_valid_before_utc <= when <= certificate.not_valid_after_utc:
            return certificate
    return None


@dataclass(frozen=True, slots=True)
class RevocationResult:
    status: str  # "good" | "revoked" | "unavailable"
    detail: str


@dataclass(slots=True)
class _CachedCrl:
    crl: x509.CertificateRevocationList | None
    error: str | None
    refresh_after: datetime


class CrlRevocationChecker:
    """Checks a chain against configured CRLs; thread-safe; CRLs cached until ``nextUpdate``
    (failed loads for 30 s), so a decision never waits on an unchanged CRL twice."""

    def __init__(
        self,
        sources: Sequence[str],
        *,
        timeout_seconds: float = 5.0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._sources = tuple(sources)
        self._timeout = timeout_seconds
        self._now = now
        self._transport = transport
        self._cache: dict[str, _CachedCrl] = {}
        self._lock = threading.Lock()

    @property
    def configured(self) -> bool:
        return bool(self._sources)

    def _load(self, source: str, timeout: float) -> _CachedCrl:
        now = self._now()
        with self._lock:
            cached = self._cache.get(source)
            if cached is not None and now < cached.refresh_after:
                return cached
        try:
            data = self._read(source, timeout)
            crl = (
                x509.load_pem_x509_crl(data)
                if b"-----BEGIN" in data
                else x509.load_der_x509_crl(data)
            )
            next_update = crl.next_update_utc
            entry = _CachedCrl(crl, None, next_update if next_update is not None else now)
        except (OSError, ValueError, httpx.HTTPError, VerificationError) as exc:
            message = exc.message if isinstance(exc, VerificationError) else type(exc).__name__
            log.warning("CRL %s could not be loaded: %s", source, message)
            entry = _CachedCrl(None, f"CRL {source} could not be loaded ({message})",
                               now.replace(microsecond=0) + _RETRY)  # fmt: skip
            if isinstance(exc, httpx.TimeoutException) and timeout < self._timeout:
                return entry  # cut short by this evaluation's budget: the next one tries again
        with self._lock:
            self._cache[source] = entry
        return entry

    def _read(self, source: str, timeout: float) -> bytes:
        if source.startswith(("http://", "https://")):
            with httpx.Client(timeout=timeout, transport=self._transport) as client:
                with client.stream("GET", source) as response:
                    if response.status_code != 200:
                        raise VerificationError(f"HTTP {response.status_code}")
                    received = bytearray()
                    for chunk in response.iter_bytes():
                        received += chunk
                        if len(received) > _MAX_CRL_BYTES:
                            raise VerificationError("larger than 8 MiB")
                    return bytes(received)
        with open(source, "rb") as handle:  # noqa: PTH123 - a configured CRL file
            data = handle.read(_MAX_CRL_BYTES + 1)
        if len(data) > _MAX_CRL_BYTES:
            raise VerificationError("larger than 8 MiB")
        return data

    def check(
        self,
        chain: Sequence[x509.Certificate],
        signed_at: datetime | None,
        *,
        time_left: float | None = None,
    ) -> RevocationResult:
        """From root to leaf: a certificate whose issuer publishes one of the configured CRLs
        is looked up in it. A listed serial is revoked unless its invalidity date is after an
        authentic signing time; a CRL that cannot be loaded, fails its signature or is past
        its ``nextUpdate`` makes the result "unavailable". ``time_left`` (seconds) caps each
        download below the configured timeout."""
        now = self._now()
        crls: list[x509.CertificateRevocationList] = []
        problems: list[str] = []
        # A download never outlasts the evaluation's budget (the webhook answers in time).
        timeout = self._timeout if time_left is None else min(self._timeout, time_left)
        for source in self._sources:
            entry = self._load(source, timeout)
            if entry.crl is not None:
                crls.append(entry.crl)
            else:
                problems.append(entry.error or f"CRL {source} unavailable")
        checked = 0
        for index in range(len(chain) - 1, 0, -1):
            certificate, issuer = chain[index - 1], chain[index]
            for crl in crls:
                if crl.issuer != issuer.subject:
                    continue
                if not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
                    return RevocationResult(
                        "unavailable", f"CRL of {describe(issuer)} has an invalid signature"
                    )
                if crl.next_update_utc is not None and now > crl.next_update_utc:
                    return RevocationResult("unavailable", f"CRL of {describe(issuer)} expired at "
                                            f"{crl.next_update_utc.isoformat()}")  # fmt: skip
                checked += 1
                revoked = crl.get_revoked_certificate_by_serial_number(certificate.serial_number)
                if revoked is None:
                    continue
                invalidity = _invalidity_date(revoked)
                if invalidity is not None and signed_at is not None and invalidity > signed_at:
                    continue  # compromised after the authentic signing time
                return RevocationResult(
                    "revoked",
                    f"certificate {describe(certificate)} (serial {certificate.serial_number:x}) "
                    f"is revoked since {revoked.revocation_date_utc.isoformat()}",
                )
        if problems:
            return RevocationResult("unavailable", "; ".join(problems))
        if checked == 0:
            return RevocationResult(
                "unavailable", "no configured CRL is issued by a CA of the signing chain"
            )
        return RevocationResult("good", f"not revoked ({checked} CRL lookup(s))")


def _invalidity_date(revoked: x509.RevokedCertificate) -> datetime | None:
    try:
        extension = revoked.extensions.get_extension_for_class(x509.InvalidityDate)
    except x509.ExtensionNotFound:
        return None
    return extension.value.invalidity_date_utc
