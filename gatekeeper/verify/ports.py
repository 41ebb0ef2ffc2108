"""Moved to :mod:`gatekeeper.domain.ports.registry`; this path re-exports it for one release."""

from gatekeeper.domain.ports.registry import (
    BasicCredentials,
    CredentialProvider,
    DescriptorView,
    ManifestView,
    ReferrersView,
    RegistryReader,
)

__all__ = [
    "BasicCredentials",
    "CredentialProvider",
    "DescriptorView",
    "ManifestView",
    "ReferrersView",
    "RegistryReader",
]
