"""``wgpolicyk8s.io/v1alpha2`` PolicyReports from background results (what Policy Reporter and
Kyverno users read), and the adapters that read workloads from and write reports to the API
server (the :class:`~gatekeeper.domain.ports.compliance.WorkloadSource` and
:class:`~gatekeeper.domain.ports.compliance.ReportSink` of the background door).

One report per namespace, named :data:`REPORT_NAME`: per workload, one ``fail`` result per
violation (``policy`` the gatekeeper policy, ``rule`` the image or ``workload``), one ``warn``
result per warning, or a single ``pass`` result. ``resources`` names the workload,
``timestamp`` is when it was evaluated; ``summary`` counts the results.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from gatekeeper.domain.decision import Verdict
from gatekeeper.domain.ports.compliance import WorkloadResult
from gatekeeper.kube.client import KubeClient
from gatekeeper.kube.workloads import (
    POLICY_REPORT_API,
    Workload,
    list_workloads,
    write_policy_report,
)

__all__ = ["REPORT_NAME", "REPORT_SOURCE", "KubePolicyReports", "KubeWorkloads",
           "build_policy_report"]

REPORT_NAME = "forge-gatekeeper"
REPORT_SOURCE = "forge-gatekeeper"
_MESSAGE_LIMIT = 1024  # a report holds every workload of a namespace: keep each result small


def _timestamp(moment: datetime) -> dict[str, int]:
    return {"seconds": int(moment.timestamp()), "nanos": 0}


def _resource(result: WorkloadResult) -> dict[str, str]:
    workload = result.workload
    reference = {"apiVersion": str(workload.obj.get("apiVersion") or ""), "kind": workload.kind,
                 "namespace": workload.namespace, "name": workload.name}
    if workload.uid:
        reference["uid"] = workload.uid
    return reference


def _entry(result: WorkloadResult, outcome: str, policy: str, rule: str,
           message: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "source": REPORT_SOURCE, "policy": policy, "rule": rule, "result": outcome,
        "message": message[:_MESSAGE_LIMIT], "scored": True,
        "resources": [_resource(result)], "timestamp": _timestamp(result.evaluated_at),
        "properties": {"verdict": result.verdict.value},
    }
    if result.revision:
        entry["properties"]["policyRevision"] = result.revision
    if result.decision_id:
        entry["properties"]["decisionId"] = result.decision_id
    return entry


def _entries(result: WorkloadResult) -> list[dict[str, Any]]:
    entries = [_entry(result, "fail", v.policy, v.image or "workload", v.message)
               for v in result.violations]
    if not result.violations and result.verdict is Verdict.DENY:  # never a silent pass
        entries.append(_entry(result, "fail", "gatekeeper", "workload", "denied"))
    entries += [_entry(result, "warn", w.policy, w.image or "workload", w.message)
                for w in result.warnings]
    if not entries:
        entries.append(_entry(result, "pass", "gatekeeper", "workload",
                              "admission would allow this workload"))
    return entries


def build_policy_report(namespace: str, results: Sequence[WorkloadResult],
                        revision: str | None) -> dict[str, Any]:
    entries = [entry for result in results for entry in _entries(result)]
    summary = {name: sum(e["result"] == name for e in entries)
               for name in ("pass", "fail", "warn", "error", "skip")}
    labels = {"app.kubernetes.io/managed-by": REPORT_SOURCE}
    annotations = {"gatekeeper.forge.dev/policy-revision": revision} if revision else {}
    return {
        "apiVersion": POLICY_REPORT_API, "kind": "PolicyReport",
        "metadata": {"name": REPORT_NAME, "namespace": namespace, "labels": labels,
                     "annotations": annotations},
        "summary": summary,
        "results": entries,
    }


class KubeWorkloads:
    """The workloads stored in the API server outside the excluded namespaces."""

    def __init__(self, client: KubeClient, excluded_namespaces: frozenset[str]) -> None:
        self._client = client
        self._excluded = excluded_namespaces

    def list_workloads(self) -> list[Workload]:
        return list_workloads(self._client, self._excluded)


class KubePolicyReports:
    """Creates or replaces the namespace's PolicyReport through the API server."""

    def __init__(self, client: KubeClient) -> None:
        self._client = client

    def write(self, namespace: str, results: Sequence[WorkloadResult],
              revision: str | None, now: datetime) -> str:
        del now  # each result carries its own evaluation time
        return write_policy_report(self._client, namespace,
                                   build_policy_report(namespace, results, revision))
