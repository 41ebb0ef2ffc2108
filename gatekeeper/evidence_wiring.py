"""The part of the composition root that ``gatekeeper verify`` needs: the registry client with its
credentials and the signature collector, built from the settings.

Kept apart from :mod:`gatekeeper.wiring` (which re-exports these functions) so that a one-shot
verification imports only the registry and verification adapters, not the server's stack
(SQLAlchemy, FastAPI, OpenTelemetry, the policy engine, the metrics registry). boto3 is imported
only when an ECR host asks for a token.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from gatekeeper.errors import ConfigurationError
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
from gatekeeper.verify import (
    SignatureEvidenceCollector,
    SignaturePolicySettings,
    TrustRoot,
)

if TYPE_CHECKING:
    from gatekeeper.config import Settings
    from gatekeeper.metrics import Metrics
    from gatekeeper.tracing import Tracing

# verify_bundle_for_cli: ``gatekeeper verify-bundle`` (the sigstore-conformance protocol) gets
# the offline bundle verifier from here, not from the adapter package.
__all__ = [
    "build_registry_client",
    "build_signature_collector",
    "load_trust_root",
    "verify_bundle_for_cli",
]

_MAX_DOCKER_CONFIG_BYTES = 1 << 20


def verify_bundle_for_cli(
    *,
    bundle_path: Path,
    artifact: str,
    certificate_identity: str | None = None,
    certificate_oidc_issuer: str | None = None,
    key_path: Path | None = None,
    trusted_root_path: Path | None = None,
    staging: bool = False,
) -> tuple[bool, str]:
    """:func:`gatekeeper.verify.bundle_cli.verify_bundle_for_cli`, imported when called (it
    brings sigstore-python, which ``gatekeeper verify`` with keys does not need)."""
    from gatekeeper.verify.bundle_cli import verify_bundle_for_cli as verify

    return verify(
        bundle_path=bundle_path, artifact=artifact, certificate_identity=certificate_identity,
        certificate_oidc_issuer=certificate_oidc_issuer, key_path=key_path,
        trusted_root_path=trusted_root_path, staging=staging,
    )


def _ecr_client(region: str) -> Any:
    import boto3  # only the composition root knows that boto3 is behind ECR tokens

    return boto3.client("ecr", region_name=region)


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
        providers.append(EcrCredentials(_ecr_client))
    return OciRegistryClient(
        registry_settings, credentials=ChainedCredentials(providers),
        on_request=metrics.registry_request if metrics is not None else None,
        on_client=tracing.instrument_http_client if tracing is not None and tracing.enabled
        else None,
    )


def load_trust_root(name: str, *, eager: bool = True) -> TrustRoot:
    """``public-good`` | ``staging`` | ``none`` | path of a trusted_root.json.

    With ``eager=False`` only the transparency-log keys are read now (json + cryptography); the
    whole document is validated by sigstore-python when a keyless certificate or a Sigstore
    bundle first needs it (:attr:`TrustRoot.root`)."""
    if name == "public-good":
        return TrustRoot.public_good(eager=eager)
    if name == "staging":
        return TrustRoot.staging(eager=eager)
    if name == "none":
        return TrustRoot.none()
    path = Path(name)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read trusted root {path}: {exc.strerror}") from exc
    return TrustRoot.from_json(data, name=str(path), eager=eager)


def build_signature_collector(
    settings: Settings, registry: OciRegistryClient, metrics: Metrics | None = None,
    *, preload: bool = False,
) -> SignatureEvidenceCollector | None:
    """The ``signatures`` collector. The Sigstore bundle, transparency-log and Notation
    verifiers are imported when first needed (a one-shot ``gatekeeper verify`` with keys needs
    none of them); ``preload`` imports those the configuration can use now, so that a server's
    first evaluation does not pay for them within its deadline. The trusted root is parsed by
    sigstore-python at once for the server and for keyless authorities (which need it); a
    one-shot key-based check reads only its log keys (``tlog: true`` needs nothing more)."""
    if settings.signatures is None:
        return None
    policy = SignaturePolicySettings.from_mapping(settings.signatures)
    if preload:
        import importlib

        modules = ["gatekeeper.verify.bundle", "gatekeeper.verify.tlog"]
        if any(authority.notation is not None for authority in policy.authorities):
            modules.append("gatekeeper.verify.notation")
        for module in modules:
            importlib.import_module(module)
    return SignatureEvidenceCollector(
        policy,
        registry,
        load_trust_root(
            settings.trusted_root,
            eager=preload or any(authority.identities for authority in policy.authorities),
        ),
        metrics=metrics,
    )
