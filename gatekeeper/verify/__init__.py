"""Signature and attestation verification (cosign, Sigstore bundles, in-toto).

The Sigstore bundle names (``verify_bundle``, ``ArtifactInput``, ``verify_bundle_for_cli``) are
loaded on first use: they import sigstore-python (~0.25 s), which a key-based cosign
verification never needs (``test_verify_command_loads_no_server_stack`` in
``tests/integration/test_cli_signatures.py`` keeps it so).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from gatekeeper.domain.ports.registry import RegistryReader
from gatekeeper.verify.authority import (
    Authority,
    ImagePolicy,
    KeylessIdentity,
    SignaturePolicySettings,
)
from gatekeeper.verify.collector import SignatureEvidenceCollector
from gatekeeper.verify.cosign import REASON_MESSAGES, CosignVerifier, VerifiedStatement
from gatekeeper.verify.keys import VerificationKey, load_public_key
from gatekeeper.verify.trust import TrustRoot

if TYPE_CHECKING:
    from gatekeeper.verify.bundle import ArtifactInput, verify_bundle
    from gatekeeper.verify.bundle_cli import verify_bundle_for_cli

__all__ = [
    "REASON_MESSAGES",
    "ArtifactInput",
    "Authority",
    "CosignVerifier",
    "ImagePolicy",
    "KeylessIdentity",
    "RegistryReader",
    "SignatureEvidenceCollector",
    "SignaturePolicySettings",
    "TrustRoot",
    "VerificationKey",
    "VerifiedStatement",
    "load_public_key",
    "verify_bundle",
    "verify_bundle_for_cli",
]

_LAZY = {
    "ArtifactInput": "gatekeeper.verify.bundle",
    "verify_bundle": "gatekeeper.verify.bundle",
    "verify_bundle_for_cli": "gatekeeper.verify.bundle_cli",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
