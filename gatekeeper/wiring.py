"""Composition root: the only module that knows the concrete adapter classes."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from gatekeeper.audit import SqlAuditLog, create_database_engine
from gatekeeper.config import Settings
from gatekeeper.domain import EvidenceCollector, PolicyEngine
from gatekeeper.errors import ConfigurationError
from gatekeeper.metrics import Metrics
from gatekeeper.policy import EmbeddedOpa, OpaPolicyEngine
from gatekeeper.service import EvaluationService

__all__ = ["Container", "build_container", "find_opa_binary"]

log = logging.getLogger(__name__)


def find_opa_binary(settings: Settings) -> str:
    """The configured binary, else the one ``scripts/install-tools`` put in ``.tools/bin``."""
    if settings.opa_binary:
        return settings.opa_binary
    checkout = Path(__file__).resolve().parent.parent
    for candidate in (Path.cwd() / ".tools/bin/opa", checkout / ".tools/bin/opa"):
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("opa")
    if found is None:
        raise ConfigurationError(
            "no opa binary: run scripts/install-tools, set GATEKEEPER_OPA_BINARY, "
            "or point GATEKEEPER_OPA_URL at a running OPA"
        )
    return found


@dataclass
class Container:
    """Everything the entry points need, built from one :class:`Settings`."""

    settings: Settings
    metrics: Metrics
    policy_engine: PolicyEngine
    audit_log: SqlAuditLog
    service: EvaluationService
    embedded_opa: EmbeddedOpa | None = None
    collectors: list[EvidenceCollector] = field(default_factory=list)
    started: bool = False

    def start(self) -> None:
        """Start child processes and migrate the store; idempotent."""
        if self.started:
            return
        self.audit_log.migrate()
        if self.embedded_opa is not None:
            self.embedded_opa.start()
        self.started = True

    def stop(self) -> None:
        if self.embedded_opa is not None:
            self.embedded_opa.stop()
        elif isinstance(self.policy_engine, OpaPolicyEngine):
            self.policy_engine.close()
        self.audit_log.close()
        self.started = False

    @property
    def policy_engine_description(self) -> str:
        if self.settings.opa_url:
            return f"OPA at {self.settings.opa_url}"
        return f"embedded OPA (pid {self.embedded_opa.pid if self.embedded_opa else '-'})"


def build_container(settings: Settings, *, metrics: Metrics | None = None) -> Container:
    """Build (but do not start) every component for ``settings``."""
    metrics = metrics or Metrics()
    embedded: EmbeddedOpa | None = None
    engine: PolicyEngine
    if settings.opa_url:
        # The revision of a sidecar is read from what that OPA really loaded (its API).
        engine = OpaPolicyEngine.for_url(
            settings.opa_url, timeout=settings.opa_timeout_seconds, metrics=metrics
        )
    else:
        embedded = EmbeddedOpa(
            opa_binary=find_opa_binary(settings),
            policy_dir=settings.policy_dir,
            metrics=metrics,
            timeout=settings.opa_timeout_seconds,
        )
        engine = embedded.engine
    audit_log = SqlAuditLog(create_database_engine(settings.database_url), metrics=metrics)
    collectors: list[EvidenceCollector] = []
    service = EvaluationService(policy_engine=engine, audit_log=audit_log, collectors=collectors)
    return Container(
        settings=settings,
        metrics=metrics,
        policy_engine=engine,
        audit_log=audit_log,
        service=service,
        embedded_opa=embedded,
        collectors=collectors,
    )
