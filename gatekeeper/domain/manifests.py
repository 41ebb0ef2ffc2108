"""Kubernetes manifests sent to the pipeline door: parsed, split into workloads.

Accepted: YAML or JSON, several documents (``---``), ``List`` kinds (``kind: List`` or any
``...List`` with ``items``), as ``helm template`` and ``kubectl kustomize`` print them. Every
object with a pod spec (the places :func:`~gatekeeper.domain.workload_images.find_pod_specs`
reads, as admission does) is one workload; the others are listed as not evaluated.

Bounded: at most :data:`MAX_MANIFEST_OBJECTS` objects; YAML aliases are refused (an alias
can expand a small document into a huge one), so are documents that are not objects.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from gatekeeper.domain.workload_images import find_pod_specs
from gatekeeper.errors import InvalidInputError

__all__ = ["MAX_MANIFEST_OBJECTS", "ManifestObject", "parse_manifests"]

MAX_MANIFEST_OBJECTS = 1000


@dataclass(frozen=True, slots=True)
class ManifestObject:
    """One object of the manifests; ``document`` is its 0-based YAML document index."""

    document: int
    obj: Mapping[str, Any]

    @property
    def kind(self) -> str:
        kind = self.obj.get("kind")
        return kind if isinstance(kind, str) else ""

    @property
    def api_version(self) -> str:
        value = self.obj.get("apiVersion")
        return value if isinstance(value, str) else ""

    @property
    def group_version(self) -> tuple[str, str]:
        group, _, version = self.api_version.rpartition("/")
        return group, version

    def _metadata(self, key: str) -> str:
        metadata = self.obj.get("metadata")
        value = metadata.get(key) if isinstance(metadata, Mapping) else None
        return value if isinstance(value, str) else ""

    @property
    def name(self) -> str:
        return self._metadata("name") or self._metadata("generateName")

    @property
    def namespace(self) -> str:
        return self._metadata("namespace")

    @property
    def is_workload(self) -> bool:
        return bool(find_pod_specs(self.obj, self.kind))

    def describe(self) -> str:
        """``Deployment shop/web`` (namespace left out when the manifest sets none)."""
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind or 'object'} {where or '(unnamed)'}"


class _NoAliasLoader(yaml.SafeLoader):
    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise InvalidInputError(
                f"manifests line {mark.line + 1}: YAML aliases are not accepted",
                field="manifests",
            )
        return super().compose_node(parent, index)


def _documents(text: str) -> list[Any]:
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            loaded = json.loads(stripped)
        except json.JSONDecodeError:
            pass  # YAML flow style is also valid: let the YAML parser say what is wrong
        else:
            return loaded if isinstance(loaded, list) else [loaded]
    try:
        return list(yaml.load_all(text, Loader=_NoAliasLoader))  # noqa: S506 (safe loader)
    except yaml.YAMLError as exc:
        raise InvalidInputError(
            f"manifests are not valid YAML or JSON: {' '.join(str(exc).split())[:300]}",
            field="manifests",
        ) from exc


def parse_manifests(text: str) -> tuple[ManifestObject, ...]:
    """Every object of ``text`` in document order, ``List`` items expanded."""
    found: list[ManifestObject] = []
    for index, document in enumerate(_documents(text)):
        if document is None:
            continue  # an empty document (a trailing ---, a template that rendered nothing)
        if not isinstance(document, dict):
            raise InvalidInputError(
                f"manifest document {index} is a {type(document).__name__}, not an object",
                field=f"manifests[{index}]",
            )
        items = document.get("items")
        kind = document.get("kind")
        if isinstance(kind, str) and kind.endswith("List") and isinstance(items, list):
            for position, item in enumerate(items):
                if not isinstance(item, dict):
                    raise InvalidInputError(
                        f"manifest document {index} items[{position}] is not an object",
                        field=f"manifests[{index}].items[{position}]",
                    )
                found.append(ManifestObject(index, item))
        else:
            found.append(ManifestObject(index, document))
        if len(found) > MAX_MANIFEST_OBJECTS:
            raise InvalidInputError(
                f"manifests hold more than {MAX_MANIFEST_OBJECTS} objects", field="manifests"
            )
    return tuple(found)
