"""Composition root: the only module that knows the concrete adapter classes."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import Engine

from gatekeeper import __version__
from gatekeeper.audit import SqlAuditLog, open_audit_log
from gatekeeper.audit.opa_log import DecisionLogFile
from gatekeeper.audit.trail import SqlAuditTrailStore, TrailSettings
from gatekeeper.bridges import AttestedSbomSource, AttestedVexSource, ReferrerSbomSource
from gatekeeper.config import Settings
from gatekeeper.domain import EvidenceCollector, PolicyEngine
from gatekeeper.domain.evidence_documents import EvidenceExternaliser
from gatekeeper.domain.policy_lifecycle import CheckReport, OpaTestRun, PolicyCandidate
from gatekeeper.domain.ports.compliance import ComplianceAdapters
from gatekeeper.domain.reference import parse_image_reference
from gatekeeper.errors import ConfigurationError
from gatekeeper.evaluation.tag_digests import TagDigestMemory
from gatekeeper.evidence_cache import EvidenceCache
from gatekeeper.evidence_wiring import (
    build_registry_client,
    build_signature_collector,
    load_trust_root,
)
from gatekeeper.metrics import Metrics
from gatekeeper.policy import EmbeddedOpa, OpaPolicyEngine
from gatekeeper.policy.bundle import OpaBundleBuilder, PolicyFiles
from gatekeeper.policy.bundle_signing import BundleSigner
from gatekeeper.policy.candidates import FileCandidateLoader
from gatekeeper.policy.checks import OpaCandidateChecker
from gatekeeper.policy.embedded import GoRuntime
from gatekeeper.policy.factory import PolicyStatePaths, create_replica
from gatekeeper.policy.replay import OpaDecisionReplayer, SqlDecisionHistory
from gatekeeper.policy.sidecar import SidecarBundleRevision
from gatekeeper.policy.store import SqlPolicyStore
from gatekeeper.registry import (
    OciRegistryClient,
)
from gatekeeper.sbom import (
    CycloneDxValidator,
    JsonLimits,
    NormalisationLimits,
    SbomEvidenceCollector,
    SbomSource,
    SqlSbomStore,
    StoredSbomSource,
)
from gatekeeper.sbom.inspector import SbomDocumentInspector
from gatekeeper.scans import EcrScanSource, ScanEvidenceCollector
from gatekeeper.service import EvaluationService
from gatekeeper.storage import create_database_engine
from gatekeeper.tracing import Tracing, build_tracing
from gatekeeper.usecases import PolicyAuthoring, PolicyLifecycle, SbomUploads, VexUploads
from gatekeeper.usecases.audit_trail import AuditTrail
from gatekeeper.vex import (
    SqlVexStore,
    StoredVexSource,
    VexEvidenceCollector,
    VexJsonInspector,
    VexLimits,
    VexSource,
)

__all__ = [
    "Container",
    "build_compliance_adapters",
    "build_container",
    "build_registry_client",
    "build_signature_collector",
    "create_policy_lifecycle",
    "find_opa_binary",
    "load_trust_root",
    "open_policy_authoring",
    "open_policy_services",
    "open_audit_trail",
    "replay_spool",
    "trail_settings",
    "write_audit_signing_key",
]

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


def trust_root_written_at(name: str) -> float | None:
    """When the trust root in use was written (its file's mtime), for the age metric."""
    from importlib import resources

    try:
        if name in ("public-good", "staging"):
            directory = {"public-good": "https%3A%2F%2Ftuf-repo-cdn.sigstore.dev",
                         "staging": "https%3A%2F%2Ftuf-repo-cdn.sigstage.dev"}[name]
            shipped = resources.files("sigstore").joinpath("_store", directory, "trusted_root.json")
            return Path(str(shipped)).stat().st_mtime
        if name == "none":
            return None
        return Path(name).stat().st_mtime
    except OSError:
        return None


@dataclass
class Container:
    """Everything the entry points need, built from one :class:`Settings`."""

    settings: Settings
    metrics: Metrics
    policy_engine: PolicyEngine
    audit_log: SqlAuditLog
    service: EvaluationService
    registry: OciRegistryClient
    sbom_store: SqlSbomStore
    sbom_uploader: SbomUploads
    sbom_validator: CycloneDxValidator
    #: The audit trail use case (export, verify, checkpoints, retention) the API calls.
    audit_trail: AuditTrail
    embedded_opa: EmbeddedOpa | None = None
    vex_store: SqlVexStore | None = None
    vex_uploader: VexUploads | None = None
    policy_lifecycle: PolicyLifecycle | None = None
    #: A temporary policy state directory this container created (removed on stop).
    policy_state_tmp: Path | None = None
    collectors: list[EvidenceCollector] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)
    #: Signs the policy bundles served to OPA sidecars (None: served unsigned).
    bundle_signer: BundleSigner | None = None
    tracing: Tracing = field(default_factory=lambda: build_tracing(
        None, service_name="", sample_ratio=1.0, version=__version__))
    started: bool = False

    def start(self) -> None:
        """Start child processes and migrate the store; idempotent."""
        if self.started:
            return
        self.audit_log.migrate()  # also replays what a previous run left in the spool
        self.audit_log.start()  # spool replay, time-based checkpoints, retention
        self.sbom_store.create_tables()
        if self.vex_store is not None:
            self.vex_store.create_tables()
        self.sbom_validator.warm_up()
        lifecycle, settings = self.policy_lifecycle, self.settings
        if lifecycle is not None:
            # (1) migrate, bootstrap the shipped policies if nothing is active, materialise
            # the active revision and the exceptions where the embedded OPA will load them
            tests = settings.policy_tests_dir if settings.policy_tests_dir.is_dir() else None
            lifecycle.start(bootstrap=PolicyFiles.from_directory(settings.policy_dir, tests))
        if self.embedded_opa is not None:
            self.embedded_opa.start()
        if lifecycle is not None:
            # (2) wait until the engine serves the active revision, then follow the store
            # (other replicas) and the watched path (GitOps)
            if self.embedded_opa is not None:
                lifecycle.sync(force=True)
            lifecycle.start_background_sync(settings.policy_sync_interval_seconds)
            if settings.policy_watch_interval_seconds > 0:
                watched = settings.policy_watch_path or settings.policy_dir
                lifecycle.watch_path(
                    watched,
                    settings.policy_watch_interval_seconds,
                    tests_dir=None if settings.policy_watch_path else tests,
                )
        self.started = True

    def stop(self) -> None:
        if self.policy_lifecycle is not None:
            self.policy_lifecycle.stop()
        if self.embedded_opa is not None:
            self.embedded_opa.stop()
        elif isinstance(self.policy_engine, OpaPolicyEngine):
            self.policy_engine.close()
        self.registry.close()
        self.service.close()  # audit writes under way finish first
        self.audit_log.close()
        if self.policy_state_tmp is not None:
            shutil.rmtree(self.policy_state_tmp, ignore_errors=True)
        self.tracing.shutdown()  # flushes the spans still in the batch
        self.started = False

    @property
    def policy_engine_description(self) -> str:
        if self.settings.opa_url:
            return f"OPA at {self.settings.opa_url}"
        return f"embedded OPA (pid {self.embedded_opa.pid if self.embedded_opa else '-'})"


def build_container(settings: Settings, *, metrics: Metrics | None = None) -> Container:
    """Build (but do not start) every component for ``settings``."""
    metrics = metrics or Metrics()
    metrics.set_build_info(__version__)
    tracing = build_tracing(
        settings.tracing_otlp_endpoint, service_name=settings.tracing_service_name,
        sample_ratio=settings.tracing_sample_ratio, version=__version__,
    )
    embedded: EmbeddedOpa | None = None
    engine: PolicyEngine
    opa_binary = find_opa_binary(settings)  # also checks and replays candidates
    state_tmp: Path | None = None
    state: PolicyStatePaths | None = None
    if settings.opa_url:
        # The sidecar pulls the active revision from GET /v1/policies/bundle; decisions record
        # the revision of the bundle it really loaded.
        engine = OpaPolicyEngine.for_url(
            settings.opa_url, timeout=settings.opa_timeout_seconds, metrics=metrics,
            local_revision=SidecarBundleRevision(
                httpx.Client(base_url=settings.opa_url, timeout=settings.opa_timeout_seconds),
                describe=f"OPA at {settings.opa_url}",
            ).current,
        )
    else:
        if settings.policy_state_dir is None:
            state_tmp = Path(tempfile.mkdtemp(prefix="gatekeeper-policy-"))
        state = PolicyStatePaths(settings.policy_state_dir or state_tmp or Path())
        # The embedded OPA serves the active revision (materialised from the store) plus the
        # exceptions; until the store is read at start, the shipped policies.
        state.prepare(settings.policy_dir)
        embedded = EmbeddedOpa(
            opa_binary=opa_binary,
            policy_dir=state.active,
            metrics=metrics,
            timeout=settings.opa_timeout_seconds,
            data_paths=[state.exceptions],
            go_runtime=GoRuntime(gogc=settings.opa_gogc, gomaxprocs=settings.opa_gomaxprocs),
        )
        engine = embedded.engine
    # One engine for every SQL store (gatekeeper.storage); the audit trail disposes it on close.
    database = create_database_engine(settings.database_url)
    audit_log = open_audit_log(
        settings.database_url,
        engine=database,
        signing_key_file=settings.audit_signing_key_file,
        public_key_file=settings.audit_public_key_file,
        spool_dir=settings.audit_spool_dir,
        checkpoint_every=settings.audit_checkpoint_every,
        checkpoint_interval_seconds=settings.audit_checkpoint_interval_seconds,
        batch_size=settings.audit_batch_size,
        batch_wait_seconds=settings.audit_batch_wait_seconds,
        retention_days=settings.audit_retention_days,
        metrics=metrics,
        witness=settings.audit_witness,
        witness_endpoint_url=settings.audit_witness_endpoint_url,
        witness_retention_days=settings.audit_witness_retention_days,
    )
    metrics.track_checkpoints(audit_log.checkpoint_status)
    metrics.track_trust_root(
        trust_root_written_at(settings.trusted_root) if settings.signatures is not None else None
    )
    registry = build_registry_client(settings, metrics, tracing)
    collectors: list[EvidenceCollector] = []
    signature_collector = build_signature_collector(settings, registry, metrics, preload=True)
    if signature_collector is not None:
        collectors.append(signature_collector)

    validator = CycloneDxValidator()
    json_limits = JsonLimits(settings.sbom_max_bytes, settings.sbom_max_depth)
    sbom_store = SqlSbomStore(database)
    # Every source is read and every document reaches the policy (an upload never hides an
    # attested SBOM). Attestations and referrers are read from the registry per image only
    # where it is read for cosign material already (signatures configured).
    sbom_sources: list[SbomSource] = []
    if signature_collector is not None:
        sbom_sources += [
            AttestedSbomSource(signature_collector),
            ReferrerSbomSource(registry, max_bytes=json_limits.max_bytes),
        ]
    sbom_sources.append(StoredSbomSource(sbom_store))
    sbom_collector = SbomEvidenceCollector(
        sources=sbom_sources,
        validator=validator,
        json_limits=json_limits,
        normalisation_limits=NormalisationLimits(max_components=settings.sbom_max_components),
    )
    collectors.append(sbom_collector)
    if settings.ecr_scan_enabled:
        collectors.append(
            ScanEvidenceCollector(
                source=EcrScanSource(
                    endpoint_url=settings.ecr_endpoint_url,
                    retry_mode=settings.ecr_retry_mode,
                    max_attempts=settings.ecr_max_attempts,
                    read_timeout=settings.ecr_timeout_seconds,
                    max_findings=settings.scan_max_findings,
                    on_call=metrics.ecr_call,
                ),
                ttl_seconds=settings.scan_cache_ttl_seconds,
                pending_ttl_seconds=settings.scan_pending_cache_ttl_seconds,
                metrics=metrics,
            )
        )
    # VEX: attested by an authority of the image policy, or uploaded by a VEX publisher.
    vex_store = SqlVexStore(database)
    vex_limits = VexLimits()
    vex_sources: list[VexSource] = [StoredVexSource(vex_store, limits=vex_limits)]
    if signature_collector is not None:
        vex_sources.insert(0, AttestedVexSource(signature_collector, vex_limits))
    collectors.append(VexEvidenceCollector(vex_sources))
    uploader = SbomUploads(
        store=sbom_store,
        inspector=SbomDocumentInspector(
            collector=sbom_collector, validator=validator, json_limits=json_limits
        ),
    )
    service = EvaluationService(
        policy_engine=engine,
        audit_log=audit_log,
        # warm admissions await the audit writer's own future: no thread hop per decision
        record_async=audit_log.record_async,
        collectors=collectors,
        digest_resolver=registry if settings.resolve_digests else None,
        tag_digest_memory=(
            TagDigestMemory(ttl_seconds=settings.tag_digest_ttl_seconds,
                            max_entries=settings.tag_digest_max_entries)
            if settings.resolve_digests and settings.tag_digest_ttl_seconds > 0
            else None
        ),
        prefilter=engine if isinstance(engine, OpaPolicyEngine) else None,
        # the embedded OPA is also asked on the event loop (warm admissions); a sidecar's
        # revision lookup blocks, so it keeps the worker-thread path
        async_policy_engine=(engine if isinstance(engine, OpaPolicyEngine)
                             and engine.evaluates_async else None),
        evidence_cache=(
            EvidenceCache(
                ttl_seconds=settings.evidence_cache_ttl_seconds,
                max_entries=settings.evidence_cache_max_entries,
            )
            if settings.evidence_cache_ttl_seconds > 0
            else None
        ),
        tracer=tracing.tracer,
        evidence_externaliser=EvidenceExternaliser(settings.evidence_inline_max_bytes),
        observers=[metrics] + (
            [DecisionLogFile(settings.decision_log_file, version=__version__)]
            if settings.decision_log_file is not None else []
        ),
    )
    bundle_signer = BundleSigner.from_file(
        settings.bundle_signing_key_file, settings.bundle_signing_key_id
    ) if settings.bundle_signing_key_file is not None else None
    lifecycle = create_policy_lifecycle(
        database=database,
        opa_binary=opa_binary,
        state=state,
        embedded_socket=embedded.socket_path if embedded is not None else None,
        sidecar_url=settings.opa_url,
        # an exception's tags are pinned to the digests the registry serves when approved
        tag_resolver=lambda text: str(registry.resolve_digest(parse_image_reference(text))),
        bundle_signer=bundle_signer,
        # the embedded engine learns the revision it serves from the lifecycle (no directory
        # walk per decision)
        on_revision=embedded.served_revision.set if embedded is not None else None,
    )
    return Container(
        policy_lifecycle=lifecycle,
        policy_state_tmp=state_tmp,
        settings=settings,
        metrics=metrics,
        policy_engine=engine,
        audit_log=audit_log,
        service=service,
        registry=registry,
        sbom_store=sbom_store,
        sbom_uploader=uploader,
        sbom_validator=validator,
        audit_trail=AuditTrail(SqlAuditTrailStore(audit_log, trail_settings(settings))),
        embedded_opa=embedded,
        collectors=collectors,
        vex_store=vex_store,
        vex_uploader=VexUploads(store=vex_store, inspector=VexJsonInspector(vex_limits)),
        tracing=tracing,
        bundle_signer=bundle_signer,
    )


def create_policy_lifecycle(
    *,
    database: Engine,
    opa_binary: str,
    state: PolicyStatePaths | None,
    embedded_socket: Path | None = None,
    sidecar_url: str | None = None,
    timeout: float = 5.0,
    clock: Callable[[], datetime] | None = None,
    tag_resolver: Callable[[str], str] | None = None,
    bundle_signer: BundleSigner | None = None,
    on_revision: Callable[[str | None], None] | None = None,
) -> PolicyLifecycle:
    """The policy lifecycle (and its exceptions) on ``database``, for an embedded OPA
    (``state`` + ``embedded_socket``), a sidecar (``sidecar_url``), or no engine at all
    (``state=None``: the CLI, whose changes running gatekeepers pick up on their next sync)."""
    return PolicyLifecycle(
        store=SqlPolicyStore(database, clock=clock),
        checker=OpaCandidateChecker(opa_binary),
        candidates=FileCandidateLoader(),
        bundles=OpaBundleBuilder(bundle_signer),
        replayer=OpaDecisionReplayer(opa_binary, SqlDecisionHistory(database)),
        replica=create_replica(
            state=state, embedded_socket=embedded_socket, sidecar_url=sidecar_url,
            timeout=timeout, on_revision=on_revision,
        ),
        clock=clock,
        tag_resolver=tag_resolver,
    )


class _CheckerOnFirstUse:
    """The ``opa`` checker, looked up when a check first runs: loading a candidate to send it
    to a server (``--server``) needs no local ``opa``."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._checker: OpaCandidateChecker | None = None

    def _opa(self) -> OpaCandidateChecker:
        if self._checker is None:
            self._checker = OpaCandidateChecker(find_opa_binary(self._settings))
        return self._checker

    def check(self, files: PolicyCandidate, *, require_tests: bool = True) -> CheckReport:
        return self._opa().check(files, require_tests=require_tests)

    def run_tests(self, roots: list[Path], *, cwd: Path) -> OpaTestRun:
        return self._opa().run_tests(roots, cwd=cwd)


def open_policy_authoring(settings: Settings) -> PolicyAuthoring:
    """Candidate loading, checks and tests with the configured ``opa`` (no store)."""
    return PolicyAuthoring(checker=_CheckerOnFirstUse(settings), candidates=FileCandidateLoader())


def open_policy_services(settings: Settings) -> PolicyLifecycle:
    """The policy lifecycle and its exceptions (``.exceptions``) on the configured store,
    migrated, feeding no engine (the CLI's in-process commands)."""
    lifecycle = create_policy_lifecycle(
        database=create_database_engine(settings.database_url),
        opa_binary=find_opa_binary(settings),
        state=None,
    )
    lifecycle.store.migrate()
    return lifecycle
def trail_settings(settings: Settings) -> TrailSettings:
    """What the audit trail's verification needs from the settings."""
    return TrailSettings(
        database_url=settings.database_url,
        spool_dir=settings.audit_spool_dir,
        public_key_file=settings.audit_public_key_file,
        signing_key_file=settings.audit_signing_key_file,
        checkpoint_every=settings.audit_checkpoint_every,
        checkpoint_interval_seconds=settings.audit_checkpoint_interval_seconds,
        witness_endpoint_url=settings.audit_witness_endpoint_url,
        witness_retention_days=settings.audit_witness_retention_days,
        version=__version__,
    )


def open_audit_trail(settings: Settings, *, signing: bool) -> AuditTrail:
    """The audit trail for a command (the CLI's factory): the store is opened and migrated on
    first use only (verifying an export file never touches it); with the checkpoint signing
    key when ``signing`` (export, checkpoint, prune), else for reading. Close it when done."""

    def open_log() -> SqlAuditLog:
        audit = open_audit_log(
            settings.database_url,
            signing_key_file=settings.audit_signing_key_file if signing else None,
            checkpoint_every=settings.audit_checkpoint_every,
            read_only=not signing,
            generate_embedded_key=signing,
        )
        audit.migrate()
        return audit

    return AuditTrail(SqlAuditTrailStore(open_log, trail_settings(settings)))


def replay_spool(settings: Settings, spool_dir: Path) -> tuple[int, str | None]:
    """Replay the audit spool in ``spool_dir`` (a former worker's) into the chain; the
    decisions still waiting there afterwards, and why they could not be replayed."""
    audit = open_audit_log(
        settings.database_url, signing_key_file=settings.audit_signing_key_file,
        spool_dir=spool_dir, checkpoint_every=settings.audit_checkpoint_every,
        generate_embedded_key=False,
    )
    try:
        if audit.spool_depth:
            audit.migrate()  # replays the spool into the chain
        return audit.spool_depth, audit.replay_error
    finally:
        audit.close()


def write_audit_signing_key(file: Path) -> str:
    """A new Ed25519 checkpoint signing key at ``file`` (and ``FILE.pub``); its key id."""
    from gatekeeper.audit.chain import write_signing_key

    return write_signing_key(file)


def build_compliance_adapters(settings: Settings,
                              excluded_namespaces: frozenset[str]) -> ComplianceAdapters:
    """The background door's Kubernetes adapters, sharing one API server connection (imported
    here, not at the top: only ``background_enabled`` servers need them)."""
    from gatekeeper.kube.client import KubeClient
    from gatekeeper.kube.pull_secrets import KubePullSecrets
    from gatekeeper.kube.reports import KubePolicyReports, KubeWorkloads
    from gatekeeper.registry.auth import DockerConfigCredentials

    client = KubeClient(settings.background_kube_server,
                        token_file=settings.background_kube_token_file,
                        ca_file=settings.background_kube_ca_file)
    return ComplianceAdapters(
        workloads=KubeWorkloads(client, excluded_namespaces),
        reports=KubePolicyReports(client) if settings.background_policy_reports else None,
        pull_secrets=(KubePullSecrets(client, DockerConfigCredentials)
                      if settings.background_pull_secrets else None),
        close=client.close,
    )
