"""Binding: an SBOM counts for an image only when it is bound to the image's digest.

Three external bindings, each a statement by something other than the SBOM's author:

* ``attestation`` - the verified in-toto statement's ``subject`` lists the digest;
* ``referrer``    - the OCI referrer / attached artifact's ``subject`` is the manifest digest;
* ``upload``      - the pipeline uploaded it naming the digest (``POST /v1/sboms``).

Without one, the document's own subject (``metadata.component`` in CycloneDX, the described
package in SPDX) may name the digest: as ``pkg:oci/...@sha256:...`` purl, as ``sha256:...``
version, or as a SHA-256 hash. A binding that names another digest is the evidence state
``another_artifact`` ("SBOM for another artifact"), never silently accepted.

Quirk: generators disagree on *which* digest they put in ``version``/``hashes`` (syft has used
both the manifest digest and the image id, i.e. the config digest). So when an external binding
exists, only a conflicting ``pkg:oci`` purl - whose digest the purl spec defines as the
manifest digest - overrules it; other conflicting claims are reported in ``subject_digests``.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from gatekeeper.domain.ports.sbom import BindingMethod
from gatekeeper.domain.reference import Digest
from gatekeeper.sbom.normalise import NormalisedSbom

__all__ = ["Binding", "BindingMethod", "SbomState", "bind_sbom"]


class SbomState(enum.StrEnum):
    BOUND = "bound"
    ANOTHER_ARTIFACT = "another_artifact"
    UNBOUND = "unbound"
    INVALID = "invalid"
    MISSING = "missing"


@dataclass(frozen=True, slots=True)
class Binding:
    state: SbomState
    method: BindingMethod | None
    reason: str
    #: What the binding statement named (external subjects, or the document's own claims).
    named_digests: tuple[str, ...]

    @property
    def bound(self) -> bool:
        return self.state is SbomState.BOUND

    def as_input(self) -> dict[str, object]:
        return {
            "method": self.method.value if self.method is not None else None,
            "named_digests": list(self.named_digests),
        }


def _short(digest: str) -> str:
    algorithm, _, hex_part = digest.partition(":")
    return f"{algorithm}:{hex_part[:12]}"


def bind_sbom(
    sbom: NormalisedSbom,
    image_digest: Digest | None,
    *,
    method: BindingMethod | None,
    subjects: Sequence[str] = (),
) -> Binding:
    """Decide whether ``sbom`` is bound to ``image_digest``.

    ``method``/``subjects`` describe the external binding (``None``/``()`` when there is none).
    """
    claims = tuple(dict.fromkeys(digest for _, digest in sbom.subject_digests))
    purl_claims = {digest for where, digest in sbom.subject_digests if where == "purl"}
    if image_digest is None:
        return Binding(
            SbomState.UNBOUND, method, "image digest unknown: cannot bind an SBOM to it", claims
        )
    wanted = str(image_digest)
    if method is not None and method is not BindingMethod.METADATA:
        named = tuple(dict.fromkeys(subjects))
        if wanted not in named:
            shown = ", ".join(_short(d) for d in named) or "no digest"
            return Binding(
                SbomState.ANOTHER_ARTIFACT, method,
                f"SBOM for another artifact: its {method.value} names {shown}, "
                f"not {_short(wanted)}",
                named,
            )
        if purl_claims and wanted not in purl_claims:
            shown = ", ".join(_short(d) for d in sorted(purl_claims))
            return Binding(
                SbomState.ANOTHER_ARTIFACT, method,
                f"SBOM for another artifact: its metadata component purl names {shown}, "
                f"not {_short(wanted)}",
                named,
            )
        return Binding(SbomState.BOUND, method, f"bound by {method.value}", named)
    if wanted in claims:
        return Binding(
            SbomState.BOUND, BindingMethod.METADATA, "bound by its metadata component", claims
        )
    if claims:
        shown = ", ".join(_short(d) for d in claims)
        return Binding(
            SbomState.ANOTHER_ARTIFACT, BindingMethod.METADATA,
            f"SBOM for another artifact: its metadata component names {shown}, "
            f"not {_short(wanted)}",
            claims,
        )
    return Binding(
        SbomState.UNBOUND, None,
        "SBOM is not bound to the image: no attestation, referrer or upload names the digest "
        "and its metadata component names none",
        (),
    )
