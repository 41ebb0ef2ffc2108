"""The evidence sections the service itself writes when a collector gave none.

A collector's own section (``signatures``, ``sbom``, ``scan``, ``vex``) is its adapter's
frozen type rendered by ``as_input``; when the service could not or would not ask it, the
section under ``input.images[].evidence.<collector>`` is one of these two JSON forms:

* ``{"status": "error", "reason": "..."}`` - the collector raised (registry unreachable,
  scanner throttled); the policy denies on it and the decision names the failure;
* ``{"status": "skipped", "state": "skipped", "reason": "not gathered: ..."}`` - network-free
  rules already denied the image, so nothing was fetched for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["EvidenceError", "EvidenceSkipped"]


@dataclass(frozen=True, slots=True)
class EvidenceError:
    """The section of a collector that failed, with the failure's message."""

    reason: str

    def as_input(self) -> dict[str, Any]:
        return {"status": "error", "reason": self.reason}


@dataclass(frozen=True, slots=True)
class EvidenceSkipped:
    """The section of every collector for an image the network-free rules denied."""

    reason: str

    def as_input(self) -> dict[str, Any]:
        return {"status": "skipped", "state": "skipped", "reason": self.reason}
