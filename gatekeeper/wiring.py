"""Composition root: the only module that knows the concrete adapter classes."""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from gatekeeper import __version__
from gatekeeper.audit import SqlAuditLog, open_audit_log
from gatekeeper.audit.opa_log import DecisionLogFile
from gatekeeper.audit.trail import SqlAuditTrailStore, TrailSettings
from gatekeeper.bridges import AttestedSbomSource, AttestedVexSource, ReferrerSbomSource
from gatekeeper.config import Settings
from gatekeeper.domain import EvidenceCollector, PolicyEngine
from gatekeeper.domain.reference import parse_image_reference
from gatekeeper.errors import ConfigurationError
from gatekeeper.evidence_cache import EvidenceCache
from gatekeeper.metrics import Metrics
from gatekeeper.policy import EmbeddedOpa, OpaPolicyEngine
from gatekeeper.policy.bundle import PolicyFiles
from gatekeeper.policy.bundle_signing import BundleSigner
from gatekeeper.policy.factory import PolicyStatePaths, create_policy_lifecycle
from gatekeeper.policy.lifecycle import PolicyLifecycle
from gatekeeper.policy.sidecar import SidecarBundleRevision
from gatekeeper.registry import (
    BasicCredentials,
    ChainedCredentials,
    CredentialProvider,
    DockerConfigCredentials,
    EcrCredentials,
    OciRegistryClient,
    RegistryClientSettings,
    StaticCredentials,
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
from gatekeeper.usecases import SbomUploads
from gatekeeper.usecases.audit_trail import AuditTrail
from gatekeeper.verify import SignatureEvidenceCollector, SignaturePolicySettings, TrustRoot
from gatekeeper.vex import (
    SqlVexStore,
    StoredVexSource,
    VexEvidenceCollector,
    VexLimits,
    VexSource,
    VexUploader,
)

__all__ = [
    "Container",
    "build_container",
    "build_registry_client",
    "build_signature_collector",
    "find_opa_binary",
    "load_trust_root",
    "open_audit_trail",
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


_MAX_DOCKER_CONFIG_BYTES = 1 << 20


def build_registry_client(
    settings: Settings, metrics: Metrics | None = None, tracing: Tracing | None = None
) -> OciRegistryClient:
    """Registry client with credentials: settings first, then docker config.json, then ECR."""
    registry_settings = RegistryClientSettings.from_mapping(settings.registry)
    providers: list[CredentialProvider] = [
        StaticCredentials(
            {
                host.host: BasicCredentials(host.username, host.password)
                for host in registry_settings.hosts
                if host.username is not None and host.password is not None
            }
        )
    ]
    if settings.docker_config is not None:
        try:
            with settings.docker_config.open("rb") as handle:
                raw = handle.read(_MAX_DOCKER_CONFIG_BYTES + 1)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read docker config {settings.docker_config}: {exc.strerror}"
            ) from exc
        if len(raw) > _MAX_DOCKER_CONFIG_BYTES:
            raise ConfigurationError(f"docker config {settings.docker_config} is over 1 MiB")
        providers.append(DockerConfigCredentials.from_json(raw))
    if settings.ecr_auth:
        import boto3  # only the composition root knows that boto3 is behind ECR tokens

        providers.append(EcrCredentials(lambda region: boto3.client("ecr", region_name=region)))
    return OciRegistryClient(
        registry_settings, credentials=ChainedCredentials(providers),
        on_request=metrics.registry_request if metrics is not None else None,
        on_client=tracing.instrument_http_client if tracing is not None and tracing.enabled
        else None,
    )


def load_trust_root(name: str) -> TrustRoot:
    """``public-good`` | ``staging`` | ``none`` | path of a trusted_root.json."""
    if name == "public-good":
        return TrustRoot.public_good()
    if name == "staging":
        return TrustRoot.staging()
    if name == "none":
        return TrustRoot.none()
    path = Path(name)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read trusted root {path}: {exc.strerror}") from exc
    return TrustRoot.from_json(data, name=str(path))


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


def build_signature_collector(
    settings: Settings, registry: OciRegistryClient, metrics: Metrics
) -> SignatureEvidenceCollector | None:
    if settings.signatures is None:
        return None
    return SignatureEvidenceCollector(
        SignaturePolicySettings.from_mapping(settings.signatures),
        registry,
        load_trust_root(settings.trusted_root),
        metrics=metrics,
    )


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
    vex_uploader: VexUploader | None = None
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
    signature_collector = build_signature_collector(settings, registry, metrics)
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
        collectors=collectors,
        digest_resolver=registry if settings.resolve_digests else None,
        prefilter=engine if isinstance(engine, OpaPolicyEngine) else None,
        evidence_cache=(
            EvidenceCache(
                ttl_seconds=settings.evidence_cache_ttl_seconds,
                max_entries=settings.evidence_cache_max_entries,
            )
            if settings.evidence_cache_ttl_seconds > 0
            else None
        ),
        tracer=tracing.tracer,
        observers=[metrics] + (
            [DecisionLogFile(settings.decision_log_file, version=__version__)]
            if settings.decision_log_file is not None else []
        ),
    )
    lifecycle = create_policy_lifecycle(
        database=database,
        opa_binary=opa_binary,
        state=state,
        embedded_socket=embedded.socket_path if embedded is not None else None,
        sidecar_url=settings.opa_url,
        # an exception's tags are pinned to the digests the registry serves when approved
        tag_resolver=lambda text: str(registry.resolve_digest(parse_image_reference(text))),
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
        vex_uploader=VexUploader(vex_store, limits=vex_limits),
        tracing=tracing,
        bundle_signer=BundleSigner.from_file(
            settings.bundle_signing_key_file, settings.bundle_signing_key_id
        ) if settings.bundle_signing_key_file is not None else None,
    )


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


def write_audit_signing_key(file: Path) -> str:
    """A new Ed25519 checkpoint signing key at ``file`` (and ``FILE.pub``); its key id."""
    from gatekeeper.audit.chain import write_signing_key

    return write_signing_key(file)
