"""Continuous compliance of what already runs (the background loop, PolicyReports,
``GET /v1/compliance``); see :mod:`gatekeeper.compliance.scanner`."""

from gatekeeper.compliance.loop import BackgroundMetrics, ComplianceLoop
from gatekeeper.compliance.scanner import ComplianceScanner, ComplianceSnapshot, WorkloadResult

__all__ = [
    "BackgroundMetrics",
    "ComplianceLoop",
    "ComplianceScanner",
    "ComplianceSnapshot",
    "WorkloadResult",
]
