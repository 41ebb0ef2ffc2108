"""OCI registry adapter: digests, manifests, blobs, tags and referrers over HTTP(S)."""

from gatekeeper.registry.auth import (
    BasicCredentials,
    ChainedCredentials,
    CredentialProvider,
    DockerConfigCredentials,
    EcrCredentials,
    StaticCredentials,
    is_ecr_host,
)
from gatekeeper.registry.client import OciRegistryClient
from gatekeeper.registry.model import Descriptor, Manifest, ReferrersIndex
from gatekeeper.registry.settings import RegistryClientSettings, RegistryHostSettings

__all__ = [
    "BasicCredentials",
    "ChainedCredentials",
    "CredentialProvider",
    "Descriptor",
    "DockerConfigCredentials",
    "EcrCredentials",
    "Manifest",
    "OciRegistryClient",
    "ReferrersIndex",
    "RegistryClientSettings",
    "RegistryHostSettings",
    "StaticCredentials",
    "is_ecr_host",
]
