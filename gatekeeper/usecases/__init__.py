"""Use cases: what the API and the CLI ask of the gatekeeper, over the ports of
:mod:`gatekeeper.domain.ports` (evaluation itself is :mod:`gatekeeper.service`).

* :mod:`gatekeeper.usecases.sbom_upload` - SBOM uploads (``POST /v1/sboms``, inline SBOMs).
* :mod:`gatekeeper.usecases.vex_upload` - VEX uploads (``POST /v1/vex``).
* :mod:`gatekeeper.usecases.policy_lifecycle` - policy revisions: submit (checked), activate,
  roll back, replay, bundles, GitOps, the replica sync; authoring checks and tests.
* :mod:`gatekeeper.usecases.exceptions` - exceptions: create, approve, revoke, list, export.
"""

from gatekeeper.usecases.exceptions import PolicyExceptions
from gatekeeper.usecases.policy_lifecycle import PolicyAuthoring, PolicyBundle, PolicyLifecycle
from gatekeeper.usecases.sbom_upload import SbomUploadResult, SbomUploads
from gatekeeper.usecases.vex_upload import VexUploadResult, VexUploads

__all__ = [
    "PolicyAuthoring",
    "PolicyBundle",
    "PolicyExceptions",
    "PolicyLifecycle",
    "SbomUploadResult",
    "SbomUploads",
    "VexUploadResult",
    "VexUploads",
]
