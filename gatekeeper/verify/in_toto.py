"""In-toto statements: parsed with a size limit, and matched against the digest they bind."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gatekeeper.errors import VerificationError

__all__ = [
    "IN_TOTO_PAYLOAD_TYPE",
    "dsse_pae",
    "parse_in_toto_statement",
    "reject",
    "statement_names_digest",
    "statement_names_sha256",
]

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
_MAX_STATEMENT_BYTES = 4 * 1024 * 1024


def dsse_pae(payload_type: str, payload: bytes) -> bytes:
    """What a DSSE signature signs: the pre-authentication encoding ``DSSEv1 SP len(type) SP
    type SP len(body) SP body`` (lengths in bytes, decimal), per the DSSE v1 envelope spec."""
    encoded_type = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(encoded_type), encoded_type, len(payload), payload)


def reject(reason: str, message: str) -> VerificationError:
    """A verification failure with its stable reason code in ``context["reason"]``."""
    return VerificationError(message, context={"reason": reason})


def parse_in_toto_statement(payload: bytes) -> Mapping[str, Any]:
    """Parse an in-toto Statement (v0.1 or v1) with a size limit; raise on anything else."""
    if len(payload) > _MAX_STATEMENT_BYTES:
        raise reject("malformed", "in-toto statement is larger than the limit")
    try:
        statement = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise reject("malformed", "in-toto statement is not JSON") from exc
    if not isinstance(statement, dict):
        raise reject("malformed", "in-toto statement is not an object")
    if statement.get("_type") not in (
        "https://in-toto.io/Statement/v0.1",
        "https://in-toto.io/Statement/v1",
    ):
        raise reject("malformed", "payload is not an in-toto Statement")
    subjects = statement.get("subject")
    if not isinstance(subjects, list) or not subjects:
        raise reject("malformed", "in-toto statement has no subject")
    if not isinstance(statement.get("predicateType"), str):
        raise reject("malformed", "in-toto statement has no predicateType")
    return statement


def statement_names_sha256(statement: Mapping[str, Any], sha256_hex: str) -> bool:
    return statement_names_digest(statement, "sha256", sha256_hex)


def statement_names_digest(statement: Mapping[str, Any], algorithm: str, hex_digest: str) -> bool:
    """Some subject of the statement names ``algorithm:hex_digest`` (sha256 or sha512)."""
    for subject in statement.get("subject", []):
        digests = subject.get("digest") if isinstance(subject, Mapping) else None
        if isinstance(digests, Mapping) and digests.get(algorithm) == hex_digest:
            return True
    return False
