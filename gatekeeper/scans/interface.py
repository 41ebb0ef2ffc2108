"""Moved to :mod:`gatekeeper.domain.ports.scans`; this path re-exports it for one release."""

from gatekeeper.domain.ports.scans import (
    SEVERITIES,
    ScanFinding,
    ScanReport,
    ScanSource,
    ScanState,
    format_timestamp,
)

__all__ = [
    "SEVERITIES",
    "ScanFinding",
    "ScanReport",
    "ScanSource",
    "ScanState",
    "format_timestamp",
]
