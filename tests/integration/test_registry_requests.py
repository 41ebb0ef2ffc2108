"""Registry round trips of one ``POST /v1/evaluations``, counted by a proxy in front of the real
loopback docker-registry (which has no referrers API).

Each image carries a cosign ``.sig`` (one layer) and an ``.att`` with two layers (two
``cosign attest`` runs), and the signature cache is off (TTL 0). A cold evaluation needs the
two manifests and three blobs, the ``sha256-<hex>`` referrers tag and the ``.sbom`` tag: 7
requests, because every collector (signatures, attested SBOMs, attested VEX, referrer SBOMs)
reads the same discovery result. The first contact with a host adds one referrers API probe
(8); its absence is remembered, so no later evaluation probes again. Before the fix: 31.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.integration.cosign_fixtures import (
    CYCLONEDX_PREDICATE,
    SLSA_V02_PREDICATE,
    cosign_attest,
    cosign_binary,
    cosign_sign,
    generate_key_pair,
    push_image,
    registry_host,
    unique_repository,
)
from tests.integration.counting_registry import CountingRegistry, counting_registry
from tests.integration.served import SECRET, Served, serve

pytestmark = pytest.mark.integration

#: .sig manifest + blob, .att manifest + 2 blobs, sha256-<hex> tag, .sha256-<hex>.sbom tag
MAX_COLD_REQUESTS = 7


def bearer() -> dict[str, str]:
    claims = {"sub": "pipeline-bot", "roles": ["pipeline"], "exp": int(time.time()) + 600}
    return {"Authorization": f"Bearer {jwt.encode(claims, SECRET, algorithm='HS256')}"}


@dataclass
class Setup:
    server: Served
    proxy: CountingRegistry
    first: str  # image references through the proxy, pinned by digest
    second: str


@pytest.fixture
def setup(tmp_path: Path, opa_binary: str) -> Iterator[Setup]:
    upstream = registry_host()
    cosign = cosign_binary("v2")
    keys = generate_key_pair(cosign, tmp_path / "keys")
    repository = unique_repository("count")
    pinned = []
    for content in ("first", "second"):
        digest = push_image(upstream, f"{repository}:{content}", content, tmp_path)
        image = f"{upstream}/{repository}@{digest}"
        cosign_sign(cosign, keys, image, tmp_path)
        cosign_attest(cosign, keys, image, tmp_path, predicate_type="slsaprovenance",
                      predicate=SLSA_V02_PREDICATE)  # fmt: skip
        cosign_attest(cosign, keys, image, tmp_path, predicate_type="cyclonedx",
                      predicate=CYCLONEDX_PREDICATE)  # fmt: skip
        pinned.append(f"{repository}@{digest}")
    with counting_registry(upstream) as proxy:
        signatures = {
            "authorities": [{"name": "release", "keys": [keys.public_pem], "tlog": False}],
            "images": [{"glob": f"{proxy.host}/**", "authorities": ["release"]}],
            "cache_ttl_seconds": 0,
            "negative_cache_ttl_seconds": 0,
        }
        with serve(
            tmp_path, opa_binary=opa_binary,
            GATEKEEPER_REGISTRY=json.dumps({"hosts": [{"host": proxy.host, "plain_http": True}]}),
            GATEKEEPER_SIGNATURES=json.dumps(signatures),
        ) as server:  # fmt: skip
            yield Setup(server, proxy, f"{proxy.host}/{pinned[0]}", f"{proxy.host}/{pinned[1]}")


def evaluate(server: Served, image: str) -> dict[str, Any]:
    response = httpx.post(
        server.url + "/v1/evaluations", headers=bearer(), timeout=30,
        json={"images": [image], "environment": "staging"},
    )  # fmt: skip
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def assert_verified_with_both_attestations(document: dict[str, Any]) -> None:
    signatures = document["images"][0]["evidence"]["signatures"]
    assert signatures["status"] == "verified", signatures
    assert signatures["material"]["attestations"] == 2
    assert sorted(a["predicate_type"] for a in signatures["attestations"]) == [
        "https://cyclonedx.org/bom", "https://slsa.dev/provenance/v0.2",
    ]  # fmt: skip


def referrers_api_calls(requests: list[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    return [r for r in requests if "/referrers/" in r[1]]


def test_the_first_evaluation_probes_the_referrers_api_once(setup: Setup) -> None:
    mark = setup.proxy.mark()

    document = evaluate(setup.server, setup.first)

    requests = setup.proxy.since(mark)
    assert_verified_with_both_attestations(document)
    assert len(referrers_api_calls(requests)) == 1, requests
    assert len(requests) <= MAX_COLD_REQUESTS + 1, requests
    assert len(set(requests)) == len(requests), f"a request was repeated: {requests}"


def test_a_cold_evaluation_reads_each_registry_object_once(setup: Setup) -> None:
    evaluate(setup.server, setup.first)  # the host is known now
    mark = setup.proxy.mark()

    document = evaluate(setup.server, setup.second)  # a digest never seen, signature cache off

    requests = setup.proxy.since(mark)
    assert_verified_with_both_attestations(document)
    assert referrers_api_calls(requests) == [], "the host's capability was looked up again"
    assert len(requests) <= MAX_COLD_REQUESTS, requests
    assert len(set(requests)) == len(requests), f"a request was repeated: {requests}"
