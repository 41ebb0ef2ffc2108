"""Key-based verification for every key type cosign produces."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from gatekeeper.errors import ConfigurationError
from gatekeeper.verify import load_public_key


def _pem(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.mark.parametrize(
    ("curve", "hash_algorithm", "name"),
    [
        (ec.SECP256R1(), hashes.SHA256(), "ecdsa-p256"),
        (ec.SECP384R1(), hashes.SHA384(), "ecdsa-p384"),
    ],
)
def test_ecdsa_keys(
    curve: ec.EllipticCurve, hash_algorithm: hashes.HashAlgorithm, name: str
) -> None:
    private = ec.generate_private_key(curve)
    key = load_public_key(_pem(private.public_key()))
    signature = private.sign(b"payload", ec.ECDSA(hash_algorithm))

    assert key.algorithm == name
    assert key.verify(signature, b"payload")
    assert not key.verify(signature, b"payload!")


def test_rsa_pkcs1v15_and_pss() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key = load_public_key(_pem(private.public_key()))
    pkcs1 = private.sign(b"payload", padding.PKCS1v15(), hashes.SHA256())
    pss = private.sign(
        b"payload", padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.MAX_LENGTH),
        hashes.SHA256(),
    )  # fmt: skip

    assert key.algorithm == "rsa-2048"
    assert key.verify(pkcs1, b"payload")
    assert key.verify(pss, b"payload")
    assert not key.verify(pkcs1, b"other")


def test_ed25519() -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    key = load_public_key(_pem(private.public_key()))

    assert key.algorithm == "ed25519"
    assert key.verify(private.sign(b"payload"), b"payload")
    assert not key.verify(private.sign(b"payload"), b"other")


def test_weak_rsa_and_garbage_are_refused() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)

    with pytest.raises(ConfigurationError, match="RSA keys need at least 2048 bits"):
        load_public_key(_pem(weak.public_key()), where="authorities[0].keys[0]")
    with pytest.raises(ConfigurationError, match=r"^key is not a PEM public key$"):
        load_public_key("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")


def test_key_id_is_the_sha256_of_the_spki() -> None:
    import hashlib

    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    assert load_public_key(_pem(public)).key_id == hashlib.sha256(der).hexdigest()
