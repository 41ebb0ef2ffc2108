"""Exception requests are validated at the edge; Rego gets a fixed document shape."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gatekeeper.errors import InvalidInputError
from gatekeeper.policy.exceptions import (
    ExceptionFilePublisher,
    ExceptionRequest,
    PolicyException,
    exceptions_document,
    normalise_subject,
)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def body(**overrides: object) -> dict[str, object]:
    value: dict[str, object] = {
        "images": ["docker.io/library/nginx"],
        "policies": ["registries"],
        "environment": "production",
        "reason": "mirror pending",
        "ticket_id": "SEC-9",
        "expires_at": "2026-11-25T12:00:00+02:00",
        "any_digest": True,
    }
    value.update(overrides)
    return value


def test_valid_request_is_normalised() -> None:
    request = ExceptionRequest.parse(
        body(images=["docker.io/library/nginx", "sha256:" + "ab" * 32, "docker.io/library/nginx"]),
        now=NOW,
    )
    assert request.images == ("docker.io/library/nginx", "sha256:" + "ab" * 32)
    assert request.expires_at == datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    assert request.namespace is None


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"images": []}, "images", "images must be a non-empty list"),
        ({"images": ["nginx"]}, "images[0]", "image pattern 'nginx' must be a digest (sha256:...), a reference registry/repository:tag or registry/repository@sha256:..., or (with any_digest) a glob over registry/repository[:tag] (* stays inside one path segment)"),
        ({"images": ["docker.io/library/nginx"], "any_digest": False}, "images[0]", "image pattern 'docker.io/library/nginx' would waive any digest of the repository: name a digest, a tag (resolved to its digest when the exception is approved), or set any_digest: true to say that any digest is meant"),
        ({"images": ["registry.example.com/*/api:1.4"], "any_digest": False}, "images[0]", "image pattern 'registry.example.com/*/api:1.4' would waive any digest of the repository: name a digest, a tag (resolved to its digest when the exception is approved), or set any_digest: true to say that any digest is meant"),
        ({"any_digest": "yes"}, "any_digest", "any_digest must be true or false"),
        ({"images": ["**/x"]}, "images[0]", "image pattern '**/x' must name a registry host, not only wildcards"),
        ({"images": ["sha256:abc"]}, "images[0]", "invalid digest 'sha256:abc': sha256 needs 64 lowercase hex characters"),
        ({"policies": ["*"]}, "policies[0]", "policy id '*' must be a rule package name such as registries (no wildcards)"),
        ({"environment": None}, "environment", "an exception must be scoped to an environment or a namespace"),
        ({"expires_at": "2026-11-25T12:00:00"}, "expires_at", "'2026-11-25T12:00:00' has no time zone (write Z or +hh:mm)"),
        ({"expires_at": "tomorrow"}, "expires_at", "'tomorrow' is not an RFC 3339 instant"),
        ({"expires_at": "2026-11-24T12:00:00Z"}, "expires_at", "expires_at 2026-11-24T12:00:00Z is not in the future"),
        ({"expires_at": "2027-03-01T00:00:00Z"}, "expires_at", "expires_at is more than 90 days away"),
        ({"reason": "  "}, "reason", "reason is required"),
        ({"approver": "carol"}, "approver", "the approver is not named at creation: a second principal approves the pending exception with POST /v1/exceptions/{id}/approve"),
        ({"ticket": "x"}, "ticket", "unknown fields: ticket"),
    ],
)
def test_invalid_requests_name_the_field(
    overrides: dict[str, object], field: str, message: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        ExceptionRequest.parse(body(**overrides), now=NOW)
    assert (caught.value.field, caught.value.message) == (field, message)


def exception(number: int, **overrides: object) -> PolicyException:
    values: dict[str, object] = {
        "exception_id": f"EXC-{number}", "images": ("docker.io/library/nginx",),
        "policies": ("registries",), "environment": "production", "namespace": None,
        "reason": "r", "ticket_id": "SEC-9", "any_digest": True,
        "expires_at": NOW + timedelta(hours=1), "created_at": NOW, "created_by": "alice",
        "approved_at": NOW, "approved_by": "carol",
    }
    values.update(overrides)
    return PolicyException(**values)  # type: ignore[arg-type]


def test_rego_document_is_sorted_by_number_and_carries_revocation() -> None:
    document = exceptions_document(
        [exception(10), exception(2, revoked_at=NOW + timedelta(minutes=5), revoked_by="bob")]
    )
    assert [e["id"] for e in document] == ["EXC-2", "EXC-10"]
    assert document[0]["revoked_at"] == "2026-11-24T12:05:00Z"
    assert "revoked_at" not in document[1]
    assert document[1] == {
        "id": "EXC-10", "images": ["docker.io/library/nginx"], "policies": ["registries"],
        "environment": "production", "namespace": None, "reason": "r",
        "ticket_id": "SEC-9", "created_at": "2026-11-24T12:00:00Z", "created_by": "alice",
        "approved_at": "2026-11-24T12:00:00Z", "approved_by": "carol",
        "expires_at": "2026-11-24T13:00:00Z", "any_digest": True, "digests": {},
    }


def test_status_at_an_instant() -> None:
    item = exception(1, revoked_at=NOW + timedelta(minutes=30))
    assert item.status(NOW) == "active"
    assert item.status(NOW + timedelta(minutes=30)) == "revoked"
    assert exception(2).status(NOW + timedelta(hours=1)) == "expired"
    assert exception(3, approved_at=None, approved_by=None).status(NOW) == "pending"


def test_valid_patterns_are_normalised_to_what_rego_compares() -> None:
    digest = "sha256:" + "ab" * 32
    request = ExceptionRequest.parse(
        body(images=["registry.example.com/payments/api:1.4",
                     f"docker.io/nginx:1.27@{digest}"], any_digest=False),
        now=NOW,
    )
    assert request.images == (
        "registry.example.com/payments/api:1.4", f"docker.io/library/nginx@{digest}"
    )
    assert request.any_digest is False


@pytest.mark.parametrize(
    "lookalike",
    ["alice", "ALICE", "Alice", "al\u200bice", "\u200balice\u200d", "\uff41lice", "alice\u2060",
     " alice ", "a\u00adlice", "\u202ealice", "alice\ufeff"],
)
def test_subjects_compare_after_nfkc_casefold_and_invisible_removal(lookalike: str) -> None:
    assert normalise_subject(lookalike) == "alice"


def test_different_people_stay_different() -> None:
    assert normalise_subject("alice") != normalise_subject("alicia")
    assert normalise_subject("anonymous (auth disabled)") != normalise_subject("carol")


def test_file_publisher_writes_the_data_document_atomically(tmp_path: Path) -> None:
    publisher = ExceptionFilePublisher(tmp_path / "exceptions")
    publisher.publish([exception(1).as_rego()])
    written = json.loads((tmp_path / "exceptions/data.json").read_text())
    assert written == {"gatekeeper": {"exceptions": [exception(1).as_rego()]}}
    assert sorted(p.name for p in (tmp_path / "exceptions").iterdir()) == ["data.json"]
    stamp = (tmp_path / "exceptions/data.json").stat().st_mtime_ns
    publisher.publish([exception(1).as_rego()])  # unchanged: not rewritten (no OPA reload)
    assert (tmp_path / "exceptions/data.json").stat().st_mtime_ns == stamp
