"""Cold ``POST /v1/evaluations`` of a signed and attested image: latency and registry requests.

Needs the loopback registry and cosign that ``scripts/test-servers`` provides::

    scripts/test-servers run .venv/bin/python benchmarks/bench_cold_path.py \\
        [--images 8] [--rounds 20] [--direct]

Each image has a cosign ``.sig`` and an ``.att`` with two layers (SLSA provenance and a
CycloneDX SBOM). ``gatekeeper serve`` runs with the signature cache off (TTL 0) and reads the
registry through a counting proxy (``tests/integration/counting_registry.py``), so every figure
comes with the number of registry round trips behind it:

* first: the first evaluation of the process (includes the referrers API probe of the host);
* cold: the first evaluation of each other image (nothing of it cached anywhere);
* cache off: the same image again and again, signature cache TTL 0 (the SBOM referrer source
  keeps its own short cache of "no SBOM attached").

``--direct`` measures without the proxy hop (the requests column is then the proxy's zero).

Measured on the shared 2-core machine (one run, before = 718da03): cold new image through the
proxy 139.4 -> 48.0 ms median with 31 -> 7 requests; direct 121.1 -> 61.9 ms; same image with
the cache off, direct, 115.7 -> 42.1 ms. Target (issue 18): <= 15 ms median, <= 7 requests.

Compare two checkouts by running this same file from each (figures from one machine only).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import running_gatekeeper  # noqa: E402
from tests.integration.cosign_fixtures import (  # noqa: E402
    CYCLONEDX_PREDICATE,
    SLSA_V02_PREDICATE,
    cosign_attest,
    cosign_sign,
    generate_key_pair,
    push_image,
    unique_repository,
)
from tests.integration.counting_registry import counting_registry  # noqa: E402


def evaluate(port: int, image: str) -> float:
    body = json.dumps({"images": [image], "environment": "staging"}).encode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    started = time.perf_counter()
    connection.request("POST", "/v1/evaluations", body=body,
                       headers={"Content-Type": "application/json"})  # fmt: skip
    response = connection.getresponse()
    document = json.loads(response.read())
    elapsed = time.perf_counter() - started
    connection.close()
    status = document["images"][0]["evidence"]["signatures"]["status"] if response.status == 200 \
        else response.status  # fmt: skip
    if status != "verified":
        raise RuntimeError(f"evaluation of {image} answered {status}: {document}")
    return elapsed * 1000


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=8, help="cold images (one evaluation each)")
    parser.add_argument("--rounds", type=int, default=20,
                        help="evaluations of one image, cache off")  # fmt: skip
    parser.add_argument("--direct", action="store_true",
                        help="talk to the registry directly (no counting proxy, no request counts)")
    args = parser.parse_args()
    upstream = os.environ.get("GATEKEEPER_TEST_REGISTRY")
    cosign = os.environ.get("GATEKEEPER_COSIGN_V2")
    if not upstream or not cosign:
        print("run under scripts/test-servers (GATEKEEPER_TEST_REGISTRY, GATEKEEPER_COSIGN_V2)")
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        keys = generate_key_pair(cosign, workdir / "keys")
        repository = unique_repository("bench-cold")
        pinned = []
        for index in range(args.images + 1):
            digest = push_image(upstream, f"{repository}:{index}", f"image {index}", workdir)
            image = f"{upstream}/{repository}@{digest}"
            cosign_sign(cosign, keys, image, workdir)
            cosign_attest(cosign, keys, image, workdir, predicate_type="slsaprovenance",
                          predicate=SLSA_V02_PREDICATE)  # fmt: skip
            cosign_attest(cosign, keys, image, workdir, predicate_type="cyclonedx",
                          predicate=CYCLONEDX_PREDICATE)  # fmt: skip
            pinned.append(f"{repository}@{digest}")
        with counting_registry(upstream) as proxy:
            host = upstream if args.direct else proxy.host
            signatures = {
                "authorities": [{"name": "release", "keys": [keys.public_pem], "tlog": False}],
                "images": [{"glob": f"{host}/**", "authorities": ["release"]}],
                "cache_ttl_seconds": 0,
                "negative_cache_ttl_seconds": 0,
            }
            env = {
                "GATEKEEPER_REGISTRY": json.dumps(
                    {"hosts": [{"host": host, "plain_http": True}]}
                ),
                "GATEKEEPER_SIGNATURES": json.dumps(signatures),
            }
            with running_gatekeeper(env) as port:
                images = [f"{host}/{name}" for name in pinned]
                mark = proxy.mark()
                first = evaluate(port, images[0])
                rows: list[tuple[str, list[float], float]] = [
                    ("first (host probe)", [first], float(len(proxy.since(mark))))
                ]
                cold: list[float] = []
                mark = proxy.mark()
                for image in images[1:]:
                    cold.append(evaluate(port, image))
                rows.append(("cold (new image)", cold, len(proxy.since(mark)) / len(cold)))
                repeated: list[float] = []
                mark = proxy.mark()
                for _ in range(args.rounds):
                    repeated.append(evaluate(port, images[0]))
                rows.append(("cache off (same image)", repeated,
                             len(proxy.since(mark)) / len(repeated)))  # fmt: skip
    print(f"cores: {os.cpu_count()}  image: .sig (1 layer) + .att (2 layers), signature TTL 0"
          + ("  (direct: requests not counted)" if args.direct else ""))  # fmt: skip
    print(f"{'evaluation':<24} {'n':>3} {'median ms':>10} {'min ms':>8} {'requests':>9}")
    for name, samples, requests in rows:
        print(f"{name:<24} {len(samples):>3} {statistics.median(samples):>10.1f} "
              f"{min(samples):>8.1f} {requests:>9.1f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
