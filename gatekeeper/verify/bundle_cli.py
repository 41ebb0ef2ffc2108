"""``gatekeeper verify-bundle``: the sigstore-conformance CLI protocol over :func:`verify_bundle`.

https://github.com/sigstore/sigstore-conformance/blob/main/docs/cli_protocol.md
"""

from __future__ import annotations

from pathlib import Path

from gatekeeper.errors import ConfigurationError, InvalidInputError, VerificationError
from gatekeeper.verify.authority import KeylessIdentity
from gatekeeper.verify.bundle import ArtifactInput, verify_bundle
from gatekeeper.verify.keys import VerificationKey, load_public_key
from gatekeeper.verify.trust import TrustRoot

__all__ = ["verify_bundle_for_cli"]


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
    """``gatekeeper verify-bundle``: ``(True, "verified")`` or ``(False, reason)``.

    Usage errors (unreadable files, both or neither of key and identity, a bad digest) raise
    :class:`InvalidInputError` (exit 2); an unusable trusted root raises
    :class:`ConfigurationError` (exit 2); everything the bundle gets wrong is ``(False, ...)``.
    """
    if (key_path is None) == (certificate_identity is None):
        raise InvalidInputError("give either --key or --certificate-identity/-oidc-issuer")
    if certificate_identity is not None and certificate_oidc_issuer is None:
        raise InvalidInputError("--certificate-identity needs --certificate-oidc-issuer")
    bundle_bytes = _read(bundle_path, "--bundle")
    if artifact.startswith("sha256:"):
        artifact_input = ArtifactInput.from_digest_text(artifact)
    else:
        artifact_input = ArtifactInput.from_bytes(_read(Path(artifact), "FILE_OR_DIGEST"))
    if trusted_root_path is not None:
        try:
            trust = TrustRoot.from_json(
                _read(trusted_root_path, "--trusted-root"), name=str(trusted_root_path)
            )
        except ConfigurationError as exc:
            return False, exc.message
    else:
        trust = TrustRoot.staging() if staging else TrustRoot.public_good()
    keys: tuple[VerificationKey, ...] = ()
    identities: tuple[KeylessIdentity, ...] = ()
    if key_path is not None:
        # A key that does not load is verification material that fails, not a usage error.
        try:
            keys = (load_public_key(_read(key_path, "--key"), where="--key"),)
        except ConfigurationError as exc:
            return False, exc.message
    else:
        identities = (
            KeylessIdentity(issuer=certificate_oidc_issuer, subject=certificate_identity),
        )
    try:
        verify_bundle(
            bundle_bytes, trust=trust, identities=identities, keys=keys, artifact=artifact_input
        )
    except VerificationError as exc:
        return False, exc.message
    return True, "verified"


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"{what}: cannot read {path}", field=what) from exc
