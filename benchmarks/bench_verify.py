"""Signature verification latency: the gatekeeper cold and warm vs ``cosign verify --key``.

Needs the loopback registry and cosign that ``scripts/test-servers`` provides::

    GATEKEEPER_TEST_REGISTRY=127.0.0.1:5000 GATEKEEPER_COSIGN_V2=.tools/bin/cosign-v2 \\
        .venv/bin/python benchmarks/bench_verify.py [--images 20] [--rounds 5]

* cold: a new collector (empty cache) per image: tag -> digest resolution, material
  discovery (``.sig``, ``.att``, referrers + fallback tag), blob fetch, ECDSA verification;
* warm: the same image again through a collector that already verified it (cache hit),
  with the digest pinned (what admission sees after the mutating webhook pinned it);
* warm+resolve: the cached verification plus the tag -> digest ``HEAD``;
* cosign: ``cosign verify --key --insecure-ignore-tlog`` on the same images (a process each).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import report  # noqa: E402
from gatekeeper.domain.ports import EvidenceContext  # noqa: E402
from gatekeeper.domain.reference import parse_image_reference  # noqa: E402
from gatekeeper.verify import (  # noqa: E402
    SignatureEvidenceCollector,
    SignaturePolicySettings,
    TrustRoot,
)
from tests.integration.cosign_fixtures import (  # noqa: E402
    cosign_sign,
    cosign_verify,
    generate_key_pair,
    push_image,
    registry_client,
    unique_repository,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cosign-runs", type=int, default=20)
    arguments = parser.parse_args()
    host = os.environ.get("GATEKEEPER_TEST_REGISTRY")
    cosign = os.environ.get("GATEKEEPER_COSIGN_V2")
    if not host or not cosign:
        print("set GATEKEEPER_TEST_REGISTRY and GATEKEEPER_COSIGN_V2", file=sys.stderr)
        return 2

    workdir = Path(tempfile.mkdtemp(prefix="bench-verify-"))
    keys = generate_key_pair(cosign, workdir / "keys")
    images: list[str] = []
    for number in range(arguments.images):
        repository = unique_repository("bench")
        digest = push_image(host, f"{repository}:1.0", f"bench image {number}", workdir)
        cosign_sign(cosign, keys, f"{host}/{repository}@{digest}", workdir)
        images.append(f"{host}/{repository}:1.0")

    settings = SignaturePolicySettings.from_mapping(
        {
            "authorities": [{"name": "release", "keys": [keys.public_pem], "tlog": False}],
            "images": [{"glob": f"{host}/**", "authorities": ["release"]}],
        }
    )
    client = registry_client(host)
    trust = TrustRoot.none()
    context = EvidenceContext("production", "default")
    references = [parse_image_reference(image) for image in images]

    def verify_cold(index: int) -> float:
        collector = SignatureEvidenceCollector(settings, client, trust)
        started = time.perf_counter()
        digest = client.resolve_digest(references[index])
        evidence = collector.collect(references[index], digest, context)
        elapsed = time.perf_counter() - started
        assert evidence["status"] == "verified", evidence["message"]
        return elapsed

    # One untimed pass warms the interpreter, the connection pool and the registry's caches.
    for index in range(len(references)):
        verify_cold(index)
    cold = [verify_cold(i) for _ in range(arguments.rounds) for i in range(len(references))]

    warm_collector = SignatureEvidenceCollector(settings, client, trust)
    digests = [client.resolve_digest(reference) for reference in references]
    for reference, digest in zip(references, digests, strict=True):
        warm_collector.collect(reference, digest, context)
    warm: list[float] = []
    warm_resolve: list[float] = []
    for _ in range(arguments.rounds * 10):
        for reference, digest in zip(references, digests, strict=True):
            started = time.perf_counter()
            evidence = warm_collector.collect(reference, digest, context)
            warm.append(time.perf_counter() - started)
            assert evidence["cache"] == "hit"
    for _ in range(arguments.rounds):
        for reference in references:
            started = time.perf_counter()
            warm_collector.collect(reference, client.resolve_digest(reference), context)
            warm_resolve.append(time.perf_counter() - started)

    cosign_samples: list[float] = []
    for run in range(arguments.cosign_runs):
        image = images[run % len(images)]
        started = time.perf_counter()
        completed: subprocess.CompletedProcess[bytes] = cosign_verify(cosign, keys, image)
        cosign_samples.append(time.perf_counter() - started)
        assert completed.returncode == 0, completed.stderr.decode()[-500:]

    print(f"images={len(images)} rounds={arguments.rounds} cpus={os.cpu_count()} registry={host}")
    cold_p50 = report("cold", cold)
    warm_p50 = report("warm", warm)
    report("warm+resolve", warm_resolve)
    cosign_p50 = report("cosign verify", cosign_samples)
    print(f"ratio cosign/cold p50 = {cosign_p50 / cold_p50:.1f}x")
    print(f"ratio cosign/warm p50 = {cosign_p50 / warm_p50:.0f}x")
    client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
