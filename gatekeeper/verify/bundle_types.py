"""What a Sigstore bundle is checked against (the artifact) and what its verification proves."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from gatekeeper.domain.reference import parse_digest
from gatekeeper.errors import InvalidInputError
from gatekeeper.verify.in_toto import (
    IN_TOTO_PAYLOAD_TYPE,
    parse_in_toto_statement,
    reject,
    statement_names_digest,
    statement_names_sha256,
)
from gatekeeper.verify.trust import CertificateIdentity

__all__ = ["ArtifactInput", "BundleOutcome", "check_dsse_subject"]


@dataclass(frozen=True, slots=True)
class ArtifactInput:
    """What the bundle is said to sign: the bytes, or only their SHA-256.

    An in-toto subject may name the artifact by ``sha256`` or ``sha512`` (npm provenance names
    the package tarball by ``sha512`` only); ``sha512`` is known when the bytes are.
    """

    sha256: bytes
    content: bytes | None = None
    sha512: bytes | None = None

    @classmethod
    def from_bytes(cls, content: bytes) -> ArtifactInput:
        return cls(hashlib.sha256(content).digest(), content, hashlib.sha512(content).digest())

    @classmethod
    def from_digest_text(cls, text: str) -> ArtifactInput:
        digest = parse_digest(text, field="FILE_OR_DIGEST")
        if digest.algorithm != "sha256":
            raise InvalidInputError("only sha256 artifact digests are supported")
        return cls(bytes.fromhex(digest.hex))


@dataclass(frozen=True, slots=True)
class BundleOutcome:
    """A verified bundle: what it signs and who signed it."""

    content: Literal["message", "dsse"]
    payload_type: str | None
    payload: bytes | None
    identity: CertificateIdentity | None
    key_id: str | None
    tlog: Literal["verified", "not-required"]


def check_dsse_subject(payload_type: str | None, payload: bytes, artifact: ArtifactInput) -> None:
    if payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise reject("malformed", f"DSSE payload type {payload_type!r} is not in-toto")
    statement = parse_in_toto_statement(payload)
    if statement_names_sha256(statement, artifact.sha256.hex()):
        return
    if artifact.sha512 is not None and statement_names_digest(
        statement, "sha512", artifact.sha512.hex()
    ):
        return
    raise reject(
        "digest-mismatch",
        f"in-toto subject does not name the artifact (sha256:{artifact.sha256.hex()}"
        + (f" or sha512:{artifact.sha512.hex()}" if artifact.sha512 is not None else "")
        + ")",
    )
