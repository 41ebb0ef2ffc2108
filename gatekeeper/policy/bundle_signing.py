"""OPA bundle signing: ``.signatures.json`` with a JWT over the hashes of the bundle's files.

The format OPA verifies (``opa run --verification-key``, or ``keys`` + ``bundles.X.signing`` in
a sidecar's configuration), see https://www.openpolicyagent.org/docs/management-bundles
("Signing"): ``{"signatures": [JWT]}``, the JWT's payload ``{"files": [{"name", "hash",
"algorithm": "SHA-256"}, ...], "keyid": ...}``. A file's hash is the SHA-256 of its bytes,
except for OPA's structured documents (``.manifest``, ``data.json``, ``data.yaml``), which are
hashed over a canonical JSON form (keys sorted at every level, no insignificant whitespace,
numbers as written, strings with only the escapes JSON requires), so that whitespace never
breaks a signature. The canonical form below was checked against ``opa sign``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import jwt
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gatekeeper.errors import ConfigurationError, InvalidInputError

__all__ = ["BundleSigner", "canonical_json", "file_hash"]

_STRUCTURED = frozenset({".manifest", "data.json", "data.yaml", "data.yml"})


class _Number(str):
    """A JSON number kept as written (``1e3`` stays ``1e3``, as OPA hashes it)."""


def _encode_string(text: str) -> str:
    # Go's encoder without HTML escaping: \" \\ \n \r \t \b \f, other controls as \u00XX,
    # and U+2028/U+2029 escaped; everything else as raw UTF-8.
    out = ['"']
    for char in text:
        code = ord(char)
        if char == '"':
            out.append('\\"')
        elif char == "\\":
            out.append("\\\\")
        elif char in "\n\r\t\b\f":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}[char])
        elif code < 0x20 or code in (0x2028, 0x2029):
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _encode(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ",".join(
            f"{_encode_string(key)}:{_encode(value[key])}" for key in sorted(value)
        ) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_encode(item) for item in value) + "]"
    if isinstance(value, _Number):
        return str.__str__(value)
    if isinstance(value, str):
        return _encode_string(value)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    return json.dumps(value)  # numbers from YAML


def canonical_json(content: bytes, name: str) -> bytes:
    """The form OPA hashes a structured document in."""
    try:
        if name.endswith((".yaml", ".yml")):
            value = yaml.safe_load(content)
        else:
            value = json.loads(content, parse_float=_Number, parse_int=_Number)
    except (ValueError, yaml.YAMLError) as exc:
        raise InvalidInputError(f"bundle file {name} is not valid JSON/YAML: {exc}") from exc
    return _encode(value).encode()


def file_hash(name: str, content: bytes) -> str:
    """The hex SHA-256 OPA expects for ``name`` in the signature's ``files``."""
    if PurePosixPath(name).name in _STRUCTURED:
        content = canonical_json(content, name)
    return hashlib.sha256(content).hexdigest()


class BundleSigner:
    """Signs bundles with one private key (RSA: RS256, EC P-256: ES256)."""

    def __init__(self, private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
                 key_id: str) -> None:
        if isinstance(private_key, rsa.RSAPrivateKey):
            self.algorithm = "RS256"
        elif isinstance(private_key, ec.EllipticCurvePrivateKey) and isinstance(
            private_key.curve, ec.SECP256R1
        ):
            self.algorithm = "ES256"
        else:
            raise ConfigurationError("bundle signing key must be RSA or EC P-256")
        self._key = private_key
        self.key_id = key_id

    @classmethod
    def from_file(cls, path: Path, key_id: str) -> BundleSigner:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read bundle signing key {path}: {exc.strerror}"
            ) from exc
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(
                f"bundle signing key {path} is not an unencrypted PEM private key"
            ) from exc
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise ConfigurationError(f"bundle signing key {path} must be RSA or EC P-256")
        return cls(key, key_id)

    def public_key_pem(self) -> str:
        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

    def signatures_file(self, files: Mapping[str, bytes]) -> bytes:
        """``.signatures.json`` for the bundle members ``files`` (names as in the tarball,
        without a leading ``/``)."""
        payload = {
            "files": [
                {"name": name, "hash": file_hash(name, content), "algorithm": "SHA-256"}
                for name, content in sorted(files.items())
            ],
            "keyid": self.key_id,
        }
        token = jwt.encode(payload, self._key, algorithm=self.algorithm)
        return json.dumps({"signatures": [token]}, sort_keys=True).encode()
