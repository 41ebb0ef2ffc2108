"""The identity policy handed to sigstore-python's verifier: any of an authority's identities.

Apart from :mod:`gatekeeper.verify.trust` because it subclasses sigstore's error type, and a
key-only verification must not import sigstore-python.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509
from sigstore.errors import VerificationError as SigstoreVerificationError

from gatekeeper.errors import ConfigurationError
from gatekeeper.verify.authority import KeylessIdentity
from gatekeeper.verify.trust import (
    CertificateIdentity,
    certificate_identity,
    identity_mismatch_message,
)

__all__ = ["IdentityMismatch", "IdentityPolicy"]


class IdentityPolicy:
    """A sigstore-python ``VerificationPolicy`` accepting any of the given identities.

    sigstore's own ``Identity`` policy compares exact strings only; authorities may also use
    regular expressions, so the comparison is ours and the procedure stays sigstore's.
    """

    def __init__(self, identities: Sequence[KeylessIdentity]) -> None:
        if not identities:
            raise ConfigurationError("an identity policy needs at least one identity")
        self._identities = tuple(identities)
        self.last_identity: CertificateIdentity | None = None

    def verify(self, cert: x509.Certificate) -> None:
        identity = certificate_identity(cert)
        self.last_identity = identity
        for expected in self._identities:
            if expected.matches(identity.issuer, identity.subjects):
                return
        raise IdentityMismatch(identity_mismatch_message(self._identities, identity))


class IdentityMismatch(SigstoreVerificationError):
    """The certificate is trusted but names someone the policy does not expect."""
