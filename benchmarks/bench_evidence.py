"""SBOM-size sweep (issue 17.6): warm decisions with 0, 1,000 and 10,000 SBOM components.

Run: .venv/bin/python -m benchmarks.bench_evidence [--requests N] [--concurrency C]
     [--rounds R] [--inline]
(--inline: evidence inline in every input and row, the behaviour before issue 17.1/17.2)

One ``gatekeeper serve`` (embedded OPA, SQLite with fsync, the shipped policies plus a list of
banned components and licences, so the policy really looks components up), three image digests:
one without an SBOM, one with an uploaded CycloneDX SBOM of 1,000 components, one with 10,000.
For each: warm ``POST /v1/evaluations`` p50 and throughput at the given concurrency (the
sizes take turns for R rounds, medians shown, so a noisy neighbour does not favour one), stored
bytes per decision (decision document + policy input in its row) and the evidence documents
stored once, all in the same run, with ratios to the no-SBOM case.

Targets (2 cores): 1,000 components within 15 % of the no-SBOM throughput, 10,000 within 30 %;
at most 8 KB stored per decision whatever the SBOM size, plus each evidence document once.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import shutil
import sqlite3
import statistics
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, load, running_gatekeeper

SIZES = (0, 1000, 10000)
BANNED = [
    {"purl": "pkg:npm/event-stream@3.3.6", "reason": "malicious release"},
    {"purl": "pkg:npm/flatmap-stream@*", "reason": "malicious release"},
    {"purl": "pkg:maven/org.apache.logging.log4j/log4j-core@2.1[0-4].*", "reason": "Log4Shell"},
    {"purl": "pkg:npm/ua-parser-js@0.7.2[9]", "reason": "hijacked release"},
    {"purl": "pkg:npm/coa@2.0.[34]", "reason": "hijacked release"},
    {"purl": "pkg:npm/rc@1.2.[9]", "reason": "hijacked release"},
    {"purl": "pkg:pypi/ctx@*", "reason": "hijacked package"},
    {"purl": "pkg:npm/node-ipc@10.1.[123]", "reason": "protestware"},
    {"purl": "pkg:pypi/debug-only-*", "reason": "development tooling"},
]
BANNED_LICENCES = [{"id": "AGPL-*", "reason": "network copyleft"},
                   {"id": "SSPL-1.0", "reason": "not OSI approved"}]


def digest_for(size: int) -> str:
    return "sha256:" + hashlib.sha256(f"bench-evidence-{size}".encode()).hexdigest()


def sbom(size: int) -> bytes:
    components = [{
        "type": "library", "name": f"pkg-{i}", "version": f"1.{i % 10}.0",
        "purl": f"pkg:npm/pkg-{i}@1.{i % 10}.0",
        "hashes": [{"alg": "SHA-256", "content": hashlib.sha256(str(i).encode()).hexdigest()}],
        "licenses": [{"license": {"id": ("MIT", "Apache-2.0", "ISC")[i % 3]}}],
    } for i in range(size)]
    return json.dumps({"bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1,
                       "components": components}).encode()


def policies_with_bans(target: Path) -> Path:
    shutil.copytree(REPO / "policies", target)
    data = json.loads((target / "data.json").read_text())
    sbom_config = data["gatekeeper"]["config"].setdefault("sbom", {})
    sbom_config["banned_components"] = BANNED
    sbom_config["banned_licenses"] = BANNED_LICENCES
    (target / "data.json").write_text(json.dumps(data))
    return target


def upload(port: int, size: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("POST", f"/v1/sboms?image_digest={digest_for(size)}", body=sbom(size),
                 headers={"Content-Type": "application/vnd.cyclonedx+json"})
    response = conn.getresponse()
    body = response.read()
    if response.status != 201:
        raise RuntimeError(
            f"SBOM upload of {size} components: HTTP {response.status} {body[:300]!r}")


def body_for(size: int) -> dict[str, Any]:
    return {"images": [f"registry.example.com/bench/app{size}@{digest_for(size)}"],
            "environment": "staging", "namespace": "bench"}


def stored_bytes(database: Path, size: int) -> tuple[float, int, int]:
    """(mean bytes per decision row, evidence documents, their bytes) for the size's digest."""
    with sqlite3.connect(database) as db:
        rows = db.execute(
            "SELECT AVG(LENGTH(d.document) + COALESCE(LENGTH(d.policy_input), 0)) "
            "FROM gatekeeper_decisions d JOIN gatekeeper_decision_images i "
            "ON i.decision_seq = d.seq WHERE i.digest = ?", (digest_for(size),)).fetchone()
        documents = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(e.size_bytes), 0) FROM gatekeeper_evidence_documents e "
            "WHERE e.sha256 IN (SELECT l.sha256 FROM gatekeeper_decision_evidence l "
            "JOIN gatekeeper_decision_images i ON i.decision_seq = l.decision_seq "
            "WHERE i.digest = ?)", (digest_for(size),)).fetchone()
    return float(rows[0] or 0), int(documents[0]), int(documents[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds per size; the median of each figure is shown")
    parser.add_argument("--inline", action="store_true",
                        help="no evidence by reference "
                             "(GATEKEEPER_EVIDENCE_INLINE_MAX_BYTES=64 MiB)")
    args = parser.parse_args()
    mode = "inline (before 17.1/17.2)" if args.inline else "by reference"
    print(f"cores: {os.cpu_count()}  evidence {mode}, concurrency {args.concurrency}, "
          f"{args.rounds} x {args.requests} warm evaluations per size, {len(BANNED)} banned purls, "
          f"{len(BANNED_LICENCES)} banned licences")
    with tempfile.TemporaryDirectory(prefix="bench-evidence-") as tmp:
        root = Path(tmp)
        database = root / "bench.db"
        env = {
            "GATEKEEPER_DATABASE_URL": f"sqlite:///{database}",
            "GATEKEEPER_POLICY_DIR": str(policies_with_bans(root / "policies")),
            "GATEKEEPER_SBOM_MAX_COMPONENTS": "20000",
            "GATEKEEPER_RESOLVE_DIGESTS": "false",
        }
        if args.inline:
            env["GATEKEEPER_EVIDENCE_INLINE_MAX_BYTES"] = str(64 << 20)
        rounds: dict[int, list[dict[str, float]]] = {size: [] for size in SIZES}
        with running_gatekeeper(env) as port:
            for size in SIZES:
                if size:
                    upload(port, size)
                load(port, "/v1/evaluations", body_for(size), concurrency=args.concurrency,
                     requests=max(args.concurrency * 5, args.requests // 10))  # warm-up
            # the sizes take turns, round after round: a noisy neighbour hits all of them
            for _ in range(args.rounds):
                for size in SIZES:
                    rounds[size].append(load(port, "/v1/evaluations", body_for(size),
                                             concurrency=args.concurrency,
                                             requests=args.requests))
        results = {size: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
                   for size, runs in rounds.items()}
        base = results[0]
        for size in SIZES:
            figures = results[size]
            per_row, documents, document_bytes = stored_bytes(database, size)
            print(
                f"{size:>6} components: p50 {figures['p50_ms']:7.2f} ms "
                f"({figures['p50_ms'] / base['p50_ms']:.2f}x), "
                f"{figures['per_second']:6.1f} decisions/s "
                f"({figures['per_second'] / base['per_second']:.2f} of no-SBOM), "
                f"{figures['errors']:.0f} errors, {per_row / 1024:7.1f} KB stored per decision "
                f"+ {documents} evidence document(s) once ({document_bytes / 1024:.0f} KB)"
            )


if __name__ == "__main__":
    main()
