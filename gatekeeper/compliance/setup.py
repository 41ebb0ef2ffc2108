"""Builds the background loop from the settings (called by :func:`gatekeeper.app.create_app`
only when ``background_enabled``); its Kubernetes adapters come from the composition root
(:func:`gatekeeper.wiring.build_compliance_adapters`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gatekeeper.compliance.loop import BackgroundMetrics, ComplianceLoop
from gatekeeper.compliance.scanner import ComplianceScanner
from gatekeeper.config import Settings
from gatekeeper.webhook.scope import AdmissionSettings
from gatekeeper.wiring import Container, build_compliance_adapters

__all__ = ["Background", "build_background"]


@dataclass
class Background:
    scanner: ComplianceScanner
    loop: ComplianceLoop
    close: Callable[[], None]

    def start(self) -> None:
        self.loop.start()

    def stop(self) -> None:
        self.loop.stop()
        self.close()


def build_background(settings: Settings, container: Container,
                     admission: AdmissionSettings) -> Background | None:
    if not settings.background_enabled:
        return None
    adapters = build_compliance_adapters(settings, admission.all_excluded_namespaces)
    scanner = ComplianceScanner(
        container.service, admission, adapters.workloads, adapters.reports,
        metrics=BackgroundMetrics(container.metrics.registry),
        pull_secrets=adapters.pull_secrets,
    )
    engine = container.policy_engine
    loop = ComplianceLoop(scanner, interval=settings.background_interval_seconds,
                          tick=settings.background_revision_check_seconds,
                          revision=engine.revision)
    return Background(scanner, loop, adapters.close)
