"""Trust roots (Fulcio CAs, Rekor and CT log keys, TSAs) and certificate identities.

Verification never needs the network: the public-good root is the ``trusted_root.json``
shipped inside sigstore-python, and private/air-gapped Sigstore brings its own file.

A trusted-root file may hold one JSON document or several, one per line, as
``gh attestation trusted-root`` prints them (Sigstore public-good, then GitHub's own
Fulcio and timestamp authority). Several documents are merged into one root: its certificate
authorities, timestamp authorities, transparency logs and CT logs are the union, which is how
sigstore-go's ``TrustedMaterialCollection`` combines them for ``gh attestation verify``.
Protobuf JSON leaves empty lists out (GitHub's root has no ``tlogs`` or ``ctlogs``); they are
read as empty.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from gatekeeper.errors import ConfigurationError
from gatekeeper.verify.authority import KeylessIdentity

# sigstore-python parses a trusted root (``TrustRoot.root``, at load or on first use) and
# cryptography's X.509 reads a certificate: a key-only deployment imports neither, with or
# without a transparency log (its keys are read by :mod:`gatekeeper.verify.log_keys`). The
# identity policy handed to sigstore lives in :mod:`gatekeeper.verify.identity` for the same
# reason.
if TYPE_CHECKING:
    from cryptography import x509
    from sigstore.models import TrustedRoot

    from gatekeeper.verify.log_keys import LogKey

__all__ = [
    "CertificateIdentity",
    "TrustRoot",
    "certificate_identity",
    "describe_expected",
    "identity_mismatch_message",
]

_PUBLIC_GOOD = "https%3A%2F%2Ftuf-repo-cdn.sigstore.dev"
_STAGING = "https%3A%2F%2Ftuf-repo-cdn.sigstage.dev"
_OIDC_ISSUER_V1 = "1.3.6.1.4.1.57264.1.1"
_OIDC_ISSUER_V2 = "1.3.6.1.4.1.57264.1.8"
_OTHERNAME_SAN = "1.3.6.1.4.1.57264.1.7"
_MAX_TRUSTED_ROOT_BYTES = 4 * 1024 * 1024
_MAX_TRUSTED_ROOT_DOCUMENTS = 16
_ROOT_LISTS = ("tlogs", "certificateAuthorities", "ctlogs", "timestampAuthorities")


@dataclass(frozen=True, slots=True, eq=False)
class TrustRoot:
    """A Sigstore trusted root plus its ``version`` (a content hash, part of cache keys).

    ``log_keys`` are the transparency-log (Rekor) keys, read with ``json`` and ``cryptography``
    alone (:mod:`gatekeeper.verify.log_keys`): checking a cosign Rekor bundle needs nothing
    more. :attr:`root` is the same document parsed by sigstore-python, for keyless
    certificates, CT logs, timestamp authorities and Sigstore bundles; it is parsed when first
    used, or at once with ``eager=True`` (the server, so that a bad file stops the start, and
    any configuration with keyless authorities). ``merged`` is ``None`` for key-only
    deployments (every authority says ``tlog: false``).
    ``ct_exempt_cas`` are the SHA-256 fingerprints (hex, of the DER) of the CA certificates
    that come from a trusted-root document listing no CT logs (GitHub's): certificates those
    CAs issue carry no SCT, and none is demanded of them even when another document of a
    merged file (public-good) lists CT logs.
    """

    version: str
    name: str
    log_keys: tuple[LogKey, ...] = ()
    ct_exempt_cas: frozenset[str] = frozenset()
    merged: str | None = None
    _parsed: list[TrustedRoot] = field(default_factory=list, repr=False)

    @property
    def configured(self) -> bool:
        """A trusted root was given (not ``none``)."""
        return self.merged is not None

    @property
    def sigstore_loaded(self) -> bool:
        """:attr:`root` is parsed already (``eager=True``, or used once)."""
        return bool(self._parsed)

    @property
    def root(self) -> TrustedRoot | None:
        """sigstore-python's view of the root (imports sigstore; parsed once)."""
        if self.merged is None:
            return None
        if not self._parsed:
            self._parsed.append(_sigstore_root(self.merged, self.name))
        return self._parsed[0]

    @classmethod
    def from_json(
        cls, data: bytes, *, name: str = "trusted_root.json", eager: bool = True
    ) -> TrustRoot:
        if len(data) > _MAX_TRUSTED_ROOT_BYTES:
            raise ConfigurationError(f"{name} is larger than {_MAX_TRUSTED_ROOT_BYTES} bytes")
        from gatekeeper.verify.log_keys import parse_log_keys

        documents = _documents(data, name)
        merged = _merge_documents(documents, name)
        text = json.dumps(merged)
        parsed = [_sigstore_root(text, name)] if eager else []
        tlogs = merged["tlogs"]
        assert isinstance(tlogs, list)  # _merge_documents makes every list
        return cls(
            hashlib.sha256(data).hexdigest()[:16], name, parse_log_keys(tlogs, name),
            _ct_exempt(documents), text, parsed,
        )  # fmt: skip

    @classmethod
    def public_good(cls, *, eager: bool = True) -> TrustRoot:
        """The Sigstore public-good root shipped with sigstore-python (no TUF refresh)."""
        return cls._embedded(_PUBLIC_GOOD, "sigstore public-good", eager)

    @classmethod
    def staging(cls, *, eager: bool = True) -> TrustRoot:
        return cls._embedded(_STAGING, "sigstore staging", eager)

    @classmethod
    def none(cls) -> TrustRoot:
        return cls("none", "none")

    @classmethod
    def _embedded(cls, directory: str, name: str, eager: bool) -> TrustRoot:
        return cls.from_json(_shipped_root(directory).read_bytes(), name=name, eager=eager)


def _shipped_root(directory: str) -> Path:
    """sigstore-python's ``_store/<directory>/trusted_root.json``, found without importing the
    package (``importlib.resources.files`` would run its ``__init__``)."""
    spec = importlib.util.find_spec("sigstore")
    locations = spec.submodule_search_locations if spec is not None else None
    if not locations:
        raise ConfigurationError("sigstore-python is not installed: no shipped trusted root")
    return Path(next(iter(locations)), "_store", directory, "trusted_root.json")


def _sigstore_root(text: str, name: str) -> TrustedRoot:
    from sigstore.errors import VerificationError as SigstoreVerificationError
    from sigstore.models import TrustedRoot
    from sigstore_models.trustroot import v1 as trustroot_v1

    try:
        return TrustedRoot(trustroot_v1.TrustedRoot.from_json(text))
    except (ValueError, SigstoreVerificationError) as exc:
        raise ConfigurationError(
            f"{name} is not a valid Sigstore trusted root: {_first_problem(exc)}"
        ) from exc


def _documents(data: bytes, name: str) -> list[dict[str, object]]:
    """One JSON document, or one per line (JSON Lines)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"{name} is not UTF-8") from exc
    try:
        documents: list[object] = [json.loads(text)]
    except ValueError:
        lines = [line for line in text.splitlines() if line.strip()]
        if len(lines) > _MAX_TRUSTED_ROOT_DOCUMENTS:
            raise ConfigurationError(
                f"{name} holds more than {_MAX_TRUSTED_ROOT_DOCUMENTS} trusted roots"
            ) from None
        try:
            documents = [json.loads(line) for line in lines]
        except ValueError as exc:
            raise ConfigurationError(
                f"{name} is neither a JSON trusted root nor one trusted root per line"
            ) from exc
    if not documents or not all(isinstance(d, dict) for d in documents):
        raise ConfigurationError(f"{name} is not a valid Sigstore trusted root: not an object")
    return [d for d in documents if isinstance(d, dict)]


def _merge_documents(documents: list[dict[str, object]], name: str) -> dict[str, object]:
    media_types = {d.get("mediaType") for d in documents}
    if len(media_types) != 1:
        raise ConfigurationError(
            f"{name} mixes trusted root media types {sorted(map(str, media_types))}"
        )
    merged: dict[str, object] = {"mediaType": media_types.pop()}
    for key in _ROOT_LISTS:
        items: list[object] = []
        for document in documents:
            value = document.get(key, [])
            if not isinstance(value, list):
                raise ConfigurationError(
                    f"{name} is not a valid Sigstore trusted root: {key} is not a list"
                )
            items.extend(value)
        merged[key] = items
    return merged


def _ct_exempt(documents: list[dict[str, object]]) -> frozenset[str]:
    fingerprints: set[str] = set()
    for document in documents:
        if document.get("ctlogs"):
            continue
        authorities = document.get("certificateAuthorities")
        for authority in authorities if isinstance(authorities, list) else []:
            chain = authority.get("certChain", {}) if isinstance(authority, dict) else {}
            for certificate in chain.get("certificates", []) if isinstance(chain, dict) else []:
                raw = certificate.get("rawBytes") if isinstance(certificate, dict) else None
                if isinstance(raw, str):
                    try:
                        der = base64.b64decode(raw, validate=True)
                    except ValueError:
                        continue  # the trusted-root parser reports it
                    fingerprints.add(hashlib.sha256(der).hexdigest())
    return frozenset(fingerprints)


def _first_problem(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # pydantic: "N validation errors for TrustedRoot" / "<field path>" / "<message> [type=...]"
    if len(lines) >= 3 and "validation error" in lines[0]:
        return f"{lines[1]}: {lines[2].split(' [type=')[0]}"
    return lines[0] if lines else type(exc).__name__


@dataclass(frozen=True, slots=True)
class CertificateIdentity:
    """Who a Fulcio certificate names: its SAN values and the OIDC issuer extension."""

    subjects: tuple[str, ...]
    issuer: str | None

    def as_evidence(self) -> dict[str, object]:
        return {"subjects": list(self.subjects), "issuer": self.issuer}

    def describe(self) -> str:
        """``certificate names A from issuer B`` (what a mismatch message reports)."""
        names = ", ".join(self.subjects) if self.subjects else "no identity"
        return f"certificate names {names} from issuer {self.issuer or '(none)'}"


def describe_expected(identities: Sequence[KeylessIdentity]) -> str:
    """``expected identity X from issuer Y`` (alternatives joined with ``or``)."""
    parts = []
    for identity in identities:
        subject = (
            identity.subject
            if identity.subject is not None
            else f"matching {identity.subject_regex}"
        )
        issuer = (
            identity.issuer if identity.issuer is not None else f"matching {identity.issuer_regex}"
        )
        parts.append(f"identity {subject} from issuer {issuer}")
    return "expected " + " or ".join(parts)


def identity_mismatch_message(
    identities: Sequence[KeylessIdentity], identity: CertificateIdentity
) -> str:
    """``expected identity X from issuer Y, certificate names A from issuer B``."""
    return f"{describe_expected(identities)}, {identity.describe()}"


def certificate_identity(certificate: x509.Certificate) -> CertificateIdentity:
    from cryptography import x509

    subjects: list[str] = []
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if san is not None:
        subjects.extend(san.get_values_for_type(x509.RFC822Name))
        subjects.extend(san.get_values_for_type(x509.UniformResourceIdentifier))
        for other in san.get_values_for_type(x509.OtherName):
            if other.type_id.dotted_string == _OTHERNAME_SAN:
                subjects.append(_der_utf8(other.value))
    return CertificateIdentity(tuple(subjects), _issuer(certificate))


def _issuer(certificate: x509.Certificate) -> str | None:
    from cryptography import x509

    for oid, der in ((_OIDC_ISSUER_V2, True), (_OIDC_ISSUER_V1, False)):
        try:
            ext = certificate.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid))
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
