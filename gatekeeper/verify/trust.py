"""Trust roots (Fulcio CAs, Rekor and CT log keys, TSAs) and certificate identities.

Verification never needs the network: the public-good root is the ``trusted_root.json``
shipped inside sigstore-python, and private/air-gapped Sigstore brings its own file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier
from sigstore.errors import VerificationError as SigstoreVerificationError
from sigstore.models import TrustedRoot
from sigstore_models.trustroot import v1 as trustroot_v1

from gatekeeper.errors import ConfigurationError
from gatekeeper.verify.authority import KeylessIdentity

__all__ = [
    "CertificateIdentity",
    "IdentityPolicy",
    "TrustRoot",
    "certificate_identity",
]

_PUBLIC_GOOD = "https%3A%2F%2Ftuf-repo-cdn.sigstore.dev"
_STAGING = "https%3A%2F%2Ftuf-repo-cdn.sigstage.dev"
_OIDC_ISSUER_V1 = ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
_OIDC_ISSUER_V2 = ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
_OTHERNAME_SAN = ObjectIdentifier("1.3.6.1.4.1.57264.1.7")
_MAX_TRUSTED_ROOT_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True, eq=False)
class TrustRoot:
    """A Sigstore trusted root plus its ``version`` (a content hash, part of cache keys).

    ``root`` is ``None`` for key-only deployments (every authority says ``tlog: false``).
    """

    version: str
    root: TrustedRoot | None
    name: str

    @classmethod
    def from_json(cls, data: bytes, *, name: str = "trusted_root.json") -> TrustRoot:
        if len(data) > _MAX_TRUSTED_ROOT_BYTES:
            raise ConfigurationError(f"{name} is larger than {_MAX_TRUSTED_ROOT_BYTES} bytes")
        try:
            root = TrustedRoot(trustroot_v1.TrustedRoot.from_json(data))
        except (ValueError, SigstoreVerificationError) as exc:
            raise ConfigurationError(f"{name} is not a valid Sigstore trusted root") from exc
        return cls(hashlib.sha256(data).hexdigest()[:16], root, name)

    @classmethod
    def public_good(cls) -> TrustRoot:
        """The Sigstore public-good root shipped with sigstore-python (no TUF refresh)."""
        return cls._embedded(_PUBLIC_GOOD, "sigstore public-good")

    @classmethod
    def staging(cls) -> TrustRoot:
        return cls._embedded(_STAGING, "sigstore staging")

    @classmethod
    def none(cls) -> TrustRoot:
        return cls("none", None, "none")

    @classmethod
    def _embedded(cls, directory: str, name: str) -> TrustRoot:
        data = resources.files("sigstore").joinpath("_store", directory, "trusted_root.json")
        return cls.from_json(data.read_bytes(), name=name)


@dataclass(frozen=True, slots=True)
class CertificateIdentity:
    """Who a Fulcio certificate names: its SAN values and the OIDC issuer extension."""

    subjects: tuple[str, ...]
    issuer: str | None

    def as_evidence(self) -> dict[str, object]:
        return {"subjects": list(self.subjects), "issuer": self.issuer}


def certificate_identity(certificate: x509.Certificate) -> CertificateIdentity:
    subjects: list[str] = []
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if san is not None:
        subjects.extend(san.get_values_for_type(x509.RFC822Name))
        subjects.extend(san.get_values_for_type(x509.UniformResourceIdentifier))
        for other in san.get_values_for_type(x509.OtherName):
            if other.type_id == _OTHERNAME_SAN:
                subjects.append(_der_utf8(other.value))
    return CertificateIdentity(tuple(subjects), _issuer(certificate))


def _issuer(certificate: x509.Certificate) -> str | None:
    for oid, der in ((_OIDC_ISSUER_V2, True), (_OIDC_ISSUER_V1, False)):
        try:
            ext = certificate.extensions.get_extension_for_oid(oid)
        except x509.ExtensionNotFound:
            continue
        value = ext.value
        if not isinstance(value, x509.UnrecognizedExtension):
            continue
        return _der_utf8(value.value) if der else value.value.decode(errors="replace")
    return None


def _der_utf8(raw: bytes) -> str:
    # A DER UTF8String: tag 0x0c, length, value (short or long form length).
    if len(raw) >= 2 and raw[0] == 0x0C:
        length = raw[1]
        offset = 2
        if length & 0x80:
            count = length & 0x7F
            length = int.from_bytes(raw[2 : 2 + count], "big")
            offset = 2 + count
        return raw[offset : offset + length].decode(errors="replace")
    return raw.decode(errors="replace")


class IdentityPolicy:
    """A sigstore-python ``VerificationPolicy`` accepting any of the given identities.

    sigstore's own ``Identity`` policy compares exact strings only; authorities may also use
    regular expressions, so the comparison is ours and the procedure stays sigstore's.
    """

    def __init__(self, identities: Sequence[KeylessIdentity]) -> None:
        if not identities:
            raise ConfigurationError("an identity policy needs at least one identity")
        self._identities = tuple(identities)
        self.last_identity: CertificateIdentity | None = None

    def verify(self, cert: x509.Certificate) -> None:
        identity = certificate_identity(cert)
        self.last_identity = identity
        for expected in self._identities:
            if expected.matches(identity.issuer, identity.subjects):
                return
        raise SigstoreVerificationError(
            f"identity mismatch: certificate names {list(identity.subjects)} "
            f"issued by {identity.issuer!r}"
        )
