"""Settings: the only reader of environment variables and configuration files.

One frozen :class:`Settings` object is built at the top (``load_settings``) and passed down.
Sources, highest priority first: ``GATEKEEPER_*`` environment variables, then the YAML file
named by ``GATEKEEPER_CONFIG`` (keys are the field names below), then the defaults.

An environment variable is ``GATEKEEPER_`` + the field name (any case); list and mapping
settings take JSON there, and a mapping given both ways is merged key by key (the
environment's keys win), as pydantic-settings did. The reading is ours because
pydantic-settings cost every command ~40 ms of imports (asyncio, dotenv, its CLI parser),
an eighth of ``gatekeeper verify``.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import types
import typing
from collections.abc import Mapping, Sequence, Set
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from gatekeeper.domain import EnforcementMode
from gatekeeper.errors import ConfigurationError
from gatekeeper.registry.settings import RegistryClientSettings

__all__ = ["Settings", "load_settings", "unknown_environment_variables"]

log = logging.getLogger(__name__)

_MAX_CONFIG_BYTES = 1 << 20
_ENV_PREFIX = "GATEKEEPER_"
#: ``GATEKEEPER_*`` variables that are not settings but are read by the scripts and tests.
_NOT_SETTINGS = frozenset({
    "CONFIG", "SKIP_VENV", "COSIGN_V2", "COSIGN_V3", "HELM", "KUBECTL",
})
_NOT_SETTINGS_PREFIXES = ("TEST_",)


class Settings(BaseModel):
    """Every knob of the gatekeeper. Environment variable = ``GATEKEEPER_`` + upper-case name.

    Built by :func:`load_settings` (which reads the environment and the file); constructing
    it directly validates the values given and reads nothing."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    #: Audit store. SQLite file (embedded default) or ``postgresql://user:pass@host/db``.
    database_url: str = "sqlite:///var/gatekeeper.db"
    #: External OPA (a sidecar). Unset: the gatekeeper supervises its own ``opa run --server``.
    opa_url: str | None = None
    #: The ``opa`` binary for the embedded engine; unset: ``.tools/bin/opa``, then ``PATH``.
    opa_binary: str | None = None
    #: Seconds allowed for one OPA evaluation.
    opa_timeout_seconds: float = Field(default=2.0, gt=0, le=60)
    #: Go runtime of the embedded OPA: ``GOGC`` (garbage collection target, percent; higher
    #: spends memory to save CPU) and ``GOMAXPROCS`` (cores it runs Go code on; 0: every core).
    opa_gogc: int = Field(default=400, ge=25, le=10000)
    opa_gomaxprocs: int = Field(default=1, ge=0, le=1024)
    #: Directory of Rego policies and their data documents.
    policy_dir: Path = Path("policies")
    #: ``opa test`` suites of the shipped policies: they must pass before the shipped policies
    #: are first activated (absent: compile and format checks only).
    policy_tests_dir: Path = Path("rego-tests")
    #: This replica's policy state: the active revision its embedded OPA serves and the
    #: exceptions document. Unset: a private temporary directory (the store holds the truth).
    policy_state_dir: Path | None = None
    #: GitOps: a directory (``policies/`` + ``tests/``) or a ``.tar.gz`` (a mounted ConfigMap),
    #: polled; a change goes through the same checks, then becomes active. Unset: policy_dir
    #: (with policy_tests_dir) is watched, so a policy dropped in still takes effect.
    policy_watch_path: Path | None = None
    #: Seconds between two looks at the watched path; 0 turns GitOps off.
    policy_watch_interval_seconds: float = Field(default=1.0, ge=0, le=3600)
    #: Seconds between two checks of the store for activations and exceptions of other replicas.
    policy_sync_interval_seconds: float = Field(default=2.0, gt=0, le=300)
    #: Listen address of the API (``gatekeeper serve --host/--port`` override these).
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    #: Processes serving the API (``gatekeeper serve --workers N``): they share the listener,
    #: each with its own embedded OPA (or all with the one OPA_URL); 1 serves in-process.
    workers: int = Field(default=1, ge=1, le=64)
    #: Prometheus metrics port; 0 turns the metrics listener off.
    metrics_port: int = Field(default=9090, ge=0, le=65535)
    #: Environment assumed when a request names none: the strictest, so omission fails safe.
    default_environment: str = "production"
    #: Enforcement mode of pipeline evaluations.
    pipeline_mode: EnforcementMode = EnforcementMode.ENFORCE
    #: Largest accepted request body.
    max_body_bytes: int = Field(default=1 << 20, gt=0)
    #: A client must send its request headers within this many seconds of connecting (or of
    #: the previous response), and its body within the second: slow clients cannot pin workers.
    http_header_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    http_body_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    #: Most images accepted in one evaluation request.
    max_images_per_request: int = Field(default=100, gt=0, le=10_000)
    log_level: str = "INFO"

    # --- audit trail ----------------------------------------------------------------------
    #: Ed25519 private key (PEM, PKCS#8) that signs checkpoints; unset: chained, not signed.
    audit_signing_key_file: Path | None = None
    #: Ed25519 public key (PEM) to check checkpoints where the private key is not mounted.
    audit_public_key_file: Path | None = None
    #: A checkpoint is signed every N records or T seconds, whichever comes first.
    audit_checkpoint_every: int = Field(default=1000, ge=1)
    audit_checkpoint_interval_seconds: float = Field(default=60.0, gt=0)
    #: Where every signed checkpoint is also published, outside the database:
    #: ``s3://bucket/prefix/`` (a bucket with Object Lock; compliance-mode retention) or
    #: ``file:///other-volume/checkpoints.jsonl`` (append-only). Unset: no witness.
    audit_witness: str | None = None
    audit_witness_endpoint_url: str | None = None
    audit_witness_retention_days: int = Field(default=400, ge=1, le=36500)
    #: Local durable spool (one per replica) for decisions while the database is unreachable.
    audit_spool_dir: Path = Path("var/audit-spool")
    #: Most decisions written in one append transaction (group commit).
    audit_batch_size: int = Field(default=256, ge=1, le=10_000)
    #: How long the audit writer waits for more concurrent decisions before one commit (one
    #: fsync) covers them all; 0 commits whatever is queued at once.
    audit_batch_wait_seconds: float = Field(default=0.002, ge=0, le=0.1)
    #: Prune records older than this many days, behind a signed checkpoint; unset keeps all.
    audit_retention_days: int | None = Field(default=None, ge=1)

    # --- API authentication ---------------------------------------------------------------
    #: HS256 shared secret (at least 32 bytes).
    auth_hs256_secret: SecretStr | None = None
    #: RS256/ES256 public keys (PEM files); env: a JSON list.
    auth_public_key_files: list[Path] = Field(default_factory=list)
    #: A JWKS file of RS256/ES256 keys (``kid`` honoured).
    auth_jwks_file: Path | None = None
    auth_issuer: str | None = None
    auth_audience: str | None = None
    #: Bearer token the CLI sends with ``--server`` (``GATEKEEPER_TOKEN``, as ``policy`` uses).
    token: SecretStr | None = None
    #: Authentication off (local use only): every caller is admin; said at start and in /readyz.
    insecure_disable_auth: bool = False

    # --- registries and digests -------------------------------------------------------------
    #: Resolve tags to digests in the registry (the digest is what gets verified and pinned).
    resolve_digests: bool = True
    #: Per-registry settings: ``{"hosts": [{"host": "...", "plain_http": false, "ca_bundle": ...,
    #: "insecure_skip_tls_verify": false, "username": ..., "password": ...}], ...}``.
    registry: dict[str, Any] = Field(default_factory=dict)
    #: How long an admission remembers the digest a tag resolved to (no registry request for
    #: the same tag meanwhile; the mutating webhook pins that digest, so a Pod runs what was
    #: verified); 0 resolves on every admission. Failed resolutions are never remembered.
    tag_digest_ttl_seconds: float = Field(default=30.0, ge=0, le=3600)
    #: Tags remembered at most (least recently used out first).
    tag_digest_max_entries: int = Field(default=4096, ge=1, le=1_000_000)
    #: A docker ``config.json`` with registry credentials (credential helpers are never run).
    docker_config: Path | None = None
    #: Fetch ECR authorization tokens with boto3 for ``*.dkr.ecr.<region>.amazonaws.com``.
    ecr_auth: bool = True
    #: Time budget for gathering the evidence of one request (every network step checks it).
    evidence_budget_seconds: float = Field(default=8.0, gt=0, le=60)

    # --- Kubernetes admission (gatekeeper.webhook) -------------------------------------------
    #: Namespace the gatekeeper runs in (the chart sets it from the downward API); never governed.
    namespace: str = "gatekeeper-system"
    #: Environment recorded for admission decisions; unset: ``default_environment``.
    admission_environment: str | None = None
    #: Mode of namespaces without a configured mode or a ``gatekeeper.forge.dev/mode`` label.
    admission_default_mode: EnforcementMode = EnforcementMode.ENFORCE
    #: ``{"namespace": "warn"|"audit"|"enforce"}``; wins over the namespace label.
    admission_namespace_modes: dict[str, EnforcementMode] = Field(default_factory=dict)
    #: Namespaces never evaluated (besides ``namespace``). JSON list in the environment.
    admission_excluded_namespaces: list[str] = Field(default_factory=lambda: ["kube-system"])
    #: Namespaces admitted with a warning when the gate itself fails (deadline, registry, OPA).
    admission_fail_open_namespaces: list[str] = Field(default_factory=list)
    #: The webhook configurations' ``timeoutSeconds`` and our own budget below it.
    admission_webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=30)
    admission_budget_seconds: float = Field(default=8.0, gt=0, lt=30)
    #: Largest AdmissionReview accepted (object + oldObject; etcd caps one object at 1.5 MiB).
    admission_max_review_bytes: int = Field(default=4 << 20, ge=1024)
    #: Reviews evaluated at once; more wait, within their budget.
    admission_max_workers: int = Field(default=16, ge=1, le=256)
    #: Per mode, what a gate failure (evidence not gathered, policy engine down, budget spent)
    #: does: ``closed`` denies, ``open`` admits with a warning naming the mode and the reason.
    #: Modes left out keep their default (enforce closed, warn and audit open).
    admission_gate_failure: dict[EnforcementMode, Literal["open", "closed"]] = Field(
        default_factory=dict
    )
    #: Record dry-run admissions (flagged dry_run); false: decide them without a record.
    admission_record_dry_run: bool = True
    #: The validating webhook reuses the mutating webhook's decision for the same admission
    #: (uid, images as pinned) this long; 0 turns reuse off (every webhook call is evaluated).
    admission_reuse_ttl_seconds: float = Field(default=60.0, ge=0, le=600)
    admission_reuse_max_entries: int = Field(default=4096, ge=1, le=1_000_000)
    #: Evidence of digests admitted by an admission decision, reused for the objects the
    #: controllers create from it (ReplicaSets, Pods) this long; 0 turns the cache off.
    evidence_cache_ttl_seconds: float = Field(default=60.0, ge=0, le=3600)
    evidence_cache_max_entries: int = Field(default=4096, ge=1, le=1_000_000)

    # --- TLS of the listener (the API server only calls webhooks over HTTPS) ------------------
    #: PEM certificate and key; both or neither. Reloaded when the files change.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    #: Require client certificates signed by this CA (the API server's ``kubeConfigFile``).
    tls_client_ca_file: Path | None = None
    tls_reload_interval_seconds: float = Field(default=5.0, gt=0, le=3600)

    # --- signatures and attestations ---------------------------------------------------------
    #: Authorities and image policies (see README, "Signatures"); unset: no signature evidence.
    signatures: dict[str, Any] | None = None
    #: ``public-good`` (shipped with sigstore-python), ``staging``, ``none`` or a trusted_root.json.
    trusted_root: str = "public-good"

    # --- SBOMs -------------------------------------------------------------------------------
    sbom_max_bytes: int = Field(default=32 << 20, gt=0)
    sbom_max_depth: int = Field(default=64, ge=8, le=512)
    sbom_max_components: int = Field(default=5000, gt=0, le=100_000)
    #: An SBOM component list larger than this (bytes of canonical JSON) travels by reference:
    #: stored once in the audit trail's evidence store, loaded once into OPA's data store by its
    #: sha256; smaller lists stay inline in the policy input (see README, "Evidence store").
    evidence_inline_max_bytes: int = Field(default=2048, ge=0, le=64 << 20)

    # --- ECR scan findings -------------------------------------------------------------------
    ecr_scan_enabled: bool = True
    ecr_endpoint_url: str | None = None
    ecr_retry_mode: Literal["standard", "adaptive"] = "adaptive"
    ecr_max_attempts: int = Field(default=5, ge=1, le=20)
    ecr_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    scan_cache_ttl_seconds: float = Field(default=300, ge=0)
    scan_pending_cache_ttl_seconds: float = Field(default=30, ge=0)
    scan_max_findings: int = Field(default=2000, gt=0)

    # --- observability ------------------------------------------------------------
    #: OTLP/HTTP endpoint of the trace collector (``http://collector:4318``); unset: no tracing.
    tracing_otlp_endpoint: str | None = None
    #: ``service.name`` of the exported spans.
    tracing_service_name: str = "forge-gatekeeper"
    #: Share of new traces sampled (0..1); a caller's sampled ``traceparent`` is always followed.
    tracing_sample_ratio: float = Field(default=1.0, ge=0, le=1)
    #: Also send every recorded decision, in OPA's decision-log event shape, as JSON lines
    #: appended to this file (a log shipper's input); unset: no stream.
    decision_log_file: Path | None = None
    #: Private key (PEM: RSA for RS256, EC P-256 for ES256) that signs the served policy
    #: bundles (``.signatures.json``); unset: bundles are served unsigned.
    bundle_signing_key_file: Path | None = None
    #: ``keyid`` named in the bundle signature (the sidecar's ``keys`` entry).
    bundle_signing_key_id: str = "gatekeeper"

    # --- background compliance (gatekeeper.compliance; off by default) ----------------------
    #: Re-evaluate the workloads stored in the API server and write PolicyReports. Needs
    #: list/watch of the pod-bearing kinds and get/create/update of policyreports (the chart's
    #: ``background.enabled`` grants exactly that).
    background_enabled: bool = False
    #: A full scan this often; a new active policy revision triggers one at the next check.
    background_interval_seconds: float = Field(default=300.0, ge=1, le=86_400)
    background_revision_check_seconds: float = Field(default=5.0, gt=0, le=3600)
    #: The API server and the service-account credentials (defaults: a Pod's own mount).
    background_kube_server: str = "https://kubernetes.default.svc"
    background_kube_token_file: Path = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
    background_kube_ca_file: Path | None = Path(
        "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    )
    #: Write ``wgpolicyk8s.io/v1alpha2`` PolicyReports (the CRD must be installed).
    background_policy_reports: bool = True
    #: Gather a workload's evidence with its own ``imagePullSecrets`` (and its
    #: ServiceAccount's). Opt-in: needs ``get`` of secrets (and serviceaccounts).
    background_pull_secrets: bool = False

    def with_overrides(self, **updates: Any) -> Settings:
        """A copy with ``updates`` applied, validated again as a whole (``model_copy(update=)``
        is not). Raises :class:`ConfigurationError` naming the offending key."""
        unknown = sorted(set(updates) - set(type(self).model_fields))
        if unknown:
            raise ConfigurationError(
                f"invalid configuration: unknown settings {', '.join(unknown)}"
            )
        values = {name: getattr(self, name) for name in type(self).model_fields}
        try:
            return type(self)(**{**values, **updates})
        except ValidationError as exc:
            raise ConfigurationError(f"invalid configuration: {_problems(exc)}") from exc

    @field_validator("registry")
    @classmethod
    def _registry_valid(cls, value: dict[str, Any]) -> dict[str, Any]:
        """Checked here, so a bad ``registry`` fails at load, naming the key (``wiring`` builds
        the client from the same mapping)."""
        try:
            RegistryClientSettings.from_mapping(value)
        except ConfigurationError as exc:
            raise ValueError(exc.message) from exc
        return value

    @field_validator("default_environment")
    @classmethod
    def _environment_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in error['loc']) or 'settings'}: {error['msg']}"
        for error in exc.errors()
    )


def _read_config_file(path: Path) -> dict[str, Any]:
    import yaml  # only when a file is read: PyYAML costs ~11 ms of a `gatekeeper verify` start

    try:
        if path.stat().st_size > _MAX_CONFIG_BYTES:
            raise ConfigurationError(f"configuration file {path} is larger than 1 MiB")
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"cannot read configuration file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"configuration file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigurationError(f"configuration file {path} must hold a mapping at the top")
    return data


def _is_structured(annotation: Any) -> bool:
    """A list or mapping (possibly optional): its environment variable holds JSON."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return any(_is_structured(arg) for arg in typing.get_args(annotation))
    target = origin or annotation
    return (
        isinstance(target, type)
        and issubclass(target, Mapping | Sequence | Set | BaseModel)
        and not issubclass(target, str | bytes)
    )


#: The settings whose environment variable is JSON (lists and mappings).
_STRUCTURED = frozenset(
    name for name, field in Settings.model_fields.items() if _is_structured(field.annotation)
)


def _environment_values(environ: Mapping[str, str]) -> dict[str, Any]:
    """The settings named by ``GATEKEEPER_*`` variables (the name in any case), JSON decoded
    for lists and mappings. Raises :class:`ConfigurationError` naming a variable that is not
    JSON where JSON is needed."""
    by_name = {name.lower(): value for name, value in environ.items()}
    prefix = _ENV_PREFIX.lower()
    values: dict[str, Any] = {}
    for field in Settings.model_fields:
        raw = by_name.get(prefix + field)
        if raw is None:
            continue
        if field in _STRUCTURED:
            try:
                values[field] = json.loads(raw)
            except ValueError as exc:
                raise ConfigurationError(
                    f"invalid configuration: {field}: {_ENV_PREFIX}{field.upper()} is not "
                    f"JSON ({exc})"
                ) from exc
        else:
            values[field] = raw
    return values


def _merged(base: Mapping[str, Any], winner: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``winner``; where both hold a mapping, merged key by key."""
    result = dict(base)
    for key, value in winner.items():
        below = result.get(key)
        if isinstance(value, Mapping) and isinstance(below, Mapping):
            result[key] = _merged(below, value)
        else:
            result[key] = value
    return result


def unknown_environment_variables(environ: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """``GATEKEEPER_*`` variables that name no setting, each with the closest known name."""
    fields = sorted(name.upper() for name in Settings.model_fields)
    known = {_ENV_PREFIX + name for name in fields}
    unknown: list[tuple[str, str | None]] = []
    for name in sorted(environ):
        if not name.startswith(_ENV_PREFIX) or name in known:
            continue
        rest = name[len(_ENV_PREFIX):]
        if rest in _NOT_SETTINGS or rest.startswith(_NOT_SETTINGS_PREFIXES):
            continue
        # compared without the shared prefix, which would make every name look close
        close = difflib.get_close_matches(rest, fields, n=1, cutoff=0.75)
        unknown.append((name, _ENV_PREFIX + close[0] if close else None))
    return unknown


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from the environment (and ``GATEKEEPER_CONFIG``).

    ``overrides`` (command-line flags, already typed) win over every other source.
    Raises :class:`ConfigurationError` naming the offending key.
    """
    for name, closest in unknown_environment_variables(os.environ):
        # pydantic-settings ignores them silently; a misspelled key would silently not apply
        log.warning(
            "unknown environment variable %s is ignored%s", name,
            f" (did you mean {closest}?)" if closest else "",
        )
    file_values: dict[str, Any] = {}
    config_path = os.environ.get("GATEKEEPER_CONFIG")
    if config_path:
        file_values = _read_config_file(Path(config_path))
    values = _merged(file_values, _environment_values(os.environ))
    try:
        settings = Settings.model_validate(values)
    except ValidationError as exc:
        raise ConfigurationError(f"invalid configuration: {_problems(exc)}") from exc
    updates = {key: value for key, value in overrides.items() if value is not None}
    return settings.with_overrides(**updates) if updates else settings
