"""Every place an image can hide in a Kubernetes object, with its JSON path.

A *pod spec* is found at a fixed set of places, tried for every kind so that custom resources
with a standard pod template (Argo Rollouts, OpenKruise CloneSets, ...) are governed too:

========================================  =================================================
``spec``                                  Pod (only for kind ``Pod``)
``spec.template.spec``                    Deployment, ReplicaSet, StatefulSet, DaemonSet, Job,
                                          ReplicationController, any object with a template
``spec.jobTemplate.spec.template.spec``   CronJob
``template.spec``                         PodTemplate
========================================  =================================================

In each pod spec the images of ``initContainers``, ``containers`` and ``ephemeralContainers``
are read. The result addresses each image twice: as the dotted path users read in messages
(``spec.template.spec.containers[1].image``) and as the RFC 6901 pointer a JSONPatch needs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gatekeeper.errors import InvalidInputError

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

#: ``dict`` first: parsed JSON is made of dicts, and ``isinstance`` returns on the exact
#: type before it asks the ``Mapping`` ABC (several times slower, and on every review).
_MAPPINGS = (dict, Mapping)

EPHEMERAL_CONTAINERS = "ephemeralContainers"
#: Container lists of a pod spec, in the order the kubelet starts them.
CONTAINER_LISTS: tuple[str, ...] = ("initContainers", "containers", EPHEMERAL_CONTAINERS)
#: Upper bound of images in one object: the review is refused beyond it (bounded work).
MAX_IMAGES = 512

PathPart = str | int

_POD_SPEC_PATHS: tuple[tuple[str, ...], ...] = (
    ("spec", "template", "spec"),
    ("spec", "jobTemplate", "spec", "template", "spec"),
    ("template", "spec"),
)


def format_path(path: Sequence[PathPart]) -> str:
    """``("spec", "containers", 1, "image")`` -> ``spec.containers[1].image``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def path_sort_key(path: Sequence[PathPart]) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, part) if isinstance(part, int) else (1, part) for part in path)


def _json_pointer(path: Sequence[PathPart]) -> str:
    # RFC 6901: "~" -> "~0", "/" -> "~1" (no Kubernetes pod-spec key needs it; kept correct).
    return "".join(
        "/" + str(part).replace("~", "~0").replace("/", "~1") for part in path
    )


@dataclass(frozen=True, slots=True)
class ImageLocation:
    """One image field of the object: where it is, what it says, which container owns it."""

    path: tuple[PathPart, ...]
    image: str
    container: str

    @property
    def sort_key(self) -> tuple[tuple[int, int | str], ...]:
        """Orders by path with indexes compared as numbers (``[2]`` before ``[10]``)."""
        return path_sort_key(self.path)

    @property
    def field_path(self) -> str:
        return format_path(self.path)

    @property
    def json_pointer(self) -> str:
        return _json_pointer(self.path)

    @property
    def container_list(self) -> str:
        return str(self.path[-3])


def _get_mapping(obj: Mapping[str, Any], path: tuple[str, ...]) -> Mapping[str, Any] | None:
    node: Any = obj
    for key in path:
        if node is None or not isinstance(node, _MAPPINGS):  # None: no ABC check
            return None
        node = node.get(key)
    return node if node is not None and isinstance(node, _MAPPINGS) else None


def find_pod_specs(
    obj: Mapping[str, Any], kind: str
) -> tuple[tuple[tuple[str, ...], Mapping[str, Any]], ...]:
    """The pod specs of ``obj`` as ``(path, spec)``; empty when the kind carries none."""
    candidates = (("spec",),) if kind == "Pod" else _POD_SPEC_PATHS
    found = []
    for path in candidates:
        spec = _get_mapping(obj, path)
        if spec is not None and not spec.keys().isdisjoint(CONTAINER_LISTS):
            found.append((path, spec))
    return tuple(found)


def extract_images(
    obj: Mapping[str, Any],
    kind: str,
    *,
    container_lists: Sequence[str] = CONTAINER_LISTS,
) -> tuple[ImageLocation, ...]:
    """Every image of ``obj`` with its path, in object order.

    Raises :class:`InvalidInputError` naming the field when a container list or image field
    is malformed: an image we cannot read is an image we cannot verify (fail closed).
    """
    locations: list[ImageLocation] = []
    for spec_path, spec in find_pod_specs(obj, kind):
        for list_name in container_lists:
            containers = spec.get(list_name)
            list_path = (*spec_path, list_name)
            if containers is None:
                continue
            if not isinstance(containers, list):
                raise InvalidInputError(
                    f"{format_path(list_path)} is not a list", field=format_path(list_path)
                )
            for index, container in enumerate(containers):
                image_path: tuple[PathPart, ...] = (*list_path, index, "image")
                if not isinstance(container, _MAPPINGS):
                    raise InvalidInputError(
                        f"{format_path((*list_path, index))} is not an object",
                        field=format_path((*list_path, index)),
                    )
                image = container.get("image")
                if not isinstance(image, str) or not image:
                    where = format_path(image_path)
                    raise InvalidInputError(f"{where} is missing or not a string", field=where)
                name = container.get("name")
                locations.append(
                    ImageLocation(image_path, image, name if isinstance(name, str) else "")
                )
                if len(locations) > MAX_IMAGES:
                    where = format_path(image_path)
                    raise InvalidInputError(
                        f"object has more than {MAX_IMAGES} images", field=where
                    )
    return tuple(locations)


def images_before(
    old_object: Mapping[str, Any] | None, kind: str, container_lists: Sequence[str]
) -> frozenset[str]:
    """The image strings ``oldObject`` already carried (an UPDATE evaluates only the others).

    An old object we cannot read counts as carrying nothing: every image is then evaluated.
    """
    if not old_object:
        return frozenset()
    try:
        return frozenset(
            location.image
            for location in extract_images(old_object, kind, container_lists=container_lists)
        )
    except InvalidInputError:
        return frozenset()
