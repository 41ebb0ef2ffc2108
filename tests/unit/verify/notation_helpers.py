"""Locally made X.509 chains and Notary Project envelopes for Notation unit tests.

The certificates are made with ``cryptography`` (a root CA, an intermediate, a signing leaf),
the envelopes are JWS and COSE built the way the Notary Project specification describes, so the
verifier is tested on inputs whose every byte the test controls (AWS Signer's signing-authority
scheme included, which the notation CLI only produces through AWS's plugin).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gatekeeper.domain.reference import Digest
from gatekeeper.verify.discovery import NotationSignature
from gatekeeper.verify.notation import TargetArtifact

NOW = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)
PAYLOAD_TYPE = "application/vnd.cncf.notary.payload.v1+json"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
AWS_PLUGIN = "com.amazonaws.signer.notation.plugin"
PROFILE = "arn:aws:signer:us-west-2:111122223333:/signing-profiles/release_profile"
PROFILE_VERSION = f"{PROFILE}/AbCdEf1234"

Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def name(common_name: str, organization: str = "Acme Rockets") -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "WA"),
        x509.NameAttribute(NameOID.LOCALITY_NAME, "Seattle"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])  # fmt: skip


def _usage(*, sign: bool, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=sign, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign, crl_sign=cert_sign,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip


def certificate(
    subject: x509.Name,
    key: Key,
    issuer: x509.Name,
    issuer_key: Key,
    *,
    ca: bool,
    not_before: datetime = NOW - timedelta(days=30),
    not_after: datetime = NOW + timedelta(days=365),
    serial: int | None = None,
    extensions: list[tuple[x509.ExtensionType, bool]] | None = None,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(issuer).public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
    )  # fmt: skip
    if extensions is None:
        if ca:
            extensions = [(x509.BasicConstraints(ca=True, path_length=None), True),
                          (_usage(sign=False, cert_sign=True), True)]  # fmt: skip
        else:
            extensions = [(x509.BasicConstraints(ca=False, path_length=None), True),
                          (_usage(sign=True, cert_sign=False), True),
                          (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), False)]  # fmt: skip
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass
class Chain:
    """root -> intermediate -> leaf; ``certificates`` is the envelope order (leaf first)."""

    leaf_key: Key
    leaf: x509.Certificate
    intermediate: x509.Certificate
    root: x509.Certificate
    root_key: Key
    intermediate_key: Key

    @property
    def certificates(self) -> list[x509.Certificate]:
        return [self.leaf, self.intermediate, self.root]

    @property
    def root_pem(self) -> str:
        return self.root.public_bytes(serialization.Encoding.PEM).decode()


class Validity(TypedDict):
    not_before: datetime
    not_after: datetime


def make_chain(
    leaf_key: Key | None = None,
    *,
    organization: str = "Acme Rockets",
    leaf_subject: str = "SecureBuilder",
    leaf_not_after: datetime | None = None,
    leaf_extensions: list[tuple[x509.ExtensionType, bool]] | None = None,
    now: datetime = NOW,
) -> Chain:
    """Valid from ``now`` - 30 days to ``now`` + 1 year (the leaf until ``leaf_not_after``)."""
    window: Validity = {
        "not_before": now - timedelta(days=30), "not_after": now + timedelta(days=365)
    }
    root_key = ec.generate_private_key(ec.SECP384R1())
    intermediate_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = leaf_key or ec.generate_private_key(ec.SECP256R1())
    root_name = name(f"{organization} Root CA", organization)
    intermediate_name = name(f"{organization} Signing CA", organization)
    root = certificate(root_name, root_key, root_name, root_key, ca=True, **window)
    intermediate = certificate(intermediate_name, intermediate_key, root_name, root_key, ca=True,
                               **window)  # fmt: skip
    leaf = certificate(
        name(leaf_subject, organization), leaf_key, intermediate_name, intermediate_key,
        ca=False, not_before=window["not_before"], not_after=leaf_not_after or window["not_after"],
        extensions=leaf_extensions,
    )  # fmt: skip
    return Chain(leaf_key, leaf, intermediate, root, root_key, intermediate_key)


def _algorithm(key: Key) -> tuple[str, int, hashes.HashAlgorithm]:
    if isinstance(key, rsa.RSAPrivateKey):
        bits = {2048: 256, 3072: 384, 4096: 512}[key.key_size]
        return f"PS{bits}", {256: -37, 384: -38, 512: -39}[bits], _hash(bits)
    bits = {"secp256r1": 256, "secp384r1": 384, "secp521r1": 512}[key.curve.name]
    return f"ES{bits}", {256: -7, 384: -35, 512: -36}[bits], _hash(bits)


def _hash(bits: int) -> hashes.HashAlgorithm:
    return {256: hashes.SHA256(), 384: hashes.SHA384(), 512: hashes.SHA512()}[bits]


def _sign(key: Key, data: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PSS(padding.MGF1(algorithm), algorithm.digest_size),
                        algorithm)  # fmt: skip
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(algorithm)))
    size = (key.curve.key_size + 7) // 8
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


@dataclass(frozen=True)
class Target:
    digest: Digest
    size: int = 1234
    media_type: str = MANIFEST_TYPE

    @property
    def artifact(self) -> TargetArtifact:
        return TargetArtifact(self.media_type, self.digest, self.size)

    def payload(self, **changes: Any) -> bytes:
        descriptor = {"mediaType": self.media_type, "digest": str(self.digest), "size": self.size}
        return json.dumps({"targetArtifact": descriptor | changes}).encode()


def target(content: str = "image") -> Target:
    return Target(Digest("sha256", hashlib.sha256(content.encode()).hexdigest()))


@dataclass
class EnvelopeSpec:
    """What to put in an envelope; the defaults make a valid ``notary.x509`` signature."""

    chain: Chain
    payload: bytes
    scheme: str = "notary.x509"
    signing_time: datetime = NOW - timedelta(minutes=5)
    expiry: datetime | None = None
    extra_protected: Mapping[str, Any] = field(default_factory=dict)
    extra_critical: tuple[str, ...] = ()
    crit: list[str] | None = None
    algorithm: str | None = None
    certificates: list[x509.Certificate] | None = None
    signing_key: Key | None = None

    def aws_signer(self, profile_version: str = PROFILE_VERSION) -> EnvelopeSpec:
        self.scheme = "notary.x509.signingAuthority"
        self.extra_protected = {
            "io.cncf.notary.verificationPlugin": AWS_PLUGIN,
            "com.amazonaws.signer.signingProfileVersion": profile_version,
            "com.amazonaws.signer.signingJob": "arn:aws:signer:us-west-2:111122223333:/signing-jobs/1",
        }
        self.extra_critical = (
            "io.cncf.notary.verificationPlugin", "com.amazonaws.signer.signingProfileVersion",
            "com.amazonaws.signer.signingJob",
        )  # fmt: skip
        return self

    def _crit(self) -> list[str]:
        if self.crit is not None:
            return self.crit
        crit = ["io.cncf.notary.signingScheme"]
        if self.scheme != "notary.x509":
            crit.append("io.cncf.notary.authenticSigningTime")
        if self.expiry is not None:
            crit.append("io.cncf.notary.expiry")
        return crit + list(self.extra_critical)

    def _time_header(self) -> str:
        if self.scheme == "notary.x509":
            return "io.cncf.notary.signingTime"
        return "io.cncf.notary.authenticSigningTime"

    def _chain(self) -> list[x509.Certificate]:
        return self.certificates if self.certificates is not None else self.chain.certificates

    def jws(self) -> bytes:
        key = self.signing_key or self.chain.leaf_key
        name_, _, algorithm = _algorithm(self.chain.leaf_key)
        protected: dict[str, Any] = {
            "alg": self.algorithm or name_,
            "cty": PAYLOAD_TYPE,
            "crit": self._crit(),
            "io.cncf.notary.signingScheme": self.scheme,
            self._time_header(): _rfc3339(self.signing_time),
        }
        if self.expiry is not None:
            protected["io.cncf.notary.expiry"] = _rfc3339(self.expiry)
        protected |= dict(self.extra_protected)
        encoded_protected = _b64url(json.dumps(protected).encode())
        encoded_payload = _b64url(self.payload)
        signature = _sign(key, f"{encoded_protected}.{encoded_payload}".encode(), algorithm)
        return json.dumps({
            "payload": encoded_payload,
            "protected": encoded_protected,
            "header": {
                "x5c": [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode()
                        for c in self._chain()],
                "io.cncf.notary.signingAgent": "gatekeeper-tests/1",
            },
            "signature": _b64url(signature),
        }).encode()  # fmt: skip

    def cose(self) -> bytes:
        key = self.signing_key or self.chain.leaf_key
        _, label, algorithm = _algorithm(self.chain.leaf_key)
        cose_labels = {"PS256": -37, "PS384": -38, "PS512": -39, "ES256": -7, "ES384": -35,
                       "ES512": -36}  # fmt: skip
        protected: dict[Any, Any] = {
            1: cose_labels[self.algorithm] if self.algorithm else label,
            2: self._crit(),
            3: PAYLOAD_TYPE,
            "io.cncf.notary.signingScheme": self.scheme,
            self._time_header(): cbor2.CBORTag(1, int(self.signing_time.timestamp())),
        }
        if self.expiry is not None:
            protected["io.cncf.notary.expiry"] = cbor2.CBORTag(1, int(self.expiry.timestamp()))
        protected |= dict(self.extra_protected)
        protected_bytes = cbor2.dumps(protected)
        to_be_signed = cbor2.dumps(["Signature1", protected_bytes, b"", self.payload])
        signature = _sign(key, to_be_signed, algorithm)
        unprotected = {33: [c.public_bytes(serialization.Encoding.DER) for c in self._chain()],
                       "io.cncf.notary.signingAgent": "gatekeeper-tests/1"}  # fmt: skip
        return cbor2.dumps(cbor2.CBORTag(18, [protected_bytes, unprotected, self.payload, signature]))

    def signature(self, envelope_format: str) -> NotationSignature:
        if envelope_format == "jws":
            return NotationSignature(self.jws(), "application/jose+json", "sha256:" + "1" * 64,
                                     "notation:referrers-api")  # fmt: skip
        return NotationSignature(self.cose(), "application/cose", "sha256:" + "2" * 64,
                                 "notation:referrers-api")  # fmt: skip


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def trust_config(
    store: Mapping[str, list[str]],
    *,
    identities: list[str],
    scopes: list[str] | None = None,
    level: str = "strict",
    override: Mapping[str, str] | None = None,
    revocation: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    verification: dict[str, Any] = {"level": level}
    if override:
        verification["override"] = dict(override)
    config: dict[str, Any] = {
        "trust_store": dict(store),
        "trust_policy": {"version": "1.0", "trustPolicies": [{
            "name": "images", "registryScopes": scopes or ["*"],
            "signatureVerification": verification, "trustStores": list(store),
            "trustedIdentities": identities,
        }]},
    }  # fmt: skip
    if revocation is not None:
        config["revocation"] = dict(revocation)
    return config
