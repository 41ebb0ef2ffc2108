"""What the webhook governs, in which mode, and which ticket a workload belongs to.

**Governed requests.** ``CREATE`` and ``UPDATE`` of an object that carries a pod spec (see
:mod:`gatekeeper.webhook.extraction`), on the main resource or on the
``pods/ephemeralcontainers`` subresource (only the ephemeral containers are evaluated there).
Everything else is allowed without evaluation: ``DELETE``, ``CONNECT``, other subresources
(``status``, ``scale``, ``binding``, ``eviction``, ...), kinds without a pod template, and the
excluded namespaces (by default the gatekeeper's own namespace and ``kube-system``; the chart's
``namespaceSelector`` keeps the API server from even asking, this check is the second lock), and
``UPDATE`` of an object that is being deleted (finalizer removal must never hang on the gate).

**Per-namespace mode.** An AdmissionReview does not carry the namespace's labels, and reading
them would need RBAC on namespaces and a watch. Instead the API server does it for us: the chart
registers one webhook entry per mode whose ``namespaceSelector`` matches the namespace label
``gatekeeper.forge.dev/mode`` (``enforce``, ``warn``, ``audit``) and whose service path ends in
that mode (``/admission/validate/warn``). The mode is chosen, first match wins, from

1. the configured map ``namespace -> mode`` (``AdmissionSettings.namespace_modes``),
2. the mode in the request path (i.e. the namespace label, matched by the API server),
3. ``AdmissionSettings.default_mode`` (``enforce``).

A workload may make itself *stricter* with the label or annotation ``gatekeeper.forge.dev/mode``
on the object, never laxer (whoever can create a Deployment must not opt it out of the gate);
an unknown value means ``enforce`` (fail closed).

**Ticket correlation.** Read from the object's annotations, else from its pod template's
annotations (so Pods created by a ReplicaSet inherit them):

=====================================  ==============
``gatekeeper.forge.dev/intent-id``     ``intent_id``
``gatekeeper.forge.dev/plan-id``       ``plan_id``
``gatekeeper.forge.dev/ticket-id``     ``ticket_id``
``gatekeeper.forge.dev/deploy-id``     ``deploy_id``
=====================================  ==============
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from gatekeeper.domain import EnforcementMode, Ticket
from gatekeeper.errors import ConfigurationError
from gatekeeper.webhook.review import DEFAULT_MAX_REVIEW_BYTES, AdmissionRequest, Operation

__all__ = [
    "ANNOTATION_PREFIX",
    "MODE_KEY",
    "TICKET_ANNOTATIONS",
    "AdmissionSettings",
    "is_ephemeral_containers_update",
    "read_ticket",
    "resolve_mode",
    "why_not_governed",
]

#: ``dict`` first: parsed JSON is made of dicts, and ``isinstance`` returns on the exact
#: type before it asks the ``Mapping`` ABC (several times slower, and on every review).
_MAPPINGS = (dict, Mapping)
#: What a missing metadata map reads as (read-only, shared).
_NOTHING: Mapping[str, Any] = MappingProxyType({})

ANNOTATION_PREFIX = "gatekeeper.forge.dev/"
MODE_KEY = f"{ANNOTATION_PREFIX}mode"
TICKET_ANNOTATIONS: Mapping[str, str] = {
    "intent_id": f"{ANNOTATION_PREFIX}intent-id",
    "plan_id": f"{ANNOTATION_PREFIX}plan-id",
    "ticket_id": f"{ANNOTATION_PREFIX}ticket-id",
    "deploy_id": f"{ANNOTATION_PREFIX}deploy-id",
}
_TICKET_VALUE_RE = re.compile(r"^[\x21-\x7e]{1,256}$")
_STRICTNESS = {EnforcementMode.AUDIT: 0, EnforcementMode.WARN: 1, EnforcementMode.ENFORCE: 2}
_GOVERNED_OPERATIONS = frozenset({Operation.CREATE, Operation.UPDATE})
_TEMPLATE_METADATA_PATHS = (
    ("spec", "template", "metadata"),
    ("spec", "jobTemplate", "spec", "template", "metadata"),
    ("template", "metadata"),
)


@dataclass(frozen=True, slots=True)
class AdmissionSettings:
    """The webhook's configuration (built once by the composition root from the settings).

    Timing: the API server gives up after ``webhook_timeout_seconds`` (the webhook
    configuration's ``timeoutSeconds``) and then applies ``failurePolicy``, which answers a
    generic "context deadline exceeded". We answer first: ``budget_seconds`` (default 8 s under
    a 10 s timeout) leaves room for the TLS handshake, queueing and the network back to the API
    server, so a slow registry yields *our* deny naming what did not finish.
    """

    environment: str = "kubernetes"
    own_namespace: str = "gatekeeper-system"
    excluded_namespaces: frozenset[str] = frozenset({"kube-system"})
    default_mode: EnforcementMode = EnforcementMode.ENFORCE
    namespace_modes: Mapping[str, EnforcementMode] = field(default_factory=dict)
    #: Namespaces where a deadline overrun or an internal failure admits (with a warning)
    #: instead of denying. Policy violations still deny in ``enforce`` mode.
    fail_open_namespaces: frozenset[str] = frozenset()
    webhook_timeout_seconds: float = 10.0
    budget_seconds: float = 8.0
    max_review_bytes: int = DEFAULT_MAX_REVIEW_BYTES
    #: Threads evaluating reviews concurrently; more reviews wait (within their budget).
    max_workers: int = 16
    #: Modes in which a gate failure (evidence not gathered, policy engine down, budget spent)
    #: admits instead of denying. Default: ``warn`` and ``audit`` fail open (they do not
    #: enforce violations either), ``enforce`` fails closed. ``enforce`` here admits like a
    #: fail-open namespace (recorded as deny, answered with a warning).
    gate_failure_open_modes: frozenset[EnforcementMode] = frozenset(
        {EnforcementMode.WARN, EnforcementMode.AUDIT}
    )
    #: Record dry-run decisions (flagged ``dry_run``); False decides without a record (the
    #: registration declares ``sideEffects: NoneOnDryRun`` either way).
    record_dry_run: bool = True
    #: How long, and for how many admissions, the validating webhook may reuse the mutating
    #: webhook's decision (:mod:`gatekeeper.webhook.reuse`); 0 turns reuse off.
    reuse_ttl_seconds: float = 60.0
    reuse_max_entries: int = 4096
    #: ``excluded_namespaces`` and ``own_namespace``, computed once (read on every review).
    _all_excluded: frozenset[str] = field(
        init=False, repr=False, compare=False, default=frozenset())

    def __post_init__(self) -> None:
        object.__setattr__(self, "_all_excluded", self.excluded_namespaces | {self.own_namespace})
        if not 0 < self.webhook_timeout_seconds <= 30:
            raise ConfigurationError(
                "admission webhook timeout must be in (0, 30] seconds (Kubernetes' maximum)",
                context={"webhook_timeout_seconds": self.webhook_timeout_seconds},
            )
        if not 0 < self.budget_seconds < self.webhook_timeout_seconds:
            raise ConfigurationError(
                "admission budget must be positive and below the webhook timeout, so that the "
                "gate answers before the API server gives up",
                context={
                    "budget_seconds": self.budget_seconds,
                    "webhook_timeout_seconds": self.webhook_timeout_seconds,
                },
            )
        if self.max_review_bytes < 1024 or self.max_workers < 1:
            raise ConfigurationError(
                "admission max_review_bytes must be at least 1024 and max_workers at least 1",
                context={"max_review_bytes": self.max_review_bytes,
                         "max_workers": self.max_workers},
            )

    @property
    def all_excluded_namespaces(self) -> frozenset[str]:
        return self._all_excluded

    def fail_open_reason(self, namespace: str, mode: EnforcementMode) -> str | None:
        """Why a gate failure admits in ``namespace`` under ``mode``, or None (it denies)."""
        if namespace in self.fail_open_namespaces:
            return "fail-open namespace"
        if mode in self.gate_failure_open_modes:
            return f"gate failures fail open in {mode.value} mode"
        return None


def why_not_governed(request: AdmissionRequest, settings: AdmissionSettings) -> str | None:
    """The reason ``request`` is admitted without evaluation, or None when it is governed."""
    if request.operation not in _GOVERNED_OPERATIONS:
        return f"operation {request.operation.value} is not governed"
    if request.namespace and request.namespace in settings.all_excluded_namespaces:
        return f"namespace {request.namespace} is excluded"
    if request.sub_resource and not is_ephemeral_containers_update(request):
        return f"subresource {request.resource.resource}/{request.sub_resource} is not governed"
    if request.operation is Operation.UPDATE and _metadata(request.object).get(
        "deletionTimestamp"
    ):
        # Removing finalizers of an object being deleted must never be blocked by the gate
        # (the object would hang in Terminating); nothing new can start from it.
        return "object is being deleted"
    return None


def is_ephemeral_containers_update(request: AdmissionRequest) -> bool:
    return request.sub_resource == "ephemeralcontainers" and request.kind.kind in {
        "Pod",
        "EphemeralContainers",  # the subresource's kind before Kubernetes 1.22
    }


def _parse_mode(value: Any) -> EnforcementMode:
    try:
        return EnforcementMode(str(value).strip().lower())
    except ValueError:
        return EnforcementMode.ENFORCE  # an unknown mode fails closed


def _metadata(obj: Mapping[str, Any] | None, path: tuple[str, ...] = ("metadata",)) -> Mapping[
    str, Any
]:
    node: Any = obj
    for key in path:
        if node is None or not isinstance(node, _MAPPINGS):  # None: no ABC check
            return _NOTHING
        node = node.get(key)
    return node if node is not None and isinstance(node, _MAPPINGS) else _NOTHING


def _string_map(metadata: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = metadata.get(key)
    return value if value is not None and isinstance(value, _MAPPINGS) else _NOTHING


def resolve_mode(
    settings: AdmissionSettings,
    namespace: str,
    path_mode: EnforcementMode | None,
    obj: Mapping[str, Any] | None,
) -> EnforcementMode:
    """The enforcement mode of a review (see the module docstring for the precedence)."""
    mode = settings.namespace_modes.get(namespace) or path_mode or settings.default_mode
    metadata = _metadata(obj)
    for source in (_string_map(metadata, "labels"), _string_map(metadata, "annotations")):
        if MODE_KEY in source:
            requested = _parse_mode(source[MODE_KEY])
            if _STRICTNESS[requested] > _STRICTNESS[mode]:
                mode = requested
    return mode


def read_ticket(obj: Mapping[str, Any] | None) -> tuple[Ticket, tuple[str, ...]]:
    """The ticket ids of ``obj`` and warnings for annotations that were ignored."""
    sources = [_string_map(_metadata(obj), "annotations")]
    sources += [
        _string_map(_metadata(obj, path), "annotations") for path in _TEMPLATE_METADATA_PATHS
    ]
    values: dict[str, str | None] = {}
    warnings: list[str] = []
    for attribute, key in TICKET_ANNOTATIONS.items():
        values[attribute] = None
        for source in sources:
            if key not in source:
                continue
            value = source[key]
            if isinstance(value, str) and _TICKET_VALUE_RE.match(value):
                values[attribute] = value
            else:
                warnings.append(
                    f"annotation {key} ignored: expected 1 to 256 printable characters "
                    "without spaces"
                )
            break
    return Ticket(**values), tuple(warnings)
