"""From a :class:`~gatekeeper.domain.Decision` to what the API server and the user see.

Every finding about an image is addressed to each field that names the image, e.g.
``spec.template.spec.containers[1].image (ghcr.io/acme/api:1.4): no signature from authority
"release"``; findings about the whole request come first, then the rest sorted by path (indexes
compared as numbers; within one field in the decision's order, so the decisive reason leads).
The mutating webhook pins each tag to the digest the decision verified.

Warnings are one line per image and finding (an image in three containers is one warning
naming the three fields), ordered by severity: violations not enforced in warn mode, then
policy warnings, then images that could not be pinned, then ignored annotations. The API server
relays them as HTTP headers and, once they exceed 4096 characters in total, cuts each to 256
and drops the rest (``k8s.io/apiserver/pkg/endpoints/filters/warning.go``). So ours stay within
:data:`MAX_WARNINGS_TOTAL_CHARS` together (room left for the API server's own warnings); when
they would not, each is cut to :data:`MAX_WARNING_CHARS` and whatever still does not fit is
summed up in a last line ``... and N more (decision <id>)`` that always fits.
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
    "MAX_WARNINGS_TOTAL_CHARS",
    "MAX_WARNING_CHARS",
    "LocatedImage",
    "address_findings",
    "build_decision_response",
    "build_pin_patch",
    "build_plain_response",
    "fit_warnings",
    "join_message",
    "merge_by_image",
]

#: Longest ``status.message`` we send; past it the message says how many lines were left out.
MAX_MESSAGE_CHARS = 4096
#: The API server cuts every warning to 256 characters once the total passes 4096.
MAX_WARNING_CHARS = 256
#: Our share of the API server's 4096 characters of warnings per request (the rest is left for
#: its own warnings and other webhooks'), so that nothing of ours is ever cut or dropped.
MAX_WARNINGS_TOTAL_CHARS = 3072


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
    """One line per (finding, field): request-wide findings first, then sorted by path; the
    findings of one field keep the decision's order (the decisive reason first)."""
    by_text = _index(images)
    keyed: dict[str, tuple[tuple[int, int | str], ...]] = {}
    for finding in findings:
        located = by_text.get(finding.image or "", [])
        if not located:
            prefix = f"{finding.image}: " if finding.image else ""
            keyed.setdefault(f"{prefix}{finding.message}", ())
            continue
        for item in located:
            where = item.location
            keyed.setdefault(f"{where.field_path} ({where.image}): {finding.message}",
                             where.sort_key)
    return sorted(keyed, key=lambda line: keyed[line])


def merge_by_image(
    findings: Iterable[Violation], images: Sequence[LocatedImage], *, prefix: str = ""
) -> list[str]:
    """One line per (image, finding) naming every field of the image, in path order:
    ``spec.containers[0].image, spec.containers[2].image (api:1.4): message``."""
    by_text = _index(images)
    merged: dict[tuple[str, str], list[LocatedImage]] = {}
    for finding in findings:
        located = by_text.get(finding.image or "", [])
        key = (located[0].location.image if located else finding.image or "", finding.message)
        fields = merged.setdefault(key, [])
        fields.extend(item for item in located if item not in fields)
    lines: list[tuple[tuple[tuple[int, int | str], ...], str]] = []
    for (image, message), located in merged.items():
        if not located:
            lines.append(((), f"{prefix}{image + ': ' if image else ''}{message}"))
            continue
        located.sort(key=lambda item: item.location.sort_key)
        named = ", ".join(item.location.field_path for item in located)
        lines.append((located[0].location.sort_key, f"{prefix}{named} ({image}): {message}"))
    lines.sort(key=lambda pair: pair[0])
    return [line for _, line in lines]


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


def fit_warnings(warnings: Sequence[str], decision_id: str | None = None) -> tuple[str, ...]:
    """Deduplicated and within the API server's limits: as they are when all of them together
    stay within :data:`MAX_WARNINGS_TOTAL_CHARS`; otherwise each cut to
    :data:`MAX_WARNING_CHARS` and those that still do not fit counted in a last line
    ``... and N more (decision <id>)`` that always fits (the API server never cuts it)."""
    unique = list(dict.fromkeys(w for w in warnings if w))
    if sum(len(w) for w in unique) <= MAX_WARNINGS_TOTAL_CHARS:
        return tuple(unique)
    cut = [w if len(w) <= MAX_WARNING_CHARS else w[: MAX_WARNING_CHARS - 3] + "..."
           for w in unique]
    suffix = f" (decision {decision_id})" if decision_id else ""

    def summary(left_out: int) -> str:
        return f"... and {left_out} more{suffix}"

    kept: list[str] = []
    used = 0
    for index, warning in enumerate(cut):
        rest = len(cut) - index - 1
        # room for this warning and for the summary of everything after it
        if used + len(warning) + (len(summary(rest)) if rest else 0) > MAX_WARNINGS_TOTAL_CHARS:
            break
        kept.append(warning)
        used += len(warning)
    if len(kept) == len(cut):
        return tuple(kept)
    return (*kept, summary(len(cut) - len(kept)))


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
    unchanged: int = 0,
    reused: bool = False,
    gate_note: str | None = None,
    recorded: bool = True,
) -> AdmissionResponse:
    """The answer for an evaluated review.

    ``unchanged``: images of an UPDATE that were already in ``oldObject`` (not evaluated).
    ``reused``: the decision is the mutating webhook's for this same admission; its warnings
    were given with that answer already (the API server collects both webhooks' warnings), so
    none are repeated. ``gate_note``: why the enforcement mode did or did not apply to a gate
    failure (evidence not gathered), named in the message. ``recorded=False``: a dry run
    decided without a record (``GATEKEEPER_ADMISSION_RECORD_DRY_RUN=false``).
    """
    violations = address_findings(decision.violations, images)
    not_recorded = "" if recorded else ", dry run, not recorded"
    made_by = ", made by the mutating webhook" if reused else ""
    suffix = f" (decision {decision.decision_id}{not_recorded}{made_by})"
    annotations = {
        "decision-id": decision.decision_id,
        "verdict": decision.verdict.value,
        "mode": decision.mode.value,
    }
    if decision.dry_run:
        annotations["dry-run"] = "true"
    if not recorded:
        annotations["recorded"] = "false"
    warnings: list[str] = []
    if not reused:
        if decision.allowed and violations and decision.mode is EnforcementMode.WARN:
            warnings += merge_by_image(
                decision.violations, images, prefix="not enforced (warn mode): ")
        warnings += merge_by_image(decision.warnings, images)
    if not decision.allowed:
        lead = f"{gate_note}: " if gate_note else ""
        return AdmissionResponse(
            uid=uid,
            allowed=False,
            code=403,
            message=lead + join_message(violations or ["denied by policy"], suffix),
            warnings=fit_warnings([*warnings, *extra_warnings], decision.decision_id),
            audit_annotations=annotations,
            outcome="denied",
        )
    patch: tuple[dict[str, Any], ...] = ()
    if mutate:
        patch, pin_warnings = build_pin_patch(decision, images)
        if not reused:
            warnings += pin_warnings
    if not reused:
        warnings += extra_warnings
    evaluated = len({i.reference.original for i in images})
    if violations:
        message = f"admitted in {decision.mode.value} mode with {len(violations)} violation(s)"
        if gate_note:
            message += f"; {gate_note}"
    elif evaluated == 0:
        message = "admitted: no image changed"
    else:
        message = f"admitted: {evaluated} image(s) evaluated"
        if unchanged:
            message += f", {unchanged} unchanged"
    return AdmissionResponse(
        uid=uid,
        allowed=True,
        code=200,
        message=message + suffix,
        warnings=fit_warnings(warnings, decision.decision_id),
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
        warnings=fit_warnings(warnings, annotations.get("decision-id") if annotations else None),
        audit_annotations=dict(annotations or {}),
        outcome=outcome,
    )
