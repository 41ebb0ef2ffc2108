"""The hash chain of the audit trail and its signed checkpoints (pure functions, no I/O).

Record ``n`` of the trail is the *chain entry*::

    {"decision_sha256": <sha256 of the RFC 8785 canonical JSON of the decision document>,
     "policy_input_sha256": <same for the Rego input document, or null>,
     "prev_hash": <record_hash of record n-1; 64 zeros for record 1>,
     "seq": n}

and ``record_hash(n) = sha256(RFC 8785 canonical JSON of that entry)``. The decision document
itself (:meth:`Decision.as_dict`: verdict, violations, images with their evidence digests,
policy revision, ticket correlation, caller, latency, Kubernetes context ...) is stored as its
canonical JSON, so ``decision_sha256`` is a plain sha256 over the stored bytes.

Why two levels (entry -> document) instead of hashing the document inline: an export filtered
by ticket can carry the full documents of the matching records and only the small entries of
the others ("links"), and still be verified offline end to end against a signed checkpoint.

A *checkpoint* is an Ed25519 signature over the canonical JSON of
``{"created_at", "key_id", "pruned_through"?, "record_hash", "seq", "type"}``: whoever holds the
public key can check that the trail up to ``seq`` ended in ``record_hash`` when it was signed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gatekeeper.errors import ConfigurationError, InvalidInputError

__all__ = [
    "write_signing_key",
    "CHECKPOINT_TYPE",
    "GENESIS_HASH",
    "Checkpoint",
    "CheckpointSigner",
    "canonical_json",
    "entry_bytes",
    "key_id_of",
    "load_public_key",
    "load_signing_key",
    "record_hash",
    "sha256_hex",
    "verify_checkpoint_signature",
]

GENESIS_HASH = "0" * 64
CHECKPOINT_TYPE = "gatekeeper.audit.checkpoint/v1"


def canonical_json(value: Any) -> bytes:
    """RFC 8785 (JCS) canonical JSON; refuses values JSON cannot carry exactly.

    Documents whose every key is ASCII and whose every float prints the same in Python and
    ECMAScript take the C ``json`` encoder (same bytes, a tenth of the time); anything else
    goes through the reference implementation. A unit test compares both on edge cases.
    """
    if _fast_path_safe(value):
        try:
            return json.dumps(
                value, ensure_ascii=False, sort_keys=True, separators=(",", ":"),
                allow_nan=False,
            ).encode("utf-8")
        except (TypeError, ValueError, UnicodeEncodeError):
            pass  # the reference implementation below says what is wrong
    try:
        return bytes(rfc8785.dumps(value))
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise InvalidInputError(f"document cannot be canonicalised (RFC 8785): {exc}") from exc


_MAX_SAFE_INTEGER = 2**53 - 1


def _fast_path_safe(value: Any) -> bool:
    """True when ``json.dumps`` (sorted, compact) is byte-identical to RFC 8785 for ``value``.

    They differ only on: object keys outside ASCII (RFC 8785 sorts by UTF-16 code units),
    floats that Python prints differently from ECMAScript (integral values ``12.0`` vs ``12``,
    exponents below 1e-4 or from 1e16), integers beyond 2**53 (RFC 8785 refuses them), and
    non-JSON types. Strings are escaped identically (``ensure_ascii=False``).
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str) or item is None or isinstance(item, bool):
            continue
        if isinstance(item, int):
            if -_MAX_SAFE_INTEGER <= item <= _MAX_SAFE_INTEGER:
                continue
            return False
        if isinstance(item, float):
            magnitude = abs(item)
            if item.is_integer() or not 1e-4 <= magnitude < 1e16:
                return False
            continue
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str) or not key.isascii():
                    return False
                stack.append(child)
            continue
        if isinstance(item, (list, tuple)):
            stack.extend(item)
            continue
        return False
    return True


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entry_bytes(
    seq: int, prev_hash: str, decision_sha256: str, policy_input_sha256: str | None
) -> bytes:
    """Canonical JSON of a chain entry, composed directly (same bytes as ``canonical_json``).

    Every member is an ASCII key with a hex string, null or integer value, and the keys are
    written in RFC 8785 order, so plain formatting is exact (a unit test checks it) and costs
    a microsecond instead of a general canonicaliser's tens.
    """
    policy = "null" if policy_input_sha256 is None else f'"{policy_input_sha256}"'
    return (
        f'{{"decision_sha256":"{decision_sha256}","policy_input_sha256":{policy},'
        f'"prev_hash":"{prev_hash}","seq":{int(seq)}}}'
    ).encode()


def record_hash(
    seq: int, prev_hash: str, decision_sha256: str, policy_input_sha256: str | None
) -> str:
    return hashlib.sha256(
        entry_bytes(seq, prev_hash, decision_sha256, policy_input_sha256)
    ).hexdigest()


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of the sha256 of the raw public key: names the key in checkpoints."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement: the trail up to ``seq`` ended in ``record_hash``."""

    seq: int
    record_hash: str
    created_at: str
    key_id: str
    signature: str  # base64 of the Ed25519 signature over :meth:`payload`
    pruned_through: int | None = None

    def payload(self) -> bytes:
        body: dict[str, Any] = {
            "type": CHECKPOINT_TYPE,
            "seq": self.seq,
            "record_hash": self.record_hash,
            "created_at": self.created_at,
            "key_id": self.key_id,
        }
        if self.pruned_through is not None:
            body["pruned_through"] = self.pruned_through
        return canonical_json(body)

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "record_hash": self.record_hash,
            "created_at": self.created_at,
            "key_id": self.key_id,
            "pruned_through": self.pruned_through,
            "signature": self.signature,
        }

    @classmethod
    def from_dict(cls, value: dict[str, Any], *, where: str) -> Checkpoint:
        try:
            pruned = value.get("pruned_through")
            return cls(
                seq=int(value["seq"]),
                record_hash=str(value["record_hash"]),
                created_at=str(value["created_at"]),
                key_id=str(value["key_id"]),
                signature=str(value["signature"]),
                pruned_through=int(pruned) if pruned is not None else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"{where}: malformed checkpoint ({exc})") from exc


class CheckpointSigner:
    """Signs checkpoints with the Ed25519 key from configuration."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id_of(self.public_key)

    def sign(
        self, seq: int, head_hash: str, *, now: datetime | None = None,
        pruned_through: int | None = None,
    ) -> Checkpoint:
        created = (now or datetime.now(UTC)).astimezone(UTC)
        unsigned = Checkpoint(
            seq=seq,
            record_hash=head_hash,
            created_at=created.isoformat(timespec="microseconds").replace("+00:00", "Z"),
            key_id=self.key_id,
            signature="",
            pruned_through=pruned_through,
        )
        signature = base64.b64encode(self._key.sign(unsigned.payload())).decode()
        return Checkpoint(
            unsigned.seq, unsigned.record_hash, unsigned.created_at, unsigned.key_id,
            signature, pruned_through,
        )


def verify_checkpoint_signature(checkpoint: Checkpoint, public_key: Ed25519PublicKey) -> str | None:
    """None when ``checkpoint`` was signed by ``public_key``; otherwise why not."""
    expected = key_id_of(public_key)
    if checkpoint.key_id != expected:
        return f"signed by key {checkpoint.key_id}, not by the configured key {expected}"
    try:
        signature = base64.b64decode(checkpoint.signature, validate=True)
        public_key.verify(signature, checkpoint.payload())
    except (InvalidSignature, ValueError):
        return "its signature is not valid"
    return None


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM (PKCS#8) file, unencrypted."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read audit signing key {path}: {exc.strerror}") from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"audit signing key {path} is not an unencrypted PEM private key"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError(f"audit signing key {path} is not an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file; a private key file is accepted too."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read audit public key {path}: {exc.strerror}") from exc
    if b"PRIVATE KEY" in data:
        return load_signing_key(path).public_key()
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise ConfigurationError(f"audit public key {path} is not a PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigurationError(f"audit public key {path} is not an Ed25519 key")
    return key


def write_signing_key(file: Path) -> str:
    """Create a new Ed25519 checkpoint signing key at ``file`` (0600, never overwriting) and
    its public key at ``FILE.pub``; return the key id. ConfigurationError if it cannot."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(private)
        file.with_name(file.name + ".pub").write_bytes(public)
    except OSError as exc:
        raise ConfigurationError(f"cannot write {file}: {exc.strerror}") from exc
    return key_id_of(key.public_key())
