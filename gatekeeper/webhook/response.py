"""From a :class:`~gatekeeper.domain.Decision` to what the API server and the user see.

Every finding about an image is addressed to each field that names the image, e.g.
``spec.template.spec.containers[1].image (ghcr.io/acme/api:1.4): no signature from authority
"release"``; findings about the whole request come first, then the rest sorted by path (indexes
compared as numbers). The mutating webhook pins each tag to the digest the decision verified.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gatekeeper.domain import Decision, EnforcementMode, ImageReference, Violation
from gatekeeper.webhook.extraction import ImageLocation
from gatekeeper.webhook.review import AdmissionResponse

__all__ = [
    "MAX_MESSAGE_CHARS",
    "MAX_WARNINGS",
    "LocatedImage",
    "address_findings",
    "build_decision_response",
    "build_pin_patch",
    "build_plain_response",
    "join_message",
]

#: Longest ``status.message`` we send; past it the message says how many lines were left out.
MAX_MESSAGE_CHARS = 4096
#: Kubernetes relays warnings as HTTP headers and truncates long or many ones; stay below.
MAX_WARNINGS = 20
_MAX_WARNING_CHARS = 512


@dataclass(frozen=True, slots=True)
class LocatedImage:
    """An image field together with the reference parsed from it."""

    location: ImageLocation
    reference: ImageReference


def _index(images: Sequence[LocatedImage]) -> dict[str, list[LocatedImage]]:
    by_text: dict[str, list[LocatedImage]] = {}
    for item in images:
        keys = {item.reference.original, item.reference.canonical}
        for key in keys:
            by_text.setdefault(key, []).append(item)
    return by_text


def address_findings(
    findings: Iterable[Violation], images: Sequence[LocatedImage]
) -> list[str]:
    """One line per (finding, field): request-wide findings first, then sorted by path."""
    by_text = _index(images)
    keyed: set[tuple[tuple[tuple[int, int | str], ...], str]] = set()
    for finding in findings:
        located = by_text.get(finding.image or "", [])
        if not located:
            prefix = f"{finding.image}: " if finding.image else ""
            keyed.add(((), f"{prefix}{finding.message}"))
            continue
        for item in located:
            where = item.location
            keyed.add((where.sort_key, f"{where.field_path} ({where.image}): {finding.message}"))
    return [line for _, line in sorted(keyed)]


def join_message(lines: Sequence[str], suffix: str) -> str:
    """``line; line; ... suffix`` within :data:`MAX_MESSAGE_CHARS`, naming what was cut."""
    kept: list[str] = []
    budget = MAX_MESSAGE_CHARS - len(suffix) - 40
    for index, line in enumerate(lines):
        if len(line) + 2 > budget:
            kept.append(f"... and {len(lines) - index} more")
            break
        kept.append(line)
        budget -= len(line) + 2
    return "; ".join(kept) + suffix


def _cap_warnings(warnings: Sequence[str]) -> tuple[str, ...]:
    capped = [
        w if len(w) <= _MAX_WARNING_CHARS else w[: _MAX_WARNING_CHARS - 3] + "..."
        for w in warnings[:MAX_WARNINGS]
    ]
    if len(warnings) > MAX_WARNINGS:
        capped[-1] = f"... and {len(warnings) - MAX_WARNINGS + 1} more warnings"
    return tuple(capped)


def build_pin_patch(
    decision: Decision, images: Sequence[LocatedImage]
) -> tuple[tuple[dict[str, Any], ...], tuple[str, ...]]:
    """JSONPatch ops pinning each tag-only image to the digest the decision verified.

    Idempotent: an image that already names a digest is never rewritten (its digest was
    verified as given), so a reinvoked webhook produces an empty patch. Returns the ops and a
    warning for each image that could not be pinned because no digest was established.
    """
    verified: dict[str, str] = {}
    for result in decision.images:
        if result.digest is not None:
            verified[result.reference.original] = str(result.digest)
    ops: list[dict[str, Any]] = []
    warnings: list[str] = []
    for item in sorted(images, key=lambda i: i.location.sort_key):
        if item.reference.digest is not None:
            continue
        digest = verified.get(item.reference.original)
        where = item.location
        if digest is None:
            warnings.append(f"{where.field_path} ({where.image}): not pinned, no verified digest")
            continue
        ops.append(
            {"op": "replace", "path": where.json_pointer, "value": f"{where.image}@{digest}"}
        )
    return tuple(ops), tuple(warnings)


def build_decision_response(
    uid: str,
    decision: Decision,
    images: Sequence[LocatedImage],
    *,
    mutate: bool,
    extra_warnings: Sequence[str] = (),
) -> AdmissionResponse:
    """The answer for an evaluated review."""
    violations = address_findings(decision.violations, images)
    policy_warnings = address_findings(decision.warnings, images)
    suffix = f" (decision {decision.decision_id})"
    annotations = {
        "decision-id": decision.decision_id,
        "verdict": decision.verdict.value,
        "mode": decision.mode.value,
    }
    if decision.dry_run:
        annotations["dry-run"] = "true"
    if not decision.allowed:
        return AdmissionResponse(
            uid=uid,
            allowed=False,
            code=403,
            message=join_message(violations or ["denied by policy"], suffix),
            warnings=_cap_warnings([*policy_warnings, *extra_warnings]),
            audit_annotations=annotations,
            outcome="denied",
        )
    warnings: list[str] = []
    if violations and decision.mode is EnforcementMode.WARN:
        warnings += [f"not enforced (warn mode): {line}" for line in violations]
    warnings += policy_warnings
    patch: tuple[dict[str, Any], ...] = ()
    if mutate:
        patch, pin_warnings = build_pin_patch(decision, images)
        warnings += pin_warnings
    warnings += extra_warnings
    if violations:
        message = f"admitted in {decision.mode.value} mode with {len(violations)} violation(s)"
    else:
        message = f"admitted: {len({i.reference.original for i in images})} image(s) evaluated"
    return AdmissionResponse(
        uid=uid,
        allowed=True,
        code=200,
        message=message + suffix,
        warnings=_cap_warnings(warnings),
        audit_annotations=annotations,
        patch=patch,
    )


def build_plain_response(
    uid: str,
    *,
    allowed: bool,
    code: int,
    message: str,
    outcome: str,
    warnings: Sequence[str] = (),
    annotations: Mapping[str, str] | None = None,
) -> AdmissionResponse:
    """An answer that is not backed by a recorded decision (not governed, failures)."""
    return AdmissionResponse(
        uid=uid,
        allowed=allowed,
        code=code,
        message=message,
        warnings=_cap_warnings(list(warnings)),
        audit_annotations=dict(annotations or {}),
        outcome=outcome,
    )
