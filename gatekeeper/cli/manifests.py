"""``gatekeeper evaluate -f FILE``: the workloads of Kubernetes manifests, decided as admission
would decide them (one decision per workload), in process or through ``--server``."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from gatekeeper.cli.common import fail, load_settings, remote, waiting
from gatekeeper.cli.output import Finding

__all__ = ["MAX_MANIFEST_BYTES", "evaluate_manifest_file", "manifest_findings", "manifest_table",
           "read_manifests"]

#: Largest manifest file read (stdin included); the server's body limit applies remotely.
MAX_MANIFEST_BYTES = 16 * 1024 * 1024


def read_manifests(path: Path) -> str:
    """The text of ``path``; ``-`` reads standard input."""
    try:
        if str(path) == "-":
            data = sys.stdin.buffer.read(MAX_MANIFEST_BYTES + 1)
        else:
            with path.open("rb") as stream:
                data = stream.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        fail(f"-f {path}: cannot read: {exc.strerror or exc}")
    if len(data) > MAX_MANIFEST_BYTES:
        fail(f"-f {path}: more than {MAX_MANIFEST_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        fail(f"-f {path}: not UTF-8 text (byte {exc.start})")


def evaluate_manifest_file(body: dict[str, Any], server: str | None) -> dict[str, Any]:
    """POST the manifests to ``server``, or decide them in process like the server would."""
    if server:
        document: dict[str, Any] = remote("POST", server, "/v1/evaluations", json=body)
        return document
    from gatekeeper.domain import Ticket
    from gatekeeper.domain.manifests import parse_manifests
    from gatekeeper.manifests import ManifestTarget, evaluate_manifests, manifests_document
    from gatekeeper.wiring import build_container

    settings = load_settings()
    objects = parse_manifests(body["manifests"])  # bad manifests fail before anything starts
    target = ManifestTarget(
        environment=body.get("environment") or settings.default_environment,
        namespace=body.get("namespace"), ticket=Ticket(**body["ticket"]),
        mode=settings.pipeline_mode,
    )
    container = build_container(settings)
    with waiting("evaluating"):
        container.start()
        try:
            deadline = time.monotonic() + settings.evidence_budget_seconds
            decisions, others = evaluate_manifests(container.service, objects, target,
                                                   deadline=deadline)
            return manifests_document(decisions, others)
        finally:
            container.stop()


def _title(workload: dict[str, Any]) -> str:
    where = "/".join(p for p in (workload.get("namespace"), workload.get("name")) if p)
    return f"{workload['kind']} {where or '(unnamed)'}"


def manifest_table(document: dict[str, Any]) -> list[str]:
    workloads = document["workloads"]
    counts: dict[str, int] = {}
    for workload in workloads:
        counts[workload["verdict"]] = counts.get(workload["verdict"], 0) + 1
    summary = ", ".join(f"{n} {verdict}" for verdict, n in sorted(counts.items()))
    lines = [f"verdict   {document['verdict'].upper()}  ({len(workloads)} workloads: {summary})"]
    for workload in workloads:
        decision = workload["decision"]
        lines.append(f"{workload['verdict'].upper():<9} {_title(workload)}  "
                     f"(document {workload['document']}, decision {decision['decision_id']})")
        lines.extend(f"          {message}" for message in workload["messages"])
        for warning in decision.get("warnings", []):
            where = f"{warning['image']}: " if warning.get("image") else ""
            lines.append(f"          warning: {where}{warning['message']}")
    for other in document.get("not_evaluated", []):
        lines.append(f"{'skipped':<9} {other.get('kind') or 'object'} {other.get('name') or ''}"
                     f"  (document {other['document']}): {other['reason']}")
    return lines


def manifest_findings(document: dict[str, Any]) -> list[Finding]:
    """A finding per violation and warning of each workload; a pass for a clean workload."""
    findings: list[Finding] = []
    for workload in document["workloads"]:
        decision = workload["decision"]
        suite = f"gatekeeper evaluate ({decision.get('environment')})"
        name = _title(workload)
        for message in workload["messages"]:
            findings.append(Finding(suite, name, "error", message))
        for warning in decision.get("warnings", []):
            findings.append(Finding(suite, name, "warning", warning["message"],
                                    rule=warning["policy"]))
        if not workload["messages"] and not decision.get("warnings"):
            findings.append(Finding(suite, name, "pass"))
    return findings
