"""Every place an image can hide, with the path a user reads and the pointer a patch needs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gatekeeper.errors import InvalidInputError
from gatekeeper.webhook.extraction import MAX_IMAGES, extract_images, format_path

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "admission"
API = "ghcr.io/acme/api:1.4"
WEB = "ghcr.io/acme/web:2.0"
SIDECAR = "ghcr.io/acme/sidecar@sha256:" + "ab" * 32


def review_object(name: str) -> tuple[dict[str, Any], str]:
    request = json.loads((ASSETS / f"{name}.json").read_text())["request"]
    return request["object"], request["kind"]["kind"]


EXPECTED = {
    "pod-create": [
        ("spec.initContainers[0].image", "busybox:1.36"),
        ("spec.containers[0].image", WEB),
        ("spec.containers[1].image", API),
        ("spec.containers[2].image", SIDECAR),
    ],
    "deployment-create": [
        ("spec.template.spec.initContainers[0].image", "busybox:1.36"),
        ("spec.template.spec.containers[0].image", WEB),
        ("spec.template.spec.containers[1].image", API),
        ("spec.template.spec.containers[2].image", SIDECAR),
    ],
    "replicaset-create": [
        ("spec.template.spec.containers[0].image", WEB),
        ("spec.template.spec.containers[1].image", API),
        ("spec.template.spec.containers[2].image", SIDECAR),
    ],
    "statefulset-create": [("spec.template.spec.containers[0].image", API)],
    "daemonset-create": [("spec.template.spec.containers[0].image", WEB)],
    "job-create": [("spec.template.spec.containers[0].image", API)],
    "cronjob-create": [
        ("spec.jobTemplate.spec.template.spec.containers[0].image", WEB),
        ("spec.jobTemplate.spec.template.spec.containers[1].image", API),
    ],
    "replicationcontroller-create": [
        ("spec.template.spec.containers[0].image", "ghcr.io/acme/api"),
    ],
    "podtemplate-create": [("template.spec.containers[0].image", WEB)],
    "rollout-create": [("spec.template.spec.containers[0].image", API)],
    "configmap-create": [],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_extracts_every_image_with_its_path(name: str) -> None:
    obj, kind = review_object(name)
    found = [(loc.field_path, loc.image) for loc in extract_images(obj, kind)]
    assert found == EXPECTED[name]


def test_ephemeral_containers_of_a_debugged_pod() -> None:
    obj, _ = review_object("pod-ephemeralcontainers-update")
    (location,) = extract_images(obj, "Pod", container_lists=("ephemeralContainers",))
    assert location.field_path == "spec.ephemeralContainers[0].image"
    assert location.json_pointer == "/spec/ephemeralContainers/0/image"
    assert location.container == "debugger-abcde"
    assert location.image == "ghcr.io/acme/debug:1.0"


def test_json_pointer_and_container_of_a_cronjob_image() -> None:
    obj, kind = review_object("cronjob-create")
    second = extract_images(obj, kind)[1]
    assert second.json_pointer == "/spec/jobTemplate/spec/template/spec/containers/1/image"
    assert second.container == "api"
    assert second.container_list == "containers"


def test_a_pod_spec_at_spec_counts_only_for_pods() -> None:
    # A CRD whose .spec happens to have "containers" is not a Pod: only templates count.
    obj = {"spec": {"containers": [{"name": "x", "image": API}]}}
    assert extract_images(obj, "Widget") == ()
    assert [loc.field_path for loc in extract_images(obj, "Pod")] == ["spec.containers[0].image"]


def test_paths_sort_with_numeric_indexes() -> None:
    containers = [{"name": f"c{i}", "image": f"ghcr.io/acme/c{i}:1"} for i in range(12)]
    locations = extract_images({"spec": {"containers": containers}}, "Pod")
    ordered = sorted(locations, key=lambda loc: loc.sort_key)
    assert [loc.field_path for loc in ordered][9:12] == [
        "spec.containers[9].image", "spec.containers[10].image", "spec.containers[11].image",
    ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"containers": {"name": "x"}}, "spec.containers is not a list"),
        ({"containers": ["nginx"]}, "spec.containers[0] is not an object"),
        ({"containers": [{"name": "x"}]}, "spec.containers[0].image is missing or not a string"),
        ({"initContainers": [{"name": "x", "image": 7}], "containers": []},
         "spec.initContainers[0].image is missing or not a string"),
        ({"containers": [{"name": "x", "image": ""}]},
         "spec.containers[0].image is missing or not a string"),
    ],
    ids=["not-a-list", "not-an-object", "no-image", "number", "empty"],
)
def test_malformed_container_fields_are_named(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        extract_images({"spec": spec}, "Pod")
    assert caught.value.message == message


def test_image_count_is_bounded() -> None:
    containers = [{"name": "c", "image": "a:1"}] * (MAX_IMAGES + 1)
    with pytest.raises(InvalidInputError, match=f"more than {MAX_IMAGES} images"):
        extract_images({"spec": {"containers": containers}}, "Pod")


def test_format_path() -> None:
    assert format_path(("spec", "containers", 1, "image")) == "spec.containers[1].image"


@pytest.mark.parametrize(
    "obj",
    [
        {"spec": {"template": "not a template"}},
        {"spec": {"template": {"spec": None}}},
        {"spec": {"jobTemplate": ["x"]}},
        {"template": 7},
        {"spec": None},
        {},
    ],
    ids=["template-string", "spec-null", "jobtemplate-list", "template-int", "spec-null-top",
         "empty"],
)
def test_objects_without_a_readable_pod_template_carry_no_images(obj: dict[str, Any]) -> None:
    assert extract_images(obj, "Deployment") == ()


def test_null_container_list_is_skipped_but_a_null_container_is_refused() -> None:
    assert extract_images({"spec": {"containers": None, "initContainers": []}}, "Pod") == ()
    with pytest.raises(InvalidInputError, match=r"spec.containers\[0\] is not an object"):
        extract_images({"spec": {"containers": [None]}}, "Pod")


def test_lookalike_registry_is_passed_on_verbatim() -> None:
    # The policy, not the extraction, decides about registry.example.com.evil.io.
    image = "registry.example.com.evil.io/app:1"
    (location,) = extract_images({"spec": {"containers": [{"name": "a", "image": image}]}}, "Pod")
    assert location.image == image
