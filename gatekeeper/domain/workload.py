"""The workload under decision as the policy reads it: ``input.review``.

The shape is the one OPA Gatekeeper users know (``object``, ``oldObject``, ``kind``
{group, version, kind}, ``operation``, ``userInfo``, ``namespace``, ``name``, ``dryRun``), so
Rego written for Gatekeeper reads the same fields here. Both doors fill it: the admission
webhook from the AdmissionReview, the pipeline door from the Kubernetes manifests it is sent
(``operation: CREATE``, the caller as ``userInfo.username``).

Size: ``object`` and ``oldObject`` are each at most :data:`MAX_REVIEW_OBJECT_BYTES` once
serialised (etcd's default limit for one object, 1.5 MiB); a larger one is refused with an
error naming the field, never passed on truncated or silently dropped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from gatekeeper.domain.workload_images import CONTAINER_LISTS, find_pod_specs
from gatekeeper.errors import InvalidInputError

__all__ = [
    "MAX_REVIEW_OBJECT_BYTES",
    "Workload",
    "build_review",
    "pod_specs_changed",
    "workload_fingerprint",
]

#: ``dict`` first: parsed JSON is made of dicts, and ``isinstance`` returns on the exact
#: type before it asks the ``Mapping`` ABC (several times slower, and on every review).
_MAPPINGS = (dict, Mapping)

#: Largest serialised ``object`` / ``oldObject`` given to the policy (etcd's 1.5 MiB).
MAX_REVIEW_OBJECT_BYTES = 1_572_864


def _compact_json(value: Any, *, sort_keys: bool = False) -> bytes:
    """Compact UTF-8 JSON, as ``json.dumps(separators=(",", ":"), ensure_ascii=False)`` writes
    it, by orjson (several times faster on the admission path); ``json`` for what orjson
    refuses (integers over 64 bits)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else None)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                          sort_keys=sort_keys).encode()


def _checked(obj: Mapping[str, Any] | None, field: str, limit: int) -> dict[str, Any] | None:
    if obj is None:
        return None
    size = len(_compact_json(obj))
    if size > limit:
        raise InvalidInputError(
            f"{field} is {size} bytes, more than the policy input limit of {limit} bytes",
            field=field,
        )
    return dict(obj)


def build_review(
    *,
    obj: Mapping[str, Any] | None,
    old_object: Mapping[str, Any] | None,
    group: str,
    version: str,
    kind: str,
    operation: str,
    namespace: str,
    name: str,
    username: str = "",
    uid: str = "",
    groups: Sequence[str] = (),
    dry_run: bool = False,
    max_object_bytes: int = MAX_REVIEW_OBJECT_BYTES,
    field_prefix: str = "request.",
) -> dict[str, Any]:
    """``input.review``; raises :class:`InvalidInputError` naming an object over the limit."""
    return {
        "kind": {"group": group, "version": version, "kind": kind},
        "operation": operation,
        "namespace": namespace,
        "name": name,
        "userInfo": {"username": username, "uid": uid, "groups": list(groups)},
        "dryRun": dry_run,
        "object": _checked(obj, f"{field_prefix}object", max_object_bytes),
        "oldObject": _checked(old_object, f"{field_prefix}oldObject", max_object_bytes),
    }


def _blank_images(node: Any, path: tuple[str, ...]) -> Any:
    """A copy of ``node`` sharing every branch but ``path``'s, whose containers lose their
    image (copies only what it changes)."""
    if not isinstance(node, _MAPPINGS):
        return node
    if not path:
        spec = dict(node)
        for list_name in CONTAINER_LISTS:
            containers = spec.get(list_name)
            if isinstance(containers, list):
                spec[list_name] = [{**c, "image": ""} if isinstance(c, _MAPPINGS) else c
                                   for c in containers]
        return spec
    head, *rest = path
    if head not in node:
        return node
    return {**node, head: _blank_images(node[head], tuple(rest))}


#: Metadata the API server sets itself, and may set between two webhook calls of one request.
_SERVER_SET_METADATA = frozenset({
    "name", "uid", "creationTimestamp", "resourceVersion", "generation", "managedFields",
})


def workload_fingerprint(obj: Mapping[str, Any] | None, kind: str) -> str:
    """sha256 of ``obj`` with every container image blanked: equal for two versions of an
    object that differ only in their images (the mutating webhook's digest pins)."""
    if obj is None:
        return ""
    blanked: Any = obj
    for path, _ in find_pod_specs(obj, kind):
        blanked = _blank_images(blanked, path)
    # What the API server itself fills in between its mutating and its validating call (the
    # name it generates, uid, timestamps, status) is no change of the workload; the name is
    # compared apart (the reuse facts' identity).
    blanked = {key: value for key, value in blanked.items() if key != "status"}
    metadata = blanked.get("metadata")
    if isinstance(metadata, _MAPPINGS):
        blanked["metadata"] = {key: value for key, value in metadata.items()
                               if key not in _SERVER_SET_METADATA}
    return hashlib.sha256(_compact_json(blanked, sort_keys=True)).hexdigest()


def pod_specs_changed(
    obj: Mapping[str, Any] | None, old_object: Mapping[str, Any] | None, kind: str
) -> bool:
    """True when the pod specs of ``obj`` differ from ``old_object``'s (an UPDATE then
    re-evaluates the workload rules even if no image changed)."""
    if obj is None or old_object is None:
        return True
    return [spec for _, spec in find_pod_specs(obj, kind)] != [
        spec for _, spec in find_pod_specs(old_object, kind)
    ]


@dataclass(frozen=True, slots=True)
class Workload:
    """One workload object as the API server stores it (``obj`` carries kind and apiVersion)."""

    kind: str
    namespace: str
    name: str
    uid: str
    obj: Mapping[str, Any]

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"
