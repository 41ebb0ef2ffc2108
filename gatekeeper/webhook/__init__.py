"""Kubernetes admission webhooks: AdmissionReview in, field-addressed answer out.

Layer rule: this package may import ``service``, ``domain``, ``errors``, ``metrics`` and
``config``, never ``gatekeeper.api`` or ``gatekeeper.wiring``. The composition root builds an
:class:`AdmissionHandler` from the settings and the shared evaluation service, and the app mounts
:func:`build_admission_router`.
"""

from gatekeeper.webhook.extraction import ImageLocation, extract_images, find_pod_specs
from gatekeeper.webhook.handler import AdmissionHandler, Evaluator
from gatekeeper.webhook.metrics import AdmissionMetrics
from gatekeeper.webhook.review import (
    ADMISSION_API_VERSION,
    AdmissionRequest,
    AdmissionResponse,
    AdmissionReview,
    parse_admission_review,
)
from gatekeeper.webhook.routes import build_admission_router
from gatekeeper.webhook.scope import (
    MODE_KEY,
    TICKET_ANNOTATIONS,
    AdmissionSettings,
    read_ticket,
    resolve_mode,
    why_not_governed,
)

__all__ = [
    "ADMISSION_API_VERSION",
    "MODE_KEY",
    "TICKET_ANNOTATIONS",
    "AdmissionHandler",
    "AdmissionMetrics",
    "AdmissionRequest",
    "AdmissionResponse",
    "AdmissionReview",
    "AdmissionSettings",
    "Evaluator",
    "ImageLocation",
    "build_admission_router",
    "extract_images",
    "find_pod_specs",
    "parse_admission_review",
    "read_ticket",
    "resolve_mode",
    "why_not_governed",
]
