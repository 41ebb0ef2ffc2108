"""Public keys for key-based verification: ECDSA P-256/P-384/P-521, RSA and Ed25519 (PEM).

The hash follows what cosign/sigstore use for each key type (sigstore-go
``signature.LoadDefaultSignerVerifier``): SHA-256 for P-256 and RSA, SHA-384 for P-384,
SHA-512 for P-521; Ed25519 signs the message itself.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from gatekeeper.errors import ConfigurationError

__all__ = ["PublicKeyType", "VerificationKey", "load_public_key"]

PublicKeyType = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey

_MIN_RSA_BITS = 2048


@dataclass(frozen=True, slots=True, eq=False)
class VerificationKey:
    """A trusted public key; ``key_id`` is the hex SHA-256 of its DER SubjectPublicKeyInfo."""

    key: PublicKeyType
    key_id: str
    algorithm: str  # "ecdsa-p256", "ecdsa-p384", "rsa-3072", "ed25519" ...

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VerificationKey) and other.key_id == self.key_id

    def __hash__(self) -> int:
        return hash(self.key_id)

    @property
    def spki_der(self) -> bytes:
        return self.key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def hash_algorithm(self) -> hashes.HashAlgorithm:
        if isinstance(self.key, ec.EllipticCurvePublicKey):
            size = self.key.curve.key_size
            if size > 384:
                return hashes.SHA512()
            if size > 256:
                return hashes.SHA384()
        return hashes.SHA256()

    def verify(self, signature: bytes, message: bytes) -> bool:
        """``True`` when ``signature`` is this key's signature over ``message``."""
        try:
            if isinstance(self.key, ed25519.Ed25519PublicKey):
                self.key.verify(signature, message)
            elif isinstance(self.key, ec.EllipticCurvePublicKey):
                self.key.verify(signature, message, ec.ECDSA(self.hash_algorithm()))
            else:
                try:
                    self.key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
                except InvalidSignature:
                    self.key.verify(
                        signature,
                        message,
                        padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.AUTO),
                        hashes.SHA256(),
                    )
        except InvalidSignature:
            return False
        return True

    def verify_prehashed(self, signature: bytes, digest: bytes, algorithm: str) -> bool:
        """Verify over a message known only by its digest (not possible for Ed25519)."""
        hash_algorithm: hashes.HashAlgorithm = {
            "sha256": hashes.SHA256(),
            "sha384": hashes.SHA384(),
            "sha512": hashes.SHA512(),
        }[algorithm]
        if len(digest) != hash_algorithm.digest_size:
            return False
        try:
            if isinstance(self.key, ed25519.Ed25519PublicKey):
                return False
            if isinstance(self.key, ec.EllipticCurvePublicKey):
                self.key.verify(signature, digest, ec.ECDSA(Prehashed(hash_algorithm)))
            else:
                self.key.verify(signature, digest, padding.PKCS1v15(), Prehashed(hash_algorithm))
        except InvalidSignature:
            return False
        return True


def load_public_key(pem: str | bytes, *, where: str = "key") -> VerificationKey:
    """Load a PEM public key, refusing weak or unsupported ones with a message naming ``where``."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigurationError(f"{where} is not a PEM public key") from exc
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1 | ec.SECP384R1 | ec.SECP521R1):
            raise ConfigurationError(f"{where}: unsupported curve {key.curve.name}")
        algorithm = f"ecdsa-p{key.curve.key_size}"
    elif isinstance(key, rsa.RSAPublicKey):
        if key.key_size < _MIN_RSA_BITS:
            raise ConfigurationError(f"{where}: RSA keys need at least {_MIN_RSA_BITS} bits")
        algorithm = f"rsa-{key.key_size}"
    elif isinstance(key, ed25519.Ed25519PublicKey):
        algorithm = "ed25519"
    else:
        raise ConfigurationError(f"{where}: unsupported key type {type(key).__name__}")
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return VerificationKey(key, hashlib.sha256(der).hexdigest(), algorithm)
