"""What is governed, in which mode, and which ticket a workload carries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gatekeeper.domain import EnforcementMode, Ticket
from gatekeeper.errors import ConfigurationError
from gatekeeper.webhook.review import AdmissionRequest, parse_admission_review
from gatekeeper.webhook.scope import AdmissionSettings, read_ticket, resolve_mode, why_not_governed

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "admission"
ENFORCE, WARN, AUDIT = EnforcementMode.ENFORCE, EnforcementMode.WARN, EnforcementMode.AUDIT


def request(name: str) -> AdmissionRequest:
    review = parse_admission_review((ASSETS / f"{name}.json").read_bytes())
    assert review.request is not None
    return review.request


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("deployment-create", None),
        ("deployment-update", None),
        ("pod-create", None),
        ("pod-ephemeralcontainers-update", None),
        ("pod-delete", "operation DELETE is not governed"),
        ("pod-exec-connect", "operation CONNECT is not governed"),
        ("pod-status-update", "subresource pods/status is not governed"),
        ("deployment-scale-update", "subresource deployments/scale is not governed"),
        ("pod-kube-system-create", "namespace kube-system is excluded"),
    ],
)
def test_which_requests_are_governed(name: str, reason: str | None) -> None:
    assert why_not_governed(request(name), AdmissionSettings()) == reason


def test_update_of_an_object_being_deleted_is_not_governed() -> None:
    review = json.loads((ASSETS / "deployment-update.json").read_text())
    review["request"]["object"]["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    parsed = parse_admission_review(json.dumps(review).encode()).request
    assert parsed is not None
    assert why_not_governed(parsed, AdmissionSettings()) == "object is being deleted"


def test_own_namespace_is_always_excluded() -> None:
    settings = AdmissionSettings(own_namespace="shop", excluded_namespaces=frozenset())
    assert why_not_governed(request("pod-create"), settings) == "namespace shop is excluded"


@pytest.mark.parametrize(
    ("configured", "path_mode", "labels", "annotations", "expected"),
    [
        ({}, None, {}, {}, ENFORCE),
        ({}, WARN, {}, {}, WARN),
        ({"shop": AUDIT}, WARN, {}, {}, AUDIT),
        ({}, AUDIT, {"gatekeeper.forge.dev/mode": "warn"}, {}, WARN),
        ({}, WARN, {}, {"gatekeeper.forge.dev/mode": "enforce"}, ENFORCE),
        # A workload cannot make itself laxer than its namespace ...
        ({}, None, {"gatekeeper.forge.dev/mode": "audit"}, {}, ENFORCE),
        # ... and an unknown value fails closed.
        ({}, AUDIT, {}, {"gatekeeper.forge.dev/mode": "off"}, ENFORCE),
    ],
    ids=["default", "path", "configured-wins", "label-stricter", "annotation-stricter",
         "no-laxer", "unknown-enforces"],
)
def test_mode_resolution(
    configured: dict[str, EnforcementMode],
    path_mode: EnforcementMode | None,
    labels: dict[str, str],
    annotations: dict[str, str],
    expected: EnforcementMode,
) -> None:
    settings = AdmissionSettings(namespace_modes=configured)
    obj = {"metadata": {"labels": labels, "annotations": annotations}}
    assert resolve_mode(settings, "shop", path_mode, obj) is expected


def test_ticket_from_workload_annotations() -> None:
    ticket, warnings = read_ticket(request("deployment-create").object)
    assert ticket == Ticket("INT-7", "PLAN-12", "TCK-1234", "DEP-99")
    assert warnings == ()


def test_ticket_from_pod_template_when_object_has_none() -> None:
    obj = {"metadata": {}, "spec": {"template": {"metadata": {"annotations": {
        "gatekeeper.forge.dev/ticket-id": "TCK-9"}}}}}
    assert read_ticket(obj) == (Ticket(ticket_id="TCK-9"), ())


def test_malformed_ticket_annotation_is_ignored_with_a_warning() -> None:
    obj = {"metadata": {"annotations": {"gatekeeper.forge.dev/plan-id": "has spaces"}}}
    ticket, warnings = read_ticket(obj)
    assert ticket == Ticket()
    assert warnings == (
        "annotation gatekeeper.forge.dev/plan-id ignored: expected 1 to 256 printable "
        "characters without spaces",
    )


@pytest.mark.parametrize(
    "kwargs",
    [{"budget_seconds": 10.0}, {"budget_seconds": 0}, {"webhook_timeout_seconds": 31},
     {"max_workers": 0}],
)
def test_settings_refuse_a_budget_that_cannot_beat_the_api_server(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        AdmissionSettings(**kwargs)
