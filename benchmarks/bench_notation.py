"""Notation signature verification: the gatekeeper cold and warm vs ``notation verify``.

Needs the loopback registry and the notation CLI that ``scripts/test-servers`` provides::

    scripts/test-servers run .venv/bin/python benchmarks/bench_notation.py [--images 10]

Images are signed by the real CLI (its ``cert generate-test`` RSA-2048 key), alternately as JWS
and COSE, stored with the referrers tag schema (the loopback registry has no referrers API).

* cold: a new collector (empty cache) per image: digest resolution, the referrers tag index,
  the signature manifest and envelope, the image manifest (target descriptor), RSA-PSS and the
  trust policy's checks;
* warm: the same image again through a collector that already verified it (cache hit);
* notation verify: the CLI with the same trust store and an equivalent trust policy (a process
  each, so it includes process start).
"""

from __future__ import annotations

import argparse
import json
import os
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
    push_image,
    registry_client,
    unique_repository,
)
from tests.integration.notation_fixtures import NotationCli  # noqa: E402

SIGNER = "bench.example"
TRUST_POLICY = {
    "version": "1.0",
    "trustPolicies": [{
        "name": "bench", "registryScopes": ["*"], "signatureVerification": {"level": "strict"},
        "trustStores": [f"ca:{SIGNER}"],
        "trustedIdentities": [f"x509.subject: C=US, ST=WA, O=Notary, CN={SIGNER}"],
    }],
}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cli-runs", type=int, default=10)
    arguments = parser.parse_args()
    host = os.environ.get("GATEKEEPER_TEST_REGISTRY")
    binary = os.environ.get("GATEKEEPER_NOTATION")
    if not host or not binary:
        print("set GATEKEEPER_TEST_REGISTRY and GATEKEEPER_NOTATION", file=sys.stderr)
        return 2

    workdir = Path(tempfile.mkdtemp(prefix="bench-notation-"))
    notation = NotationCli(binary, workdir / "home")
    root_pem = notation.generate_test_key(SIGNER)
    (notation.config_dir / "trustpolicy.json").write_text(json.dumps(TRUST_POLICY))
    pinned: list[str] = []
    for number in range(arguments.images):
        repository = unique_repository("bench-notation")
        digest = push_image(host, f"{repository}:1.0", f"notation bench {number}", workdir)
        pinned.append(f"{host}/{repository}@{digest}")
        notation.sign(pinned[-1], key=SIGNER, signature_format=("jws", "cose")[number % 2])

    settings = SignaturePolicySettings.from_mapping({
        "authorities": [{"name": "bench", "notation": {
            "trust_store": {f"ca:{SIGNER}": [root_pem]}, "trust_policy": TRUST_POLICY}}],
        "images": [{"glob": f"{host}/**", "authorities": ["bench"]}],
    })  # fmt: skip
    client = registry_client(host)
    trust = TrustRoot.none()
    context = EvidenceContext("production", "default")
    references = [parse_image_reference(image) for image in pinned]

    def verify_cold(index: int) -> float:
        collector = SignatureEvidenceCollector(settings, client, trust)
        started = time.perf_counter()
        evidence = collector.collect(references[index], None, context)
        elapsed = time.perf_counter() - started
        assert evidence["status"] == "verified", evidence["message"]
        return elapsed

    for index in range(len(references)):  # untimed: interpreter, pool and registry caches
        verify_cold(index)
    cold = [verify_cold(i) for _ in range(arguments.rounds) for i in range(len(references))]

    warm_collector = SignatureEvidenceCollector(settings, client, trust)
    for reference in references:
        warm_collector.collect(reference, None, context)
    warm: list[float] = []
    for _ in range(arguments.rounds * 10):
        for reference in references:
            started = time.perf_counter()
            evidence = warm_collector.collect(reference, None, context)
            warm.append(time.perf_counter() - started)
            assert evidence["cache"] == "hit"

    cli: list[float] = []
    for run in range(arguments.cli_runs):
        started = time.perf_counter()
        notation.run("verify", "--insecure-registry", pinned[run % len(pinned)])
        cli.append(time.perf_counter() - started)

    print(f"images={len(pinned)} rounds={arguments.rounds} cpus={os.cpu_count()} registry={host}")
    cold_p50 = report("cold", cold)
    warm_p50 = report("warm", warm)
    cli_p50 = report("notation verify", cli)
    print(f"ratio notation/cold p50 = {cli_p50 / cold_p50:.1f}x")
    print(f"ratio notation/warm p50 = {cli_p50 / warm_p50:.0f}x")
    client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
