"""AdmissionReview ``admission.k8s.io/v1``: parsed at the edge, answered as typed values.

The API server's wire format is documented at
https://kubernetes.io/docs/reference/access-authn-authz/extensible-admission-controllers/#request
Only the fields the gate reads are modelled; unknown fields are ignored so that a newer API
server does not break the webhook. ``object`` and ``oldObject`` stay JSON mappings here: their
shape depends on the kind, and :mod:`gatekeeper.webhook.extraction` reads them field by field.

Limits: the body is capped (default 4 MiB; etcd caps one object at 1.5 MiB and a review can
carry ``object`` and ``oldObject``) before it is parsed, and the JSON parser (pydantic-core's
``jiter``) refuses nesting deeper than 200 levels, so a hostile document cannot exhaust memory
or the stack.
"""

from __future__ import annotations

import base64
import enum
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gatekeeper.errors import InvalidInputError

__all__ = [
    "ADMISSION_API_VERSION",
    "DEFAULT_MAX_REVIEW_BYTES",
    "AdmissionRequest",
    "AdmissionResponse",
    "AdmissionReview",
    "GroupVersionKind",
    "GroupVersionResource",
    "Operation",
    "UserInfo",
    "WebhookKind",
    "parse_admission_review",
]

ADMISSION_API_VERSION = "admission.k8s.io/v1"
DEFAULT_MAX_REVIEW_BYTES = 4 * 1024 * 1024
_MAX_UID_LENGTH = 128

#: Which of the two webhooks a review arrived on.
WebhookKind = Literal["validate", "mutate"]


class Operation(enum.StrEnum):
    CREATE = "CREATE"
    UPDATE = "UPDATE"
    DELETE = "DELETE"
    CONNECT = "CONNECT"


class _WireModel(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)


class GroupVersionKind(_WireModel):
    group: str = ""
    version: str = ""
    kind: str = ""


class GroupVersionResource(_WireModel):
    group: str = ""
    version: str = ""
    resource: str = ""


class UserInfo(_WireModel):
    username: str = ""
    uid: str = ""
    groups: tuple[str, ...] = ()


class AdmissionRequest(_WireModel):
    uid: str = Field(min_length=1, max_length=_MAX_UID_LENGTH)
    kind: GroupVersionKind
    resource: GroupVersionResource = GroupVersionResource()
    sub_resource: str = Field("", alias="subResource")
    request_kind: GroupVersionKind | None = Field(None, alias="requestKind")
    request_resource: GroupVersionResource | None = Field(None, alias="requestResource")
    request_sub_resource: str = Field("", alias="requestSubResource")
    name: str = ""
    namespace: str = ""
    operation: Operation
    user_info: UserInfo = Field(UserInfo(), alias="userInfo")
    object: dict[str, Any] | None = None
    old_object: dict[str, Any] | None = Field(None, alias="oldObject")
    dry_run: bool = Field(False, alias="dryRun")


class AdmissionReview(_WireModel):
    api_version: str = Field(alias="apiVersion")
    kind: str
    request: AdmissionRequest | None = None


#: metav1.StatusReason per HTTP code, as the API server relays them to the client.
_STATUS_REASONS = {400: "BadRequest", 403: "Forbidden", 500: "InternalError", 504: "Timeout"}


class AdmissionResponse(_WireModel):
    """What the webhook answers; :meth:`to_review` renders the full AdmissionReview."""

    uid: str
    allowed: bool
    code: int
    message: str
    warnings: tuple[str, ...] = ()
    audit_annotations: dict[str, str] = Field(default_factory=dict)
    #: JSONPatch operations (mutating webhook only); empty means "no patch".
    patch: tuple[dict[str, Any], ...] = ()
    #: How the review ended, for metrics and logs (not sent): ``allowed``, ``denied``,
    #: ``not_evaluated``, ``invalid_object``, ``out_of_time``, ``failed``, ``fail_open``.
    outcome: str = "allowed"

    def to_review(self) -> dict[str, Any]:
        response: dict[str, Any] = {
            "uid": self.uid,
            "allowed": self.allowed,
            "status": {"code": self.code, "message": self.message},
        }
        if not self.allowed:
            response["status"]["reason"] = _STATUS_REASONS.get(self.code, "InternalError")
        if self.warnings:
            response["warnings"] = list(self.warnings)
        if self.audit_annotations:
            response["auditAnnotations"] = dict(self.audit_annotations)
        if self.patch:
            encoded = orjson.dumps(list(self.patch))
            response["patchType"] = "JSONPatch"
            response["patch"] = base64.b64encode(encoded).decode("ascii")
        return {"apiVersion": ADMISSION_API_VERSION, "kind": "AdmissionReview",
                "response": response}


def _first_error(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"]) or "body"
    return f"{where}: {error['msg']}"


def parse_admission_review(
    body: bytes, *, max_bytes: int = DEFAULT_MAX_REVIEW_BYTES
) -> AdmissionReview:
    """Parse an AdmissionReview body, or raise :class:`InvalidInputError` saying why.

    Accepts only ``admission.k8s.io/v1`` reviews that carry a ``request``.
    """
    if len(body) > max_bytes:
        raise InvalidInputError(
            f"AdmissionReview is {len(body)} bytes, more than the limit of {max_bytes}",
            field="body",
        )
    if not body:
        raise InvalidInputError("AdmissionReview body is empty", field="body")
    try:
        # One pass for what the API server sends; anything else takes the two passes
        # below, which name what is wrong in the order a reader needs it.
        review = AdmissionReview.model_validate_json(body)
    except ValidationError:
        review = None
    if (review is not None and review.request is not None and review.kind == "AdmissionReview"
            and review.api_version == ADMISSION_API_VERSION):
        return review
    try:
        head: Any = _Envelope.model_validate_json(body)
    except ValidationError as exc:
        raise InvalidInputError(
            f"AdmissionReview is not valid JSON: {_first_error(exc)}", field="body"
        ) from exc
    if head.kind != "AdmissionReview" or head.api_version != ADMISSION_API_VERSION:
        raise InvalidInputError(
            f"expected apiVersion {ADMISSION_API_VERSION} kind AdmissionReview, got "
            f"apiVersion {head.api_version!r:.60} kind {head.kind!r:.60} "
            "(register the webhook with admissionReviewVersions: [v1])",
            field="apiVersion",
        )
    if head.request is None:
        raise InvalidInputError("AdmissionReview has no request", field="request")
    try:
        request = AdmissionRequest.model_validate(head.request)
    except ValidationError as exc:
        raise InvalidInputError(
            f"AdmissionReview request is invalid: request.{_first_error(exc)}", field="request"
        ) from exc
    return AdmissionReview(apiVersion=head.api_version, kind=head.kind, request=request)


class _Envelope(_WireModel):
    """First pass: the envelope only, so a v1beta1 review gets the version error, not a
    confusing error about a field that v1beta1 spells differently."""

    api_version: str = Field("", alias="apiVersion")
    kind: str = ""
    request: dict[str, Any] | None = None
