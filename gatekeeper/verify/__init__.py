"""Signature and attestation verification (cosign, Sigstore bundles, in-toto)."""

from gatekeeper.domain.ports.registry import RegistryReader
from gatekeeper.verify.authority import (
    Authority,
    ImagePolicy,
    KeylessIdentity,
    SignaturePolicySettings,
)
from gatekeeper.verify.bundle import ArtifactInput, verify_bundle
from gatekeeper.verify.bundle_cli import verify_bundle_for_cli
from gatekeeper.verify.collector import SignatureEvidenceCollector
from gatekeeper.verify.cosign import REASON_MESSAGES, CosignVerifier, VerifiedStatement
from gatekeeper.verify.keys import VerificationKey, load_public_key
from gatekeeper.verify.trust import TrustRoot

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
