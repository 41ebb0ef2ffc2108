"""The transparency-log (Rekor) keys of a Sigstore trusted root, read with ``json`` and
``cryptography`` alone.

A trusted root's ``tlogs`` entry carries a log's ``baseUrl``, ``hashAlgorithm``, ``logId`` and a
``publicKey``: ``rawBytes`` (the DER SubjectPublicKeyInfo, base64), ``keyDetails`` (the
signature scheme) and ``validFor`` (``start``, optional ``end``: the period in which the log
signed with the key). A log entry names its key by ``logID``, the hex SHA-256 of that DER; a
signed entry timestamp counts only if it verifies with the key so named and the entry was
integrated within the key's validity period.

Structural problems (not an object, bad base64, a malformed time) make the whole trusted root
invalid when it is loaded. A key this module cannot use (a signature scheme it does not know,
DER that is not a key of the stated type) is kept with the reason, and an entry signed by it is
rejected with that reason naming the key, so that one new kind of log in a trusted root does
not stop every other log's entries from being checked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from gatekeeper.errors import ConfigurationError

__all__ = ["LogKey", "parse_log_keys"]

_ECDSA = {
    "PKIX_ECDSA_P256_SHA_256": (ec.SECP256R1, hashes.SHA256),
    "PKIX_ECDSA_P384_SHA_384": (ec.SECP384R1, hashes.SHA384),
    "PKIX_ECDSA_P521_SHA_512": (ec.SECP521R1, hashes.SHA512),
}
_RSA_PKCS1_SHA256 = frozenset(
    {
        "PKCS1_RSA_PKCS1V5",
        "PKIX_RSA_PKCS1V5",
        "PKIX_RSA_PKCS1V15_2048_SHA256",
        "PKIX_RSA_PKCS1V15_3072_SHA256",
        "PKIX_RSA_PKCS1V15_4096_SHA256",
    }
)
_ED25519 = "PKIX_ED25519"

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey


@dataclass(frozen=True, slots=True)
class LogKey:
    """One ``tlogs`` key. ``public_key`` is ``None`` when it cannot be used (``problem`` says
    why). ``valid_from``/``valid_until`` are POSIX seconds (``None``: unbounded)."""

    key_id: str
    base_url: str
    key_details: str
    valid_from: float | None
    valid_until: float | None
    public_key: PublicKey | None
    problem: str | None

    def describe(self) -> str:
        """``log key <hex id> (<baseUrl>)``: how messages name the key."""
        return f"log key {self.key_id} ({self.base_url})"

    def valid_at(self, when: float) -> bool:
        """Inclusive at both ends, as sigstore-go's ``TransparencyLog`` validity is."""
        if self.valid_from is not None and when < self.valid_from:
            return False
        return self.valid_until is None or when <= self.valid_until

    def validity(self) -> str:
        start = _iso(self.valid_from) if self.valid_from is not None else "the beginning"
        end = _iso(self.valid_until) if self.valid_until is not None else "no end"
        return f"{start} to {end}"

    def verify(self, signature: bytes, data: bytes) -> bool:
        key = self.public_key
        try:
            if isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(signature, data, ec.ECDSA(_ECDSA[self.key_details][1]()))
            elif isinstance(key, rsa.RSAPublicKey):
                key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
            elif isinstance(key, ed25519.Ed25519PublicKey):
                key.verify(signature, data)
            else:
                return False
        except InvalidSignature:
            return False
        return True


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat().replace("+00:00", "Z")


def parse_log_keys(tlogs: Sequence[object], name: str) -> tuple[LogKey, ...]:
    """The keys of a trusted root's ``tlogs`` list; :class:`ConfigurationError` naming the
    field (``tlogs.<n>.<field>``) when an entry is malformed."""
    return tuple(_parse_entry(entry, f"tlogs.{index}", name) for index, entry in enumerate(tlogs))


def _invalid(name: str, where: str, problem: str) -> ConfigurationError:
    return ConfigurationError(f"{name} is not a valid Sigstore trusted root: {where}: {problem}")


def _object(value: object, name: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _invalid(name, where, "not an object")
    return value


def _string(document: dict[str, Any], field: str, name: str, where: str) -> str:
    value = document.get(field)
    if not isinstance(value, str) or not value:
        raise _invalid(name, f"{where}.{field}", "missing or not a string")
    return value


def _parse_entry(entry: object, where: str, name: str) -> LogKey:
    document = _object(entry, name, where)
    base_url = _string(document, "baseUrl", name, where)
    _string(document, "hashAlgorithm", name, where)
    public = _object(document.get("publicKey"), name, f"{where}.publicKey")
    raw_text = _string(public, "rawBytes", name, f"{where}.publicKey")
    try:
        raw = base64.b64decode(raw_text, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise _invalid(name, f"{where}.publicKey.rawBytes", "not base64") from exc
    details = _string(public, "keyDetails", name, f"{where}.publicKey")
    valid_from, valid_until = _validity(public.get("validFor"), name, f"{where}.publicKey.validFor")
    key, problem = _load(raw, details)
    if key is not None:
        raw = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    return LogKey(
        key_id=hashlib.sha256(raw).hexdigest(), base_url=base_url, key_details=details,
        valid_from=valid_from, valid_until=valid_until, public_key=key, problem=problem,
    )  # fmt: skip


def _validity(value: object, name: str, where: str) -> tuple[float | None, float | None]:
    if value is None:
        return None, None
    period = _object(value, name, where)
    bounds: list[float | None] = []
    for field in ("start", "end"):
        text = period.get(field)
        if text is None:
            bounds.append(None)
            continue
        if not isinstance(text, str):
            raise _invalid(name, f"{where}.{field}", "not a string")
        try:
            moment = datetime.fromisoformat(text)
        except ValueError as exc:
            raise _invalid(name, f"{where}.{field}", f"{text!r} is not an RFC 3339 time") from exc
        if moment.tzinfo is None:
            raise _invalid(name, f"{where}.{field}", f"{text!r} has no time zone")
        bounds.append(moment.timestamp())
    start, end = bounds
    if start is None:
        # sigstore's TimeRange requires one (conformance: trust-root-tlog-missing-validity-start)
        raise _invalid(name, f"{where}.start", "missing")
    if end is not None and end < start:
        raise _invalid(name, f"{where}.end", "before start")
    return start, end


def _load(raw: bytes, details: str) -> tuple[PublicKey | None, str | None]:
    if details in _ECDSA:
        expected: tuple[type, ...] = (ec.EllipticCurvePublicKey,)
    elif details in _RSA_PKCS1_SHA256:
        expected = (rsa.RSAPublicKey,)
    elif details == _ED25519:
        expected = (ed25519.Ed25519PublicKey,)
    else:
        return None, f"has unsupported key details {details}"
    try:
        key = serialization.load_der_public_key(raw)
    except (ValueError, UnsupportedAlgorithm):
        return None, f"is not a valid {details} key"
    if not isinstance(key, expected) or (
        isinstance(key, ec.EllipticCurvePublicKey) and not isinstance(key.curve, _ECDSA[details][0])
    ):
        return None, f"is not a valid {details} key"
    assert isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey)
    return key, None
