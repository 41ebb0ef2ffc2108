"""Notary Project signature envelopes: JWS (``application/jose+json``) and COSE
(``application/cose``), parsed into one typed :class:`Envelope` and checked for integrity.

Specifications: https://github.com/notaryproject/specifications/tree/main/specs
(``signature-specification.md``, ``signature-envelope-jws.md``, ``signature-envelope-cose.md``).

Integrity, in order: (1) the envelope parses (JWS flattened JSON serialization, or a tagged
COSE_Sign1 with an attached payload); (2) the content type is the Notary payload; (3) every
critical header is one this verifier processes, and the headers the signing scheme requires are
present and critical; (4) the ``alg`` header is the one the signing certificate's key implies
(no algorithm substitution); (5) the signature verifies with the signing certificate's key.
Every failure raises :class:`~gatekeeper.errors.VerificationError` with a user-safe message.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from gatekeeper.errors import VerificationError

__all__ = [
    "COSE_MEDIA_TYPE",
    "JWS_MEDIA_TYPE",
    "PAYLOAD_CONTENT_TYPE",
    "SCHEME_SIGNING_AUTHORITY",
    "SCHEME_X509",
    "Envelope",
    "expected_algorithm",
    "load_certificate",
    "parse_envelope",
    "reject_duplicate_keys",
    "verify_integrity",
]

JWS_MEDIA_TYPE = "application/jose+json"
COSE_MEDIA_TYPE = "application/cose"
PAYLOAD_CONTENT_TYPE = "application/vnd.cncf.notary.payload.v1+json"
SCHEME_X509 = "notary.x509"
SCHEME_SIGNING_AUTHORITY = "notary.x509.signingAuthority"

H_SCHEME = "io.cncf.notary.signingScheme"
H_SIGNING_TIME = "io.cncf.notary.signingTime"
H_AUTHENTIC_TIME = "io.cncf.notary.authenticSigningTime"
H_EXPIRY = "io.cncf.notary.expiry"
H_PLUGIN = "io.cncf.notary.verificationPlugin"
H_PLUGIN_MIN_VERSION = "io.cncf.notary.verificationPluginMinVersion"
#: Extended attributes AWS Signer writes; understood only for its verification plugin.
AWS_SIGNER_PLUGIN = "com.amazonaws.signer.notation.plugin"
AWS_PROFILE_VERSION = "com.amazonaws.signer.signingProfileVersion"
AWS_SIGNING_JOB = "com.amazonaws.signer.signingJob"
AWS_PROFILE_ALIAS = "com.amazonaws.signer.signingProfileAlias"
_AWS_ATTRIBUTES = frozenset({AWS_PROFILE_VERSION, AWS_SIGNING_JOB, AWS_PROFILE_ALIAS})
_NOTARY_HEADERS = frozenset(
    {H_SCHEME, H_SIGNING_TIME, H_AUTHENTIC_TIME, H_EXPIRY, H_PLUGIN, H_PLUGIN_MIN_VERSION}
)

_COSE_ALGORITHMS: Mapping[int, str] = {
    -37: "PS256", -38: "PS384", -39: "PS512", -7: "ES256", -35: "ES384", -36: "ES512",
}  # fmt: skip
_HASHES: Mapping[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512,
}  # fmt: skip
_MAX_CERTIFICATES = 10
_COSE_TAG = 18
_COSE_X5CHAIN = 33


@dataclass(frozen=True, slots=True)
class Envelope:
    """A parsed envelope: what was signed, by which certificate chain, with which headers."""

    format: str  # "jws" | "cose"
    algorithm: str
    content_type: str
    signing_scheme: str
    payload: bytes
    to_be_signed: bytes
    signature: bytes
    certificates: tuple[x509.Certificate, ...]
    critical: tuple[str, ...]
    signing_time: datetime | None = None
    authentic_signing_time: datetime | None = None
    expiry: datetime | None = None
    verification_plugin: str | None = None
    verification_plugin_min_version: str | None = None
    #: Protected headers outside the Notary set (e.g. AWS Signer's), as decoded.
    extended: Mapping[str, Any] = field(default_factory=dict)
    has_timestamp_signature: bool = False
    signing_agent: str | None = None


def _fail(message: str, reason: str = "malformed") -> VerificationError:
    return VerificationError(message, context={"reason": reason})


# -- JWS ---------------------------------------------------------------------------------------


def _b64url(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise _fail(f"JWS {what} is not a string")
    try:
        return base64.b64decode(
            text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4), validate=True
        )
    except (binascii.Error, ValueError) as exc:
        raise _fail(f"JWS {what} is not base64url") from exc


def reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads`` hook: a JSON object naming a key twice is refused."""
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        # Two verifiers could read two different values: refuse the ambiguity.
        raise ValueError("duplicate key")
    return dict(pairs)


def _json(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data, object_pairs_hook=reject_duplicate_keys)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise _fail(f"{what} is not a JSON object without duplicate keys") from exc
    if not isinstance(value, dict):
        raise _fail(f"{what} is not a JSON object")
    return value


def _rfc3339(value: object, header: str) -> datetime:
    if not isinstance(value, str):
        raise _fail(f"header {header} is not an RFC 3339 time")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise _fail(f"header {header} is not an RFC 3339 time") from exc
    if parsed.tzinfo is None:
        raise _fail(f"header {header} has no time zone")
    return parsed.astimezone(UTC)


def _parse_jws(data: bytes) -> Envelope:
    document = _json(data, "JWS envelope")
    unknown = set(document) - {"payload", "protected", "header", "signature"}
    if unknown:
        raise _fail(f"JWS envelope has unexpected members {sorted(unknown)}")
    protected_text = document.get("protected")
    payload_text = document.get("payload")
    protected = _json(_b64url(protected_text, "protected header"), "JWS protected header")
    payload = _b64url(payload_text, "payload")
    signature = _b64url(document.get("signature"), "signature")
    unprotected = document.get("header")
    if not isinstance(unprotected, dict):
        raise _fail("JWS envelope has no unprotected header")
    chain = unprotected.get("x5c")
    if not isinstance(chain, list) or not chain or not all(isinstance(c, str) for c in chain):
        raise _fail("JWS header x5c must be a non-empty list of certificates")
    ders: list[bytes] = []
    for item in chain:
        try:
            ders.append(base64.b64decode(item, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise _fail("JWS header x5c holds a value that is not base64") from exc
    overlap = set(protected) & set(unprotected)
    if overlap:
        raise _fail(f"JWS headers {sorted(overlap)} are both protected and unprotected")
    algorithm = protected.get("alg")
    if algorithm not in ("PS256", "PS384", "PS512", "ES256", "ES384", "ES512"):
        raise _fail(f"JWS alg {algorithm!r} is not a Notary Project algorithm")
    crit = protected.get("crit")
    if not isinstance(crit, list) or not all(isinstance(c, str) for c in crit):
        raise _fail("JWS crit header must be a list of header names")
    registered = {"alg", "cty", "crit", "typ", "kid", "x5c", "jku", "jwk", "x5u", "x5t"}
    if set(crit) & registered:
        raise _fail("JWS crit header lists registered headers")
    times = {
        name: _rfc3339(protected[name], name)
        for name in (H_SIGNING_TIME, H_AUTHENTIC_TIME, H_EXPIRY)
        if name in protected
    }
    signing_agent = unprotected.get("io.cncf.notary.signingAgent")
    return _envelope(
        "jws", str(algorithm), protected, tuple(crit), times, payload,
        f"{protected_text}.{payload_text}".encode("ascii"), signature, ders,
        has_timestamp=bool(unprotected.get("io.cncf.notary.timestampSignature")),
        signing_agent=signing_agent if isinstance(signing_agent, str) else None,
        reserved={"alg", "cty", "crit"},
    )  # fmt: skip


# -- COSE --------------------------------------------------------------------------------------


def _cbor(data: bytes, what: str) -> Any:
    try:
        return cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError, OverflowError) as exc:
        raise _fail(f"{what} is not valid CBOR") from exc


def _cose_time(value: object, header: str) -> datetime:
    # Epoch-based date/time (tag 1): cbor2 decodes it to an aware datetime.
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise _fail(f"header {header} is not a CBOR epoch date/time (tag 1)")
    return value.astimezone(UTC)


def _parse_cose(data: bytes) -> Envelope:
    message = _cbor(data, "COSE envelope")
    if not isinstance(message, cbor2.CBORTag) or message.tag != _COSE_TAG:
        raise _fail("COSE envelope is not a tagged COSE_Sign1")
    value = message.value
    if not isinstance(value, list | tuple) or len(value) != 4:
        raise _fail("COSE_Sign1 must be an array of four items")
    protected_bytes, unprotected, payload, signature = value
    if not isinstance(protected_bytes, bytes) or not isinstance(unprotected, Mapping):
        raise _fail("COSE_Sign1 headers are malformed")
    if not isinstance(payload, bytes):
        raise _fail("COSE_Sign1 has no attached payload")
    if not isinstance(signature, bytes):
        raise _fail("COSE_Sign1 signature is not a byte string")
    protected = _cbor(protected_bytes, "COSE protected header")
    if not isinstance(protected, Mapping):
        raise _fail("COSE protected header is not a map")
    algorithm = _COSE_ALGORITHMS.get(protected.get(1))  # type: ignore[arg-type]
    if algorithm is None:
        raise _fail(f"COSE alg {protected.get(1)!r} is not a Notary Project algorithm")
    crit = protected.get(2)
    if not isinstance(crit, list | tuple) or not all(isinstance(c, str | int) for c in crit):
        raise _fail("COSE crit header must be an array of labels")
    if any(isinstance(c, int) and 0 <= c <= 8 for c in crit):
        raise _fail("COSE crit header lists a common parameter (labels 0 to 8)")
    chain = unprotected.get(_COSE_X5CHAIN, protected.get(_COSE_X5CHAIN))
    ders = [chain] if isinstance(chain, bytes) else chain
    if (
        not isinstance(ders, list | tuple)
        or not ders
        or not all(isinstance(c, bytes) for c in ders)
    ):
        raise _fail("COSE x5chain (label 33) must hold the certificate chain")
    named = {key: item for key, item in protected.items() if isinstance(key, str)}
    times = {
        name: _cose_time(named[name], name)
        for name in (H_SIGNING_TIME, H_AUTHENTIC_TIME, H_EXPIRY)
        if name in named
    }
    named["cty"] = protected.get(3)
    unknown_ints = {key for key in protected if isinstance(key, int) and key not in (1, 2, 3, 33)}
    if unknown_ints & {c for c in crit if isinstance(c, int)}:
        raise _fail(f"COSE critical header labels {sorted(unknown_ints)} are not understood")
    to_be_signed = cbor2.dumps(["Signature1", protected_bytes, b"", payload])
    signing_agent = unprotected.get("io.cncf.notary.signingAgent")
    return _envelope(
        "cose", algorithm, named, tuple(str(c) for c in crit), times, payload, to_be_signed,
        signature, list(ders),
        has_timestamp=bool(unprotected.get("io.cncf.notary.timestampSignature")),
        signing_agent=signing_agent if isinstance(signing_agent, str) else None,
        reserved={"cty"},
    )  # fmt: skip


# -- both --------------------------------------------------------------------------------------


def _envelope(
    envelope_format: str,
    algorithm: str,
    headers: Mapping[str, Any],
    crit: tuple[str, ...],
    times: Mapping[str, datetime],
    payload: bytes,
    to_be_signed: bytes,
    signature: bytes,
    ders: list[bytes],
    *,
    has_timestamp: bool,
    signing_agent: str | None,
    reserved: set[str],
) -> Envelope:
    content_type = headers.get("cty")
    if content_type != PAYLOAD_CONTENT_TYPE:
        raise _fail(f"content type {content_type!r} is not {PAYLOAD_CONTENT_TYPE}")
    scheme = headers.get(H_SCHEME)
    if scheme not in (SCHEME_X509, SCHEME_SIGNING_AUTHORITY):
        raise _fail(f"signing scheme {scheme!r} is not notary.x509 or notary.x509.signingAuthority")
    # (3) critical headers: each present and understood; the required ones marked critical.
    plugin = headers.get(H_PLUGIN)
    if plugin is not None and not isinstance(plugin, str):
        raise _fail(f"header {H_PLUGIN} is not a string")
    understood = set(_NOTARY_HEADERS)
    if plugin == AWS_SIGNER_PLUGIN:
        understood |= _AWS_ATTRIBUTES
    for name in crit:
        if name not in headers:
            raise _fail(f"critical header {name} is missing")
        if name not in understood:
            raise _fail(f"critical header {name} is not understood by this verifier", "unsupported")
    must_be_critical = [H_SCHEME] + [
        name
        for name in (H_EXPIRY, H_AUTHENTIC_TIME, H_PLUGIN, H_PLUGIN_MIN_VERSION)
        if name in headers
    ]
    for name in must_be_critical:
        if name not in crit:
            raise _fail(f"header {name} must be marked critical")
    if scheme == SCHEME_X509:
        if H_SIGNING_TIME not in times or H_AUTHENTIC_TIME in times:
            raise _fail(
                "notary.x509 needs io.cncf.notary.signingTime and no authentic signing time"
            )
    elif H_AUTHENTIC_TIME not in times or H_SIGNING_TIME in times:
        raise _fail("notary.x509.signingAuthority needs io.cncf.notary.authenticSigningTime only")
    if len(ders) > _MAX_CERTIFICATES:
        raise _fail(f"certificate chain is longer than {_MAX_CERTIFICATES}")
    try:
        certificates = tuple(load_certificate(der) for der in ders)
    except ValueError as exc:
        raise _fail("certificate chain holds a value that is not a DER certificate") from exc
    min_version = headers.get(H_PLUGIN_MIN_VERSION)
    extended = {
        key: value for key, value in headers.items()
        if key not in _NOTARY_HEADERS and key not in reserved and isinstance(key, str)
    }  # fmt: skip
    return Envelope(
        format=envelope_format,
        algorithm=algorithm,
        content_type=str(content_type),
        signing_scheme=str(scheme),
        payload=payload,
        to_be_signed=to_be_signed,
        signature=signature,
        certificates=certificates,
        critical=crit,
        signing_time=times.get(H_SIGNING_TIME),
        authentic_signing_time=times.get(H_AUTHENTIC_TIME),
        expiry=times.get(H_EXPIRY),
        verification_plugin=plugin,
        verification_plugin_min_version=min_version if isinstance(min_version, str) else None,
        extended=extended,
        has_timestamp_signature=has_timestamp,
        signing_agent=signing_agent,
    )


def load_certificate(der: bytes) -> x509.Certificate:
    """A DER certificate, every field the verifier reads parsed now (``cryptography`` parses
    lazily, so a corrupt issuer would otherwise surface later, mid-verification).

    Raises ``ValueError`` for anything that does not parse."""
    try:
        certificate = x509.load_der_x509_certificate(der)
        _ = (certificate.subject.rfc4514_string(), certificate.issuer.rfc4514_string(),
             certificate.extensions, certificate.public_key(), certificate.signature_hash_algorithm,
             certificate.not_valid_before_utc, certificate.not_valid_after_utc,
             certificate.serial_number)  # fmt: skip
    except (ValueError, x509.InvalidVersion, UnsupportedAlgorithm, x509.DuplicateExtension,
            x509.UnsupportedGeneralNameType) as exc:  # fmt: skip
        raise ValueError(f"certificate does not parse: {type(exc).__name__}") from exc
    return certificate


def parse_envelope(data: bytes, media_type: str) -> Envelope:
    """Steps (1)-(3) for an envelope stored with ``media_type``."""
    if media_type == JWS_MEDIA_TYPE:
        return _parse_jws(data)
    if media_type == COSE_MEDIA_TYPE:
        return _parse_cose(data)
    raise _fail(f"signature envelope media type {media_type!r} is not JWS or COSE", "unsupported")


def expected_algorithm(certificate: x509.Certificate) -> str | None:
    """The algorithm the Notary Project derives from the signing key (Algorithm Selection)."""
    key = certificate.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return {2048: "PS256", 3072: "PS384", 4096: "PS512"}.get(key.key_size)
    if isinstance(key, ec.EllipticCurvePublicKey):
        return {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}.get(
            key.curve.name
        )
    return None


def verify_integrity(envelope: Envelope) -> None:
    """Steps (4) and (5): the algorithm matches the signing key, and the signature verifies."""
    leaf = envelope.certificates[0]
    expected = expected_algorithm(leaf)
    if expected is None:
        raise _fail(
            "the signing certificate's key is not RSA 2048/3072/4096 or ECDSA P-256/384/521",
            "invalid",
        )
    if expected != envelope.algorithm:
        raise _fail(
            f"alg {envelope.algorithm} does not match the signing key (expects {expected})",
            "invalid",
        )
    hash_algorithm = _HASHES[expected[2:]]()
    key = leaf.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(
                envelope.signature, envelope.to_be_signed,
                padding.PSS(padding.MGF1(hash_algorithm), hash_algorithm.digest_size),
                hash_algorithm,
            )  # fmt: skip
        elif isinstance(key, ec.EllipticCurvePublicKey):
            size = (key.curve.key_size + 7) // 8
            if len(envelope.signature) != 2 * size:
                raise InvalidSignature
            r = int.from_bytes(envelope.signature[:size], "big")
            s = int.from_bytes(envelope.signature[size:], "big")
            key.verify(encode_dss_signature(r, s), envelope.to_be_signed, ec.ECDSA(hash_algorithm))
    except InvalidSignature as exc:
        raise _fail(
            f"{envelope.format.upper()} signature does not verify with its signing certificate",
            "invalid",
        ) from exc
