"""The tag digest memory against the real loopback docker-registry, behind a counting proxy.

``gatekeeper serve`` (HTTPS, embedded OPA, SQLite) resolves tags through the proxy, so the test
counts the manifest requests for the tag. A tag re-pushed while its digest is remembered is
seen once ``TAG_DIGEST_TTL_SECONDS`` has passed, not before; a tag that could not be resolved
is asked again at once; ``TAG_DIGEST_TTL_SECONDS=0`` resolves on every admission.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.cosign_fixtures import push_image, registry_host, unique_repository
from tests.integration.counting_registry import CountingRegistry, counting_registry
from tests.integration.test_admission_app import post, serve_gatekeeper
from tests.integration.test_admission_signatures import deployment_review
from tests.unit.webhook.certificates import CertificateAuthority

pytestmark = pytest.mark.integration

TTL_SECONDS = 8.0


@contextmanager
def gatekeeper_behind_proxy(
    tmp_path: Path, opa_binary: str, policy_dir: Path, ttl_seconds: float
) -> Iterator[tuple[str, httpx.Client, CountingRegistry]]:
    with counting_registry(registry_host()) as proxy, serve_gatekeeper(
        tmp_path, opa_binary, policy_dir, CertificateAuthority(tmp_path),
        GATEKEEPER_REGISTRY=json.dumps({"hosts": [{"host": proxy.host, "plain_http": True}]}),
        GATEKEEPER_TAG_DIGEST_TTL_SECONDS=str(ttl_seconds),
    ) as (url, client):
        yield url, client, proxy


def admit(client: httpx.Client, url: str, image: str, uid: str) -> dict[str, Any]:
    response = post(client, url, "/admission/mutate", deployment_review(uid, [image]))
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()["response"]
    return answer


def pinned(answer: dict[str, Any]) -> str:
    assert answer["allowed"] is True, answer["status"]
    patch = json.loads(base64.b64decode(answer["patch"]))
    value: str = patch[0]["value"]
    return value


def tag_requests(proxy: CountingRegistry, mark: int, repository: str, tag: str) -> int:
    path = f"/v2/{repository}/manifests/{tag}"
    return sum(1 for _method, seen, _status in proxy.since(mark) if seen == path)


def test_a_re_pushed_tag_is_seen_after_the_ttl_and_not_before(
    tmp_path: Path, opa_binary: str, policy_dir: Path
) -> None:
    upstream, repository = registry_host(), unique_repository("memory")
    with gatekeeper_behind_proxy(tmp_path, opa_binary, policy_dir, TTL_SECONDS) as (
        url, client, proxy
    ):
        image = f"{proxy.host}/{repository}:1.0"
        first_digest = push_image(upstream, f"{repository}:1.0", "first", tmp_path)
        mark = proxy.mark()
        resolved_at = time.monotonic()
        assert pinned(admit(client, url, image, "uid-memory-1")) == f"{image}@{first_digest}"
        assert tag_requests(proxy, mark, repository, "1.0") >= 1

        second_digest = push_image(upstream, f"{repository}:1.0", "second", tmp_path)
        assert second_digest != first_digest
        mark = proxy.mark()
        again = admit(client, url, image, "uid-memory-2")
        assert time.monotonic() - resolved_at < TTL_SECONDS, "too slow to test within the TTL"
        # within the TTL: the remembered digest, verified as such, is pinned; no tag request
        assert pinned(again) == f"{image}@{first_digest}"
        assert tag_requests(proxy, mark, repository, "1.0") == 0

        time.sleep(max(0.0, resolved_at + TTL_SECONDS + 0.5 - time.monotonic()))
        mark = proxy.mark()
        after = admit(client, url, image, "uid-memory-3")
        assert pinned(after) == f"{image}@{second_digest}"
        assert tag_requests(proxy, mark, repository, "1.0") >= 1


def test_a_failed_resolution_is_not_remembered(
    tmp_path: Path, opa_binary: str, policy_dir: Path
) -> None:
    upstream, repository = registry_host(), unique_repository("memory")
    with gatekeeper_behind_proxy(tmp_path, opa_binary, policy_dir, TTL_SECONDS) as (
        url, client, proxy
    ):
        image = f"{proxy.host}/{repository}:2.0"
        denied = admit(client, url, image, "uid-memory-missing")
        assert denied["allowed"] is False
        assert f"spec.template.spec.containers[0].image ({image}): digest not resolved" in (
            denied["status"]["message"])

        digest = push_image(upstream, f"{repository}:2.0", "pushed-late", tmp_path)
        mark = proxy.mark()
        assert pinned(admit(client, url, image, "uid-memory-pushed")) == f"{image}@{digest}"
        assert tag_requests(proxy, mark, repository, "2.0") >= 1


def test_a_ttl_of_zero_resolves_the_tag_on_every_admission(
    tmp_path: Path, opa_binary: str, policy_dir: Path
) -> None:
    upstream, repository = registry_host(), unique_repository("memory")
    with gatekeeper_behind_proxy(tmp_path, opa_binary, policy_dir, 0) as (url, client, proxy):
        image = f"{proxy.host}/{repository}:3.0"
        digest = push_image(upstream, f"{repository}:3.0", "every-time", tmp_path)
        for number in range(3):
            mark = proxy.mark()
            assert pinned(admit(client, url, image, f"uid-zero-{number}")) == f"{image}@{digest}"
            assert tag_requests(proxy, mark, repository, "3.0") >= 1
