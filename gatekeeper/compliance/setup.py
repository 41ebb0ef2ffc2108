"""Builds the background loop from the settings (called by :func:`gatekeeper.app.create_app`
only when ``background_enabled``)."""

from __future__ import annotations

from dataclasses import dataclass

from gatekeeper.compliance.loop import BackgroundMetrics, ComplianceLoop
from gatekeeper.compliance.pull_secrets import KubePullSecrets
from gatekeeper.compliance.reports import KubePolicyReports, KubeWorkloads
from gatekeeper.compliance.scanner import ComplianceScanner
from gatekeeper.config import Settings
from gatekeeper.kube.client import KubeClient
from gatekeeper.webhook.scope import AdmissionSettings
from gatekeeper.wiring import Container

__all__ = ["Background", "build_background"]


@dataclass
class Background:
    scanner: ComplianceScanner
    loop: ComplianceLoop
    client: KubeClient

    def start(self) -> None:
        self.loop.start()

    def stop(self) -> None:
        self.loop.stop()
        self.client.close()


def build_background(settings: Settings, container: Container,
                     admission: AdmissionSettings) -> Background | None:
    if not settings.background_enabled:
        return None
    client = KubeClient(settings.background_kube_server,
                        token_file=settings.background_kube_token_file,
                        ca_file=settings.background_kube_ca_file)
    scanner = ComplianceScanner(
        container.service, admission,
        KubeWorkloads(client, admission.all_excluded_namespaces),
        KubePolicyReports(client) if settings.background_policy_reports else None,
        metrics=BackgroundMetrics(container.metrics.registry),
        pull_secrets=KubePullSecrets(client) if settings.background_pull_secrets else None,
    )
    engine = container.policy_engine
    loop = ComplianceLoop(scanner, interval=settings.background_interval_seconds,
                          tick=settings.background_revision_check_seconds,
                          revision=engine.revision)
    return Background(scanner, loop, client)
