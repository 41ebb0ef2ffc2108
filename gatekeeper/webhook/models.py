"""The admission webhook's answer as a model, for ``/openapi.json`` (the wire form is built by
:meth:`gatekeeper.webhook.review.AdmissionResponse.to_review`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gatekeeper.webhook.review import AdmissionReview

__all__ = ["ADMISSION_OPENAPI", "AdmissionReviewAnswer"]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class AnswerStatus(_Wire):
    code: int
    message: str
    reason: str | None = Field(default=None, description="metav1.StatusReason when denied")


class AnswerResponse(_Wire):
    uid: str
    allowed: bool
    status: AnswerStatus
    warnings: list[str] | None = None
    audit_annotations: dict[str, str] | None = Field(default=None, alias="auditAnnotations")
    patch_type: str | None = Field(default=None, alias="patchType")
    patch: str | None = Field(default=None, description="Base64 JSONPatch (mutate only)")


class AdmissionReviewAnswer(_Wire):
    """``admission.k8s.io/v1`` AdmissionReview with ``response`` set."""

    api_version: str = Field(alias="apiVersion")
    kind: str
    response: AnswerResponse


def _openapi() -> dict[str, Any]:
    schema = AdmissionReview.model_json_schema(ref_template="#/components/schemas/{model}")
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema}},
            "description": "An admission.k8s.io/v1 AdmissionReview with request set",
        }
    }


#: ``openapi_extra`` of the admission routes (they read and limit the body themselves).
ADMISSION_OPENAPI = _openapi()
