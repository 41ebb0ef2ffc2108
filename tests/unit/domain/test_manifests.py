"""Parsing Kubernetes manifests for the pipeline door (issue 13.3)."""

from __future__ import annotations

import json

import pytest

from gatekeeper.domain.manifests import MAX_MANIFEST_OBJECTS, parse_manifests
from gatekeeper.errors import InvalidInputError

POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "shop"},
       "spec": {"containers": [{"name": "a", "image": "nginx:1.27"}]}}


def test_yaml_documents_and_list_items_in_order() -> None:
    text = """
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
---
# an empty document (a template that rendered nothing)
---
apiVersion: v1
kind: List
items:
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: web}
  spec: {template: {spec: {containers: [{name: w, image: "nginx:1.27"}]}}}
- apiVersion: v1
  kind: ServiceList
"""
    objects = parse_manifests(text)
    assert [(o.document, o.kind, o.name, o.is_workload) for o in objects] == [
        (0, "ConfigMap", "cfg", False), (2, "Deployment", "web", True),
        (2, "ServiceList", "", False)]
    assert objects[1].group_version == ("apps", "v1")
    assert objects[1].describe() == "Deployment web"


def test_json_object_and_json_list() -> None:
    [pod] = parse_manifests(json.dumps(POD))
    assert (pod.kind, pod.namespace, pod.group_version, pod.describe()) == (
        "Pod", "shop", ("", "v1"), "Pod shop/p")
    assert len(parse_manifests(json.dumps({"kind": "PodList", "items": [POD, POD]}))) == 2


@pytest.mark.parametrize(("text", "field", "message"), [
    ("- a\n- b\n", "manifests[0]", "manifest document 0 is a list, not an object"),
    ("kind: List\nitems: [1]\n", "manifests[0].items[0]",
     "manifest document 0 items[0] is not an object"),
    ("a: [\n", "manifests", "manifests are not valid YAML or JSON: "),
    ("a: &x 1\nb: *x\n", "manifests", "manifests line 2: YAML aliases are not accepted"),
])
def test_bad_manifests_name_the_document(text: str, field: str, message: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_manifests(text)
    assert caught.value.field == field
    assert caught.value.message.startswith(message)


def test_object_count_is_bounded() -> None:
    text = json.dumps({"kind": "List", "items": [POD] * (MAX_MANIFEST_OBJECTS + 1)})
    with pytest.raises(InvalidInputError, match="more than 1000 objects"):
        parse_manifests(text)
