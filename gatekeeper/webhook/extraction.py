"""Image extraction lives in :mod:`gatekeeper.domain.workload_images` (both doors use it: the
admission webhook and the pipeline door's Kubernetes manifests); re-exported here."""

from gatekeeper.domain.workload_images import (
    CONTAINER_LISTS,
    EPHEMERAL_CONTAINERS,
    MAX_IMAGES,
    ImageLocation,
    extract_images,
    find_pod_specs,
    format_path,
    images_before,
    path_sort_key,
)

__all__ = [
    "CONTAINER_LISTS",
    "EPHEMERAL_CONTAINERS",
    "MAX_IMAGES",
    "ImageLocation",
    "extract_images",
    "find_pod_specs",
    "format_path",
    "images_before",
    "path_sort_key",
]
