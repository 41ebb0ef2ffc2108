"""SBOM validation + normalisation: the path an uploaded or attested SBOM takes.

Run: .venv/bin/python -m benchmarks.bench_sbom [--rounds N]
Targets (2 cores): 2,000 components under 50 ms, 10,000 components under 250 ms, measured from
the raw bytes to the JSON-ready ``evidence.sbom`` section (bounded parse, depth check, compiled
CycloneDX 1.6 schema, normalisation, binding). cyclonedx-python-lib's validator, for scale,
takes about 4.5 s at 2,000 components.

Every SBOM bound to a digest reaches the policy (issue 10.1), so the last figure is the whole
``evidence.sbom`` section of a digest with one attested SBOM and 16 uploads (the most the upload
source reads) of 2,000 components each: cold (a new collector) and warm (documents memoised by
their sha256, as in a running gatekeeper).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import time
from typing import Any

from gatekeeper.domain.ports import EvidenceContext
from gatekeeper.domain.reference import parse_digest
from gatekeeper.sbom import (
    BindingMethod,
    CycloneDxValidator,
    SbomCandidate,
    SbomEvidenceCollector,
)
from gatekeeper.sbom.normalise import normalise_sbom
from gatekeeper.sbom.validation import parse_sbom_document
from tests.fakes import FixedSbomSource

DIGEST = "sha256:" + "ab" * 32
_LICENSES = ["MIT", "Apache-2.0", "BSD-3-Clause", "GPL-2.0-only OR MIT", "ISC"]


def generate(components: int) -> bytes:
    listed: list[dict[str, Any]] = []
    for index in range(components):
        licence = _LICENSES[index % len(_LICENSES)]
        listed.append({
            "type": "library",
            "bom-ref": f"pkg:npm/pkg-{index}@1.{index % 10}.0",
            "name": f"pkg-{index}",
            "version": f"1.{index % 10}.0",
            "purl": f"pkg:npm/pkg-{index}@1.{index % 10}.0",
            "hashes": [{"alg": "SHA-256",
                        "content": hashlib.sha256(str(index).encode()).hexdigest()}],
            "licenses": [{"expression": licence}] if " " in licence
            else [{"license": {"id": licence}}],
        })
    return json.dumps({
        "bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1,
        "serialNumber": "urn:uuid:3e671687-395b-41f5-a30f-a58921a69b79",
        "metadata": {"timestamp": "2026-01-01T00:00:00Z",
                     "component": {"type": "container", "name": "app", "version": DIGEST}},
        "components": listed,
    }).encode()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    validator = CycloneDxValidator()
    start = time.perf_counter()
    validator.warm_up()
    print(f"cores: {os.cpu_count()}  schema compilation (1.2-1.7): "
          f"{(time.perf_counter() - start) * 1000:.1f} ms")
    digest = parse_digest(DIGEST)
    for components, target_ms in ((2_000, 50), (10_000, 250)):
        data = generate(components)
        # A fresh collector per round: its memo (by sha256) would otherwise answer from cache.
        end_to_end: list[float] = []
        validate_only: list[float] = []
        for _ in range(args.rounds):
            collector = SbomEvidenceCollector(sources=(), validator=validator)
            candidate = SbomCandidate(data, BindingMethod.UPLOAD, (DIGEST,), "bench")
            start = time.perf_counter()
            evidence = collector.evaluate_candidate(candidate, digest)
            end_to_end.append((time.perf_counter() - start) * 1000)
            assert evidence["state"] == "bound", evidence["reason"]
            start = time.perf_counter()
            normalise_sbom(parse_sbom_document(data, validator=validator))
            validate_only.append((time.perf_counter() - start) * 1000)
        median = statistics.median(end_to_end)
        print(
            f"{components:>6} components ({len(data) / 1e6:.1f} MB): evidence section "
            f"median {median:.1f} ms, max {max(end_to_end):.1f} ms "
            f"(parse+validate+normalise median {statistics.median(validate_only):.1f} ms); "
            f"target < {target_ms} ms: {'met' if median < target_ms else 'MISSED'}; "
            f"listed {len(evidence['components'])}, truncated {evidence['truncated']}"
        )
    bench_every_document(validator, args.rounds)


def bench_every_document(validator: CycloneDxValidator, rounds: int) -> None:
    from gatekeeper.domain.reference import parse_image_reference

    documents = [generate(2_000)] + [
        generate(2_000).replace(b'"version": 1,', f'"version": {n + 2},'.encode(), 1)
        for n in range(16)
    ]
    candidates = [SbomCandidate(documents[0], BindingMethod.ATTESTATION, (DIGEST,), "attested",
                                source="attestation", authority="release")]  # fmt: skip
    candidates += [SbomCandidate(d, BindingMethod.UPLOAD, (DIGEST,), "upload", source="upload",
                                 supplied_by="ci") for d in documents[1:]]  # fmt: skip
    image = parse_image_reference(f"registry.example.com/app@{DIGEST}")
    context = EvidenceContext("production", None)
    cold: list[float] = []
    warm: list[float] = []
    for _ in range(max(1, rounds // 3)):
        source = FixedSbomSource(*candidates, name="bench")
        collector = SbomEvidenceCollector(sources=(source,), validator=validator)
        start = time.perf_counter()
        section = collector.collect(image, image.digest, context)
        cold.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        collector.collect(image, image.digest, context)
        warm.append((time.perf_counter() - start) * 1000)
    print(f"17 documents x 2,000 components (1 attested + 16 uploads): evidence section "
          f"cold median {statistics.median(cold):.0f} ms, warm median "
          f"{statistics.median(warm):.0f} ms; {section['document_count']} documents listed")


if __name__ == "__main__":
    main()
