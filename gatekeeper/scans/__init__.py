"""Vulnerability scan evidence: ECR basic and enhanced (Inspector) findings as policy input.

Entry points: :class:`EcrScanSource` (boto3) and :class:`ScanEvidenceCollector` (the ``scan``
evidence section, cached per digest).
"""

from gatekeeper.domain.ports.scans import SEVERITIES, ScanFinding, ScanReport, ScanSource, ScanState
from gatekeeper.scans.collector import ScanEvidenceCollector
from gatekeeper.scans.ecr import EcrImageLocation, EcrScanSource, parse_ecr_host, report_from_pages

__all__ = [
    "SEVERITIES",
    "EcrImageLocation",
    "EcrScanSource",
    "ScanEvidenceCollector",
    "ScanFinding",
    "ScanReport",
    "ScanSource",
    "ScanState",
    "parse_ecr_host",
    "report_from_pages",
]
