"""Parsing AdmissionReviews at the edge, and rendering the answer."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from gatekeeper.errors import InvalidInputError
from gatekeeper.webhook.review import AdmissionResponse, Operation, parse_admission_review

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "admission"


def review_bytes(name: str) -> bytes:
    return (ASSETS / f"{name}.json").read_bytes()


def test_parses_a_real_deployment_review() -> None:
    review = parse_admission_review(review_bytes("deployment-create"))
    assert review.request is not None
    request = review.request
    assert request.uid == "00000000-0000-4000-8000-000000000001"
    assert request.kind.group == "apps" and request.kind.kind == "Deployment"
    assert request.operation is Operation.CREATE
    assert request.namespace == "shop"
    assert request.user_info.username == "kubernetes-admin"
    assert request.object is not None and request.object["kind"] == "Deployment"
    assert request.dry_run is False


def test_reads_subresource_and_old_object() -> None:
    request = parse_admission_review(review_bytes("pod-ephemeralcontainers-update")).request
    assert request is not None
    assert request.sub_resource == "ephemeralcontainers"
    assert request.old_object is not None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "AdmissionReview body is empty"),
        (b"kind: AdmissionReview", "AdmissionReview is not valid JSON"),
        (b"[1, 2]", "AdmissionReview is not valid JSON"),
        (
            b'{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", '
            b'"request": {"uid": "u"}}',
            "expected apiVersion admission.k8s.io/v1 kind AdmissionReview, got apiVersion "
            "'admission.k8s.io/v1beta1' kind 'AdmissionReview' "
            "(register the webhook with admissionReviewVersions: [v1])",
        ),
        (
            b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}',
            "AdmissionReview has no request",
        ),
        (
            b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": '
            b'{"kind": {"kind": "Pod"}, "operation": "CREATE"}}',
            "AdmissionReview request is invalid: request.uid: Field required",
        ),
        (
            b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": '
            b'{"uid": "u", "kind": {"kind": "Pod"}, "operation": "PATCH"}}',
            "AdmissionReview request is invalid: request.operation: Input should be 'CREATE', "
            "'UPDATE', 'DELETE' or 'CONNECT'",
        ),
    ],
    ids=["empty", "yaml", "array", "v1beta1", "no-request", "no-uid", "bad-operation"],
)
def test_refuses_what_is_not_a_v1_review(body: bytes, message: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_admission_review(body)
    assert caught.value.message.startswith(message), caught.value.message


def test_refuses_oversized_body_before_parsing() -> None:
    body = review_bytes("deployment-create")
    with pytest.raises(InvalidInputError) as caught:
        parse_admission_review(body, max_bytes=1024)
    assert caught.value.message == (
        f"AdmissionReview is {len(body)} bytes, more than the limit of 1024"
    )


def test_refuses_hostile_nesting() -> None:
    deep = b"[" * 5000 + b"]" * 5000
    body = (
        b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": '
        b'{"uid": "u", "kind": {"kind": "Pod"}, "operation": "CREATE", "object": {"x": '
        + deep + b"}}}"
    )
    with pytest.raises(InvalidInputError, match="recursion limit exceeded"):
        parse_admission_review(body)


def test_response_renders_status_warnings_annotations_and_patch() -> None:
    patch = ({"op": "replace", "path": "/spec/containers/0/image", "value": "a:1@sha256:" + "0" * 64},)
    review = AdmissionResponse(
        uid="u-1", allowed=True, code=200, message="ok", warnings=("w",),
        audit_annotations={"decision-id": "d"}, patch=patch,
    ).to_review()
    assert review["apiVersion"] == "admission.k8s.io/v1" and review["kind"] == "AdmissionReview"
    response = review["response"]
    assert response["uid"] == "u-1" and response["allowed"] is True
    assert response["status"] == {"code": 200, "message": "ok"}
    assert response["warnings"] == ["w"]
    assert response["auditAnnotations"] == {"decision-id": "d"}
    assert response["patchType"] == "JSONPatch"
    assert json.loads(base64.b64decode(response["patch"])) == list(patch)


def test_denied_response_carries_reason_and_no_patch_keys() -> None:
    response = AdmissionResponse(uid="u", allowed=False, code=403, message="no").to_review()[
        "response"
    ]
    assert response["status"] == {"code": 403, "message": "no", "reason": "Forbidden"}
    assert "patch" not in response and "warnings" not in response
    timeout = AdmissionResponse(uid="u", allowed=False, code=504, message="slow").to_review()
    assert timeout["response"]["status"]["reason"] == "Timeout"
