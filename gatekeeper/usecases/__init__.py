"""Use cases: what the API and the CLI ask of the gatekeeper, over the ports of
:mod:`gatekeeper.domain.ports` (evaluation itself is :mod:`gatekeeper.service`).

* :mod:`gatekeeper.usecases.sbom_upload` - SBOM uploads (``POST /v1/sboms``, inline SBOMs).
"""

from gatekeeper.usecases.sbom_upload import SbomUploadResult, SbomUploads

__all__ = ["SbomUploadResult", "SbomUploads"]
